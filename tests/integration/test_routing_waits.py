"""Upstreams' Retry-After, the bounded queue when every deployment is full, the failover
deadline, background health checks and the fleet view, on a live gateway (real HTTP)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveGateway, gateway_config, live_gateway
from tokenmill.config import parse_config
from tokenmill.errors import ConfigurationError
from tokenmill.testing import FakeUpstreamState, free_port

HELLO = [{"role": "user", "content": "hello there"}]


def waits_config(upstream_url: str) -> dict[str, Any]:
    config = gateway_config(
        upstream_url,
        breaker_failures_count_max=3,
        breaker_open_s=0.5,
        route_queue_wait_s_max=0.6,
        failover_deadline_s=1.0,
        health_check_interval_s=0.1,
    )
    deployments = config["deployments"]
    deployments["dep-429-wait"] = {"engine": "up", "model": "fake-429-wait"}
    deployments["dep-slow-one"] = {"engine": "up", "model": "fake-slow", "concurrency_max": 1}
    config["engines"]["down"] = {
        "kind": "openai",
        "base_url": f"http://127.0.0.1:{free_port()}/v1",
        "timeout_s_connect": 0.5,
    }
    deployments["dep-down"] = {"engine": "down", "model": "fake"}
    models = config["models"]
    models["wait-then-good"] = {"deployments": ["dep-429-wait", "dep-fake"]}
    models["only-wait"] = {"deployments": ["dep-429-wait"]}
    models["one-at-a-time"] = {"deployments": ["dep-slow-one"]}
    models["hang-then-good"] = {"deployments": ["dep-fake-hang", "dep-fake"]}
    models["down-then-good"] = {"deployments": ["dep-down", "dep-fake"]}
    return config


@pytest.fixture
def live(
    sqlite_url: str, fake_upstream: tuple[str, FakeUpstreamState], tmp_path: Path
) -> Iterator[LiveGateway]:
    with live_gateway(sqlite_url, waits_config(fake_upstream[0]), tmp_path) as gateway:
        yield gateway


def chat(live: LiveGateway, secret: str, model: str, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"model": model, "messages": HELLO, "max_tokens": 4, **extra}
    return httpx.post(
        live.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )


def fleet(live: LiveGateway) -> dict[str, dict[str, Any]]:
    answer = httpx.get(
        live.url + "/admin/v1/fleet", headers={"Authorization": f"Bearer {live.admin_token}"}
    )
    assert answer.status_code == 200, answer.text
    return {d["name"]: d for d in answer.json()["deployments"]}


def test_an_upstreams_retry_after_keeps_requests_away_until_then(
    live: LiveGateway, fake_upstream: tuple[str, FakeUpstreamState]
) -> None:
    state = fake_upstream[1]
    secret, _, _ = live.new_key()
    before = len(state.requests)
    first = chat(live, secret, "wait-then-good")
    assert first.status_code == 200, first.text
    assert [r["model"] for r in state.requests[before:]] == ["fake-429-wait", "fake"]
    assert fleet(live)["dep-429-wait"]["breaker"] == "open"  # one 429 with Retry-After is enough
    before = len(state.requests)
    assert chat(live, secret, "wait-then-good").status_code == 200
    assert [r["model"] for r in state.requests[before:]] == ["fake"]
    refused = chat(live, secret, "only-wait")
    assert refused.status_code == 503
    assert 1 <= int(refused.headers["retry-after"]) <= state.retry_after_s
    assert len(state.requests) == before + 1  # the open breaker kept it from the upstream


def test_an_upstreams_429_with_retry_after_reaches_the_client(
    live: LiveGateway, fake_upstream: tuple[str, FakeUpstreamState]
) -> None:
    secret, key_id, _ = live.new_key()
    refused = chat(live, secret, "only-wait")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == str(fake_upstream[1].retry_after_s)
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert [r.charge_nano for r in live.records(key_id)] == [0]


async def _streams(live: LiveGateway, secret: str, count: int, tokens: int) -> list[int]:
    async with httpx.AsyncClient(timeout=20) as client:
        body = {"model": "one-at-a-time", "messages": HELLO, "max_tokens": tokens, "stream": True}

        async def one() -> int:
            async with client.stream(
                "POST",
                live.url + "/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {secret}"},
            ) as response:
                await response.aread()
                return response.status_code

        return list(await asyncio.gather(*(one() for _ in range(count))))


def test_a_full_deployment_queues_briefly_then_refuses_with_retry_after(
    live: LiveGateway, fake_upstream: tuple[str, FakeUpstreamState]
) -> None:
    """concurrency_max 1: a short second stream waits for the first and is served; with
    long streams the waiter gives up after route_queue_wait_s_max and gets 503."""
    fake_upstream[1].slow_s = 0.02
    secret, _, _ = live.new_key()
    assert asyncio.run(_streams(live, secret, 2, tokens=5)) == [200, 200]  # ~0.1 s each
    started = time.monotonic()
    statuses = asyncio.run(_streams(live, secret, 3, tokens=60))  # ~1.2 s each
    assert sorted(statuses) == [200, 503, 503]
    assert time.monotonic() - started < 5
    assert fleet(live)["dep-slow-one"]["in_flight"] == 0


def test_no_failover_starts_after_the_deadline(
    live: LiveGateway, fake_upstream: tuple[str, FakeUpstreamState]
) -> None:
    """The hanging deployment times out after 2 s (its read timeout), past the 1 s deadline:
    the client gets the timeout, and the good deployment is not tried."""
    state = fake_upstream[1]
    secret, _, _ = live.new_key()
    before = len(state.requests)
    response = chat(live, secret, "hang-then-good")
    assert response.status_code == 504, response.text
    assert [r["model"] for r in state.requests[before:]] == ["fake-hang"]


def test_health_checks_open_a_dead_deployments_breaker_without_traffic(
    live: LiveGateway,
) -> None:
    deadline = time.monotonic() + 5
    while fleet(live)["dep-down"]["breaker"] != "open":
        assert time.monotonic() < deadline, fleet(live)["dep-down"]
        time.sleep(0.05)
    assert fleet(live)["dep-down"]["in_flight"] == 0
    secret, _, _ = live.new_key()
    response = chat(live, secret, "down-then-good")
    assert response.status_code == 200
    assert response.headers["x-tokenmill-deployment"] == "dep-fake"


def test_health_checks_close_a_breaker_whose_time_is_up(
    live: LiveGateway, fake_upstream: tuple[str, FakeUpstreamState]
) -> None:
    """dep-fake-500 fails three requests and opens; the upstream server answers the health
    check, so once the open time is up the breaker closes with no client as the probe."""
    secret, _, _ = live.new_key()
    for _ in range(3):
        assert chat(live, secret, "fake-500").status_code == 502
    assert fleet(live)["dep-fake-500"]["breaker"] == "open"
    deadline = time.monotonic() + 5
    while fleet(live)["dep-fake-500"]["breaker"] != "closed":
        assert time.monotonic() < deadline, fleet(live)["dep-fake-500"]
        time.sleep(0.05)


def test_the_fleet_view_needs_the_admin_token(live: LiveGateway) -> None:
    answer = httpx.get(live.url + "/admin/v1/fleet")
    assert answer.status_code == 401
    view = fleet(live)
    assert view["dep-fake"]["own"] is True  # no price list: the operator's own server
    assert view["dep-slow-one"]["concurrency_max"] == 1


def test_canary_weights_share_the_traffic(
    sqlite_url: str, fake_upstream: tuple[str, FakeUpstreamState], tmp_path: Path
) -> None:
    """Weights 1 and 3: about a quarter of the requests go first to the canary (200
    requests: mean 50, standard deviation about 6)."""
    config = gateway_config(fake_upstream[0])
    config["models"]["canaried"] = {
        "deployments": ["dep-fake", "dep-fake-running"],
        "weights": {"dep-fake": 1, "dep-fake-running": 3},
    }
    with live_gateway(sqlite_url, config, tmp_path) as live:
        secret, _, _ = live.new_key()
        served = [
            chat(live, secret, "canaried").headers["x-tokenmill-deployment"] for _ in range(200)
        ]
    assert 25 <= served.count("dep-fake") <= 80, served.count("dep-fake")
    assert served.count("dep-fake") + served.count("dep-fake-running") == 200


def test_weights_must_name_the_models_own_deployments(
    fake_upstream: tuple[str, FakeUpstreamState],
) -> None:
    config = gateway_config(fake_upstream[0])
    config["models"]["canaried"] = {"deployments": ["dep-fake"], "weights": {"sim-8b": 1}}
    with pytest.raises(ConfigurationError, match=r"models\.canaried\.weights\.sim-8b"):
        parse_config(config)
