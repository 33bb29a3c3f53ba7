"""Failover before the first byte, and circuit breakers, on a live gateway (real HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveGateway, gateway_config, live_gateway
from tokenmill.testing import FakeUpstreamState

HELLO = [{"role": "user", "content": "hello there"}]


def failover_config(upstream_url: str) -> dict[str, Any]:
    config = gateway_config(upstream_url, breaker_failures_count_max=3, breaker_open_s=60)
    config["models"]["flaky-then-good"] = {"deployments": ["dep-fake-500", "dep-fake"]}
    config["models"]["all-bad"] = {"deployments": ["dep-fake-500", "dep-fake-429"]}
    config["models"]["bad-input"] = {"deployments": ["dep-fake-400", "dep-fake"]}
    return config


@pytest.fixture
def live(
    sqlite_url: str, fake_upstream: tuple[str, FakeUpstreamState], tmp_path: Path
) -> Iterator[LiveGateway]:
    with live_gateway(sqlite_url, failover_config(fake_upstream[0]), tmp_path) as gateway:
        yield gateway


def upstream_models(state: FakeUpstreamState, since: int) -> list[str]:
    return [request.get("model", "") for request in state.requests[since:]]


def chat(live: LiveGateway, secret: str, model: str, stream: bool = False) -> httpx.Response:
    body: dict[str, Any] = {"model": model, "messages": HELLO, "max_tokens": 8, "stream": stream}
    return httpx.post(
        live.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )


class TestFailover:
    def test_a_failing_deployment_is_passed_over_for_the_next_one(
        self, live: LiveGateway, fake_upstream: tuple[str, FakeUpstreamState]
    ) -> None:
        """The first deployment answers 500: the client gets the second one's answer, and
        the record names the deployment that served it."""
        state = fake_upstream[1]
        secret, key_id, _ = live.new_key()
        before = len(state.requests)
        response = chat(live, secret, "flaky-then-good")
        assert response.status_code == 200, response.text
        assert response.headers["x-tokenmill-deployment"] == "dep-fake"
        assert upstream_models(state, before) == ["fake-500", "fake"]
        (record,) = live.records(key_id)
        assert (record.deployment, record.status) == ("dep-fake", "ok")
        assert record.completion_tokens == response.json()["usage"]["completion_tokens"]

    def test_a_stream_fails_over_before_its_first_byte(
        self, live: LiveGateway, fake_upstream: tuple[str, FakeUpstreamState]
    ) -> None:
        """A stream whose first deployment fails starts on the next one, complete."""
        secret, key_id, _ = live.new_key()
        response = chat(live, secret, "flaky-then-good", stream=True)
        assert response.status_code == 200
        assert response.text.rstrip().endswith("data: [DONE]")
        assert response.headers["x-tokenmill-deployment"] == "dep-fake"
        (record,) = live.records(key_id)
        assert (record.deployment, record.status) == ("dep-fake", "ok")

    def test_when_every_deployment_fails_the_client_gets_the_last_error_and_pays_nothing(
        self, live: LiveGateway, fake_upstream: tuple[str, FakeUpstreamState]
    ) -> None:
        """500 then 429: the client sees the 429 in OpenAI's shape; one error record,
        nothing produced."""
        state = fake_upstream[1]
        secret, key_id, _ = live.new_key()
        before = len(state.requests)
        response = chat(live, secret, "all-bad")
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        assert upstream_models(state, before) == ["fake-500", "fake-429"]
        (record,) = live.records(key_id)
        assert record.status == "error"
        assert (record.prompt_tokens, record.completion_tokens, record.charge_nano) == (0, 0, 0)

    def test_a_client_error_is_not_retried_elsewhere(
        self, live: LiveGateway, fake_upstream: tuple[str, FakeUpstreamState]
    ) -> None:
        """A 400 says the request is bad, not the deployment: no other deployment is tried."""
        state = fake_upstream[1]
        secret, _, _ = live.new_key()
        before = len(state.requests)
        response = chat(live, secret, "bad-input")
        assert response.status_code == 400
        assert upstream_models(state, before) == ["fake-400"]


class TestBreaker:
    def test_after_failures_in_a_row_the_failing_deployment_is_not_tried(
        self, live: LiveGateway, fake_upstream: tuple[str, FakeUpstreamState]
    ) -> None:
        """Three failures open its breaker (breaker_failures_count_max = 3): later requests
        go straight to the healthy deployment, and keep succeeding."""
        state = fake_upstream[1]
        secret, _, _ = live.new_key()
        for _ in range(3):
            assert chat(live, secret, "flaky-then-good").status_code == 200
        before = len(state.requests)
        for _ in range(5):
            response = chat(live, secret, "flaky-then-good")
            assert response.status_code == 200
            assert response.headers["x-tokenmill-deployment"] == "dep-fake"
        assert upstream_models(state, before) == ["fake"] * 5

    def test_with_every_breaker_open_the_answer_is_a_clean_503(
        self, live: LiveGateway, fake_upstream: tuple[str, FakeUpstreamState]
    ) -> None:
        """No deployment is usable: 503 in OpenAI's shape at once, no upstream called."""
        state = fake_upstream[1]
        secret, _, _ = live.new_key()
        for _ in range(3):
            chat(live, secret, "all-bad")
        before = len(state.requests)
        response = chat(live, secret, "all-bad")
        assert response.status_code == 503
        assert response.json()["error"]["type"]
        assert upstream_models(state, before) == []
