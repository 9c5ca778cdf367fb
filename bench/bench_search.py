"""Benchmark of message search (run: python bench/bench_search.py [--messages 1000000]).

Seeds, with set-based SQL (``generate_series``), ``--messages`` messages in ``messages / 100`` conversations
(10,000 for 1,000,000) among ``conversations / 10`` users (1,000), two participants each; user 0 is in 20.
Every ``--encrypted-every``-th conversation (default 50: 2 % of conversations and messages, 10 of user 0's 20)
has encryption on: its messages are sealed through the real path (``KeyRing.seal`` + ``store_sealed``, moto's
in-process KMS) and blind-indexed through ``PostgresSearchEngine.index`` (decrypt in memory, HMAC, upsert),
which is Python per message; the encrypted share is kept small so the bench fits a shared machine. Content:
8 words drawn from a skewed 5,000-word vocabulary; ``hello`` (the common term) is in 9 % of messages (every
11th), ``zeppelin`` (the rare one) in 0.1 % (every 997th), spread over all conversations.

Prints:
* index build: the engine's per-message ``index`` (one upsert per job, as the indexing function runs) on a
  sample, the same document built set-based for every other plaintext message, and a bare
  ``UPDATE ... SET tsv = to_tsvector('simple', content)`` on the sample's rows, in messages/s;
* encrypt-and-store throughput (seal + claim + store, one transaction per conversation) against bare
  ``AESGCM.encrypt`` on the same payloads, and the KMS calls sealing 1,000 messages of one conversation
  takes (goal: 1);
* search p50 / p95 (``PostgresSearchEngine.search``, one session each, after one warm-up) for the common and
  the rare term: across user 0's 20 conversations (plaintext and encrypted), in one plaintext conversation,
  in one encrypted conversation. Goal: p50 < 20 ms, p95 < 100 ms;
* ``EXPLAIN (ANALYZE, BUFFERS)`` of the page query of the cross-conversation search, and the indexes it
  uses.

KMS is moto in-process: a KMS call costs microseconds here, tens of milliseconds on AWS (a cold container
searching N encrypted conversations makes N ``Decrypt`` calls). Not run in CI. Figures come from one run on
a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import bench_database, quiet_local_aws  # noqa: E402 - after the path

COMMON, RARE = "hello", "zeppelin"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--encrypted-every", type=int, default=50, help="every Nth conversation encrypted")
    parser.add_argument("--sample", type=int, default=20_000, help="messages indexed one job at a time")
    parser.add_argument("--searches", type=int, default=40, help="timed searches per case")
    args = parser.parse_args()
    if args.messages < 10_000 or 1_000 % args.encrypted_every:
        parser.error("--messages >= 10000, and --encrypted-every must divide 1000")
    quiet_local_aws()
    from moto import mock_aws

    with bench_database() as url, mock_aws():
        run(url, args)


def seed(engine: Any, messages: int, conversations: int, users: int, encrypted_every: int) -> None:
    """Users ``u<i>``, conversations ``c<i>`` between users ``i % U`` and ``(7i + 1) % U`` (never equal; user
    0 is in exactly 20 when C = 10 U), message ``i`` in conversation ``i % C``, one second apart, ids
    ``md5(<name>)::uuid`` so the bench can name them."""
    from sqlalchemy import text

    steps = [
        "INSERT INTO users (id, display_name) SELECT md5('u' || g)::uuid, 'user ' || g"
        " FROM generate_series(0, :users - 1) g",
        "INSERT INTO conversations (id, kind, title, encryption_enabled)"
        " SELECT md5('c' || g)::uuid, 'direct', 'conversation ' || g, mod(g, :every) = 0"
        " FROM generate_series(0, :conversations - 1) g",
        "INSERT INTO conversation_participants (conversation_id, user_id)"
        " SELECT md5('c' || g)::uuid, md5('u' || mod(g, :users))::uuid"
        " FROM generate_series(0, :conversations - 1) g"
        " UNION ALL SELECT md5('c' || g)::uuid, md5('u' || mod(7 * g + 1, :users))::uuid"
        " FROM generate_series(0, :conversations - 1) g",
        "INSERT INTO messages (id, conversation_id, sender_id, seq, content, status, created_at)"
        " SELECT md5('m' || i)::uuid, md5('c' || mod(i, :conversations))::uuid,"
        " md5('u' || CASE WHEN mod(i, 2) = 0 THEN mod(mod(i, :conversations), :users)"
        " ELSE mod(7 * mod(i, :conversations) + 1, :users) END)::uuid,"
        " i / :conversations + 1,"
        " CASE WHEN mod(i, 11) = 0 THEN 'hello ' ELSE '' END"
        " || CASE WHEN mod(i, 997) = 3 THEN 'zeppelin ' ELSE '' END"
        " || array_to_string(ARRAY(SELECT 'w' || floor(power(random(), 3) * 5000)::int"
        " FROM generate_series(1, 8 + 0 * i)), ' '),"
        " 'sent', now() - make_interval(secs => :messages - i)"
        " FROM generate_series(0, :messages - 1) i",
    ]
    params = {
        "users": users,
        "conversations": conversations,
        "messages": messages,
        "every": encrypted_every,
    }
    with engine.begin() as conn:
        for step in steps:
            conn.execute(text(step), params)
        conn.execute(text("ANALYZE users; ANALYZE conversations; ANALYZE conversation_participants"))
        conn.execute(text("ANALYZE messages"))


def named(kind: str, i: int) -> uuid.UUID:
    import hashlib

    return uuid.UUID(hashlib.md5(f"{kind}{i}".encode()).hexdigest())


def run(database_url: str, args: argparse.Namespace) -> None:
    import boto3
    from sqlalchemy import create_engine, text

    from shared.aws import AwsClients
    from shared.config import Settings
    from shared.db.engine import build_engine, normalize_url
    from shared.db.migrations import upgrade
    from shared.services.crypto.keys import DATA_KEYS, KeyRing
    from shared.services.search.engine import PostgresSearchEngine

    upgrade(build_engine(Settings(database_url=database_url)))
    engine = create_engine(normalize_url(database_url))
    arn = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]
    keys = KeyRing(AwsClients(), Settings(database_url=database_url, encryption_key_arn=arn))
    search_engine = PostgresSearchEngine(keys)
    conversations = args.messages // 100
    users = conversations // 10
    try:
        started = time.perf_counter()
        seed(engine, args.messages, conversations, users, args.encrypted_every)
        print(
            f"seeded {args.messages:,} messages, {conversations:,} conversations, {users:,} users in "
            f"{time.perf_counter() - started:.1f} s"
        )
        with engine.connect() as conn:
            encrypted_ids = [
                row[0]
                for row in conn.execute(
                    text(
                        "SELECT m.id FROM messages m JOIN conversations c ON c.id = m.conversation_id"
                        " WHERE c.encryption_enabled ORDER BY m.conversation_id, m.seq"
                    )
                )
            ]
        seal_all(engine, keys, encrypted_ids)
        kms_per_thousand(engine, keys, users)
        index_build(engine, search_engine, args.sample)
        blind_build(engine, search_engine, encrypted_ids)
        with engine.begin() as conn:
            conn.execute(text("ANALYZE message_search"))
        DATA_KEYS.clear()
        searches(engine, search_engine, args)
    finally:
        engine.dispose()


def seal_all(engine: Any, keys: Any, message_ids: list[uuid.UUID]) -> None:
    """Seal every message of the encrypted conversations as the ``encrypt`` job does (one transaction per
    conversation here), timed against bare AESGCM on the same payloads."""
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from sqlalchemy.orm import Session

    from shared.services.crypto import repository

    payloads: list[Any] = []
    started = time.perf_counter()
    current = None
    session = Session(engine)
    try:
        for message_id in message_ids:
            row = repository.sealed_message(session, message_id)
            if row.conversation_id != current:
                session.commit()
                current = row.conversation_id
            payloads.append(row.content)
            sealed = keys.seal(session, row.conversation_id, row.id, row.content)
            repository.store_sealed(
                session, row.id, sealed.ciphertext, sealed.nonce, sealed.key_version, sealed.algorithm
            )
        session.commit()
    finally:
        session.close()
    stored = time.perf_counter() - started
    key, nonce = os.urandom(32), os.urandom(12)
    aesgcm = AESGCM(key)
    started = time.perf_counter()
    for payload in payloads:
        aesgcm.encrypt(nonce, payload.encode(), b"aad")
    bare = time.perf_counter() - started
    n = len(payloads)
    print(
        f"encrypt-and-store         {n:,} messages in {stored:.1f} s = {n / stored:,.0f} msg/s (read, claim "
        f"a seal, AES-GCM, store); bare AESGCM {n / bare:,.0f} msg/s; ratio {stored / bare:,.0f}x"
    )


def kms_per_thousand(engine: Any, keys: Any, users: int) -> None:
    """KMS calls to seal 1,000 messages of one new conversation with a cold key cache (goal: 1)."""
    from sqlalchemy.orm import Session

    from infra.seed import add_conversation
    from shared.services.crypto.keys import DATA_KEYS

    with engine.begin() as conn:
        conversation = add_conversation(conn, [named("u", 2), named("u", 3)], encrypted=True)
    calls: list[str] = []
    client = keys.aws.kms()

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    client.meta.events.register("before-parameter-build.kms", record, unique_id="bench.kms")
    DATA_KEYS.clear()
    try:
        with Session(engine) as session, session.begin():
            for _ in range(1_000):
                keys.seal(session, conversation, uuid.uuid4(), "payload of a message")
    finally:
        client.meta.events.unregister("before-parameter-build.kms", unique_id="bench.kms")
    print(f"KMS calls, 1,000 seals in one conversation (cold cache): {len(calls)} ({', '.join(calls)})")


PLAIN_DOCUMENT = (
    "setweight(to_tsvector(c.search_config, coalesce(m.content, '')), 'A')"
    " || setweight(to_tsvector(c.search_config, coalesce(u.display_name, '')), 'B')"
    " || setweight(to_tsvector(c.search_config, coalesce(c.title, '')), 'C')"
)


def index_build(engine: Any, search_engine: Any, sample: int) -> None:
    """The engine's per-message index on a sample, the same document set-based for the rest, and the bare
    to_tsvector UPDATE on the sample's rows."""
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    with engine.connect() as conn:
        ids = [
            row[0]
            for row in conn.execute(
                text(
                    "SELECT m.id FROM messages m JOIN conversations c ON c.id = m.conversation_id"
                    " WHERE NOT c.encryption_enabled ORDER BY m.id LIMIT :n"
                ),
                {"n": sample},
            )
        ]
    started = time.perf_counter()
    with Session(engine) as session:
        for i, message_id in enumerate(ids, 1):
            search_engine.index(session, message_id)
            if i % 500 == 0:
                session.commit()
        session.commit()
    per_job = time.perf_counter() - started
    with engine.begin() as conn:
        started = time.perf_counter()
        rest = conn.execute(
            text(
                "INSERT INTO message_search"
                " (message_id, conversation_id, created_at, search_config, document)"
                f" SELECT m.id, m.conversation_id, m.created_at, c.search_config, {PLAIN_DOCUMENT}"
                " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
                " LEFT JOIN users u ON u.id = m.sender_id"
                " WHERE NOT c.encryption_enabled ON CONFLICT (message_id) DO NOTHING"
            )
        ).rowcount
        set_based = time.perf_counter() - started
        conn.execute(
            text("CREATE TEMP TABLE bare AS SELECT id, content, NULL::tsvector AS tsv FROM messages LIMIT 0")
        )
        conn.execute(
            text("INSERT INTO bare SELECT id, content, NULL FROM messages WHERE id = ANY(:ids)"), {"ids": ids}
        )
        started = time.perf_counter()
        conn.execute(text("UPDATE bare SET tsv = to_tsvector('simple', content)"))
        bare = time.perf_counter() - started
    n = len(ids)
    print(
        f"index build               engine.index per message: {n / per_job:,.0f} msg/s ({n:,} messages); "
        f"set-based same document with GIN upkeep: {rest / set_based:,.0f} msg/s ({rest:,}); bare UPDATE "
        f"to_tsvector (no index, content only): {n / bare:,.0f} msg/s; per-message / bare = "
        f"{per_job / bare:,.0f}x"
    )


def blind_build(engine: Any, search_engine: Any, message_ids: list[uuid.UUID]) -> None:
    from sqlalchemy.orm import Session

    started = time.perf_counter()
    with Session(engine) as session:
        for i, message_id in enumerate(message_ids, 1):
            search_engine.index(session, message_id)
            if i % 500 == 0:
                session.commit()
        session.commit()
    elapsed = time.perf_counter() - started
    print(
        f"blind index build         engine.index per sealed message (decrypt, HMAC, upsert): "
        f"{len(message_ids) / elapsed:,.0f} msg/s ({len(message_ids):,} messages)"
    )


def searches(engine: Any, search_engine: Any, args: argparse.Namespace) -> None:
    from sqlalchemy import event, text
    from sqlalchemy.orm import Session

    from shared.services.search.engine import SearchRequest

    user = named("u", 0)
    with engine.connect() as conn:
        mine = conn.execute(
            text(
                "SELECT p.conversation_id, c.encryption_enabled FROM conversation_participants p"
                " JOIN conversations c ON c.id = p.conversation_id WHERE p.user_id = :user"
            ),
            {"user": user},
        ).all()
    plain_conversation = next(c for c, encrypted in mine if not encrypted)
    encrypted_conversation = next(c for c, encrypted in mine if encrypted)
    shares = f"{len(mine)} conversations ({sum(1 for _, e in mine if e)} encrypted)"
    cases = [
        (shares, None),
        ("1 plaintext conversation", plain_conversation),
        ("1 encrypted conversation", encrypted_conversation),
    ]
    print(f"== search by user 0, {args.searches} timed searches per case ==")
    for label, conversation in cases:
        for term in (COMMON, RARE):
            timings: list[float] = []
            hits = 0
            for i in range(args.searches + 1):
                with Session(engine) as session:
                    started = time.perf_counter()
                    page = search_engine.search(session, SearchRequest(user, term, conversation))
                    elapsed = time.perf_counter() - started
                if i:
                    timings.append(elapsed * 1000)
                hits = len(page.hits)
            timings.sort()
            p95 = timings[max(0, int(len(timings) * 0.95) - 1)]
            print(
                f"{label:34} {term:9} p50 {statistics.median(timings):6.1f} ms  p95 {p95:6.1f} ms  "
                f"({hits} hits in the first page)"
            )
    captured: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        captured.append((statement, parameters))

    for term in (COMMON, RARE):
        captured.clear()
        event.listen(engine, "before_cursor_execute", record)
        try:
            with Session(engine) as session:
                search_engine.search(session, SearchRequest(user, term))
        finally:
            event.remove(engine, "before_cursor_execute", record)
        statement, parameters = next((s, p) for s, p in captured if "ts_headline" in s)
        with engine.connect() as conn:
            plan = [
                row[0] for row in conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters)
            ]
        print(f"== EXPLAIN (ANALYZE, BUFFERS) of the page query, {shares}, {term!r} ==")
        print("\n".join(line if len(line) < 200 else line[:197] + "..." for line in plan))
        used = sorted(set(re.findall(r"(?:Index Scan|Index Only Scan) (?:using|on) (\w+)", "\n".join(plan))))
        print(f"indexes used: {', '.join(used) or 'none'}")
    with engine.connect() as conn:
        size = conn.execute(text("SELECT pg_size_pretty(pg_total_relation_size('message_search'))")).scalar()
    print(f"message_search with its indexes: {size}")


if __name__ == "__main__":
    main()
