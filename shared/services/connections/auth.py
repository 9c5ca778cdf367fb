"""WebSocket client tokens (docs/contracts.md §6): who is connecting, from the JWT in ``?token=``.

A token is accepted only if its signature verifies, it is not expired (a small leeway allows for clock
skew), its issuer and audience are the configured ones, and its ``sub`` is a user id (a UUID). The
algorithm family picks the key, never the other way round: HS* tokens are checked against the shared secret
(``JWT_SECRET``, or the Secrets Manager secret ``JWT_SECRET_ARN`` through Powertools' cache), RS*/ES*/PS*
tokens against the issuer's JWKS (``JWT_JWKS_URL``, one cached client per container), so a public key can
never be used as an HMAC secret. Tokens never appear in logs or in error messages.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import jwt

from shared.config import Settings, get_settings
from shared.errors import ConfigurationError, InvalidToken, KeySetUnavailable

SYMMETRIC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}
)
# How long the issuer's key set is trusted before it is fetched again (unknown key ids refetch sooner).
JWKS_LIFESPAN_SECONDS = 300
JWKS_TIMEOUT_SECONDS = 3
# The last second a datetime can hold (9999-12-31T23:59:59Z): later exp/nbf/iat values are malformed.
_LATEST_TIMESTAMP = 253_402_300_799


@dataclass(frozen=True)
class AuthenticatedUser:
    """The verified identity behind a token."""

    user_id: uuid.UUID
    expires_at: datetime


def verify_token(token: str | None, settings: Settings | None = None) -> AuthenticatedUser:
    """The user a client token proves, or :class:`InvalidToken` with the reason it is refused.

    Raises :class:`ConfigurationError` when this function cannot verify tokens as configured (no issuer or
    audience, no key for an allowed algorithm, a too-short secret) and :class:`KeySetUnavailable` when the
    issuer's JWKS cannot be fetched: those are the operator's problem, not a refusal of the client."""
    settings = settings or get_settings()
    if not settings.jwt_issuer or not settings.jwt_audience:
        raise ConfigurationError("JWT_ISSUER and JWT_AUDIENCE must be set to verify WebSocket tokens")
    if not token:
        raise InvalidToken("missing", "no token in the query string")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise InvalidToken("malformed", "the token is not a JWT") from None
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in allowed_algorithms(settings):
        raise InvalidToken("bad-signature", "the token's algorithm is not accepted")
    key = _verification_key(algorithm, header.get("kid"), settings)
    claims = _decode(token, key, algorithm, settings)
    expires_at = _check_validity_period(claims, settings.jwt_leeway_seconds)
    subject = claims["sub"]
    try:
        user_id = uuid.UUID(subject) if isinstance(subject, str) else None
    except ValueError:
        user_id = None
    if user_id is None:
        raise InvalidToken("malformed", "the token's sub is not a user id")
    return AuthenticatedUser(user_id=user_id, expires_at=expires_at)


def allowed_algorithms(settings: Settings) -> frozenset[str]:
    """``JWT_ALGORITHMS`` if set, else what the configured keys can verify (HS256; RS256 and ES256)."""
    if settings.jwt_algorithms:
        unknown = set(settings.jwt_algorithms) - SYMMETRIC_ALGORITHMS - ASYMMETRIC_ALGORITHMS
        if unknown:
            raise ConfigurationError(f"JWT_ALGORITHMS has unsupported algorithm(s): {sorted(unknown)}")
        return frozenset(settings.jwt_algorithms)
    allowed: set[str] = set()
    if settings.jwt_secret is not None or settings.jwt_secret_arn:
        allowed.add("HS256")
    if settings.jwt_jwks_url:
        allowed |= {"RS256", "ES256"}
    if not allowed:
        raise ConfigurationError("set JWT_SECRET, JWT_SECRET_ARN or JWT_JWKS_URL to verify WebSocket tokens")
    return frozenset(allowed)


def _verification_key(algorithm: str, kid: Any, settings: Settings) -> Any:
    """The shared secret for HS*, else the issuer's key named by ``kid`` (a ``PyJWK``, which binds its own
    algorithm: a token whose ``alg`` differs from the key's is refused)."""
    if algorithm in SYMMETRIC_ALGORITHMS:
        return _shared_secret(settings)
    if not settings.jwt_jwks_url:
        raise ConfigurationError(f"{algorithm} tokens are allowed but JWT_JWKS_URL is not set")
    keys = jwks_client(settings.jwt_jwks_url)
    try:
        # Cached; fails (KeySetUnavailable) if the issuer's set cannot be fetched or holds no signing key.
        published = keys.get_signing_keys()
    except (jwt.PyJWKClientError, jwt.PyJWKSetError, ValueError) as exc:  # ValueError: not JSON at all
        raise KeySetUnavailable(f"the issuer's JWKS is unusable ({type(exc).__name__})") from exc
    if kid is None:
        # An issuer with a single key may leave `kid` out; with several keys the token must name one.
        if len(published) != 1:
            raise InvalidToken("bad-signature", "the token names no key id")
        return published[0]
    try:
        # An unknown kid refetches the set (key rotation), at most once per PyJWT's cooldown.
        return keys.get_signing_key(str(kid))
    except (jwt.PyJWKClientConnectionError, jwt.PyJWKSetError, ValueError) as exc:
        raise KeySetUnavailable(f"the issuer's JWKS is unusable ({type(exc).__name__})") from exc
    except jwt.PyJWKClientError:
        raise InvalidToken("bad-signature", "the token's key id is not in the issuer's JWKS") from None


def _shared_secret(settings: Settings) -> str:
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    if not settings.jwt_secret_arn:
        raise ConfigurationError("HS* tokens are allowed but neither JWT_SECRET nor JWT_SECRET_ARN is set")
    from aws_lambda_powertools.utilities import parameters

    secret = parameters.get_secret(settings.jwt_secret_arn, max_age=settings.jwt_secret_max_age_seconds)
    if not isinstance(secret, str) or not secret:
        raise ConfigurationError("JWT_SECRET_ARN must hold the signing secret as a plain string")
    return secret


def _decode(token: str, key: Any, algorithm: str, settings: Settings) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            # exp, nbf and iat are checked by _check_validity_period: PyJWT takes int("123") for a number.
            options={
                "require": ["exp", "sub", "iss", "aud"],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "enforce_minimum_key_length": True,
            },
        )
    except jwt.InvalidKeyError as exc:
        if algorithm in SYMMETRIC_ALGORITHMS:  # our own secret: too short, or not a secret at all
            raise ConfigurationError(f"the {algorithm} secret is unusable: {exc}") from None
        raise InvalidToken("bad-signature", "the token does not fit the issuer's key") from None
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(_refusal_reason(exc), "the token was refused") from None
    return claims


def _refusal_reason(exc: jwt.InvalidTokenError) -> str:
    """The refusal reason of a PyJWT error, by type (an InvalidSignatureError is a DecodeError too)."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return {"aud": "wrong-audience", "iss": "wrong-issuer"}.get(exc.claim, "malformed")
    by_type: tuple[tuple[type[jwt.InvalidTokenError], str], ...] = (
        (jwt.InvalidSignatureError, "bad-signature"),
        (jwt.InvalidAlgorithmError, "bad-signature"),
        (jwt.InvalidAudienceError, "wrong-audience"),
        (jwt.InvalidIssuerError, "wrong-issuer"),
    )
    for error_type, reason in by_type:
        if isinstance(exc, error_type):
            return reason
    return "malformed"


def _check_validity_period(claims: dict[str, Any], leeway: int) -> datetime:
    """When the token expires, after checking ``exp`` (required), ``nbf`` and ``iat`` against now, each
    give or take ``leeway`` seconds. A malformed one is refused before any is compared."""
    times = {name: _numeric_date(claims[name], name) for name in ("exp", "nbf", "iat") if name in claims}
    now = time.time()
    if times["exp"] <= now - leeway:
        raise InvalidToken("expired", "the token has expired")
    if max(times.get("nbf", now), times.get("iat", now)) > now + leeway:
        raise InvalidToken("not-yet-valid", "the token is not valid yet")
    return datetime.fromtimestamp(times["exp"], UTC)


def _numeric_date(value: Any, name: str) -> float:
    """A NumericDate claim (RFC 7519 §2: a JSON number of seconds since the epoch), within what a
    datetime can hold; anything else (a string, even of digits, a bool, NaN, a huge number) is malformed."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= _LATEST_TIMESTAMP:
        raise InvalidToken("malformed", f"the token's {name} is not a time")
    return float(value)


@cache
def jwks_client(url: str) -> jwt.PyJWKClient:
    """The container's client for the issuer's JWKS: the key set is cached and refetched when it expires
    or when a token names an unknown key (at most once per PyJWT's cooldown)."""
    return jwt.PyJWKClient(
        url, cache_jwk_set=True, lifespan=JWKS_LIFESPAN_SECONDS, timeout=JWKS_TIMEOUT_SECONDS
    )
