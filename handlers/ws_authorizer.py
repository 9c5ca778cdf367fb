"""WebSocketAuthorizerFunction: the REQUEST authorizer of the WebSocket API's ``$connect`` route.

Allow: ``{"principalId": <user id>, "policyDocument": <Allow execute-api:Invoke on methodArn>,
"context": {"user_id": <user id>}}`` — API Gateway hands ``context`` to ``$connect`` as
``requestContext.authorizer``. A refused token gets an explicit Deny (``principalId: "anonymous"``,
``context.reason``), which API Gateway answers with 403. Returning Deny rather than raising
``Exception("Unauthorized")`` (a 401) keeps a refusal a successful invocation: the function's Errors metric
and alarms then count only real faults (configuration, an unreachable JWKS), which do raise and make API
Gateway answer 500. The token is never logged (``log_event=False`` whatever POWERTOOLS_LOGGER_LOG_EVENT says).
"""

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.errors import InvalidToken
from shared.observability import logger, metrics, tracer
from shared.services.connections.auth import verify_token


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    token = (event.get("queryStringParameters") or {}).get("token")
    try:
        user = verify_token(token)
    except InvalidToken as refused:
        logger.info("connection refused", extra={"reason": refused.reason})
        metrics.add_metric(name="ConnectionsRefused", unit=MetricUnit.Count, value=1)
        return policy("anonymous", "Deny", event["methodArn"], {"reason": refused.reason})
    metrics.add_metric(name="ConnectionsAuthorized", unit=MetricUnit.Count, value=1)
    user_id = str(user.user_id)
    return policy(user_id, "Allow", event["methodArn"], {"user_id": user_id})


def policy(principal_id: str, effect: str, method_arn: str, context: dict[str, str]) -> dict[str, Any]:
    statement = {"Action": "execute-api:Invoke", "Effect": effect, "Resource": method_arn}
    return {
        "principalId": principal_id,
        "policyDocument": {"Version": "2012-10-17", "Statement": [statement]},
        "context": context,
    }
