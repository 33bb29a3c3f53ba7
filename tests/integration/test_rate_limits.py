"""Rate limits on a live gateway: set through the admin API, enforced on the hot path."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import LiveGateway

HELLO = [{"role": "user", "content": "hi"}]


def admin(live: LiveGateway) -> dict[str, str]:
    return {"Authorization": f"Bearer {live.admin_token}"}


def set_limits(live: LiveGateway, path: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{live.url}/admin/v1/{path}/rate-limits", json=body, headers=admin(live))


def chat(live: LiveGateway, secret: str, max_tokens: int = 8) -> httpx.Response:
    return httpx.post(
        live.url + "/v1/chat/completions",
        json={"model": "sim-chat", "messages": HELLO, "max_tokens": max_tokens},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )


def test_requests_per_minute_refuse_the_next_request_with_headers(gateway: LiveGateway) -> None:
    secret, key_id, _ = gateway.new_key()
    answer = set_limits(gateway, f"keys/{key_id}", requests_per_minute=3)
    assert answer.status_code == 200, answer.text
    assert answer.json()["rate_limits"] == {"*": {"requests_per_minute": 3}}
    statuses = []
    for _ in range(3):
        response = chat(gateway, secret)
        statuses.append(response.status_code)
        assert response.headers["x-ratelimit-limit-requests"] == "3"
    assert statuses == [200, 200, 200]
    refused = chat(gateway, secret)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    # another key of the same account is not limited by this key's limit
    other, _, _ = gateway.new_key()
    assert chat(gateway, other).status_code == 200


def test_concurrent_requests_against_an_account_limit_pass_exactly_m(
    gateway: LiveGateway,
) -> None:
    secret, _, account_id = gateway.new_key("limited")
    assert set_limits(gateway, f"accounts/{account_id}", requests_per_minute=5).status_code == 200

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=10) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        gateway.url + "/v1/chat/completions",
                        json={"model": "sim-chat", "messages": HELLO, "max_tokens": 4},
                        headers={"Authorization": f"Bearer {secret}"},
                    )
                    for _ in range(20)
                )
            )
        return [r.status_code for r in responses]

    statuses = asyncio.run(burst())
    assert statuses.count(200) == 5
    assert statuses.count(429) == 15


def test_tokens_per_minute_too_large_a_request_is_refused_and_unknown_model_is_400(
    gateway: LiveGateway,
) -> None:
    secret, key_id, _ = gateway.new_key()
    bad = set_limits(gateway, f"keys/{key_id}", model="no-such-model", tokens_per_minute=10)
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "model"
    ok = set_limits(gateway, f"keys/{key_id}", model="sim-chat", tokens_per_minute=300)
    assert ok.json()["rate_limits"] == {"sim-chat": {"tokens_per_minute": 300}}
    refused = chat(gateway, secret, max_tokens=500)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "request_too_large"
    first = chat(gateway, secret, max_tokens=8)
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-limit-tokens"] == "300"
    bound = 300 - int(first.headers["x-ratelimit-remaining-tokens"])
    usage = first.json()["usage"]
    used = usage["prompt_tokens"] + usage["completion_tokens"]
    assert used < bound  # the reservation is an upper bound
    second = chat(gateway, secret, max_tokens=8)
    # the unused part of the first reservation came back; what it used stays charged (the
    # bucket refills 300 a minute, so a little more may be back by now)
    refilled = int(second.headers["x-ratelimit-remaining-tokens"]) - (300 - used - bound)
    assert 0 <= refilled <= 20
    assert set_limits(gateway, f"keys/{key_id}", model="sim-chat").json()["rate_limits"] == {}
    assert "x-ratelimit-limit-tokens" not in chat(gateway, secret).headers
