"""``POST /admin/v1/plan/capacity`` and ``/plan/scenario`` on a live gateway: the same answers
as ``capacity_answer`` and ``scenario_answer``, admin only, and bad bodies answered 400 in the
admin API's error shape, naming the field."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import LiveGateway, post_plan
from tokenmill.economics import reference
from tokenmill.economics.capacity import CapacityQuery, Demand, capacity_answer
from tokenmill.economics.scenario import ScenarioQuery, scenario_answer

LLAMA = {
    "model": "llama-3.3-70b",
    "input": 1000,
    "output": 500,
    "ttft_ms_p95": 2000,
    "itl_ms_p95": 50,
    "requests_per_s": "50",
}
SMALL = {
    "model": "llama-3.1-8b",
    "input": 2000,
    "output": 200,
    "ttft_ms_p95": 1000,
    "itl_ms_p95": 30.5,
    "output_tokens_per_day": 1_000_000_000,
}
SCENARIO = {"model": "llama-3.3-70b", "output_tokens_per_day": 100_000_000_000, "years": 2}


def test_capacity_answers_as_capacity_answer(plan_gateway: LiveGateway) -> None:
    body = {"demand": [LLAMA, SMALL], "gpus": ["h100", "b200"], "utilization_max": "0.7"}
    answer = post_plan(plan_gateway, "capacity", body)
    assert answer.status_code == 200, answer.text
    query = CapacityQuery(
        demands=(
            Demand("llama-3.3-70b", 1000, 500, 2000.0, 50.0, requests_per_s=Decimal(50)),
            Demand("llama-3.1-8b", 2000, 200, 1000.0, 30.5, output_tokens_per_day=1_000_000_000),
        ),
        gpus=("h100", "b200"),
        utilization_max=Decimal("0.7"),
    )
    expected = capacity_answer(query, reference.packaged())
    assert answer.json() == expected
    assert set(answer.json()["gpus"]) <= {"h100-sxm", "b200"}


def test_capacity_on_the_rented_basis(plan_gateway: LiveGateway) -> None:
    answer = post_plan(plan_gateway, "capacity", {"demand": [LLAMA], "basis": "rented"})
    assert answer.status_code == 200, answer.text
    query = CapacityQuery(
        demands=(Demand("llama-3.3-70b", 1000, 500, 2000.0, 50.0, requests_per_s=Decimal(50)),),
        basis="rented",
    )
    assert answer.json() == capacity_answer(query, reference.packaged())
    assert answer.json()["basis"] == "rented"


def test_scenario_answers_as_scenario_answer(plan_gateway: LiveGateway) -> None:
    body = {
        **SCENARIO,
        "price_input_usd_per_mtok": "0.2",
        "price_output_usd_per_mtok": "0.5",
        "demand_growth_per_year": "1.5",
        "price_multiplier_per_year": "0.7",
        "lead_months": 6,
        "gpus": ["h100-sxm", "b200"],
        "build": "profitable",
        "start": "2026-03-01",
    }
    answer = post_plan(plan_gateway, "scenario", body)
    assert answer.status_code == 200, answer.text
    query = ScenarioQuery(
        model="llama-3.3-70b",
        output_tokens_per_day=100_000_000_000,
        years=2,
        price_input_usd_per_mtok=Decimal("0.2"),
        price_output_usd_per_mtok=Decimal("0.5"),
        demand_growth_per_year=Decimal("1.5"),
        price_multiplier_per_year=Decimal("0.7"),
        lead_months=6,
        gpus=("h100-sxm", "b200"),
        build="profitable",
        start="2026-03-01",
    )
    assert answer.json() == scenario_answer(query, reference.packaged())


def test_scenario_defaults_are_the_clis(plan_gateway: LiveGateway) -> None:
    answer = post_plan(plan_gateway, "scenario", SCENARIO)
    assert answer.status_code == 200, answer.text
    query = ScenarioQuery("llama-3.3-70b", 100_000_000_000, years=2)
    assert answer.json() == scenario_answer(query, reference.packaged())
    assert len(answer.json()["years"]) == 2


@pytest.mark.parametrize("path", ["capacity", "scenario"])
def test_only_the_admin_may_ask(plan_gateway: LiveGateway, path: str) -> None:
    body = {"demand": [LLAMA]} if path == "capacity" else SCENARIO
    answer = post_plan(plan_gateway, path, body, token="tm-not-the-admin")
    assert answer.status_code == 401


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"demand": []}, "demand"),
        ({}, "demand"),
        ({"demand": [LLAMA], "surprise": 1}, "surprise"),
        ({"demand": [{**LLAMA, "colour": "red"}]}, "colour"),
        ({"demand": [{**LLAMA, "output_tokens_per_day": 1000}]}, "requests_per_s"),
        ({"demand": [{**LLAMA, "requests_per_s": None}]}, "requests_per_s"),
        ({"demand": [{**LLAMA, "requests_per_s": 50}]}, "requests_per_s"),
        ({"demand": [{**LLAMA, "requests_per_s": "1e3"}]}, "requests_per_s"),
        ({"demand": [{**LLAMA, "requests_per_s": "0"}]}, "requests_per_s"),
        ({"demand": [{**LLAMA, "input": 1000.0}]}, "input"),
        ({"demand": [{**LLAMA, "input": 0}]}, "input"),
        ({"demand": [{**LLAMA, "itl_ms_p95": 0}]}, "itl_ms_p95"),
        ({"demand": [{**LLAMA, "ttft_ms_p95": "fast"}]}, "ttft_ms_p95"),
        ({"demand": [{k: v for k, v in LLAMA.items() if k != "model"}]}, "model"),
        ({"demand": [{**LLAMA, "model": "llama-9"}]}, "model"),  # 404: not in the catalog
        ({"demand": [LLAMA], "gpus": ["h900"]}, "gpu"),  # 404
        ({"demand": [LLAMA], "basis": "leased"}, "basis"),
        ({"demand": [LLAMA], "utilization_max": "0"}, "utilization_max"),
        ({"demand": [LLAMA], "utilization_max": "1.5"}, "utilization_max"),
        ({"demand": [{**LLAMA, "itl_ms_p95": 0.001}]}, "itl_ms"),
    ],
)
def test_a_bad_capacity_body_is_a_400_naming_the_field(
    plan_gateway: LiveGateway, body: dict[str, Any], param: str
) -> None:
    answer = post_plan(plan_gateway, "capacity", body)
    unknown = "llama-9" in str(body) or "h900" in str(body)
    assert answer.status_code == (404 if unknown else 400), answer.text
    error = answer.json()["error"]
    assert param in (error.get("param") or ""), error


def test_targets_nobody_meets_name_the_bodys_own_field(plan_gateway: LiveGateway) -> None:
    answer = post_plan(plan_gateway, "capacity", {"demand": [{**LLAMA, "itl_ms_p95": 0.001}]})
    assert answer.status_code == 400
    assert "itl_ms_p95" in (answer.json()["error"]["param"] or "")


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"years": 0}, "years"),
        ({"years": 31}, "years"),
        ({"lead_months": -1}, "lead_months"),
        ({"lead_months": 121}, "lead_months"),
        ({"build": "cheapest"}, "build"),
        ({"start": "2026-13-01"}, "start"),
        ({"start": "next spring"}, "start"),
        ({"demand_growth_per_year": "0"}, "demand_growth_per_year"),
        ({"demand_growth_per_year": 2}, "demand_growth_per_year"),
        ({"price_multiplier_per_year": "-0.5"}, "price_multiplier_per_year"),
        ({"price_output_usd_per_mtok": 0.5}, "price_output_usd_per_mtok"),
        ({"output_tokens_per_day": 0}, "output_tokens_per_day"),
        ({"output_tokens_per_day": None}, "output_tokens_per_day"),
        ({"model": "llama-3.1-8b"}, "price_output_usd_per_mtok"),
        ({"model": "llama-9"}, "model"),  # 404: not in the catalog
        ({"gpus": ["h900"]}, "gpu"),  # 404
        ({"itl_ms_max": 0.001}, "itl_ms_max"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_a_bad_scenario_body_is_a_400_naming_the_field(
    plan_gateway: LiveGateway, changes: dict[str, Any], param: str
) -> None:
    answer = post_plan(plan_gateway, "scenario", {**SCENARIO, **changes})
    unknown = "llama-9" in str(changes) or "h900" in str(changes)
    assert answer.status_code == (404 if unknown else 400), answer.text
    error = answer.json()["error"]
    assert param in (error.get("param") or ""), error
