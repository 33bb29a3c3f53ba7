"""Statements of account, pure: the arithmetic a Statement checks, and its JSON, CSV and HTML
renderings, and the UTC month around an instant.

Expected amounts and dates are written out by hand here, never computed by the code under test.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tokenmill.retail.statements import (
    CSV_COLUMNS,
    MovementLine,
    Statement,
    UsageLine,
    month_of,
    statement_csv,
    statement_html,
    statement_json,
)

NANO = 1_000_000_000


def ms(text: str) -> int:
    """An ISO 8601 UTC instant -> Unix ms (exact, no float)."""
    at = datetime.fromisoformat(text).replace(tzinfo=UTC)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    delta = at - epoch
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


NOV_1 = ms("2026-11-01T00:00:00")
DEC_1 = ms("2026-12-01T00:00:00")


def statement(
    *,
    account_name: str = "acme",
    opening_nano: int = 10 * NANO,
    movements: tuple[MovementLine, ...] = (),
    usage: tuple[UsageLine, ...] = (),
    closing_nano: int | None = None,
) -> Statement:
    """A November 2026 statement; the closing balance is the right one unless given."""
    if closing_nano is None:
        lines = sum(m.amount_nano for m in movements) + sum(u.amount_nano for u in usage)
        closing_nano = opening_nano + lines
    return Statement(
        account_id="acct_0123",
        account_name=account_name,
        currency="USD",
        since_ms=NOV_1,
        until_ms=DEC_1,
        opening_nano=opening_nano,
        movements=movements,
        usage=usage,
        closing_nano=closing_nano,
    )


# A top-up on 3 November, a refund on 2 November (listed out of date order on purpose), and
# usage on 1 and 4 November: 3720 nano is -0.00000372 in currency units. On 4 November 30 of
# the 100 prompt tokens were read from a prompt cache and 10 written to it, and 15 of the 40
# completion tokens were reasoning.
TOPUP = MovementLine(ms("2026-11-03T09:30:00"), "topup", 5 * NANO, "tr_topup", "invoice 7")
REFUND = MovementLine(ms("2026-11-02T18:00:00"), "refund", 250_000_000, "tr_refund", None)
USAGE_NOV_4 = UsageLine(ms("2026-11-04T00:00:00"), "sim-chat", 2, 100, 40, -3720, 30, 10, 15)
USAGE_NOV_1 = UsageLine(ms("2026-11-01T00:00:00"), "sim-chat", 1, 1000, 500, -2_000_000)


def busy() -> Statement:
    return statement(movements=(TOPUP, REFUND), usage=(USAGE_NOV_4, USAGE_NOV_1))


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


class TestStatement:
    def test_a_closing_balance_of_opening_plus_every_line_is_accepted(self) -> None:
        """Opening 10 + 5 + 0.25 - 0.00000372 - 0.002 closes at 15.24799628."""
        found = busy()
        assert found.closing_nano == 15_247_996_280
        assert found.usage_nano == 2_003_720

    @pytest.mark.parametrize("off_by", [1, -1, 10 * NANO])
    def test_a_wrong_closing_balance_is_refused(self, off_by: int) -> None:
        """A closing balance that is not opening plus the lines fails the constructor."""
        with pytest.raises(AssertionError):
            statement(
                movements=(TOPUP, REFUND),
                usage=(USAGE_NOV_4, USAGE_NOV_1),
                closing_nano=15_247_996_280 + off_by,
            )

    def test_a_closing_balance_that_ignores_usage_is_refused(self) -> None:
        """Leaving out the usage lines (closing = opening + movements) is caught."""
        with pytest.raises(AssertionError):
            statement(movements=(TOPUP,), usage=(USAGE_NOV_1,), closing_nano=15 * NANO)

    def test_an_empty_period_is_refused(self) -> None:
        """since must come before until."""
        with pytest.raises(AssertionError):
            Statement("acct_0123", "acme", "USD", NOV_1, NOV_1, 0, (), (), 0)

    def test_a_statement_without_lines_closes_at_its_opening(self) -> None:
        found = statement(opening_nano=7)
        assert found.closing_nano == 7
        assert found.usage_nano == 0


class TestStatementCsv:
    def test_the_header_row_names_the_columns(self) -> None:
        rows = csv_rows(statement_csv(busy()))
        assert rows[0] == [
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
        ]
        assert tuple(rows[0]) == CSV_COLUMNS

    def test_opening_and_closing_rows_frame_the_lines(self) -> None:
        """The first row after the header opens the period, the last closes it."""
        rows = csv_rows(statement_csv(busy()))
        assert rows[1] == ["2026-11-01", "opening balance", *[""] * 7, "10.00"]
        assert rows[-1] == ["2026-11-30", "closing balance", *[""] * 7, "15.24799628"]
        assert len(rows) == 1 + 1 + 4 + 1

    def test_lines_come_in_date_order_with_signed_amounts_in_currency_units(self) -> None:
        """Movements and usage interleave by date; debits are negative, to the nano-unit."""
        rows = csv_rows(statement_csv(busy()))
        assert rows[2:-1] == [
            ["2026-11-01", "usage", "sim-chat", "1", "1000", "500", "0", "0", "0", "-0.002"],
            ["2026-11-02", "refund", *[""] * 7, "0.25"],
            ["2026-11-03", "topup", *[""] * 7, "5.00"],
            ["2026-11-04", "usage", "sim-chat", "2", "100", "40", "30", "10", "15", "-0.00000372"],
        ]

    def test_the_amounts_add_up_to_the_closing_row(self) -> None:
        """Opening plus every line's amount, read back from the CSV text, is the closing."""
        rows = csv_rows(statement_csv(busy()))
        amounts = [int(Decimal(row[-1]) * NANO) for row in rows[1:-1]]
        assert sum(amounts) == 15_247_996_280
        assert rows[-1][-1] == "15.24799628"

    def test_a_negative_opening_balance_keeps_its_sign(self) -> None:
        """A postpaid account in debt opens below zero."""
        rows = csv_rows(statement_csv(statement(opening_nano=-1_500_000_001)))
        assert rows[1][-1] == "-1.500000001"
        assert rows[-1][-1] == "-1.500000001"

    def test_a_comma_in_a_model_name_stays_in_its_column(self) -> None:
        """The CSV quotes what needs quoting: every row has exactly its ten columns."""
        odd = UsageLine(NOV_1, 'model, "quoted"', 1, 1, 1, -1)
        rows = csv_rows(statement_csv(statement(usage=(odd,))))
        assert all(len(row) == 10 for row in rows)
        assert rows[2][2] == 'model, "quoted"'


class TestStatementHtml:
    def test_an_account_name_with_markup_is_escaped(self) -> None:
        """'<script>' in a name never reaches the page raw."""
        page = statement_html(statement(account_name="<script>alert(1)</script>"))
        assert "<script>" not in page
        assert "alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page

    def test_a_model_name_and_a_reference_with_markup_are_escaped(self) -> None:
        """Every text that comes from outside is escaped, not only the account name."""
        usage = UsageLine(NOV_1, "<img src=x onerror=alert(1)>", 1, 1, 1, -1)
        movement = MovementLine(NOV_1 + 1, "topup", 1, "tr_x", "<b>bold</b>")
        page = statement_html(statement(movements=(movement,), usage=(usage,)))
        assert "<img" not in page
        assert "<b>" not in page
        assert "&lt;img src=x onerror=alert(1)&gt;" in page
        assert "&lt;b&gt;bold&lt;/b&gt;" in page

    def test_the_page_shows_opening_and_closing_balances(self) -> None:
        page = statement_html(busy())
        assert "opening balance" in page
        assert "closing balance" in page
        opening = page.index("opening balance")
        closing = page.index("closing balance")
        assert opening < page.index("<td class=n>10.00</td>") < closing
        assert closing < page.index("<td class=n>15.24799628</td>")

    def test_the_page_shows_every_line_in_date_order(self) -> None:
        page = statement_html(busy())
        amounts = ("10.00", "-0.002", "0.25", "5.00", "-0.00000372", "15.24799628")
        positions = [page.index(f"<td class=n>{amount}</td>") for amount in amounts]
        assert positions == sorted(positions)

    def test_a_line_shows_the_parts_of_its_tokens_apart_and_not_added_again(self) -> None:
        """140 tokens (100 prompt + 40 completion), of which 30 cache read, 10 cache write
        and 15 reasoning; a line with no parts shows only its total."""
        page = statement_html(busy())
        assert "2 req, 140 tok (of which 30 cache read, 10 cache write, 15 reasoning)" in page
        assert "1 req, 1,500 tok</td>" in page

    def test_the_page_loads_nothing_from_elsewhere(self) -> None:
        """A printable page: no scripts, no stylesheets or images from other origins."""
        page = statement_html(busy())
        for sign in ("<script", "<link", "<img", "http://", "https://", "src="):
            assert sign not in page


class TestStatementJson:
    def test_nano_amounts_are_exact_integers(self) -> None:
        """Amounts past a float's 53 bits survive exactly, as ints and as text."""
        opening = 123_456_789_012_345_678
        big = MovementLine(NOV_1 + 5, "topup", 1, "tr_big", None)
        found = statement_json(
            statement(opening_nano=opening, movements=(big,), usage=(USAGE_NOV_4,))
        )
        assert found["opening_balance_nano"] == opening
        assert found["opening_balance"] == "123456789.012345678"
        assert found["closing_balance_nano"] == opening + 1 - 3720
        assert found["closing_balance"] == "123456789.012341959"
        assert found["movements"][0]["amount_nano"] == 1
        assert found["movements"][0]["amount"] == "0.000000001"
        assert found["usage"][0]["amount_nano"] == -3720
        assert found["usage"][0]["amount"] == "-0.00000372"
        assert found["usage_total_nano"] == -3720
        assert found["usage_total"] == "-0.00000372"

    def test_the_period_and_lines_are_rendered_as_utc_text(self) -> None:
        found = statement_json(busy())
        assert found["since"] == "2026-11-01T00:00:00Z"
        assert found["until"] == "2026-12-01T00:00:00Z"
        assert found["account_id"] == "acct_0123"
        assert found["currency"] == "USD"
        assert [m["transfer_id"] for m in found["movements"]] == ["tr_topup", "tr_refund"]
        assert found["movements"][0]["at"] == "2026-11-03T09:30:00Z"
        assert found["movements"][0]["reference"] == "invoice 7"
        assert [u["day"] for u in found["usage"]] == ["2026-11-04", "2026-11-01"]
        assert found["usage"][0] == {
            "day": "2026-11-04",
            "model": "sim-chat",
            "requests": 2,
            "prompt_tokens": 100,
            "completion_tokens": 40,
            "cached_tokens": 30,
            "cache_write_tokens": 10,
            "reasoning_tokens": 15,
            "amount": "-0.00000372",
            "amount_nano": -3720,
        }
        assert found["usage_total_nano"] == -2_003_720


class TestMonthOf:
    def test_a_mid_month_instant_is_in_its_month(self) -> None:
        assert month_of(ms("2026-11-15T12:34:56.789")) == (NOV_1, DEC_1)

    def test_the_first_millisecond_of_a_month_starts_that_month(self) -> None:
        assert month_of(NOV_1) == (NOV_1, DEC_1)

    def test_the_last_millisecond_of_a_month_is_still_in_it(self) -> None:
        assert month_of(NOV_1 - 1) == (ms("2026-10-01T00:00:00"), NOV_1)

    def test_december_runs_to_january_of_the_next_year(self) -> None:
        dec_1 = ms("2026-12-01T00:00:00")
        jan_1 = ms("2027-01-01T00:00:00")
        assert month_of(ms("2026-12-31T23:59:59.999")) == (dec_1, jan_1)
        assert month_of(dec_1) == (dec_1, jan_1)
        assert month_of(jan_1) == (jan_1, ms("2027-02-01T00:00:00"))

    def test_february_of_a_leap_year_has_29_days(self) -> None:
        assert month_of(ms("2028-02-29T23:00:00")) == (
            ms("2028-02-01T00:00:00"),
            ms("2028-03-01T00:00:00"),
        )
