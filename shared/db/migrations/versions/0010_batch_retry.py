"""batch retry of failed recipients

A batch's failed recipients can be retried (``shared.services.batches.retry_failed``). A retry supersedes
each failed ``batch_jobs`` row: the row turns ``retried`` (it counts nowhere any more, and a late outcome of
its old job id moves nothing) and a new ``pending`` row with the retry's job id and ``attempt`` takes its
place, so counts still derive from the rows.

``message_batches``: ``attempts`` (the retry now running; 0 before any), and the batch's content sealed at
rest for those retries: ``content_ciphertext``/``content_nonce`` (AES-256-GCM), ``content_wrapped_key`` and
``content_kms_key_id`` (a KMS data key whose encryption context names the batch), ``content_type``. They are
cleared once no retry can need them (completed without failures, cancelled, or by cleanup). Batches created
before this migration have no sealed content: a retry of one is refused.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('batch_jobs', sa.Column('attempt', sa.Integer(), server_default='0', nullable=False))
    op.drop_constraint(op.f('ck_batch_jobs_status'), 'batch_jobs', type_='check')
    op.create_check_constraint(
        op.f('ck_batch_jobs_status'), 'batch_jobs',
        "status IN ('pending', 'queued', 'sent', 'failed', 'cancelled', 'retried')",
    )
    op.add_column('message_batches', sa.Column('attempts', sa.Integer(), server_default='0', nullable=False))
    op.add_column('message_batches', sa.Column('content_type', sa.String(length=32), nullable=True))
    op.add_column('message_batches', sa.Column('content_ciphertext', sa.LargeBinary(), nullable=True))
    op.add_column('message_batches', sa.Column('content_nonce', sa.LargeBinary(), nullable=True))
    op.add_column('message_batches', sa.Column('content_wrapped_key', sa.LargeBinary(), nullable=True))
    op.add_column('message_batches', sa.Column('content_kms_key_id', sa.String(length=2048), nullable=True))


def downgrade() -> None:
    op.drop_column('message_batches', 'content_kms_key_id')
    op.drop_column('message_batches', 'content_wrapped_key')
    op.drop_column('message_batches', 'content_nonce')
    op.drop_column('message_batches', 'content_ciphertext')
    op.drop_column('message_batches', 'content_type')
    op.drop_column('message_batches', 'attempts')
    # a superseded row goes (its replacement keeps the recipient's outcome), then the old constraint returns
    op.execute("DELETE FROM batch_jobs WHERE status = 'retried'")
    op.drop_constraint(op.f('ck_batch_jobs_status'), 'batch_jobs', type_='check')
    op.create_check_constraint(
        op.f('ck_batch_jobs_status'), 'batch_jobs',
        "status IN ('pending', 'queued', 'sent', 'failed', 'cancelled')",
    )
    op.drop_column('batch_jobs', 'attempt')
