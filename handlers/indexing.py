"""IndexingFunction: the indexing queue (the search index of each message; shared/services/search)."""

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
