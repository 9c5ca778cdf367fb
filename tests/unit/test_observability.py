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


def _lambda_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POWERTOOLS_TRACE")}
    return (
        env
        | {"LAMBDA_TASK_ROOT": "/var/task", "AWS_LAMBDA_FUNCTION_NAME": "F", "AWS_REGION": "us-east-1"}
        | extra
    )


def test_with_tracing_off_the_xray_sdk_core_is_not_loaded():
    probe = (
        "import sys, shared.observability as o; print(o.tracer.disabled, 'aws_xray_sdk.core' in sys.modules)"
    )
    off = subprocess.run(
        [sys.executable, "-c", probe],
        env=_lambda_env(POWERTOOLS_TRACE_DISABLED="1"),
        capture_output=True,
        text=True,
        check=True,
    )
    on = subprocess.run(
        [sys.executable, "-c", probe], env=_lambda_env(), capture_output=True, text=True, check=True
    )
    assert off.stdout.split() == ["True", "False"]
    assert on.stdout.split() == ["False", "True"]


def test_each_job_is_one_subsegment_sent_to_the_daemon():
    import socket

    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.settimeout(10)
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    env = _lambda_env(AWS_XRAY_DAEMON_ADDRESS=f"127.0.0.1:{daemon.getsockname()[1]}", _X_AMZN_TRACE_ID=header)
    probe = "from shared.observability import job_span\nwith job_span('send-message'):\n    pass"
    try:
        subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
        document = json.loads(daemon.recv(65536).split(b"\n", 1)[1])
    finally:
        daemon.close()
    assert document["name"] == "## job send-message"
    assert document["annotations"] == {"job_type": "send-message"}
    assert document["trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"


def test_disabled_metrics_print_nothing_even_past_100_values(capsys, monkeypatch):
    from shared.observability import metrics

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "1")
    for _ in range(150):
        metrics.add_metric(name="JobsProcessed", unit="Count", value=1)
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "0")
    for _ in range(100):  # enabled, the 100th value publishes a blob: the check above can fail
        metrics.add_metric(name="JobsProcessed", unit="Count", value=1)
    assert "JobsProcessed" in capsys.readouterr().out
    metrics.clear_metrics()
