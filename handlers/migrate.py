"""MigrationFunction: the ``Custom::SchemaMigration`` resource of template.yaml. CloudFormation calls it on
deploy; it migrates the database to the Alembic head and always answers (shared.services.schema)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.observability import logger, tracer
from shared.services.schema import handle_request


@logger.inject_lambda_context  # never log_event: the request carries a pre-signed response URL
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> None:
    handle_request(event, context)
