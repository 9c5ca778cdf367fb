"""batch_jobs (a send-message job counts once in its batch) and attachments.uploaded_by (who may attach it)

``batch_jobs(batch_id, job_id)``: one row per send-message job counted in ``message_batches`` (status
``sent`` or ``failed``, its recipient when known, its message id). send-message advances a batch's counters
only when it inserts this row (or turns its own ``failed`` row into ``sent`` when a dead-lettered job is
redriven and succeeds), so redeliveries, redrives and the dead-letter path after a success count nothing
again; and only when the job's sender is the batch's ``sender_id``. ``message_batches.sender_id`` exists and
is NOT NULL since 0001: no batch lacks a sender. Batches counted before this migration have no rows here; a
job of theirs delivered again after the upgrade can count once more (the table starts empty).

``attachments.uploaded_by`` (uuid, null, references users): the user who uploaded the file. **The chat API
must set it when it writes an attachment.** send-message links an attachment to a message only when
``uploaded_by`` is the message's sender and the attachment is undeleted and not attached to another message
(once linked, ``message_id`` records the message and, through it, the conversation); otherwise the job fails
permanently (``unknown-entity``). Rows written before this migration have no uploader and can no longer be
linked by any send-message job (those already linked stay linked); the chat API may backfill
``uploaded_by`` for unattached rows it knows the owner of. Adding a nullable column without a default, and a
foreign key over a column that is all NULL, needs no table rewrite.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('attachments', sa.Column('uploaded_by', sa.UUID(), nullable=True))
    op.create_foreign_key(
        op.f('fk_attachments_uploaded_by_users'), 'attachments', 'users', ['uploaded_by'], ['id']
    )
    op.create_table('batch_jobs',
    sa.Column('batch_id', sa.UUID(), nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=False),
    sa.Column('recipient_id', sa.UUID(), nullable=True),
    sa.Column('message_id', sa.UUID(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('sent', 'failed')", name=op.f('ck_batch_jobs_status')),
    sa.ForeignKeyConstraint(['batch_id'], ['message_batches.id'], name=op.f('fk_batch_jobs_batch_id_message_batches'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('batch_id', 'job_id', name=op.f('pk_batch_jobs'))
    )


def downgrade() -> None:
    op.drop_table('batch_jobs')
    op.drop_constraint(op.f('fk_attachments_uploaded_by_users'), 'attachments', type_='foreignkey')
    op.drop_column('attachments', 'uploaded_by')
