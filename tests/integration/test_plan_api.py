"""``POST /admin/v1/plan/{perf,cost,price}`` on a live gateway: the CLI's figures over
HTTP, admin only, and bad input answered in the admin API's error shape."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import LiveGateway, post_plan
from tokenmill.economics import reference
from tokenmill.economics.costing import CostQuery, cost_answer
from tokenmill.economics.queries import PerfQuery, perf_answer

LLAMA_ON_TWO_H100 = {"gpu": "h100-sxm", "gpus": 2, "model": "llama-3.3-70b", "precision": "fp8"}


def test_perf_answers_as_the_cli_does(plan_gateway: LiveGateway) -> None:
    answer = post_plan(plan_gateway, "perf", {**LLAMA_ON_TWO_H100, "concurrency": 64})
    assert answer.status_code == 200, answer.text
    query = PerfQuery(
        gpu="h100-sxm", gpus=2, model="llama-3.3-70b", precision="fp8", concurrency=64
    )
    assert answer.json() == perf_answer(query)


def test_cost_answers_as_the_cli_does_with_money_as_text(plan_gateway: LiveGateway) -> None:
    body = {**LLAMA_ON_TWO_H100, "pool_gpus": 8, "energy_usd_per_kwh": "0.05"}
    answer = post_plan(plan_gateway, "cost", body)
    assert answer.status_code == 200, answer.text
    query = CostQuery(
        perf=PerfQuery(gpu="h100-sxm", gpus=2, model="llama-3.3-70b", precision="fp8"),
        pool_gpus=8,
        energy_usd_per_kwh=Decimal("0.05"),
    )
    expected = cost_answer(query, reference.packaged())
    assert answer.json() == expected
    assert answer.json()["assumptions"]["energy_usd_per_kwh"] == "0.05"


def test_price_meets_the_margin_and_lists_the_market(plan_gateway: LiveGateway) -> None:
    answer = post_plan(plan_gateway, "price", {**LLAMA_ON_TWO_H100, "margin_ratio": "0.5"})
    assert answer.status_code == 200, answer.text
    shown = answer.json()
    for side in ("input", "output"):
        cost = Decimal(shown["cost_usd_per_mtok"][side])
        price = Decimal(shown["price_usd_per_mtok"][side])
        assert (price - cost) / price >= Decimal("0.5")
        assert (price - Decimal("0.000000001") - cost) / price < Decimal("0.5")
    assert {row["provider"] for row in shown["market"]} >= {"DeepInfra", "Together"}


def test_only_the_admin_may_ask(plan_gateway: LiveGateway) -> None:
    answer = post_plan(plan_gateway, "perf", LLAMA_ON_TWO_H100, token="tm-not-the-admin")
    assert answer.status_code == 401


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("perf", {**LLAMA_ON_TWO_H100, "gpu": "h900"}, "gpu"),
        ("perf", {**LLAMA_ON_TWO_H100, "gpus": 0}, "gpus"),
        ("perf", {**LLAMA_ON_TWO_H100, "precision": "int3"}, "precision"),
        ("perf", {**LLAMA_ON_TWO_H100, "parallel": "dep"}, "parallel"),
        ("perf", {**LLAMA_ON_TWO_H100, "concurrency": "lots"}, "concurrency"),
        ("perf", {**LLAMA_ON_TWO_H100, "surprise": 1}, "surprise"),
        ("cost", {**LLAMA_ON_TWO_H100, "energy_usd_per_kwh": 0.05}, "energy_usd_per_kwh"),
        ("cost", {**LLAMA_ON_TWO_H100, "energy_usd_per_kwh": "1e-3"}, "energy_usd_per_kwh"),
        ("cost", {**LLAMA_ON_TWO_H100, "pool_gpus": 3}, "pool_gpus"),
        ("cost", {**LLAMA_ON_TWO_H100, "itl_ms_max": 0.001}, "itl_ms_max"),
        ("price", {**LLAMA_ON_TWO_H100, "margin_ratio": "1"}, "margin_ratio"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    plan_gateway: LiveGateway, path: str, body: dict[str, Any], param: str
) -> None:
    answer = post_plan(plan_gateway, path, body)
    assert answer.status_code in (400, 404), answer.text
    error = answer.json()["error"]
    assert param in (error.get("param") or "") + error["message"], error
