"""NotificationFunction: the notification queue (push, email, SMS and in-app for one user per job)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.jobs import NOTIFICATION
from shared.observability import logger, metrics, tracer
from shared.runtime import EffectKinds, JobConsumer, run
from shared.services.connections.broadcast import Broadcast
from shared.services.notifications.service import DeliverNotification, notify

consumer = JobConsumer(
    NOTIFICATION,
    notify,
    effects=EffectKinds(Broadcast, DeliverNotification),
    settings=("WEBSOCKET_ENDPOINT",),
)


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run(event, context, consumer)
