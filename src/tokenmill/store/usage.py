"""Usage records: written in groups by the commit writer, read by the admin API and CLI, and
their token counts summed (with the parts of the prompt and completion apart) for
statements, invoices and reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, select

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


# The token columns that statements, invoices and reports sum: the prompt and completion
# tokens, and their parts (cache reads and writes of the prompt, reasoning of the completion).
TOKEN_COLUMNS = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


@dataclass(frozen=True)
class TokenSums:
    """Token counts summed over usage records; the parts are of the first two, not added."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        assert min(self.prompt_tokens, self.completion_tokens) >= 0
        assert min(self.cached_tokens, self.cache_write_tokens, self.reasoning_tokens) >= 0

    @classmethod
    def of(cls, sums: Sequence[Any]) -> TokenSums:
        """From the values of ``token_sums()`` in a row (NULL sums of no rows are 0)."""
        assert len(sums) == len(TOKEN_COLUMNS)
        return cls(*(int(value or 0) for value in sums))

    def json(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in TOKEN_COLUMNS}


def token_sums() -> list[ColumnElement[Any]]:
    """SUM of each of TOKEN_COLUMNS, in that order (tokens are not money: plain sums)."""
    return [func.sum(usage_records.c[name]) for name in TOKEN_COLUMNS]
