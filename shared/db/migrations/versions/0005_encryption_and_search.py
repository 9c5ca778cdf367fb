"""message search: message_search and conversations.search_config (the encryption part of this revision's
name is not built yet: it adds nothing here, and will come in a later revision)

``message_search(message_id pk)``: one row per indexed message, written by the ``indexing`` job. A row holds
``document``, a tsvector (content weight A, sender display name B, conversation title C) built with the
conversation's ``search_config``. ``blind_tokens`` (keyed token hashes) and ``key_version`` are reserved for
encrypted conversations, which are not indexed until encryption at rest exists (the job refuses them, so no
plaintext lexemes of an encrypted conversation are ever stored); exactly one of ``document`` and
``blind_tokens`` is set. ``conversation_id`` and ``created_at`` are copied from the message so a search
filters by the searcher's conversations and walks newest first on this table. Rows go with their message or
conversation (ON DELETE CASCADE). The table starts empty: messages sent before this migration are
searchable once an ``indexing`` job (``index``) is sent for them.

``conversations.search_config`` (regconfig, default ``simple``): the text search configuration of the
conversation's index and of queries against it; a regconfig column refuses a configuration that does not
exist when it is written. Adding a column with a constant default needs no table rewrite.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        'conversations',
        sa.Column('search_config', postgresql.REGCONFIG(), server_default=sa.text("'simple'::regconfig"),
                  nullable=False),
    )
    op.create_table('message_search',
    sa.Column('message_id', sa.UUID(), nullable=False),
    sa.Column('conversation_id', sa.UUID(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('search_config', postgresql.REGCONFIG(), nullable=True),
    sa.Column('document', postgresql.TSVECTOR(), nullable=True),
    sa.Column('blind_tokens', postgresql.ARRAY(sa.BigInteger()), nullable=True),
    sa.Column('key_version', sa.Integer(), nullable=True),
    sa.Column('indexed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('(document IS NULL) <> (blind_tokens IS NULL)', name=op.f('ck_message_search_one_kind')),
    sa.CheckConstraint('(blind_tokens IS NULL) = (key_version IS NULL)', name=op.f('ck_message_search_blind_key_version')),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_message_search_conversation_id_conversations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_message_search_message_id_messages'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('message_id', name=op.f('pk_message_search'))
    )
    op.create_index('ix_message_search_conversation_id_created_at', 'message_search', ['conversation_id', 'created_at', 'message_id'], unique=False)
    op.create_index('ix_message_search_document', 'message_search', ['document'], unique=False, postgresql_using='gin')
    op.create_index('ix_message_search_blind_tokens', 'message_search', ['blind_tokens'], unique=False, postgresql_using='gin')


def downgrade() -> None:
    op.drop_index('ix_message_search_blind_tokens', table_name='message_search', postgresql_using='gin')
    op.drop_index('ix_message_search_document', table_name='message_search', postgresql_using='gin')
    op.drop_index('ix_message_search_conversation_id_created_at', table_name='message_search')
    op.drop_table('message_search')
    op.drop_column('conversations', 'search_config')
