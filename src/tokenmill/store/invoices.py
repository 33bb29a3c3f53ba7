"""Invoices and credit notes as the store keeps them (inserted once, never updated)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, insert, select

from tokenmill import json_codec
from tokenmill.retail.invoices import Invoice, line_from_json, line_json
from tokenmill.store.tables import credit_notes, invoices
from tokenmill.store.wide_sums import joined_balance, split_balance


def next_seq(connection: Connection, table: Any) -> int:
    return int(connection.execute(select(func.coalesce(func.max(table.c.seq), 0))).scalar_one()) + 1


def insert_invoice(connection: Connection, invoice: Invoice, seq: int) -> None:
    high, low = split_balance(invoice.total_nano)
    connection.execute(
        insert(invoices).values(
            number=invoice.number,
            seq=seq,
            account_id=invoice.account_id,
            period=invoice.period,
            currency=invoice.currency,
            since_ms=invoice.since_ms,
            until_ms=invoice.until_ms,
            total_nano_high=high,
            total_nano_low=low,
            lines=json_codec.dumps([line_json(line) for line in invoice.lines]).decode(),
            issued_at_ms=invoice.issued_at_ms,
        )
    )


def _invoice(row: Any) -> Invoice:
    return Invoice(
        row.number,
        row.account_id,
        row.currency,
        row.period,
        row.since_ms,
        row.until_ms,
        tuple(line_from_json(line) for line in json_codec.loads(row.lines)),
        joined_balance(row.total_nano_high, row.total_nano_low),
        row.issued_at_ms,
    )


def invoice_by_number(connection: Connection, number: str) -> Invoice | None:
    row = connection.execute(select(invoices).where(invoices.c.number == number)).first()
    return _invoice(row) if row else None


def invoice_of(connection: Connection, account_id: str, period: str) -> Invoice | None:
    row = connection.execute(
        select(invoices).where(invoices.c.account_id == account_id, invoices.c.period == period)
    ).first()
    return _invoice(row) if row else None


def list_invoices(
    connection: Connection, account_id: str | None = None, limit: int = 1000
) -> list[Invoice]:
    query = select(invoices).order_by(invoices.c.seq).limit(limit)
    if account_id is not None:
        query = query.where(invoices.c.account_id == account_id)
    return [_invoice(row) for row in connection.execute(query)]


def credited_nano(connection: Connection, invoice_number: str) -> int:
    query = select(func.coalesce(func.sum(credit_notes.c.amount_nano), 0)).where(
        credit_notes.c.invoice_number == invoice_number
    )
    return int(connection.execute(query).scalar_one())


def insert_credit_note(
    connection: Connection,
    number: str,
    seq: int,
    invoice_number: str,
    amount_nano: int,
    reason: str,
    transfer_id: str,
    now_ms: int,
) -> None:
    connection.execute(
        insert(credit_notes).values(
            number=number,
            seq=seq,
            invoice_number=invoice_number,
            amount_nano=amount_nano,
            reason=reason,
            transfer_id=transfer_id,
            issued_at_ms=now_ms,
        )
    )


def credit_notes_of(connection: Connection, invoice_number: str) -> list[dict[str, Any]]:
    query = (
        select(credit_notes)
        .where(credit_notes.c.invoice_number == invoice_number)
        .order_by(credit_notes.c.seq)
    )
    return [
        {
            "number": row.number,
            "amount_nano": row.amount_nano,
            "reason": row.reason,
            "transfer_id": row.transfer_id,
            "issued_at_ms": row.issued_at_ms,
        }
        for row in connection.execute(query)
    ]
