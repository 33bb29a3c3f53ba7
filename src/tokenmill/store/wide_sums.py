"""Money past 64 bits in a store whose integers are 64 bits.

A transfer moves at most ``AMOUNT_NANO_MAX`` (10**18) nano-units, which fits a BIGINT; a
running total does not: the house ``cash:<currency>`` account sums every customer's top-ups
and passes 2**63 after ten top-ups of a billion units. SQLite would then store the cached
balance as a REAL (a float, silently) and its ``SUM`` raises ``integer overflow``, so
neither a balance nor a sum is ever kept in one 64-bit integer:

* A **cached balance** is two BIGINTs, ``high * 10**18 + low`` with ``0 <= low < 10**18``.
  Adding a delta (split the same way) is plain SQL on both dialects: ``low + delta_low`` is
  below 2 * 10**18, so the carry ``(low + delta_low) / 10**18`` and the remainder never
  overflow, and ``high`` reaches its own limit only past 9.2e36 nano-units.
* A **sum** over a column of amounts is two SQL sums, of ``amount >> 20`` and of
  ``amount & (2**20 - 1)``, joined in Python. The low sum needs 2**43 (8.8e12) rows to
  overflow, more than a SQLite file of its 281 TB maximum can hold; the high sum overflows
  only past 2**83 nano-units. PostgreSQL sums BIGINTs as NUMERIC, exact at any count.
  Both shifts are arithmetic on both dialects, so signed expressions split exactly too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, literal_column

from tokenmill.money import BALANCE_NANO_MAX

BALANCE_BASE = 10**18  # a cached balance's low part is below this
SUM_SHIFT_BITS = 20
_SUM_MASK = (1 << SUM_SHIFT_BITS) - 1


def split_balance(value_nano: int) -> tuple[int, int]:
    """``value`` as (high, low), ``0 <= low < 10**18``: the two columns of a balance."""
    assert abs(value_nano) <= BALANCE_NANO_MAX
    high, low = divmod(value_nano, BALANCE_BASE)
    assert 0 <= low < BALANCE_BASE
    return high, low


def joined_balance(high: Any, low: Any) -> int:
    """The balance of a row's two columns (either may be None: no row yet)."""
    low_value = int(low or 0)
    assert 0 <= low_value < BALANCE_BASE
    return int(high or 0) * BALANCE_BASE + low_value


def wide_sum(expression: Any) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """The two SQL sums whose ``joined_sum`` is the exact sum of ``expression``."""
    high = func.sum(expression.op(">>")(literal_column(str(SUM_SHIFT_BITS))))
    low = func.sum(expression.op("&")(literal_column(str(_SUM_MASK))))
    return high, low


def joined_sum(high: Any, low: Any) -> int:
    """The exact sum from ``wide_sum``'s two parts (None: no rows, zero)."""
    return (int(high or 0) << SUM_SHIFT_BITS) + int(low or 0)
