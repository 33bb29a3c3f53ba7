"""Stored responses of the OpenAI Responses surface (``store``, ``previous_response_id``):
one row per response, owned by an account, with its expiry.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stored_responses",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("previous_response_id", sa.String(64)),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger, nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger, nullable=False),
        sa.Column("input_items", sa.Text, nullable=False),
        sa.Column("response", sa.Text, nullable=False),
    )
    op.create_index(
        "ix_stored_responses_account_created", "stored_responses", ["account_id", "created_at_ms"]
    )
    op.create_index("ix_stored_responses_expires", "stored_responses", ["expires_at_ms"])


def downgrade() -> None:
    op.drop_table("stored_responses")
