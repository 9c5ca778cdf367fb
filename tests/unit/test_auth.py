"""WebSocket token verification (shared/services/auth.py): what is accepted, every refusal and its reason,
and the configuration mistakes that must fail loudly instead of refusing clients. No network (the JWKS
cases, which fetch over HTTP, are in tests/integration/test_websocket.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import jwt
import pytest
from moto import mock_aws

from shared.config import Settings
from shared.errors import ConfigurationError, InvalidToken
from shared.services.connections.auth import allowed_algorithms, verify_token
from tests.tokens import JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET, SigningKey, hs256

USER = uuid.UUID("0b9c5a3e-5d1f-4f7e-9b7a-2f0a3c4d5e6f")


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "jwt_secret": JWT_SECRET,
        "jwt_issuer": JWT_ISSUER,
        "jwt_audience": JWT_AUDIENCE,
    }
    return Settings(**{**values, **overrides})


def refusal(token: str | None, **overrides: Any) -> str:
    """The reason ``token`` is refused (and a check that the token never shows in the error)."""
    with pytest.raises(InvalidToken) as refused:
        verify_token(token, settings(**overrides))
    if token:
        assert token not in str(refused.value)
        assert token not in repr(refused.value.args)
    return refused.value.reason


# --- accepted -------------------------------------------------------------------------------------------


def test_a_valid_hs256_token_proves_its_subject():
    # Given a token for USER signed with the configured secret
    expires = int(time.time()) + 120
    token = hs256(USER, exp=expires)
    # When it is verified, Then the user and expiry come back
    user = verify_token(token, settings())
    assert user.user_id == USER
    assert user.expires_at == datetime.fromtimestamp(expires, UTC)


def test_an_expired_token_within_the_leeway_is_still_accepted():
    token = hs256(USER, exp=int(time.time()) - 5)
    assert verify_token(token, settings(jwt_leeway_seconds=30)).user_id == USER


def test_sub_may_be_any_uuid_spelling_and_is_normalized():
    assert verify_token(hs256(str(USER).upper()), settings()).user_id == USER


# --- refused, with the reason ---------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, ""])
def test_no_token_is_refused_as_missing(token):
    assert refusal(token) == "missing"


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30"])
def test_something_that_is_not_a_jwt_is_malformed(token):
    assert refusal(token) == "malformed"


def test_an_expired_token_is_refused():
    assert refusal(hs256(USER, exp=int(time.time()) - 60), jwt_leeway_seconds=10) == "expired"


def test_a_token_not_yet_valid_is_refused():
    assert refusal(hs256(USER, nbf=int(time.time()) + 600)) == "not-yet-valid"


def test_a_token_signed_with_another_secret_is_refused():
    assert refusal(hs256(USER, secret="another-secret-that-is-long-enough-0123456789")) == "bad-signature"


def test_a_tampered_token_is_refused():
    header, _, signature = hs256(USER).split(".")
    other_payload = hs256(uuid.uuid4()).split(".")[1]
    assert refusal(f"{header}.{other_payload}.{signature}") == "bad-signature"


@pytest.mark.parametrize("audience", ["someone-else", ["someone-else", "another"]])
def test_a_token_for_another_audience_is_refused(audience):
    assert refusal(hs256(USER, aud=audience)) == "wrong-audience"


def test_a_token_without_an_audience_is_refused():
    assert refusal(hs256(USER, aud=None)) == "wrong-audience"


def test_a_token_from_another_issuer_is_refused():
    assert refusal(hs256(USER, iss="https://evil.example/")) == "wrong-issuer"


def test_a_token_without_an_issuer_is_refused():
    assert refusal(hs256(USER, iss=None)) == "wrong-issuer"


@pytest.mark.parametrize("sub", ["alice", "12345", "", None])
def test_a_subject_that_is_not_a_user_id_is_refused(sub):
    token = jwt.encode(
        {
            k: v
            for k, v in {"sub": sub, "iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "exp": time.time() + 60}.items()
            if v is not None
        },
        JWT_SECRET,
        algorithm="HS256",
    )
    assert refusal(token) == "malformed"


def test_a_token_without_expiry_is_refused():
    assert refusal(hs256(USER, exp=None)) == "malformed"


def test_an_unsigned_token_is_refused():
    token = jwt.encode(
        {"sub": str(USER), "iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "exp": time.time() + 60},
        None,  # type: ignore[arg-type]  # alg "none": a token that is not signed at all
        algorithm="none",
    )
    assert refusal(token) == "bad-signature"


def test_an_rs256_token_is_refused_when_only_a_secret_is_configured():
    assert refusal(SigningKey.rsa().token(USER)) == "bad-signature"


def test_an_hs256_token_is_refused_when_only_a_jwks_is_configured():
    # Algorithm confusion: an HS256 token must never be checked against the issuer's public keys.
    token = hs256(USER)
    assert refusal(token, jwt_secret=None, jwt_jwks_url="http://127.0.0.1:9/jwks.json") == "bad-signature"


def test_an_explicit_algorithm_list_is_honoured():
    token = jwt.encode(
        {"sub": str(USER), "iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "exp": time.time() + 60},
        JWT_SECRET + JWT_SECRET,
        algorithm="HS512",
    )
    strict = {"jwt_algorithms": ("HS512",), "jwt_secret": JWT_SECRET + JWT_SECRET}
    assert verify_token(token, settings(**strict)).user_id == USER
    assert refusal(hs256(USER, secret=JWT_SECRET + JWT_SECRET), **strict) == "bad-signature"


# --- configuration: loud, never a refusal --------------------------------------------------------------


@pytest.mark.parametrize("missing", ["jwt_issuer", "jwt_audience"])
def test_issuer_and_audience_must_be_configured(missing):
    with pytest.raises(ConfigurationError, match="JWT_ISSUER and JWT_AUDIENCE"):
        verify_token(hs256(USER), settings(**{missing: None}))


def test_some_key_must_be_configured():
    with pytest.raises(ConfigurationError, match="JWT_SECRET, JWT_SECRET_ARN or JWT_JWKS_URL"):
        verify_token(hs256(USER), settings(jwt_secret=None))


def test_a_too_short_secret_is_a_configuration_error():
    short = "short"
    with pytest.warns(jwt.InsecureKeyLengthWarning):
        token = jwt.encode(
            {"sub": str(USER), "iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "exp": time.time() + 60},
            short,
            algorithm="HS256",
        )
    with pytest.raises(ConfigurationError, match="secret is unusable"):
        verify_token(token, settings(jwt_secret=short))


def test_an_unsupported_algorithm_in_settings_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="unsupported"):
        allowed_algorithms(settings(jwt_algorithms=("none",)))


def test_asymmetric_algorithms_without_a_jwks_url_are_a_configuration_error():
    token = SigningKey.rsa().token(USER)
    with pytest.raises(ConfigurationError, match="JWT_JWKS_URL"):
        verify_token(token, settings(jwt_algorithms=("RS256",)))


def test_default_algorithms_follow_the_configured_keys():
    assert allowed_algorithms(settings()) == {"HS256"}
    assert allowed_algorithms(settings(jwt_secret=None, jwt_jwks_url="https://i/j")) == {"RS256", "ES256"}
    both = settings(jwt_secret=None, jwt_secret_arn="arn:s", jwt_jwks_url="https://i/j")
    assert allowed_algorithms(both) == {"HS256", "RS256", "ES256"}


def test_algorithms_are_read_from_a_comma_separated_variable(monkeypatch):
    monkeypatch.setenv("JWT_ALGORITHMS", "HS256, RS256")
    assert Settings().jwt_algorithms == ("HS256", "RS256")


def test_the_secret_is_not_shown_by_the_settings():
    assert JWT_SECRET not in repr(settings())


# --- the secret from Secrets Manager --------------------------------------------------------------------


@pytest.fixture
def secretsmanager(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from aws_lambda_powertools.utilities import parameters

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    parameters.clear_caches()
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")
    parameters.clear_caches()


def test_the_hs256_secret_can_come_from_secrets_manager(secretsmanager):
    arn = secretsmanager.create_secret(Name="jwt", SecretString=JWT_SECRET)["ARN"]
    config = settings(jwt_secret=None, jwt_secret_arn=arn)
    assert verify_token(hs256(USER), config).user_id == USER
    assert refusal(hs256(USER, secret="x" * 40), jwt_secret=None, jwt_secret_arn=arn) == "bad-signature"


def test_an_empty_secret_in_secrets_manager_is_a_configuration_error(secretsmanager):
    arn = secretsmanager.create_secret(Name="jwt-binary", SecretBinary=b"\x00\x01")["ARN"]
    with pytest.raises(ConfigurationError, match="plain string"):
        verify_token(hs256(USER), settings(jwt_secret=None, jwt_secret_arn=arn))
