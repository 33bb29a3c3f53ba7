"""A mining site's megawatts as a token factory, beside bitcoin mining
(tokenmill.economics.site and ``tokenmill plan site``): figures worked out by hand from the
formulas of the module docstring and the packaged ``site_defaults.yaml``.

The packaged defaults the hand computations use: PUE 1.3, node overhead 0.8, power draw 0.8
of peak, utilization 0.6, energy 0.0806 USD/kWh, 5 years to write GPUs off, 15 years for the
retrofit at 9,000,000 USD per MW of IT, 18 months to convert, operations 50 USD per
GPU-month, cluster capex 85% servers / 10% network / 5% storage; mining at 20 J/TH, a
mining PUE of 1.05, a hashprice of 38.2 USD per PH/s per day, a subsidy of 3.125 BTC.
An H100 SXM draws 700 W and costs 27,500 USD. Throughput is the perf model's (not hand
arithmetic): what is checked here is what the site does with it.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from fractions import Fraction
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tokenmill.cli.main import app
from tokenmill.economics import perf, reference
from tokenmill.economics.queries import PerfQuery, setup_of
from tokenmill.economics.site import MiningQuery, SiteQuery, site_answer
from tokenmill.errors import InvalidRequest

CATALOGS = reference.packaged()
LLAMA_70B_ON_TWO_H100 = PerfQuery(gpu="h100-sxm", model="llama-3.3-70b", gpus=2, precision="fp8")
BASE = SiteQuery(perf=LLAMA_70B_ON_TWO_H100, site_mw=Decimal(100))
NANO = Fraction(1, 10**9)
CENT = Decimal("0.01")
COST_LINES = ("cost_gpus", "cost_retrofit", "cost_energy", "cost_operations")
# Llama 3.3 70B with no market price, for the catalog's own lookups.
UNPRICED_MODEL = {
    "my-llama": {
        "name": "My Llama",
        "parameters": 70600000000,
        "parameters_active": 70600000000,
        "layers": 80,
        "hidden_size": 8192,
        "heads_query": 64,
        "heads_kv": 8,
        "head_dim": 128,
        "kv_bytes_per_token_bf16": 327680,
        "context_tokens": 131072,
        "source": "a copy of llama-3.3-70b for tests",
        "as_of": "2026-11-25",
    }
}


def answer(catalogs: reference.Catalogs = CATALOGS, **changes: Any) -> dict[str, Any]:
    """100 MW serving Llama 3.3 70B on replicas of 2 H100 SXM, unless ``changes`` say."""
    return site_answer(dataclasses.replace(BASE, **changes), catalogs)


def mining(**fields: Any) -> MiningQuery:
    return MiningQuery(**{name: Decimal(value) for name, value in fields.items()})


def usd(text: str) -> Fraction:
    return Fraction(Decimal(text))


def within_a_nano(text: str, expected: Fraction) -> bool:
    """The answer rounds to whole nano-units once, so it is within one of the exact figure."""
    return abs(usd(text) - expected) <= NANO


def output_tokens_per_s(query: PerfQuery = LLAMA_70B_ON_TWO_H100) -> float:
    setup = setup_of(query, CATALOGS)
    point = perf.operating_point(setup, query.input_tokens, query.output_tokens, None)
    return point.output_tokens_per_s


def plan_site(*args: str) -> Any:
    result = CliRunner().invoke(app, ["plan", "site", *args, "--json"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return orjson.loads(result.stdout)


def refused(*args: str) -> str:
    result = CliRunner().invoke(app, ["plan", "site", *args])
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stdout + result.stderr
    return result.stderr


class TestPower:
    def test_it_power_is_the_site_over_the_pue(self) -> None:
        """13 MW at the meter / PUE 1.3 = 10 MW of IT; 100 MW / 1.25 = 80 MW."""
        assert answer(site_mw=Decimal(13))["it_mw"] == "10.000"
        assert answer(pue=Decimal("1.25"))["it_mw"] == "80.000"

    def test_gpus_fill_the_it_power_in_whole_replicas(self) -> None:
        """1.3 MW / 1.3 = 1,000,000 W of IT; an H100 with its node draws 700 * 1.8 = 1,260 W;
        1,000,000 / 1,260 = 793.65 GPUs, 396.8 replicas of 2: 396 replicas, 792 GPUs."""
        shown = answer(site_mw=Decimal("1.3"))
        assert shown["replicas"] == 396
        assert shown["gpus"] == 792

    def test_without_node_overhead_a_gpu_draws_its_board_power(self) -> None:
        """1,000,000 W / 700 W = 1,428.6 GPUs: 714 replicas of 2, 1,428 GPUs."""
        shown = answer(site_mw=Decimal("1.3"), node_overhead_ratio=Decimal(0))
        assert (shown["replicas"], shown["gpus"]) == (714, 1428)

    def test_a_larger_replica_rounds_down_to_whole_replicas_of_its_size(self) -> None:
        """13 MW / 1.3 = 10,000,000 W; a replica of 8 draws 8 * 1,260 = 10,080 W;
        10,000,000 / 10,080 = 992.06: 992 replicas, 7,936 GPUs."""
        shown = answer(site_mw=Decimal(13), perf=dataclasses.replace(LLAMA_70B_ON_TWO_H100, gpus=8))
        assert (shown["replicas"], shown["gpus"]) == (992, 7936)

    def test_the_answer_names_the_replica_and_echoes_the_site(self) -> None:
        """The site's power comes back as given, beside the GPU and model ids."""
        shown = answer(site_mw=Decimal("12.5"))
        assert (shown["site_mw"], shown["gpu"], shown["model"]) == (
            "12.5",
            "h100-sxm",
            "llama-3.3-70b",
        )


class TestTokens:
    def test_output_tokens_are_replicas_times_throughput_all_day_at_the_utilization(self) -> None:
        """1.3 MW: 396 replicas * the replica's output tokens/s * 86,400 s * 0.6."""
        expected = 396 * output_tokens_per_s() * 86_400 * 0.6
        shown = answer(site_mw=Decimal("1.3"))
        assert shown["output_tokens_per_day"] == pytest.approx(expected, abs=1)

    def test_prompt_tokens_follow_the_request_shape(self) -> None:
        """Requests of 3,000 prompt and 1,000 output tokens: three prompt tokens per output.
        100 MW / 1.3 = 76,923,076.9 W / 2,520 W a replica = 30,525.03: 30,525 replicas."""
        shape = dataclasses.replace(LLAMA_70B_ON_TWO_H100, input_tokens=3000)
        shown = answer(perf=shape)
        assert shown["prompt_tokens_per_day"] == pytest.approx(
            3 * shown["output_tokens_per_day"], abs=3
        )
        assert (shown["replicas"], shown["gpus"]) == (30_525, 61_050)
        expected = 30_525 * output_tokens_per_s(shape) * 86_400 * 0.6
        assert shown["output_tokens_per_day"] == pytest.approx(expected, abs=1)

    def test_half_the_utilization_gives_half_the_tokens(self) -> None:
        """Tokens scale with the share of hours serving: 0.3 gives half of 0.6."""
        full = answer(utilization_ratio=Decimal("0.6"))["output_tokens_per_day"]
        half = answer(utilization_ratio=Decimal("0.3"))["output_tokens_per_day"]
        assert half == pytest.approx(full / 2, abs=1)


class TestAiDay:
    """1.3 MW (1 MW of IT, 792 GPUs in 396 replicas), GPUs at 17,000 USD, energy at 0.10
    USD/kWh, tokens at 0.20 in and 1.00 out per million."""

    QUERY = dict(
        site_mw=Decimal("1.3"),
        purchase_usd_per_gpu=Decimal(17000),
        energy_usd_per_kwh=Decimal("0.10"),
        price_input_usd_per_mtok=Decimal("0.20"),
        price_output_usd_per_mtok=Decimal("1.00"),
    )

    def test_revenue_is_prompt_and_output_tokens_at_their_prices(self) -> None:
        """Equal prompts and outputs: tokens/day / 1e6 * (0.20 + 1.00)."""
        shown = answer(**self.QUERY)
        tokens = 396 * output_tokens_per_s() * 86_400 * 0.6
        revenue = float(shown["ai_usd_per_day"]["revenue"])
        assert revenue == pytest.approx(tokens / 1e6 * 1.2, rel=1e-9)
        assert shown["price_usd_per_mtok"] == {"input": "0.20", "output": "1.00", "source": "given"}

    def test_gpu_capital_carries_the_network_and_is_written_off_over_the_years(self) -> None:
        """792 * 17,000 * (1 + 0.15 / 0.85 = 20/17) = 15,840,000 USD; / (5 * 365) per day."""
        shown = answer(**self.QUERY)
        assert shown["conversion"]["gpu_capex_usd"] == "15840000.00"
        assert within_a_nano(shown["ai_usd_per_day"]["cost_gpus"], Fraction(15_840_000, 1825))

    def test_the_retrofit_is_paid_per_mw_of_it_over_the_facility_life(self) -> None:
        """9,000,000 USD * 1 MW of IT = 9,000,000 USD; / (15 * 365) = 1,643.84 per day."""
        shown = answer(**self.QUERY)
        assert shown["conversion"]["retrofit_capex_usd"] == "9000000.00"
        assert within_a_nano(shown["ai_usd_per_day"]["cost_retrofit"], Fraction(9_000_000, 5475))
        assert shown["conversion"]["capex_usd"] == "24840000.00"

    def test_energy_is_the_gpus_it_power_at_the_power_ratio_and_the_pue(self) -> None:
        """792 * 1.26 kW = 997.92 kW * 0.8 * 1.3 * 24 h * 0.10 USD = 2,490.80832 USD."""
        shown = answer(**self.QUERY)
        assert shown["ai_usd_per_day"]["cost_energy"] == "2490.80832"

    def test_operations_are_per_gpu_month_spread_over_the_days(self) -> None:
        """50 USD * 792 GPUs * 12 / 365 = 475,200 / 365 = 1,301.92 per day."""
        shown = answer(**self.QUERY)
        assert within_a_nano(shown["ai_usd_per_day"]["cost_operations"], Fraction(475_200, 365))

    def test_the_margin_is_the_revenue_less_every_cost(self) -> None:
        """Margin = revenue - (GPUs + retrofit + energy + operations), within rounding."""
        day = answer(**self.QUERY)["ai_usd_per_day"]
        costs = sum(usd(day[line]) for line in COST_LINES)
        assert abs(usd(day["margin"]) - (usd(day["revenue"]) - costs)) <= 5 * NANO

    def test_the_market_price_is_the_lowest_output_price_of_the_model(self) -> None:
        """llama-3.3-70b: Together 0.88/0.88, DeepInfra 0.23/0.40 and 0.13/0.38: the last."""
        price = answer()["price_usd_per_mtok"]
        assert (price["input"], price["output"]) == ("0.13", "0.38")
        assert price["source"] == "DeepInfra Llama-3.3-70B FP8 Turbo, 2026-06-01"

    def test_a_model_without_a_market_price_is_answered_at_given_prices(self) -> None:
        """gpt-oss-20b has no market price; both prices given, it plans."""
        query = PerfQuery(gpu="h100-sxm", model="gpt-oss-20b", gpus=1, precision="fp8")
        shown = answer(
            perf=query,
            price_input_usd_per_mtok=Decimal(0),
            price_output_usd_per_mtok=Decimal("0.30"),
        )
        assert shown["price_usd_per_mtok"]["source"] == "given"
        assert shown["model"] == "gpt-oss-20b"


class TestMining:
    def test_the_research_rule_of_thumb(self) -> None:
        """economics.md s4: at 20 J/TH 1 MW of miners = 1,000,000 W / 20 J/TH = 50,000 TH/s
        = 50 PH/s; at 40 USD per PH/s per day that is 2,000 USD a day."""
        shown = answer(site_mw=Decimal(1), mining=mining(hashprice_usd_per_ph_day=40, mining_pue=1))
        day = shown["mining_usd_per_day"]
        assert day["hashrate_ph_s"] == "50.0"
        assert day["revenue"] == "2000.00"
        assert (day["hashprice_usd_per_ph_day"], day["hashprice_source"]) == ("40.00", "given")

    def test_the_default_mining_pue_feeds_fewer_miners(self) -> None:
        """100 MW / 1.05 / 20 J/TH = 4,761.9 PH/s; * 38.2 USD = 3,820,000,000 / 21,000."""
        day = answer()["mining_usd_per_day"]
        assert day["hashrate_ph_s"] == "4761.9"
        assert (day["hashprice_usd_per_ph_day"], day["hashprice_source"]) == ("38.20", "default")
        assert within_a_nano(day["revenue"], Fraction(3_820_000_000, 21_000))

    def test_less_efficient_miners_hash_less(self) -> None:
        """1 MW at 25 J/TH = 40 PH/s; * 40 USD = 1,600 USD a day."""
        shown = answer(
            site_mw=Decimal(1),
            mining=mining(hashprice_usd_per_ph_day=40, mining_pue=1, miner_j_per_th=25),
        )
        assert shown["mining_usd_per_day"]["hashrate_ph_s"] == "40.0"
        assert shown["mining_usd_per_day"]["revenue"] == "1600.00"

    def test_the_hashprice_derives_from_the_btc_price_and_the_network(self) -> None:
        """3.125 BTC * 144 blocks = 450 BTC a day * 91,000 USD = 40,950,000 USD over
        1,100 EH/s = 1,100,000 PH/s: 37.227272727 USD per PH/s per day."""
        shown = answer(mining=mining(btc_price_usd=91000, network_hashrate_eh_s=1100))
        day = shown["mining_usd_per_day"]
        assert day["hashprice_source"] == "derived"
        assert within_a_nano(day["hashprice_usd_per_ph_day"], Fraction(40_950_000, 1_100_000))

    def test_fees_add_to_the_subsidy(self) -> None:
        """(3.125 + 0.1) * 144 = 464.4 BTC * 91,000 = 42,260,400 USD / 1,100,000 PH/s."""
        shown = answer(
            mining=mining(btc_price_usd=91000, network_hashrate_eh_s=1100, fees_btc_per_block="0.1")
        )
        price = shown["mining_usd_per_day"]["hashprice_usd_per_ph_day"]
        assert within_a_nano(price, Fraction(42_260_400, 1_100_000))

    def test_a_given_hashprice_wins_over_the_btc_price(self) -> None:
        """A hashprice given beside a BTC price and hashrate is used as given."""
        shown = answer(
            mining=mining(
                hashprice_usd_per_ph_day=40, btc_price_usd=91000, network_hashrate_eh_s=1100
            )
        )
        assert shown["mining_usd_per_day"]["hashprice_source"] == "given"

    def test_mining_pays_for_the_whole_site_s_energy(self) -> None:
        """100 MW * 1,000 kW * 24 h * 0.05 USD = 120,000 USD, whatever the mining PUE."""
        for pue in ("1", "1.05", "1.2"):
            shown = answer(energy_usd_per_kwh=Decimal("0.05"), mining=mining(mining_pue=pue))
            assert shown["mining_usd_per_day"]["cost_energy"] == "120000.00"

    def test_the_mining_margin_is_revenue_less_energy(self) -> None:
        """1.3 MW at mining PUE 1: 65 PH/s * 40 = 2,600; energy 1.3 * 1,000 * 24 * 0.10 =
        3,120; margin -520."""
        shown = answer(
            site_mw=Decimal("1.3"),
            energy_usd_per_kwh=Decimal("0.10"),
            mining=mining(hashprice_usd_per_ph_day=40, mining_pue=1),
        )
        day = shown["mining_usd_per_day"]
        assert (day["revenue"], day["cost_energy"], day["margin"]) == (
            "2600.00",
            "3120.00",
            "-520.00",
        )


class TestBreakEven:
    def test_at_the_break_even_price_ai_earns_what_mining_did(self) -> None:
        """Output tokens priced at the break-even (prompts free): AI margin = mining margin."""
        first = answer()
        price = Decimal(first["conversion"]["break_even_usd_per_mtok_output"])
        again = answer(price_input_usd_per_mtok=Decimal(0), price_output_usd_per_mtok=price)
        ai = Decimal(again["ai_usd_per_day"]["margin"])
        mined = Decimal(again["mining_usd_per_day"]["margin"])
        assert abs(ai - mined) <= CENT
        assert again["mining_usd_per_day"] == first["mining_usd_per_day"]

    def test_the_break_even_is_costs_and_the_mining_margin_per_million_output_tokens(
        self,
    ) -> None:
        """(AI costs + mining margin) / (output tokens / 1e6); prices paid do not enter."""
        shown = answer(energy_usd_per_kwh=Decimal("0.05"))
        costs = sum(usd(shown["ai_usd_per_day"][line]) for line in COST_LINES)
        given_up = usd(shown["mining_usd_per_day"]["margin"])
        expected = (costs + given_up) / Fraction(shown["output_tokens_per_day"], 10**6)
        assert float(usd(shown["conversion"]["break_even_usd_per_mtok_output"])) == pytest.approx(
            float(expected), rel=1e-9
        )
        priced = answer(
            energy_usd_per_kwh=Decimal("0.05"),
            price_input_usd_per_mtok=Decimal(9),
            price_output_usd_per_mtok=Decimal(9),
        )
        assert (
            priced["conversion"]["break_even_usd_per_mtok_output"]
            == shown["conversion"]["break_even_usd_per_mtok_output"]
        )

    def test_a_losing_mine_lowers_the_break_even_below_the_ai_cost(self) -> None:
        """Mining that loses money gives nothing up: at 1 USD/kWh mining loses, so the
        break-even is below the AI cost per million output tokens."""
        shown = answer(energy_usd_per_kwh=Decimal(1))
        assert Decimal(shown["mining_usd_per_day"]["margin"]) < 0
        costs = sum(usd(shown["ai_usd_per_day"][line]) for line in COST_LINES)
        cost_per_mtok = costs / Fraction(shown["output_tokens_per_day"], 10**6)
        assert usd(shown["conversion"]["break_even_usd_per_mtok_output"]) < cost_per_mtok


class TestPayback:
    def test_payback_is_the_conversion_plus_capital_over_the_monthly_gain(self) -> None:
        """18 months + capex / ((AI cash margin - mining margin) * 365 / 12), to one decimal;
        the cash margin is revenue less energy and operations (the write-offs are the
        capital paying itself back, so they are not taken twice)."""
        shown = answer(
            price_input_usd_per_mtok=Decimal("0.50"), price_output_usd_per_mtok=Decimal(2)
        )
        ai = shown["ai_usd_per_day"]
        cash = usd(ai["revenue"]) - usd(ai["cost_energy"]) - usd(ai["cost_operations"])
        gain = cash - usd(shown["mining_usd_per_day"]["margin"])
        assert gain > 0
        expected = 18 + usd(shown["conversion"]["capex_usd"]) / (gain * Fraction(365, 12))
        assert shown["conversion"]["months"] == "18"
        assert float(shown["conversion"]["payback_months"]) == pytest.approx(
            float(expected), abs=0.05 + 1e-6
        )

    def test_a_faster_conversion_pays_back_sooner_by_the_months_saved(self) -> None:
        """The capital term is the same: 18 months -> 6 months is 12 fewer months."""
        prices = dict(
            price_input_usd_per_mtok=Decimal("0.50"), price_output_usd_per_mtok=Decimal(2)
        )
        slow = answer(**prices)["conversion"]
        fast = answer(conversion_months=Decimal(6), **prices)["conversion"]
        assert fast["months"] == "6"
        assert float(slow["payback_months"]) - float(fast["payback_months"]) == pytest.approx(
            12, abs=0.11
        )

    def test_payback_is_never_when_ai_earns_less_than_mining(self) -> None:
        """Output at 0.01 USD per million cannot beat mining: no payback."""
        shown = answer(
            price_input_usd_per_mtok=Decimal(0), price_output_usd_per_mtok=Decimal("0.01")
        )
        assert Decimal(shown["ai_usd_per_day"]["margin"]) < Decimal(
            shown["mining_usd_per_day"]["margin"]
        )
        assert shown["conversion"]["payback_months"] is None

    def test_below_the_break_even_ai_earns_less_than_mining_and_above_it_more(self) -> None:
        """1% under the break-even the AI margin (write-offs taken) is below mining's, 1% over
        it above; the payback shortens as the price rises."""
        break_even = Decimal(answer()["conversion"]["break_even_usd_per_mtok_output"])
        below = answer(
            price_input_usd_per_mtok=Decimal(0),
            price_output_usd_per_mtok=break_even * Decimal("0.99"),
        )
        above = answer(
            price_input_usd_per_mtok=Decimal(0),
            price_output_usd_per_mtok=break_even * Decimal("1.01"),
        )
        mining = Decimal(below["mining_usd_per_day"]["margin"])
        assert Decimal(below["ai_usd_per_day"]["margin"]) < mining
        assert Decimal(above["ai_usd_per_day"]["margin"]) > mining
        assert float(above["conversion"]["payback_months"]) < float(
            below["conversion"]["payback_months"]
        )


SITE_MW = st.integers(min_value=1, max_value=50_000).map(lambda tenths: Decimal(tenths) / 10)
CENTS = st.integers(min_value=1, max_value=2_000).map(lambda cents: Decimal(cents) / 100)


class TestProperties:
    @settings(max_examples=60, deadline=None)
    @given(SITE_MW, SITE_MW)
    def test_more_megawatts_never_give_fewer_gpus_or_less_revenue(
        self, one: Decimal, other: Decimal
    ) -> None:
        """A bigger site powers at least as many GPUs and earns at least as much."""
        small, large = sorted((one, other))
        less = answer(site_mw=small)
        more = answer(site_mw=large)
        assert less["gpus"] <= more["gpus"]
        assert usd(less["ai_usd_per_day"]["revenue"]) <= usd(more["ai_usd_per_day"]["revenue"])

    @settings(max_examples=60, deadline=None)
    @given(CENTS, CENTS, CENTS, CENTS)
    def test_a_higher_token_price_never_lowers_the_ai_margin(
        self, input_one: Decimal, input_other: Decimal, one: Decimal, other: Decimal
    ) -> None:
        """Raising the prompt or the output price never lowers the AI margin."""
        input_low, input_high = sorted((input_one, input_other))
        low, high = sorted((one, other))

        def margin(price_input: Decimal, price_output: Decimal) -> Fraction:
            day = answer(
                price_input_usd_per_mtok=price_input, price_output_usd_per_mtok=price_output
            )["ai_usd_per_day"]
            return usd(day["margin"])

        assert margin(input_low, low) <= margin(input_low, high)
        assert margin(input_low, low) <= margin(input_high, low)

    @settings(max_examples=60, deadline=None)
    @given(
        st.integers(min_value=0, max_value=300).map(lambda mills: Decimal(mills) / 1000),
        st.integers(min_value=0, max_value=300).map(lambda mills: Decimal(mills) / 1000),
    )
    def test_cheaper_energy_never_lowers_either_margin(self, one: Decimal, other: Decimal) -> None:
        """Cheaper power never lowers the AI margin nor the mining margin."""
        cheap, dear = (answer(energy_usd_per_kwh=price) for price in sorted((one, other)))
        for side in ("ai_usd_per_day", "mining_usd_per_day"):
            assert usd(cheap[side]["margin"]) >= usd(dear[side]["margin"])

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(st.integers(min_value=1, max_value=20_000), min_size=2, max_size=2, unique=True)
    )
    def test_a_higher_hashprice_raises_the_break_even_price(self, cents: list[int]) -> None:
        """The more mining earns, the more a token must fetch to beat it."""
        low, high = (
            answer(mining=MiningQuery(hashprice_usd_per_ph_day=Decimal(value) / 100))
            for value in sorted(cents)
        )
        key = "break_even_usd_per_mtok_output"
        assert usd(low["conversion"][key]) < usd(high["conversion"][key])


def unpriced_catalogs() -> reference.Catalogs:
    return CATALOGS.extended({"models": UNPRICED_MODEL}, "test.yaml")


class TestRefusals:
    @pytest.mark.parametrize(
        ("changes", "param"),
        [
            ({"site_mw": Decimal(0)}, "site_mw"),
            ({"site_mw": Decimal(-5)}, "site_mw"),
            ({"site_mw": Decimal(100_001)}, "site_mw"),
            ({"site_mw": Decimal("NaN")}, "site_mw"),
            ({"site_mw": Decimal("Infinity")}, "site_mw"),
            ({"site_mw": Decimal("0.002")}, "site_mw"),  # 1,538 W of IT < 2,520 W a replica
            ({"pue": Decimal("0.99")}, "pue"),
            ({"pue": Decimal(0)}, "pue"),
            ({"utilization_ratio": Decimal("1.01")}, "utilization_ratio"),
            ({"utilization_ratio": Decimal(0)}, "utilization_ratio"),
            ({"energy_usd_per_kwh": Decimal(-1)}, "energy_usd_per_kwh"),
            (
                {"price_output_usd_per_mtok": Decimal(0), "price_input_usd_per_mtok": Decimal(1)},
                "price_output_usd_per_mtok",
            ),
            ({"mining": mining(btc_price_usd=91000)}, "network_hashrate_eh_s"),
            ({"mining": mining(network_hashrate_eh_s=1100)}, "network_hashrate_eh_s"),
            ({"mining": mining(hashprice_usd_per_ph_day=0)}, "hashprice_usd_per_ph_day"),
            ({"mining": mining(miner_j_per_th=0)}, "miner_j_per_th"),
            ({"conversion_months": Decimal(-1)}, "conversion_months"),
        ],
    )
    def test_bad_input_is_refused_naming_the_param(
        self, changes: dict[str, Any], param: str
    ) -> None:
        """Each bad figure is an InvalidRequest whose param names it."""
        with pytest.raises(InvalidRequest) as refusal:
            answer(**changes)
        assert refusal.value.param == param

    def test_the_largest_site_is_answered(self) -> None:
        """100,000 MW, the limit, is still answered."""
        assert answer(site_mw=Decimal(100_000))["site_mw"] == "100000"

    def test_a_catalog_model_with_no_market_price_needs_both_prices(self) -> None:
        """gpt-oss-20b has no market price: without prices there is nothing to sell at."""
        query = PerfQuery(gpu="h100-sxm", model="gpt-oss-20b", gpus=1, precision="fp8")
        with pytest.raises(InvalidRequest) as refusal:
            answer(perf=query)
        assert refusal.value.param == "price_output_usd_per_mtok"
        assert "gpt-oss-20b" in refusal.value.message

    def test_a_users_model_with_no_market_price_needs_both_prices(self) -> None:
        """A model from the user's catalog has no market price until both are given."""
        query = dataclasses.replace(LLAMA_70B_ON_TWO_H100, model="my-llama")
        with pytest.raises(InvalidRequest) as refusal:
            answer(unpriced_catalogs(), perf=query)
        assert refusal.value.param == "price_output_usd_per_mtok"
        shown = answer(
            unpriced_catalogs(),
            perf=query,
            price_input_usd_per_mtok=Decimal("0.10"),
            price_output_usd_per_mtok=Decimal("0.40"),
        )
        assert shown["model"] == "my-llama"
        assert shown["gpus"] == answer()["gpus"]  # the same replica as llama-3.3-70b

    def test_a_mining_pue_below_one_is_refused(self) -> None:
        """A mining PUE below 1 would hash with more power than the site has."""
        with pytest.raises(InvalidRequest) as refusal:
            answer(mining=mining(mining_pue="0.5"))
        assert refusal.value.param == "mining_pue"

    def test_a_negative_gpu_price_is_refused(self) -> None:
        """A GPU cannot cost less than nothing."""
        with pytest.raises(InvalidRequest) as refusal:
            answer(purchase_usd_per_gpu=Decimal(-1))
        assert refusal.value.param == "purchase_usd_per_gpu"

    def test_a_gpu_price_of_zero_is_not_replaced_by_the_catalog_price(self) -> None:
        """GPUs given at 0 USD (already owned) add no GPU capital."""
        shown = answer(purchase_usd_per_gpu=Decimal(0))
        assert shown["conversion"]["gpu_capex_usd"] == "0.00"

    def test_a_given_output_price_alone_is_used(self) -> None:
        """An output price given without an input price is not thrown away."""
        shown = answer(price_output_usd_per_mtok=Decimal(2))
        assert shown["price_usd_per_mtok"]["output"] == "2.00"

    def test_a_power_ratio_above_one_is_refused_naming_it(self) -> None:
        """The refusal names the ratio that is wrong."""
        with pytest.raises(InvalidRequest) as refusal:
            answer(utilization_power_ratio=Decimal(2))
        assert refusal.value.param == "utilization_power_ratio"


class TestCommand:
    def test_the_json_is_the_site_answer(self) -> None:
        """``plan site --mw 100`` with every other option left: the defaults' answer."""
        assert plan_site("--mw", "100") == answer()

    def test_the_options_reach_the_answer(self) -> None:
        """Every option of the command lands in the query it answers."""
        shown = plan_site(
            "--mw", "13", "--pue", "1.25", "--energy", "0.05", "--utilization", "0.5",
            "--purchase", "20000", "--price-input", "0.2", "--price-output", "1",
            "--btc-price", "91000", "--hashrate", "1100", "--fees", "0.1",
            "--miner-j-per-th", "18", "--conversion-cost", "8000000",
            "--conversion-months", "12",
        )  # fmt: skip
        expected = answer(
            site_mw=Decimal(13),
            pue=Decimal("1.25"),
            energy_usd_per_kwh=Decimal("0.05"),
            utilization_ratio=Decimal("0.5"),
            purchase_usd_per_gpu=Decimal(20000),
            price_input_usd_per_mtok=Decimal("0.2"),
            price_output_usd_per_mtok=Decimal(1),
            mining=mining(
                btc_price_usd=91000,
                network_hashrate_eh_s=1100,
                fees_btc_per_block="0.1",
                miner_j_per_th=18,
            ),
            conversion_usd_per_mw_it=Decimal(8_000_000),
            conversion_months=Decimal(12),
        )
        assert shown == expected
        assert shown["it_mw"] == "10.400"  # 13 / 1.25

    def test_the_table_shows_the_margins_and_the_payback(self) -> None:
        """Without --json a table; a payback that never comes reads never."""
        result = CliRunner().invoke(
            app, ["plan", "site", "--mw", "100", "--price-input", "0", "--price-output", "0.01"]
        )
        assert result.exit_code == 0, result.stderr
        assert "break-even price per million output tokens" in result.stdout
        assert "never" in result.stdout

    @pytest.mark.parametrize(
        ("args", "words"),
        [
            (("--mw", "abc"), "--mw"),
            (("--mw", "0"), "site_mw"),
            (("--mw", "100001"), "site_mw"),
            (("--mw", "0.001"), "replica"),
            (("--mw", "100", "--hashrate", "1100"), "btc_price_usd"),
            (("--mw", "100", "--btc-price", "91000"), "network_hashrate_eh_s"),
            (("--mw", "100", "--pue", "0.9"), "pue"),
            (("--mw", "100", "--utilization", "2"), "utilization"),
            (("--mw", "100", "--energy", "1e-3"), "--energy"),
            (("--mw", "100", "--model", "gpt-oss-20b", "--gpus", "1"), "gpt-oss-20b"),
        ],
    )
    def test_bad_input_is_one_error_line(self, args: tuple[str, ...], words: str) -> None:
        """Bad input: one error line on stderr, exit 1, no traceback."""
        assert words in refused(*args)
