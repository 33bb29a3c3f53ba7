"""Prompt caching in the price book and the usage records: a cache-write price beside the
cache-read one (``cached_input_nano_per_mtok``), the input price for every price made
before it (what a cache write paid until now), and each usage record's cache writes (of its
prompt tokens, beside ``cached_tokens``, the reads) and reasoning tokens (of its completion
tokens), 0 for the records made before.

A record now keeps its cache reads within its prompt tokens. One whose upstream reported
more reads than prompt tokens was charged as if its whole prompt were read (rating took the
lesser of the two); its ``cached_tokens`` becomes that, what it was charged for.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("prices") as batch:
        batch.add_column(sa.Column("cache_write_input_nano_per_mtok", sa.BigInteger))
    op.execute("UPDATE prices SET cache_write_input_nano_per_mtok = input_nano_per_mtok")
    with op.batch_alter_table("prices") as batch:
        batch.alter_column(
            "cache_write_input_nano_per_mtok", existing_type=sa.BigInteger, nullable=False
        )
    op.execute(
        "UPDATE usage_records SET cached_tokens = prompt_tokens WHERE cached_tokens > prompt_tokens"
    )
    for column in ("cache_write_tokens", "reasoning_tokens"):
        op.add_column(
            "usage_records",
            sa.Column(column, sa.BigInteger, nullable=False, server_default="0"),
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("reasoning_tokens")
        batch.drop_column("cache_write_tokens")
    with op.batch_alter_table("prices") as batch:
        batch.drop_column("cache_write_input_nano_per_mtok")
