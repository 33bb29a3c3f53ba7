"""Balances past 64 bits: a cached balance becomes two BIGINTs, ``high * 10**18 + low``
(store/wide_sums.py), so a house account that sums every customer's top-ups never
overflows. The cache is rebuilt from the transfers, exactly, which also repairs a balance
that an overflow had already turned into a float.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BASE = 10**18
_SHIFT = 20


def upgrade() -> None:
    _widen_invoice_totals()
    op.drop_table("ledger_balances")
    balances = op.create_table(
        "ledger_balances",
        sa.Column("account_id", sa.String(64), primary_key=True),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("balance_nano_high", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("balance_nano_low", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
        sa.CheckConstraint(
            "balance_nano_low >= 0 AND balance_nano_low < 1000000000000000000",
            name="ck_ledger_balances_low_part",
        ),
    )
    assert balances is not None
    currency_of: dict[str, str] = {}
    total_of: dict[str, int] = {}
    at_ms_of: dict[str, int] = {}
    bind = op.get_bind()
    for side, sign in (("credit_account", 1), ("debit_account", -1)):
        rows = bind.execute(
            sa.text(
                f"SELECT {side}, MAX(currency), SUM(amount_nano >> {_SHIFT}),"
                f" SUM(amount_nano & {(1 << _SHIFT) - 1}), MAX(created_at_ms)"
                f" FROM transfers GROUP BY {side}"
            )
        )
        for account, currency, high, low, at_ms in rows:
            total = (int(high or 0) << _SHIFT) + int(low or 0)
            currency_of[account] = currency
            total_of[account] = total_of.get(account, 0) + sign * total
            at_ms_of[account] = max(at_ms_of.get(account, 0), int(at_ms))
    inserted = [
        {
            "account_id": account,
            "currency": currency_of[account],
            "balance_nano_high": total // _BASE,
            "balance_nano_low": total % _BASE,
            "updated_at_ms": at_ms_of[account],
        }
        for account, total in total_of.items()
    ]
    if inserted:
        op.bulk_insert(balances, inserted)


def _widen_invoice_totals() -> None:
    with op.batch_alter_table("invoices") as batch:
        batch.alter_column("total_nano", new_column_name="total_nano_low")
        batch.add_column(
            sa.Column("total_nano_high", sa.BigInteger, nullable=False, server_default="0")
        )
    # Totals so far fit 64 bits and are never negative: split them as wide_sums does.
    op.execute(
        f"UPDATE invoices SET total_nano_high = total_nano_low / {_BASE},"
        f" total_nano_low = total_nano_low % {_BASE}"
    )


def downgrade() -> None:
    op.execute(f"UPDATE invoices SET total_nano_low = total_nano_high * {_BASE} + total_nano_low")
    with op.batch_alter_table("invoices") as batch:
        batch.drop_column("total_nano_high")
        batch.alter_column("total_nano_low", new_column_name="total_nano")
    with op.batch_alter_table("ledger_balances") as batch:
        batch.drop_constraint("ck_ledger_balances_low_part", type_="check")
        batch.add_column(
            sa.Column("balance_nano", sa.BigInteger, nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE ledger_balances SET balance_nano = balance_nano_high * 1000000000000000000"
        " + balance_nano_low"
    )
    with op.batch_alter_table("ledger_balances") as batch:
        batch.drop_column("balance_nano_high")
        batch.drop_column("balance_nano_low")
