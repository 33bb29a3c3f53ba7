"""Retail: account currency, credit limit and spend budgets (also per key), the ledger
(transfers, cached balances), the price book, the charge of each usage record, and the admin
audit log.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column(
        "accounts", sa.Column("currency", sa.String(8), nullable=False, server_default="USD")
    )
    op.add_column(
        "accounts",
        sa.Column("credit_limit_nano", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.add_column("accounts", sa.Column("plan", sa.String(64)))  # NULL: pay as you go
    op.add_column("accounts", sa.Column("plan_since_ms", sa.BigInteger))
    op.add_column(
        "usage_records",
        sa.Column("included_tokens", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "plans",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("spec", sa.Text, nullable=False),  # JSON, as written (billing/plans.py)
        sa.Column("created_at_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "invoices",
        sa.Column("number", sa.String(32), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False, unique=True),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("since_ms", sa.BigInteger, nullable=False),
        sa.Column("until_ms", sa.BigInteger, nullable=False),
        sa.Column("total_nano", sa.BigInteger, nullable=False),
        sa.Column("lines", sa.Text, nullable=False),  # JSON: immutable once issued
        sa.Column("issued_at_ms", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("account_id", "period", name="uq_invoices_account_period"),
    )
    op.create_table(
        "credit_notes",
        sa.Column("number", sa.String(32), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False, unique=True),
        sa.Column("invoice_number", sa.String(32), nullable=False),
        sa.Column("amount_nano", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("transfer_id", sa.String(200), nullable=False),
        sa.Column("issued_at_ms", sa.BigInteger, nullable=False),
        sa.CheckConstraint("amount_nano > 0", name="ck_credit_notes_amount_positive"),
    )
    op.create_index("ix_credit_notes_invoice", "credit_notes", ["invoice_number"])
    for table in ("accounts", "api_keys"):  # spend budgets; NULL: none
        op.add_column(table, sa.Column("daily_budget_nano", sa.BigInteger))
        op.add_column(table, sa.Column("monthly_budget_nano", sa.BigInteger))
    op.add_column(
        "usage_records",
        sa.Column("charge_nano", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.add_column(
        "usage_records", sa.Column("loss_nano", sa.BigInteger, nullable=False, server_default="0")
    )
    if op.get_bind().dialect.name != "sqlite":  # SQLite does not enforce VARCHAR lengths
        op.alter_column("changes", "entity_id", type_=sa.String(200))
    op.create_table(
        "transfers",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("debit_account", sa.String(64), nullable=False),
        sa.Column("credit_account", sa.String(64), nullable=False),
        sa.Column("amount_nano", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(200)),
        sa.Column("created_at_ms", sa.BigInteger, nullable=False),
        sa.CheckConstraint("amount_nano > 0", name="ck_transfers_amount_positive"),
        sa.CheckConstraint("debit_account <> credit_account", name="ck_transfers_two_accounts"),
    )
    op.create_index("ix_transfers_debit", "transfers", ["debit_account", "created_at_ms"])
    op.create_index("ix_transfers_credit", "transfers", ["credit_account", "created_at_ms"])
    op.create_table(
        "ledger_balances",
        sa.Column("account_id", sa.String(64), primary_key=True),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("balance_nano", sa.BigInteger, nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "prices",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("currency", sa.String(8), primary_key=True),
        sa.Column("effective_from_ms", sa.BigInteger, primary_key=True),
        sa.Column("input_nano_per_mtok", sa.BigInteger, nullable=False),
        sa.Column("output_nano_per_mtok", sa.BigInteger, nullable=False),
        sa.Column("cached_input_nano_per_mtok", sa.BigInteger, nullable=False),
        sa.Column("request_fee_nano", sa.BigInteger, nullable=False),
        sa.Column("created_at_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("entity", sa.String(32), nullable=False),
        sa.Column("entity_id", sa.String(200), nullable=False),
        sa.Column("before", sa.Text),
        sa.Column("after", sa.Text),
    )
    op.create_index("ix_audit_entity", "audit_log", ["entity", "entity_id"])


def downgrade() -> None:
    for table in (
        "credit_notes",
        "invoices",
        "plans",
        "audit_log",
        "prices",
        "ledger_balances",
        "transfers",
    ):
        op.drop_table(table)
    op.drop_column("usage_records", "included_tokens")
    op.drop_column("accounts", "plan")
    op.drop_column("accounts", "plan_since_ms")
    for column in ("loss_nano", "charge_nano"):
        op.drop_column("usage_records", column)
    for table in ("accounts", "api_keys"):
        for column in ("daily_budget_nano", "monthly_budget_nano"):
            op.drop_column(table, column)
    for column in ("credit_limit_nano", "currency"):
        op.drop_column("accounts", column)
