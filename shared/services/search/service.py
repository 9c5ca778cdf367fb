"""The ``indexing`` job (docs/contracts.md §5): ``index`` upserts a message's entry in the search index,
``update`` re-indexes it from its stored state, ``delete`` removes it. A message or conversation that is
deleted is removed from the index, whatever the operation. A message of an encrypted conversation is
indexed by its blind tokens only (engine.py), decrypted in memory with the invocation's key ring. The lag
from the message's creation to its indexing is the ``IndexLag`` metric."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aws_lambda_powertools.metrics import MetricUnit
from sqlalchemy.orm import Session

from shared.errors import UnknownEntity
from shared.jobs import IndexingData, Job
from shared.observability import metrics
from shared.runtime.effects import Effect
from shared.services.crypto.keys import KeyRing
from shared.services.search.engine import PostgresSearchEngine, SearchEngine

if TYPE_CHECKING:
    from shared.bootstrap import Dependencies


def index_message(
    job: Job[IndexingData],
    session: Session,
    deps: Dependencies | None = None,
    engine: SearchEngine | None = None,
) -> list[Effect]:
    """Apply one indexing job to the search index, in the job's transaction; it has no post-commit effects."""
    engine = engine or PostgresSearchEngine(KeyRing.of(deps) if deps is not None else None)
    data = job.data
    if data.operation == "delete":
        engine.remove(session, data.message_id)
        return []
    outcome, created_at = engine.index(session, data.message_id)
    if outcome == "missing":
        raise UnknownEntity("message not found")
    if outcome == "indexed" and created_at is not None:
        lag_ms = max(0.0, (datetime.now(UTC) - created_at).total_seconds() * 1000)
        metrics.add_metric(name="IndexLag", unit=MetricUnit.Milliseconds, value=lag_ms)
    return []
