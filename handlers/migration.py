"""MigrationFunction: the ``Custom::SchemaMigration`` resource of template.yaml. CloudFormation calls it on
deploy; it migrates the database to the Alembic head and always answers (shared.services.migration).

The request carries a pre-signed response URL (a credential): the event is never logged, and a malformed
one is described by its field names only."""

from collections.abc import Mapping
from typing import Any, NoReturn

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from shared.observability import logger, tracer
from shared.services.migration import (
    PHYSICAL_RESOURCE_ID,
    CustomResourceRequest,
    ResponseNotDelivered,
    ResponseTarget,
    handle_request,
    reject_request,
)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> None:
    try:
        request = CustomResourceRequest.model_validate(event)
    except ValidationError as error:
        _reject(event, error, context)
    handle_request(request, context)


def _reject(event: Any, error: ValidationError, context: LambdaContext) -> NoReturn:
    """Answer a malformed request FAILED where it has a ``ResponseURL``, then raise ``ValueError``."""
    problem = f"not a CloudFormation custom-resource request: {_problems(error)}"
    target = _response_target(event)
    logger.error(problem, extra={"answered": target is not None})
    if target is not None:
        try:
            reject_request(target, problem, context)
        except ResponseNotDelivered:
            logger.exception("the response to a malformed request was not delivered")
    raise ValueError(problem) from None  # not the ValidationError: its text holds the input, URL included


def _problems(error: ValidationError) -> str:
    """``missing ResponseURL, StackId; invalid RequestId``: field names only, never their values."""
    missing: list[str] = []
    invalid: list[str] = []
    for detail in error.errors(include_url=False, include_context=False, include_input=False):
        name = ".".join(str(part) for part in detail["loc"]) or "the event (not an object)"
        found = missing if detail["type"] == "missing" else invalid
        if name not in found:
            found.append(name)
    parts = [f"missing {', '.join(missing)}"] if missing else []
    if invalid:
        parts.append(f"invalid {', '.join(invalid)}")
    return "; ".join(parts)


def _response_target(event: Any) -> ResponseTarget | None:
    """Where to answer a malformed request, if it says (its other fields: as far as they are strings)."""
    if not isinstance(event, Mapping):
        return None
    url = event.get("ResponseURL")
    if not isinstance(url, str) or not url:
        return None

    def text(name: str) -> str:
        value = event.get(name)
        return value if isinstance(value, str) else ""

    return ResponseTarget(
        url=url,
        stack_id=text("StackId"),
        request_id=text("RequestId"),
        logical_resource_id=text("LogicalResourceId"),
        physical_resource_id=text("PhysicalResourceId") or PHYSICAL_RESOURCE_ID,
    )
