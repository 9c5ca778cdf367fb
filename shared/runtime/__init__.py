"""The job runner (shared/runtime/runner.py) and the pieces it is made of: the inbox and failure ledger
(inbox.py), post-commit effects (effects.py) and what it asks of SQS (sqs.py)."""

from shared.runtime.effects import Effect, EffectKinds
from shared.runtime.runner import JobConsumer, run

__all__ = ["Effect", "EffectKinds", "JobConsumer", "run"]
