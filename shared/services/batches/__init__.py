"""The batches domain: batch-message fan-out (service.py), its ledger queries (repository.py), cancel,
retry of failed recipients, and the batch's content sealed at rest for it (sealing.py)."""

from shared.runtime.effects import EffectKinds
from shared.services.batches.errors import BatchNotRetryable
from shared.services.batches.service import (
    EnqueueBatchSends,
    batch_message,
    cancel_batch,
    forget_finished_content,
    get_batch,
    retry_failed,
)
from shared.services.connections.broadcast import Broadcast
from shared.services.queues import EnqueueJobs

# Every effect batch-message stores.
EFFECT_KINDS = EffectKinds(EnqueueBatchSends, Broadcast, EnqueueJobs)

__all__ = [
    "EFFECT_KINDS",
    "BatchNotRetryable",
    "batch_message",
    "cancel_batch",
    "forget_finished_content",
    "get_batch",
    "retry_failed",
]
