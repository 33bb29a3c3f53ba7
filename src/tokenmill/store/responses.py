"""Stored responses (OpenAI Responses' ``store``): one row each, owned by an account, kept
until it expires or is deleted, pruned to a count per account.

A conversation continued with ``previous_response_id`` is read back in one query that walks
the chain from the newest response to the oldest still stored (a recursive CTE, the same on
SQLite and PostgreSQL), so no turn copies the ones before it. Every read is scoped to the
account: another tenant's id reads as absent, and an expired row as deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, and_, delete, func, insert, select, text

from tokenmill.store.tables import stored_responses as table


@dataclass(frozen=True)
class StoredResponse:
    id: str
    account_id: str
    previous_response_id: str | None
    model: str
    created_at_ms: int
    expires_at_ms: int
    input_items: tuple[dict[str, Any], ...]
    response: dict[str, Any]  # its ``output`` is the response's output items


_FIELDS = (
    "id",
    "account_id",
    "previous_response_id",
    "model",
    "created_at_ms",
    "expires_at_ms",
    "input_items",
    "response",
)


def response_row(row: StoredResponse) -> tuple[Any, ...]:
    """``row`` as the values of ``response_insert_sql``, its items as JSON text."""
    return (
        row.id,
        row.account_id,
        row.previous_response_id,
        row.model,
        row.created_at_ms,
        row.expires_at_ms,
        orjson.dumps(row.input_items).decode(),
        orjson.dumps(row.response).decode(),
    )


def response_insert_sql(placeholder: str) -> str:
    """The INSERT of one stored response (the group commit writes them with their usage
    records), with the driver's placeholder (``?`` or ``%s``)."""
    marks = ", ".join([placeholder] * len(_FIELDS))
    return f"INSERT INTO stored_responses ({', '.join(_FIELDS)}) VALUES ({marks})"


def insert_response(connection: Connection, row: StoredResponse) -> None:
    connection.execute(insert(table).values(dict(zip(_FIELDS, response_row(row), strict=True))))


def _live(account_id: str, now_ms: int) -> Any:
    return and_(table.c.account_id == account_id, table.c.expires_at_ms > now_ms)


def response_by_id(
    connection: Connection, account_id: str, response_id: str, now_ms: int
) -> StoredResponse | None:
    found = connection.execute(
        select(table).where(table.c.id == response_id, _live(account_id, now_ms))
    ).first()
    if found is None:
        return None
    return StoredResponse(
        id=found.id,
        account_id=found.account_id,
        previous_response_id=found.previous_response_id,
        model=found.model,
        created_at_ms=found.created_at_ms,
        expires_at_ms=found.expires_at_ms,
        input_items=tuple(orjson.loads(found.input_items)),
        response=orjson.loads(found.response),
    )


def delete_response(connection: Connection, account_id: str, response_id: str, now_ms: int) -> bool:
    done = connection.execute(
        delete(table).where(table.c.id == response_id, _live(account_id, now_ms))
    )
    return done.rowcount > 0


_CHAIN = text(
    """
    WITH RECURSIVE chain(id, previous_response_id, depth) AS (
        SELECT id, previous_response_id, 0 FROM stored_responses
        WHERE id = :id AND account_id = :account AND expires_at_ms > :now
        UNION ALL
        SELECT r.id, r.previous_response_id, c.depth + 1
        FROM stored_responses r JOIN chain c ON r.id = c.previous_response_id
        WHERE r.account_id = :account AND r.expires_at_ms > :now AND c.depth < :depth_max
    )
    SELECT r.input_items, r.response, c.depth
    FROM chain c JOIN stored_responses r ON r.id = c.id
    ORDER BY c.depth DESC
    """
)


def chain_items(
    connection: Connection, account_id: str, response_id: str, now_ms: int, depth_max: int
) -> tuple[list[tuple[str, str]], bool] | None:
    """The JSON texts of a conversation up to and including ``response_id``, oldest first:
    each response's input items and the response (whose ``output`` follows them), at most
    ``depth_max`` + 1 responses; and whether older ones were left out. None: no such live
    response."""
    rows = connection.execute(
        _CHAIN,
        {"id": response_id, "account": account_id, "now": now_ms, "depth_max": depth_max},
    ).all()
    if not rows:
        return None
    texts = [(row.input_items, row.response) for row in rows]
    return texts, rows[0].depth >= depth_max


def prune(connection: Connection, now_ms: int, account_id: str, count_max: int) -> int:
    """Delete every expired response, and the account's oldest beyond ``count_max``;
    the number deleted."""
    deleted = connection.execute(delete(table).where(table.c.expires_at_ms <= now_ms)).rowcount
    count = connection.execute(
        select(func.count()).select_from(table).where(table.c.account_id == account_id)
    ).scalar_one()
    if count > count_max:
        oldest = (
            select(table.c.id)
            .where(table.c.account_id == account_id)
            .order_by(table.c.created_at_ms, table.c.id)
            .limit(count - count_max)
        )
        ids = [found.id for found in connection.execute(oldest)]
        deleted += connection.execute(delete(table).where(table.c.id.in_(ids))).rowcount
    return deleted
