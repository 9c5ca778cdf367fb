"""Alembic migrations and the models describe the same schema: what the test database was migrated to is
what shared/db/models.py declares (an autogenerate against it would be empty)."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from shared.db.migrations import alembic_config
from shared.db.models import Base

pytestmark = pytest.mark.integration


def test_migrations_have_one_head_and_the_test_database_is_at_it(engine):
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, heads
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_heads() == tuple(heads)


def test_models_match_the_migrated_schema(engine):
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, Base.metadata) == []
