"""per-conversation retention: ``conversations.retention_days``

The chat API may set it (null: the cleanup job's ``retention_days``, else CLEANUP_RETENTION_DAYS). Cleanup's
``old-messages`` soft-deletes a conversation's messages once they are older than its own retention, which wins
over the job's: it is the conversation's policy (e.g. disappearing messages), the job's a global default.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('conversations', sa.Column('retention_days', sa.Integer(), nullable=True))
    op.create_check_constraint(
        op.f('ck_conversations_retention_days'), 'conversations', 'retention_days >= 1'
    )


def downgrade() -> None:
    op.drop_constraint(op.f('ck_conversations_retention_days'), 'conversations', type_='check')
    op.drop_column('conversations', 'retention_days')
