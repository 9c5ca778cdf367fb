"""batch fan-out ledger (batch_jobs per recipient, message_batches statuses and counts)

``batch_jobs`` becomes the batch's per-recipient ledger: the fan-out pre-inserts one row per recipient
(status ``pending``), turns it ``queued`` when it enqueues the recipient's send-message job (deterministic
``job_id``/``message_id``), and send-message settles it ``sent`` or ``failed`` on the same key; a cancelled
batch turns its still-``pending`` rows ``cancelled``. ``error`` says why a row failed (a short reason code,
never content). Every count of a batch derives from these rows; ``message_batches.queued``/``sent``/
``failed``/``cancelled`` are a snapshot the batch function refreshes at every chunk, so no send-message job
locks the batch row. ``ix_batch_jobs_batch_id_status`` serves those counts and the completion check.

``message_batches``: ``cancelled`` (count snapshot), ``cancelled_at``, ``enqueued_at`` (when the last chunk
was enqueued: the batch waits for its outcomes from then on), and a CHECK on ``status`` (``running``,
``completed``, ``completed_with_failures``, ``cancelled``; rows before this migration are ``running`` or
``completed``), widened to 32 characters.

The cleanup function is not built yet: its schema (retention per conversation, the indexes its bounded
deletes need) comes with it, in its own migration.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('batch_jobs', sa.Column('error', sa.String(length=200), nullable=True))
    op.drop_constraint(op.f('ck_batch_jobs_status'), 'batch_jobs', type_='check')
    op.create_check_constraint(
        op.f('ck_batch_jobs_status'), 'batch_jobs',
        "status IN ('pending', 'queued', 'sent', 'failed', 'cancelled')",
    )
    op.create_index('ix_batch_jobs_batch_id_status', 'batch_jobs', ['batch_id', 'status'], unique=False)

    op.add_column('message_batches', sa.Column('cancelled', sa.Integer(), server_default='0', nullable=False))
    op.add_column('message_batches', sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('message_batches', sa.Column('enqueued_at', sa.DateTime(timezone=True), nullable=True))
    # 'completed_with_failures' needs more than 16 characters (widening a varchar rewrites nothing)
    op.alter_column('message_batches', 'status', type_=sa.String(length=32), existing_nullable=False,
                    existing_server_default=sa.text("'running'::character varying"))
    op.create_check_constraint(
        op.f('ck_message_batches_status'), 'message_batches',
        "status IN ('running', 'completed', 'completed_with_failures', 'cancelled')",
    )


def downgrade() -> None:
    op.drop_constraint(op.f('ck_message_batches_status'), 'message_batches', type_='check')
    op.execute("UPDATE message_batches SET status = 'completed' WHERE status = 'completed_with_failures'")
    op.alter_column('message_batches', 'status', type_=sa.String(length=16), existing_nullable=False)
    op.drop_column('message_batches', 'enqueued_at')
    op.drop_column('message_batches', 'cancelled_at')
    op.drop_column('message_batches', 'cancelled')
    op.drop_index('ix_batch_jobs_batch_id_status', table_name='batch_jobs')
    op.execute("UPDATE batch_jobs SET status = 'failed' WHERE status NOT IN ('sent', 'failed')")
    op.drop_constraint(op.f('ck_batch_jobs_status'), 'batch_jobs', type_='check')
    op.create_check_constraint(op.f('ck_batch_jobs_status'), 'batch_jobs', "status IN ('sent', 'failed')")
    op.drop_column('batch_jobs', 'error')
