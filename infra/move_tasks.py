"""SQS message move tasks on the local stack's moto server, which (moto 5.2.5) does not implement them.

``StartMessageMoveTask``, ``ListMessageMoveTasks`` and ``CancelMessageMoveTask`` are answered by a WSGI
middleware in front of moto's own server app (JSON protocol, ``X-Amz-Target: AmazonSQS.<Action>``, and the
query protocol), with SQS's response shapes, error codes and messages. Each task runs in a background
thread that moves messages through the same server's SQS API, as SQS's redrive does: receive from the
dead-letter queue, send to the destination with the original body, message attributes and (FIFO) group,
delete from the DLQ only after the send succeeded; at most ``MaxNumberOfMessagesPerSecond``; cancellable.
Everything else goes to moto untouched. The management API's native redrive runs on this locally."""

from __future__ import annotations

import base64
import binascii
import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

ACTIONS = ("StartMessageMoveTask", "ListMessageMoveTasks", "CancelMessageMoveTask")
MAX_RATE = 500
RECEIVE_VISIBILITY_SECONDS = 30  # a message in hand reappears in the DLQ if the task dies holding it
_JSON = "application/x-amz-json-1.0"
_XMLNS = "http://queue.amazonaws.com/doc/2012-11-05/"


class SqsError(Exception):
    """An error as SQS returns it: ``code`` is what botocore reports as ``Error.Code``."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True)
class QueueRef:
    arn: str
    region: str
    account: str
    name: str

    @property
    def fifo(self) -> bool:
        return self.name.endswith(".fifo")


def parse_queue_arn(arn: Any, parameter: str) -> QueueRef:
    parts = arn.split(":") if isinstance(arn, str) else []
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sqs" or not all(parts[3:]):
        raise SqsError(
            "InvalidParameterValue",
            f"You must use this format to specify the {parameter}: "
            "arn:<partition>:<service>:<region>:<account-id>:<resource-id>",
        )
    return QueueRef(arn, parts[3], parts[4], parts[5])


@dataclass
class MoveTask:
    source: QueueRef
    destination: QueueRef
    destination_given: bool
    rate: int | None
    to_move: int
    task_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    moved: int = 0
    status: str = "RUNNING"
    failure_reason: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def handle(self) -> str:
        token = json.dumps({"taskId": self.task_id, "sourceArn": self.source.arn}).encode()
        return base64.b64encode(token).decode("ascii")

    @property
    def active(self) -> bool:
        return self.status in ("RUNNING", "CANCELLING")

    def entry(self) -> dict[str, Any]:
        """The task as a ``ListMessageMoveTasks`` result entry (optional fields only where SQS sets them)."""
        entry: dict[str, Any] = {
            "Status": self.status,
            "SourceArn": self.source.arn,
            "ApproximateNumberOfMessagesMoved": self.moved,
            "ApproximateNumberOfMessagesToMove": self.to_move,
            "StartedTimestamp": self.started_ms,
        }
        if self.status == "RUNNING":
            entry["TaskHandle"] = self.handle
        if self.destination_given:
            entry["DestinationArn"] = self.destination.arn
        if self.rate is not None:
            entry["MaxNumberOfMessagesPerSecond"] = self.rate
        if self.failure_reason is not None:
            entry["FailureReason"] = self.failure_reason
        return entry


class MoveTaskEmulator:
    """The three actions over SQS clients from ``sqs_client(region)`` (pointing at the server in front of
    which the middleware sits)."""

    def __init__(self, sqs_client: Callable[[str], Any]) -> None:
        self._sqs = sqs_client
        self._lock = threading.Lock()
        self._tasks: dict[str, list[MoveTask]] = {}  # source ARN -> tasks, newest first
        self._threads: list[threading.Thread] = []

    # --- actions --------------------------------------------------------------------------------------

    def dispatch(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        if action == "StartMessageMoveTask":
            return self.start_task(params)
        if action == "ListMessageMoveTasks":
            return self.list_tasks(params)
        return self.cancel_task(params)

    def start_task(self, params: dict[str, Any]) -> dict[str, Any]:
        source = self._existing(params.get("SourceArn"), "SourceArn")
        redriving = self._queues_redriving_to(source)
        if not redriving:
            raise SqsError("InvalidParameterValue", "Source queue must be configured as a Dead Letter Queue.")
        destination_arn = params.get("DestinationArn")
        destination = (
            redriving[0] if destination_arn is None else self._existing(destination_arn, "DestinationArn")
        )
        if destination.arn == source.arn:
            raise SqsError(
                "InvalidParameterValue", "Source queue arn and destination queue arn cannot be the same."
            )
        if destination.fifo != source.fifo:
            raise SqsError(
                "InvalidParameterValue",
                "Source queue and destination queue must both be FIFO queues or both be standard queues.",
            )
        rate = _rate(params.get("MaxNumberOfMessagesPerSecond"))
        with self._lock:
            if any(task.active for task in self._tasks.get(source.arn, [])):
                raise SqsError(
                    "InvalidParameterValue",
                    "There is already a task running. Only one active task is allowed for a source queue "
                    "arn at a given time.",
                )
            task = MoveTask(source, destination, destination_arn is not None, rate, self._depth(source))
            self._tasks.setdefault(source.arn, []).insert(0, task)
        thread = threading.Thread(
            target=self._run, args=(task,), name=f"move-task-{source.name}", daemon=True
        )
        self._threads.append(thread)
        thread.start()
        return {"TaskHandle": task.handle}

    def list_tasks(self, params: dict[str, Any]) -> dict[str, Any]:
        source = self._existing(params.get("SourceArn"), "SourceArn")
        limit = params.get("MaxResults", 1)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10:
            raise SqsError(
                "InvalidParameterValue",
                f"Value {limit} for parameter MaxResults is invalid. Reason: Must be between 1 and 10.",
            )
        with self._lock:
            return {"Results": [task.entry() for task in self._tasks.get(source.arn, [])[:limit]]}

    def cancel_task(self, params: dict[str, Any]) -> dict[str, Any]:
        task_id, source_arn = _decode_handle(params.get("TaskHandle"))
        with self._lock:
            task = next((t for t in self._tasks.get(source_arn, []) if t.task_id == task_id), None)
            if task is None:
                raise SqsError("ResourceNotFoundException", "Task does not exist.", 404)
            if task.status != "RUNNING":
                raise SqsError("InvalidParameterValue", "Only tasks with status RUNNING can be cancelled.")
            task.status = "CANCELLING"
            task.cancel.set()
            return {"ApproximateNumberOfMessagesMoved": task.moved}

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel every running task and wait for its thread (messages in hand are released first)."""
        with self._lock:
            for tasks in self._tasks.values():
                for task in tasks:
                    task.cancel.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # --- queues ---------------------------------------------------------------------------------------

    def _url(self, queue: QueueRef) -> str:
        return str(
            self._sqs(queue.region).get_queue_url(QueueName=queue.name, QueueOwnerAWSAccountId=queue.account)[
                "QueueUrl"
            ]
        )

    def _existing(self, arn: Any, parameter: str) -> QueueRef:
        if arn is None:
            raise SqsError("MissingParameter", f"The request must contain the parameter {parameter}.")
        queue = parse_queue_arn(arn, parameter)
        from botocore.exceptions import ClientError

        try:
            self._url(queue)
        except ClientError as exc:
            if _error_code(exc) not in ("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"):
                raise
            raise SqsError(
                "ResourceNotFoundException",
                f"The resource that you specified for the {parameter} parameter doesn't exist.",
                404,
            ) from exc
        return queue

    def _queues_redriving_to(self, dlq: QueueRef) -> list[QueueRef]:
        """Queues whose RedrivePolicy names ``dlq``, by name (the first is the default destination)."""
        sqs = self._sqs(dlq.region)
        found = []
        for url in sqs.list_queues(MaxResults=1000).get("QueueUrls", []):
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy", "QueueArn"])
            policy = json.loads(attributes["Attributes"].get("RedrivePolicy") or "{}")
            if policy.get("deadLetterTargetArn") == dlq.arn:
                found.append(parse_queue_arn(attributes["Attributes"]["QueueArn"], "QueueArn"))
        return sorted(found, key=lambda queue: queue.name)

    def _depth(self, queue: QueueRef) -> int:
        attributes = self._sqs(queue.region).get_queue_attributes(
            QueueUrl=self._url(queue), AttributeNames=["ApproximateNumberOfMessages"]
        )
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])

    # --- the move -------------------------------------------------------------------------------------

    def _run(self, task: MoveTask) -> None:
        sqs = self._sqs(task.source.region)
        try:
            mover = _Mover(sqs, task, self._url(task.source), self._url(task.destination))
            mover.run()
        except Exception as exc:  # noqa: BLE001 - a failed task is reported as SQS does: status + reason
            with self._lock:
                task.status, task.failure_reason = "FAILED", _error_code(exc) or type(exc).__name__
            return
        with self._lock:
            task.status = "CANCELLED" if task.cancel.is_set() else "COMPLETED"


@dataclass
class _Mover:
    sqs: Any
    task: MoveTask
    source_url: str
    destination_url: str

    def run(self) -> None:
        """Move until the count taken at start is reached, the DLQ has nothing visible, or cancelled."""
        task, started = self.task, time.monotonic()
        while not task.cancel.is_set() and task.moved < task.to_move:
            want = min(10, task.to_move - task.moved, task.rate or 10)
            messages = self.sqs.receive_message(
                QueueUrl=self.source_url,
                MaxNumberOfMessages=want,
                VisibilityTimeout=RECEIVE_VISIBILITY_SECONDS,
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                return
            if task.cancel.is_set():
                self._release(messages)
                return
            self._move(messages)
            if task.rate is not None and task.moved < task.to_move:  # back to the rate on average
                task.cancel.wait(max(0.0, started + task.moved / task.rate - time.monotonic()))

    def _move(self, messages: list[dict[str, Any]]) -> None:
        entries = [self._entry(str(i), message) for i, message in enumerate(messages)]
        try:
            response = self.sqs.send_message_batch(QueueUrl=self.destination_url, Entries=entries)
        except Exception:
            self._release(messages)
            raise
        sent = {item["Id"] for item in response.get("Successful", [])}
        done = [m for i, m in enumerate(messages) if str(i) in sent]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.source_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
            self.task.moved += len(done)
        failed = response.get("Failed", [])
        if failed:
            self._release([m for i, m in enumerate(messages) if str(i) not in sent])
            raise SqsError(failed[0].get("Code", "InternalError"), failed[0].get("Message", ""))

    def _entry(self, entry_id: str, message: dict[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {"Id": entry_id, "MessageBody": message["Body"]}
        attributes = {
            name: {key: value[key] for key in ("DataType", "StringValue", "BinaryValue") if key in value}
            for name, value in (message.get("MessageAttributes") or {}).items()
        }
        if attributes:
            entry["MessageAttributes"] = attributes
        if self.task.destination.fifo:
            entry["MessageGroupId"] = message["Attributes"]["MessageGroupId"]
            # Not the original de-duplication id: the destination saw it when the job was first sent and
            # would drop the redriven copy within its 5-minute window. Fixed per task, so a resend dedups.
            entry["MessageDeduplicationId"] = f"{self.task.task_id}-{message['MessageId']}"
        return entry

    def _release(self, messages: Iterable[dict[str, Any]]) -> None:
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(messages)
        ]
        if entries:
            self.sqs.change_message_visibility_batch(QueueUrl=self.source_url, Entries=entries)


def _rate(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_RATE:
        raise SqsError(
            "InvalidParameterValue",
            f"Value {value} for parameter MaxNumberOfMessagesPerSecond is invalid. "
            f"Reason: Must be between 1 and {MAX_RATE}, if provided.",
        )
    return value


def _decode_handle(handle: Any) -> tuple[str, str]:
    try:
        decoded = json.loads(base64.b64decode(str(handle), validate=True))
        return str(decoded["taskId"]), str(decoded["sourceArn"])
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise SqsError("InvalidParameterValue", "Value for parameter TaskHandle is invalid.") from exc


def _error_code(exc: Exception) -> str | None:
    if isinstance(exc, SqsError):
        return exc.code
    response = getattr(exc, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


# --- the WSGI middleware: both wire protocols ------------------------------------------------------------

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class MoveTaskMiddleware:
    """In front of moto's WSGI app: the three actions are answered here, every other request passes."""

    def __init__(self, app: WsgiApp, emulator: MoveTaskEmulator) -> None:
        self.app, self.emulator = app, emulator

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("AmazonSQS.") and target.removeprefix("AmazonSQS.") in ACTIONS:
            return self._json(target.removeprefix("AmazonSQS."), _body(environ), start_response)
        if environ.get("REQUEST_METHOD") == "POST" and "x-www-form-urlencoded" in environ.get(
            "CONTENT_TYPE", ""
        ):
            body = _body(environ)
            environ["wsgi.input"] = io.BytesIO(body)  # moto reads it again when the action is not ours
            form = dict(parse_qsl(body.decode("utf-8", "replace")))
            if form.get("Action") in ACTIONS:
                return self._query(form, start_response)
        return self.app(environ, start_response)

    def _json(self, action: str, body: bytes, start_response: Callable[..., Any]) -> Iterable[bytes]:
        request_id = str(uuid.uuid4())
        try:
            params = json.loads(body or b"{}")
            if not isinstance(params, dict):
                raise SqsError("SerializationException", "The request body must be a JSON object.")
            result, status, headers = self.emulator.dispatch(action, params), 200, []
        except SqsError as error:
            result = {"__type": f"com.amazonaws.sqs#{error.code}", "message": error.message}
            status, headers = error.status, [("x-amzn-query-error", f"{error.code};Sender")]
        except ValueError:
            result = {"__type": "com.amazonaws.sqs#SerializationException", "message": "Malformed JSON."}
            status, headers = 400, [("x-amzn-query-error", "SerializationException;Sender")]
        payload = json.dumps(result).encode()
        start_response(
            f"{status} {'OK' if status == 200 else 'Error'}",
            [
                ("Content-Type", _JSON),
                ("x-amzn-RequestId", request_id),
                ("Content-Length", str(len(payload))),
                *headers,
            ],
        )
        return [payload]

    def _query(self, form: dict[str, str], start_response: Callable[..., Any]) -> Iterable[bytes]:
        action, request_id = form["Action"], str(uuid.uuid4())
        params: dict[str, Any] = {k: v for k, v in form.items() if k not in ("Action", "Version")}
        for name in ("MaxNumberOfMessagesPerSecond", "MaxResults"):
            if name in params:
                params[name] = int(params[name]) if params[name].isdigit() else params[name]
        try:
            xml, status = _query_result(action, self.emulator.dispatch(action, params)), 200
        except SqsError as error:
            status = error.status
            xml = (
                f'<ErrorResponse xmlns="{_XMLNS}"><Error><Type>Sender</Type><Code>{escape(error.code)}</Code>'
                f"<Message>{escape(error.message)}</Message></Error>"
                f"<RequestId>{request_id}</RequestId></ErrorResponse>"
            )
        if status == 200:
            xml = (
                f'<{action}Response xmlns="{_XMLNS}">{xml}'
                f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
            )
        payload = xml.encode()
        start_response(
            f"{status} {'OK' if status == 200 else 'Error'}",
            [("Content-Type", "text/xml"), ("Content-Length", str(len(payload)))],
        )
        return [payload]


def _query_result(action: str, result: dict[str, Any]) -> str:
    def fields(values: dict[str, Any]) -> str:
        return "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in values.items())

    if action == "ListMessageMoveTasks":
        entries = "".join(
            f"<ListMessageMoveTasksResultEntry>{fields(e)}</ListMessageMoveTasksResultEntry>"
            for e in result["Results"]
        )
        return f"<{action}Result>{entries}</{action}Result>"
    return f"<{action}Result>{fields(result)}</{action}Result>"


def _body(environ: dict[str, Any]) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return bytes(environ["wsgi.input"].read(length)) if length > 0 else b""
