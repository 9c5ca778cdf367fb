"""A small client for the management API (docs/contracts.md §8) that SigV4-signs every request.

The API sits behind IAM auth, so each call is signed with botocore's ``SigV4Auth`` for ``execute-api``. For a
deployed stack the credentials are the operator's default boto3 chain and the URL is the stack's
``ManagementUrl`` output; for the local stack both come from ``.switchboard/dev.json`` (§7). Errors reach the
caller as :class:`ManagementError` with a message an operator can act on, never as a traceback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials

SERVICE = "execute-api"
MANAGEMENT_URL_OUTPUT = "ManagementUrl"
_EXECUTE_API_HOST = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com$")
_TIMEOUT = urllib3.Timeout(connect=5.0, read=60.0)


class ManagementError(Exception):
    """The management API answered with an error, or could not be reached; ``str()`` is for the operator."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ManagementUnreachable(ManagementError):
    """No HTTP answer at all: connection refused, DNS, timeout."""


@dataclass(frozen=True)
class Endpoint:
    """Where the management API is and what to sign with. ``url`` has no trailing slash."""

    url: str
    region: str
    credentials: Credentials | ReadOnlyCredentials

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ManagementError(f"not an http(s) URL: {self.url!r}")
        object.__setattr__(self, "url", self.url.rstrip("/"))


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any


def region_of(url: str) -> str | None:
    """The region in an ``execute-api`` host name, or None (a custom domain, the local stack)."""
    match = _EXECUTE_API_HOST.search(urlsplit(url).hostname or "")
    return match.group(1) if match else None


def local_endpoint(data_dir: Path) -> Endpoint:
    """The local stack's management API, from the ``dev.json`` that ``switchboard dev`` writes (§7)."""
    path = data_dir / "dev.json"
    if not path.exists():
        raise ManagementError(f"{path} not found: start the local stack first with `switchboard dev`")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ManagementError(f"{path} is not readable JSON: {exc}") from exc
    missing = [
        key for key in ("management_url", "aws_access_key_id", "aws_secret_access_key") if not info.get(key)
    ]
    if missing:
        raise ManagementError(
            f"{path} has no {', '.join(missing)}: this `switchboard dev` does not serve the management API "
            "(restart it from a checkout that does)"
        )
    return Endpoint(
        url=str(info["management_url"]),
        region=str(info.get("region") or "us-east-1"),
        credentials=Credentials(str(info["aws_access_key_id"]), str(info["aws_secret_access_key"])),
    )


def deployed_endpoint(
    *, stack: str | None = None, url: str | None = None, region: str | None = None, session: Any = None
) -> Endpoint:
    """A deployed stack's management API, signed with the operator's default boto3 credential chain.

    ``url`` wins; otherwise the URL is the stack's ``ManagementUrl`` output (one CloudFormation call).
    """
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    session = session or boto3.Session(region_name=region)
    credentials = session.get_credentials()
    if credentials is None:
        raise ManagementError(
            "no AWS credentials found (environment, ~/.aws, SSO or instance role): the management API "
            "needs SigV4-signed requests"
        )
    if url is None:
        if not stack:
            raise ManagementError("give --stack NAME, --url URL or --local")
        try:
            described = session.client("cloudformation").describe_stacks(StackName=stack)
        except (BotoCoreError, ClientError) as exc:
            raise ManagementError(f"cannot read stack {stack!r}: {exc}") from exc
        outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Stacks"][0].get("Outputs", [])}
        if MANAGEMENT_URL_OUTPUT not in outputs:
            raise ManagementError(f"stack {stack!r} has no {MANAGEMENT_URL_OUTPUT} output: deploy it first")
        url = outputs[MANAGEMENT_URL_OUTPUT]
    resolved = region or region_of(url) or session.region_name
    if not resolved:
        raise ManagementError(f"cannot tell the region of {url}: give --region")
    return Endpoint(url=url, region=resolved, credentials=credentials)


def sign(
    endpoint: Endpoint,
    method: str,
    path: str,
    *,
    query: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[str, dict[str, str]]:
    """The full URL and the headers of a SigV4-signed request (``Authorization``, ``X-Amz-Date``, ...)."""
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/': {path!r}")
    url = endpoint.url + path
    if query:
        url += "?" + urlencode(sorted(query.items()), quote_via=quote)  # %20, not +: SigV4's canonical form
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = AWSRequest(method=method, url=url, data=body or b"", headers=headers)
    credentials = endpoint.credentials
    if not isinstance(credentials, ReadOnlyCredentials):
        credentials = credentials.get_frozen_credentials()  # resolves refreshable (SSO, role) credentials
    SigV4Auth(credentials, SERVICE, endpoint.region).add_auth(request)
    return url, dict(request.headers.items())


class ManagementClient:
    """One method per endpoint of §8; each returns the decoded JSON body."""

    def __init__(self, endpoint: Endpoint, *, pool: urllib3.PoolManager | None = None) -> None:
        self.endpoint = endpoint
        self._pool = pool or urllib3.PoolManager(retries=False, timeout=_TIMEOUT, maxsize=8)

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: bytes | None = None,
        accept: Iterable[int] = (),
    ) -> Reply:
        """Send one signed request; a status >= 400 not in ``accept`` raises :class:`ManagementError`."""
        url, headers = sign(self.endpoint, method, path, query=query, body=body)
        try:
            response = self._pool.request(method, url, body=body, headers=headers, redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            where = self.endpoint.url
            raise ManagementUnreachable(f"cannot reach the management API at {where}: {exc}") from exc
        payload = _decode(response.data)
        if response.status >= 400 and response.status not in set(accept):
            raise _error(response.status, payload, method, path)
        return Reply(response.status, payload)

    def _json(self, method: str, path: str, body: object | None = None, **kwargs: Any) -> Any:
        data = None if body is None else json.dumps(body).encode()
        return self.call(method, path, body=data, **kwargs).body

    def health(self) -> dict[str, Any]:
        """``GET /health``; its 503 (unhealthy) is an answer, not an error."""
        return dict(self.call("GET", "/health", accept=(503,)).body)

    def failures(self, **filters: str | None) -> dict[str, Any]:
        query = {k: v for k, v in filters.items() if v}
        return dict(self._json("GET", "/failures", query=query))

    def redrive(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._json("POST", "/redrive", dict(request)))

    def redrive_status(self, redrive_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/redrives/{_segment(redrive_id)}"))

    def cancel_redrive(self, redrive_id: str) -> dict[str, Any]:
        return dict(self._json("DELETE", f"/redrives/{_segment(redrive_id)}"))

    def redrives(self) -> list[dict[str, Any]]:
        body = self._json("GET", "/redrives")
        items = body.get("redrives", []) if isinstance(body, dict) else body
        return [dict(item) for item in items]

    def enqueue(self, job_type: str, jobs: list[Any]) -> list[dict[str, Any]]:
        body = self._json("POST", f"/jobs/{_segment(job_type)}", {"jobs": jobs})
        return [dict(item) for item in body.get("results", [])]


def _segment(value: str) -> str:
    """A path segment as given, refused if it could change the path (ids and job types never need it)."""
    if not value or not re.fullmatch(r"[A-Za-z0-9._~-]+", value):
        raise ManagementError(f"not a valid id: {value!r}")
    return value


def _decode(data: bytes) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")[:500]


def _error(status: int, payload: Any, method: str, path: str) -> ManagementError:
    code = message = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
        else:
            message = payload.get("message") or payload.get("Message")
    if status == 403:
        hint = (
            "the management API refused the request signature: check the AWS credentials in use and that "
            "they may call execute-api:Invoke on it"
        )
        detail = f"{message}; {hint}" if message else hint
        return ManagementError(f"403 Forbidden on {method} {path}: {detail}", status=status, code=code)
    text = message or (payload if isinstance(payload, str) and payload else "no detail")
    label = f"{status} {code}" if code else str(status)
    return ManagementError(f"{label} on {method} {path}: {text}", status=status, code=code)
