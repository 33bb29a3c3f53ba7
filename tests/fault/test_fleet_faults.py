"""The fleet under stress, on live gateways (real HTTP, a fake upstream on loopback): a
deployment's concurrency limit under a burst, the bounded route queue, clients that give up
while queued, an upstream that cuts a stream after its first byte, and a deployment that goes
down and comes back. No response is ever a 500, and no handler raises (each test checks).

Charges are computed here by hand: 1.00 per million input tokens and 2.00 per million output
tokens are 1000 and 2000 nano-units a token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.conftest import LiveGateway, gateway_config, live_gateway
from tokenmill.billing import service as billing
from tokenmill.testing import FakeUpstreamState, ServerThread, fake_upstream_app, free_port

NANO = 1_000_000_000
PRICE = {"input": "1.00", "output": "2.00"}
INPUT_NANO_PER_TOKEN = 1_000
OUTPUT_NANO_PER_TOKEN = 2_000
HELLO = [{"role": "user", "content": "hello there"}]
# The local count of HELLO's prompt: 3 for the reply, 4 for the message, 2 words.
HELLO_PROMPT_TOKENS = 9
FLEET_POLL_S = 0.01


class Concurrency:
    """ASGI middleware on the fake upstream: how many completions it serves at once, at
    most (the upstream's own view, independent of the gateway's); with ``pace_s``, a pause
    before each piece of a body, so that each reaches the gateway in a read of its own (a
    cut then comes after the text sent before it, not in the same read)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.now_count = 0
        self.most_count = 0
        self.pace_s = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/completions"):
            await self.app(scope, receive, send)
            return

        async def paced(message: Message) -> None:
            if self.pace_s and message["type"] == "http.response.body":
                await asyncio.sleep(self.pace_s)
            await send(message)

        self.now_count += 1
        self.most_count = max(self.most_count, self.now_count)
        try:
            await self.app(scope, receive, paced)
        finally:
            self.now_count -= 1


@dataclass
class Upstream:
    url: str
    state: FakeUpstreamState
    concurrency: Concurrency


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    state = FakeUpstreamState(hang_s=5.0)
    concurrency = Concurrency(fake_upstream_app(state))
    with ServerThread(concurrency) as server:
        yield Upstream(server.url + "/v1", state, concurrency)


@dataclass
class Seen:
    """Every response the tests got from the gateway."""

    statuses: list[int] = field(default_factory=list)

    def hook(self, response: httpx.Response) -> None:
        self.statuses.append(response.status_code)


@pytest.fixture
def seen(caplog: pytest.LogCaptureFixture) -> Iterator[Seen]:
    """Fails the test if any response was a 500 or any handler raised (a 500 mid-stream
    cannot show in the status: the gateway logs it as an unhandled error)."""
    found = Seen()
    with caplog.at_level(logging.ERROR, logger="tokenmill"):
        yield found
    assert found.statuses, "no response was checked"
    assert 500 not in found.statuses, found.statuses
    logged = caplog.get_records("setup") + caplog.get_records("call")
    unhandled = [r.getMessage() for r in logged if "unhandled error" in r.getMessage()]
    assert unhandled == []


def fleet_config(upstream_url: str, **limits: Any) -> dict[str, Any]:
    config = gateway_config(upstream_url, **limits)
    deployments = config["deployments"]
    deployments["dep-slow-two"] = {"engine": "up", "model": "fake-slow", "concurrency_max": 2}
    models = config["models"]
    models["two-at-a-time"] = {"deployments": ["dep-slow-two"], "price": dict(PRICE)}
    models["cut-then-good"] = {"deployments": ["dep-fake-cut", "dep-fake"], "price": dict(PRICE)}
    return config


@dataclass
class Client:
    live: LiveGateway
    secret: str
    account_id: str
    key_id: str
    seen: Seen

    def http(self, timeout_s: float = 20.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.live.url,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=100),
            event_hooks={"response": [self._hook]},
        )

    async def _hook(self, response: httpx.Response) -> None:
        self.seen.hook(response)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}

    async def fleet(self, http: httpx.AsyncClient) -> dict[str, Any]:
        answer = await http.get(
            "/admin/v1/fleet", headers={"Authorization": f"Bearer {self.live.admin_token}"}
        )
        assert answer.status_code == 200, answer.text
        view: dict[str, Any] = answer.json()
        return view


def funded_client(live: LiveGateway, seen: Seen, name: str = "fleet") -> Client:
    """A key of an account holding 10.00, once the gateway has the funds."""
    secret, key_id, account_id = live.new_key(name)
    billing.move_funds(
        live.db, account_id, 10 * NANO, kind="topup", idempotency_key=name, actor="test"
    )
    deadline = time.monotonic() + 5
    while True:
        answer = httpx.get(
            f"{live.url}/admin/v1/accounts/{account_id}/balance",
            headers={"Authorization": f"Bearer {live.admin_token}"},
        )
        if answer.json().get("balance_nano") == 10 * NANO:
            return Client(live, secret, account_id, key_id, seen)
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.02)


@dataclass
class StreamResult:
    status: int
    retry_after: str | None = None
    error_type: str | None = None
    request_id: str | None = None
    events: list[Any] = field(default_factory=list)  # parsed data lines, "[DONE]" as is
    ended_at: float = 0.0  # monotonic, when the response was read to its end

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1] == "[DONE]"

    @property
    def text_chunks_count(self) -> int:
        return sum(
            1
            for event in self.events
            if isinstance(event, dict)
            and any(c.get("delta", {}).get("content") for c in event.get("choices", []))
        )


async def stream_chat(
    client: Client, http: httpx.AsyncClient, model: str, max_tokens: int
) -> StreamResult:
    body = {
        "model": model,
        "messages": HELLO,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with http.stream(
        "POST", "/v1/chat/completions", json=body, headers=client.headers
    ) as response:
        result = StreamResult(response.status_code, response.headers.get("retry-after"))
        result.request_id = response.headers.get("x-request-id")
        if response.status_code != 200:
            await response.aread()
            result.error_type = response.json()["error"]["type"]
        else:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    data = line.removeprefix("data: ")
                    result.events.append(data if data == "[DONE]" else orjson.loads(data))
        result.ended_at = time.monotonic()
        return result


class FleetWatch:
    """Polls the fleet view while requests run: the most in flight and queued seen."""

    def __init__(self, client: Client, http: httpx.AsyncClient, deployment: str) -> None:
        self.client, self.http, self.deployment = client, http, deployment
        self.in_flight_most = 0
        self.queued_most = 0
        self.polls_count = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            view = await self.client.fleet(self.http)
            by_name = {d["name"]: d for d in view["deployments"]}
            self.in_flight_most = max(self.in_flight_most, by_name[self.deployment]["in_flight"])
            self.queued_most = max(self.queued_most, view["queued_count"])
            self.polls_count += 1
            await asyncio.sleep(FLEET_POLL_S)


async def burst(
    client: Client, model: str, count: int, max_tokens: int, deployment: str
) -> tuple[list[StreamResult], FleetWatch]:
    async with client.http() as http:
        watch = FleetWatch(client, http, deployment)
        stop = asyncio.Event()
        poller = asyncio.create_task(watch.run(stop))
        try:
            results = await asyncio.gather(
                *(stream_chat(client, http, model, max_tokens) for _ in range(count))
            )
        finally:
            stop.set()
            await poller
    return list(results), watch


def wait_for(predicate: Any, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def fleet_now(live: LiveGateway, seen: Seen) -> dict[str, Any]:
    answer = httpx.get(
        live.url + "/admin/v1/fleet", headers={"Authorization": f"Bearer {live.admin_token}"}
    )
    seen.hook(answer)
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()
    return view


def deployment_of(view: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(d for d in view["deployments"] if d["name"] == name)
    return found


class TestConcurrencyLimit:
    def test_a_burst_of_30_is_served_two_at_a_time_and_every_one_succeeds(
        self, sqlite_url: str, upstream: Upstream, tmp_path: Path, seen: Seen
    ) -> None:
        """concurrency_max 2 and a queue long enough: all 30 streams end with [DONE], and
        neither the gateway's fleet view nor the upstream ever sees more than 2 at once."""
        upstream.state.slow_s = 0.02
        upstream.concurrency.most_count = 0
        config = fleet_config(upstream.url, route_queue_wait_s_max=30)
        with live_gateway(sqlite_url, config, tmp_path) as live:
            client = funded_client(live, seen)
            results, watch = asyncio.run(burst(client, "two-at-a-time", 30, 4, "dep-slow-two"))
            final = deployment_of(fleet_now(live, seen), "dep-slow-two")
        assert [r.status for r in results] == [200] * 30
        assert all(r.done for r in results)
        assert all(r.text_chunks_count == 4 for r in results)
        assert watch.polls_count >= 5
        assert 1 <= watch.in_flight_most <= 2
        assert watch.queued_most >= 1  # the burst did wait in the queue
        assert upstream.concurrency.most_count == 2
        assert (final["in_flight"], final["breaker"]) == (0, "closed")


class TestRouteQueue:
    def test_beyond_the_places_and_the_queue_requests_are_refused_at_once(
        self, sqlite_url: str, upstream: Upstream, tmp_path: Path, seen: Seen
    ) -> None:
        """2 places and route_queue_count_max 3: of 12 streams sent together, 2 are served,
        3 wait and are served next, and the other 7 get 503 with Retry-After before any
        stream has ended (the bound is places + queue, not a wait)."""
        upstream.state.slow_s = 0.06
        upstream.concurrency.most_count = 0
        config = fleet_config(upstream.url, route_queue_count_max=3, route_queue_wait_s_max=20)
        with live_gateway(sqlite_url, config, tmp_path) as live:
            client = funded_client(live, seen)
            results, watch = asyncio.run(burst(client, "two-at-a-time", 12, 10, "dep-slow-two"))
            assert fleet_now(live, seen)["queued_count"] == 0
        served = [r for r in results if r.status == 200]
        refused = [r for r in results if r.status != 200]
        assert len(served) == 5, [r.status for r in results]
        assert all(r.done for r in served)
        assert [r.status for r in refused] == [503] * 7
        assert all(r.retry_after == "1" for r in refused)
        assert all(r.error_type == "service_unavailable" for r in refused)
        first_served_end = min(r.ended_at for r in served)
        assert all(r.ended_at < first_served_end for r in refused)
        assert watch.in_flight_most <= 2
        assert watch.queued_most <= 3
        assert upstream.concurrency.most_count == 2

    def test_clients_that_give_up_while_queued_free_their_queue_places(
        self, sqlite_url: str, upstream: Upstream, tmp_path: Path, seen: Seen
    ) -> None:
        """Both places held by long streams, the 3 queue places taken by clients that give up
        after 0.3 s: a request sent after that is queued (not refused) and served."""
        upstream.state.slow_s = 0.05
        config = fleet_config(upstream.url, route_queue_count_max=3, route_queue_wait_s_max=20)
        with live_gateway(sqlite_url, config, tmp_path) as live:
            client = funded_client(live, seen)
            later = asyncio.run(_give_up_then_ask(client, funded_client(live, seen, "impatient")))
        assert later.status == 200, (later.status, later.error_type)
        assert later.done

    def test_after_clients_gave_up_while_queued_later_requests_are_served(
        self, sqlite_url: str, upstream: Upstream, tmp_path: Path, seen: Seen
    ) -> None:
        """Whatever happens to the abandoned requests, no place and no queue slot leaks: once
        the long streams end, the fleet is idle again and requests are served."""
        upstream.state.slow_s = 0.05
        config = fleet_config(upstream.url, route_queue_count_max=3, route_queue_wait_s_max=20)
        with live_gateway(sqlite_url, config, tmp_path) as live:
            client = funded_client(live, seen)
            asyncio.run(_give_up_then_ask(client, funded_client(live, seen, "impatient")))
            wait_for(lambda: fleet_idle(live, seen), 10, "the queue or the places stayed taken")
            results, _ = asyncio.run(burst(client, "two-at-a-time", 5, 2, "dep-slow-two"))
            assert [r.status for r in results] == [200] * 5
            assert all(r.done for r in results)

    def test_a_client_that_gave_up_while_queued_pays_nothing(
        self, sqlite_url: str, upstream: Upstream, tmp_path: Path, seen: Seen
    ) -> None:
        upstream.state.slow_s = 0.05
        config = fleet_config(upstream.url, route_queue_count_max=3, route_queue_wait_s_max=20)
        with live_gateway(sqlite_url, config, tmp_path) as live:
            client = funded_client(live, seen)
            impatient = funded_client(live, seen, "impatient")
            asyncio.run(_give_up_then_ask(client, impatient))
            wait_for(lambda: fleet_idle(live, seen), 10, "the queue or the places stayed taken")
            records = live.records(impatient.key_id)
            balance = billing.balance_of(live.db, impatient.account_id)
        assert [r.charge_nano for r in records if r.charge_nano] == []
        assert balance == 10 * NANO


async def _give_up_then_ask(client: Client, impatient: Client) -> StreamResult:
    """Two long streams take both places; three clients of ``impatient`` queue and give up
    after 0.3 s; then one more request is sent while the long streams still run. Returns
    its result."""
    async with client.http() as http, impatient.http(timeout_s=0.3) as impatient_http:
        holders = [
            asyncio.create_task(stream_chat(client, http, "two-at-a-time", 40)) for _ in range(2)
        ]
        while deployment_of(await client.fleet(http), "dep-slow-two")["in_flight"] < 2:
            await asyncio.sleep(0.01)
        gave_up = await asyncio.gather(
            *(stream_chat(impatient, impatient_http, "two-at-a-time", 2) for _ in range(3)),
            return_exceptions=True,
        )
        assert all(isinstance(e, httpx.ReadTimeout) for e in gave_up), gave_up
        assert not any(h.done() for h in holders)  # the places are still taken
        # the gateway learns of each disconnect when its socket closes: the queue empties
        deadline = time.monotonic() + 5
        while (await client.fleet(http))["queued_count"]:
            assert time.monotonic() < deadline, "queued requests of gone clients stayed"
            await asyncio.sleep(0.01)
        later = await stream_chat(client, http, "two-at-a-time", 2)
        for holder in await asyncio.gather(*holders):
            assert holder.status == 200 and holder.done
        return later


def fleet_idle(live: LiveGateway, seen: Seen) -> bool:
    view = fleet_now(live, seen)
    return view["queued_count"] == 0 and deployment_of(view, "dep-slow-two")["in_flight"] == 0


class TestCutMidStream:
    def test_an_upstream_cut_after_the_first_byte_is_not_failed_over_and_bills_what_was_sent(
        self, sqlite_url: str, upstream: Upstream, tmp_path: Path, seen: Seen
    ) -> None:
        """fake-cut sends half of its 8 tokens and closes the connection: the client has a
        200, those 4 tokens and an error event (no [DONE]); the next deployment is not
        tried; the record charges the local prompt count and the 4 tokens, and the cut
        deployment's breaker counts one failure."""
        config = fleet_config(upstream.url)
        upstream.concurrency.pace_s = 0.02
        with live_gateway(sqlite_url, config, tmp_path) as live:
            client = funded_client(live, seen)
            before = len(upstream.state.requests)

            async def one() -> StreamResult:
                async with client.http() as http:
                    return await stream_chat(client, http, "cut-then-good", 8)

            try:
                result = asyncio.run(one())
            finally:
                upstream.concurrency.pace_s = 0.0
            asked = [r["model"] for r in upstream.state.requests[before:]]
            view = fleet_now(live, seen)
            assert result.request_id is not None
            record = live.record(result.request_id)
            balance = billing.balance_of(live.db, client.account_id)
        assert result.status == 200
        assert result.text_chunks_count == 4
        assert not result.done
        last = result.events[-1]
        assert isinstance(last, dict) and set(last) == {"error"}, last
        assert last["error"]["type"] == "upstream_error"
        assert asked == ["fake-cut"]  # no failover once a byte reached the client
        assert (record.status, record.http_status, record.deployment) == (
            "error",
            502,
            "dep-fake-cut",
        )
        assert record.estimated
        assert (record.prompt_tokens, record.completion_tokens) == (HELLO_PROMPT_TOKENS, 4)
        expected = HELLO_PROMPT_TOKENS * INPUT_NANO_PER_TOKEN + 4 * OUTPUT_NANO_PER_TOKEN
        assert (record.charge_nano, record.loss_nano) == (expected, 0)
        assert balance == 10 * NANO - expected
        cut = deployment_of(view, "dep-fake-cut")
        assert (cut["failures_count"], cut["in_flight"]) == (1, 0)
        assert deployment_of(view, "dep-fake")["failures_count"] == 0


class TestDownAndBack:
    def test_health_checks_open_the_breaker_while_down_and_close_it_when_back(
        self, sqlite_url: str, tmp_path: Path, seen: Seen
    ) -> None:
        """An upstream stopped and started again on its port: with health checks every
        0.1 s the breaker opens while it is down and closes once it is back, with no client
        request as a probe; meanwhile requests get a clean 503, then 200 again."""
        port = free_port()
        state = FakeUpstreamState()
        config = fleet_config(
            f"http://127.0.0.1:{free_port()}/v1",
            health_check_interval_s=0.1,
            breaker_failures_count_max=3,
            breaker_open_s=0.3,
        )
        config["engines"]["flaky"] = {
            "kind": "openai",
            "base_url": f"http://127.0.0.1:{port}/v1",
            "timeout_s_connect": 0.5,
            "timeout_s_read": 2,
        }
        config["deployments"]["dep-flaky"] = {"engine": "flaky", "model": "fake"}
        config["models"]["flaky"] = {"deployments": ["dep-flaky"]}
        with (
            ServerThread(fake_upstream_app(state), port=port) as server,
            live_gateway(sqlite_url, config, tmp_path) as live,
        ):
            secret, _, _ = live.new_key()

            def chat() -> httpx.Response:
                answer = httpx.post(
                    live.url + "/v1/chat/completions",
                    json={"model": "flaky", "messages": HELLO, "max_tokens": 4},
                    headers={"Authorization": f"Bearer {secret}"},
                    timeout=10,
                )
                seen.hook(answer)
                return answer

            def breaker() -> str:
                state_now: str = deployment_of(fleet_now(live, seen), "dep-flaky")["breaker"]
                return state_now

            assert chat().status_code == 200
            assert breaker() == "closed"
            server.__exit__(None, None, None)  # the upstream goes down
            asked = len(state.requests)
            wait_for(lambda: breaker() == "open", 10, "the breaker never opened")
            refused = chat()
            assert refused.status_code == 503, refused.text
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"]["type"] == "service_unavailable"

            with ServerThread(fake_upstream_app(state), port=port):  # back, same port
                wait_for(lambda: breaker() == "closed", 10, "the breaker never closed")
                assert len(state.requests) == asked  # no client request was the probe
                served = chat()
                assert served.status_code == 200, served.text
                assert served.json()["choices"][0]["message"]["content"]
                assert len(state.requests) == asked + 1


def _absurd_retry_after_app() -> Starlette:
    async def completions(_request: Request) -> Response:
        body = {"error": {"message": "slow down", "type": "rate_limit", "param": None}}
        return Response(
            orjson.dumps(body),
            status_code=429,
            media_type="application/json",
            headers={"retry-after": "9" * 5000},
        )

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


def test_an_upstream_429_with_an_absurd_retry_after_reaches_the_client_as_a_429(
    sqlite_url: str, tmp_path: Path, seen: Seen
) -> None:
    with ServerThread(_absurd_retry_after_app()) as server:
        config = gateway_config(None)
        config["engines"]["absurd"] = {"kind": "openai", "base_url": server.url + "/v1"}
        config["deployments"]["dep-absurd"] = {"engine": "absurd", "model": "fake"}
        config["models"]["absurd"] = {"deployments": ["dep-absurd"]}
        with live_gateway(sqlite_url, config, tmp_path) as live:
            secret, _, _ = live.new_key()
            answer = httpx.post(
                live.url + "/v1/chat/completions",
                json={"model": "absurd", "messages": HELLO, "max_tokens": 4},
                headers={"Authorization": f"Bearer {secret}"},
                timeout=10,
            )
            seen.hook(answer)
    assert answer.status_code == 429, answer.text
    assert int(answer.headers["retry-after"]) >= 1
