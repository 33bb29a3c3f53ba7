"""The fleet: rate limits of accounts and keys (requests and tokens per minute and requests
in flight, for every model or per model: JSON as retail/rate_limits.py writes it; NULL: none),
and the cost of each usage record to the operator (what a vendor charged, or the modeled or
measured cost of the own GPUs that served it).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("rate_limits", sa.Text))
    op.add_column("api_keys", sa.Column("rate_limits", sa.Text))
    op.add_column(
        "usage_records",
        sa.Column("cost_nano", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.add_column("usage_records", sa.Column("cost_basis", sa.String(16)))  # NULL: unknown


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("cost_basis")
        batch.drop_column("cost_nano")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("rate_limits")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("rate_limits")
