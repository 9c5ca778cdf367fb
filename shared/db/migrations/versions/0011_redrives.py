"""management API redrive records

``redrives``: one row per redrive asked of the management API (docs/contracts.md §8): job type, mode
(``native``: an SQS message-move task, ``selective``: moved by the management function), status, dry run,
the IAM principal who asked, the filter, limits, counts (matched, moved, kept, failed, to move), the native
task handle, a failure reason, and the lease that keeps one invocation at a time on a selective redrive.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'redrives',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('job_type', sa.String(length=32), nullable=False),
        sa.Column('mode', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('dry_run', sa.Boolean(), nullable=False),
        sa.Column('principal', sa.String(length=2048), nullable=False),
        sa.Column('filter', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
        sa.Column('max_messages', sa.Integer(), nullable=True),
        sa.Column('max_per_second', sa.Integer(), nullable=True),
        sa.Column('matched', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('moved', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('kept', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('failed', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('to_move', sa.BigInteger(), nullable=True),
        sa.Column('task_handle', sa.Text(), nullable=True),
        sa.Column('failure_reason', sa.Text(), nullable=True),
        sa.Column('slices', sa.Integer(), server_default='0', nullable=False),
        sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("mode IN ('native', 'selective')", name=op.f('ck_redrives_mode')),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'cancelling', 'cancelled', 'failed')",
            name=op.f('ck_redrives_status'),
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_redrives')),
    )
    op.create_index('ix_redrives_created_at', 'redrives', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_redrives_created_at', table_name='redrives')
    op.drop_table('redrives')
