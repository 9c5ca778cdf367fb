"""The database engine: created on first use, once per container, never at import.

Credentials come from ``DATABASE_URL``, or from the Secrets Manager secret ``DB_SECRET_ARN`` (RDS JSON shape:
username, password, host, port, dbname). The secret is read through Powertools' cached parameter provider
on every *new* connection, so a rotated password is picked up without a cold start.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import NullPool

from shared.config import Settings, get_settings
from shared.errors import ConfigurationError

DRIVER = "postgresql+pg8000"
# A pooled connection idle for longer than this is pinged before use (a frozen Lambda container's
# connections may have died meanwhile); one used a moment ago is not: that is one ping per invocation instead
# of one per checkout (a send-message job checks a connection out twice).
PING_AFTER_IDLE_SECONDS = 1.0


def normalize_url(url: str) -> URL:
    """Accept ``postgres://``/``postgresql://`` URLs too, and make pg8000 the driver.

    A ``host=/socket/dir`` query (libpq style, as embedded PostgreSQL prints it) becomes pg8000's
    ``unix_sock`` pointing at the socket file."""
    parsed = make_url(url).set(drivername=DRIVER)
    query = dict(parsed.query)
    host = query.pop("host", None)
    if isinstance(host, str) and host.startswith("/"):
        port = parsed.port or 5432
        query["unix_sock"] = f"{host}/.s.PGSQL.{port}"
        parsed = parsed.set(host=None, port=None, query=query)
    return parsed


def _secret(settings: Settings) -> dict[str, Any]:
    from aws_lambda_powertools.utilities import parameters

    assert settings.db_secret_arn
    value = parameters.get_secret(
        settings.db_secret_arn, transform="json", max_age=settings.db_secret_max_age_seconds
    )
    if not isinstance(value, dict) or not {"username", "password", "host"} <= value.keys():
        raise ConfigurationError("DB_SECRET_ARN must hold JSON with username, password, host (port, dbname)")
    return value


def _url_from_secret(secret: dict[str, Any]) -> URL:
    host, port = str(secret["host"]), int(secret.get("port", 5432))
    if host.startswith("/"):  # a Unix socket directory (local stacks)
        return URL.create(
            DRIVER,
            username=secret["username"],
            password=secret["password"],
            database=secret.get("dbname", "postgres"),
            query={"unix_sock": f"{host}/.s.PGSQL.{port}"},
        )
    return URL.create(
        DRIVER,
        username=secret["username"],
        password=secret["password"],
        host=host,
        port=port,
        database=secret.get("dbname", "postgres"),
    )


def build_engine(settings: Settings) -> Engine:
    """An engine for these settings (tests build their own; functions use :func:`get_engine`)."""
    if settings.database_url:
        url = normalize_url(settings.database_url)
    elif settings.db_secret_arn:
        url = _url_from_secret(_secret(settings))
    else:
        raise ConfigurationError("set DATABASE_URL or DB_SECRET_ARN")

    pool_args: dict[str, Any] = (
        {"poolclass": NullPool}
        if settings.db_use_null_pool
        else {
            "pool_size": settings.db_pool_size,
            "max_overflow": 0,
            "pool_recycle": 900,
            "pool_use_lifo": True,  # the connection used last (and not pinged again) is the one reused
        }
    )
    # hide_parameters: an error's text never quotes the statement's values (message content, contact data).
    engine = create_engine(url, connect_args={"timeout": 5}, hide_parameters=True, **pool_args)

    if settings.db_secret_arn and not settings.database_url:

        @event.listens_for(engine, "do_connect")
        def _fresh_credentials(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
            secret = _secret(settings)
            cparams["user"] = secret["username"]
            cparams["password"] = secret["password"]

    from shared.db import driver

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        # after _fresh_credentials (listeners run in order): the connection with the one-round-trip COMMIT
        return driver.connect(*cargs, **cparams)

    if not settings.db_use_null_pool:
        _ping_when_idle(engine)

    timeout = settings.db_statement_timeout_ms

    @event.listens_for(engine, "connect")
    def _session_defaults(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET statement_timeout = {int(timeout)}")
        cursor.execute("SET TIME ZONE 'UTC'")
        cursor.close()
        # pg8000 opened a transaction for the SETs: commit it, or the pool's reset rolls the settings back
        dbapi_connection.commit()

    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling (SQLAlchemy's ``pool_pre_ping``), for connections idle longer than
    PING_AFTER_IDLE_SECONDS only: a dead one is replaced before the job uses it (raising
    ``DisconnectionError`` from ``checkout`` makes the pool discard it and connect anew)."""

    @event.listens_for(engine, "checkin")
    def _idle_from(dbapi_connection: Any, connection_record: Any) -> None:
        connection_record.info["idle_from"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
        idle_from = connection_record.info.get("idle_from")
        if idle_from is None or time.monotonic() - idle_from < PING_AFTER_IDLE_SECONDS:
            return  # just connected, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except OSError as exc:  # pg8000 lets a reset socket's error through unwrapped
            connection_record.info.pop("idle_from", None)
            raise DisconnectionError("connection lost while idle") from exc
        except engine.dialect.loaded_dbapi.Error as exc:
            if engine.dialect.is_disconnect(exc, dbapi_connection, None):
                connection_record.info.pop("idle_from", None)
                raise DisconnectionError("connection lost while idle") from exc
            raise


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    """The engine of this container."""
    return build_engine(get_settings())
