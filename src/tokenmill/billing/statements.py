"""Statements and revenue reports, read from the ledger in one snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, case, func, select

from tokenmill.access.service import find_account
from tokenmill.errors import InvalidRequest
from tokenmill.money import format_amount
from tokenmill.retail.statements import DAY_MS, MovementLine, Statement, UsageLine
from tokenmill.store.tables import accounts as accounts_table
from tokenmill.store.tables import transfers, usage_records
from tokenmill.store.usage import TOKEN_COLUMNS, TokenSums, token_sums
from tokenmill.store.wide_sums import joined_sum, wide_sum

PERIOD_MS_MAX = 366 * DAY_MS * 5  # five years in one statement at most


def snapshot(engine: Engine) -> Connection:
    connection = engine.connect()
    if engine.dialect.name == "postgresql":
        connection = connection.execution_options(isolation_level="REPEATABLE READ")
    return connection


def iso_of(at_ms: int) -> str:
    """An instant for an error message, whatever its range."""
    try:
        return datetime.fromtimestamp(at_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{at_ms} ms"


def check_period(since_ms: int | None, until_ms: int | None) -> tuple[int, int]:
    if since_ms is None or until_ms is None:
        raise InvalidRequest("a period needs since and until", param="since")
    if since_ms < 0:
        raise InvalidRequest("since must be at or after 1970-01-01T00:00:00Z", param="since")
    if since_ms >= until_ms:
        raise InvalidRequest(
            f"since ({iso_of(since_ms)}) must be before until ({iso_of(until_ms)})",
            param="until",
        )
    if until_ms - since_ms > PERIOD_MS_MAX:
        raise InvalidRequest("a period is at most five years", param="until")
    return since_ms, until_ms


def _balance_before(connection: Connection, account_id: str, at_ms: int) -> int:
    signed = case(
        (transfers.c.credit_account == account_id, transfers.c.amount_nano),
        else_=-transfers.c.amount_nano,
    )
    query = select(*wide_sum(signed)).where(
        (transfers.c.debit_account == account_id) | (transfers.c.credit_account == account_id),
        transfers.c.created_at_ms < at_ms,
    )
    return joined_sum(*connection.execute(query).one())


def _usage_line(day: int, model: str, count: int, sums: Sequence[Any], amount: int) -> UsageLine:
    tokens = TokenSums.of(sums)
    return UsageLine(
        day * DAY_MS,
        model,
        count,
        tokens.prompt_tokens,
        tokens.completion_tokens,
        amount,
        tokens.cached_tokens,
        tokens.cache_write_tokens,
        tokens.reasoning_tokens,
    )


def build_statement(engine: Engine, account_ref: str, since_ms: int, until_ms: int) -> Statement:
    since_ms, until_ms = check_period(since_ms, until_ms)
    account = find_account(engine, account_ref)
    in_period = (transfers.c.created_at_ms >= since_ms) & (transfers.c.created_at_ms < until_ms)
    touches = (transfers.c.debit_account == account.id) | (transfers.c.credit_account == account.id)
    with snapshot(engine) as connection:
        opening = _balance_before(connection, account.id, since_ms)
        closing = _balance_before(connection, account.id, until_ms)
        movements = [
            MovementLine(
                row.created_at_ms,
                row.kind,
                row.amount_nano if row.credit_account == account.id else -row.amount_nano,
                row.id,
                row.reference,
            )
            for row in connection.execute(
                select(transfers)
                .where(touches, in_period, transfers.c.kind != "usage")
                .order_by(transfers.c.created_at_ms, transfers.c.id)
            )
        ]
        day = transfers.c.created_at_ms // DAY_MS
        usage_query = (
            select(
                day.label("day"),
                usage_records.c.model,
                func.count(),
                *token_sums(),
                *wide_sum(transfers.c.amount_nano),
            )
            .select_from(
                transfers.join(usage_records, usage_records.c.request_id == transfers.c.reference)
            )
            .where(transfers.c.debit_account == account.id, transfers.c.kind == "usage", in_period)
            .group_by(day, usage_records.c.model)
            .order_by(day, usage_records.c.model)
        )
        usage = [
            _usage_line(int(d), model, int(n), tokens, -joined_sum(high, low))
            for d, model, n, *tokens, high, low in connection.execute(usage_query)
        ]
    return Statement(
        account.id,
        account.name,
        account.currency,
        since_ms,
        until_ms,
        opening,
        tuple(movements),
        tuple(usage),
        closing,
    )


@dataclass(frozen=True)
class RevenueRow:
    day_ms: int
    model: str
    account_id: str
    currency: str
    requests_count: int
    tokens: TokenSums
    revenue_nano: int  # what customers were charged, plus losses the operator took
    loss_nano: int
    cost_nano: int | None  # the operator's cost of serving (0 where none is known)


def revenue_report(
    engine: Engine, since_ms: int, until_ms: int, *, account_id: str | None = None
) -> list[RevenueRow]:
    """Revenue by day, model and account, from the usage records (which the audit ties to
    the ledger's usage transfers)."""
    since_ms, until_ms = check_period(since_ms, until_ms)
    day = usage_records.c.started_at_ms // DAY_MS
    query = (
        select(
            day.label("day"),
            usage_records.c.model,
            usage_records.c.account_id,
            func.count(),
            *token_sums(),
            *wide_sum(usage_records.c.charge_nano),
            *wide_sum(usage_records.c.loss_nano),
            *wide_sum(usage_records.c.cost_nano),
        )
        .where(usage_records.c.started_at_ms >= since_ms, usage_records.c.started_at_ms < until_ms)
        .group_by(day, usage_records.c.model, usage_records.c.account_id)
        .order_by(day, usage_records.c.model, usage_records.c.account_id)
    )
    if account_id is not None:
        query = query.where(usage_records.c.account_id == account_id)
    with snapshot(engine) as connection:
        currencies = dict(
            connection.execute(select(accounts_table.c.id, accounts_table.c.currency)).all()
        )
        return [
            RevenueRow(
                int(d) * DAY_MS,
                model,
                account,
                currencies.get(account, "USD"),
                int(n),
                TokenSums.of(sums[: len(TOKEN_COLUMNS)]),
                *_revenue_loss_cost(sums[len(TOKEN_COLUMNS) :]),
            )
            for d, model, account, n, *sums in connection.execute(query)
        ]


def _revenue_loss_cost(parts: Sequence[Any]) -> tuple[int, int, int]:
    """(charge + loss, loss, cost) from the three wide sums' six parts."""
    assert len(parts) == 6
    charge, loss, cost = (joined_sum(parts[i], parts[i + 1]) for i in range(0, 6, 2))
    return charge + loss, loss, cost


def revenue_json(row: RevenueRow) -> dict[str, Any]:
    return {
        "day": datetime.fromtimestamp(row.day_ms / 1000, tz=UTC).strftime("%Y-%m-%d"),
        "model": row.model,
        "account_id": row.account_id,
        "currency": row.currency,
        "requests": row.requests_count,
        **row.tokens.json(),
        "revenue": format_amount(row.revenue_nano),
        "revenue_nano": row.revenue_nano,
        "loss_nano": row.loss_nano,
        "cost_nano": row.cost_nano,
        "margin_nano": (
            None if row.cost_nano is None else row.revenue_nano - row.loss_nano - row.cost_nano
        ),
    }
