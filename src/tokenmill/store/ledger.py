"""Transfers and cached balances: the ledger as the store keeps it.

A transfer's id is its idempotency key (the primary key refuses it twice). Every write adds
its transfers and moves the cached balances in one transaction, always in account order so
two writers never wait on each other's rows in opposite orders (no deadlock on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, select

from tokenmill.retail.ledger import Transfer, balance_deltas
from tokenmill.store.accounts import record_change
from tokenmill.store.tables import ledger_balances, transfers
from tokenmill.store.wide_sums import (
    BALANCE_BASE,
    joined_balance,
    joined_sum,
    split_balance,
    wide_sum,
)

TRANSFER_FIELDS = (
    "id",
    "debit_account",
    "credit_account",
    "amount_nano",
    "currency",
    "kind",
    "reference",
    "created_at_ms",
)


def transfer_insert_sql(placeholder: str) -> str:
    marks = ", ".join([placeholder] * len(TRANSFER_FIELDS))
    return f"INSERT INTO transfers ({', '.join(TRANSFER_FIELDS)}) VALUES ({marks})"


def balance_upsert_sql(placeholder: str) -> str:
    """Add a delta split by ``split_balance`` to a cached balance, creating its row on first
    use (SQLite and PostgreSQL); the low parts' carry moves to the high part (no ``%``:
    psycopg reads it as a placeholder)."""
    p = placeholder
    low = "(ledger_balances.balance_nano_low + excluded.balance_nano_low)"
    return (
        "INSERT INTO ledger_balances"
        " (account_id, currency, balance_nano_high, balance_nano_low, updated_at_ms)"
        f" VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT (account_id) DO UPDATE SET"
        " balance_nano_high = ledger_balances.balance_nano_high"
        f" + excluded.balance_nano_high + {low} / {BALANCE_BASE},"
        f" balance_nano_low = {low} - {low} / {BALANCE_BASE} * {BALANCE_BASE},"
        " updated_at_ms = excluded.updated_at_ms"
    )


def transfer_row(transfer: Transfer) -> tuple[Any, ...]:
    return tuple(getattr(transfer, name) for name in TRANSFER_FIELDS)


def balance_rows(batch: Iterable[Transfer], now_ms: int) -> list[tuple[str, str, int, int, int]]:
    """(account, currency, delta high, delta low, now) per account ``batch`` moves, in
    account order."""
    batch = list(batch)
    currency_of = {}
    for transfer in batch:
        currency_of[transfer.debit_account] = transfer.currency
        currency_of[transfer.credit_account] = transfer.currency
    deltas = balance_deltas(batch)
    return [
        (account, currency_of[account], *split_balance(deltas[account]), now_ms)
        for account in sorted(deltas)
        if deltas[account]
    ]


def _transfer(row: Any) -> Transfer:
    return Transfer(*(getattr(row, name) for name in TRANSFER_FIELDS))


def transfer_by_id(connection: Connection, transfer_id: str) -> Transfer | None:
    row = connection.execute(select(transfers).where(transfers.c.id == transfer_id)).first()
    return _transfer(row) if row else None


def transfers_by_ids(connection: Connection, ids: Sequence[str]) -> list[Transfer]:
    rows = connection.execute(select(transfers).where(transfers.c.id.in_(list(ids))))
    return [_transfer(row) for row in rows]


def post_transfers(connection: Connection, batch: Sequence[Transfer], now_ms: int) -> None:
    """Add ``batch`` and move the cached balances (the caller's transaction); announce each
    transfer in the change sequence so a running gateway applies it to its balances."""
    for transfer in batch:
        connection.exec_driver_sql(transfer_insert_sql(_mark(connection)), transfer_row(transfer))
    sql = balance_upsert_sql(_mark(connection))
    for row in balance_rows(batch, now_ms):
        connection.exec_driver_sql(sql, row)
    for transfer in batch:
        record_change(connection, "transfer", transfer.id, now_ms)


def _mark(connection: Connection) -> str:
    return "?" if connection.dialect.name == "sqlite" else "%s"


_BALANCE_PARTS = (ledger_balances.c.balance_nano_high, ledger_balances.c.balance_nano_low)


def cached_balances(connection: Connection) -> dict[str, int]:
    rows = connection.execute(select(ledger_balances.c.account_id, *_BALANCE_PARTS))
    return {account: joined_balance(high, low) for account, high, low in rows}


def cached_balance(connection: Connection, account_id: str) -> int:
    row = connection.execute(
        select(*_BALANCE_PARTS).where(ledger_balances.c.account_id == account_id)
    ).first()
    return joined_balance(*row) if row else 0


def recomputed_balances(connection: Connection) -> dict[str, int]:
    """Every ledger account's balance from its transfers alone (the audit's truth), exact
    at any size."""
    balances: dict[str, int] = {}
    amount = wide_sum(transfers.c.amount_nano)
    for side, sign in ((transfers.c.credit_account, 1), (transfers.c.debit_account, -1)):
        for account, high, low in connection.execute(select(side, *amount).group_by(side)):
            balances[account] = balances.get(account, 0) + sign * joined_sum(high, low)
    return balances


def transfers_of(
    connection: Connection,
    account: str,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    kinds: Sequence[str] | None = None,
    limit: int = 10_000,
) -> list[Transfer]:
    """Transfers that debit or credit ``account``, oldest first; ``until_ms`` exclusive."""
    query = (
        select(transfers)
        .where((transfers.c.debit_account == account) | (transfers.c.credit_account == account))
        .order_by(transfers.c.created_at_ms, transfers.c.id)
        .limit(limit)
    )
    if since_ms is not None:
        query = query.where(transfers.c.created_at_ms >= since_ms)
    if until_ms is not None:
        query = query.where(transfers.c.created_at_ms < until_ms)
    if kinds is not None:
        query = query.where(transfers.c.kind.in_(list(kinds)))
    return [_transfer(row) for row in connection.execute(query)]
