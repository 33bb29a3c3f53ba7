"""Plans, pure: the telecom bundle. A monthly fee, tokens included per month (per model or
per model tier), and price multipliers by time of day (an off-peak discount) and for batch
requests (``service_tier: flex``).

Rating under a plan, for one request started at instant t:

* the tariff: the price in force at t (the plan's overage price for the model or its tier
  where the plan sets one, else the price book's), times the time-of-day ratio at t in the
  plan's time zone, times the batch ratio;
* included tokens are drawn first: the request reserves, with its hold, up to its token
  bound from the month's pool (fresh prompt tokens first, then cache writes, then cache
  reads, then completion when it settles), and pays the tariff for the rest;
* the hold prices each prompt token it does not cover at the dearest of the three input
  prices (fresh, cache read, cache write), so no split of the prompt settles above it;
* the charge is rounded up once, to a whole nano-unit; the request fee is never discounted.

Multipliers are integers of parts per million; products of two are kept exact (1e12 as
denominator) until the one rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from tokenmill.instants import ms_of
from tokenmill.money import TOKENS_PER_PRICE, div_ceil
from tokenmill.retail.rating import Price, fresh_input_tokens, tokens_micro
from tokenmill.usage import TokenCounts

PPM = 1_000_000
RATIO_DEN = PPM * PPM  # two multipliers in parts per million, multiplied
MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class TimeBand:
    """``ratio_ppm`` applies from ``start_minute`` (inclusive) to ``end_minute`` (exclusive)
    of the local day; a band whose end is before its start wraps past midnight."""

    start_minute: int
    end_minute: int
    ratio_ppm: int

    def __post_init__(self) -> None:
        assert 0 <= self.start_minute < MINUTES_PER_DAY
        assert 0 <= self.end_minute <= MINUTES_PER_DAY
        assert self.start_minute != self.end_minute
        assert self.ratio_ppm >= 0

    def covers(self, minute: int) -> bool:
        if self.start_minute < self.end_minute:
            return self.start_minute <= minute < self.end_minute
        return minute >= self.start_minute or minute < self.end_minute


@dataclass(frozen=True)
class OveragePrice:
    input_nano_per_mtok: int
    output_nano_per_mtok: int
    cached_input_nano_per_mtok: int  # a cache read
    cache_write_input_nano_per_mtok: int


@dataclass(frozen=True)
class Plan:
    name: str
    currency: str
    monthly_fee_nano: int = 0
    timezone: str = "UTC"
    included_tokens: dict[str, int] = field(default_factory=dict)  # model id or "tier:<t>"
    overage: dict[str, OveragePrice] = field(default_factory=dict)  # same keys
    time_bands: tuple[TimeBand, ...] = ()
    batch_discount_ppm: int = 0  # 500_000: batch (flex) requests pay half

    def __post_init__(self) -> None:
        assert self.monthly_fee_nano >= 0
        assert 0 <= self.batch_discount_ppm <= PPM
        assert all(tokens >= 0 for tokens in self.included_tokens.values())
        ZoneInfo(self.timezone)  # raises for an unknown zone

    def key_for(self, table: Mapping[str, object], model: str, tier: str) -> str | None:
        """The entry of ``table`` that covers ``model``: its own, else its tier's."""
        if model in table:
            return model
        tier_key = f"tier:{tier}"
        return tier_key if tier_key in table else None

    def pool_for(self, model: str, tier: str) -> str | None:
        return self.key_for(self.included_tokens, model, tier)

    def ratio_ppm_at(self, at_ms: int) -> int:
        local = datetime.fromtimestamp(at_ms / 1000, tz=ZoneInfo(self.timezone))
        minute = local.hour * 60 + local.minute
        for band in self.time_bands:
            if band.covers(minute):
                return band.ratio_ppm
        return PPM

    def period_start_ms(self, at_ms: int) -> int:
        """The first instant of the plan's month (in its time zone) around ``at_ms``."""
        local = datetime.fromtimestamp(at_ms / 1000, tz=ZoneInfo(self.timezone))
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return ms_of(start)


@dataclass(frozen=True)
class Tariff:
    """What one request pays per token: the price and its multiplier (ratio / 1e12)."""

    price: Price
    ratio: int = RATIO_DEN  # band ratio (ppm) x batch ratio (ppm); RATIO_DEN = no change
    pool: str | None = None  # the included-token pool this request draws from
    period_start_ms: int = 0


def tariff_for(
    plan: Plan | None, price: Price, model: str, tier: str, at_ms: int, batch: bool
) -> Tariff:
    if plan is None:
        return Tariff(price)
    overage_key = plan.key_for(plan.overage, model, tier)
    if overage_key is not None:
        over = plan.overage[overage_key]
        price = Price(
            price.model,
            price.currency,
            price.effective_from_ms,
            over.input_nano_per_mtok,
            over.output_nano_per_mtok,
            over.cached_input_nano_per_mtok,
            price.request_fee_nano,
            cache_write_input_nano_per_mtok=over.cache_write_input_nano_per_mtok,
        )
    batch_ppm = PPM - plan.batch_discount_ppm if batch else PPM
    return Tariff(
        price,
        plan.ratio_ppm_at(at_ms) * batch_ppm,
        plan.pool_for(model, tier),
        plan.period_start_ms(at_ms),
    )


def _to_nano(tariff: Tariff, tokens_micro: int) -> int:
    fee = tariff.price.request_fee_nano * TOKENS_PER_PRICE * RATIO_DEN
    return div_ceil(tokens_micro * tariff.ratio + fee, TOKENS_PER_PRICE * RATIO_DEN)


def tariff_hold(tariff: Tariff, prompt_bound: int, output_cap: int, included: int) -> int:
    """The most a request can cost when ``included`` of its tokens are covered by the plan.

    Included tokens cover the prompt first, so the worst case leaves the last tokens
    uncovered: with ``included`` at least the prompt bound, ``bound + cap - included``
    completion tokens; below it, the rest of the prompt (at the dearest of the three input
    prices, whichever kinds the prompt turns out to be made of) and the whole output cap.
    """
    assert 0 <= included <= prompt_bound + output_cap
    price = tariff.price
    if included >= prompt_bound:
        micro = (prompt_bound + output_cap - included) * price.output_nano_per_mtok
    else:
        uncovered_prompt = prompt_bound - included
        micro = (
            uncovered_prompt * price.input_nano_per_mtok_max
            + output_cap * price.output_nano_per_mtok
        )
    return _to_nano(tariff, micro)


def tariff_charge(tariff: Tariff, counts: TokenCounts, included: int) -> tuple[int, int]:
    """(charge, included tokens used) for ``counts`` with up to ``included`` covered: fresh
    prompt tokens first, then cache writes, then cache reads, then completion (reasoning
    tokens are completion tokens, counted once)."""
    assert included >= 0
    kinds = (
        fresh_input_tokens(counts),
        counts.cache_write_tokens,
        counts.cached_tokens,
        counts.completion_tokens,
    )
    left = included
    uncovered = []
    for tokens in kinds:
        covered = min(tokens, left)
        left -= covered
        uncovered.append(tokens - covered)
    fresh, writes, reads, completion = uncovered
    micro = tokens_micro(tariff.price, fresh, reads, writes, completion)
    return _to_nano(tariff, micro), included - left


def tariff_output_cap(
    tariff: Tariff, prompt_bound: int, output_cap: int, included_available: int, spendable: int
) -> int:
    """The largest output cap up to ``output_cap`` whose hold fits ``spendable`` (0: none).

    The hold grows with the cap (each more token costs at least the cheapest price less what
    an included token saves, never negative), so a binary search finds it.
    """

    def fits(cap: int) -> bool:
        included = min(prompt_bound + cap, included_available)
        return tariff_hold(tariff, prompt_bound, cap, included) <= spendable

    if not fits(1):
        return 0
    low, high = 1, output_cap
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


class IncludedPools:
    """Included tokens per (account, pool, plan month): used, and reserved by holds."""

    def __init__(self) -> None:
        self._used: dict[tuple[str, str, int], int] = {}
        self._reserved: dict[tuple[str, str, int], int] = {}

    def available(self, key: tuple[str, str, int], allowance: int) -> int:
        return max(0, allowance - self._used.get(key, 0) - self._reserved.get(key, 0))

    def used(self, key: tuple[str, str, int]) -> int:
        return self._used.get(key, 0)

    def load_used(self, key: tuple[str, str, int], tokens: int) -> None:
        self._used[key] = tokens

    def reserve(self, key: tuple[str, str, int], tokens: int) -> None:
        self._reserved[key] = self._reserved.get(key, 0) + tokens

    def release(self, key: tuple[str, str, int], tokens: int) -> None:
        left = self._reserved.get(key, 0) - tokens
        assert left >= 0
        if left:
            self._reserved[key] = left
        else:
            self._reserved.pop(key, None)

    def use(self, key: tuple[str, str, int], tokens: int) -> None:
        self._used[key] = self._used.get(key, 0) + tokens
