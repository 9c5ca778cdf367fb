"""The database engine: created on first use, once per container, never at import.

Credentials come from ``DATABASE_URL``, or from the Secrets Manager secret ``DB_SECRET_ARN`` (RDS JSON shape:
username, password, host, port, dbname). The secret is read through Powertools' cached parameter provider
on every *new* connection, so a rotated password is picked up without a cold start.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.pool import NullPool

from shared.config import Settings, get_settings
from shared.errors import ConfigurationError

DRIVER = "postgresql+pg8000"


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
            "pool_pre_ping": True,
            "pool_recycle": 900,
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


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    """The engine of this container."""
    return build_engine(get_settings())
