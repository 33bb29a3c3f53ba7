"""``tokenmill plan scenario``: a token factory month by month over years
(tokenmill.economics.scenario), and its CLI.

The hand-checked cases run on a user catalog of made-up GPUs with round money: throughput
comes from the perf model, money you can follow. ``mill-a`` and ``mill-b`` draw 1,000 W,
cost 6,000 USD and, with the site defaults below (no network or storage share, no node
overhead, PUE 1, full power draw, 0.10 USD/kWh, no colocation, 27 USD operations), cost
1 kW * 0.10 USD * 730 h + 27 USD = 100 USD a GPU-month to run, and 6,000 / 60 months = 100 USD
a month to write off. ``mill-b`` (four times the bandwidth and FLOP/s) ships from 2027-01.

Llama 3.1 8B has no market price, so every case gives its own. Demand of 43,200,000 output
tokens a day is 500 tokens/s, 1,000 at the 0.5 utilization: one mill-a serves it. A month is
730 hours, 43,200,000 * 365 / 12 = 1,314,000,000 tokens.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tokenmill.cli.main import app
from tokenmill.economics import reference
from tokenmill.economics.scenario import ScenarioQuery, _payback, scenario_answer
from tokenmill.errors import InvalidRequest, NotFound


def _gpu(available_from: str | None, speed: float) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": "a made-up GPU",
        "flops_bf16_per_s": 1000.0e12 * speed,
        "flops_fp8_per_s": None,
        "flops_fp4_per_s": None,
        "memory_bytes": 80_000_000_000,
        "bandwidth_bytes_per_s": 3.0e12 * speed,
        "power_w": 1000,
        "interconnect_bytes_per_s": 900.0e9,
        "purchase_usd": "6000",
        "prices_source": "made up for tests",
        "prices_as_of": "2026-01-01",
        "source": "made up for tests",
        "as_of": "2026-01-01",
    }
    if available_from is not None:
        entry["available_from"] = available_from
    return entry


def _default(value: str) -> dict[str, str]:
    return {"value": value, "unit": "test", "source": "made up for tests", "as_of": "2026-01-01"}


TEST_CATALOG: dict[str, Any] = {
    "gpus": {
        "mill-a": _gpu("2020-01-01", 1),
        "mill-b": _gpu("2027-01-01", 4),
        "mill-undated": _gpu(None, 1),
    },
    "site_defaults": {
        "cluster_network_share": _default("0"),
        "cluster_storage_share": _default("0"),
        "node_overhead_ratio": _default("0"),
        "pue": _default("1"),
        "utilization_power_ratio": _default("1"),
        "energy_usd_per_kwh": _default("0.1"),
        "colocation_usd_per_kw_month": _default("0"),
        "operations_usd_per_gpu_month": _default("27"),
        "utilization_ratio": _default("0.5"),
    },
}
CATALOGS = reference.packaged().extended(TEST_CATALOG, "test.yaml")
TOKENS_PER_MONTH = 1_314_000_000
FLAT = ScenarioQuery(
    model="llama-3.1-8b",
    output_tokens_per_day=43_200_000,
    gpus=("mill-a",),
    years=2,
    lead_months=3,
    demand_growth_per_year=Decimal(1),
    price_multiplier_per_year=Decimal(1),
    price_output_usd_per_mtok=Decimal(1),
)
GROWING = dataclasses.replace(
    FLAT,
    output_tokens_per_day=1_000_000_000,
    gpus=("mill-a", "mill-b"),
    years=3,
    demand_growth_per_year=Decimal(2),
)


def scenario(base: ScenarioQuery = FLAT, **changes: Any) -> dict[str, Any]:
    return scenario_answer(dataclasses.replace(base, **changes), CATALOGS)


def usd(text: str) -> Decimal:
    return Decimal(text)


class TestFlatMarket:
    def test_one_gpu_serves_the_demand(self) -> None:
        """500 tokens/s over 0.5 is 1,000 tokens/s: a precondition of the hand figures."""
        (kind,) = scenario()["kinds"]
        assert float(kind["output_tokens_per_s_per_gpu"]) > 1000
        assert kind["capex_usd_per_gpu"] == "6000.00"
        assert kind["cash_cost_usd_per_gpu_month"] == "100.00"
        assert kind["stops_covering_cash_cost"] is None

    def test_the_first_year_by_hand(self) -> None:
        """Ordered in January and paid then; online from April (3 months' lead): 9 months of
        1,314,000,000 tokens at 1 USD per million, 100 USD running and 100 written off."""
        shown = scenario()
        assert shown["orders"] == [
            {
                "year": 2026,
                "gpu": "mill-a",
                "gpus": 1,
                "first_online": "2026-04",
                "retired_gpus": 0,
            }
        ]
        first = shown["years"][0]
        assert first == {
            "year": 2026,
            "demand_output_tokens_per_day": 43_200_000,
            "served_ratio": "0.750",
            "price_usd_per_mtok_output": "1.00",
            "gpus_online": 1,
            "revenue_usd": "11826.00",  # 9 * 1,314
            "cash_cost_usd": "900.00",
            "capital_usd": "6000.00",
            "depreciation_usd": "900.00",
            "cash_flow_usd": "4926.00",  # 11,826 - 900 - 6,000
            "cumulative_cash_usd": "4926.00",
            "full_margin_usd": "10026.00",  # 11,826 - 900 - 900
        }

    def test_with_growth_1_and_multiplier_1_price_and_demand_stay_flat(self) -> None:
        """The second year: 12 months of the same demand at the same price, no new order."""
        second = scenario()["years"][1]
        assert second["demand_output_tokens_per_day"] == 43_200_000
        assert second["price_usd_per_mtok_output"] == "1.00"
        assert second["served_ratio"] == "1.000"
        assert second["revenue_usd"] == "15768.00"  # 12 * 1,314
        assert second["cash_cost_usd"] == "1200.00"
        assert second["capital_usd"] == "0.00"
        assert second["cumulative_cash_usd"] == "19494.00"  # 4,926 + 15,768 - 1,200

    def test_payback_is_the_month_cumulative_cash_turns_non_negative(self) -> None:
        """-6,000 in January; +1,214 a month from April: -1,144 after July, +70 after August."""
        shown = scenario()
        assert shown["payback_months"] == 7
        assert shown["payback"] == "2026-08"
        assert shown["fleet_stops_covering_full_cost"] is None

    def test_prompts_are_paid_at_the_input_price_in_the_requests_ratio(self) -> None:
        """1,000 prompt tokens per 500 output: (1 + 2 * 2) USD per million output tokens,
        6,570 USD a month."""
        shown = scenario(price_input_usd_per_mtok=Decimal(2))
        assert shown["years"][1]["revenue_usd"] == "78840.00"  # 12 * 6,570
        assert shown["years"][1]["price_usd_per_mtok_output"] == "1.00"

    @pytest.mark.parametrize(
        ("lead_months", "served_ratio", "revenue"),
        [(0, "1.000", "15768.00"), (5, "0.583", "9198.00"), (12, "0.000", "0.00")],
    )
    def test_nothing_is_served_before_the_lead_time(
        self, lead_months: int, served_ratio: str, revenue: str
    ) -> None:
        """The January order serves from month ``lead_months``; the capital is paid in
        January whatever the lead."""
        first = scenario(lead_months=lead_months)["years"][0]
        assert first["served_ratio"] == served_ratio
        assert first["revenue_usd"] == revenue
        assert first["capital_usd"] == "6000.00"
        assert first["gpus_online"] == (0 if lead_months == 12 else 1)

    def test_an_order_past_the_horizon_is_paid_and_never_served(self) -> None:
        """One year with 12 months' lead: all capital, no revenue, no payback."""
        shown = scenario(years=1, lead_months=12)
        assert shown["years"][0]["cash_flow_usd"] == "-6000.00"
        assert shown["payback"] is None

    def test_a_fleet_in_the_black_from_the_first_month_pays_back_at_once(self) -> None:
        """No lead and 10 USD per million: January earns 13,140 - 100 against 6,000 paid."""
        shown = scenario(lead_months=0, price_output_usd_per_mtok=Decimal(10))
        assert shown["years"][0]["cumulative_cash_usd"] == "150480.00"  # 12 * 13,040 - 6,000
        assert shown["payback_months"] == 0


class TestCashFlow:
    def test_cumulative_cash_is_the_running_sum_of_cash_flows(self) -> None:
        """On the packaged catalog, six years of Llama 3.3 70B: each year's cumulative cash
        is the sum of the cash flows so far (each figure rounded once, to the nano)."""
        shown = scenario_answer(ScenarioQuery("llama-3.3-70b", 100_000_000_000), CATALOGS)
        running = Decimal(0)
        for index, year in enumerate(shown["years"], start=1):
            flow = usd(year["revenue_usd"]) - usd(year["cash_cost_usd"])
            assert abs(flow - usd(year["capital_usd"]) - usd(year["cash_flow_usd"])) <= Decimal(
                "3e-9"
            )
            running += usd(year["cash_flow_usd"])
            assert abs(running - usd(year["cumulative_cash_usd"])) <= index * Decimal("1e-9")

    def test_payback_is_for_good(self) -> None:
        """The payback month is the first after which cumulative cash never dips below 0."""
        assert _payback([Fraction(-5), Fraction(1), Fraction(-1), Fraction(2), Fraction(3)]) == 3
        assert _payback([Fraction(-5), Fraction(-1), Fraction(0)]) == 2
        assert _payback([Fraction(-5), Fraction(1), Fraction(-1)]) is None

    def test_a_price_below_running_cost_stops_every_kind_at_once(self) -> None:
        """At 0.000001 USD per million no GPU earns its 100 USD a month."""
        shown = scenario(gpus=("mill-a", "mill-b"), price_output_usd_per_mtok=Decimal("0.000001"))
        assert [kind["gpu"] for kind in shown["kinds"]] == ["mill-a", "mill-b"]
        assert {kind["stops_covering_cash_cost"] for kind in shown["kinds"]} == {"2026-01"}

    def test_build_profitable_orders_nothing_that_cannot_pay(self) -> None:
        shown = scenario(
            gpus=("mill-a", "mill-b"),
            price_output_usd_per_mtok=Decimal("0.000001"),
            build="profitable",
        )
        assert shown["orders"] == []
        for year in shown["years"]:
            assert year["capital_usd"] == year["revenue_usd"] == "0.00"
            assert year["gpus_online"] == 0
            assert year["served_ratio"] == "0.000"
        assert shown["payback"] is None
        assert shown["fleet_stops_covering_full_cost"] is None

    def test_build_demand_orders_whatever_it_costs(self) -> None:
        """The same price with build demand: the GPU is bought, served from April, and the
        fleet stops covering its full cost the month it comes online."""
        shown = scenario(gpus=("mill-a", "mill-b"), price_output_usd_per_mtok=Decimal("0.000001"))
        assert [(row["gpu"], row["gpus"]) for row in shown["orders"]] == [("mill-a", 1)]
        assert shown["years"][0]["revenue_usd"] == "0.011826"  # 9 * 1,314e6 * 1e-12
        assert shown["fleet_stops_covering_full_cost"] == "2026-04"
        assert shown["payback"] is None

    def test_build_profitable_orders_what_pays(self) -> None:
        """At 1 USD per million a GPU earns its 6,000 USD back: profitable buys as demand."""
        assert scenario(build="profitable")["orders"] == scenario()["orders"]


class TestGenerations:
    def test_a_kind_is_never_ordered_for_delivery_before_it_ships(self) -> None:
        """mill-b ships from 2027-01 and is cheaper per token: it is ordered, and no mill-b
        comes online before January 2027; every order comes online 3 months after it."""
        shown = scenario(GROWING)
        kinds = {row["gpu"] for row in shown["orders"]}
        assert kinds == {"mill-a", "mill-b"}
        for row in shown["orders"]:
            assert row["first_online"] >= f"{row['year']}-04"
            if row["gpu"] == "mill-b":
                assert row["first_online"] >= "2027-01"
            else:
                assert row["first_online"] < "2027-01"  # mill-b is cheaper once it ships

    def test_a_kind_is_first_ordered_lead_months_before_it_ships(self) -> None:
        """Only mill-b, one year from 2026-01 with 3 months' lead: nothing arrives in 2026;
        the first order goes out in October for January 2027, paid in 2026."""
        shown = scenario(gpus=("mill-b",), years=1)
        assert shown["orders"] == [
            {
                "year": 2026,
                "gpu": "mill-b",
                "gpus": 1,
                "first_online": "2027-01",
                "retired_gpus": 0,
            }
        ]
        first = shown["years"][0]
        assert (first["capital_usd"], first["revenue_usd"]) == ("6000.00", "0.00")
        assert first["gpus_online"] == 0

    def test_a_long_lead_orders_a_kind_before_it_ships_for_delivery_after(self) -> None:
        """With 12 months' lead the January 2026 order arrives in January 2027: allowed."""
        shown = scenario(gpus=("mill-b",), years=2, lead_months=12)
        first = shown["orders"][0]
        assert (first["year"], first["gpu"], first["first_online"]) == (2026, "mill-b", "2027-01")
        assert shown["years"][0]["capital_usd"] == "6000.00"

    def test_a_mid_year_start_groups_years_rows_and_orders_alike(self) -> None:
        shown = scenario(GROWING, start="2026-07-01", years=2)
        for year in shown["years"]:
            ordered = sum(row["gpus"] for row in shown["orders"] if row["year"] == year["year"])
            assert usd(year["capital_usd"]) == 6000 * ordered, year["year"]


class TestProperties:
    @settings(max_examples=10, deadline=None)
    @given(
        cents=st.integers(min_value=1, max_value=500),
        more=st.integers(min_value=1, max_value=500),
    )
    def test_a_higher_starting_price_never_lowers_the_cash_at_the_end(
        self, cents: int, more: int
    ) -> None:
        def end(price_cents: int) -> Decimal:
            shown = scenario(GROWING, price_output_usd_per_mtok=Decimal(price_cents) / 100)
            return usd(shown["years"][-1]["cumulative_cash_usd"])

        assert end(cents + more) >= end(cents)

    @settings(max_examples=10, deadline=None)
    @given(
        percent=st.integers(min_value=10, max_value=150),
        more=st.integers(min_value=1, max_value=50),
    )
    def test_a_faster_price_decline_never_raises_the_cash_at_the_end(
        self, percent: int, more: int
    ) -> None:
        def end(multiplier_percent: int) -> Decimal:
            multiplier = Decimal(multiplier_percent) / 100
            shown = scenario(GROWING, price_multiplier_per_year=multiplier)
            return usd(shown["years"][-1]["cumulative_cash_usd"])

        assert end(percent) <= end(percent + more)


class TestRefused:
    @pytest.mark.parametrize(
        ("changes", "param"),
        [
            ({"years": 0}, "years"),
            ({"years": 31}, "years"),
            ({"lead_months": -1}, "lead_months"),
            ({"lead_months": 121}, "lead_months"),
            ({"build": "cheapest"}, "build"),
            ({"start": "2026-13-01"}, "start"),
            ({"start": "soon"}, "start"),
            ({"demand_growth_per_year": Decimal(0)}, "demand_growth_per_year"),
            ({"demand_growth_per_year": Decimal(-2)}, "demand_growth_per_year"),
            ({"demand_growth_per_year": Decimal("NaN")}, "demand_growth_per_year"),
            ({"demand_growth_per_year": Decimal(101)}, "demand_growth_per_year"),
            ({"price_multiplier_per_year": Decimal(0)}, "price_multiplier_per_year"),
            ({"output_tokens_per_day": 0}, "output_tokens_per_day"),
            ({"itl_ms_max": 0.001}, "itl_ms_max"),
            ({"gpus": ("mill-undated",)}, "gpus"),
        ],
    )
    def test_bad_input_is_refused_naming_the_field(
        self, changes: dict[str, Any], param: str
    ) -> None:
        with pytest.raises(InvalidRequest) as caught:
            scenario(**changes)
        assert caught.value.param == param

    def test_a_model_with_no_market_price_needs_a_price(self) -> None:
        with pytest.raises(InvalidRequest) as caught:
            scenario(price_output_usd_per_mtok=None)
        assert caught.value.param == "price_output_usd_per_mtok"
        assert "llama-3.1-8b" in caught.value.message

    def test_an_unknown_model_or_gpu_is_not_found(self) -> None:
        with pytest.raises(NotFound) as model:
            scenario(model="llama-9")
        assert model.value.param == "model"
        with pytest.raises(NotFound) as gpu:
            scenario(gpus=("h900",))
        assert gpu.value.param == "gpu"

    @pytest.mark.parametrize("ratio", ["0", "1.5", "-1"])
    def test_a_utilization_outside_zero_to_one_is_refused(self, ratio: str) -> None:
        with pytest.raises(InvalidRequest) as caught:
            scenario(utilization_max=Decimal(ratio))
        assert caught.value.param == "utilization_max"

    def test_a_prompt_price_given_alone_is_used(self) -> None:
        base = ScenarioQuery("llama-3.3-70b", 100_000_000_000, years=2)
        market = scenario_answer(base, reference.packaged())
        dearer = dataclasses.replace(base, price_input_usd_per_mtok=Decimal(10))
        shown = scenario_answer(dearer, reference.packaged())
        assert usd(shown["years"][1]["revenue_usd"]) > usd(market["years"][1]["revenue_usd"])


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["plan", "scenario", *args])


def refused(*args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(TEST_CATALOG))
    return path


FLAT_OPTIONS = (
    "--model", "llama-3.1-8b", "--tokens-per-day", "43200000", "--gpu", "mill-a",
    "--years", "2", "--lead-months", "3", "--demand-growth", "1",
    "--price-multiplier", "1", "--price-output", "1",
)  # fmt: skip


class TestCli:
    def test_json_equals_scenario_answer(self, catalog_file: Path) -> None:
        result = cli(*FLAT_OPTIONS, "--catalog", str(catalog_file), "--json")
        assert result.exit_code == 0, result.stderr
        assert orjson.loads(result.stdout) == scenario()

    def test_json_on_the_packaged_catalog_equals_scenario_answer(self) -> None:
        result = cli("--years", "3", "--price-input", "0.2", "--price-output", "0.5",
                     "--build", "profitable", "--start", "2026-03-01", "--json")  # fmt: skip
        assert result.exit_code == 0, result.stderr
        query = ScenarioQuery(
            "llama-3.3-70b",
            100_000_000_000,
            years=3,
            price_input_usd_per_mtok=Decimal("0.2"),
            price_output_usd_per_mtok=Decimal("0.5"),
            build="profitable",
            start="2026-03-01",
        )
        assert orjson.loads(result.stdout) == scenario_answer(query, reference.packaged())

    def test_the_table_shows_the_years_and_the_verdict(self, catalog_file: Path) -> None:
        result = cli(*FLAT_OPTIONS, "--catalog", str(catalog_file))
        assert result.exit_code == 0, result.stderr
        assert "llama-3.1-8b from 2026-01-01: cash flow by year (USD)" in result.stdout
        assert "2027" in result.stdout
        assert "verdict" in result.stdout
        assert "2026-08" in result.stdout  # the payback month
        assert "mill-a never" in result.stdout

    @pytest.mark.parametrize(
        ("args", "words"),
        [
            (("--years", "0"), "years"),
            (("--years", "31"), "years"),
            (("--lead-months", "121"), "lead_months"),
            (("--lead-months", "-1"), "lead_months"),
            (("--build", "cheapest"), "build"),
            (("--start", "soon"), "start"),
            (("--demand-growth", "0"), "demand_growth_per_year"),
            (("--demand-growth", "two"), "--demand-growth"),
            (("--price-multiplier", "-0.5"), "--price-multiplier"),
            (("--price-output", "1e3"), "--price-output"),
            (("--tokens-per-day", "0"), "output_tokens_per_day"),
            (("--model", "llama-3.1-8b"), "market price"),
            (("--gpu", "h900"), "unknown GPU"),
        ],
    )
    def test_bad_options_are_one_error_line(self, args: tuple[str, ...], words: str) -> None:
        assert words in refused("--years", "2", *args)
