"""Prometheus metrics and health: what a request leaves in /metrics."""

from __future__ import annotations

import re

import httpx

from tests.conftest import LiveGateway


def _value(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class TestMetrics:
    def test_a_request_counts_its_tokens_latency_and_outcome(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """One chat moves the request, token and histogram series by exactly its usage."""
        before = httpx.get(gateway.url + "/metrics").text
        answer = httpx.post(
            gateway.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": "sim-chat",
                "max_tokens": 7,
                "messages": [{"role": "user", "content": "count me"}],
            },
        ).json()
        after = httpx.get(gateway.url + "/metrics").text
        labels = {"model": "sim-chat", "endpoint": "chat", "status": "ok"}
        assert (
            _value(after, "tokenmill_requests_total", **labels)
            - _value(before, "tokenmill_requests_total", **labels)
            == 1
        )
        for kind, field in (("prompt", "prompt_tokens"), ("completion", "completion_tokens")):
            moved = _value(after, "tokenmill_tokens_total", model="sim-chat", kind=kind) - _value(
                before, "tokenmill_tokens_total", model="sim-chat", kind=kind
            )
            assert moved == answer["usage"][field]
        for histogram in (
            "tokenmill_request_duration_seconds",
            "tokenmill_time_to_first_token_seconds",
        ):
            assert (
                _value(after, histogram + "_count", model="sim-chat")
                - _value(before, histogram + "_count", model="sim-chat")
                == 1
            )
        assert _value(after, "tokenmill_requests_in_flight") == 0

    def test_refused_requests_are_counted_by_status_and_nothing_else(
        self, gateway: LiveGateway
    ) -> None:
        """A bad key is counted as refused (401) and leaves the request series alone."""
        before = httpx.get(gateway.url + "/metrics").text
        response = httpx.post(
            gateway.url + "/v1/chat/completions",
            headers={"Authorization": "Bearer tm-nope"},
            json={},
        )
        assert response.status_code == 401
        after = httpx.get(gateway.url + "/metrics").text
        refused = {"endpoint": "chat", "http_status": "401"}
        assert (
            _value(after, "tokenmill_refused_requests_total", **refused)
            - _value(before, "tokenmill_refused_requests_total", **refused)
            == 1
        )
        assert "tokenmill_requests_total{" not in after or _value(
            after, "tokenmill_requests_total"
        ) == _value(before, "tokenmill_requests_total")

    def test_health_answers_with_the_number_of_live_keys(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """/healthz is 200 and counts the keys in the directory."""
        response = httpx.get(gateway.url + "/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "keys": 1}
        assert response.headers["x-request-id"].startswith("req_")
