"""Plans, pure (tokenmill.retail.plans and plan_specs): included tokens drawn first, overage
prices, time-of-day and batch ratios, the plan's month in its time zone, and the plan format.

Every expected amount is worked out here by hand from the prices below, never by the code
under test.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import counts_within, plans, prices, ratios_ppm
from tokenmill.errors import InvalidRequest
from tokenmill.instants import ms_of
from tokenmill.retail.plan_specs import plan_from_spec, plan_to_spec
from tokenmill.retail.plans import (
    PPM,
    RATIO_DEN,
    OveragePrice,
    Plan,
    Tariff,
    TimeBand,
    tariff_charge,
    tariff_for,
    tariff_hold,
    tariff_output_cap,
)
from tokenmill.retail.rating import Price
from tokenmill.usage import TokenCounts

NANO = 1_000_000_000
# The price book's price: per token 1000 nano-units in (and per cache write), 500 per cache
# read, 2000 out.
BOOK = Price(
    model="m",
    currency="USD",
    effective_from_ms=0,
    input_nano_per_mtok=NANO,
    output_nano_per_mtok=2 * NANO,
    cached_input_nano_per_mtok=NANO // 2,
    cache_write_input_nano_per_mtok=NANO,
)
# The book's price with cache writes dearer than input: 1250 nano per token.
WRITES_DEARER = dataclasses.replace(BOOK, cache_write_input_nano_per_mtok=5 * NANO // 4)
# A fee of 0.001: 1_000_000 nano-units per request, never discounted.
FEE = 1_000_000
WITH_FEE = Price(
    "m", "USD", 0, NANO, 2 * NANO, NANO // 2, FEE, cache_write_input_nano_per_mtok=NANO
)
# An overage price for "m": per token 3000 nano-units in, 1500 cached, 3750 written, 5000 out.
OVER_M = OveragePrice(3 * NANO, 5 * NANO, 3 * NANO // 2, 15 * NANO // 4)
# An overage price for the standard tier: per token 4000 in, 4000 cached or written, 6000 out.
OVER_TIER = OveragePrice(4 * NANO, 6 * NANO, 4 * NANO, 4 * NANO)
# From 22:00 to 06:00 local time, half price.
NIGHT = TimeBand(22 * 60, 6 * 60, PPM // 2)


def at(text: str) -> int:
    """Unix ms of an ISO 8601 instant written with its offset."""
    return ms_of(datetime.fromisoformat(text))


def plan(**fields: Any) -> Plan:
    return Plan(name="p", currency="USD", **fields)


def book_tariff(ratio: int = RATIO_DEN, price: Price = BOOK) -> Tariff:
    return Tariff(price, ratio)


class TestIncludedTokens:
    def test_included_tokens_are_drawn_before_the_overage_price(self) -> None:
        """1000 prompt + 500 completion, 1200 included: the last 300 completion tokens pay."""
        tariff = tariff_for(
            plan(included_tokens={"m": 1200}, overage={"m": OVER_M}),
            BOOK,
            "m",
            "standard",
            at("2026-01-15T12:00:00+00:00"),
            batch=False,
        )
        charge, used = tariff_charge(tariff, TokenCounts(1000, 500), 1200)
        assert (charge, used) == (300 * 5000, 1200)  # 5000 nano per overage output token

    @pytest.mark.parametrize(
        ("included", "charge"),
        [
            # 700 uncached, 300 cached, 500 completion at 1000, 500 and 2000 nano each.
            (0, 700 * 1000 + 300 * 500 + 500 * 2000),
            (600, 100 * 1000 + 300 * 500 + 500 * 2000),  # uncached first ...
            (700, 300 * 500 + 500 * 2000),
            (800, 200 * 500 + 500 * 2000),  # ... then cached ...
            (1000, 500 * 2000),
            (1100, 400 * 2000),  # ... then completion
            (1500, 0),
        ],
    )
    def test_uncached_prompt_is_covered_before_cached_and_cached_before_completion(
        self, included: int, charge: int
    ) -> None:
        """The included tokens cover uncached prompt, then cached prompt, then completion."""
        assert tariff_charge(book_tariff(), TokenCounts(1000, 500, 300), included) == (
            charge,
            included,
        )

    def test_included_tokens_past_the_usage_are_not_used(self) -> None:
        """5000 included for 1500 tokens: 1500 are used, the charge is 0."""
        assert tariff_charge(book_tariff(), TokenCounts(1000, 500, 300), 5000) == (0, 1500)

    @pytest.mark.parametrize(
        ("included", "charge"),
        [
            # 500 fresh, 200 written, 300 read, 500 completion at 1000, 1250, 500, 2000 each.
            (0, 500 * 1000 + 200 * 1250 + 300 * 500 + 500 * 2000),
            (500, 200 * 1250 + 300 * 500 + 500 * 2000),  # fresh first ...
            (600, 100 * 1250 + 300 * 500 + 500 * 2000),  # ... then cache writes ...
            (800, 200 * 500 + 500 * 2000),  # ... then cache reads ...
            (1100, 400 * 2000),  # ... then completion
            (1500, 0),
        ],
    )
    def test_cache_writes_are_covered_after_fresh_input_and_before_cache_reads(
        self, included: int, charge: int
    ) -> None:
        """Included tokens cover fresh prompt, cache writes, cache reads, then completion;
        what they leave pays each kind's price."""
        counts = TokenCounts(1000, 500, cached_tokens=300, cache_write_tokens=200)
        assert tariff_charge(book_tariff(price=WRITES_DEARER), counts, included) == (
            charge,
            included,
        )

    def test_cache_writes_pay_the_overage_write_price(self) -> None:
        """Under a plan's overage price for the model, 400 written prompt tokens pay its
        3750 nano each, 600 fresh its 3000."""
        tariff = tariff_for(
            plan(overage={"m": OVER_M}), BOOK, "m", "standard", at("2026-01-15T12:00:00Z"), False
        )
        counts = TokenCounts(1000, 0, cache_write_tokens=400)
        assert tariff_charge(tariff, counts, 0) == (600 * 3000 + 400 * 3750, 0)

    def test_reasoning_tokens_are_charged_once_as_completion(self) -> None:
        """300 of 500 completion tokens reasoning: 500 output tokens are charged, no more,
        and 500 included tokens cover them all."""
        counts = TokenCounts(1000, 500, reasoning_tokens=300)
        assert tariff_charge(book_tariff(), counts, 0) == (1000 * 1000 + 500 * 2000, 0)
        assert tariff_charge(book_tariff(), counts, 1500) == (0, 1500)

    def test_the_hold_takes_the_cache_write_price_when_it_is_the_dearest(self) -> None:
        """Writes at 1250 nano above input at 1000: the uncovered prompt is held at 1250, so a
        prompt written whole to the cache settles at the hold, not above it."""
        tariff = book_tariff(price=WRITES_DEARER)
        hold = tariff_hold(tariff, 1000, 500, 300)
        assert hold == 700 * 1250 + 500 * 2000
        written = TokenCounts(1000, 500, cache_write_tokens=1000)
        assert tariff_charge(tariff, written, 300)[0] == hold

    def test_the_hold_leaves_the_last_tokens_uncovered_below_the_prompt_bound(self) -> None:
        """1000 prompt bound, cap 500, 300 included: the other 700 prompt tokens and every
        output token may be charged, at 1000 and 2000 nano per token."""
        assert tariff_hold(book_tariff(), 1000, 500, 300) == 700 * 1000 + 500 * 2000

    def test_the_hold_leaves_only_output_uncovered_past_the_prompt_bound(self) -> None:
        """1000 prompt bound, cap 500, 1200 included: at worst 300 output tokens pay."""
        assert tariff_hold(book_tariff(), 1000, 500, 1200) == 300 * 2000

    def test_the_hold_is_zero_when_every_token_is_included(self) -> None:
        """Bound and cap within the included tokens: nothing can be charged (no fee)."""
        assert tariff_hold(book_tariff(), 1000, 500, 1500) == 0


class TestTimeOfDay:
    PARIS = plan(timezone="Europe/Paris", time_bands=(NIGHT,))

    @pytest.mark.parametrize(
        ("instant", "ratio"),
        [
            # Winter, Paris is UTC+1.
            ("2026-01-15T21:59:59.999+01:00", PPM),
            ("2026-01-15T22:00:00.000+01:00", PPM // 2),
            ("2026-01-16T00:00:00.000+01:00", PPM // 2),
            ("2026-01-16T05:59:59.999+01:00", PPM // 2),
            ("2026-01-16T06:00:00.000+01:00", PPM),
            ("2026-01-16T12:00:00.000+01:00", PPM),
            # The same local times written in UTC.
            ("2026-01-15T20:59:59.999+00:00", PPM),
            ("2026-01-15T21:00:00.000+00:00", PPM // 2),
            ("2026-01-16T04:59:59.999+00:00", PPM // 2),
            ("2026-01-16T05:00:00.000+00:00", PPM),
            # 29 March 2026: at 01:00Z Paris goes from 02:00 CET to 03:00 CEST (UTC+2).
            ("2026-03-29T03:59:59.999+00:00", PPM // 2),  # 05:59:59.999 CEST
            ("2026-03-29T04:00:00.000+00:00", PPM),  # 06:00 CEST (05:00 were it still CET)
            ("2026-03-29T19:59:59.999+00:00", PPM),  # 21:59:59.999 CEST
            ("2026-03-29T20:00:00.000+00:00", PPM // 2),  # 22:00 CEST
            # 25 October 2026: at 01:00Z Paris goes from 03:00 CEST back to 02:00 CET.
            ("2026-10-25T04:59:59.999+00:00", PPM // 2),  # 05:59:59.999 CET
            ("2026-10-25T05:00:00.000+00:00", PPM),  # 06:00 CET (07:00 were it still CEST)
            ("2026-10-25T20:59:59.999+00:00", PPM),  # 21:59:59.999 CET
            ("2026-10-25T21:00:00.000+00:00", PPM // 2),  # 22:00 CET
            # Summer: 21:30Z is 23:30 CEST.
            ("2026-07-01T21:30:00.000+00:00", PPM // 2),
            ("2026-07-01T19:59:59.999+00:00", PPM),
        ],
    )
    def test_a_band_applies_from_its_start_to_just_before_its_end_in_local_time(
        self, instant: str, ratio: int
    ) -> None:
        """22:00 to 06:00 in Europe/Paris: 'from' inclusive, 'to' exclusive, DST included."""
        assert self.PARIS.ratio_ppm_at(at(instant)) == ratio

    def test_the_band_ratio_scales_what_a_request_pays(self) -> None:
        """1000 completion tokens at 2000 nano: 2_000_000 by day, 1_000_000 at night."""
        day = tariff_for(
            self.PARIS, BOOK, "m", "standard", at("2026-01-15T21:59:59.999+01:00"), False
        )
        night = tariff_for(
            self.PARIS, BOOK, "m", "standard", at("2026-01-15T22:00:00+01:00"), False
        )
        assert tariff_charge(day, TokenCounts(0, 1000), 0) == (2_000_000, 0)
        assert tariff_charge(night, TokenCounts(0, 1000), 0) == (1_000_000, 0)

    def test_a_band_that_does_not_wrap_midnight(self) -> None:
        """12:00 to 14:00 at 1.5 in UTC: 11:59 full, 12:00 and 13:59 dearer, 14:00 full."""
        lunch = plan(time_bands=(TimeBand(12 * 60, 14 * 60, 1_500_000),))
        assert lunch.ratio_ppm_at(at("2026-05-05T11:59:59.999+00:00")) == PPM
        assert lunch.ratio_ppm_at(at("2026-05-05T12:00:00+00:00")) == 1_500_000
        assert lunch.ratio_ppm_at(at("2026-05-05T13:59:59.999+00:00")) == 1_500_000
        assert lunch.ratio_ppm_at(at("2026-05-05T14:00:00+00:00")) == PPM


class TestBatchAndFee:
    HALF_OFF = plan(batch_discount_ppm=PPM // 2, timezone="Europe/Paris", time_bands=(NIGHT,))
    NOON = at("2026-01-15T12:00:00+01:00")
    MIDNIGHT = at("2026-01-16T00:00:00+01:00")

    def test_the_batch_discount_applies_to_batch_requests_only(self) -> None:
        """1000 completion tokens: 2_000_000 interactive, 1_000_000 batch, plus the fee."""
        interactive = tariff_for(self.HALF_OFF, WITH_FEE, "m", "standard", self.NOON, False)
        batch = tariff_for(self.HALF_OFF, WITH_FEE, "m", "standard", self.NOON, True)
        assert tariff_charge(interactive, TokenCounts(0, 1000), 0)[0] == 2_000_000 + FEE
        assert tariff_charge(batch, TokenCounts(0, 1000), 0)[0] == 1_000_000 + FEE

    def test_batch_and_night_ratios_multiply_but_the_fee_stays_whole(self) -> None:
        """A batch request at night pays a quarter of the token price and the whole fee."""
        tariff = tariff_for(self.HALF_OFF, WITH_FEE, "m", "standard", self.MIDNIGHT, True)
        assert tariff.ratio == RATIO_DEN // 4
        assert tariff_charge(tariff, TokenCounts(0, 1000), 0)[0] == 500_000 + FEE
        assert tariff_hold(tariff, 0, 1000, 0) == 500_000 + FEE

    def test_the_fee_is_paid_even_when_every_token_is_included(self) -> None:
        """All tokens included: the charge is the fee alone."""
        tariff = tariff_for(
            plan(included_tokens={"m": 10**6}), WITH_FEE, "m", "standard", self.NOON, True
        )
        assert tariff_charge(tariff, TokenCounts(1000, 500), 1500) == (FEE, 1500)

    def test_a_plan_without_batch_discount_charges_batch_requests_in_full(self) -> None:
        """batch_discount 0: a batch request pays as an interactive one."""
        tariff = tariff_for(plan(), WITH_FEE, "m", "standard", self.NOON, True)
        assert tariff.ratio == RATIO_DEN
        assert tariff_charge(tariff, TokenCounts(0, 1000), 0)[0] == 2_000_000 + FEE

    def test_without_a_plan_the_price_book_applies_unchanged(self) -> None:
        """No plan: the book's price, no ratio, no pool, whatever the batch flag."""
        assert tariff_for(None, WITH_FEE, "m", "standard", self.MIDNIGHT, True) == Tariff(WITH_FEE)

    def test_the_charge_is_rounded_up_once(self) -> None:
        """500 + 500 tokens at 1 nano per million, a quarter of it: 0.00025 -> 1, not 2."""
        tiny = Price("m", "USD", 0, 1, 1, 1, cache_write_input_nano_per_mtok=1)
        assert tariff_charge(Tariff(tiny, RATIO_DEN // 4), TokenCounts(500, 500), 0) == (1, 0)


class TestModelAndTierKeys:
    PLAN = plan(
        included_tokens={"m": 10, "tier:standard": 100},
        overage={"m": OVER_M, "tier:standard": OVER_TIER},
    )
    NOON = at("2026-01-15T12:00:00+00:00")

    def test_a_model_entry_wins_over_its_tier(self) -> None:
        """Model "m" of the standard tier: its own pool and its own overage price."""
        tariff = tariff_for(self.PLAN, BOOK, "m", "standard", self.NOON, False)
        assert tariff.pool == "m"
        assert tariff_charge(tariff, TokenCounts(0, 1), 0)[0] == 5000

    def test_another_model_of_the_tier_uses_the_tier_entry(self) -> None:
        """Model "other" of the standard tier: the tier's pool and overage price."""
        tariff = tariff_for(self.PLAN, BOOK, "other", "standard", self.NOON, False)
        assert tariff.pool == "tier:standard"
        assert tariff_charge(tariff, TokenCounts(0, 1), 0)[0] == 6000

    def test_a_model_of_another_tier_pays_the_price_book_and_has_no_pool(self) -> None:
        """Model "other" of the frontier tier: no entry, so the book's 2000 per output token."""
        tariff = tariff_for(self.PLAN, BOOK, "other", "frontier", self.NOON, False)
        assert tariff.pool is None
        assert tariff_charge(tariff, TokenCounts(0, 1), 0)[0] == 2000

    def test_the_overage_keeps_the_book_fee(self) -> None:
        """An overage price replaces the token prices, not the request fee."""
        tariff = tariff_for(self.PLAN, WITH_FEE, "m", "standard", self.NOON, False)
        assert tariff.price.request_fee_nano == FEE
        assert tariff.price.output_nano_per_mtok == 5 * NANO


class TestPlanMonth:
    @pytest.mark.parametrize(
        ("zone", "instant", "start"),
        [
            # 23:30Z on 30 November is 00:30 on 1 December in Paris (UTC+1).
            ("Europe/Paris", "2026-11-30T23:30:00+00:00", "2026-12-01T00:00:00+01:00"),
            ("Europe/Paris", "2026-11-30T22:59:59.999+00:00", "2026-11-01T00:00:00+01:00"),
            ("UTC", "2026-11-30T23:30:00+00:00", "2026-11-01T00:00:00+00:00"),
            # July in Paris began at 22:00Z on 30 June (UTC+2).
            ("Europe/Paris", "2026-07-15T12:00:00+00:00", "2026-07-01T00:00:00+02:00"),
            # A month that began in winter time and is now in summer time.
            ("Europe/Paris", "2026-03-31T12:00:00+00:00", "2026-03-01T00:00:00+01:00"),
            # New York is behind: 03:00Z on 1 January is still December there.
            ("America/New_York", "2027-01-01T03:00:00+00:00", "2026-12-01T00:00:00-05:00"),
        ],
    )
    def test_the_plan_month_starts_on_the_first_in_the_plan_time_zone(
        self, zone: str, instant: str, start: str
    ) -> None:
        """The pool's month is the plan's local month."""
        found = plan(timezone=zone).period_start_ms(at(instant))
        assert found == at(start)
        tariff = tariff_for(plan(timezone=zone), BOOK, "m", "standard", at(instant), False)
        assert tariff.period_start_ms == at(start)


DOCS_EXAMPLE = """
currency: USD
monthly_fee: "20.00"
timezone: Europe/Paris
included:
  "tier:standard": 10000000
  llama-3.3-70b: 1000000
overage:
  "tier:standard": {input: "0.02", output: "0.04"}
time_of_day:
  - {from: "22:00", to: "06:00", ratio: "0.5"}
batch_discount: "0.5"
"""


def a_band(**fields: Any) -> dict[str, Any]:
    return {"time_of_day": [{"from": "22:00", "to": "06:00", "ratio": "0.5"} | fields]}


class TestPlanFromSpec:
    def test_the_documented_example_reads_as_written(self) -> None:
        """docs/billing.md's plan: every field, amounts exact, cached input at the input price."""
        found = plan_from_spec("starter", yaml.safe_load(DOCS_EXAMPLE))
        assert found == Plan(
            name="starter",
            currency="USD",
            monthly_fee_nano=20 * NANO,
            timezone="Europe/Paris",
            included_tokens={"tier:standard": 10_000_000, "llama-3.3-70b": 1_000_000},
            overage={"tier:standard": OveragePrice(20_000_000, 40_000_000, 20_000_000, 20_000_000)},
            time_bands=(TimeBand(22 * 60, 6 * 60, 500_000),),
            batch_discount_ppm=500_000,
        )

    def test_an_empty_spec_is_a_plain_usd_plan(self) -> None:
        """Every field has a default: USD, no fee, UTC, nothing included, no ratios."""
        assert plan_from_spec("p", {}) == Plan(name="p", currency="USD")

    def test_a_band_may_end_at_midnight(self) -> None:
        """'24:00' is the end of the day."""
        found = plan_from_spec("p", a_band(**{"from": "18:00", "to": "24:00"}))
        assert found.time_bands == (TimeBand(18 * 60, 24 * 60, 500_000),)

    @pytest.mark.parametrize(
        ("spec", "param"),
        [
            ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
            ({"timezone": "../../etc/passwd"}, "timezone"),
            (a_band(**{"from": "25:00"}), "time_of_day.0.from"),
            (a_band(to="6:00"), "time_of_day.0.to"),
            (a_band(**{"from": "24:00", "to": "06:00"}), "time_of_day.0"),
            (a_band(to="22:00"), "time_of_day.0"),
            (a_band(ratio="abc"), "time_of_day.0.ratio"),
            (a_band(ratio="0.1234567"), "time_of_day.0.ratio"),
            (a_band(ratio="-0.5"), "time_of_day.0.ratio"),
            (a_band(ratio="101"), "time_of_day.0.ratio"),
            (a_band(ratio="NaN"), "time_of_day.0.ratio"),
            (a_band(every="day"), "time_of_day.0.every"),
            ({"batch_discount": "1.5"}, "batch_discount"),
            ({"batch_discount": 1.5}, "batch_discount"),
            ({"included": {"m": -1}}, "included"),
            ({"included": {"m": "lots"}}, "included.m"),
            ({"monthly_fee": "-20.00"}, "monthly_fee"),
            ({"monthly_fee": "1e3"}, "monthly_fee"),
            ({"overage": {"m": {"input": "0.0000000001"}}}, "overage.m.input"),
            ({"overage": {"m": {"output": "1.00"}}}, "overage.m.input"),
            ({"currency": "usd"}, "currency"),
            ({"unlimited": True}, "unlimited"),
            pytest.param(
                {"batch_discount": "1e999999999"},
                "batch_discount",
                id="huge-ratio",
            ),
            pytest.param(
                a_band(ratio="sNaN"),
                "time_of_day.0.ratio",
                id="signalling-nan-ratio",
            ),
            pytest.param(
                {"batch_discount": "1e-999999999"},
                "batch_discount",
                id="vanishing-ratio",
            ),
        ],
    )
    def test_a_bad_plan_is_refused_naming_the_field(self, spec: Any, param: str) -> None:
        """Bad input: InvalidRequest whose param is the field, never another exception."""
        with pytest.raises(InvalidRequest) as raised:
            plan_from_spec("p", spec)
        assert raised.value.param == param
        assert raised.value.message

    @pytest.mark.parametrize("name", ["", "-dash", "a b", "x" * 65, "ünï", "a/b"])
    def test_a_bad_plan_name_is_refused(self, name: str) -> None:
        """Names are 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit."""
        with pytest.raises(InvalidRequest) as raised:
            plan_from_spec(name, {})
        assert raised.value.param == "name"

    @pytest.mark.parametrize("spec", [None, [], "USD", 42])
    def test_a_spec_that_is_not_a_mapping_is_refused(self, spec: Any) -> None:
        """A YAML file holding a list or a scalar is an InvalidRequest too."""
        with pytest.raises(InvalidRequest):
            plan_from_spec("p", spec)


class TestPlanToSpec:
    def test_the_documented_example_round_trips(self) -> None:
        """Written back, the docs' plan reads as the same plan."""
        plan_read = plan_from_spec("starter", yaml.safe_load(DOCS_EXAMPLE))
        assert plan_from_spec("starter", plan_to_spec(plan_read)) == plan_read

    def test_amounts_and_clocks_are_written_as_people_write_them(self) -> None:
        """Amounts as decimal text, times as HH:MM, ratios as decimals."""
        written = plan_to_spec(plan_from_spec("starter", yaml.safe_load(DOCS_EXAMPLE)))
        assert written["monthly_fee"] == "20.00"
        assert written["overage"] == {
            "tier:standard": {
                "input": "0.02",
                "output": "0.04",
                "cached_input": "0.02",
                "cache_write_input": "0.02",
            }
        }
        assert written["time_of_day"] == [{"from": "22:00", "to": "06:00", "ratio": "0.5"}]
        assert written["batch_discount"] == "0.5"

    def test_whole_ratios_are_written_as_plain_decimals(self) -> None:
        """Ratios of 10 and 100 are written '10' and '100', not in exponent form."""
        written = plan_to_spec(plan_from_spec("p", a_band(ratio="10") | {"batch_discount": "1"}))
        assert written["time_of_day"][0]["ratio"] == "10"
        assert written["batch_discount"] == "1"
        hundred = plan_to_spec(plan_from_spec("p", a_band(ratio="100")))
        assert hundred["time_of_day"][0]["ratio"] == "100"

    @given(plans())
    def test_any_plan_round_trips(self, original: Plan) -> None:
        """plan_from_spec(plan_to_spec(p)) == p, through JSON-able values."""
        assert plan_from_spec(original.name, plan_to_spec(original)) == original


# Hypothesis: a prompt bound and an output cap up to a long context.
BOUND_MAX = 200_000
bounds = st.integers(min_value=0, max_value=BOUND_MAX)
caps = st.integers(min_value=1, max_value=BOUND_MAX)
pools = st.integers(min_value=0, max_value=3 * BOUND_MAX)


@st.composite
def tariffs(draw: st.DrawFn) -> Tariff:
    """Any price with a band ratio and a batch ratio."""
    ratio = draw(ratios_ppm) * draw(st.integers(min_value=0, max_value=PPM))
    return Tariff(draw(prices()), ratio)


class TestTariffProperties:
    @given(tariffs(), bounds, caps, pools, st.data())
    def test_the_hold_covers_any_charge_within_its_bounds(
        self, tariff: Tariff, bound: int, cap: int, pool: int, data: st.DataObject
    ) -> None:
        """hold(bound, cap, reserved) >= charge(usage, reserved) for usage within the bounds."""
        reserved = min(bound + cap, pool)
        counts = data.draw(counts_within(bound, cap))
        assert (
            tariff_hold(tariff, bound, cap, reserved) >= tariff_charge(tariff, counts, reserved)[0]
        )

    @given(tariffs(), counts_within(BOUND_MAX, BOUND_MAX), pools)
    def test_included_used_is_the_lesser_of_the_reserve_and_the_usage(
        self, tariff: Tariff, counts: TokenCounts, reserved: int
    ) -> None:
        """Used included tokens never exceed the reservation nor the tokens of the request."""
        used = tariff_charge(tariff, counts, reserved)[1]
        total = counts.prompt_tokens + counts.completion_tokens
        assert used <= reserved
        assert used <= total
        assert used == min(reserved, total)

    @given(
        tariffs(),
        counts_within(BOUND_MAX, BOUND_MAX),
        pools,
        st.integers(min_value=0, max_value=1000),
        st.integers(min_value=0, max_value=1000),
        st.integers(min_value=0, max_value=1000),
        st.integers(min_value=0, max_value=1000),
    )
    def test_more_tokens_never_cost_less(
        self,
        tariff: Tariff,
        counts: TokenCounts,
        reserved: int,
        more_uncached: int,
        more_cached: int,
        more_written: int,
        more_completion: int,
    ) -> None:
        """Adding prompt tokens (fresh, read or written) or completion tokens (reasoning or
        not) never lowers the charge."""
        more = TokenCounts(
            counts.prompt_tokens + more_uncached + more_cached + more_written,
            counts.completion_tokens + more_completion,
            counts.cached_tokens + more_cached,
            counts.cache_write_tokens + more_written,
            counts.reasoning_tokens + more_completion // 2,
        )
        assert (
            tariff_charge(tariff, more, reserved)[0] >= tariff_charge(tariff, counts, reserved)[0]
        )

    @given(
        tariffs(),
        bounds,
        caps,
        pools,
        st.one_of(
            st.integers(min_value=0, max_value=10**7), st.integers(min_value=0, max_value=10**12)
        ),
    )
    def test_the_output_cap_is_the_largest_one_the_funds_pay_for(
        self, tariff: Tariff, bound: int, cap: int, pool: int, spendable: int
    ) -> None:
        """c = output_cap(...): hold(c) fits, and c is the cap or hold(c + 1) does not fit."""

        def hold(output: int) -> int:
            return tariff_hold(tariff, bound, output, min(bound + output, pool))

        found = tariff_output_cap(tariff, bound, cap, pool, spendable)
        assert 0 <= found <= cap
        if found == 0:
            assert hold(1) > spendable
        else:
            assert hold(found) <= spendable
            assert found == cap or hold(found + 1) > spendable
