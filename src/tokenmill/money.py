"""Money: integers of nano-units (1e-9 of a currency unit), never floats.

Text amounts (``"12.50"``, ``"0.57"``) are parsed with ``Decimal`` at the edge and become
ints; past the edge only ints flow. Prices are nano-units per million tokens, so the cost of
``n`` tokens is ``n * price / 1e6`` nano-units: kept exact as an int of micro-nano-units
until it is rounded up, once, with ``div_ceil``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation, localcontext
from fractions import Fraction

from tokenmill.errors import InvalidRequest

NANO_PER_UNIT = 1_000_000_000
TOKENS_PER_PRICE = 1_000_000  # prices are per million tokens
AMOUNT_NANO_MAX = 10**18  # one movement: one billion currency units (fits a 64-bit integer)
# A ledger account's balance (and any sum of movements) is kept past 64 bits
# (store/wide_sums.py); a movement that would take a balance past this is refused.
BALANCE_NANO_MAX = 10**36
_AMOUNT_TEXT_CHARS_MAX = 40
# Plain ASCII decimals only: Decimal() alone would also take "1_000", "1e3" or other scripts'
# digits, none of which an operator means as an amount.
_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def div_ceil(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded up (toward +infinity), in integers."""
    assert denominator > 0
    return -((-numerator) // denominator)


def parse_amount(text: str | int, *, param: str = "amount", allow_negative: bool = False) -> int:
    """``"12.50"`` (currency units) -> 12_500_000_000 nano-units, exactly.

    Refuses what is not a plain decimal number, more than 9 decimals (smaller than a
    nano-unit), and amounts past ``AMOUNT_NANO_MAX``.
    """
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise InvalidRequest(f"{param} must be a decimal number given as text", param=param)
    raw = str(text).strip()
    if not raw or len(raw) > _AMOUNT_TEXT_CHARS_MAX:
        raise InvalidRequest(f"{param} must be a decimal number such as 12.50", param=param)
    if not _PLAIN_DECIMAL.fullmatch(raw):
        raise InvalidRequest(
            f"{param} must be a plain decimal number such as 12.50, not {raw[:40]!r}", param=param
        )
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:  # unreachable after the pattern; kept as the mapping
        raise InvalidRequest(
            f"{param} must be a decimal number such as 12.50", param=param
        ) from exc
    with localcontext() as context:
        # Exact arithmetic: text is at most 40 characters, so 60 digits never round.
        context.prec = 60
        nano = value * NANO_PER_UNIT
    if nano != nano.to_integral_value():
        raise InvalidRequest(f"{param} has more than 9 decimals", param=param)
    amount = int(nano)
    if amount < 0 and not allow_negative:
        raise InvalidRequest(f"{param} must not be negative", param=param)
    if abs(amount) > AMOUNT_NANO_MAX:
        raise InvalidRequest(f"{param} is too large", param=param)
    return amount


def parse_positive_amount(text: str | int, *, param: str = "amount") -> int:
    amount = parse_amount(text, param=param)
    if amount == 0:
        raise InvalidRequest(f"{param} must be more than zero", param=param)
    return amount


def nano_rounded(units: Fraction) -> int:
    """An exact amount in currency units -> nano-units, rounded half away from zero (for
    estimates shown to people; charges round with ``div_ceil``)."""
    nano = units * NANO_PER_UNIT
    whole = int(abs(nano) + Fraction(1, 2))
    return whole if nano >= 0 else -whole


def format_amount(nano: int) -> str:
    """12_500_000_000 -> ``"12.50"``: at least two decimals, more only where they are needed."""
    sign = "-" if nano < 0 else ""
    units, fraction = divmod(abs(nano), NANO_PER_UNIT)
    digits = f"{fraction:09d}".rstrip("0").ljust(2, "0")
    return f"{sign}{units}.{digits}"
