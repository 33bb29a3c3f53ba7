"""Usage records: written in groups by the commit writer, read by the admin API and CLI."""

from __future__ import annotations

from dataclasses import fields
from operator import attrgetter
from typing import Any

from sqlalchemy import Connection, func, select

from tokenmill.store.tables import usage_records
from tokenmill.store.wide_sums import joined_sum, wide_sum
from tokenmill.usage import UsageRecord

_FIELDS = [f.name for f in fields(UsageRecord)]
# The group commit writes through the driver directly: one prepared INSERT, rows as tuples.
record_row = attrgetter(*_FIELDS)


def insert_sql(placeholder: str) -> str:
    """The INSERT of one usage record, with the driver's placeholder (``?`` or ``%s``)."""
    marks = ", ".join([placeholder] * len(_FIELDS))
    return f"INSERT INTO usage_records ({', '.join(_FIELDS)}) VALUES ({marks})"


def _record(row: Any) -> UsageRecord:
    values = {name: getattr(row, name) for name in _FIELDS}
    values["estimated"] = bool(values["estimated"])
    return UsageRecord(**values)


def query_records(
    connection: Connection,
    *,
    account_id: str | None = None,
    key_id: str | None = None,
    model: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int = 1000,
) -> list[UsageRecord]:
    """Records matching every given filter, newest first; ``until_ms`` is exclusive."""
    query = select(usage_records).order_by(
        usage_records.c.started_at_ms.desc(), usage_records.c.request_id
    )
    if account_id is not None:
        query = query.where(usage_records.c.account_id == account_id)
    if key_id is not None:
        query = query.where(usage_records.c.key_id == key_id)
    if model is not None:
        query = query.where(usage_records.c.model == model)
    if since_ms is not None:
        query = query.where(usage_records.c.started_at_ms >= since_ms)
    if until_ms is not None:
        query = query.where(usage_records.c.started_at_ms < until_ms)
    return [_record(row) for row in connection.execute(query.limit(limit))]


def record_by_request_id(connection: Connection, request_id: str) -> UsageRecord | None:
    row = connection.execute(
        select(usage_records).where(usage_records.c.request_id == request_id)
    ).first()
    return _record(row) if row else None


def charged_since(connection: Connection, subject: str, since_ms: int) -> dict[str, int]:
    """What each account (``subject`` "account") or key ("key") was charged since ``since_ms``."""
    column = usage_records.c.account_id if subject == "account" else usage_records.c.key_id
    query = (
        select(column, *wide_sum(usage_records.c.charge_nano))
        .where(usage_records.c.started_at_ms >= since_ms, usage_records.c.charge_nano > 0)
        .group_by(column)
    )
    return {row[0]: joined_sum(row[1], row[2]) for row in connection.execute(query)}


def included_used_since(connection: Connection, account_id: str, since_ms: int) -> dict[str, int]:
    """Plan-included tokens ``account_id`` used since ``since_ms``, by model."""
    query = (
        select(usage_records.c.model, func.sum(usage_records.c.included_tokens))
        .where(
            usage_records.c.account_id == account_id,
            usage_records.c.started_at_ms >= since_ms,
            usage_records.c.included_tokens > 0,
        )
        .group_by(usage_records.c.model)
    )
    return {row[0]: int(row[1]) for row in connection.execute(query)}
