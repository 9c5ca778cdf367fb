"""EncryptionFunction: the encryption queue (seal, open and re-seal message content; shared/services/crypto).

The service needs the KMS client and the key settings: the handle below builds a :class:`KeyRing` from the
invocation's dependencies the runner hands it (cheap; no client until KMS is called)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from sqlalchemy.orm import Session

from shared.bootstrap import Dependencies
from shared.jobs import ENCRYPTION, EncryptionData, Job
from shared.observability import logger, metrics, tracer
from shared.runtime import JobConsumer, run
from shared.runtime.effects import Effect
from shared.services.crypto.keys import KeyRing
from shared.services.crypto.service import handle_encryption


def handle(job: Job[EncryptionData], session: Session, deps: Dependencies) -> list[Effect]:
    return handle_encryption(job, session, KeyRing.of(deps))


consumer = JobConsumer(ENCRYPTION, handle, settings=("ENCRYPTION_KEY_ARN",))


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run(event, context, consumer)
