"""What every bench sets up the same way: moto's credentials, Powertools quiet, and a PostgreSQL to run on
(``DATABASE_URL`` when set, else an embedded one for the bench's lifetime)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def quiet_local_aws(*, tracing: bool = False) -> Any:
    """Credentials moto accepts, no endpoint override (moto in-process), Powertools silent.

    ``tracing``: the tracer as Lambda runs it (call before the handler is imported). Powertools turns it on
    only where ``LAMBDA_TASK_ROOT`` is set, and the X-Ray SDK then behaves as in Lambda (a facade segment
    from ``_X_AMZN_TRACE_ID``, each subsegment streamed as UDP to the daemon): returns the stand-in daemon
    (bench/aws_stub.py) the segments go to; set ``_X_AMZN_TRACE_ID`` per invocation. Else returns None."""
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "POWERTOOLS_TRACE_DISABLED": "1",
            "POWERTOOLS_LOG_LEVEL": "ERROR",
            "POWERTOOLS_METRICS_DISABLED": "1",
        }
    )
    os.environ.pop("AWS_ENDPOINT_URL", None)
    if not tracing:
        return None
    from bench.aws_stub import XRaySink

    sink = XRaySink()
    del os.environ["POWERTOOLS_TRACE_DISABLED"]
    os.environ.update(
        {
            "LAMBDA_TASK_ROOT": str(Path(__file__).resolve().parents[1]),
            "AWS_LAMBDA_FUNCTION_NAME": "bench",
            "AWS_XRAY_DAEMON_ADDRESS": sink.address,
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        }
    )
    return sink


@contextmanager
def bench_database() -> Iterator[str]:
    """``DATABASE_URL``, or an embedded PostgreSQL deleted afterwards; yields its URL."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from infra.embedded_postgres import embedded_postgres

    with tempfile.TemporaryDirectory() as tmp, embedded_postgres(Path(tmp) / "pg", keep=False) as embedded:
        yield embedded
