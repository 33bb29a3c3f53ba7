"""Invoices, pure: periods, lines, totals, renderings.

An invoice of a postpaid account for a period (a UTC calendar month, ``YYYY-MM``) lists what
the account was charged in it: usage by model (the sums of the per-request charges, so the
total equals the ledger's debits to the nano-unit) and plan fees. Once issued it never
changes; a correction is a credit note against it.

A usage line's ``tokens`` are its prompt and completion tokens; its cache reads
(``cached_tokens``), cache writes and reasoning tokens are parts of them, shown apart. An
invoice issued before those parts were kept reads them back as 0.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tokenmill.errors import InvalidRequest
from tokenmill.instants import ms_of
from tokenmill.money import format_amount
from tokenmill.retail.statements import token_parts_text

PERIOD = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")  # ASCII digits, matched in full


def period_bounds(period: str) -> tuple[int, int]:
    """``"2026-11"`` -> [first ms of November, first ms of December), UTC."""
    match = PERIOD.fullmatch(period) if isinstance(period, str) else None
    if not match:
        raise InvalidRequest("period must be a month such as 2026-11", param="period")
    year, month = int(match.group(1)), int(match.group(2))
    start = datetime(year, month, 1, tzinfo=UTC)
    end = (
        datetime(year + 1, 1, 1, tzinfo=UTC)
        if month == 12
        else datetime(year, month + 1, 1, tzinfo=UTC)
    )
    return ms_of(start), ms_of(end)


def period_of(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, tz=UTC).strftime("%Y-%m")


def previous_period(at_ms: int) -> str:
    start, _ = period_bounds(period_of(at_ms))
    return period_of(start - 1)


@dataclass(frozen=True)
class InvoiceLine:
    kind: str  # usage | plan_fee
    description: str
    model: str | None
    requests_count: int
    tokens: int  # prompt and completion tokens
    amount_nano: int
    cached_tokens: int = 0  # of the prompt tokens: read from a prompt cache
    cache_write_tokens: int = 0  # of the prompt tokens: written to a prompt cache
    reasoning_tokens: int = 0  # of the completion tokens

    def __post_init__(self) -> None:
        assert self.kind in ("usage", "plan_fee")
        assert self.amount_nano >= 0
        assert min(self.cached_tokens, self.cache_write_tokens, self.reasoning_tokens) >= 0
        assert self.cached_tokens + self.cache_write_tokens + self.reasoning_tokens <= self.tokens


@dataclass(frozen=True)
class Invoice:
    number: str
    account_id: str
    currency: str
    period: str
    since_ms: int
    until_ms: int
    lines: tuple[InvoiceLine, ...]
    total_nano: int
    issued_at_ms: int

    @property
    def lines_nano(self) -> int:
        """The sum of the lines: the total, unless the stored invoice was tampered with (the
        audit checks; reading one must not fail)."""
        return sum(line.amount_nano for line in self.lines)


def line_json(line: InvoiceLine) -> dict[str, Any]:
    return {
        "kind": line.kind,
        "description": line.description,
        "model": line.model,
        "requests": line.requests_count,
        "tokens": line.tokens,
        "cached_tokens": line.cached_tokens,
        "cache_write_tokens": line.cache_write_tokens,
        "reasoning_tokens": line.reasoning_tokens,
        "amount": format_amount(line.amount_nano),
        "amount_nano": line.amount_nano,
    }


def line_from_json(data: dict[str, Any]) -> InvoiceLine:
    return InvoiceLine(
        data["kind"],
        data["description"],
        data["model"],
        data["requests"],
        data["tokens"],
        data["amount_nano"],
        data.get("cached_tokens", 0),
        data.get("cache_write_tokens", 0),
        data.get("reasoning_tokens", 0),
    )


def _parts_text(line: InvoiceLine) -> str:
    return token_parts_text(line.cached_tokens, line.cache_write_tokens, line.reasoning_tokens)


def invoice_json(invoice: Invoice, credited_nano: int = 0) -> dict[str, Any]:
    return {
        "number": invoice.number,
        "account_id": invoice.account_id,
        "currency": invoice.currency,
        "period": invoice.period,
        "lines": [line_json(line) for line in invoice.lines],
        "total": format_amount(invoice.total_nano),
        "total_nano": invoice.total_nano,
        "credited_nano": credited_nano,
        "due_nano": invoice.total_nano - credited_nano,
        "issued_at": datetime.fromtimestamp(invoice.issued_at_ms / 1000, tz=UTC)
        .isoformat()
        .replace("+00:00", "Z"),
    }


def invoice_html(invoice: Invoice, account_name: str, credited_nano: int = 0) -> str:
    e = html.escape
    cur = e(invoice.currency)
    rows = "\n".join(
        f"<tr><td>{e(line.description)}</td><td class=n>{line.requests_count:,}</td>"
        f"<td class=n>{line.tokens:,}{_parts_text(line)}</td>"
        f"<td class=n>{format_amount(line.amount_nano)}</td></tr>"
        for line in invoice.lines
    )
    credit = (
        f"<tr><td colspan=3>credit notes</td><td class=n>-{format_amount(credited_nano)}</td></tr>"
        if credited_nano
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Invoice {e(invoice.number)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; }}
.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
tfoot td {{ font-weight: bold; }}
</style></head><body>
<h1>Invoice {e(invoice.number)}</h1>
<p>{e(account_name)} ({e(invoice.account_id)}), period {e(invoice.period)} (UTC),
amounts in {cur}</p>
<table>
<thead><tr><th>line</th><th class=n>requests</th><th class=n>tokens</th>
<th class=n>amount {cur}</th></tr></thead>
<tbody>
{rows}
{credit}
</tbody>
<tfoot><tr><td colspan=3>total due</td>
<td class=n>{format_amount(invoice.total_nano - credited_nano)}</td></tr></tfoot>
</table>
</body></html>
"""
