"""blind index for encrypted conversations (message_search.blind_tokens)

The ``blind_tokens bigint[]`` column, its GIN index and ``key_version`` exist since 0005 (reserved, always
null); from this release the indexing job fills them for encrypted conversations (keyed hashes of whole
tokens, shared/services/search/blind.py). This revision pins the shape of such a row: no text search
configuration (nothing about a blind row may be derived from plaintext processing) and a real key version
(>= 1, the data key version its index key derives from). Existing rows all have ``blind_tokens`` null, so
the check holds without a rewrite; it is added ``NOT VALID`` and then validated, which scans the table
under a lock that lets reads and writes go on.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 17:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE message_search ADD CONSTRAINT ck_message_search_blind_row_shape"
        " CHECK (blind_tokens IS NULL OR (search_config IS NULL AND key_version >= 1)) NOT VALID"
    )
    op.execute("ALTER TABLE message_search VALIDATE CONSTRAINT ck_message_search_blind_row_shape")


def downgrade() -> None:
    op.drop_constraint(op.f('ck_message_search_blind_row_shape'), 'message_search', type_='check')
