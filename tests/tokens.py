"""WebSocket client tokens for tests: HS256 with the test secret, RS256/ES256 keys, and a JWKS served over
HTTP on 127.0.0.1 (PyJWKClient fetches the key set over HTTP, as it would from a real issuer)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

JWT_SECRET = "test-websocket-signing-secret-0123456789abcdef"
JWT_ISSUER = "https://auth.switchboard.test/"
JWT_AUDIENCE = "switchboard"
TOKEN_SETTINGS = {"JWT_SECRET": JWT_SECRET, "JWT_ISSUER": JWT_ISSUER, "JWT_AUDIENCE": JWT_AUDIENCE}


def claims(sub: uuid.UUID | str | None, **overrides: Any) -> dict[str, Any]:
    """Valid claims for ``sub`` (an hour to live: tokens minted while tests are collected must outlive a full
    run); an override of None leaves that claim out."""
    now = int(time.time())
    values: dict[str, Any] = {
        "sub": str(sub) if sub is not None else None,
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "iat": now,
        "exp": now + 3600,
        **overrides,
    }
    return {name: value for name, value in values.items() if value is not None}


def hs256(sub: uuid.UUID | str | None, *, secret: str = JWT_SECRET, **overrides: Any) -> str:
    """An HS256 token for ``sub`` signed with ``secret`` (the test secret by default)."""
    return jwt.encode(claims(sub, **overrides), secret, algorithm="HS256")


@dataclass(frozen=True)
class SigningKey:
    """An issuer's asymmetric key: signs tokens, and publishes its public half as a JWK."""

    kid: str
    algorithm: str
    private_key: Any

    @classmethod
    def rsa(cls, kid: str = "rsa-1") -> SigningKey:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str = "ec-1") -> SigningKey:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    def token(self, sub: uuid.UUID | str | None, *, kid: str | None = "", **overrides: Any) -> str:
        """A token signed with this key; ``kid`` defaults to this key's id (None: no kid header)."""
        headers = {} if kid is None else {"kid": kid or self.kid}
        return jwt.encode(
            claims(sub, **overrides), self.private_key, algorithm=self.algorithm, headers=headers
        )

    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        public: dict[str, Any] = json.loads(algorithm.to_jwk(self.private_key.public_key()))
        return {**public, "kid": self.kid, "alg": self.algorithm, "use": "sig"}


@contextmanager
def jwks_server(*keys: SigningKey, body: bytes | None = None) -> Iterator[str]:
    """Serve ``{"keys": [...]}`` (or ``body``) on 127.0.0.1 while the block runs; yields the JWKS URL."""
    served: bytes = body if body is not None else json.dumps({"keys": [key.jwk() for key in keys]}).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(served)))
            self.end_headers()
            self.wfile.write(served)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    thread = threading.Thread(target=server.serve_forever, name="jwks", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
