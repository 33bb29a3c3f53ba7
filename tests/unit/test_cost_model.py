"""Tests for the pool cost model (tokenmill.economics.cost): lines per hour, tokens, requests."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenmill.economics import catalog, perf
from tokenmill.economics.cost import (
    CostBreakdown,
    PoolCost,
    TokenCosts,
    modeled_throughput,
    pool_cost_per_hour,
    request_cost_nano,
    token_costs,
)
from tokenmill.errors import InvalidRequest
from tokenmill.money import AMOUNT_NANO_MAX, NANO_PER_UNIT

H100 = catalog.gpu("h100-sxm")
LLAMA_8B = catalog.model("llama-3.1-8b")
LLAMA_70B = catalog.model("llama-3.1-70b")

# Shared figures of the hand-computed pools below.
_SITE: dict[str, Any] = {
    "gpu_count": 2,
    "power_w_per_gpu": "700",
    "node_overhead_ratio": "0.3",
    "pue": "1.3",
    "energy_nano_per_kwh": 100_000_000,  # $0.10 per kWh
    "utilization_power_ratio": "0.5",
    "hosting_nano_per_month": 1_000 * NANO_PER_UNIT,
    "operations_nano_per_month": 2_000 * NANO_PER_UNIT,
}
_OWNED: dict[str, Any] = {
    "purchase_nano_per_gpu": 30_000 * NANO_PER_UNIT,
    "depreciation_years": "4",
    "residual_ratio": "0.1",
}
_RENTED: dict[str, Any] = {"rent_nano_per_gpu_hour": 2_350_000_000}  # $2.35 per GPU-hour


def _owned(**changes: Any) -> PoolCost:
    return PoolCost(**{**_SITE, **_OWNED, **changes})


def _rented(**changes: Any) -> PoolCost:
    return PoolCost(**{**_SITE, **_RENTED, **changes})


def _tiny_pool(**changes: Any) -> PoolCost:
    """One GPU, every line zero unless ``changes`` sets it."""
    figures: dict[str, Any] = {
        "gpu_count": 1,
        "power_w_per_gpu": "1",
        "node_overhead_ratio": "0",
        "pue": "1",
        "energy_nano_per_kwh": 0,
        "utilization_power_ratio": "1",
        "hosting_nano_per_month": 0,
        "operations_nano_per_month": 0,
        "rent_nano_per_gpu_hour": 0,
    }
    return PoolCost(**{**figures, **changes})


def _refusal(build: Any, **changes: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        build(**changes)
    return caught.value


class TestPoolCostLines:
    def test_capital_is_the_purchase_less_residual_spread_over_the_depreciation_hours(
        self,
    ) -> None:
        """2 * $30,000 * (1 - 0.1) / (4 * 8760 h) = 54e12 / 35,040 = 1,541,095,890.41 -> up."""
        breakdown = pool_cost_per_hour(_owned())
        assert breakdown.capital_nano == 1_541_095_891
        assert breakdown.rent_nano == 0

    def test_a_missing_residual_ratio_means_nothing_is_left(self) -> None:
        """2 * $30,000 / (4 * 8760 h) = 60e12 / 35,040 = 1,712,328,767.12 -> 1,712,328,768."""
        breakdown = pool_cost_per_hour(_owned(residual_ratio=None))
        assert breakdown.capital_nano == 1_712_328_768

    def test_depreciation_years_may_be_fractional(self) -> None:
        """2 * $30,000 / (4.5 * 8760 h) = 60e12 / 39,420 = 1,522,070,015.22 -> 1,522,070,016."""
        pool = _owned(residual_ratio=None, depreciation_years=Decimal("4.5"))
        assert pool_cost_per_hour(pool).capital_nano == 1_522_070_016

    def test_rent_is_the_rent_per_gpu_hour_times_the_gpus(self) -> None:
        """2 * $2.35 = $4.70 per hour, exact, and no capital line."""
        breakdown = pool_cost_per_hour(_rented())
        assert breakdown.rent_nano == 4_700_000_000
        assert breakdown.capital_nano == 0

    def test_energy_is_the_facility_power_times_the_energy_price(self) -> None:
        """2 * 700 W * (1 + 0.3) * 1.3 * 0.5 = 1,183 W = 1.183 kWh per hour * $0.10."""
        assert pool_cost_per_hour(_owned()).energy_nano == 118_300_000
        assert pool_cost_per_hour(_rented()).energy_nano == 118_300_000

    def test_hosting_and_operations_are_the_monthly_figures_over_730_hours(self) -> None:
        """$1,000 / 730 = 1,369,863,013.70 nano -> up; $2,000 / 730 = 2,739,726,027.40 -> up."""
        breakdown = pool_cost_per_hour(_owned())
        assert breakdown.hosting_nano == 1_369_863_014
        assert breakdown.operations_nano == 2_739_726_028

    def test_total_is_the_sum_of_the_rounded_lines(self) -> None:
        """1,541,095,891 + 118,300,000 + 1,369,863,014 + 2,739,726,028 = 5,768,984,933."""
        breakdown = pool_cost_per_hour(_owned())
        assert breakdown.total_nano == 5_768_984_933
        assert breakdown.period_s == 3600

    def test_the_ratios_are_kept_as_exact_decimals(self) -> None:
        """Text ratios become Decimals; a catalog float power becomes its shortest decimal."""
        pool = _owned(power_w_per_gpu=H100.power_w)
        assert pool.pue == Decimal("1.3")
        assert pool.power_w_per_gpu == Decimal("700.0")
        assert pool.residual_ratio == Decimal("0.1")
        assert pool.basis == "owned"
        assert _rented().basis == "rented"


class TestRounding:
    def test_a_line_of_four_tenths_of_a_nano_becomes_one(self) -> None:
        """292 nano a month / 730 h = 0.4 nano an hour, rounded up to 1."""
        breakdown = pool_cost_per_hour(_tiny_pool(hosting_nano_per_month=292))
        assert breakdown.hosting_nano == 1
        assert breakdown.total_nano == 1

    def test_an_energy_line_of_four_tenths_of_a_nano_becomes_one(self) -> None:
        """1 W for an hour is 0.001 kWh; at 400 nano per kWh that is 0.4 nano, rounded up."""
        assert pool_cost_per_hour(_tiny_pool(energy_nano_per_kwh=400)).energy_nano == 1

    def test_a_whole_line_is_not_rounded(self) -> None:
        """730 nano a month is exactly 1 nano an hour: rounding up adds nothing."""
        assert pool_cost_per_hour(_tiny_pool(operations_nano_per_month=730)).operations_nano == 1

    def test_free_gpus_cost_nothing(self) -> None:
        """Zero rent, zero energy price, no site or staff costs: a zero breakdown."""
        assert pool_cost_per_hour(_tiny_pool()).total_nano == 0


class TestPoolCostValidation:
    def test_both_bases_are_refused(self) -> None:
        """A purchase price and a rent together are ambiguous."""
        refusal = _refusal(_owned, **_RENTED)
        assert refusal.param == "rent_nano_per_gpu_hour"

    def test_a_residual_ratio_with_a_rent_is_both_bases(self) -> None:
        """The residual ratio belongs to owned GPUs only."""
        assert _refusal(_rented, residual_ratio="0.1").param == "rent_nano_per_gpu_hour"

    def test_neither_basis_is_refused(self) -> None:
        """A pool must be owned or rented."""
        assert _refusal(PoolCost, **_SITE).param == "purchase_nano_per_gpu"

    def test_owned_gpus_need_depreciation_years(self) -> None:
        """A purchase price without a period cannot be spread over hours."""
        assert _refusal(_owned, depreciation_years=None).param == "depreciation_years"

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("gpu_count", 0),
            ("gpu_count", -1),
            ("gpu_count", True),
            ("gpu_count", 2.0),
            ("purchase_nano_per_gpu", -1),
            ("purchase_nano_per_gpu", 30_000.0),
            ("purchase_nano_per_gpu", "30000"),
            ("purchase_nano_per_gpu", AMOUNT_NANO_MAX + 1),
            ("depreciation_years", "0"),
            ("depreciation_years", "-4"),
            ("residual_ratio", "1"),
            ("residual_ratio", "-0.1"),
            ("power_w_per_gpu", "0"),
            ("power_w_per_gpu", float("nan")),
            ("node_overhead_ratio", "-0.3"),
            ("pue", "0.9"),
            ("pue", 1.3),
            ("pue", "1e0"),
            ("pue", Decimal("Infinity")),
            ("pue", "one point three"),
            ("energy_nano_per_kwh", -1),
            ("utilization_power_ratio", "0"),
            ("utilization_power_ratio", "1.1"),
            ("hosting_nano_per_month", -1),
            ("operations_nano_per_month", None),
        ],
    )
    def test_a_bad_owned_figure_is_refused_naming_it(self, field: str, value: object) -> None:
        """Negative, zero where it must be positive, float ratios or money: InvalidRequest."""
        assert _refusal(_owned, **{field: value}).param == field

    @pytest.mark.parametrize("value", [-1, 2.35, "2.35", AMOUNT_NANO_MAX + 1])
    def test_a_bad_rent_is_refused_naming_it(self, value: object) -> None:
        """Rent is an int of nano-units per GPU-hour, 0 or more."""
        assert _refusal(_rented, rent_nano_per_gpu_hour=value).param == "rent_nano_per_gpu_hour"


class TestTokenCosts:
    def test_each_phase_pays_for_its_gpu_time(self) -> None:
        """$3.60/h is 1e6 nano/s; 1e6 tokens at 10,000/s take 100 s, at 1,000/s 1,000 s."""
        costs = token_costs(3_600_000_000, 10_000, 1_000, "1", basis="measured")
        assert costs == TokenCosts(
            input_nano_per_mtok=100_000_000, output_nano_per_mtok=1_000_000_000, basis="measured"
        )

    def test_idle_time_is_spread_over_what_is_served(self) -> None:
        """At half utilization each served second carries an idle one: twice the cost."""
        costs = token_costs(3_600_000_000, 10_000, 1_000, Decimal("0.5"), basis="measured")
        assert costs.input_nano_per_mtok == 200_000_000
        assert costs.output_nano_per_mtok == 2_000_000_000

    def test_costs_are_rounded_up_once(self) -> None:
        """1e6 nano/s * 1e6 tokens / 3 tokens/s = 333,333,333,333.33 nano -> ...334."""
        costs = token_costs(3_600_000_000, 3, "3", "1", basis="modeled")
        assert costs.input_nano_per_mtok == 333_333_333_334
        assert costs.output_nano_per_mtok == 333_333_333_334

    def test_a_float_throughput_is_read_as_its_shortest_decimal(self) -> None:
        """10,800 nano/h = 3 nano/s; 3e6 / 0.3 is exactly 1e7, not 1e7 + 1 from 0.29999..."""
        costs = token_costs(10_800, 0.3, 0.3, "1", basis="modeled")
        assert costs.input_nano_per_mtok == 10_000_000

    def test_gpus_that_cost_nothing_give_free_tokens(self) -> None:
        """A zero cost per hour gives zero cost per token at any throughput."""
        costs = token_costs(0, 5.5, 0.25, "0.1", basis="measured")
        assert (costs.input_nano_per_mtok, costs.output_nano_per_mtok) == (0, 0)

    @pytest.mark.parametrize("value", ["0", "1.1", Decimal("-0.5"), 0.5, "half", 0, 2])
    def test_a_bad_utilization_is_refused(self, value: object) -> None:
        """Utilization is an exact ratio in (0, 1]."""
        with pytest.raises(InvalidRequest) as caught:
            token_costs(3_600, 1, 1, value, basis="measured")  # type: ignore[arg-type]
        assert caught.value.param == "utilization_ratio"

    @pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), "fast", 10**13])
    def test_a_bad_throughput_is_refused(self, value: object) -> None:
        """Throughput is a finite number of tokens per second above zero."""
        with pytest.raises(InvalidRequest) as caught:
            token_costs(3_600, value, 1, "1", basis="measured")  # type: ignore[arg-type]
        assert caught.value.param == "prefill_tokens_per_s"
        with pytest.raises(InvalidRequest) as caught:
            token_costs(3_600, 1, value, "1", basis="measured")  # type: ignore[arg-type]
        assert caught.value.param == "output_tokens_per_s"

    def test_a_throughput_too_low_for_any_price_is_refused(self) -> None:
        """$1e9 an hour at 1e-6 tokens/s would put a million tokens past AMOUNT_NANO_MAX."""
        with pytest.raises(InvalidRequest) as caught:
            token_costs(AMOUNT_NANO_MAX, 1e-6, 1, "1", basis="modeled")
        assert caught.value.param == "prefill_tokens_per_s"

    def test_a_bad_cost_or_basis_is_refused(self) -> None:
        """The cost per hour is nano-units, 0 or more; the basis is modeled or measured."""
        with pytest.raises(InvalidRequest) as caught:
            token_costs(-1, 1, 1, "1", basis="measured")
        assert caught.value.param == "cost_per_hour_nano"
        with pytest.raises(InvalidRequest) as caught:
            token_costs(3_600, 1, 1, "1", basis="guessed")  # type: ignore[arg-type]
        assert caught.value.param == "basis"


_COSTS = TokenCosts(
    input_nano_per_mtok=100_000_000, output_nano_per_mtok=1_000_000_000, basis="measured"
)


class TestRequestCost:
    def test_a_request_pays_its_prompt_and_its_completion(self) -> None:
        """(1,000 * 1e8 + 500 * 1e9) / 1e6 = 600,000 nano."""
        assert request_cost_nano(_COSTS, 1_000, 500) == 600_000

    def test_a_fraction_of_a_nano_is_rounded_up_once(self) -> None:
        """One prompt token at 1e8 per million costs 100 nano; at 1 per million, 1e-6 -> 1."""
        cheap = TokenCosts(input_nano_per_mtok=1, output_nano_per_mtok=1, basis="modeled")
        assert request_cost_nano(_COSTS, 1, 0) == 100
        assert request_cost_nano(cheap, 1, 1) == 1
        assert request_cost_nano(cheap, 0, 0) == 0

    def test_cached_tokens_cost_like_prompt_tokens(self) -> None:
        """This version charges a cache hit like any prompt token: cost errs high."""
        assert request_cost_nano(_COSTS, 1_000, 500, cached_tokens=800) == 600_000

    @pytest.mark.parametrize(
        ("prompt", "completion", "cached", "param"),
        [
            (-1, 0, 0, "prompt_tokens"),
            (0, -1, 0, "completion_tokens"),
            (10, 0, 11, "cached_tokens"),
            (10, 0, -1, "cached_tokens"),
            (10**13, 0, 0, "prompt_tokens"),
        ],
    )
    def test_bad_token_counts_are_refused(
        self, prompt: int, completion: int, cached: int, param: str
    ) -> None:
        """Counts are integers of 0 or more; cached tokens are part of the prompt."""
        with pytest.raises(InvalidRequest) as caught:
            request_cost_nano(_COSTS, prompt, completion, cached_tokens=cached)
        assert caught.value.param == param


def _setup_8b_fp8() -> perf.Setup:
    return perf.Setup(gpu=H100, gpu_count=1, model=LLAMA_8B, precision="fp8")


class TestModeledThroughput:
    def test_it_is_the_perf_model_at_the_middle_of_the_answer(self) -> None:
        """Prefill rate is prompt / the prompt's share of a busy replica; decode at batch 64
        holding 1,000 + 250 each."""
        setup = _setup_8b_fp8()
        prefill, decode = modeled_throughput(setup, 1_000, 500, 64)
        assert prefill == pytest.approx(1_000 / perf.prefill_busy_s(setup, 1_000))
        assert decode == pytest.approx(perf.output_tokens_per_s(setup, 64, 64 * 1_250))

    def test_prefill_runs_at_the_derated_compute_roof(self) -> None:
        """Weights: 2 * 8.03e9 FLOP per token; attention: 32 layers * 32 heads * 2 * (128 +
        128) FLOP per pair over 1,000^2 / 2 pairs (fp8 KV, so fp8 FLOP/s too); at
        1,979e12 FLOP/s * 0.5 that is about 60,600 tokens/s."""
        prefill, _ = modeled_throughput(_setup_8b_fp8(), 1_000, 1_000, 1)
        flops = 2 * 8.03e9 * 1_000 + 32 * 32 * 2 * 256 * 1_000**2 / 2
        assert prefill == pytest.approx(1_000 / (flops / (1979e12 * 0.5)))

    def test_the_batch_is_capped_by_the_kv_cache(self) -> None:
        """Asking for more concurrency than fits gives the throughput of the batch that fits."""
        setup = _setup_8b_fp8()
        fitting = perf.batch_max(setup, 20_000)
        _, decode = modeled_throughput(setup, 10_000, 10_000, fitting * 10)
        _, decode_fitting = modeled_throughput(setup, 10_000, 10_000, fitting)
        assert decode == decode_fitting

    def test_a_model_that_does_not_fit_is_refused(self) -> None:
        """Llama 70B in BF16 does not fit on one H100: the GPU count is the problem."""
        setup = perf.Setup(gpu=H100, gpu_count=1, model=LLAMA_70B)
        with pytest.raises(InvalidRequest) as caught:
            modeled_throughput(setup, 1_000, 1_000, 1)
        assert caught.value.param == "gpu_count"

    def test_a_request_longer_than_the_kv_cache_is_refused(self) -> None:
        """A request holding more KV tokens than the cache has cannot run at all."""
        setup = _setup_8b_fp8()
        with pytest.raises(InvalidRequest) as caught:
            modeled_throughput(setup, perf.kv_capacity_tokens(setup), 1_000, 1)
        assert caught.value.param == "prompt_tokens"

    @pytest.mark.parametrize(
        ("prompt", "output", "concurrency", "param"),
        [(0, 1, 1, "prompt_tokens"), (1, 0, 1, "output_tokens"), (1, 1, 0, "concurrency")],
    )
    def test_bad_shapes_are_refused(
        self, prompt: int, output: int, concurrency: int, param: str
    ) -> None:
        """Token counts and concurrency start at one."""
        with pytest.raises(InvalidRequest) as caught:
            modeled_throughput(_setup_8b_fp8(), prompt, output, concurrency)
        assert caught.value.param == param


class TestRealisticCases:
    """Figures from research/economics.md (compiled 2026-11-25)."""

    def test_eight_rented_h100s_cost_the_rent_when_it_includes_power(self) -> None:
        """8 H100 at $2.35/GPU-h (SemiAnalysis, Mar 2026, §1), power in the rent: $18.80/h."""
        pool = _rented(
            gpu_count=8,
            energy_nano_per_kwh=0,
            hosting_nano_per_month=0,
            operations_nano_per_month=0,
        )
        assert pool_cost_per_hour(pool).total_nano == 18_800_000_000

    def test_eight_rented_bare_h100s_cost_rent_plus_the_power_the_operator_pays(self) -> None:
        """DGX H100: 10.2 kW for 8 x 700 W GPUs, so overhead 10.2/5.6 - 1 ~ 0.82; PUE 1.58
        (Uptime 2023); 8.06 c/kWh (EIA 2023, US industrial). 8 * 700 W * 1.82 * 1.58
        = 16,103.36 W = 16.10336 kWh * 80,600,000 nano = 1,297,930,816 nano, exact.
        Total = 8 * $2.35 + that = 20,097,930,816 nano ($20.10/h)."""
        pool = _rented(
            gpu_count=8,
            power_w_per_gpu=H100.power_w,
            node_overhead_ratio="0.82",
            pue="1.58",
            energy_nano_per_kwh=80_600_000,
            utilization_power_ratio="1",
            hosting_nano_per_month=0,
            operations_nano_per_month=0,
        )
        breakdown = pool_cost_per_hour(pool)
        assert breakdown.rent_nano == 8 * 2_350_000_000
        assert breakdown.energy_nano == 1_297_930_816
        assert breakdown.total_nano == 20_097_930_816

    def test_eight_owned_h100s_in_a_colocation_cost_less_per_hour_than_renting(self) -> None:
        """$27,500 per H100 (mid of $25-30k) over 5 years: 220e12 / 43,800 h = 5,022,831,050.2
        -> ...051. Energy at 0.8 of peak: 16,103.36 W * 0.8 = 12.882688 kWh * 80.6e6 =
        1,038,344,652.8 -> ...653. Colocation $163.44/kW-month (CBRE 2023) for 10.2 kW =
        $1,667.088/month / 730 = 2,283,682,191.8 -> ...192. Total 8,344,857,896 ($8.34/h)."""
        pool = PoolCost(
            gpu_count=8,
            purchase_nano_per_gpu=27_500 * NANO_PER_UNIT,
            depreciation_years="5",
            power_w_per_gpu=H100.power_w,
            node_overhead_ratio="0.82",
            pue="1.58",
            energy_nano_per_kwh=80_600_000,
            utilization_power_ratio="0.8",
            hosting_nano_per_month=1_667_088_000_000,
            operations_nano_per_month=0,
        )
        breakdown = pool_cost_per_hour(pool)
        assert breakdown == CostBreakdown(
            capital_nano=5_022_831_051,
            rent_nano=0,
            energy_nano=1_038_344_653,
            hosting_nano=2_283_682_192,
            operations_nano=0,
        )
        assert breakdown.total_nano == 8_344_857_896
        assert breakdown.total_nano < 8 * 2_350_000_000

    def test_llama_8b_on_a_rented_h100_costs_cents_per_million_tokens(self) -> None:
        """A step of batch 64 reads 8.03 GB of weights and 64 * 1,500 * 64 KiB of fp8 KV at
        3.35e12 * 0.7 B/s, plus 3 ms: about 9.1 ms, so about 7,000 output tokens/s; at $2.35/h
        that is 2.35e9 * 1e6 / (3600 * 7,000) ~ $0.093 per million output tokens; prefill at
        about 60,600 tokens/s ~ $0.011 per million."""
        prefill, decode = modeled_throughput(_setup_8b_fp8(), 1_000, 1_000, 64)
        costs = token_costs(2_350_000_000, prefill, decode, "1", basis="modeled")
        assert costs.basis == "modeled"
        assert 85_000_000 < costs.output_nano_per_mtok < 100_000_000
        assert 10_000_000 < costs.input_nano_per_mtok < 11_000_000

    def test_a_pool_of_replicas_has_the_throughput_of_all_of_them(self) -> None:
        """Eight 1-GPU replicas cost 8x one GPU and serve 8x its tokens: the same per token."""
        prefill, decode = modeled_throughput(_setup_8b_fp8(), 1_000, 1_000, 64)
        one = token_costs(2_350_000_000, prefill, decode, "0.6", basis="modeled")
        eight = token_costs(8 * 2_350_000_000, 8 * prefill, 8 * decode, "0.6", basis="modeled")
        assert abs(eight.output_nano_per_mtok - one.output_nano_per_mtok) <= 1


# Hypothesis strategies, local to this module (tests/strategies.py is shared).
# Up to $1,000 an hour at 1 token/s and 0.1% utilization stays under AMOUNT_NANO_MAX per mtok.
_costs_per_hour_nano = st.integers(min_value=0, max_value=10**12)
_throughputs = st.floats(min_value=1.0, max_value=1e7, allow_nan=False)
_utilizations = st.fractions(min_value=Fraction(1, 1000), max_value=1)
_tokens = st.integers(min_value=0, max_value=10**7)
_prices_nano_per_mtok = st.integers(min_value=0, max_value=10**12)


def _ratios(maximum: int) -> st.SearchStrategy[Decimal]:
    return st.decimals(min_value=0, max_value=maximum, places=3)


_sites = st.fixed_dictionaries(
    {
        "gpu_count": st.integers(min_value=1, max_value=100_000),
        "power_w_per_gpu": st.decimals(min_value=Decimal("0.001"), max_value=2_000, places=3),
        "node_overhead_ratio": _ratios(3),
        "pue": st.decimals(min_value=1, max_value=3, places=3),
        "energy_nano_per_kwh": st.integers(min_value=0, max_value=10**9),
        "utilization_power_ratio": st.decimals(min_value=Decimal("0.001"), max_value=1, places=3),
        "hosting_nano_per_month": st.integers(min_value=0, max_value=10**15),
        "operations_nano_per_month": st.integers(min_value=0, max_value=10**15),
    }
)
_bases = st.one_of(
    st.fixed_dictionaries(
        {
            "purchase_nano_per_gpu": st.integers(min_value=0, max_value=10**14),
            "depreciation_years": st.decimals(min_value=Decimal("0.5"), max_value=10, places=1),
            "residual_ratio": st.decimals(min_value=0, max_value=Decimal("0.99"), places=2),
        }
    ),
    st.fixed_dictionaries({"rent_nano_per_gpu_hour": st.integers(min_value=0, max_value=10**11)}),
)
_pools = st.builds(lambda site, basis: PoolCost(**site, **basis), _sites, _bases)


class TestProperties:
    @given(_pools)
    def test_total_equals_the_sum_of_the_lines(self, pool: PoolCost) -> None:
        """Whatever the pool, the total is the sum of its rounded lines, none negative."""
        breakdown = pool_cost_per_hour(pool)
        lines = [
            breakdown.capital_nano,
            breakdown.rent_nano,
            breakdown.energy_nano,
            breakdown.hosting_nano,
            breakdown.operations_nano,
        ]
        assert breakdown.total_nano == sum(lines)
        assert min(lines) >= 0

    @given(_pools)
    def test_each_line_is_rounded_up_by_less_than_one_nano(self, pool: PoolCost) -> None:
        """The energy and capital lines lie in [exact, exact + 1)."""
        breakdown = pool_cost_per_hour(pool)
        kilowatt_hours = (
            pool.gpu_count
            * Fraction(Decimal(pool.power_w_per_gpu))
            * (1 + Fraction(Decimal(pool.node_overhead_ratio)))
            * Fraction(Decimal(pool.pue))
            * Fraction(Decimal(pool.utilization_power_ratio))
            / 1000
        )
        energy_exact = kilowatt_hours * pool.energy_nano_per_kwh
        assert energy_exact <= breakdown.energy_nano < energy_exact + 1
        if pool.purchase_nano_per_gpu is not None:
            hours = Fraction(Decimal(str(pool.depreciation_years))) * 8760
            kept = 1 - Fraction(Decimal(str(pool.residual_ratio)))
            capital_exact = pool.gpu_count * pool.purchase_nano_per_gpu * kept / hours
            assert capital_exact <= breakdown.capital_nano < capital_exact + 1

    @given(_costs_per_hour_nano, _throughputs, _throughputs, _utilizations, _utilizations)
    def test_cost_per_token_never_rises_as_utilization_rises(
        self, cost: int, prefill: float, decode: float, first: Fraction, second: Fraction
    ) -> None:
        """Busier GPUs spread the same hour over more tokens."""
        low, high = sorted((first, second))
        at_low = token_costs(cost, prefill, decode, low, basis="modeled")
        at_high = token_costs(cost, prefill, decode, high, basis="modeled")
        assert at_high.input_nano_per_mtok <= at_low.input_nano_per_mtok
        assert at_high.output_nano_per_mtok <= at_low.output_nano_per_mtok

    @given(_costs_per_hour_nano, _throughputs, _throughputs, _utilizations)
    def test_more_throughput_never_raises_cost_per_token(
        self, cost: int, first: float, second: float, utilization: Fraction
    ) -> None:
        """Float throughputs keep their order through the exact reading."""
        slow, fast = sorted((first, second))
        at_slow = token_costs(cost, slow, slow, utilization, basis="measured")
        at_fast = token_costs(cost, fast, fast, utilization, basis="measured")
        assert at_fast.input_nano_per_mtok <= at_slow.input_nano_per_mtok
        assert at_fast.output_nano_per_mtok <= at_slow.output_nano_per_mtok

    @given(_prices_nano_per_mtok, _prices_nano_per_mtok, _tokens, _tokens, _tokens, _tokens)
    def test_request_cost_never_falls_as_tokens_grow(
        self,
        input_price: int,
        output_price: int,
        prompt: int,
        completion: int,
        more_prompt: int,
        more_completion: int,
    ) -> None:
        """More prompt or completion tokens never cost less, and one rounding stays under 1."""
        costs = TokenCosts(
            input_nano_per_mtok=input_price, output_nano_per_mtok=output_price, basis="modeled"
        )
        base = request_cost_nano(costs, prompt, completion)
        grown = request_cost_nano(costs, prompt + more_prompt, completion + more_completion)
        assert grown >= base
        exact = Fraction(prompt * input_price + completion * output_price, 1_000_000)
        assert exact <= base < exact + 1
