"""``switchboard dev``: the whole system on a laptop, no AWS account, no Docker.

One process tree: an embedded PostgreSQL (data under ``.switchboard/``, kept across restarts), a moto server
on loopback with every resource of template.yaml created from the template itself, one poller process per
SQS-fed function (behaving like Lambda's event source mapping), scheduled functions on their rate, and a
local WebSocket gateway that runs the template's WebSocket functions and serves the ``@connections`` API,
and the management API: the template's ManagementFunction behind the SigV4 check IAM auth makes.
Handler code is the code deployed to AWS: only endpoints and settings differ.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import secrets
import shutil
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.template import FunctionSpec, Stack, Template, load_template, provision

REGION = "us-east-1"
STACK_NAME = "switchboard-local"
JWT_ISSUER = "switchboard-local"
JWT_AUDIENCE = "switchboard"
STAGE = "local"
NOTIFICATION_DOMAIN = "switchboard.local"
MANAGEMENT_FUNCTION = "ManagementFunction"


@dataclass
class DevOptions:
    data_dir: Path = Path(".switchboard")
    fresh: bool = False
    host: str = "127.0.0.1"
    aws_port: int = 4566
    websocket_port: int = 3001
    management_port: int = 3002
    management_api_port: int = 3003
    log_level: str = "INFO"


@dataclass
class LocalStack:
    options: DevOptions
    template: Template = field(default_factory=load_template)
    info: dict[str, Any] = field(default_factory=dict)
    _postgres: Any = None
    _moto: Any = None
    _gateway: Any = None
    _management_api: Any = None
    _management_function: Any = None
    _workers: list[Any] = field(default_factory=list)
    _stop: Any = None
    _scheduler_stop: threading.Event = field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self, out: Callable[[str], None] = print) -> dict[str, Any]:
        options = self.options
        data_dir = options.data_dir.resolve()
        if options.fresh and data_dir.exists():
            shutil.rmtree(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        ports = [
            _port(options.host, p)
            for p in (
                options.aws_port,
                options.websocket_port,
                options.management_port,
                options.management_api_port,
            )
        ]
        aws_port, ws_port, management_port, management_api_port = ports
        aws_url = f"http://{options.host}:{aws_port}"
        kept = persistent_secrets(data_dir / "secrets.json")
        jwt_secret = kept["jwt_secret"]

        database_url = self._start_postgres(data_dir / "pg")
        os.environ.update(_process_environment(aws_url, database_url, options.log_level))
        self._start_moto(options.host, aws_port)
        self._migrate(database_url)
        stack = self._provision()

        management_url = f"http://{options.host}:{management_port}/{STAGE}"
        common = {
            **_process_environment(aws_url, database_url, options.log_level),
            "WEBSOCKET_ENDPOINT": management_url,
            "JWT_SECRET": jwt_secret,
            "JWT_ISSUER": JWT_ISSUER,
            "JWT_AUDIENCE": JWT_AUDIENCE,
        }

        def environment(spec: FunctionSpec) -> dict[str, str]:
            env = {**stack.function_environment(spec), **common}
            env.pop("DB_SECRET_ARN", None)
            env.pop("JWT_SECRET_ARN", None)
            env.pop("JWT_JWKS_URL", None)
            return env

        self._start_gateway(environment, options.host, ws_port, management_port)
        self._start_pollers(stack, environment)
        self._start_schedules(environment)
        self._start_management_api(stack, environment, options.host, management_api_port, kept)
        self._watcher = threading.Thread(
            target=watch_notifications, args=(self._scheduler_stop,), name="notifications", daemon=True
        )
        self._watcher.start()

        self.info = {
            "aws_endpoint_url": aws_url,
            "region": REGION,
            "database_url": database_url,
            "websocket_url": self._gateway.websocket_url,
            "websocket_management_url": management_url,
            "jwt_secret": jwt_secret,
            "jwt_issuer": JWT_ISSUER,
            "jwt_audience": JWT_AUDIENCE,
            "queues": {
                job_type: {"url": url, "dlq_url": dlq}
                for job_type, (url, dlq) in ((jt, stack.job_queue(jt)) for jt in _job_types(self.template))
            },
        }
        if self._management_api is not None:
            self.info |= {
                "management_url": self._management_api.url,
                "aws_access_key_id": kept["management_access_key_id"],
                "aws_secret_access_key": kept["management_secret_access_key"],
            }
        _write_atomically(data_dir / "dev.json", json.dumps(self.info, indent=2) + "\n")
        out(
            f"switchboard dev: up ({len(self._workers)} queue functions, "
            f"{len(self.template.websocket_routes)} WebSocket routes)"
        )
        out(f"  AWS (moto)      {aws_url}   region {REGION}")
        out(f"  PostgreSQL      {database_url}")
        out(f"  WebSocket       {self._gateway.websocket_url}?token=<JWT>")
        out(f"  JWT             HS256 with jwt_secret from dev.json, iss {JWT_ISSUER}, aud {JWT_AUDIENCE}")
        out(f"  @connections    {management_url}")
        if self._management_api is not None:
            signing = "SigV4 (execute-api) with the keys in dev.json"
            out(f"  management API  {self._management_api.url}   {signing}")
        else:
            out("  management API  not served: template.yaml has no ManagementFunction")
        out(f"  settings        {data_dir / 'dev.json'}")
        return self.info

    def stop(self) -> None:
        self._scheduler_stop.set()
        if self._watcher is not None:
            self._watcher.join(5)  # its last scan reports what the last jobs sent
        if self._stop is not None:
            self._stop.set()
        for worker in self._workers:
            worker.join(5)
            if worker.is_alive():
                worker.terminate()
                worker.join(2)
        if self._management_api is not None:
            self._management_api.stop()
        if self._management_function is not None:
            self._management_function.shutdown()
        if self._gateway is not None:
            self._gateway.stop()
        if self._moto is not None:
            self._moto.stop()
        if self._postgres is not None:
            self._postgres.cleanup()

    def wait(self) -> None:
        """Block until SIGINT/SIGTERM."""
        stopped = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopped.set())
        while not stopped.wait(0.5):
            dead = [w for w in self._workers if not w.is_alive()]
            if dead:
                raise SystemExit(f"poller {dead[0].name} exited (code {dead[0].exitcode})")

    # --- parts -------------------------------------------------------------------------------------------

    def _start_postgres(self, pgdata: Path) -> str:
        from infra.embedded_postgres import start_embedded_postgres

        self._postgres = start_embedded_postgres(pgdata)
        return str(self._postgres.get_uri())

    def _start_moto(self, host: str, port: int) -> None:
        import logging

        from infra.local_aws import LocalAwsServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per SQS call otherwise

        # moto's server app, plus the SQS message move tasks moto lacks (the management API's native redrive)
        self._moto = LocalAwsServer(host, port)
        self._moto.start()

    @staticmethod
    def _migrate(database_url: str) -> None:
        from shared.config import Settings
        from shared.db.engine import build_engine
        from shared.db.migrations import upgrade

        engine = build_engine(Settings(database_url=database_url))
        try:
            upgrade(engine)
        finally:
            engine.dispose()

    def _provision(self) -> Stack:
        import boto3

        parameters = provision_notification_providers()
        stack = provision(
            self.template,
            sqs_client=boto3.client("sqs", region_name=REGION),
            stack_name=STACK_NAME,
            parameters=parameters,
        )
        provision_other_resources(self.template, stack)
        return stack

    def _start_gateway(
        self,
        environment: Callable[[FunctionSpec], dict[str, str]],
        host: str,
        port: int,
        management_port: int,
    ) -> None:
        from infra.gateway import LocalWebSocketGateway
        from infra.local_lambda import invoker

        api = self.template.websocket_api
        routes = {
            key: invoker(spec, environment(spec)) for key, spec in self.template.websocket_routes.items()
        }
        authorizer_spec = self.template.websocket_authorizer
        authorizer = invoker(authorizer_spec, environment(authorizer_spec)) if authorizer_spec else None
        self._gateway = LocalWebSocketGateway(
            routes=routes,
            authorizer=authorizer,
            host=host,
            port=port,
            management_port=management_port,
            stage=STAGE,
            region=REGION,
            route_selection_expression=api.route_selection_expression if api else "$request.body.action",
            identity_sources=tuple(api.identity_sources) if api else (),
        )
        self._gateway.start()

    def _start_management_api(
        self,
        stack: Stack,
        environment: Callable[[FunctionSpec], dict[str, str]],
        host: str,
        port: int,
        kept: dict[str, str],
    ) -> None:
        """The management API, and Lambda ``Invoke`` of its function (a redrive continues by invoking the
        function asynchronously); the function runs in processes of its own, as Lambda containers."""
        from infra.function_processes import FunctionProcesses
        from infra.management_gateway import ManagementApiServer, http_api_routes
        from infra.sigv4_verify import SigV4Verifier
        from infra.template import resolve

        spec = self.template.functions.get(MANAGEMENT_FUNCTION)
        if spec is None:
            return
        self._management_function = function = FunctionProcesses(spec.logical_id, environment(spec))
        function.warm()
        resource = self.template.resources[MANAGEMENT_FUNCTION]
        declared_name = resource["Properties"].get("FunctionName")
        names = {spec.logical_id}
        if declared_name:
            names.add(str(resolve(declared_name, stack.context())))
        self._moto.functions.register(names, function.invoke, function.invoke_async)
        verifier = SigV4Verifier(
            kept["management_access_key_id"], kept["management_secret_access_key"], REGION
        )
        self._management_api = ManagementApiServer(
            invoke=function.invoke,
            verifier=verifier,
            host=host,
            port=port,
            routes=http_api_routes(resource),
        )
        self._management_api.start()

    def _start_pollers(self, stack: Stack, environment: Callable[[FunctionSpec], dict[str, str]]) -> None:
        from infra.poller import run_poller

        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        readies = []
        for spec in self.template.functions.values():
            if not spec.sqs_events:
                continue
            queue_url = stack.queue_urls[spec.sqs_events[0].queue_logical_id]
            ready = context.Event()
            worker = context.Process(
                target=run_poller,
                name=spec.logical_id,
                daemon=True,
                args=(spec.logical_id, queue_url, environment(spec), self._stop, ready),
            )
            worker.start()
            self._workers.append(worker)
            readies.append((spec.logical_id, ready, worker))
        for name, ready, worker in readies:
            if not ready.wait(60):
                raise RuntimeError(f"poller {name} did not start (exit code {worker.exitcode})")

    def _start_schedules(self, environment: Callable[[FunctionSpec], dict[str, str]]) -> None:
        from infra.local_lambda import invoker

        for logical_id, seconds in scheduled_functions(self.template).items():
            spec = self.template.functions[logical_id]
            invoke = invoker(spec, environment(spec))

            def loop(
                invoke: Callable[[dict[str, Any]], Any] = invoke,
                seconds: float = seconds,
                name: str = logical_id,
            ) -> None:
                while not self._scheduler_stop.wait(seconds):
                    try:
                        invoke({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}})
                    except Exception as exc:  # noqa: BLE001 - a failed run is reported; the next one still runs
                        print(f"[{name}] scheduled run failed: {type(exc).__name__}: {exc}", flush=True)

            threading.Thread(target=loop, name=f"schedule-{logical_id}", daemon=True).start()


def provision_notification_providers() -> dict[str, str]:
    """The providers NotificationFunction sends through, created in moto: a verified SES identity and the
    APNs / FCM platform applications; returns the template parameters that name them."""
    import boto3

    sns = boto3.client("sns", region_name=REGION)
    apps = {
        platform: sns.create_platform_application(
            Name="switchboard-local", Platform=platform, Attributes={"PlatformCredential": "local"}
        )["PlatformApplicationArn"]
        for platform in ("APNS", "GCM")
    }
    boto3.client("sesv2", region_name=REGION).create_email_identity(EmailIdentity=NOTIFICATION_DOMAIN)
    return {
        "ApnsPlatformApplicationArn": apps["APNS"],
        "FcmPlatformApplicationArn": apps["GCM"],
        "SesIdentityArn": f"arn:aws:ses:{REGION}:123456789012:identity/{NOTIFICATION_DOMAIN}",
        "NotificationEmailFrom": f"Switchboard <notifications@{NOTIFICATION_DOMAIN}>",
    }


def watch_notifications(stop: threading.Event, out: Callable[[str], None] = print) -> None:
    """Print every push, email and SMS the functions hand to moto (the local stand-in for the providers),
    with its channel and target: what a developer wants to see when a notification job runs."""
    from moto.ses.models import ses_backends
    from moto.sns.models import sns_backends

    sns, ses = sns_backends["123456789012"][REGION], ses_backends["123456789012"][REGION]
    seen: set[str] = set()

    def report(key: str, line: str) -> None:
        if key not in seen:
            seen.add(key)
            out(f"[notification] {line}")

    while True:
        stopping = stop.wait(0.5)
        for arn, endpoint in list(sns.platform_endpoints.items()):
            for message_id in list(endpoint.messages):
                report(message_id, f"push  -> endpoint {arn.rsplit('/', 1)[-1]} ({arn.split('/')[1]})")
        for message_id, (number, _) in list(sns.sms_messages.items()):
            report(message_id, f"sms   -> {number}")
        for message in list(ses.sent_messages):
            report(message.id, f"email -> {', '.join(message.destinations.get('ToAddresses', []))}")
        if stopping:
            return


def provision_other_resources(template: Template, stack: Stack) -> None:
    """SNS topics, S3 buckets, KMS keys and Secrets Manager secrets of the template, created in moto and
    registered so that ``Ref`` / ``GetAtt`` resolve in function environments."""
    import boto3

    for logical_id, resource in template.resources.items():
        kind = resource.get("Type")
        name = f"{STACK_NAME}-{logical_id}".lower()
        if kind == "AWS::SNS::Topic":
            arn = boto3.client("sns", region_name=REGION).create_topic(Name=name)["TopicArn"]
            stack.refs[logical_id] = arn
            stack.attributes[(logical_id, "TopicArn")] = arn
        elif kind == "AWS::S3::Bucket":
            boto3.client("s3", region_name=REGION).create_bucket(Bucket=name)
            stack.refs[logical_id] = name
            stack.attributes[(logical_id, "Arn")] = f"arn:aws:s3:::{name}"
        elif kind == "AWS::KMS::Key":
            key = boto3.client("kms", region_name=REGION).create_key(Description=logical_id)["KeyMetadata"]
            stack.refs[logical_id] = key["KeyId"]
            stack.attributes[(logical_id, "Arn")] = key["Arn"]
        elif kind == "AWS::SecretsManager::Secret":
            arn = boto3.client("secretsmanager", region_name=REGION).create_secret(
                Name=name, SecretString=secrets.token_urlsafe(32)
            )["ARN"]
            stack.refs[logical_id] = arn


def scheduled_functions(template: Template) -> dict[str, float]:
    """Functions with a ``Schedule`` event of the form ``rate(N unit)``, with their period in seconds."""
    units = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}
    found: dict[str, float] = {}
    for logical_id, resource in template.resources.items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for event in (resource.get("Properties", {}).get("Events") or {}).values():
            schedule = (
                (event.get("Properties") or {}).get("Schedule")
                if event.get("Type") in ("Schedule", "ScheduleV2")
                else None
            )
            match = re.fullmatch(r"rate\((\d+)\s+(\w+)\)", schedule or "")
            if match and match.group(2) in units:
                found[logical_id] = int(match.group(1)) * units[match.group(2)]
    return found


def _job_types(template: Template) -> list[str]:
    from shared.jobs import JOB_KINDS

    return [name for name, kind in JOB_KINDS.items() if kind.queue_logical_id in template.main_queues]


def _process_environment(aws_url: str, database_url: str, log_level: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": aws_url,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "DATABASE_URL": database_url,
        "POWERTOOLS_TRACE_DISABLED": "1",
        # Metrics stay on: each invocation prints its EMF line, as in Lambda. (With
        # POWERTOOLS_METRICS_DISABLED, Powertools 3 keeps buffering and dumps 100 metrics at once.)
        "POWERTOOLS_LOG_LEVEL": log_level,
        "LOG_LEVEL": log_level,
    }


def _write_atomically(path: Path, text: str) -> None:
    """Readers polling for ``path`` (tests, tools) never see it half-written."""
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def persistent_secrets(path: Path) -> dict[str, str]:
    """The JWT secret and the management API's keys, generated once and kept in ``path`` (mode 0600); a
    file from before a key existed gets the missing key added, the others kept."""
    kept: dict[str, str] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    generators: dict[str, Callable[[], str]] = {
        "jwt_secret": lambda: secrets.token_urlsafe(32),
        # the shapes of an IAM user's long-term key pair: AKIA + 16 characters, a 40-character secret
        "management_access_key_id": lambda: "AKIA" + secrets.token_hex(8).upper(),
        "management_secret_access_key": lambda: secrets.token_urlsafe(30),
    }
    missing = {name: make() for name, make in generators.items() if not kept.get(name)}
    if missing:
        kept |= missing
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(json.dumps(kept) + "\n")
        os.replace(partial, path)
    return {name: str(value) for name, value in kept.items()}


def _port(host: str, wanted: int) -> int:
    """``wanted``, or a free port when it is 0; a busy port is a clear error."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, wanted))
        except OSError as exc:
            raise SystemExit(
                f"port {wanted} on {host} is busy ({exc.strerror}); pick another, or 0 for any"
            ) from exc
        return int(probe.getsockname()[1])


def run_dev(options: DevOptions, *, demo: bool = False, once: bool = False) -> int:
    stack = LocalStack(options)
    try:
        info = stack.start()
        if demo:
            from infra.dev_demo import play

            play(info)
        if not once:
            print("serving; Ctrl-C to stop", flush=True)
            stack.wait()
    finally:
        stack.stop()
        print("switchboard dev: stopped", flush=True)
    return 0
