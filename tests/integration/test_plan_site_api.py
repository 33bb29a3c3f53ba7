"""``POST /admin/v1/plan/site`` on a live gateway: ``site_answer``'s figures over HTTP, admin
only, money as decimal text, and bad input answered in the admin API's error shape."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import LiveGateway, post_plan
from tokenmill.economics import reference
from tokenmill.economics.queries import PerfQuery
from tokenmill.economics.site import MiningQuery, SiteQuery, site_answer

LLAMA_70B_ON_TWO_H100 = PerfQuery(gpu="h100-sxm", model="llama-3.3-70b", gpus=2, precision="fp8")


def test_the_defaults_answer_as_site_answer_does(plan_gateway: LiveGateway) -> None:
    """Only the site's power given: 2 x H100 SXM serving Llama 3.3 70B in FP8."""
    answer = post_plan(plan_gateway, "site", {"site_mw": "100"})
    assert answer.status_code == 200, answer.text
    query = SiteQuery(perf=LLAMA_70B_ON_TWO_H100, site_mw=Decimal(100))
    assert answer.json() == site_answer(query, reference.packaged())
    assert answer.json()["gpus"] == 61_050  # 100 MW / 1.3 / 2,520 W = 30,525 replicas of 2


def test_every_figure_given_as_text_reaches_the_answer(plan_gateway: LiveGateway) -> None:
    """Every decimal-text field lands in the query answered."""
    body = {
        "site_mw": "13",
        "gpus": 4,
        "pue": "1.25",
        "energy_usd_per_kwh": "0.05",
        "utilization_ratio": "0.5",
        "purchase_usd_per_gpu": "20000",
        "price_input_usd_per_mtok": "0.2",
        "price_output_usd_per_mtok": "1",
        "btc_price_usd": "91000",
        "network_hashrate_eh_s": "1100",
        "fees_btc_per_block": "0.1",
        "miner_j_per_th": "18",
        "conversion_usd_per_mw_it": "8000000",
        "conversion_months": "12",
    }
    answer = post_plan(plan_gateway, "site", body)
    assert answer.status_code == 200, answer.text
    query = SiteQuery(
        perf=PerfQuery(gpu="h100-sxm", model="llama-3.3-70b", gpus=4, precision="fp8"),
        site_mw=Decimal(13),
        mining=MiningQuery(
            btc_price_usd=Decimal(91000),
            network_hashrate_eh_s=Decimal(1100),
            fees_btc_per_block=Decimal("0.1"),
            miner_j_per_th=Decimal(18),
        ),
        pue=Decimal("1.25"),
        energy_usd_per_kwh=Decimal("0.05"),
        utilization_ratio=Decimal("0.5"),
        purchase_usd_per_gpu=Decimal(20000),
        price_input_usd_per_mtok=Decimal("0.2"),
        price_output_usd_per_mtok=Decimal(1),
        conversion_usd_per_mw_it=Decimal(8_000_000),
        conversion_months=Decimal(12),
    )
    shown = answer.json()
    assert shown == site_answer(query, reference.packaged())
    assert shown["it_mw"] == "10.400"  # 13 / 1.25
    assert shown["mining_usd_per_day"]["hashprice_source"] == "derived"
    # 13 MW * 1,000 kW * 24 h * 0.05 USD = 15,600 USD of energy for the whole site
    assert shown["mining_usd_per_day"]["cost_energy"] == "15600.00"


def test_only_the_admin_may_ask(plan_gateway: LiveGateway) -> None:
    """A key that is not the admin's gets 401."""
    answer = post_plan(plan_gateway, "site", {"site_mw": "100"}, token="tm-not-the-admin")
    assert answer.status_code == 401


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"site_mw": 100.0}, "site_mw"),
        ({"site_mw": 100}, "site_mw"),
        ({"site_mw": "1e2"}, "site_mw"),
        ({"site_mw": "-5"}, "site_mw"),
        ({}, "site_mw"),
        ({"site_mw": "0"}, "site_mw"),
        ({"site_mw": "100001"}, "site_mw"),
        ({"site_mw": "0.001"}, "site_mw"),
        ({"site_mw": "100", "pue": "0.9"}, "pue"),
        ({"site_mw": "100", "utilization_ratio": "1.5"}, "utilization_ratio"),
        ({"site_mw": "100", "btc_price_usd": "91000"}, "network_hashrate_eh_s"),
        ({"site_mw": "100", "energy_usd_per_kwh": 0.05}, "energy_usd_per_kwh"),
        ({"site_mw": "100", "model": "gpt-oss-20b", "gpus": 1}, "price_output_usd_per_mtok"),
        ({"site_mw": "100", "surprise": 1}, "surprise"),
    ],
)
def test_bad_input_is_a_400_in_the_admin_error_shape(
    plan_gateway: LiveGateway, body: dict[str, Any], param: str
) -> None:
    """Floats, bad text and bad figures get 400 naming the param, never 500."""
    answer = post_plan(plan_gateway, "site", body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]
