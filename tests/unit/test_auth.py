"""WebSocket token verification (shared/services/auth.py): what is accepted, every refusal and its reason,
and the configuration mistakes that must fail loudly instead of refusing clients. No network (the JWKS
cases, which fetch over HTTP, are in tests/integration/test_websocket.py)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws

from shared.config import Settings
from shared.errors import ConfigurationError, InvalidToken
from shared.services.connections.auth import allowed_algorithms, verify_token
from tests.tokens import JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET, TOKEN_SETTINGS, SigningKey, claims, hs256

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


# --- malformed claims in a correctly signed token: a refusal (Deny), never an error (500) ----------------

REASONS = {"malformed", "expired", "not-yet-valid", "bad-signature", "wrong-audience", "wrong-issuer"}
LATEST = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second a datetime holds
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
# exp/nbf/iat must be JSON numbers (RFC 7519 NumericDate) a datetime can hold; PyJWT alone takes "123".
NOT_A_TIME = st.one_of(
    st.integers(min_value=0, max_value=2 * LATEST).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=20),
    st.none(),
    st.booleans(),
    st.lists(JSON, max_size=3),
    st.dictionaries(st.text(max_size=5), JSON, max_size=3),
    st.integers(min_value=LATEST + 1),
    st.integers(max_value=-1),
    st.floats(min_value=LATEST + 1) | st.just(float("nan")),
)


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


def signed(payload: Any) -> str:
    """``payload`` (any JSON, not only an object) as a correctly signed HS256 token."""
    return jwt.api_jws.PyJWS().encode(json.dumps(payload).encode(), JWT_SECRET, algorithm="HS256")


def test_an_expiry_given_as_a_numeric_string_is_refused_as_malformed():
    assert refusal(hs256(USER, exp=str(int(time.time()) + 300))) == "malformed"


@given(claim=st.sampled_from(["exp", "nbf", "iat"]), value=NOT_A_TIME)
def test_a_time_claim_that_is_not_a_numeric_date_is_malformed(claim, value):
    assert refusal(signed({**claims(USER), claim: value})) == "malformed"


@given(sub=st.one_of(st.text(), JSON).filter(lambda value: not _is_uuid(value)))
def test_a_subject_that_is_not_a_uuid_is_malformed(sub):
    assert refusal(signed({**claims(USER), "sub": sub})) == "malformed"


@given(missing=st.sets(st.sampled_from(["exp", "sub", "iss", "aud"]), min_size=1))
def test_a_token_missing_required_claims_is_refused(missing):
    payload = {name: value for name, value in claims(USER).items() if name not in missing}
    assert refusal(signed(payload)) in {"malformed", "wrong-issuer", "wrong-audience"}


@given(payload=JSON.filter(lambda value: not isinstance(value, dict)))
def test_a_payload_that_is_not_an_object_is_malformed(payload):
    assert refusal(signed(payload)) == "malformed"


@given(changes=st.dictionaries(st.sampled_from(["exp", "nbf", "iat", "sub", "iss", "aud", "jti"]), JSON))
def test_any_claims_are_either_accepted_or_refused_with_a_reason(changes):
    try:
        user = verify_token(signed({**claims(USER), **changes}), settings())
    except InvalidToken as refused:
        assert refused.reason in REASONS
    else:
        assert user.user_id == USER


def test_the_authorizer_denies_a_token_with_a_malformed_expiry(monkeypatch):
    from handlers.ws_authorizer import lambda_handler
    from infra.lambda_shapes import LocalLambdaContext
    from shared.config import get_settings

    for name, value in {**TOKEN_SETTINGS, "POWERTOOLS_TRACE_DISABLED": "1"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    token = hs256(USER, exp=str(int(time.time()) + 300))
    event = {
        "queryStringParameters": {"token": token},
        "methodArn": "arn:aws:execute-api:r:a:api/prod/$connect",
    }
    try:
        answer = lambda_handler(event, LocalLambdaContext(function_name="WebSocketAuthorizerFunction"))
    finally:
        get_settings.cache_clear()
    assert answer["policyDocument"]["Statement"][0]["Effect"] == "Deny"
    assert answer["context"] == {"reason": "malformed"}


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
