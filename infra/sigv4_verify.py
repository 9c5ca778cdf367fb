"""The check API Gateway's IAM authorization makes, for the local management API: a request is accepted only
when it carries a valid Signature Version 4 signature for ``execute-api`` in the stack's region, made with the
stack's credentials, dated within 5 minutes. The signature is recomputed with botocore's own signer over what
was received (method, path, query, the signed headers, the body) and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "execute-api"
MAX_SKEW = timedelta(minutes=5)
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})\s*"
)


class SignatureRejected(Exception):
    """Why a request was refused (for the server's log; the client only gets 403 ``Forbidden``)."""


@dataclass(frozen=True)
class Caller:
    """The IAM principal of an accepted request, as API Gateway hands it to the function."""

    access_key: str
    account_id: str
    user_name: str

    def iam_authorizer(self) -> dict[str, Any]:
        """``requestContext.authorizer.iam`` of an HTTP API (payload format 2.0) event."""
        user_id = "AIDA" + hashlib.sha256(self.access_key.encode()).hexdigest()[:17].upper()
        return {
            "accessKey": self.access_key,
            "accountId": self.account_id,
            "callerId": user_id,
            "cognitoIdentity": None,
            "principalOrgId": None,
            "userArn": f"arn:aws:iam::{self.account_id}:user/{self.user_name}",
            "userId": user_id,
        }


@dataclass(frozen=True)
class SigV4Verifier:
    access_key_id: str
    secret_access_key: str
    region: str
    account_id: str = "123456789012"
    user_name: str = "switchboard-local-operator"
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC), compare=False)

    def verify(self, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes) -> Caller:
        """The caller of a request signed with this verifier's credentials; raises SignatureRejected.

        ``url`` is ``http://<Host header><request target as received>``; ``headers`` every received
        header (names in any case, repeated names allowed)."""
        received = [(name.lower(), value) for name, value in headers]
        authorization = _single(received, "authorization")
        if authorization is None:
            raise SignatureRejected("no Authorization header (the request is not signed)")
        match = _AUTHORIZATION.fullmatch(authorization.strip())
        if match is None:
            raise SignatureRejected(f"Authorization is not a {ALGORITHM} signature")
        amz_date = _single(received, "x-amz-date")
        timestamp = self._check_date(amz_date)
        self._check_scope(match["credential"], timestamp[:8])
        signed = match["signed"].split(";")
        unsigned = {"host", "x-amz-date"} - set(signed)
        absent = {name for name in signed if _single(received, name) is None}
        if unsigned or absent:
            raise SignatureRejected(f"headers not signed or not sent: {', '.join(sorted(unsigned | absent))}")
        declared_hash = _single(received, "x-amz-content-sha256")
        if declared_hash is not None and declared_hash != hashlib.sha256(body).hexdigest():
            raise SignatureRejected("X-Amz-Content-SHA256 does not match the body")
        expected = self._signature(method, url, [(n, v) for n, v in received if n in signed], body, timestamp)
        if not hmac.compare_digest(expected, match["signature"]):
            raise SignatureRejected("signature does not match (wrong secret key, or the request was altered)")
        return Caller(self.access_key_id, self.account_id, self.user_name)

    def _check_date(self, amz_date: str | None) -> str:
        if amz_date is None:
            raise SignatureRejected("no X-Amz-Date header")
        try:
            signed_at = datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=UTC)
        except ValueError as exc:
            raise SignatureRejected(f"X-Amz-Date {amz_date!r} is not in {_AMZ_DATE} form") from exc
        if abs(self.clock() - signed_at) > MAX_SKEW:
            raise SignatureRejected("X-Amz-Date is more than 5 minutes from the server's clock")
        return amz_date

    def _check_scope(self, credential: str, date: str) -> None:
        parts = credential.split("/")
        if len(parts) != 5:
            raise SignatureRejected("Credential is not <key>/<date>/<region>/<service>/aws4_request")
        key, scope_date, region, service, terminator = parts
        if not hmac.compare_digest(key, self.access_key_id):
            raise SignatureRejected("unknown access key id")
        if (scope_date, region, service, terminator) != (date, self.region, SERVICE, "aws4_request"):
            raise SignatureRejected(
                f"credential scope {'/'.join(parts[1:])} is not {date}/{self.region}/{SERVICE}/aws4_request"
            )

    def _signature(
        self, method: str, url: str, signed_headers: list[tuple[str, str]], body: bytes, timestamp: str
    ) -> str:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.compat import HTTPHeaders
        from botocore.credentials import Credentials

        class ReceivedHeadersSigner(SigV4Auth):  # type: ignore[misc]  # botocore is untyped
            """botocore's signer, over exactly the headers the client signed (botocore itself never signs
            some, e.g. User-Agent, which other clients may)."""

            def headers_to_sign(self, request: Any) -> Any:
                chosen = HTTPHeaders()
                for name, value in signed_headers:
                    chosen[name] = value
                return chosen

        request = AWSRequest(method=method, url=url, data=body)
        for name, value in signed_headers:
            request.headers[name] = value
        request.context["timestamp"] = timestamp
        signer = ReceivedHeadersSigner(
            Credentials(self.access_key_id, self.secret_access_key), SERVICE, self.region
        )
        canonical = signer.canonical_request(request)
        return str(signer.signature(signer.string_to_sign(request, canonical), request))


def _single(headers: list[tuple[str, str]], name: str) -> str | None:
    """The value of header ``name`` (repeated headers joined with commas, as SigV4 canonicalizes them)."""
    values = [value for key, value in headers if key == name]
    return ",".join(values) if values else None
