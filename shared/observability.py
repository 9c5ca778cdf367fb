"""The one Logger, Metrics and Tracer of every function (service name and namespace come from the
POWERTOOLS_* variables set in template.yaml). Importing this module connects to nothing."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger(service="switchboard")
metrics = Metrics(namespace="Switchboard", service="switchboard")
tracer = Tracer(service="switchboard")
