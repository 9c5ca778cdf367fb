"""IndexingFunction: the indexing queue (the search index of each message; shared/services/search). A message
of an encrypted conversation is decrypted in memory for its blind index, with the key ring the service builds
from the invocation's dependencies (``kms:Decrypt``; ``kms:GenerateDataKey`` when a conversation that just
turned encryption on has no key yet)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.jobs import INDEXING
from shared.observability import logger, metrics, tracer
from shared.runtime import JobConsumer, run
from shared.services.search.service import index_message

consumer = JobConsumer(INDEXING, index_message)


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run(event, context, consumer)
