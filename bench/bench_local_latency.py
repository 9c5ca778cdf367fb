"""Latency through the local stack: a send-message job put on the queue -> the ``message.new`` frame at a
connected WebSocket client (run: python bench/bench_local_latency.py [--jobs 200]).

Starts ``switchboard dev`` in a subprocess (free ports, a fresh data dir), connects the recipient with a real
WebSocket client, then sends the jobs one at a time and times each from just before ``SendMessage`` to the
frame's arrival. Reported: median, p90, max. The path measured is SQS (moto server) -> the poller's long
poll -> SendMessageFunction -> PostgreSQL -> @connections POST -> the gateway -> the client socket.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()

    from infra.dev_demo import mint_token, receive, seed_conversation, stack_client
    from shared.jobs import SEND_MESSAGE, SendMessageData
    from shared.services.queues import send_jobs
    from tests.e2e.test_local_stack import RunningStack

    with tempfile.TemporaryDirectory() as tmp:
        stack = RunningStack(Path(tmp))
        stack.start(fresh=True)
        try:
            from websockets.sync.client import connect

            conversation, (alice, bob) = seed_conversation(stack.info, ["Alice", "Bob"])
            # one client for the whole run, as a producer keeps one (building one costs ~4 ms, which would be
            # timed as latency); each job is sent exactly as infra.dev_demo.send_text sends it
            sqs, queue_url = stack_client(stack.info, "sqs"), stack.info["queues"]["send-message"]["url"]
            url = f"{stack.info['websocket_url']}?token={mint_token(stack.info, bob)}"
            latencies = []
            with connect(url) as bob_ws:
                for i in range(args.jobs + 5):
                    message_id = str(uuid.uuid4())
                    data = SendMessageData(
                        message_id=uuid.UUID(message_id),
                        conversation_id=conversation,
                        sender_id=alice,
                        content=f"ping {i}",
                    )
                    job = SEND_MESSAGE.new(data, correlation_id="bench")
                    started = time.perf_counter()
                    send_jobs(sqs, queue_url, SEND_MESSAGE, [job])
                    receive(
                        bob_ws,
                        lambda f, m=message_id: f.get("type") == "message.new" and f["message"]["id"] == m,
                        timeout=30,
                    )
                    if i >= 5:  # the first few warm the pollers and connection pools
                        latencies.append((time.perf_counter() - started) * 1000)
            latencies.sort()
            print(
                json.dumps(
                    {
                        "jobs": len(latencies),
                        "median_ms": round(statistics.median(latencies), 1),
                        "p90_ms": round(latencies[int(len(latencies) * 0.9) - 1], 1),
                        "max_ms": round(latencies[-1], 1),
                    }
                )
            )
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
