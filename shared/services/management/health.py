"""GET /health: each job type's queue and DLQ, its consumer's event source mapping, and the database, rolled
up into ``healthy`` / ``degraded`` / ``unhealthy`` by the thresholds in settings (docs/contracts.md §8).

Counts come from SQS ``GetQueueAttributes``. SQS does not report the age of a queue's oldest message; that is
CloudWatch's ``ApproximateAgeOfOldestMessage``, read with one ``GetMetricData`` call for every queue (the
maximum over the last five minutes; null when CloudWatch has no datapoint, e.g. an idle queue)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from shared.bootstrap import Dependencies
from shared.db.migrations import head_revision
from shared.errors import DatabaseUnavailable
from shared.observability import logger
from shared.services.management.errors import Unavailable
from shared.services.management.schemas import (
    DatabaseHealth,
    DeadLetterQueueHealth,
    HealthReport,
    HealthStatus,
    QueueHealth,
)
from shared.services.management.topology import (
    QueuePair,
    configured_job_types,
    queue_counts,
    queue_name,
    queue_pair,
)

_RANK: dict[HealthStatus, int] = {"healthy": 0, "degraded": 1, "unhealthy": 2}
_AGE_WINDOW = timedelta(minutes=5)


def worst(*statuses: HealthStatus) -> HealthStatus:
    return max(statuses, key=_RANK.__getitem__, default="healthy")


def check_health(deps: Dependencies) -> HealthReport:
    """The health report; its ``status`` is ``unhealthy`` when the database is unreachable or behind the
    code's schema, or any queue is past an unhealthy threshold or cannot be read."""
    database = _database(deps)
    pairs: dict[str, QueuePair | None] = {}
    for job_type in configured_job_types(deps):
        try:
            pairs[job_type] = queue_pair(deps, job_type)
        except Unavailable as exc:
            logger.warning(
                "queue not readable for health", extra={"job_type": job_type, "error": exc.message}
            )
            pairs[job_type] = None
    ages = _oldest_ages(deps, [p for p in pairs.values() if p is not None])
    queues = {job_type: _queue(deps, job_type, pair, ages) for job_type, pair in pairs.items()}
    database_status: HealthStatus = "healthy" if database.reachable and database.at_head else "unhealthy"
    return HealthReport(
        status=worst(database_status, *(queue.status for queue in queues.values())),
        checked_at=datetime.now(UTC),
        database=database,
        queues=queues,
    )


def _database(deps: Dependencies) -> DatabaseHealth:
    head = head_revision()
    try:
        with deps.unit_of_work() as uow:
            revision = uow.session.execute(
                text("SELECT version_num FROM alembic_version")
            ).scalar_one_or_none()
    except (SQLAlchemyError, DatabaseUnavailable) as exc:
        logger.warning("database not reachable for health", extra={"error_class": type(exc).__name__})
        return DatabaseHealth(reachable=False, revision=None, head=head, at_head=False)
    return DatabaseHealth(reachable=True, revision=revision, head=head, at_head=revision == head)


def _queue(
    deps: Dependencies, job_type: str, pair: QueuePair | None, ages: dict[str, int | None]
) -> QueueHealth:
    settings = deps.settings
    if pair is None:
        return QueueHealth(
            status="unhealthy",
            visible=None,
            in_flight=None,
            delayed=None,
            oldest_age_seconds=None,
            dlq=DeadLetterQueueHealth(visible=None, oldest_age_seconds=None),
            event_source=None,
            problems=["queue not readable"],
        )
    problems: list[tuple[HealthStatus, str]] = []
    try:
        dlq_counts: dict[str, int] | None = queue_counts(deps.aws.sqs(), pair.dlq_url)
    except (ClientError, BotoCoreError) as exc:
        logger.warning(
            "DLQ not readable for health", extra={"job_type": job_type, "error_class": type(exc).__name__}
        )
        dlq_counts = None
        problems.append(("unhealthy", "dead-letter queue not readable"))
    dlq_visible = dlq_counts["ApproximateNumberOfMessages"] if dlq_counts else None
    if dlq_visible is not None and dlq_visible >= settings.management_dlq_unhealthy_depth:
        problems.append(("unhealthy", f"{dlq_visible} message(s) in the dead-letter queue"))
    elif dlq_visible is not None and dlq_visible >= settings.management_dlq_degraded_depth:
        problems.append(("degraded", f"{dlq_visible} message(s) in the dead-letter queue"))
    age = ages.get(pair.arn)
    if age is not None and age >= settings.management_queue_age_unhealthy_seconds:
        problems.append(("unhealthy", f"oldest message waited {age} s"))
    elif age is not None and age >= settings.management_queue_age_degraded_seconds:
        problems.append(("degraded", f"oldest message waited {age} s"))
    state = _event_source_state(deps, pair)
    # None: no mapping reads the queue (the local stack polls by itself) or Lambda could not be asked.
    if state is not None and state != "Enabled":
        problems.append(("degraded", f"event source mapping {state}"))
    return QueueHealth(
        status=worst(*(status for status, _ in problems)),
        visible=pair.counts["ApproximateNumberOfMessages"],
        in_flight=pair.counts["ApproximateNumberOfMessagesNotVisible"],
        delayed=pair.counts["ApproximateNumberOfMessagesDelayed"],
        oldest_age_seconds=age,
        dlq=DeadLetterQueueHealth(
            visible=dlq_visible,
            in_flight=dlq_counts["ApproximateNumberOfMessagesNotVisible"] if dlq_counts else None,
            delayed=dlq_counts["ApproximateNumberOfMessagesDelayed"] if dlq_counts else None,
            oldest_age_seconds=ages.get(pair.dlq_arn),
        ),
        event_source=state,
        problems=[problem for _, problem in problems],
    )


def _event_source_state(deps: Dependencies, pair: QueuePair) -> str | None:
    """The state of the event source mapping that reads ``pair``'s queue (found by the queue's ARN, so the
    function needs no consumer names); None when there is none or Lambda cannot be asked."""
    try:
        mappings = deps.aws.make("lambda").list_event_source_mappings(EventSourceArn=pair.arn)
    except (ClientError, BotoCoreError) as exc:
        logger.warning("event source mappings not readable", extra={"error_class": type(exc).__name__})
        return None
    states = [str(m.get("State")) for m in mappings.get("EventSourceMappings", [])]
    return states[0] if states else None


def _oldest_ages(deps: Dependencies, pairs: list[QueuePair]) -> dict[str, int | None]:
    """Queue ARN -> the maximum ApproximateAgeOfOldestMessage over the last five minutes (seconds)."""
    arns = [arn for pair in pairs for arn in (pair.arn, pair.dlq_arn)]
    if not arns:
        return {}
    end = datetime.now(UTC)
    queries: list[dict[str, Any]] = [
        {
            "Id": f"q{index}",
            "MetricStat": {
                "Metric": {
                    "Namespace": "AWS/SQS",
                    "MetricName": "ApproximateAgeOfOldestMessage",
                    "Dimensions": [{"Name": "QueueName", "Value": queue_name(arn)}],
                },
                "Period": 60,
                "Stat": "Maximum",
            },
            "ReturnData": True,
        }
        for index, arn in enumerate(arns)
    ]
    try:
        result = deps.aws.make("cloudwatch").get_metric_data(
            MetricDataQueries=queries, StartTime=end - _AGE_WINDOW, EndTime=end
        )
    except (ClientError, BotoCoreError) as exc:
        logger.warning("queue ages not readable from CloudWatch", extra={"error_class": type(exc).__name__})
        return {}
    ages: dict[str, int | None] = dict.fromkeys(arns)
    for series in result.get("MetricDataResults", []):
        values = series.get("Values") or []
        if values:
            ages[arns[int(series["Id"][1:])]] = int(max(values))
    return ages


def http_status(report: HealthReport) -> int:
    """200, or 503 when unhealthy (so a load balancer or a synthetic check can act on the status code)."""
    return 503 if report.status == "unhealthy" else 200
