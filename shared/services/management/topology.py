"""Which queues the management API works on: each job type's queue (its URL from the function's settings,
the ``<JOB_TYPE>_QUEUE_URL`` variables template.yaml passes) and that queue's DLQ, read from the queue's own
``RedrivePolicy``, so the DLQ is declared once, in the template."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.bootstrap import Dependencies
from shared.jobs import JOB_KINDS, JobKind
from shared.runtime.sqs import queue_url_from_arn
from shared.services.management.errors import Unavailable, UnknownJobType

QUEUE_COUNTS = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


@dataclass(frozen=True)
class QueuePair:
    """A job type's queue and its dead-letter queue, with the source queue's counts as just read."""

    kind: JobKind[Any]
    url: str
    arn: str
    dlq_url: str
    dlq_arn: str
    counts: dict[str, int]

    @property
    def fifo(self) -> bool:
        return self.kind.fifo


def kind_of(job_type: str) -> JobKind[Any]:
    """The declared job type ``job_type``; raises :class:`UnknownJobType` (404) otherwise."""
    kind = JOB_KINDS.get(job_type)
    if kind is None:
        raise UnknownJobType(f"unknown job type; known: {', '.join(JOB_KINDS)}")
    return kind


def configured_job_types(deps: Dependencies) -> list[str]:
    """The job types whose queue this function was given, in declaration order."""
    return [name for name in JOB_KINDS if name in deps.settings.job_queue_urls]


def queue_pair(deps: Dependencies, job_type: str) -> QueuePair:
    """Resolve ``job_type``'s queue and DLQ (one GetQueueAttributes call, which also returns its counts)."""
    kind = kind_of(job_type)
    url = deps.settings.queue_url(kind)
    try:
        attributes = deps.aws.sqs().get_queue_attributes(
            QueueUrl=url, AttributeNames=["QueueArn", "RedrivePolicy", *QUEUE_COUNTS]
        )["Attributes"]
    except (ClientError, BotoCoreError) as exc:
        raise Unavailable(f"SQS did not describe the {job_type} queue ({type(exc).__name__})") from exc
    policy = attributes.get("RedrivePolicy")
    if not policy:
        raise Unavailable(f"the {job_type} queue has no dead-letter queue (RedrivePolicy)")
    dlq_arn = str(json.loads(policy)["deadLetterTargetArn"])
    return QueuePair(
        kind=kind,
        url=url,
        arn=attributes["QueueArn"],
        dlq_url=queue_url_from_arn(dlq_arn),
        dlq_arn=dlq_arn,
        counts={name: int(attributes.get(name, 0)) for name in QUEUE_COUNTS},
    )


def queue_counts(sqs: Any, url: str) -> dict[str, int]:
    """Visible, in-flight and delayed counts of a queue."""
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(QUEUE_COUNTS))["Attributes"]
    return {name: int(attributes.get(name, 0)) for name in QUEUE_COUNTS}


def queue_name(arn: str) -> str:
    return arn.rsplit(":", 1)[-1]
