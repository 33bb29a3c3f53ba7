"""Rate limits on a live gateway, on SQLite and on PostgreSQL: bursts of concurrent requests
(plain httpx and the official openai SDK) against limits of M let exactly M through, for
requests per minute, requests in flight and tokens per minute, streamed or not; a refusal is
OpenAI's 429 and costs nothing; limits set through the admin API or the CLI reach the
running gateway; bad admin input changes nothing; the audit log keeps each change.

One gateway serves the whole module per database; every test makes accounts and keys of
its own, so their buckets are their own.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.assertions import assert_openai_error
from tests.conftest import LiveGateway, gateway_config, live_gateway, private_pg_database
from tokenmill.access import service
from tokenmill.retail.rate_limits import RATE_MAX, RateLimit
from tokenmill.store.ledger import transfers_of
from tokenmill.store.usage import record_by_request_id
from tokenmill.testing import FakeUpstreamState

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
PRICED = "fake-running"  # the one priced model: 1.00 a million input tokens, 2.00 output
PRICE = {"input": "1.00", "output": "2.00"}
TEMPLATE_TOKENS = 32  # the default prompt allowance: per request ...
TOKENS_PER_MESSAGE = 8  # ... and per message
RESET = re.compile(r"^(\d+ms|\d+s|\d+m\d+s)$")
# fake-slow streams a token every 50 ms: 10 tokens keep a request in flight about 0.5 s,
# long after every request of a burst has been admitted or refused.
SLOW_MODEL = "fake-slow"
SLOW_TOKENS = 10
# The gateway frees a request's place (and gives back its tokens) just after the client has
# read the last byte; a test that reuses the place waits this long first.
SETTLE_S = 0.2
TOKENMILL = Path(sys.executable).parent / "tokenmill"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(
    request: pytest.FixtureRequest,
    fake_upstream: tuple[str, FakeUpstreamState],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveGateway]:
    home = tmp_path_factory.mktemp("rate-limits")
    config = gateway_config(fake_upstream[0])
    config["models"][PRICED]["price"] = dict(PRICE)
    if request.param == "sqlite":
        with live_gateway(f"sqlite:///{home / 'tokenmill.db'}", config, home) as gateway:
            yield gateway
    else:
        with private_pg_database() as url, live_gateway(url, config, home) as gateway:
            yield gateway


def fresh(live: LiveGateway) -> tuple[str, str, str]:
    """A key of a new account: (secret, key id, account id). Made through the admin API,
    which updates the gateway's key directory at once (no wait for a poll)."""
    made = httpx.post(
        f"{live.url}/admin/v1/accounts",
        json={"name": "acct-" + secrets.token_hex(4)},
        headers=admin_headers(live),
    )
    assert made.status_code == 201, made.text
    return (*sibling(live, made.json()["id"]), made.json()["id"])


def sibling(live: LiveGateway, account_id: str) -> tuple[str, str]:
    """Another key of ``account_id``: (secret, key id)."""
    made = httpx.post(
        f"{live.url}/admin/v1/keys", json={"account": account_id}, headers=admin_headers(live)
    )
    assert made.status_code == 201, made.text
    return made.json()["key"], made.json()["id"]


def admin_headers(live: LiveGateway) -> dict[str, str]:
    return {"Authorization": f"Bearer {live.admin_token}"}


def set_limits(live: LiveGateway, path: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{live.url}/admin/v1/{path}/rate-limits", json=body, headers=admin_headers(live)
    )
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def body_of(model: str = "sim-chat", max_tokens: int = 8, *, stream: bool = False) -> bytes:
    """The exact request body (the token reservation is measured on its bytes)."""
    body: dict[str, Any] = {"model": model, "messages": HELLO, "max_tokens": max_tokens}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return orjson.dumps(body)


def reservation(raw: bytes, max_tokens: int) -> int:
    """The tokens a request reserves: its prompt bound (bytes + allowance) + max_tokens."""
    return len(raw) + TEMPLATE_TOKENS + TOKENS_PER_MESSAGE * len(HELLO) + max_tokens


def key_headers(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}


def post(live: LiveGateway, secret: str, raw: bytes | None = None) -> httpx.Response:
    return httpx.post(
        live.url + "/v1/chat/completions",
        content=body_of() if raw is None else raw,
        headers=key_headers(secret),
        timeout=10,
    )


def burst(live: LiveGateway, secret: str, raw: bytes, count: int) -> list[httpx.Response]:
    """``count`` requests sent at once; each response read to its end."""

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=count + 1)
        async with httpx.AsyncClient(timeout=10, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        live.url + "/v1/chat/completions", content=raw, headers=key_headers(secret)
                    )
                    for _ in range(count)
                )
            )

    return asyncio.run(send_all())


def assert_refused(response: httpx.Response, *kinds: str) -> dict[str, Any]:
    """OpenAI's 429: its error body, a Retry-After of whole seconds >= 1, and the
    ``x-ratelimit-*`` headers of ``kinds`` ("requests", "tokens")."""
    error = assert_openai_error(response, 429)
    assert error["type"] == "rate_limit_error"
    assert error["code"] == "rate_limit_exceeded"
    assert int(response.headers["retry-after"]) >= 1
    for kind in kinds:
        assert int(response.headers[f"x-ratelimit-limit-{kind}"]) >= 1
        assert int(response.headers[f"x-ratelimit-remaining-{kind}"]) >= 0
        assert RESET.match(response.headers[f"x-ratelimit-reset-{kind}"])
    return error


def cli_env(home: Path, database_url: str) -> dict[str, str]:
    """The environment without TOKENMILL_ settings but the home and the database."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("TOKENMILL_")}
    return clean | {"TOKENMILL_HOME": str(home), "TOKENMILL_DATABASE_URL": database_url}


def statuses(responses: list[httpx.Response]) -> list[int]:
    return sorted(response.status_code for response in responses)


def wait_for_records(live: LiveGateway, key_id: str, count: int, within_s: float = 3.0) -> None:
    deadline = time.monotonic() + within_s
    while len(live.records(key_id)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} usage records of {key_id}"
        time.sleep(0.02)


def seconds_until(live: LiveGateway, secret: str, limit: str | None) -> float:
    """Seconds until the gateway answers ``secret`` with this requests-per-minute limit
    (None: none); each try is a request."""
    started = time.monotonic()
    while True:
        response = post(live, secret)
        if response.headers.get("x-ratelimit-limit-requests") == limit:
            return time.monotonic() - started
        assert time.monotonic() - started < 2.0, dict(response.headers)
        time.sleep(0.02)


def balance(live: LiveGateway, account_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{live.url}/admin/v1/accounts/{account_id}/balance", headers=admin_headers(live)
    )
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def audit_of(live: LiveGateway, entity_id: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{live.url}/admin/v1/audit",
        params={"entity_id": entity_id},
        headers=admin_headers(live),
    )
    assert response.status_code == 200, response.text
    return [entry for entry in response.json() if entry["action"] == "rate_limits"]


class TestRequestsPerMinute:
    def test_of_twelve_concurrent_sdk_calls_exactly_four_pass_a_limit_of_four(
        self, live: LiveGateway
    ) -> None:
        """The SDK raises RateLimitError (no retries) for each of the eight others, and
        only the four that passed leave usage records."""
        secret, key_id, _ = fresh(live)
        set_limits(live, f"keys/{key_id}", requests_per_minute=4)

        async def calls() -> list[Any]:
            client = openai.AsyncOpenAI(
                base_url=live.url + "/v1", api_key=secret, max_retries=0, timeout=10
            )
            async with client:
                return await asyncio.gather(
                    *(
                        client.chat.completions.create(
                            model="sim-chat", messages=HELLO, max_tokens=4
                        )
                        for _ in range(12)
                    ),
                    return_exceptions=True,
                )

        results = asyncio.run(calls())
        passed = [r for r in results if not isinstance(r, BaseException)]
        refusals = [r for r in results if isinstance(r, BaseException)]
        assert len(passed) == 4
        assert all(isinstance(r, openai.RateLimitError) for r in refusals), refusals
        for refusal in refusals:
            assert isinstance(refusal, openai.RateLimitError)
            assert refusal.status_code == 429
            assert refusal.code == "rate_limit_exceeded"
            assert int(refusal.response.headers["retry-after"]) >= 1
            assert refusal.response.headers["x-ratelimit-limit-requests"] == "4"
            assert refusal.response.headers["x-ratelimit-remaining-requests"] == "0"
        wait_for_records(live, key_id, 4)
        time.sleep(0.3)  # a refused request would have been written by now too
        assert len(live.records(key_id)) == 4

    def test_a_refusal_is_openais_429_with_retry_after_and_quota_headers(
        self, live: LiveGateway
    ) -> None:
        secret, key_id, _ = fresh(live)
        set_limits(live, f"keys/{key_id}", requests_per_minute=2)
        first = post(live, secret)
        assert first.status_code == 200, first.text
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert RESET.match(first.headers["x-ratelimit-reset-requests"])
        assert "x-ratelimit-limit-tokens" not in first.headers
        assert post(live, secret).headers["x-ratelimit-remaining-requests"] == "0"
        refused = post(live, secret)
        error = assert_refused(refused, "requests")
        assert "2 requests per minute" in error["message"]
        # 2 a minute, both used just now: the next fits in about 30 s
        assert 25 <= int(refused.headers["retry-after"]) <= 30
        assert refused.headers["x-ratelimit-limit-requests"] == "2"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert "x-ratelimit-limit-tokens" not in refused.headers

    def test_streaming_requests_are_counted_and_carry_the_headers(self, live: LiveGateway) -> None:
        secret, key_id, _ = fresh(live)
        set_limits(live, f"keys/{key_id}", requests_per_minute=2)
        raw = body_of(stream=True)
        for left in ("1", "0"):
            response = post(live, secret, raw)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.text.rstrip().endswith("data: [DONE]")
            assert response.headers["x-ratelimit-limit-requests"] == "2"
            assert response.headers["x-ratelimit-remaining-requests"] == left
        refused = post(live, secret, raw)
        assert_refused(refused, "requests")  # JSON, not a stream: nothing had started
        # streamed and not, one bucket
        assert_refused(post(live, secret), "requests")


class TestConcurrent:
    def test_of_eight_overlapping_streams_exactly_three_run_under_a_limit_of_three(
        self, live: LiveGateway
    ) -> None:
        secret, key_id, _ = fresh(live)
        set_limits(live, f"keys/{key_id}", concurrent_count_max=3)
        raw = body_of(SLOW_MODEL, SLOW_TOKENS, stream=True)
        responses = burst(live, secret, raw, 8)
        assert statuses(responses) == [200] * 3 + [429] * 5
        for response in responses:
            if response.status_code == 200:
                assert response.text.rstrip().endswith("data: [DONE]")
                # only requests in flight are limited: no per-minute quota to tell
                assert not any(name.startswith("x-ratelimit") for name in response.headers)
            else:
                error = assert_refused(response)
                assert "in flight" in error["message"]
                assert response.headers["retry-after"] == "1"
        # every place is free again once they ended
        time.sleep(SETTLE_S)
        again = burst(live, secret, raw, 4)
        assert statuses(again) == [200] * 3 + [429]

    def test_a_non_streaming_request_holds_its_place_while_it_runs(self, live: LiveGateway) -> None:
        """One place: a quick request is refused while a slow stream runs, then passes."""
        secret, key_id, _ = fresh(live)
        set_limits(live, f"keys/{key_id}", concurrent_count_max=1)

        async def overlap() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(timeout=10) as client:
                slow = asyncio.create_task(
                    client.post(
                        live.url + "/v1/chat/completions",
                        content=body_of(SLOW_MODEL, SLOW_TOKENS, stream=True),
                        headers=key_headers(secret),
                    )
                )
                await asyncio.sleep(0.3)
                during = await client.post(
                    live.url + "/v1/chat/completions",
                    content=body_of(),
                    headers=key_headers(secret),
                )
                first = await slow
                await asyncio.sleep(SETTLE_S)
                after = await client.post(
                    live.url + "/v1/chat/completions",
                    content=body_of(),
                    headers=key_headers(secret),
                )
                return first, during, after

        first, during, after = asyncio.run(overlap())
        assert first.status_code == 200
        assert_refused(during)
        assert after.status_code == 200, after.text


class TestTokensPerMinute:
    def test_of_eight_concurrent_streams_exactly_three_fit_a_limit_of_three_and_a_half(
        self, live: LiveGateway
    ) -> None:
        """Each reserves its prompt bound plus max_tokens up front; a minute's tokens of
        3.5 reservations let three through."""
        secret, key_id, _ = fresh(live)
        raw = body_of(SLOW_MODEL, SLOW_TOKENS, stream=True)
        reserved = reservation(raw, SLOW_TOKENS)
        limit = 3 * reserved + reserved // 2
        set_limits(live, f"keys/{key_id}", model=SLOW_MODEL, tokens_per_minute=limit)
        responses = burst(live, secret, raw, 8)
        assert statuses(responses) == [200] * 3 + [429] * 5
        remaining = sorted(
            int(r.headers["x-ratelimit-remaining-tokens"])
            for r in responses
            if r.status_code == 200
        )
        # after the 1st, 2nd and 3rd reservation (plus what refilled in the burst)
        expected = [limit - 3 * reserved, limit - 2 * reserved, limit - reserved]
        assert all(0 <= got - want <= 10 for got, want in zip(remaining, expected, strict=True))
        for response in responses:
            assert response.headers["x-ratelimit-limit-tokens"] == str(limit)
            if response.status_code == 429:
                error = assert_refused(response, "tokens")
                assert f"reserves {reserved}" in error["message"]
        # what they did not use came back when they ended: a fourth fits now
        time.sleep(SETTLE_S)
        after = post(live, secret, raw)
        assert after.status_code == 200, after.text

    def test_a_request_larger_than_the_minute_is_too_large_with_no_retry_after(
        self, live: LiveGateway
    ) -> None:
        secret, key_id, _ = fresh(live)
        set_limits(live, f"keys/{key_id}", tokens_per_minute=150)
        raw = body_of(max_tokens=200)
        refused = post(live, secret, raw)
        error = assert_openai_error(refused, 429)
        assert error["code"] == "request_too_large"
        assert str(reservation(raw, 200)) in error["message"]
        assert "retry-after" not in refused.headers
        assert refused.headers["x-ratelimit-remaining-tokens"] == "150"  # nothing charged
        small = body_of(max_tokens=1)
        assert reservation(small, 1) <= 150
        assert post(live, secret, small).status_code == 200


class TestNothingCharged:
    def test_a_refused_request_leaves_no_usage_record_no_hold_and_the_balance(
        self, live: LiveGateway
    ) -> None:
        secret, key_id, account_id = fresh(live)
        other, other_id = sibling(live, account_id)
        top = httpx.post(
            f"{live.url}/admin/v1/accounts/{account_id}/transfers",
            json={"amount": "1.00"},
            headers=admin_headers(live),
        )
        assert top.status_code == 200, top.text
        set_limits(live, f"keys/{key_id}", requests_per_minute=1)
        set_limits(live, f"keys/{other_id}", model=PRICED, tokens_per_minute=50)
        raw = body_of(PRICED)
        assert post(live, secret, raw).status_code == 200
        wait_for_records(live, key_id, 1)
        before = balance(live, account_id)
        assert before["holds_count"] == 0 and before["held_nano"] == 0
        assert before["balance_nano"] < 1_000_000_000  # the first request was charged
        refused = [post(live, secret, raw), post(live, other, raw)]  # rate, then too large
        assert_refused(refused[0], "requests")
        assert assert_openai_error(refused[1], 429)["code"] == "request_too_large"
        assert balance(live, account_id) == before  # no hold was left, nothing was charged
        # a request that passes after them is recorded, so theirs would be by now
        set_limits(live, f"keys/{other_id}", model=PRICED)
        passed = post(live, other, raw)
        assert passed.status_code == 200, passed.text
        wait_for_records(live, other_id, 1)
        with live.db.connect() as connection:
            for response in refused:
                request_id = response.headers["x-request-id"]
                assert record_by_request_id(connection, request_id) is None
            usage = transfers_of(connection, account_id, kinds=["usage"])
        assert len(usage) == 2
        assert {t.id for t in usage} == {
            f"usage:{live.records(k)[0].request_id}" for k in (key_id, other_id)
        }
        assert len(live.records(key_id)) == 1
        assert balance(live, account_id)["holds_count"] == 0


class TestScopes:
    def test_an_account_limit_covers_all_its_keys_together(self, live: LiveGateway) -> None:
        first, _, account_id = fresh(live)
        second, _ = sibling(live, account_id)
        stranger, _, _ = fresh(live)
        set_limits(live, f"accounts/{account_id}", requests_per_minute=3)
        got = [post(live, secret).status_code for secret in (first, second, first, second)]
        assert got == [200, 200, 200, 429]
        assert_refused(post(live, first), "requests")
        assert post(live, stranger).status_code == 200  # another account is not limited

    def test_a_key_limit_covers_only_its_key(self, live: LiveGateway) -> None:
        limited, key_id, account_id = fresh(live)
        other, _ = sibling(live, account_id)
        set_limits(live, f"keys/{key_id}", requests_per_minute=1)
        assert post(live, limited).status_code == 200
        assert_refused(post(live, limited), "requests")
        for _ in range(3):
            response = post(live, other)
            assert response.status_code == 200, response.text
            assert "x-ratelimit-limit-requests" not in response.headers

    def test_an_account_limit_refusal_charges_nothing_on_the_key_limit(
        self, live: LiveGateway
    ) -> None:
        """All or nothing across scopes: the account refuses; the key keeps its quota."""
        secret, key_id, account_id = fresh(live)
        other, _ = sibling(live, account_id)
        set_limits(live, f"keys/{key_id}", requests_per_minute=5)
        set_limits(live, f"accounts/{account_id}", requests_per_minute=2)
        assert post(live, other).status_code == 200
        assert post(live, other).status_code == 200
        for _ in range(3):
            assert_refused(post(live, secret), "requests")
        set_limits(live, f"accounts/{account_id}")  # the account limit removed
        passed = post(live, secret)
        assert passed.status_code == 200, passed.text
        assert passed.headers["x-ratelimit-limit-requests"] == "5"
        assert passed.headers["x-ratelimit-remaining-requests"] == "4"

    def test_a_per_model_limit_leaves_other_models_alone(self, live: LiveGateway) -> None:
        secret, key_id, _ = fresh(live)
        set_limits(live, f"keys/{key_id}", model="fake", requests_per_minute=1)
        fake = body_of("fake")
        assert post(live, secret, fake).status_code == 200
        assert_refused(post(live, secret, fake), "requests")
        for _ in range(3):
            other = post(live, secret)
            assert other.status_code == 200, other.text
            assert "x-ratelimit-limit-requests" not in other.headers

    def test_embeddings_are_limited_too(self, live: LiveGateway) -> None:
        """An embedding request reserves its prompt bound only, and counts as a request."""
        secret, key_id, _ = fresh(live)
        set_limits(live, f"keys/{key_id}", requests_per_minute=1, tokens_per_minute=1_000)

        def embed() -> httpx.Response:
            return httpx.post(
                live.url + "/v1/embeddings",
                json={"model": "sim-embed", "input": "hello"},
                headers=key_headers(secret),
                timeout=10,
            )

        first = embed()
        assert first.status_code == 200, first.text
        assert first.headers["x-ratelimit-remaining-requests"] == "0"
        assert 0 < 1_000 - int(first.headers["x-ratelimit-remaining-tokens"]) < 200
        assert_refused(embed(), "requests", "tokens")

    def test_an_all_models_limit_and_a_model_limit_both_apply(self, live: LiveGateway) -> None:
        secret, key_id, _ = fresh(live)
        set_limits(live, f"keys/{key_id}", requests_per_minute=3)
        limits = set_limits(live, f"keys/{key_id}", model="fake", requests_per_minute=1)
        assert limits["rate_limits"] == {
            "*": {"requests_per_minute": 3},
            "fake": {"requests_per_minute": 1},
        }
        fake = post(live, secret, body_of("fake"))
        assert fake.headers["x-ratelimit-limit-requests"] == "1"  # the tighter one is told
        assert fake.headers["x-ratelimit-remaining-requests"] == "0"
        assert_refused(post(live, secret, body_of("fake")), "requests")
        assert post(live, secret).headers["x-ratelimit-remaining-requests"] == "1"
        assert post(live, secret).headers["x-ratelimit-remaining-requests"] == "0"
        assert_refused(post(live, secret), "requests")  # * is spent: 3 of 3


class TestChanges:
    def test_a_limit_set_and_cleared_by_the_cli_reaches_the_running_gateway(
        self, live: LiveGateway, tmp_path: Path
    ) -> None:
        """The CLI writes the database only; the gateway follows within a few polls."""
        secret, key_id, _ = fresh(live)
        assert "x-ratelimit-limit-requests" not in post(live, secret).headers

        def cli(*args: str) -> None:
            result = subprocess.run(
                [str(TOKENMILL), "keys", "limits", key_id, *args],
                capture_output=True,
                text=True,
                env=cli_env(tmp_path, live.database_url),
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, (result.stdout, result.stderr)

        cli("--rpm", "1000", "--json")
        assert seconds_until(live, secret, "1000") < 1.0  # 250 ms a poll
        cli("--clear")
        assert seconds_until(live, secret, None) < 1.0

    def test_an_account_limit_written_to_the_store_reaches_its_keys_by_polling(
        self, live: LiveGateway
    ) -> None:
        """The write the CLI makes (no admin API, no sync): the follower applies it to
        every key of the account within a few polls, and to a key made afterwards."""
        secret, _, account_id = fresh(live)

        limit = RateLimit(requests_per_minute=500)
        service.set_rate_limit(live.db, "account", account_id, "*", limit, actor="test")
        assert seconds_until(live, secret, "500") < 1.0
        later, _ = sibling(live, account_id)
        assert post(live, later).headers["x-ratelimit-limit-requests"] == "500"
        service.set_rate_limit(live.db, "account", account_id, "*", RateLimit(), actor="test")
        assert seconds_until(live, secret, None) < 1.0
        assert seconds_until(live, later, None) < 1.0

    def test_raising_a_limit_lets_the_next_requests_through_at_once(
        self, live: LiveGateway
    ) -> None:
        secret, key_id, _ = fresh(live)
        set_limits(live, f"keys/{key_id}", requests_per_minute=1)
        assert post(live, secret).status_code == 200
        assert_refused(post(live, secret), "requests")
        set_limits(live, f"keys/{key_id}", requests_per_minute=100)
        got = [post(live, secret).status_code for _ in range(5)]
        assert got == [200] * 5


class TestAdminAPI:
    def test_bad_input_is_a_4xx_and_changes_nothing(self, live: LiveGateway) -> None:
        secret, key_id, account_id = fresh(live)
        set_limits(live, f"keys/{key_id}", requests_per_minute=7)
        set_limits(live, f"accounts/{account_id}", requests_per_minute=9)
        audit_before = audit_of(live, key_id) + audit_of(live, account_id)
        key, account = f"keys/{key_id}", f"accounts/{account_id}"
        cases: list[tuple[str, Any, int, str | None]] = [
            (key, {"model": "no-such-model", "requests_per_minute": 1}, 400, "model"),
            (key, {"model": "", "requests_per_minute": 1}, 400, "model"),
            (key, {"requests_per_minute": 0}, 400, "requests_per_minute"),
            (key, {"tokens_per_minute": -5}, 400, "tokens_per_minute"),
            (key, {"concurrent_count_max": 0}, 400, "concurrent_count_max"),
            (key, {"requests_per_minute": RATE_MAX + 1}, 400, "requests_per_minute"),
            (key, {"requests_per_minute": 1.5}, 400, "requests_per_minute"),
            (key, {"requests_per_minute": "many"}, 400, "requests_per_minute"),
            (key, {"rpm": 1}, 400, "rpm"),
            (key, [1], 400, None),
            (account, {"model": "no-such-model", "tokens_per_minute": 5}, 400, "model"),
            (account, {"concurrent_count_max": -1}, 400, "concurrent_count_max"),
            ("keys/key_0000000000000000", {"requests_per_minute": 1}, 404, "key_id"),
            ("accounts/no-such-account", {"requests_per_minute": 1}, 404, "account"),
        ]
        for target, body, status, param in cases:
            response = httpx.post(
                f"{live.url}/admin/v1/{target}/rate-limits", json=body, headers=admin_headers(live)
            )
            assert response.status_code == status, (target, body, response.text)
            assert_openai_error(response, status, param)
        for target, param in (
            ("keys/key_0000000000000000", "key_id"),
            ("accounts/no-such-account", "account"),
        ):
            shown = httpx.get(
                f"{live.url}/admin/v1/{target}/rate-limits", headers=admin_headers(live)
            )
            assert_openai_error(shown, 404, param)
        self.assert_unchanged(live, secret, key_id, account_id)
        assert audit_of(live, key_id) + audit_of(live, account_id) == audit_before

    def test_without_an_admin_token_nothing_is_set_or_shown(self, live: LiveGateway) -> None:
        secret, key_id, account_id = fresh(live)
        set_limits(live, f"keys/{key_id}", requests_per_minute=7)
        set_limits(live, f"accounts/{account_id}", requests_per_minute=9)
        for headers in ({}, {"Authorization": "Bearer tmadmin-wrong"}, key_headers(secret)):
            for target in (f"keys/{key_id}", f"accounts/{account_id}"):
                url = f"{live.url}/admin/v1/{target}/rate-limits"
                written = httpx.post(url, json={"requests_per_minute": 1}, headers=headers)
                assert_openai_error(written, 401)
                assert_openai_error(httpx.get(url, headers=headers), 401)
        self.assert_unchanged(live, secret, key_id, account_id)

    def test_a_boolean_is_not_a_number_of_requests(self, live: LiveGateway) -> None:
        secret, key_id, account_id = fresh(live)
        set_limits(live, f"keys/{key_id}", requests_per_minute=7)
        set_limits(live, f"accounts/{account_id}", requests_per_minute=9)
        response = httpx.post(
            f"{live.url}/admin/v1/keys/{key_id}/rate-limits",
            json={"requests_per_minute": True},
            headers=admin_headers(live),
        )
        assert_openai_error(response, 400, "requests_per_minute")
        self.assert_unchanged(live, secret, key_id, account_id)

    @staticmethod
    def assert_unchanged(live: LiveGateway, secret: str, key_id: str, account_id: str) -> None:
        """The key's 7 a minute and the account's 9 stand, in the store and the gateway."""
        for target, expected in ((f"keys/{key_id}", 7), (f"accounts/{account_id}", 9)):
            shown = httpx.get(
                f"{live.url}/admin/v1/{target}/rate-limits", headers=admin_headers(live)
            )
            assert shown.status_code == 200, shown.text
            assert shown.json()["rate_limits"] == {"*": {"requests_per_minute": expected}}
        response = post(live, secret)
        assert response.status_code == 200, response.text
        assert response.headers["x-ratelimit-limit-requests"] == "7"

    def test_each_change_is_audited_with_the_limits_before_and_after(
        self, live: LiveGateway
    ) -> None:
        _, key_id, account_id = fresh(live)
        set_limits(live, f"keys/{key_id}", requests_per_minute=5)
        set_limits(live, f"keys/{key_id}", model="sim-chat", tokens_per_minute=300)
        cleared = set_limits(live, f"keys/{key_id}", requests_per_minute=None)
        assert cleared == {"id": key_id, "rate_limits": {"sim-chat": {"tokens_per_minute": 300}}}
        set_limits(live, f"accounts/{account_id}", concurrent_count_max=2)
        entries = audit_of(live, key_id)[::-1]  # oldest first
        assert [(e["before"], e["after"]) for e in entries] == [
            ({}, {"*": {"requests_per_minute": 5}}),
            (
                {"*": {"requests_per_minute": 5}},
                {"*": {"requests_per_minute": 5}, "sim-chat": {"tokens_per_minute": 300}},
            ),
            (
                {"*": {"requests_per_minute": 5}, "sim-chat": {"tokens_per_minute": 300}},
                {"sim-chat": {"tokens_per_minute": 300}},
            ),
        ]
        assert all(e["entity"] == "key" and e["entity_id"] == key_id for e in entries)
        assert all(e["actor"].startswith("admin:") for e in entries)
        (account_entry,) = audit_of(live, account_id)
        assert account_entry["entity"] == "account"
        assert account_entry["after"] == {"*": {"concurrent_count_max": 2}}
        shown = httpx.get(
            f"{live.url}/admin/v1/keys/{key_id}/rate-limits", headers=admin_headers(live)
        )
        assert shown.json() == cleared
