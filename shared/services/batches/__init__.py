"""The batches domain: batch-message fan-out (service.py), its ledger queries (repository.py), cancel."""

from shared.runtime.effects import EffectKinds
from shared.services.batches.service import EnqueueBatchSends, batch_message, cancel_batch, get_batch
from shared.services.connections.broadcast import Broadcast
from shared.services.queues import EnqueueJobs

# Every effect batch-message stores.
EFFECT_KINDS = EffectKinds(EnqueueBatchSends, Broadcast, EnqueueJobs)

__all__ = ["EFFECT_KINDS", "batch_message", "cancel_batch", "get_batch"]
