"""A replica serving a mix of request lengths (economics/mix.py) and capacity plans for it."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenmill.economics import catalog, perf, reference
from tokenmill.economics.capacity import CapacityQuery, Demand, capacity_answer
from tokenmill.economics.mix import Shape, mix_point
from tokenmill.errors import InvalidRequest

SETUP = perf.Setup(
    gpu=catalog.gpu("h100-sxm"), gpu_count=2, model=catalog.model("llama-3.3-70b"), precision="fp8"
)
SHORT = Shape(0.75, 500, 200)
LONG = Shape(0.25, 4000, 800)


def test_one_shape_is_the_operating_point() -> None:
    point = perf.operating_point(SETUP, 1000, 300, 32)
    mixed = mix_point(SETUP, [Shape(1.0, 1000, 300)], 32)
    assert mixed.output_tokens_per_s == point.output_tokens_per_s
    assert mixed.itl_ms == point.itl_ms
    assert mixed.batch_max == point.batch_max
    assert mixed.ttft_ms_p95 == pytest.approx(
        perf.prefill_time_s(SETUP, 1000) * 1000 + point.step_ms
    )


def test_two_shapes_follow_the_slot_weighted_formulas() -> None:
    """O = 0.75*200 + 0.25*800 = 350; slots 150/350 short and 200/350 long; KV read per slot
    = 3/7 * (500 + 100) + 4/7 * (4000 + 400); reserved per slot = 3/7 * 700 + 4/7 * 4800."""
    batch = 16
    point = mix_point(SETUP, [SHORT, LONG], batch)
    read = 3 / 7 * 600 + 4 / 7 * 4400
    reserved = 3 / 7 * 700 + 4 / 7 * 4800
    step_s = perf.decode_step_time_s(SETUP, batch, round(batch * read))
    busy_s = 0.75 * perf.prefill_busy_s(SETUP, 500) + 0.25 * perf.prefill_busy_s(SETUP, 4000)
    assert point.output_tokens_mean == pytest.approx(350)
    assert point.input_tokens_mean == pytest.approx(1375)
    assert point.step_ms == pytest.approx(step_s * 1000)
    assert point.output_tokens_per_s == pytest.approx(350 / (busy_s + 349 * step_s / batch))
    assert point.itl_ms == pytest.approx((step_s + batch * busy_s / 350) * 1000)
    assert point.batch_max == perf.batch_max(SETUP, math.ceil(reserved))


def test_the_p95_ttft_is_the_shape_where_the_share_reaches_95_percent() -> None:
    """70% short, 25% long, 5% very long: 95% is reached by the long prompts, so the p95 is
    theirs, not the very long ones'; with 10% very long it is those."""
    huge = 20_000
    rare = mix_point(
        SETUP, [Shape(0.7, 500, 200), Shape(0.25, 4000, 800), Shape(0.05, huge, 500)], 8
    )
    common = mix_point(
        SETUP, [Shape(0.6, 500, 200), Shape(0.3, 4000, 800), Shape(0.1, huge, 500)], 8
    )
    long_ttft = perf.prefill_time_s(SETUP, 4000) * 1000 + rare.step_ms
    huge_ttft = perf.prefill_time_s(SETUP, huge) * 1000 + common.step_ms
    assert rare.ttft_ms_p95 == pytest.approx(long_ttft)
    assert common.ttft_ms_p95 == pytest.approx(huge_ttft)


def test_shares_are_normalised() -> None:
    assert mix_point(SETUP, [Shape(3, 500, 200), Shape(1, 4000, 800)], 16) == mix_point(
        SETUP, [SHORT, LONG], 16
    )


@pytest.mark.parametrize(
    ("shapes", "param"),
    [
        ([], "lengths"),
        ([Shape(0, 500, 200)], "share"),
        ([Shape(math.nan, 500, 200), LONG], "share"),
        ([Shape(1, 0, 200), LONG], "input"),
        ([Shape(1, 500, 0), LONG], "output"),
        ([Shape(1, 500, 200), Shape(1, 10**7, 10**7)], "lengths"),
    ],
)
def test_bad_mixes_are_refused(shapes: list[Shape], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        mix_point(SETUP, shapes, 4)
    assert caught.value.param == param


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=1, max_value=200), st.integers(min_value=1, max_value=200))
def test_more_concurrency_never_lowers_the_mixs_throughput(low: int, more: int) -> None:
    few = mix_point(SETUP, [SHORT, LONG], low)
    many = mix_point(SETUP, [SHORT, LONG], low + more)
    assert many.output_tokens_per_s >= few.output_tokens_per_s * (1 - 1e-12)


def test_capacity_plans_a_mix_and_its_tokens() -> None:
    """20 requests/s of the mix produce 20 * 350 = 7,000 output tokens/s; the chosen option
    meets the p95 TTFT and the ITL target."""
    demand = Demand(
        model="llama-3.3-70b",
        input_tokens=1,
        output_tokens=1,
        ttft_ms_max=3000,
        itl_ms_max=50,
        requests_per_s=Decimal(20),
        lengths=(SHORT, LONG),
    )
    shown = capacity_answer(
        CapacityQuery(demands=(demand,), gpus=("h100-sxm",)), reference.packaged()
    )
    entry = shown["models"][0]
    assert Decimal(entry["output_tokens_per_s"]) == Decimal("7000.000")
    chosen = entry["chosen"]
    assert chosen["itl_ms"] <= 50 and chosen["ttft_ms"] <= 3000
    needed = 7000 / 0.6
    assert chosen["replicas"] == math.ceil(needed / chosen["replica_output_tokens_per_s"])
