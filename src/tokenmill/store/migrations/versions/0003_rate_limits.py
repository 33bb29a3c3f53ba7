"""Rate limits of accounts and keys: requests and tokens per minute and requests in flight,
for every model or per model (JSON, as retail/rate_limits.py writes it; NULL: none).

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


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("rate_limits")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("rate_limits")
