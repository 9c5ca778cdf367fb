"""The one Logger, Metrics and Tracer of every function (service name and namespace come from the
POWERTOOLS_* variables set in template.yaml). Importing this module connects to nothing.

Tracing is behind this module only: handlers decorate with ``tracer.capture_lambda_handler`` and the runner
opens :func:`job_span` per job; nothing else names the X-Ray SDK. Moving to OpenTelemetry (the X-Ray SDK's
support ends 2027-02-25; docs/architecture.md, "Tracing") replaces what is built here and nothing else."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
from aws_lambda_powertools.shared.functions import resolve_truthy_env_var_choice
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

logger = Logger(service="switchboard")


class _EMFProvider(AmazonCloudWatchEMFProvider):
    """Powertools' EMF metrics, except that when metrics are disabled nothing is kept or printed: Powertools
    still keeps the values, prints a blob from ``add_metric`` each time one metric reaches 100 values, and
    warns of "no metrics" on every flush."""

    def add_metric(self, *args: Any, **kwargs: Any) -> None:
        if not is_metrics_disabled():
            super().add_metric(*args, **kwargs)

    def flush_metrics(self, raise_on_empty_metrics: bool = False) -> None:
        if not is_metrics_disabled():
            super().flush_metrics(raise_on_empty_metrics)


metrics = Metrics(provider=_EMFProvider(namespace="Switchboard", service="switchboard"))


class _Untraced(BaseSegment):
    """The segment of a tracer that records nothing."""

    def close(self, end_time: int | None = None) -> None:
        return None

    def add_subsegment(self, subsegment: Any) -> None:
        return None

    def remove_subsegment(self, subsegment: Any) -> None:
        return None

    def put_annotation(self, key: str, value: Any) -> None:
        return None

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        return None

    def add_exception(self, exception: BaseException, stack: Any, remote: bool = False) -> None:
        return None


class _NoTracing(BaseProvider):
    """The provider of a disabled tracer: Powertools would load the X-Ray SDK anyway (``aws_xray_sdk.core``,
    ~105 ms of every cold start, measured) to hand out its dummy segments."""

    @contextmanager
    def in_subsegment(self, name: Any = None, **kwargs: Any) -> Generator[BaseSegment, None, None]:
        yield _Untraced()

    def in_subsegment_async(self, name: Any = None, **kwargs: Any) -> Any:
        raise NotImplementedError("no async handlers here")

    def put_annotation(self, key: str, value: Any) -> None:
        return None

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        return None

    def patch(self, modules: Sequence[str]) -> None:
        return None

    def patch_all(self) -> None:
        return None


def _tracing_enabled() -> bool:
    """Powertools' own rule: on in Lambda (``LAMBDA_TASK_ROOT``), off under SAM local or Chalice, or when
    POWERTOOLS_TRACE_DISABLED is true."""
    if resolve_truthy_env_var_choice(env=os.getenv("POWERTOOLS_TRACE_DISABLED", "false")):
        return False
    return bool(os.getenv("LAMBDA_TASK_ROOT")) and not (
        os.getenv("AWS_SAM_LOCAL") or os.getenv("AWS_CHALICE_CLI_MODE")
    )


# In Lambda, Powertools would patch every library the X-Ray SDK knows. Its SQLAlchemy patch recompiles each
# statement (bypassing the compiled cache) and appends to urllib.parse.uses_netloc on every statement, a leak
# for the container's life; its pg8000 patch adds a span per statement. Trace the AWS calls only (a
# subsegment per call, with the job's subsegment from job_span as parent).
tracer = (
    Tracer(service="switchboard", patch_modules=("botocore",))
    if _tracing_enabled()
    else Tracer(service="switchboard", disabled=True, auto_patch=False, provider=_NoTracing())
)


@contextmanager
def job_span(job_type: str) -> Iterator[None]:
    """One subsegment per job (``## job <type>``, annotated with the job type): the AWS calls the job makes
    nest under it. Nothing when tracing is off."""
    if tracer.disabled:
        yield
        return
    with tracer.provider.in_subsegment(name=f"## job {job_type}") as subsegment:
        subsegment.put_annotation(key="job_type", value=job_type)
        yield
