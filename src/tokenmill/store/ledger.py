"""Transfers and cached balances: the ledger as the store keeps it.

A transfer's id is its idempotency key (the primary key refuses it twice). Every write adds
its transfers and moves the cached balances in one transaction, always in account order so
two writers never wait on each other's rows in opposite orders (no deadlock on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, func, select

from tokenmill.retail.ledger import Transfer, balance_deltas
from tokenmill.store.accounts import record_change
from tokenmill.store.tables import ledger_balances, transfers

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
    """Add to a cached balance, creating its row on first use (SQLite and PostgreSQL)."""
    p = placeholder
    return (
        "INSERT INTO ledger_balances (account_id, currency, balance_nano, updated_at_ms)"
        f" VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (account_id) DO UPDATE SET"
        " balance_nano = ledger_balances.balance_nano + excluded.balance_nano,"
        " updated_at_ms = excluded.updated_at_ms"
    )


def transfer_row(transfer: Transfer) -> tuple[Any, ...]:
    return tuple(getattr(transfer, name) for name in TRANSFER_FIELDS)


def balance_rows(batch: Iterable[Transfer], now_ms: int) -> list[tuple[str, str, int, int]]:
    """(account, currency, delta, now) per account ``batch`` moves, in account order."""
    batch = list(batch)
    currency_of = {}
    for transfer in batch:
        currency_of[transfer.debit_account] = transfer.currency
        currency_of[transfer.credit_account] = transfer.currency
    deltas = balance_deltas(batch)
    return [
        (account, currency_of[account], deltas[account], now_ms)
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


def cached_balances(connection: Connection) -> dict[str, int]:
    rows = connection.execute(select(ledger_balances.c.account_id, ledger_balances.c.balance_nano))
    return {row.account_id: row.balance_nano for row in rows}


def cached_balance(connection: Connection, account_id: str) -> int:
    value = connection.execute(
        select(ledger_balances.c.balance_nano).where(ledger_balances.c.account_id == account_id)
    ).scalar()
    return int(value or 0)


def recomputed_balances(connection: Connection) -> dict[str, int]:
    """Every ledger account's balance from its transfers alone (the audit's truth)."""
    balances: dict[str, int] = {}
    credited = select(transfers.c.credit_account, func.sum(transfers.c.amount_nano)).group_by(
        transfers.c.credit_account
    )
    debited = select(transfers.c.debit_account, func.sum(transfers.c.amount_nano)).group_by(
        transfers.c.debit_account
    )
    for account, total in connection.execute(credited):
        balances[account] = balances.get(account, 0) + int(total)
    for account, total in connection.execute(debited):
        balances[account] = balances.get(account, 0) - int(total)
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
