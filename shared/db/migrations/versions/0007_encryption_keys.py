"""encryption at rest: wrapped per-conversation data keys, and the sealed-message columns

``encryption_keys`` holds one row per (conversation, key version): the data key from KMS
``GenerateDataKey`` (AES_256, encryption context ``{conversation_id, key_version}``) as KMS wrapped it, the
KMS key that wrapped it, when it was made, when it was retired (no message is sealed under it any more), and
how many messages it has sealed (a version seals at most ENCRYPTION_MAX_MESSAGES_PER_KEY, then a new one is
made). Deleting a conversation's rows is crypto-shredding: its sealed content can never be opened again.

``messages`` gains ``encryption_key_version`` and ``encryption_algorithm`` (``aes-256-gcm``), set with
``content_ciphertext`` / ``content_nonce``; a CHECK keeps plaintext and sealed content from coexisting.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'encryption_keys',
        sa.Column('conversation_id', sa.UUID(), nullable=False),
        sa.Column('key_version', sa.Integer(), nullable=False),
        sa.Column('wrapped_key', sa.LargeBinary(), nullable=False),
        sa.Column('kms_key_id', sa.String(length=2048), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('messages_sealed', sa.BigInteger(), server_default='0', nullable=False),
        sa.CheckConstraint('key_version >= 1', name=op.f('ck_encryption_keys_key_version')),
        sa.ForeignKeyConstraint(
            ['conversation_id'], ['conversations.id'],
            name=op.f('fk_encryption_keys_conversation_id_conversations'),
        ),
        sa.PrimaryKeyConstraint('conversation_id', 'key_version', name=op.f('pk_encryption_keys')),
    )
    op.add_column('messages', sa.Column('encryption_key_version', sa.Integer(), nullable=True))
    op.add_column('messages', sa.Column('encryption_algorithm', sa.String(length=32), nullable=True))
    op.create_check_constraint(
        op.f('ck_messages_plaintext_or_sealed'), 'messages', 'content IS NULL OR content_ciphertext IS NULL'
    )


def downgrade() -> None:
    op.drop_constraint(op.f('ck_messages_plaintext_or_sealed'), 'messages', type_='check')
    op.drop_column('messages', 'encryption_algorithm')
    op.drop_column('messages', 'encryption_key_version')
    op.drop_table('encryption_keys')
