"""What every bench sets up the same way: moto's credentials, Powertools quiet, and a PostgreSQL to run on
(``DATABASE_URL`` when set, else an embedded one for the bench's lifetime)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def quiet_local_aws() -> None:
    """Credentials moto accepts, no endpoint override (moto in-process), Powertools silent."""
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
