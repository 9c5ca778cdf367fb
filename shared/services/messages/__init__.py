"""The messages domain: send-message (service.py) and its queries (repository.py)."""

from shared.runtime.effects import EffectKinds
from shared.services.messages.service import (
    BroadcastNewMessage,
    NotifyOffline,
    record_dead_letter,
    send_message,
)
from shared.services.queues import EnqueueJobs

# Every effect send-message stores: its own, and the follow-ups they return.
EFFECT_KINDS = EffectKinds(EnqueueJobs, BroadcastNewMessage, NotifyOffline)

__all__ = ["EFFECT_KINDS", "record_dead_letter", "send_message"]
