"""Invoices, pure: a period's exact millisecond bounds, the period of an instant at a month's
edges, an invoice whose total is the sum of its lines, and its JSON and HTML renderings.

Expected instants are written out as integers here, never computed by the code under test.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tokenmill.errors import InvalidRequest
from tokenmill.retail.invoices import (
    Invoice,
    InvoiceLine,
    invoice_html,
    invoice_json,
    line_from_json,
    line_json,
    period_bounds,
    period_of,
    previous_period,
)

# Unix milliseconds of the first instant of each month (UTC), written out by hand.
NOV_2026 = 1_793_491_200_000  # 2026-11-01T00:00:00Z
DEC_2026 = 1_796_083_200_000  # 2026-12-01T00:00:00Z
JAN_2027 = 1_798_761_600_000  # 2027-01-01T00:00:00Z
FEB_2024 = 1_706_745_600_000  # 2024-02-01T00:00:00Z
MAR_2024 = 1_709_251_200_000  # 2024-03-01T00:00:00Z (2024 is a leap year: 29 days)
JAN_1970 = 0
DAY_MS = 86_400_000
# period_bounds matches with "$", which also matches before a final newline: "2026-11\n"
# gives November's bounds under another period text, so the fee ids and the invoice's
# (account, period) key differ from "2026-11" and closing it again books the fees twice
# (tests/integration/test_periods.py).


def line(amount_nano: int, kind: str = "usage", model: str | None = "m") -> InvoiceLine:
    return InvoiceLine(kind, f"{model}: tokens", model, 2, 30, amount_nano)


def invoice(**changes: Any) -> Invoice:
    lines = (line(1_500), line(20_000_000_000, "plan_fee", None))
    base = Invoice(
        "INV-000007",
        "acct_x",
        "USD",
        "2026-11",
        NOV_2026,
        DEC_2026,
        lines,
        20_000_001_500,
        DEC_2026 + 600_000,
    )
    return replace(base, **changes) if changes else base


class TestPeriodBounds:
    def test_a_month_is_its_first_millisecond_up_to_the_next_months_first(self) -> None:
        """ "2026-11" is [2026-11-01T00:00Z, 2026-12-01T00:00Z) in Unix milliseconds."""
        assert period_bounds("2026-11") == (NOV_2026, DEC_2026)
        assert DEC_2026 - NOV_2026 == 30 * DAY_MS

    def test_december_ends_at_the_first_of_january_of_the_next_year(self) -> None:
        """December's end is the next year's first millisecond, not month 13."""
        assert period_bounds("2026-12") == (DEC_2026, JAN_2027)

    def test_february_of_a_leap_year_has_29_days(self) -> None:
        """February 2024 spans exactly 29 days."""
        assert period_bounds("2024-02") == (FEB_2024, MAR_2024)
        assert MAR_2024 - FEB_2024 == 29 * DAY_MS

    def test_the_first_month_of_the_epoch_starts_at_zero(self) -> None:
        """January 1970 starts at 0 ms and lasts 31 days."""
        assert period_bounds("1970-01") == (JAN_1970, 31 * DAY_MS)

    @pytest.mark.parametrize(
        "bad",
        [
            "2026-13",
            "2026-00",
            "26-11",
            "",
            "2026-1",
            "2026/11",
            "2026-11-01",
            " 2026-11",
            "2026-11\x00",
            pytest.param("2026-11\n"),
            "\uff12\uff10\uff12\uff16-11",  # fullwidth digits (\\d would take them)
        ],
    )
    def test_text_that_is_not_a_month_is_refused_naming_the_period(self, bad: str) -> None:
        """Anything but YYYY-MM (01 to 12) is an InvalidRequest whose param is 'period'."""
        with pytest.raises(InvalidRequest) as caught:
            period_bounds(bad)
        assert caught.value.param == "period"
        assert caught.value.http_status == 400

    @pytest.mark.parametrize("bad", [None, 202611, b"2026-11", ["2026-11"]])
    def test_a_value_that_is_not_text_is_refused_naming_the_period(self, bad: Any) -> None:
        """A number, bytes, None or a list is refused the same way, never a TypeError."""
        with pytest.raises(InvalidRequest) as caught:
            period_bounds(bad)
        assert caught.value.param == "period"


class TestPeriodOf:
    def test_the_first_and_last_millisecond_of_a_month_belong_to_it(self) -> None:
        """The month's first ms and the ms before the next month's first are both in it."""
        assert period_of(NOV_2026) == "2026-11"
        assert period_of(DEC_2026 - 1) == "2026-11"
        assert period_of(DEC_2026) == "2026-12"

    def test_the_last_millisecond_of_a_year_is_in_december(self) -> None:
        """2026-12-31T23:59:59.999Z is December; one ms later is January of the next year."""
        assert period_of(JAN_2027 - 1) == "2026-12"
        assert period_of(JAN_2027) == "2027-01"

    def test_every_period_holds_its_own_bounds(self) -> None:
        """period_of(first ms) and period_of(last ms) give back the period, for a whole year."""
        for month in range(1, 13):
            period = f"2027-{month:02d}"
            since, until = period_bounds(period)
            assert period_of(since) == period
            assert period_of(until - 1) == period
            assert period_of(until) != period


class TestPreviousPeriod:
    def test_the_previous_period_of_a_months_first_millisecond_is_the_month_before(self) -> None:
        """At 2026-12-01T00:00Z the previous period is November."""
        assert previous_period(DEC_2026) == "2026-11"

    def test_the_previous_period_of_a_months_last_millisecond_is_still_the_month_before(
        self,
    ) -> None:
        """At 2026-11-30T23:59:59.999Z the previous period is October, not November."""
        assert previous_period(DEC_2026 - 1) == "2026-10"

    def test_the_previous_period_in_january_is_december_of_the_year_before(self) -> None:
        """In January 2027 (first and last ms) the previous period is 2026-12."""
        assert previous_period(JAN_2027) == "2026-12"
        assert previous_period(JAN_2027 + 31 * DAY_MS - 1) == "2026-12"


class TestInvoice:
    def test_an_invoice_whose_total_is_the_sum_of_its_lines_is_made(self) -> None:
        """A consistent invoice is made and keeps its lines in order."""
        made = invoice()
        assert made.total_nano == 20_000_001_500
        assert [x.kind for x in made.lines] == ["usage", "plan_fee"]

    @pytest.mark.parametrize("off_by", [1, -1, 20_000_000_000])
    def test_a_total_other_than_the_sum_of_the_lines_shows_in_lines_nano(self, off_by: int) -> None:
        """A stored invoice whose total was tampered with still reads (the audit must see
        it, not crash), and its lines' sum tells the difference to the nano-unit."""
        tampered = invoice(total_nano=20_000_001_500 + off_by)
        assert tampered.lines_nano == 20_000_001_500
        assert tampered.lines_nano != tampered.total_nano

    def test_an_invoice_with_no_lines_sums_to_zero(self) -> None:
        """No lines: the lines sum to 0."""
        assert invoice(lines=(), total_nano=0).lines_nano == 0

    def test_a_line_with_a_negative_amount_or_an_unknown_kind_is_refused(self) -> None:
        """Lines are usage or plan fees, never negative: corrections are credit notes."""
        with pytest.raises(AssertionError):
            line(-1)
        with pytest.raises(AssertionError):
            line(5, kind="refund")

    def test_a_line_survives_its_json(self) -> None:
        """line_from_json(line_json(l)) == l (how the store keeps the lines)."""
        original = InvoiceLine("usage", "sim-chat: 1,234 tokens", "sim-chat", 3, 1234, 987_654_321)
        assert line_from_json(line_json(original)) == original

    def test_a_line_survives_its_json_with_the_parts_of_its_tokens(self) -> None:
        """Cache reads, cache writes and reasoning tokens are kept with the line."""
        original = InvoiceLine("usage", "m: 1,234 tokens", "m", 3, 1234, 5, 400, 100, 80)
        assert line_json(original)["cache_write_tokens"] == 100
        assert line_from_json(line_json(original)) == original

    def test_a_line_stored_before_the_parts_were_kept_reads_them_as_zero(self) -> None:
        """An invoice issued before cache and reasoning tokens were kept still reads back."""
        stored = line_json(InvoiceLine("usage", "m: 30 tokens", "m", 2, 30, 7))
        for name in ("cached_tokens", "cache_write_tokens", "reasoning_tokens"):
            del stored[name]
        assert line_from_json(stored) == InvoiceLine("usage", "m: 30 tokens", "m", 2, 30, 7)


class TestRenderings:
    def test_the_json_due_is_the_total_less_what_was_credited(self) -> None:
        """due_nano = total_nano - credited_nano; amounts are exact."""
        body = invoice_json(invoice(), credited_nano=4_000_000_000)
        assert body["total_nano"] == 20_000_001_500
        assert body["total"] == "20.0000015"
        assert body["credited_nano"] == 4_000_000_000
        assert body["due_nano"] == 16_000_001_500
        assert body["number"] == "INV-000007"
        assert body["period"] == "2026-11"
        assert [x["amount_nano"] for x in body["lines"]] == [1_500, 20_000_000_000]

    def test_the_json_of_an_uncredited_invoice_is_due_in_full(self) -> None:
        """Without credit notes, due equals total."""
        body = invoice_json(invoice())
        assert body["credited_nano"] == 0
        assert body["due_nano"] == body["total_nano"]

    def test_the_json_issue_instant_is_utc_with_a_z(self) -> None:
        """issued_at is ISO 8601 in UTC, ending in Z."""
        body = invoice_json(invoice())
        assert body["issued_at"] == "2026-12-01T00:10:00Z"

    def test_the_html_shows_the_parts_of_a_lines_tokens_apart(self) -> None:
        """1,234 tokens (of which 400 cache read, 100 cache write, 80 reasoning): the parts
        are within the total, not added to it; a part of zero is not shown."""
        parts = InvoiceLine("usage", "m: 1,234 tokens", "m", 3, 1234, 1_500, 400, 100, 80)
        page = invoice_html(invoice(lines=(parts,), total_nano=1_500), account_name="a")
        assert "1,234 (of which 400 cache read, 100 cache write, 80 reasoning)" in page
        reads_only = replace(parts, cache_write_tokens=0, reasoning_tokens=0)
        page = invoice_html(invoice(lines=(reads_only,), total_nano=1_500), account_name="a")
        assert "1,234 (of which 400 cache read)</td>" in page

    def test_the_html_escapes_the_account_name_and_the_line_descriptions(self) -> None:
        """Markup in a name or a description is shown as text, never run."""
        hostile = '<script>alert("x")</script>'
        page = invoice_html(
            invoice(lines=(InvoiceLine("usage", hostile, hostile, 1, 1, 7),), total_nano=7),
            account_name="<b>Evil & Co</b>",
        )
        assert "<script>" not in page
        assert "<b>Evil" not in page
        assert "&lt;script&gt;" in page
        assert "&lt;b&gt;Evil &amp; Co&lt;/b&gt;" in page

    def test_the_html_total_due_subtracts_credit_notes(self) -> None:
        """A credited invoice shows the credit line and the total less it."""
        page = invoice_html(invoice(), "Acme", credited_nano=1_500)
        assert "credit notes" in page
        assert "-0.0000015" in page
        assert "20.00" in page
        uncredited = invoice_html(invoice(), "Acme")
        assert "credit notes" not in uncredited
