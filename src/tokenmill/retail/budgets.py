"""Spend budgets, pure: caps per account and per key, per UTC day and per UTC month.

A budget caps what a subject (an account or a key) may be charged in a period, on top of
its funds. Like funds, it is checked when a hold is placed: what is held for requests in
flight counts against it, so concurrent requests cannot together pass it. Spending counts
toward the period the request started in.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from tokenmill.errors import RateLimited
from tokenmill.money import format_amount
from tokenmill.retail.statements import DAY_MS, month_of


@dataclass(frozen=True)
class Budget:
    daily_nano: int | None = None
    monthly_nano: int | None = None

    def __post_init__(self) -> None:
        assert self.daily_nano is None or self.daily_nano >= 0
        assert self.monthly_nano is None or self.monthly_nano >= 0

    @property
    def empty(self) -> bool:
        return self.daily_nano is None and self.monthly_nano is None


def period_starts(at_ms: int) -> tuple[int, int]:
    """(start of the UTC day, start of the UTC month) of ``at_ms``."""
    day = at_ms - at_ms % DAY_MS
    return day, _month_start(day)


@functools.lru_cache(maxsize=64)
def _month_start(day_ms: int) -> int:
    """The month's start of a day's: calendar arithmetic once per day, not per request."""
    return month_of(day_ms)[0]


class BudgetBook:
    def __init__(self) -> None:
        self._budgets: dict[str, Budget] = {}
        self._spent: dict[tuple[str, int], int] = {}  # (subject, period start) -> charged
        self._held: dict[str, int] = {}

    def set_budget(self, subject: str, budget: Budget) -> None:
        if budget.empty:
            self._budgets.pop(subject, None)
        else:
            self._budgets[subject] = budget

    def budget(self, subject: str) -> Budget | None:
        return self._budgets.get(subject)

    def load_spent(self, subject: str, period_start: int, charged_nano: int) -> None:
        self._spent[(subject, period_start)] = charged_nano

    def spent(self, subject: str, period_start: int) -> int:
        return self._spent.get((subject, period_start), 0)

    def headroom(self, subjects: tuple[str, ...], at_ms: int) -> tuple[int, str] | None:
        """The least any budget of ``subjects`` still allows, and which; None: no budget."""
        if not self._budgets:
            return None
        day, month = period_starts(at_ms)
        least: tuple[int, str] | None = None
        for subject in subjects:
            budget = self._budgets.get(subject)
            if budget is None:
                continue
            held = self._held.get(subject, 0)
            for cap, start, name in (
                (budget.daily_nano, day, "daily"),
                (budget.monthly_nano, month, "monthly"),
            ):
                if cap is None:
                    continue
                left = cap - self.spent(subject, start) - held
                if least is None or left < least[0]:
                    least = (left, f"the {name} budget of {subject}")
        return least

    def hold(self, subjects: tuple[str, ...], amount_nano: int) -> None:
        for subject in subjects:
            if subject in self._budgets:
                self._held[subject] = self._held.get(subject, 0) + amount_nano

    def release(self, subjects: tuple[str, ...], amount_nano: int) -> None:
        for subject in subjects:
            if subject in self._held:
                self._held[subject] -= amount_nano
                assert self._held[subject] >= 0
                if not self._held[subject]:
                    del self._held[subject]

    def charge(self, subjects: tuple[str, ...], charged_nano: int, at_ms: int) -> None:
        """Count ``charged_nano`` against the day and month of ``at_ms`` (budget or not: a
        budget set later in the period sees what was spent before it)."""
        starts = period_starts(at_ms)
        for subject in subjects:
            for start in starts:
                key = (subject, start)
                self._spent[key] = self._spent.get(key, 0) + charged_nano

    def forget_before(self, at_ms: int) -> None:
        """Drop counters of past periods (bounded memory)."""
        _, month = period_starts(at_ms)
        day = at_ms - at_ms % DAY_MS
        self._spent = {
            key: value for key, value in self._spent.items() if key[1] >= day or key[1] == month
        }


def over_budget(which: str, needed_nano: int, left_nano: int, currency: str) -> RateLimited:
    return RateLimited(
        f"Spend budget reached: this request can cost up to {format_amount(needed_nano)}"
        f" {currency} and {which} allows {format_amount(max(0, left_nano))} more."
        " The daily budget renews at 00:00 UTC, the monthly one on the 1st.",
        code="budget_exceeded",
    )
