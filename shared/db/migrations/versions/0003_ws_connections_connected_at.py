"""ws_connections: index connected_at for the stale-connection sweeper

The sweeper deletes connections opened before API Gateway's 2 h maximum connection duration, in bounded
batches (``connected_at < :cutoff LIMIT n``). connected_at is written once, so the index costs nothing per
client frame; last_seen_at, updated by every frame, is deliberately not indexed. The table holds live
connections only (small), so a plain CREATE INDEX is brief.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 12:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f('ix_ws_connections_connected_at'), 'ws_connections', ['connected_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_ws_connections_connected_at'), table_name='ws_connections')
