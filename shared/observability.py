"""The one Logger, Metrics and Tracer of every function (service name and namespace come from the
POWERTOOLS_* variables set in template.yaml). Importing this module connects to nothing."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger(service="switchboard")
metrics = Metrics(namespace="Switchboard", service="switchboard")
# In Lambda, Powertools would patch every library the X-Ray SDK knows. Its SQLAlchemy patch recompiles each
# statement (bypassing the compiled cache) and appends to urllib.parse.uses_netloc on every statement, a leak
# for the container's life; its pg8000 patch adds a span per statement. Trace the AWS calls only.
tracer = Tracer(service="switchboard", patch_modules=("botocore",))
