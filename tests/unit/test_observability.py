"""Tracing in Lambda patches the AWS SDK only: the X-Ray SDK's SQLAlchemy and pg8000 patches cost a statement
recompile and a growing list per statement (a leak for the container's life)."""

import json
import os
import subprocess
import sys

PROBE = """
import json, wrapt
import shared.observability  # builds the Tracer as a function does at cold start
import botocore.client, pg8000, sqlalchemy.orm.session
wrapped = lambda owner, name: isinstance(vars(owner)[name], wrapt.FunctionWrapper)
print(json.dumps({
    "botocore": wrapped(botocore.client.BaseClient, "_make_api_call"),
    "pg8000": wrapped(pg8000, "connect"),
    "sqlalchemy": wrapped(sqlalchemy.orm.session.Session, "execute")
    or wrapped(sqlalchemy.orm.session.Session, "__init__"),
}))
"""


def test_tracing_as_in_lambda_patches_botocore_and_not_the_database():
    # Given a Lambda-like environment with tracing on
    env = {k: v for k, v in os.environ.items() if not k.startswith("POWERTOOLS_TRACE")}
    env |= {
        "LAMBDA_TASK_ROOT": "/var/task",
        "AWS_LAMBDA_FUNCTION_NAME": "SendMessageFunction",
        "AWS_REGION": "us-east-1",
    }
    # When the observability module is imported in a fresh interpreter
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    patched = json.loads(out.stdout.strip().splitlines()[-1])
    # Then AWS calls are traced and database calls are left alone
    assert patched == {"botocore": True, "pg8000": False, "sqlalchemy": False}
