"""Statements of account, pure: the arithmetic and the renderings (JSON, CSV, HTML).

A statement covers ``[since, until)``: the opening balance, every movement that is not usage
(top-ups, grants, refunds, adjustments, plan fees) one by one, usage summed by day and model,
and the closing balance, which must equal the opening balance plus every line (asserted).

A usage line's tokens are its prompt and completion tokens; the prompt's cache reads
(``cached_tokens``) and cache writes, and the completion's reasoning tokens, are parts of
them, shown apart and never added to them again.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tokenmill.instants import ms_of
from tokenmill.money import format_amount

DAY_MS = 86_400_000


@dataclass(frozen=True)
class MovementLine:
    at_ms: int
    kind: str
    amount_nano: int  # signed: + credits the account, - debits it
    transfer_id: str
    reference: str | None


@dataclass(frozen=True)
class UsageLine:
    day_ms: int  # the UTC day's start
    model: str
    requests_count: int
    prompt_tokens: int
    completion_tokens: int
    amount_nano: int  # signed (usage debits the account: negative)
    cached_tokens: int = 0  # of prompt_tokens: read from a prompt cache
    cache_write_tokens: int = 0  # of prompt_tokens: written to a prompt cache
    reasoning_tokens: int = 0  # of completion_tokens

    def __post_init__(self) -> None:
        assert 0 <= self.cached_tokens + self.cache_write_tokens <= self.prompt_tokens
        assert min(self.cached_tokens, self.cache_write_tokens) >= 0
        assert 0 <= self.reasoning_tokens <= self.completion_tokens


@dataclass(frozen=True)
class Statement:
    account_id: str
    account_name: str
    currency: str
    since_ms: int
    until_ms: int
    opening_nano: int
    movements: tuple[MovementLine, ...]
    usage: tuple[UsageLine, ...]
    closing_nano: int

    def __post_init__(self) -> None:
        assert self.since_ms < self.until_ms
        lines = sum(m.amount_nano for m in self.movements) + sum(u.amount_nano for u in self.usage)
        assert self.closing_nano == self.opening_nano + lines

    @property
    def usage_nano(self) -> int:
        return -sum(u.amount_nano for u in self.usage)


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def _instant(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def statement_json(s: Statement) -> dict[str, Any]:
    return {
        "account_id": s.account_id,
        "account_name": s.account_name,
        "currency": s.currency,
        "since": _instant(s.since_ms),
        "until": _instant(s.until_ms),
        "opening_balance": format_amount(s.opening_nano),
        "opening_balance_nano": s.opening_nano,
        "movements": [
            {
                "at": _instant(m.at_ms),
                "kind": m.kind,
                "amount": format_amount(m.amount_nano),
                "amount_nano": m.amount_nano,
                "transfer_id": m.transfer_id,
                "reference": m.reference,
            }
            for m in s.movements
        ],
        "usage": [
            {
                "day": _day(u.day_ms),
                "model": u.model,
                "requests": u.requests_count,
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "cached_tokens": u.cached_tokens,
                "cache_write_tokens": u.cache_write_tokens,
                "reasoning_tokens": u.reasoning_tokens,
                "amount": format_amount(u.amount_nano),
                "amount_nano": u.amount_nano,
            }
            for u in s.usage
        ],
        "usage_total": format_amount(-s.usage_nano),
        "usage_total_nano": -s.usage_nano,
        "closing_balance": format_amount(s.closing_nano),
        "closing_balance_nano": s.closing_nano,
    }


CSV_COLUMNS = (
    "date",
    "line",
    "model",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "amount",
)
_NO_VOLUME = [""] * (len(CSV_COLUMNS) - 3)  # a movement's model, requests and tokens


def statement_csv(s: Statement) -> str:
    """One row per line; amounts in currency units, signed; opening and closing rows."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerow(
        [_day(s.since_ms), "opening balance", *_NO_VOLUME, format_amount(s.opening_nano)]
    )
    rows: list[tuple[int, list[Any]]] = [
        (m.at_ms, [_day(m.at_ms), m.kind, *_NO_VOLUME, format_amount(m.amount_nano)])
        for m in s.movements
    ]
    rows += [
        (
            u.day_ms,
            [
                _day(u.day_ms),
                "usage",
                u.model,
                u.requests_count,
                u.prompt_tokens,
                u.completion_tokens,
                u.cached_tokens,
                u.cache_write_tokens,
                u.reasoning_tokens,
                format_amount(u.amount_nano),
            ],
        )
        for u in s.usage
    ]
    for _, row in sorted(rows, key=lambda r: r[0]):
        writer.writerow(row)
    closing_day = _day(s.until_ms - 1)
    writer.writerow([closing_day, "closing balance", *_NO_VOLUME, format_amount(s.closing_nano)])
    return out.getvalue()


def token_parts_text(cached_tokens: int, cache_write_tokens: int, reasoning_tokens: int) -> str:
    """The parts of a line's tokens for a page, after its total: " (of which 40 cache read,
    10 cache write)"; parts of zero are left out, and nothing at all when every part is."""
    parts = [
        f"{tokens:,} {name}"
        for tokens, name in (
            (cached_tokens, "cache read"),
            (cache_write_tokens, "cache write"),
            (reasoning_tokens, "reasoning"),
        )
        if tokens
    ]
    return f" (of which {', '.join(parts)})" if parts else ""


def statement_html(s: Statement) -> str:
    """A printable page: one table, amounts right-aligned, nothing loaded from elsewhere."""
    e = html.escape
    cur = e(s.currency)
    lines = [
        (
            m.at_ms,
            f"<tr><td>{_day(m.at_ms)}</td><td>{e(m.kind)}</td><td>{e(m.reference or '')}</td>"
            f"<td></td><td class=n>{format_amount(m.amount_nano)}</td></tr>",
        )
        for m in s.movements
    ]
    lines += [
        (
            u.day_ms,
            f"<tr><td>{_day(u.day_ms)}</td><td>usage</td><td>{e(u.model)}</td>"
            f"<td class=n>{u.requests_count:,} req,"
            f" {u.prompt_tokens + u.completion_tokens:,} tok"
            f"{token_parts_text(u.cached_tokens, u.cache_write_tokens, u.reasoning_tokens)}</td>"
            f"<td class=n>{format_amount(u.amount_nano)}</td></tr>",
        )
        for u in s.usage
    ]
    rows = [row for _, row in sorted(lines, key=lambda line: line[0])]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Statement {e(s.account_name)} {_day(s.since_ms)} to {_day(s.until_ms - 1)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; }}
.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
tfoot td {{ font-weight: bold; }}
</style></head><body>
<h1>Statement of account</h1>
<p>{e(s.account_name)} ({e(s.account_id)}), {_day(s.since_ms)} to {_day(s.until_ms - 1)}
(UTC), amounts in {cur}</p>
<table>
<thead><tr><th>date</th><th>line</th><th>detail</th><th class=n>volume</th>
<th class=n>amount {cur}</th></tr></thead>
<tbody>
<tr><td>{_day(s.since_ms)}</td><td>opening balance</td><td></td><td></td>
<td class=n>{format_amount(s.opening_nano)}</td></tr>
{chr(10).join(rows)}
</tbody>
<tfoot><tr><td>{_day(s.until_ms - 1)}</td><td>closing balance</td><td></td><td></td>
<td class=n>{format_amount(s.closing_nano)}</td></tr></tfoot>
</table>
</body></html>
"""


def month_of(at_ms: int) -> tuple[int, int]:
    """The UTC calendar month around ``at_ms``: [first instant, first instant of the next)."""
    at = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
    start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return ms_of(start), ms_of(end)
