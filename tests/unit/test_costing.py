"""What a pool costs and what its tokens cost (tokenmill.economics.costing), with the
supply-chain split (tokenmill.economics.chain): figures worked out by hand from the formulas
of ``cost.py`` and the packaged ``site_defaults.yaml``.

The packaged defaults the hand computations use: energy 0.0806 USD/kWh, PUE 1.3, node
overhead 0.8, power draw 0.8 of peak, 5 years straight-line to a residual of 0, colocation
163.44 USD per kW of IT load per month, operations 50 USD per GPU-month, utilization 0.6,
cluster capex 85% servers / 10% network / 5% storage, power and cooling 0.6 of a build.
An H100 SXM is 700 W, 27,500 USD to buy and 2.35 USD per hour to rent.
"""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenmill.economics import perf, reference
from tokenmill.economics.chain import LINES, chain_per_mtok
from tokenmill.economics.cost import CostBreakdown, pool_cost_per_hour, token_costs
from tokenmill.economics.costing import (
    POOL_GPUS_MAX,
    CostQuery,
    cost_answer,
    pool_of,
    price_answer,
    price_for_margin,
)
from tokenmill.economics.queries import PerfQuery, setup_of
from tokenmill.errors import InvalidRequest, NotFound
from tokenmill.money import parse_amount

CATALOGS = reference.packaged()
LLAMA_70B_ON_TWO_H100 = PerfQuery(gpu="h100-sxm", model="llama-3.3-70b", gpus=2, precision="fp8")
HOURS_WRITTEN_OFF = 5 * 8_760  # the default 5 years of 8,760 hours

# An owned pool of 8 H100 SXM (4 replicas of 2), every figure the catalogs' (worked out in
# TestOwnedPool): nano-units per hour.
OWNED_CAPITAL_NANO = 5_022_831_051
OWNED_NETWORK_NANO = 886_529_681
OWNED_HOSTING_NANO = 2_256_815_343
OWNED_ENERGY_NANO = 844_945_920
OPERATIONS_EIGHT_GPUS_NANO = 547_945_206
OWNED_TOTAL_NANO = (
    OWNED_CAPITAL_NANO
    + OWNED_NETWORK_NANO
    + OWNED_HOSTING_NANO
    + OWNED_ENERGY_NANO
    + OPERATIONS_EIGHT_GPUS_NANO
)


def query(**changes: Any) -> CostQuery:
    """Llama 3.3 70B in FP8 on replicas of 2 H100 SXM, a pool of 8 unless ``changes`` say."""
    return dataclasses.replace(CostQuery(perf=LLAMA_70B_ON_TWO_H100, pool_gpus=8), **changes)


def hour_of(cost_query: CostQuery) -> CostBreakdown:
    setup = setup_of(cost_query.perf, CATALOGS)
    return pool_cost_per_hour(pool_of(cost_query, setup, CATALOGS))


def nano(text: str) -> int:
    """A figure of the answer (US dollars as text) in nano-units."""
    return parse_amount(text, allow_negative=True)


def ceil_of(value: Fraction) -> int:
    return math.ceil(value)


class TestOwnedPool:
    def test_capital_writes_the_purchase_off_over_five_years(self) -> None:
        """8 GPUs * 27,500 USD / (5 * 8,760 h) = 220,000e9 / 43,800 = 5,022,831,050.23 nano,
        rounded up to 5,022,831,051."""
        assert hour_of(query()).capital_nano == OWNED_CAPITAL_NANO

    def test_network_and_storage_is_a_share_of_the_gpu_capex(self) -> None:
        """(0.10 network + 0.05 storage) / 0.85 servers = 0.17647.., kept to 4 places: 0.1765;
        220,000e9 * 0.1765 / 43,800 = 886,529,680.37 nano, rounded up to 886,529,681."""
        pool = pool_of(query(), setup_of(LLAMA_70B_ON_TWO_H100), CATALOGS)
        assert pool.network_storage_ratio == Decimal("0.1765")
        assert hour_of(query()).network_nano == OWNED_NETWORK_NANO

    def test_hosting_defaults_to_colocation_per_kw_of_it_load(self) -> None:
        """IT load = 8 * 700 W * (1 + 0.8) / 1000 = 10.08 kW; 163.44 USD * 10.08 = 1,647.4752
        USD a month; / 730 h = 2,256,815,342.47 nano an hour, rounded up."""
        pool = pool_of(query(), setup_of(LLAMA_70B_ON_TWO_H100), CATALOGS)
        assert pool.hosting_nano_per_month == 1_647_475_200_000
        assert hour_of(query()).hosting_nano == OWNED_HOSTING_NANO

    def test_energy_is_the_facility_draw_at_the_default_price(self) -> None:
        """8 * 700 W * 1.8 * PUE 1.3 * 0.8 of peak / 1000 = 10.4832 kW; * 0.0806 USD/kWh =
        0.84494592 USD an hour, exactly."""
        assert hour_of(query()).energy_nano == OWNED_ENERGY_NANO

    def test_operations_default_to_fifty_dollars_per_gpu_month(self) -> None:
        """50 USD * 8 GPUs = 400 USD a month; / 730 h = 547,945,205.48 nano, rounded up."""
        pool = pool_of(query(), setup_of(LLAMA_70B_ON_TWO_H100), CATALOGS)
        assert pool.operations_nano_per_month == 400_000_000_000
        assert hour_of(query()).operations_nano == OPERATIONS_EIGHT_GPUS_NANO

    def test_the_total_is_the_sum_of_the_rounded_lines_and_there_is_no_rent(self) -> None:
        hour = hour_of(query())
        assert hour.rent_nano == 0
        assert hour.total_nano == OWNED_TOTAL_NANO == 9_559_067_201

    def test_the_pool_defaults_to_one_replica(self) -> None:
        """No pool size: the 2 GPUs of one replica, so capital is a quarter of 8 GPUs':
        55,000e9 / 43,800 = 1,255,707,762.56 nano, rounded up."""
        hour = hour_of(query(pool_gpus=None))
        assert hour.capital_nano == 1_255_707_763

    def test_given_figures_replace_the_defaults(self) -> None:
        """Purchase 30,000 USD over 4 years, residual 0.1: 8 * 30,000e9 * 0.9 / 35,040 h =
        6,164,383,561.64 nano, rounded up; hosting and operations given are the whole
        pool's month: 730 USD and 1,460 USD are 1 and 2 USD an hour; energy at 0.10 USD/kWh
        is 10.4832 kW * 0.10 = 1.04832 USD an hour."""
        hour = hour_of(
            query(
                purchase_usd_per_gpu=Decimal("30000"),
                depreciation_years=Decimal("4"),
                residual_ratio=Decimal("0.1"),
                hosting_usd_per_month=Decimal("730"),
                operations_usd_per_month=Decimal("1460"),
                energy_usd_per_kwh=Decimal("0.10"),
            )
        )
        assert hour.capital_nano == 6_164_383_562
        assert hour.hosting_nano == 1_000_000_000
        assert hour.operations_nano == 2_000_000_000
        assert hour.energy_nano == 1_048_320_000

    def test_a_purchase_price_of_zero_is_kept(self) -> None:
        """GPUs already written off cost no capital and no network line."""
        hour = hour_of(query(purchase_usd_per_gpu=Decimal("0")))
        assert hour.capital_nano == 0
        assert hour.network_nano == 0


class TestRentedPool:
    def test_rent_is_the_catalog_rate_for_every_gpu(self) -> None:
        """8 GPUs * 2.35 USD an hour = 18.80 USD an hour; nothing is written off."""
        hour = hour_of(query(basis="rented"))
        assert hour.rent_nano == 18_800_000_000
        assert hour.capital_nano == 0
        assert hour.network_nano == 0

    def test_energy_and_hosting_are_zero_unless_given(self) -> None:
        """The rent includes power and space; operations stay 400 USD a month."""
        hour = hour_of(query(basis="rented"))
        assert hour.energy_nano == 0
        assert hour.hosting_nano == 0
        assert hour.operations_nano == OPERATIONS_EIGHT_GPUS_NANO
        assert hour.total_nano == 18_800_000_000 + OPERATIONS_EIGHT_GPUS_NANO

    def test_energy_given_is_paid_at_the_facility_draw(self) -> None:
        """Bare racks: 10.4832 kW * 0.10 USD/kWh = 1.04832 USD an hour."""
        hour = hour_of(query(basis="rented", energy_usd_per_kwh=Decimal("0.10")))
        assert hour.energy_nano == 1_048_320_000

    def test_a_given_rent_replaces_the_catalogs(self) -> None:
        """8 * 1.99 USD = 15.92 USD an hour."""
        hour = hour_of(query(basis="rented", rent_usd_per_gpu_hour=Decimal("1.99")))
        assert hour.rent_nano == 15_920_000_000

    def test_a_gpu_without_a_catalog_rent_needs_one_given(self) -> None:
        """The GB200 is rented on contracts, with no hourly figure in the catalog."""
        gb200 = dataclasses.replace(LLAMA_70B_ON_TWO_H100, gpu="gb200", gpus=1)
        with pytest.raises(InvalidRequest) as caught:
            hour_of(CostQuery(perf=gb200, basis="rented"))
        assert caught.value.param == "rent_usd_per_gpu_hour"
        given_rent = CostQuery(perf=gb200, basis="rented", rent_usd_per_gpu_hour=Decimal("6"))
        assert hour_of(given_rent).rent_nano == 6_000_000_000

    def test_a_rent_of_zero_is_kept(self) -> None:
        """GPUs lent for free cost no rent."""
        assert hour_of(query(basis="rented", rent_usd_per_gpu_hour=Decimal("0"))).rent_nano == 0


class TestPoolRefusals:
    @pytest.mark.parametrize("pool_gpus", [0, 3, 7, -2, POOL_GPUS_MAX + 2])
    def test_a_pool_must_be_whole_replicas(self, pool_gpus: int) -> None:
        """Replicas are 2 GPUs: 3 or 7 GPUs leave one idle; 0 or too many is no pool."""
        with pytest.raises(InvalidRequest) as caught:
            hour_of(query(pool_gpus=pool_gpus))
        assert caught.value.param == "pool_gpus"

    @pytest.mark.parametrize("pool_gpus", [True, 8.0, "8"])
    def test_a_pool_size_must_be_an_int(self, pool_gpus: Any) -> None:
        with pytest.raises(InvalidRequest) as caught:
            hour_of(query(pool_gpus=pool_gpus))
        assert caught.value.param == "pool_gpus"

    def test_the_basis_is_owned_or_rented(self) -> None:
        with pytest.raises(InvalidRequest) as caught:
            hour_of(query(basis="leased"))
        assert caught.value.param == "basis"

    @pytest.mark.parametrize(
        ("field", "basis"),
        [
            ("purchase_usd_per_gpu", "owned"),
            ("energy_usd_per_kwh", "owned"),
            ("energy_usd_per_kwh", "rented"),
            ("operations_usd_per_month", "owned"),
            ("rent_usd_per_gpu_hour", "rented"),
            ("hosting_usd_per_month", "rented"),
            pytest.param(
                "hosting_usd_per_month",
                "owned",
            ),
        ],
    )
    def test_a_negative_amount_is_refused_naming_its_field(self, field: str, basis: str) -> None:
        with pytest.raises(InvalidRequest) as caught:
            hour_of(query(basis=basis, **{field: Decimal("-1")}))
        assert caught.value.param == field

    def test_an_amount_finer_than_a_nano_unit_is_refused(self) -> None:
        with pytest.raises(InvalidRequest) as caught:
            hour_of(query(energy_usd_per_kwh=Decimal("0.0000000001")))
        assert caught.value.param == "energy_usd_per_kwh"

    def test_zero_years_of_depreciation_is_refused(self) -> None:
        with pytest.raises(InvalidRequest) as caught:
            hour_of(query(depreciation_years=Decimal("0")))
        assert caught.value.param == "depreciation_years"


class TestTokenCosts:
    def test_input_and_output_pay_for_their_phase_of_the_pool_hour(self) -> None:
        """input = ceil(C * 1e6 / (3600 * 4 replicas * prefill/s * 0.6)), output the same with
        decode/s, C the hand-computed 9,559,067,201 nano an hour."""
        answer = cost_answer(query(), CATALOGS)
        point = perf.operating_point(setup_of(LLAMA_70B_ON_TWO_H100), 1000, 1000, None)
        served_s = Fraction(3600 * 4) * Fraction("0.6")
        prefill = Fraction(repr(point.prefill_tokens_per_s))
        decode = Fraction(repr(point.decode_tokens_per_s))
        mtok = answer["cost_usd_per_mtok"]
        assert nano(mtok["input"]) == ceil_of(OWNED_TOTAL_NANO * 10**6 / (served_s * prefill))
        assert nano(mtok["output"]) == ceil_of(OWNED_TOTAL_NANO * 10**6 / (served_s * decode))
        assert nano(answer["cost_usd_per_hour"]["total"]) == OWNED_TOTAL_NANO

    def test_output_all_in_spreads_the_hour_over_the_output_served(self) -> None:
        """output_all_in = C / (output tokens/s * 4 replicas * 3600 * 0.6) per million."""
        answer = cost_answer(query(), CATALOGS)
        point = perf.operating_point(setup_of(LLAMA_70B_ON_TWO_H100), 1000, 1000, None)
        served_per_hour = Fraction(repr(point.output_tokens_per_s)) * 4 * 3600 * Fraction("0.6")
        expected = ceil_of(Fraction(OWNED_TOTAL_NANO * 10**6) / served_per_hour)
        assert nano(answer["cost_usd_per_mtok"]["output_all_in"]) == expected
        assert answer["replicas"] == 4
        assert answer["utilization_ratio"] == "0.6"
        assert answer["output_tokens_per_s"] == pytest.approx(
            point.output_tokens_per_s * 4, abs=0.001
        )

    @pytest.mark.parametrize("basis", ["owned", "rented"])
    def test_the_chain_sums_to_output_all_in_within_its_roundings(self, basis: str) -> None:
        """Seven lines each rounded up once: their sum is all-in plus at most 6 nano."""
        answer = cost_answer(query(basis=basis), CATALOGS)
        chain = answer["chain_usd_per_mtok"]
        assert list(chain) == list(LINES)
        lines_nano = sum(nano(value) for value in chain.values())
        all_in = nano(answer["cost_usd_per_mtok"]["output_all_in"])
        assert 0 <= lines_nano - all_in <= 6

    def test_a_rented_pool_pays_the_cloud_and_builds_nothing(self) -> None:
        chain = cost_answer(query(basis="rented"), CATALOGS)["chain_usd_per_mtok"]
        for line in ("gpu_maker", "network_and_logistics", "datacentre_builder"):
            assert chain[line] == "0.00"
        assert chain["power_and_cooling"] == "0.00"
        assert chain["energy"] == "0.00"
        assert nano(chain["cloud_provider"]) > 0

    def test_an_owned_pool_pays_no_cloud(self) -> None:
        chain = cost_answer(query(), CATALOGS)["chain_usd_per_mtok"]
        assert chain["cloud_provider"] == "0.00"
        assert nano(chain["gpu_maker"]) > nano(chain["network_and_logistics"]) > 0

    def test_the_operator_margin_is_the_price_less_the_chain(self) -> None:
        """At 0.50 USD per million output tokens the margin is 0.50 less the seven lines."""
        answer = cost_answer(query(price_usd_per_mtok=Decimal("0.50")), CATALOGS)
        chain = answer["chain_usd_per_mtok"]
        costs = sum(nano(chain[line]) for line in LINES)
        assert list(chain) == [*LINES, "operator_margin"]
        assert nano(chain["operator_margin"]) == 500_000_000 - costs

    def test_a_price_below_cost_leaves_a_negative_margin(self) -> None:
        answer = cost_answer(query(price_usd_per_mtok=Decimal("0.01")), CATALOGS)
        chain = answer["chain_usd_per_mtok"]
        assert nano(chain["operator_margin"]) == 10_000_000 - sum(nano(chain[n]) for n in LINES)
        assert chain["operator_margin"].startswith("-")

    def test_the_assumptions_show_every_figure_used(self) -> None:
        shown = cost_answer(query(), CATALOGS)["assumptions"]
        assert shown["energy_usd_per_kwh"] == "0.0806"
        assert shown["hosting_usd_per_month"] == "1647.4752"
        assert shown["operations_usd_per_month"] == "400.00"
        assert shown["purchase_usd_per_gpu"] == "27500.00"
        assert shown["network_storage_ratio"] == "0.1765"
        assert shown["depreciation_years"] == "5"
        rented = cost_answer(query(basis="rented"), CATALOGS)["assumptions"]
        assert rented["rent_usd_per_gpu_hour"] == "2.35"
        assert "purchase_usd_per_gpu" not in rented

    def test_an_unknown_gpu_is_not_found(self) -> None:
        unknown = dataclasses.replace(LLAMA_70B_ON_TWO_H100, gpu="h900")
        with pytest.raises(NotFound) as caught:
            cost_answer(CostQuery(perf=unknown), CATALOGS)
        assert caught.value.param == "gpu"


class TestChain:
    # One hour of a pool, in nano: capital 1,000,000, network 100,000, hosting 500,000,
    # energy 300,000, operations 200,000; 3,000,000 output tokens served in it, so each line
    # per million tokens is a third of its hourly figure.
    HOUR = CostBreakdown(
        capital_nano=1_000_000,
        rent_nano=0,
        energy_nano=300_000,
        hosting_nano=500_000,
        operations_nano=200_000,
        network_nano=100_000,
    )

    def test_each_line_is_its_hour_per_million_tokens_rounded_up(self) -> None:
        """capital 1e6/3 -> 333,334; network 1e5/3 -> 33,334; builder 5e5 * 0.4 / 3 ->
        66,667; power and cooling 5e5 * 0.6 / 3 = 100,000; energy 100,000; operations
        2e5/3 -> 66,667; cloud 0."""
        lines = chain_per_mtok(self.HOUR, Fraction(3_000_000), Fraction("0.6"))
        assert {line.name: line.nano_per_mtok for line in lines} == {
            "gpu_maker": 333_334,
            "network_and_logistics": 33_334,
            "datacentre_builder": 66_667,
            "power_and_cooling": 100_000,
            "energy": 100_000,
            "operations": 66_667,
            "cloud_provider": 0,
        }

    def test_the_margin_line_comes_last_and_may_be_a_loss(self) -> None:
        """The lines sum to 700,002 (700,000 exact, two lines rounded up): a price of
        1,000,000 leaves 299,998, one of 600,000 loses 100,002."""
        profit = chain_per_mtok(self.HOUR, Fraction(3_000_000), Fraction("0.6"), 1_000_000)
        assert profit[-1].name == "operator_margin"
        assert profit[-1].nano_per_mtok == 299_998
        loss = chain_per_mtok(self.HOUR, Fraction(3_000_000), Fraction("0.6"), 600_000)
        assert loss[-1].nano_per_mtok == -100_002

    def test_rent_goes_to_the_cloud_provider(self) -> None:
        """24 USD an hour over 10e6 tokens: 2.4 USD per million."""
        hour = CostBreakdown(
            capital_nano=0, rent_nano=24 * 10**9, energy_nano=0, hosting_nano=0, operations_nano=0
        )
        lines = chain_per_mtok(hour, Fraction(10_000_000), Fraction("0.6"))
        by_name = {line.name: line.nano_per_mtok for line in lines}
        assert by_name["cloud_provider"] == 2_400_000_000
        assert sum(by_name.values()) == 2_400_000_000


class TestPriceForMargin:
    @pytest.mark.parametrize(
        ("cost_nano", "margin", "price_nano"),
        [
            (100, "0.4", 167),  # 100 / 0.6 = 166.67 -> 167
            (101, "0.5", 202),  # exact
            (90_649_069, "0", 90_649_069),  # no margin: the cost
            (1, "0.999999999", 1_000_000_000),  # 1 / 1e-9
            (0, "0.4", 0),
        ],
    )
    def test_the_price_is_the_cost_over_one_less_the_margin(
        self, cost_nano: int, margin: str, price_nano: int
    ) -> None:
        assert price_for_margin(cost_nano, Decimal(margin)) == price_nano

    @settings(max_examples=200, deadline=None)
    @given(
        cost_nano=st.integers(min_value=1, max_value=10**15),
        margin_per_10k=st.integers(min_value=0, max_value=9_999),
    )
    def test_the_price_is_the_smallest_whole_nano_that_meets_the_margin(
        self, cost_nano: int, margin_per_10k: int
    ) -> None:
        """(price - cost) / price >= margin, and one nano less falls short of it."""
        margin = Fraction(margin_per_10k, 10_000)
        price = price_for_margin(cost_nano, Decimal(margin_per_10k) / 10_000)
        assert Fraction(price - cost_nano, price) >= margin
        below = price - 1
        assert below <= 0 or Fraction(below - cost_nano, below) < margin

    @pytest.mark.parametrize("margin", ["1", "1.5", "-0.1", "NaN", "Infinity"])
    def test_a_margin_outside_zero_to_one_is_refused(self, margin: str) -> None:
        with pytest.raises(InvalidRequest) as caught:
            price_for_margin(100, Decimal(margin))
        assert caught.value.param == "margin_ratio"


class TestPriceAnswer:
    def test_the_advice_is_the_cost_priced_for_the_margin(self) -> None:
        """At a margin of 0.4 each side's price is its cost / 0.6, rounded up."""
        shown = price_answer(query(), Decimal("0.4"), CATALOGS)
        cost = cost_answer(query(), CATALOGS)["cost_usd_per_mtok"]
        assert shown["margin_ratio"] == "0.4"
        for side in ("input", "output"):
            assert shown["cost_usd_per_mtok"][side] == cost[side]
            expected = ceil_of(Fraction(nano(cost[side])) / Fraction("0.6"))
            assert nano(shown["price_usd_per_mtok"][side]) == expected

    def test_the_market_rows_are_the_models_own_oldest_first(self) -> None:
        """Llama 3.3 70B has three packaged prices: two at DeepInfra (June 2026), then
        Together's 0.88; each row's margin is (price - cost) / price to 3 places."""
        shown = price_answer(query(), Decimal("0.4"), CATALOGS)
        rows = shown["market"]
        assert [(row["provider"], row["output_usd_per_mtok"]) for row in rows] == [
            ("DeepInfra", "0.40"),
            ("DeepInfra", "0.38"),
            ("Together", "0.88"),
        ]
        output_cost = nano(shown["cost_usd_per_mtok"]["output"])
        margin = Decimal(880_000_000 - output_cost) / Decimal(880_000_000)
        assert rows[2]["margin_ratio_output"] == str(margin.quantize(Decimal("0.001")))
        assert all(row["source"] for row in rows)

    def test_a_model_without_market_prices_has_no_rows(self) -> None:
        small = CostQuery(perf=PerfQuery(gpu="h100-sxm", model="llama-3.1-8b"))
        assert price_answer(small, Decimal("0.4"), CATALOGS)["market"] == []

    def test_a_margin_of_one_is_refused(self) -> None:
        with pytest.raises(InvalidRequest) as caught:
            price_answer(query(), Decimal("1"), CATALOGS)
        assert caught.value.param == "margin_ratio"


class TestItlTarget:
    @pytest.mark.parametrize("itl_ms_max", [21.0, 25.0, 30.0, 40.0, 50.0, 60.0])
    def test_the_largest_concurrency_within_the_target_is_chosen(self, itl_ms_max: float) -> None:
        """Its ITL is within the target; one more request would exceed it, unless the KV
        cache or the scheduler allows no more."""
        answer = cost_answer(query(itl_ms_max=itl_ms_max), CATALOGS)
        chosen = answer["concurrency"]
        setup = setup_of(LLAMA_70B_ON_TWO_H100)
        point = perf.operating_point(setup, 1000, 1000, chosen)
        assert point.batch == chosen
        assert point.itl_ms <= itl_ms_max
        assert answer["itl_ms"] == round(point.itl_ms, 3)
        at_most = chosen in (point.batch_max, perf.batch_limit(setup))
        assert at_most or perf.operating_point(setup, 1000, 1000, chosen + 1).itl_ms > itl_ms_max

    def test_a_loose_target_runs_the_scheduler_limit(self) -> None:
        """gpt-oss-20b on an H200 holds more short requests than its scheduler's 512."""
        small = PerfQuery(gpu="h200", model="gpt-oss-20b", precision="fp8")
        answer = cost_answer(CostQuery(perf=small, itl_ms_max=1e6), CATALOGS)
        assert answer["concurrency"] == perf.batch_limit(setup_of(small)) == 512

    def test_the_concurrency_asked_caps_the_search(self) -> None:
        capped = dataclasses.replace(LLAMA_70B_ON_TWO_H100, concurrency=16)
        answer = cost_answer(CostQuery(perf=capped, itl_ms_max=1e6), CATALOGS)
        assert answer["concurrency"] == 16

    def test_a_tighter_target_never_runs_more_requests(self) -> None:
        loose = cost_answer(query(itl_ms_max=40.0), CATALOGS)
        tight = cost_answer(query(itl_ms_max=25.0), CATALOGS)
        assert tight["concurrency"] <= loose["concurrency"]
        assert nano(tight["cost_usd_per_mtok"]["output_all_in"]) >= nano(
            loose["cost_usd_per_mtok"]["output_all_in"]
        )

    @pytest.mark.parametrize("itl_ms_max", [1.0, 0.0, -5.0])
    def test_an_impossible_target_is_refused(self, itl_ms_max: float) -> None:
        """One request alone waits about 20 ms between tokens on this replica."""
        with pytest.raises(InvalidRequest) as caught:
            cost_answer(query(itl_ms_max=itl_ms_max), CATALOGS)
        assert caught.value.param == "itl_ms_max"

    def test_a_target_that_is_not_a_number_is_refused(self) -> None:
        with pytest.raises(InvalidRequest) as caught:
            cost_answer(query(itl_ms_max=float("nan")), CATALOGS)
        assert caught.value.param == "itl_ms_max"


ratios = st.integers(min_value=1, max_value=1_000).map(lambda per_mille: Decimal(per_mille) / 1000)


class TestProperties:
    @settings(max_examples=60, deadline=None)
    @given(first=ratios, second=ratios, basis=st.sampled_from(["owned", "rented"]))
    def test_cost_per_token_never_rises_with_utilization(
        self, first: Decimal, second: Decimal, basis: str
    ) -> None:
        """A busier pool spreads the same hour over more tokens."""
        low, high = sorted((first, second))
        idle = cost_answer(query(basis=basis, utilization_ratio=low), CATALOGS)
        busy = cost_answer(query(basis=basis, utilization_ratio=high), CATALOGS)
        for side in ("input", "output", "output_all_in"):
            busy_nano = nano(busy["cost_usd_per_mtok"][side])
            assert busy_nano <= nano(idle["cost_usd_per_mtok"][side])
        for line in LINES:
            busy_line = nano(busy["chain_usd_per_mtok"][line])
            assert busy_line <= nano(idle["chain_usd_per_mtok"][line])

    @settings(max_examples=60, deadline=None)
    @given(
        cost_per_hour_nano=st.integers(min_value=0, max_value=10**12),  # up to 1,000 USD
        prefill_milli=st.integers(min_value=1_000, max_value=10**9),  # 1 token/s and up
        decode_milli=st.integers(min_value=1_000, max_value=10**9),
        more=st.integers(min_value=0, max_value=10**9),
        utilization=ratios,
    )
    def test_more_throughput_never_costs_more_per_token(
        self,
        cost_per_hour_nano: int,
        prefill_milli: int,
        decode_milli: int,
        more: int,
        utilization: Decimal,
    ) -> None:
        """token_costs and the chain with a faster pool: every figure lower or equal."""
        prefill, decode = Fraction(prefill_milli, 1000), Fraction(decode_milli, 1000)
        faster = Fraction(more, 1000)
        slow = token_costs(cost_per_hour_nano, prefill, decode, utilization, basis="modeled")
        fast = token_costs(
            cost_per_hour_nano, prefill + faster, decode + faster, utilization, basis="modeled"
        )
        assert fast.input_nano_per_mtok <= slow.input_nano_per_mtok
        assert fast.output_nano_per_mtok <= slow.output_nano_per_mtok
        hour = CostBreakdown(
            capital_nano=cost_per_hour_nano,
            rent_nano=0,
            energy_nano=cost_per_hour_nano // 3,
            hosting_nano=cost_per_hour_nano // 7,
            operations_nano=cost_per_hour_nano // 11,
        )
        per_hour = decode * 3600
        slow_lines = chain_per_mtok(hour, per_hour, Fraction("0.6"))
        fast_lines = chain_per_mtok(hour, per_hour + faster * 3600, Fraction("0.6"))
        for slow_line, fast_line in zip(slow_lines, fast_lines, strict=True):
            assert fast_line.nano_per_mtok <= slow_line.nano_per_mtok

    @settings(max_examples=40, deadline=None)
    @given(
        first=st.integers(min_value=1, max_value=400),
        second=st.integers(min_value=1, max_value=400),
    )
    def test_the_concurrency_that_serves_more_costs_less_per_token(
        self, first: int, second: int
    ) -> None:
        """Of two concurrencies, the one whose replica serves more output tokens per second
        has the lower (or equal) all-in cost per million."""
        setup = setup_of(LLAMA_70B_ON_TWO_H100)
        answers = []
        for concurrency in (first, second):
            shape = dataclasses.replace(LLAMA_70B_ON_TWO_H100, concurrency=concurrency)
            point = perf.operating_point(setup, 1000, 1000, concurrency)
            answer = cost_answer(query(perf=shape), CATALOGS)
            answers.append((point.output_tokens_per_s, answer))
        answers.sort(key=lambda pair: pair[0])
        (_, slower), (_, faster) = answers
        slow_all_in = nano(slower["cost_usd_per_mtok"]["output_all_in"])
        assert nano(faster["cost_usd_per_mtok"]["output_all_in"]) <= slow_all_in
