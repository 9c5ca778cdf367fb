"""DeliveryConfirmationFunction: the delivery-confirmation queue (standard; receipts are order-free)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.jobs import DELIVERY_CONFIRMATION
from shared.observability import logger, metrics, tracer
from shared.runtime import EffectKinds, JobConsumer, run
from shared.services.connections.broadcast import Broadcast
from shared.services.receipts.service import confirm_delivery

consumer = JobConsumer(
    DELIVERY_CONFIRMATION,
    confirm_delivery,
    effects=EffectKinds(Broadcast),
    settings=("WEBSOCKET_ENDPOINT",),
)


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run(event, context, consumer)
