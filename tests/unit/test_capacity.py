"""``tokenmill plan capacity``: GPUs of which kind for a demand forecast within TTFT and ITL
targets, cheapest first (tokenmill.economics.capacity), and its CLI.

Hand figures use the packaged catalogs: an H100 SXM rents for 2.35 USD per GPU-hour and
operations cost 50 USD per GPU-month (730 hours); the default utilization is 0.6.
"""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tokenmill.cli.main import app
from tokenmill.economics import perf, reference
from tokenmill.economics.capacity import (
    CapacityQuery,
    Demand,
    Option,
    capacity_answer,
    options_for,
)
from tokenmill.economics.queries import PerfQuery, setup_of
from tokenmill.errors import InvalidRequest, NotFound
from tokenmill.money import parse_amount

CATALOGS = reference.packaged()
UTILIZATION = Fraction(3, 5)  # site_defaults.yaml utilization_ratio
LLAMA_50_RPS = Demand(
    model="llama-3.3-70b",
    input_tokens=1000,
    output_tokens=500,
    ttft_ms_max=2000,
    itl_ms_max=50,
    requests_per_s=Decimal(50),
)


def demand(**changes: Any) -> Demand:
    """Llama 3.3 70B at 50 requests/s of 1000 in, 500 out, TTFT 2 s, ITL 50 ms, or as told."""
    return dataclasses.replace(LLAMA_50_RPS, **changes)


def answer(*demands: Demand, **changes: Any) -> dict[str, Any]:
    return capacity_answer(CapacityQuery(demands=demands, **changes), CATALOGS)


def nano(text: str) -> int:
    return parse_amount(text)


def setup_for(option: Option, wanted: Demand) -> perf.Setup:
    query = PerfQuery(
        gpu=option.gpu,
        model=wanted.model,
        gpus=option.gpus_per_replica,
        precision=option.precision,
        parallel=option.parallel,
    )
    return setup_of(query, CATALOGS)


def ttft_ms_at(setup: perf.Setup, wanted: Demand, point: perf.OperatingPoint) -> float:
    """TTFT under load as the docs define it: an idle prefill plus one step of the batch."""
    return perf.prefill_time_s(setup, wanted.input_tokens) * 1000 + point.step_ms


class TestChosenOption:
    def test_every_option_meets_both_targets(self) -> None:
        """No candidate is offered whose ITL or TTFT misses the target."""
        wanted = demand()
        options = options_for(wanted, CapacityQuery(demands=(wanted,)), CATALOGS)
        assert options
        for option in options:
            assert option.itl_ms <= wanted.itl_ms_max, option
            assert option.ttft_ms <= wanted.ttft_ms_max, option

    def test_one_more_request_in_flight_breaks_a_target_or_a_limit(self) -> None:
        """Each candidate runs at its largest concurrency: one more request would miss the ITL
        or TTFT target, or the schedulers or the KV cache hold no more."""
        wanted = demand()
        options = options_for(wanted, CapacityQuery(demands=(wanted,)), CATALOGS)
        held_by_a_target = 0
        for option in options:
            setup = setup_for(option, wanted)
            at = perf.operating_point(setup, 1000, 500, option.concurrency)
            assert at.batch == option.concurrency
            assert at.itl_ms == pytest.approx(option.itl_ms)
            assert ttft_ms_at(setup, wanted, at) == pytest.approx(option.ttft_ms)
            limit = min(perf.batch_limit(setup), perf.batch_max(setup, 1500))
            if option.concurrency == limit:
                continue
            more = perf.operating_point(setup, 1000, 500, option.concurrency + 1)
            too_slow = more.itl_ms > wanted.itl_ms_max
            too_late = ttft_ms_at(setup, wanted, more) > wanted.ttft_ms_max
            assert too_slow or too_late, option
            held_by_a_target += 1
        assert held_by_a_target > 5  # most candidates stop at the ITL target, not a limit

    def test_replicas_cover_the_demand_at_the_utilization_and_no_fewer_would(self) -> None:
        """50 requests/s * 500 tokens = 25,000 tokens/s; replicas = ceil(25,000 / (replica
        tokens/s * 0.6)), from the option's own throughput."""
        wanted = demand()
        options = options_for(wanted, CapacityQuery(demands=(wanted,)), CATALOGS)
        for option in options:
            replica = Fraction(repr(option.replica_output_tokens_per_s))
            expected = math.ceil(Fraction(25_000) / (replica * UTILIZATION))
            assert option.replicas == expected, option
            assert (option.replicas - 1) * replica * UTILIZATION < 25_000
            assert option.replicas * replica * UTILIZATION >= 25_000

    def test_a_rented_h100_pool_costs_its_rent_and_operations(self) -> None:
        """Rented: gpus * 2.35 USD + ceil(gpus * 50 USD / 730) per hour, no capital, no energy."""
        wanted = demand()
        query = CapacityQuery(demands=(wanted,), gpus=("h100-sxm",), basis="rented")
        for option in options_for(wanted, query, CATALOGS):
            gpus = option.gpu_count
            operations = -(-gpus * 50_000_000_000 // 730)
            assert option.cost_nano_per_hour == gpus * 2_350_000_000 + operations, option

    def test_options_are_sorted_by_cost_per_hour(self) -> None:
        wanted = demand()
        options = options_for(wanted, CapacityQuery(demands=(wanted,)), CATALOGS)
        costs = [option.cost_nano_per_hour for option in options]
        assert len(costs) > 5
        assert costs == sorted(costs)
        shown = answer(wanted)["models"][0]
        assert shown["chosen"] == shown["options"][0]
        assert [nano(row["cost_usd_per_hour"]) for row in shown["options"]] == costs[:5]

    def test_the_plan_is_the_sum_of_each_models_chosen_option(self) -> None:
        """Two models: the plan's cost is the sum of their cheapest options, its GPUs their
        counts by kind."""
        small = demand(model="llama-3.1-8b", requests_per_s=Decimal(20))
        shown = answer(demand(), small)
        chosen = [entry["chosen"] for entry in shown["models"]]
        assert [entry["model"] for entry in shown["models"]] == ["llama-3.3-70b", "llama-3.1-8b"]
        assert nano(shown["cost_usd_per_hour"]) == sum(nano(c["cost_usd_per_hour"]) for c in chosen)
        by_kind: dict[str, int] = {}
        for row in chosen:
            by_kind[row["gpu"]] = by_kind.get(row["gpu"], 0) + row["gpus"]
        assert shown["gpus"] == by_kind
        for row in chosen:
            assert row["gpus"] == row["replicas"] * row["gpus_per_replica"]

    def test_requests_per_s_and_tokens_per_day_give_the_same_plan(self) -> None:
        """50 requests/s of 500 tokens is 25,000 tokens/s, 2,160,000,000 tokens a day."""
        by_requests = answer(demand())
        by_tokens = answer(demand(requests_per_s=None, output_tokens_per_day=2_160_000_000))
        assert by_requests["models"][0]["output_tokens_per_s"] == "25000.000"
        assert by_requests == by_tokens

    def test_gpu_restricts_the_candidates_and_takes_an_alias(self) -> None:
        wanted = demand()
        query = CapacityQuery(demands=(wanted,), gpus=("h100", "h200-sxm"))
        kinds = {option.gpu for option in options_for(wanted, query, CATALOGS)}
        assert kinds == {"h100-sxm", "h200-sxm"}
        everything = options_for(wanted, CapacityQuery(demands=(wanted,)), CATALOGS)
        assert {option.gpu for option in everything} > kinds

    def test_a_mixture_of_experts_gets_dep_candidates_and_a_dense_model_none(self) -> None:
        """dep needs at least 2 GPUs and experts to spread; a dense model runs tp only."""
        moe = demand(model="gpt-oss-120b", requests_per_s=Decimal(20))
        moe_options = options_for(moe, CapacityQuery(demands=(moe,)), CATALOGS)
        dep = [option for option in moe_options if option.parallel == "dep"]
        assert dep
        assert all(option.gpus_per_replica >= 2 for option in dep)
        dense = demand(model="llama-3.1-8b", requests_per_s=Decimal(20))
        dense_options = options_for(dense, CapacityQuery(demands=(dense,)), CATALOGS)
        assert dense_options
        assert {option.parallel for option in dense_options} == {"tp"}


class TestRefused:
    def test_targets_nobody_meets_are_invalid_naming_itl(self) -> None:
        with pytest.raises(InvalidRequest) as caught:
            answer(demand(itl_ms_max=0.001))
        assert caught.value.param == "itl_ms_max"
        assert "llama-3.3-70b" in caught.value.message

    @pytest.mark.parametrize(
        "changes",
        [
            {"requests_per_s": Decimal(5), "output_tokens_per_day": 1_000_000},
            {"requests_per_s": None, "output_tokens_per_day": None},
        ],
    )
    def test_one_of_requests_per_s_or_tokens_per_day_not_both_nor_neither(
        self, changes: dict[str, Any]
    ) -> None:
        with pytest.raises(InvalidRequest) as caught:
            answer(demand(**changes))
        assert caught.value.param == "requests_per_s"

    @pytest.mark.parametrize(
        ("changes", "param"),
        [
            ({"itl_ms_max": math.nan}, "itl_ms_max"),
            ({"itl_ms_max": 0.0}, "itl_ms_max"),
            ({"itl_ms_max": -50.0}, "itl_ms_max"),
            ({"itl_ms_max": math.inf}, "itl_ms_max"),
            ({"ttft_ms_max": math.nan}, "ttft_ms_max"),
            ({"ttft_ms_max": 0.0}, "ttft_ms_max"),
            ({"ttft_ms_max": -1.0}, "ttft_ms_max"),
            ({"requests_per_s": Decimal(0)}, "requests_per_s"),
            ({"requests_per_s": Decimal(-3)}, "requests_per_s"),
            ({"requests_per_s": Decimal("NaN")}, "requests_per_s"),
            ({"requests_per_s": None, "output_tokens_per_day": 0}, "output_tokens_per_day"),
        ],
    )
    def test_nan_zero_and_negative_figures_are_refused(
        self, changes: dict[str, Any], param: str
    ) -> None:
        with pytest.raises(InvalidRequest) as caught:
            answer(demand(**changes))
        assert caught.value.param == param

    @pytest.mark.parametrize("ratio", ["0", "1.5", "-0.5", "NaN"])
    def test_a_utilization_outside_zero_to_one_is_refused(self, ratio: str) -> None:
        with pytest.raises(InvalidRequest) as caught:
            answer(demand(), utilization_max=Decimal(ratio))
        assert caught.value.param == "utilization_max"

    def test_no_demand_and_an_unknown_model_are_refused(self) -> None:
        with pytest.raises(InvalidRequest) as empty:
            answer()
        assert empty.value.param == "demand"
        with pytest.raises(NotFound) as unknown:
            answer(demand(model="llama-9"))
        assert unknown.value.param == "model"

    def test_a_zero_token_prompt_is_refused_naming_the_input(self) -> None:
        with pytest.raises(InvalidRequest) as caught:
            answer(demand(input_tokens=0))
        assert "input" in (caught.value.param or "") + caught.value.message


class TestProperties:
    @settings(max_examples=15, deadline=None)
    @given(
        model=st.sampled_from(["llama-3.1-8b", "llama-3.3-70b"]),
        requests=st.integers(min_value=1, max_value=400),
        more=st.integers(min_value=1, max_value=400),
    )
    def test_more_demand_never_costs_less_per_hour(
        self, model: str, requests: int, more: int
    ) -> None:
        """The cheapest kind may change as demand grows, but the plan never gets cheaper."""
        low = answer(demand(model=model, requests_per_s=Decimal(requests)))
        high = answer(demand(model=model, requests_per_s=Decimal(requests + more)))
        assert nano(high["cost_usd_per_hour"]) >= nano(low["cost_usd_per_hour"])

    @settings(max_examples=15, deadline=None)
    @given(
        itl_ms=st.integers(min_value=15, max_value=150),
        looser=st.integers(min_value=1, max_value=100),
    )
    def test_a_looser_itl_target_never_raises_the_cost(self, itl_ms: int, looser: int) -> None:
        try:
            tight = answer(demand(itl_ms_max=float(itl_ms)))
        except InvalidRequest:
            tight = None  # nobody meets the tight target; the looser one may still fail too
        try:
            loose = answer(demand(itl_ms_max=float(itl_ms + looser)))
        except InvalidRequest:
            assert tight is None, "a looser target refused what a tighter one served"
            return
        if tight is not None:
            assert nano(loose["cost_usd_per_hour"]) <= nano(tight["cost_usd_per_hour"])


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["plan", "capacity", *args])


def cli_json(*args: str) -> Any:
    result = cli(*args, "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return orjson.loads(result.stdout)


def refused(*args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    return result.stderr


TWO_MODELS = """\
demand:
  - model: llama-3.3-70b
    input: 1000
    output: 500
    ttft_ms_p95: 2000
    itl_ms_p95: 50
    requests_per_s: 50
  - model: llama-3.1-8b
    input: 2000
    output: 200
    ttft_ms_p95: 1000
    itl_ms_p95: 30.5
    output_tokens_per_day: 1000000000
"""


class TestCli:
    def test_json_equals_capacity_answer(self) -> None:
        shown = cli_json("--model", "llama-3.3-70b", "--rps", "50", "--input", "1000",
                         "--output", "500", "--ttft-ms", "2000", "--itl-ms", "50")  # fmt: skip
        assert shown == answer(demand())

    def test_gpu_and_basis_reach_the_query(self) -> None:
        shown = cli_json("--model", "llama-3.3-70b", "--rps", "50", "--gpu", "h100",
                         "--basis", "rented", "--utilization-max", "0.8")  # fmt: skip
        expected = answer(demand(), gpus=("h100",), basis="rented", utilization_max=Decimal("0.8"))
        assert shown == expected
        assert set(shown["gpus"]) == {"h100-sxm"}

    def test_a_demand_file_plans_two_models(self, tmp_path: Path) -> None:
        path = tmp_path / "forecast.yaml"
        path.write_text(TWO_MODELS)
        shown = cli_json("--demand", str(path))
        small = Demand(
            model="llama-3.1-8b",
            input_tokens=2000,
            output_tokens=200,
            ttft_ms_max=1000,
            itl_ms_max=30.5,
            output_tokens_per_day=1_000_000_000,
        )
        assert shown == answer(demand(requests_per_s=Decimal("50.0")), small)
        assert [entry["model"] for entry in shown["models"]] == ["llama-3.3-70b", "llama-3.1-8b"]

    def test_the_table_shows_each_model_and_the_plan(self, tmp_path: Path) -> None:
        path = tmp_path / "forecast.yaml"
        path.write_text(TWO_MODELS)
        result = cli("--demand", str(path))
        assert result.exit_code == 0, result.stderr
        assert "llama-3.3-70b: 25,000 output tokens/s" in result.stdout
        assert "llama-3.1-8b" in result.stdout
        assert "the plan (owned)" in result.stdout

    @pytest.mark.parametrize(
        ("text", "words"),
        [
            (TWO_MODELS.replace("itl_ms_p95: 50\n", "itl_ms_p95: 50\n    color: red\n"), "color"),
            (TWO_MODELS.replace("input: 1000", "input: 1000.0"), "'input'"),
            (TWO_MODELS.replace("  - model: llama-3.3-70b\n", "  - input_: 1\n", 1), "input_"),
            (TWO_MODELS.replace("  - model: llama-3.1-8b\n", "  -\n"), "'model'"),
            ("demand: [model: llama\n", "not valid YAML"),
            ("- just a list\n", "'demand'"),
            (TWO_MODELS.replace("requests_per_s: 50", "requests_per_s: fifty"), "requests_per_s"),
            (TWO_MODELS.replace("model: llama-3.1-8b", "model: llama-9"), "unknown model"),
        ],
    )
    def test_a_bad_demand_file_is_one_error_line(
        self, tmp_path: Path, text: str, words: str
    ) -> None:
        path = tmp_path / "forecast.yaml"
        path.write_text(text)
        assert words in refused("--demand", str(path))

    def test_a_missing_model_in_the_file_is_named(self, tmp_path: Path) -> None:
        path = tmp_path / "forecast.yaml"
        path.write_text(
            "demand:\n  - {input: 1000, output: 500, ttft_ms_p95: 2000, itl_ms_p95: 50,"
            " requests_per_s: 5}\n"
        )
        assert "'model'" in refused("--demand", str(path))

    def test_a_missing_file_is_one_error_line(self, tmp_path: Path) -> None:
        assert "cannot read" in refused("--demand", str(tmp_path / "nowhere.yaml"))

    @pytest.mark.parametrize(
        ("args", "words"),
        [
            ((), "--demand"),
            (("--model", "llama-3.3-70b"), "requests_per_s"),
            (("--model", "llama-3.3-70b", "--rps", "5", "--tokens-per-day", "9"), "one of them"),
            (("--model", "llama-3.3-70b", "--rps", "lots"), "--rps"),
            (("--model", "llama-3.3-70b", "--rps", "5", "--basis", "leased"), "owned or rented"),
            (("--model", "llama-3.3-70b", "--rps", "5", "--itl-ms", "0.001"), "no candidate"),
            (("--model", "llama-3.3-70b", "--rps", "5", "--itl-ms", "nan"), "itl_ms_max"),
            (("--model", "llama-3.3-70b", "--rps", "5", "--gpu", "h900"), "unknown GPU"),
        ],
    )
    def test_bad_options_are_one_error_line(self, args: tuple[str, ...], words: str) -> None:
        assert words in refused(*args)
