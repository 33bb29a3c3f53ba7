"""The cost of each request to the operator (a vendor's price, or own GPUs' time) and the
margin report, on a live gateway."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveGateway, gateway_config, live_gateway
from tokenmill.api.fleet_costs import serving_costs
from tokenmill.billing import service as billing
from tokenmill.config import parse_config
from tokenmill.errors import ConfigurationError
from tokenmill.testing import FakeUpstreamState
from tokenmill.usage import TokenCounts

NANO = 1_000_000_000
HELLO = [{"role": "user", "content": "what does a token cost"}]
POOL = {
    "gpu": "h100-sxm",
    "gpu_count": 8,
    "rent_per_gpu_hour": "2.35",
    "energy_per_kwh": "0",
    "utilization_ratio": "0.5",
}


def costed_config(upstream_url: str) -> dict[str, Any]:
    config = gateway_config(upstream_url)
    config["pools"] = {"rack-1": POOL}
    config["deployments"]["sim-8b"]["pool"] = "rack-1"
    config["engines"]["vendor"] = {
        "kind": "openai",
        "base_url": upstream_url,
        "prices": {"fake": {"input": "0.50", "output": "1.50"}},
    }
    config["deployments"]["dep-vendor"] = {"engine": "vendor", "model": "fake"}
    config["models"]["resold"] = {
        "deployments": ["dep-vendor"],
        "price": {"input": "1.00", "output": "3.00"},
    }
    config["models"]["sim-chat"]["price"] = {"input": "0.20", "output": "0.60"}
    return config


@pytest.fixture
def live(
    sqlite_url: str, fake_upstream: tuple[str, FakeUpstreamState], tmp_path: Path
) -> Iterator[LiveGateway]:
    with live_gateway(sqlite_url, costed_config(fake_upstream[0]), tmp_path) as gateway:
        yield gateway


def chat(live: LiveGateway, secret: str, model: str) -> dict[str, Any]:
    response = httpx.post(
        live.url + "/v1/chat/completions",
        json={"model": model, "messages": HELLO, "max_tokens": 20},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return {**response.json(), "request_id": response.headers["x-request-id"]}


def funded_key(live: LiveGateway, account: str) -> tuple[str, str, str]:
    """A key whose account the running gateway knows has 10.00 USD."""
    secret, key_id, account_id = live.new_key(account)
    billing.move_funds(
        live.db, account_id, 10 * NANO, kind="topup", idempotency_key=account, actor="test"
    )
    deadline = time.monotonic() + 5
    while True:
        answer = httpx.get(
            f"{live.url}/admin/v1/accounts/{account_id}/balance",
            headers={"Authorization": f"Bearer {live.admin_token}"},
        )
        if answer.json().get("balance_nano") == 10 * NANO:
            return secret, key_id, account_id
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.05)


def test_a_resold_request_costs_the_vendors_price_and_an_own_one_its_gpu_time(
    live: LiveGateway, fake_upstream: tuple[str, FakeUpstreamState]
) -> None:
    secret, _, _ = funded_key(live, "buyer")
    resold = chat(live, secret, "resold")
    record = live.record(resold["request_id"])
    usage = resold["usage"]
    # vendor: 0.50 and 1.50 per million tokens, rounded up once
    expected = -(
        -(usage["prompt_tokens"] * 500_000_000 + usage["completion_tokens"] * 1_500_000_000)
        // 1_000_000
    )
    assert (record.cost_nano, record.cost_basis) == (expected, "vendor")
    assert record.charge_nano > record.cost_nano > 0

    own = chat(live, secret, "sim-chat")
    record = live.record(own["request_id"])
    assert record.cost_basis == "modeled"
    config = parse_config(costed_config(fake_upstream[0]))
    serving = serving_costs(config)["sim-8b"]
    counts = own["usage"]
    assert record.cost_nano == serving.cost_nano(
        TokenCounts(counts["prompt_tokens"], counts["completion_tokens"])
    )
    assert record.cost_nano > 0
    # an unpooled deployment has no known cost
    record = live.record(chat(live, secret, "fake")["request_id"])
    assert (record.cost_nano, record.cost_basis) == (0, None)


def test_the_margin_report_adds_up_revenue_cost_and_margin(live: LiveGateway) -> None:
    secret, _, account_id = funded_key(live, "shop")
    for model in ("resold", "resold", "sim-chat"):
        chat(live, secret, model)
    records = [r for r in live.records() if r.account_id == account_id]
    headers = {"Authorization": f"Bearer {live.admin_token}"}
    answer = httpx.get(
        live.url + "/admin/v1/reports/margin",
        params={"by": "model,deployment", "account": "shop"},
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    rows = {row["model"]: row for row in answer.json()}
    assert set(rows) == {"resold", "sim-chat"}
    for model, row in rows.items():
        mine = [r for r in records if r.model == model]
        assert row["requests"] == len(mine)
        assert row["revenue_nano"] == sum(r.charge_nano + r.loss_nano for r in mine)
        assert row["cost_nano"] == sum(r.cost_nano for r in mine)
        assert row["margin_nano"] == sum(r.charge_nano - r.cost_nano for r in mine)
        assert row["uncosted_requests"] == 0
    assert rows["resold"]["deployment"] == "dep-vendor"
    as_csv = httpx.get(
        live.url + "/admin/v1/reports/margin",
        params={"by": "model", "account": "shop", "format": "csv"},
        headers=headers,
    )
    parsed = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [row["model"] for row in parsed] == ["resold", "sim-chat"]
    assert parsed[0]["margin"] == rows["resold"]["margin"]
    bad = httpx.get(
        live.url + "/admin/v1/reports/margin", params={"by": "model,colour"}, headers=headers
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "by"


def test_a_pool_that_cannot_be_costed_stops_the_start_with_the_field_named(
    fake_upstream: tuple[str, FakeUpstreamState],
) -> None:
    config = costed_config(fake_upstream[0])
    config["deployments"]["sim-8b"]["pool"] = "rack-9"
    with pytest.raises(ConfigurationError, match=r"deployments\.sim-8b\.pool: unknown pool"):
        parse_config(config)
    config = costed_config(fake_upstream[0])
    config["pools"]["rack-1"] = {**POOL, "purchase_per_gpu": "25000", "depreciation_years": 4}
    with pytest.raises(ConfigurationError, match=r"deployments\.sim-8b on pool rack-1"):
        serving_costs(parse_config(config))


def test_report_margin_and_fleet_on_the_command_line(live: LiveGateway, tmp_path: Path) -> None:
    from tests.integration.test_cli_billing import refused, succeeded, tokenmill

    secret, _, _ = funded_key(live, "cli-shop")
    chat(live, secret, "resold")
    rows = succeeded(
        tokenmill(
            tmp_path,
            live.database_url,
            "report",
            "margin",
            "--by",
            "deployment",
            "--account",
            "cli-shop",
            "--format",
            "json",
        )
    )
    assert [(row["deployment"], row["requests"]) for row in rows] == [("dep-vendor", 1)]
    assert rows[0]["margin_nano"] == rows[0]["revenue_nano"] - rows[0]["cost_nano"] > 0
    refused(
        tokenmill(tmp_path, live.database_url, "report", "margin", "--by", "colour"), "group by"
    )
    view = succeeded(
        tokenmill(
            tmp_path,
            live.database_url,
            "fleet",
            "--url",
            live.url,
            "--admin-token",
            live.admin_token,
            "--json",
        )
    )
    deployments = {d["name"]: d for d in view["deployments"]}
    assert deployments["dep-vendor"]["cost"]["basis"] == "vendor"
    assert deployments["sim-8b"]["cost"]["basis"] == "modeled"
    assert view["models"]["resold"]["deployments"] == ["dep-vendor"]
    refused(tokenmill(tmp_path, live.database_url, "fleet"), "--admin-token")
