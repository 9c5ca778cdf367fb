"""AWS for the benches, answered at the HTTP layer, and an X-Ray daemon that only counts.

:func:`stub_aws_http` answers every botocore request of clients created afterwards from a ``before-send``
handler: botocore still validates the parameters (unless a client turned that off), serialises, signs and
parses the response, exactly as against AWS; only the network and the service are missing. That makes
wall time comparable between the handler and the raw floor (moto in-process would add its own Python work
to one side's AWS calls, and subtracting "time inside AWS calls" cannot be done honestly once calls run on
threads).

:class:`XRaySink` is a UDP socket in a child process standing in for the X-Ray daemon Lambda runs beside a
function: the SDK emits every (sub)segment to it as in Lambda, and the sink counts datagrams without taking
the GIL of the process being measured."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any


class _Raw(io.BytesIO):
    """What botocore reads a response body from (urllib3's ``stream``)."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


CALLS: Counter[str] = Counter()


def _answer(operation: str, body: dict[str, Any]) -> dict[str, Any]:
    if operation == "SendMessageBatch":
        return {
            "Successful": [
                {
                    "Id": entry["Id"],
                    "MessageId": str(uuid.uuid4()),
                    "MD5OfMessageBody": hashlib.md5(entry["MessageBody"].encode()).hexdigest(),
                }
                for entry in body["Entries"]
            ],
            "Failed": [],
        }
    if operation == "SendMessage":
        md5 = hashlib.md5(body["MessageBody"].encode()).hexdigest()
        return {"MessageId": str(uuid.uuid4()), "MD5OfMessageBody": md5}
    if operation == "ChangeMessageVisibilityBatch":
        return {"Successful": [{"Id": e["Id"]} for e in body["Entries"]], "Failed": []}
    return {}


def _before_send(request: Any, **_: Any) -> Any:
    from botocore.awsrequest import AWSResponse

    target = request.headers.get("X-Amz-Target")
    if target is not None:  # JSON protocol (SQS): AmazonSQS.<Operation>
        operation = (
            target.decode().rsplit(".", 1)[1] if isinstance(target, bytes) else target.rsplit(".", 1)[1]
        )
        body = json.loads(request.body or b"{}")
    else:  # REST (the WebSocket management API's PostToConnection)
        operation, body = ("PostToConnection" if "/@connections/" in request.url else request.url), {}
    CALLS[operation] += 1
    payload = json.dumps(_answer(operation, body)).encode()
    headers = {"x-amzn-RequestId": "bench", "Content-Type": "application/x-amz-json-1.0"}
    return AWSResponse(request.url, 200, headers, _Raw(payload))


def stub_aws_http() -> None:
    """Answer every request of every botocore client created from now on (botocore's own list of handlers
    each new client registers, as moto does)."""
    from botocore.handlers import BUILTIN_HANDLERS

    if ("before-send", _before_send) not in BUILTIN_HANDLERS:
        BUILTIN_HANDLERS.append(("before-send", _before_send))


_SINK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
count = 0
while True:
    data = s.recv(65536)
    if data == b"STOP":
        print(count, flush=True)
        break
    count += 1
"""


class XRaySink:
    """A stand-in X-Ray daemon: ``address`` for ``AWS_XRAY_DAEMON_ADDRESS``; :meth:`count` is the number of
    segment documents received so far."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-c", _SINK], stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        self.port = int(self._proc.stdout.readline())
        self.address = f"127.0.0.1:{self.port}"
        self._offset = 0

    def count(self) -> int:
        """Datagrams received since the previous call (stops and restarts the sink)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.sendto(b"STOP", ("127.0.0.1", self.port))
        sock.close()
        assert self._proc.stdout is not None
        received = int(self._proc.stdout.readline())
        self._proc.wait()
        # a fresh sink on the same port for the next size
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SINK.replace('("127.0.0.1", 0)', f'("127.0.0.1", {self.port})')],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        self._proc.stdout.readline()
        return received

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait()
