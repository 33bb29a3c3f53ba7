"""Money amounts (tokenmill.money): exact text <-> nano-unit ints, and the one rounding."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import amounts_nano
from tokenmill.errors import InvalidRequest
from tokenmill.money import (
    AMOUNT_NANO_MAX,
    div_ceil,
    format_amount,
    parse_amount,
    parse_positive_amount,
)


def refusal(text: object, **options: object) -> InvalidRequest:
    """The InvalidRequest that parse_amount raises for ``text`` (param "credit")."""
    with pytest.raises(InvalidRequest) as caught:
        parse_amount(text, param="credit", **options)  # type: ignore[arg-type]
    return caught.value


class TestParseAmount:
    @pytest.mark.parametrize(
        ("text", "nano"),
        [
            ("0.57", 570_000_000),
            ("12.50", 12_500_000_000),
            ("12.5", 12_500_000_000),
            ("0", 0),
            ("0.000000001", 1),
            ("0.123456789", 123_456_789),
            ("  3.25 ", 3_250_000_000),
            ("1000000000", AMOUNT_NANO_MAX),
            (7, 7_000_000_000),
        ],
    )
    def test_decimal_text_becomes_exactly_that_many_nano_units(
        self, text: str | int, nano: int
    ) -> None:
        """Each decimal digit is kept: no float ever rounds "0.57" to 0.56999..."""
        parsed = parse_amount(text)
        assert parsed == nano
        assert type(parsed) is int

    def test_sums_of_parsed_amounts_are_exact(self) -> None:
        """Ten times 0.10 is exactly 1.00, which floats do not give."""
        assert sum(parse_amount("0.10") for _ in range(10)) == parse_amount("1.00")

    @pytest.mark.parametrize(
        "text",
        ["1e3", "1E3", "2.5e-1", "nan", "NaN", "-nan", "inf", "-Infinity", "sNaN", "0x10"],
    )
    def test_exponents_and_non_finite_numbers_are_refused(self, text: str) -> None:
        """Scientific notation, NaN and infinities are not plain decimal numbers."""
        error = refusal(text, allow_negative=True)
        assert error.param == "credit"
        assert error.http_status == 400

    @pytest.mark.parametrize("text", ["", "   ", "abc", "1.2.3", "12,50", "$5", "1 000"])
    def test_text_that_is_no_number_is_refused(self, text: str) -> None:
        """Empty text, words and thousands separators are refused, naming the parameter."""
        assert refusal(text).param == "credit"

    @pytest.mark.parametrize("text", ["0.0000000001", "1.1234567891", "0.5000000005"])
    def test_more_than_nine_decimals_are_refused(self, text: str) -> None:
        """A digit smaller than a nano-unit cannot be kept, so it is refused, not rounded."""
        error = refusal(text)
        assert error.param == "credit"
        assert "decimals" in error.message

    @pytest.mark.parametrize(
        "text",
        [
            "1.0000000000000000000000000001",
            "999999999.99999999999999999999",
            "1." + "0" * 37 + "1",  # 40 characters, the longest text read
        ],
    )
    def test_a_tenth_decimal_is_refused_even_in_a_long_number(self, text: str) -> None:
        """Past 28 significant digits too, a digit below a nano-unit is refused, not rounded."""
        assert "decimals" in refusal(text).message

    def test_underscores_between_digits_are_refused(self) -> None:
        """ "1_000" is Python syntax, not a plain decimal amount."""
        refusal("1_000")

    def test_non_ascii_digits_are_refused(self) -> None:
        """Only ASCII digits make an amount."""
        refusal("\u0661\u0662")

    def test_negative_amounts_are_refused_by_default(self) -> None:
        """A top-up of "-5" is refused: the sign must be allowed explicitly."""
        error = refusal("-5")
        assert error.param == "credit"
        assert "negative" in error.message

    def test_negative_amounts_are_parsed_where_allowed(self) -> None:
        """An adjustment may be negative, and is as exact as a positive amount."""
        assert parse_amount("-0.57", allow_negative=True) == -570_000_000
        assert parse_amount("-1000000000", allow_negative=True) == -AMOUNT_NANO_MAX

    def test_minus_zero_is_zero_and_allowed(self) -> None:
        """ "-0" is not negative."""
        assert parse_amount("-0") == 0

    @pytest.mark.parametrize(
        ("text", "options"),
        [
            ("1000000000.000000001", {}),
            ("-1000000000.000000001", {"allow_negative": True}),
            ("99999999999999999999", {}),
            (10**10, {}),
            ("1" * 41, {}),
        ],
    )
    def test_amounts_past_a_billion_units_are_refused(
        self, text: str | int, options: dict[str, bool]
    ) -> None:
        """One nano-unit past AMOUNT_NANO_MAX (either sign) is refused."""
        assert refusal(text, **options).param == "credit"

    @pytest.mark.parametrize("value", [True, False, 1.5, None, Decimal("1"), b"1", ["1"]])
    def test_booleans_floats_and_other_types_are_refused(self, value: object) -> None:
        """Only text and ints are amounts; True is not 1 and a float is never trusted."""
        assert refusal(value).param == "credit"

    def test_the_parameter_defaults_to_amount(self) -> None:
        """Without ``param`` the error names "amount"."""
        with pytest.raises(InvalidRequest) as caught:
            parse_amount("x")
        assert caught.value.param == "amount"

    @given(
        units=st.integers(min_value=0, max_value=AMOUNT_NANO_MAX // 10**9 - 1),
        fraction=st.integers(min_value=0, max_value=10**9 - 1),
        negative=st.booleans(),
    )
    def test_any_amount_with_at_most_nine_decimals_is_exact(
        self, units: int, fraction: int, negative: bool
    ) -> None:
        """ "U.FFFFFFFFF" is U * 1e9 + F nano-units, whatever the digits."""
        sign = "-" if negative else ""
        nano = parse_amount(f"{sign}{units}.{fraction:09d}", allow_negative=True)
        assert nano == (-1 if negative else 1) * (units * 10**9 + fraction)


class TestParsePositiveAmount:
    def test_zero_is_refused(self) -> None:
        """A top-up of nothing is refused."""
        with pytest.raises(InvalidRequest) as caught:
            parse_positive_amount("0.000", param="amount")
        assert caught.value.param == "amount"

    def test_the_smallest_positive_amount_is_accepted(self) -> None:
        """One nano-unit is more than zero."""
        assert parse_positive_amount("0.000000001") == 1


class TestFormatAmount:
    @pytest.mark.parametrize(
        ("nano", "text"),
        [
            (12_500_000_000, "12.50"),
            (570_000_000, "0.57"),
            (0, "0.00"),
            (1, "0.000000001"),
            (1_100_000_000, "1.10"),
            (123_456_789, "0.123456789"),
            (-5, "-0.000000005"),
            (-12_000_000_000, "-12.00"),
            (AMOUNT_NANO_MAX, "1000000000.00"),
        ],
    )
    def test_amounts_show_two_decimals_and_more_only_where_needed(
        self, nano: int, text: str
    ) -> None:
        """Cents always show; smaller digits only when they are not zero."""
        assert format_amount(nano) == text

    @given(amounts_nano)
    def test_formatting_then_parsing_gives_the_same_amount(self, nano: int) -> None:
        """format_amount and parse_amount are inverse, negatives included."""
        assert parse_amount(format_amount(nano), allow_negative=True) == nano

    @given(st.integers(min_value=0, max_value=AMOUNT_NANO_MAX))
    def test_formatted_non_negative_amounts_parse_without_allowing_negatives(
        self, nano: int
    ) -> None:
        """A formatted balance of zero or more never carries a sign."""
        assert parse_amount(format_amount(nano)) == nano

    @given(amounts_nano)
    def test_formatted_amounts_have_between_two_and_nine_decimals(self, nano: int) -> None:
        """No exponent, no trailing zeros past the cents, nothing below a nano-unit."""
        text = format_amount(nano)
        assert re.fullmatch(r"-?(0|[1-9][0-9]*)\.[0-9]{2}([0-9]{0,7}[1-9])?", text), text


class TestDivCeil:
    @pytest.mark.parametrize(
        ("numerator", "denominator", "quotient"),
        [(4, 10, 1), (0, 7, 0), (10, 10, 1), (11, 10, 2), (-4, 10, 0), (-11, 10, -1)],
    )
    def test_division_rounds_toward_plus_infinity(
        self, numerator: int, denominator: int, quotient: int
    ) -> None:
        """0.4 rounds up to 1 and -1.1 up to -1."""
        assert div_ceil(numerator, denominator) == quotient

    @given(
        st.integers(min_value=-(10**30), max_value=10**30),
        st.integers(min_value=1, max_value=10**18),
    )
    def test_the_quotient_is_the_least_integer_not_below_the_fraction(
        self, numerator: int, denominator: int
    ) -> None:
        """(q - 1) * d < n <= q * d, the same as ceil of the exact fraction."""
        quotient = div_ceil(numerator, denominator)
        assert (quotient - 1) * denominator < numerator <= quotient * denominator
        assert quotient == math.ceil(Fraction(numerator, denominator))

    @given(
        st.integers(min_value=-(10**20), max_value=10**20),
        st.integers(min_value=1, max_value=10**12),
    )
    def test_exact_multiples_are_not_rounded(self, multiple: int, denominator: int) -> None:
        """Nothing is added when the division is exact."""
        assert div_ceil(multiple * denominator, denominator) == multiple

    @given(
        st.integers(min_value=-(10**20), max_value=10**20),
        st.integers(min_value=0, max_value=10**20),
        st.integers(min_value=1, max_value=10**12),
    )
    def test_a_larger_numerator_never_gives_a_smaller_quotient(
        self, numerator: int, more: int, denominator: int
    ) -> None:
        """Monotone: the rounding never turns more into less."""
        assert div_ceil(numerator + more, denominator) >= div_ceil(numerator, denominator)

    def test_a_zero_denominator_is_a_programming_error(self) -> None:
        """Dividing by zero (or a negative) is refused by an assertion."""
        with pytest.raises(AssertionError):
            div_ceil(1, 0)
