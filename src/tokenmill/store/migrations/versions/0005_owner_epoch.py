"""The owner's epoch, a fencing token: the gateway that takes the database adds one to it,
and every group commit checks it inside its own transaction, so a gateway that lost its
lock (a dropped connection, a PostgreSQL restart) and was followed by another can never
commit again. The scale-out step grows this row into one lease row per process.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_owner",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("taken_at_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gateway_owner")
