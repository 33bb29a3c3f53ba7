"""Gross margin: revenue, cost and margin of usage, grouped by day, model, deployment and
account (any of them), from the usage records.

Revenue is what the usage rated at (``charge_nano + loss_nano``, as in ``report revenue``);
the margin is what the customer paid (``charge_nano``) less the cost of serving
(``cost_nano``: a vendor's price, or the modeled or measured cost of own GPUs). A loss (a
charge above its hold) is therefore already out of the margin. Requests whose deployment
has no known cost count as costing nothing and are counted in ``uncosted_requests``.
Plan fees are not usage and are not here; the revenue report's ledger holds them.

Each row sums the prompt and completion tokens, and shows their parts apart: cache reads
(``cached_tokens``) and cache writes of the prompt, reasoning tokens of the completion.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import ColumnElement, Engine, case, func, select

from tokenmill.billing.statements import check_period, snapshot
from tokenmill.errors import InvalidRequest
from tokenmill.money import format_amount
from tokenmill.retail.statements import DAY_MS
from tokenmill.store.tables import accounts as accounts_table
from tokenmill.store.tables import usage_records
from tokenmill.store.usage import TOKEN_COLUMNS, TokenSums, token_sums
from tokenmill.store.wide_sums import joined_sum, wide_sum

GROUPS = ("day", "model", "deployment", "account")


@dataclass(frozen=True)
class MarginRow:
    group: dict[str, str]  # the grouping fields asked for, e.g. {"model": "llama"}
    currency: str
    requests_count: int
    uncosted_requests_count: int
    tokens: TokenSums
    revenue_nano: int
    loss_nano: int
    cost_nano: int

    @property
    def margin_nano(self) -> int:
        return self.revenue_nano - self.loss_nano - self.cost_nano


def check_groups(by: Sequence[str]) -> tuple[str, ...]:
    if not by or len(set(by)) != len(by) or any(name not in GROUPS for name in by):
        raise InvalidRequest(f"group by one or more of {', '.join(GROUPS)}, each once", param="by")
    return tuple(by)


def _columns(by: Sequence[str]) -> list[ColumnElement[Any]]:
    found: dict[str, ColumnElement[Any]] = {
        "day": (usage_records.c.started_at_ms // DAY_MS).label("day"),
        "model": usage_records.c.model,
        "deployment": usage_records.c.deployment,
        "account": usage_records.c.account_id,
    }
    return [found[name] for name in by]


def margin_report(
    engine: Engine,
    since_ms: int,
    until_ms: int,
    by: Sequence[str] = GROUPS,
    *,
    account_id: str | None = None,
) -> list[MarginRow]:
    since_ms, until_ms = check_period(since_ms, until_ms)
    by = check_groups(by)
    keys = _columns(by)
    currency = func.coalesce(accounts_table.c.currency, "USD")
    query = (
        select(
            *keys,
            currency,
            func.count(),
            func.sum(case((usage_records.c.cost_basis.is_(None), 1), else_=0)),
            *token_sums(),
            *wide_sum(usage_records.c.charge_nano),
            *wide_sum(usage_records.c.loss_nano),
            *wide_sum(usage_records.c.cost_nano),
        )
        .select_from(
            usage_records.outerjoin(
                accounts_table, accounts_table.c.id == usage_records.c.account_id
            )
        )
        .where(usage_records.c.started_at_ms >= since_ms, usage_records.c.started_at_ms < until_ms)
        .group_by(*keys, currency)
        .order_by(*keys, currency)
    )
    if account_id is not None:
        query = query.where(usage_records.c.account_id == account_id)
    with snapshot(engine) as connection:
        rows = connection.execute(query).all()
    return [_row(by, tuple(row)) for row in rows]


def _row(by: Sequence[str], row: tuple[Any, ...]) -> MarginRow:
    values = row[len(by) :]
    group = {}
    for name, value in zip(by, row[: len(by)], strict=True):
        group[name] = _day(int(value)) if name == "day" else str(value)
    currency, count, uncosted, *sums = values
    money = sums[len(TOKEN_COLUMNS) :]
    assert len(money) == 6
    charge, loss, cost = (joined_sum(money[i], money[i + 1]) for i in range(0, 6, 2))
    return MarginRow(
        group,
        str(currency),
        int(count),
        int(uncosted),
        TokenSums.of(sums[: len(TOKEN_COLUMNS)]),
        charge + loss,
        loss,
        cost,
    )


def _day(day: int) -> str:
    return datetime.fromtimestamp(day * DAY_MS / 1000, tz=UTC).strftime("%Y-%m-%d")


def margin_json(row: MarginRow) -> dict[str, Any]:
    revenue = row.revenue_nano
    return {
        **row.group,
        "currency": row.currency,
        "requests": row.requests_count,
        "uncosted_requests": row.uncosted_requests_count,
        **row.tokens.json(),
        "revenue": format_amount(revenue),
        "cost": format_amount(row.cost_nano),
        "margin": format_amount(row.margin_nano),
        "margin_ratio": None if not revenue else str(_ratio(row.margin_nano, revenue)),
        "revenue_nano": revenue,
        "loss_nano": row.loss_nano,
        "cost_nano": row.cost_nano,
        "margin_nano": row.margin_nano,
    }


def _ratio(part: int, whole: int) -> Decimal:
    return (Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)


def margin_csv(rows: Sequence[MarginRow], by: Sequence[str]) -> str:
    out = io.StringIO()
    fields = [*by, "currency", "requests", "uncosted_requests", *TOKEN_COLUMNS]
    fields += ["revenue", "cost", "margin", "margin_ratio"]
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(margin_json(row))
    return out.getvalue()
