"""The cleanup domain: retention, purges and housekeeping (service.py), every query (repository.py)."""

from shared.runtime.effects import EffectKinds
from shared.services.cleanup.service import DeleteAttachmentObjects, DeleteOrphanObjects, cleanup
from shared.services.queues import EnqueueJobs

# Every effect cleanup stores.
EFFECT_KINDS = EffectKinds(DeleteAttachmentObjects, DeleteOrphanObjects, EnqueueJobs)

__all__ = ["EFFECT_KINDS", "DeleteAttachmentObjects", "DeleteOrphanObjects", "cleanup"]
