"""Retail billing over real HTTP: holds before the engine call, exact charges after it, the
ledger they leave, top-ups, prices, credit limits, and one gateway per database.

Every test runs on SQLite and on PostgreSQL; those of a request's money run on every
serving surface (chat, Messages, Responses: ``tests/surface_requests.py``). Amounts are
computed here by hand from the configured prices (exact fractions, one rounding up), never
by the code under test.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.assertions import assert_openai_error
from tests.conftest import LiveGateway, gateway_config, live_gateway
from tests.surface_requests import (
    CAP_FIELDS,
    INSUFFICIENT_FUNDS,
    PATHS,
    SURFACES,
    Surface,
    assert_complete_stream,
    assert_error,
    key_headers,
    outcome_of,
    post,
    read_until,
    request_body,
)
from tokenmill.api.gateway import Gateway
from tokenmill.billing import service as billing
from tokenmill.config import Settings, parse_config
from tokenmill.errors import Unavailable
from tokenmill.retail.ledger import Transfer
from tokenmill.store.ledger import cached_balances, recomputed_balances, transfers_of
from tokenmill.store.usage import record_by_request_id
from tokenmill.usage import UsageRecord

NANO = 1_000_000_000
TOKENS_PER_PRICE = 1_000_000
# Per million tokens: 1000 nano-units per input token, 2000 per output token.
PRICE = {"input": "1.00", "output": "2.00"}
# Prices whose per-token costs are fractions of a nano-unit, plus a fee: rounding shows.
ODD_PRICE = {"input": "1.234567", "output": "2.345678", "request_fee": "0.000001"}
DEAR_PRICE = {"input": "10.00", "output": "20.00"}
# Output dear, input cheap: a request costs nearly its hold, so funds run out in few requests.
OUTPUT_HEAVY = {"input": "0.10", "output": "20.00"}
# Template allowance of the default prompt_allowance: 32 per request, 8 per message.
TEMPLATE_TOKENS = 32
TOKENS_PER_MESSAGE = 8
HELLO = "hello there"  # each request's one message
# The sim's time scale for slow streams: about 6 ms a token at 1, so 51 ms at 8.
SLOW = 8.0
# Streams of a burst last long enough (16 tokens, about 0.3 s) for their holds to overlap.
BURST = 3.0
# The sim never answers in fewer tokens: with this max_tokens, a whole answer is this long.
SIM_ANSWER_TOKENS_MIN = 24


def priced_config(
    price: dict[str, str] = PRICE, *, time_scale: float = 0.0, **limits: Any
) -> dict[str, Any]:
    config = gateway_config(None, time_scale=time_scale, **limits)
    config["models"]["sim-chat"]["price"] = dict(price)
    return config


def chat_body(max_tokens: int, *, stream: bool = False, **fields: Any) -> bytes:
    """The exact request body bytes (the hold's prompt bound is measured on them)."""
    return request_body("chat", HELLO, max_tokens, stream=stream, **fields)


def post_chat(live: LiveGateway, secret: str, raw: bytes) -> httpx.Response:
    return post(live.url, "chat", secret, raw)


def units(text: str) -> Fraction:
    return Fraction(Decimal(text))


def cost_nano(price: dict[str, str], prompt_tokens: int, completion_tokens: int) -> int:
    """What the usage costs at ``price``: exact, then rounded up once to a nano-unit."""
    exact = (
        units(price["input"]) * prompt_tokens + units(price["output"]) * completion_tokens
    ) * NANO / TOKENS_PER_PRICE + units(price.get("request_fee", "0")) * NANO
    return math.ceil(exact)


def prompt_bound(raw: bytes, messages_count: int = 1) -> int:
    return len(raw) + TEMPLATE_TOKENS + TOKENS_PER_MESSAGE * messages_count


def hold_nano(price: dict[str, str], raw: bytes, max_tokens: int) -> int:
    """The most a request can cost: its prompt bound and whole output cap, and the fee."""
    return cost_nano(price, prompt_bound(raw), max_tokens)


def usage_of(response: httpx.Response, surface: Surface = "chat") -> tuple[int, int]:
    """The usage of a whole answer (not streamed) that ended well."""
    outcome = outcome_of(surface, response)
    assert outcome.ended and outcome.usage is not None, response.text
    return outcome.usage


def admin_client(live: LiveGateway) -> httpx.Client:
    headers = {"Authorization": f"Bearer {live.admin_token}"}
    return httpx.Client(base_url=live.url + "/admin/v1", headers=headers, timeout=30)


def top_up(admin: httpx.Client, account: str, amount_nano: int, **fields: Any) -> dict[str, Any]:
    response = admin.post(
        f"/accounts/{account}/transfers", json={"amount": units_text(amount_nano), **fields}
    )
    assert response.status_code == 200, response.text
    transfer: dict[str, Any] = response.json()
    return transfer


def iso_ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def units_text(nano: int) -> str:
    return format(Decimal(nano) / NANO, "f")


def balance(admin: httpx.Client, account: str) -> dict[str, Any]:
    response = admin.get(f"/accounts/{account}/balance")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def wait_for_record(live: LiveGateway, request_id: str, within_s: float = 3.0) -> UsageRecord:
    deadline = time.monotonic() + within_s
    while True:
        with live.db.connect() as connection:
            record = record_by_request_id(connection, request_id)
        if record is not None:
            return record
        assert time.monotonic() < deadline, f"no usage record for {request_id} in {within_s} s"
        time.sleep(0.02)


def wait_for_no_holds(admin: httpx.Client, account: str, within_s: float = 3.0) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        found = balance(admin, account)
        if found["holds_count"] == 0 or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


@dataclass
class Ledger:
    usage: list[Transfer]
    all: list[Transfer]
    recomputed: dict[str, int]
    cached: dict[str, int]


def ledger_of(live: LiveGateway, account_id: str) -> Ledger:
    with live.db.connect() as connection:
        return Ledger(
            usage=transfers_of(connection, account_id, kinds=["usage"]),
            all=transfers_of(connection, account_id),
            recomputed=recomputed_balances(connection),
            cached=cached_balances(connection),
        )


def assert_ledger_balanced(ledger: Ledger) -> None:
    """Balances from transfers sum to zero and equal the cached balances."""
    assert sum(ledger.recomputed.values()) == 0, ledger.recomputed
    assert ledger.recomputed == ledger.cached


def usage_transfer(ledger: Ledger, request_id: str) -> Transfer | None:
    found = [t for t in ledger.usage if t.id == f"usage:{request_id}"]
    assert len(found) <= 1
    return found[0] if found else None


def sse_payloads(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]


@dataclass
class Burst:
    responses: list[httpx.Response]
    balances_seen: list[dict[str, Any]] = field(default_factory=list)


async def burst(
    live: LiveGateway, account: str, secret: str, raw: bytes, count: int, path: str
) -> Burst:
    """``count`` concurrent streams of ``raw`` to ``path``, while the account's balance is
    polled."""
    limits = httpx.Limits(max_connections=count + 8, max_keepalive_connections=count + 8)
    admin_headers = {"Authorization": f"Bearer {live.admin_token}"}
    result = Burst([])
    done = asyncio.Event()
    async with (
        httpx.AsyncClient(base_url=live.url, timeout=60, limits=limits) as client,
        httpx.AsyncClient(base_url=live.url, timeout=60, headers=admin_headers) as admin,
    ):

        async def poll() -> None:
            while not done.is_set():
                response = await admin.get(f"/admin/v1/accounts/{account}/balance")
                assert response.status_code == 200, response.text
                result.balances_seen.append(response.json())
                await asyncio.sleep(0.005)

        async def one() -> httpx.Response:
            async with client.stream(
                "POST", path, content=raw, headers=key_headers(secret)
            ) as response:
                await response.aread()
                return response

        poller = asyncio.create_task(poll())
        try:
            result.responses = list(await asyncio.gather(*(one() for _ in range(count))))
        finally:
            done.set()
            await poller
    return result


@contextmanager
def billed_gateway(
    database_url: str, tmp_path: Path, config: dict[str, Any]
) -> Iterator[tuple[LiveGateway, httpx.Client]]:
    with live_gateway(database_url, config, tmp_path) as live, admin_client(live) as admin:
        yield live, admin


@pytest.mark.parametrize("surface", SURFACES)
class TestNoOverspend:
    def test_concurrent_streams_never_spend_more_than_the_funds(
        self, database_url: str, tmp_path: Path, surface: Surface
    ) -> None:
        """200 concurrent streams on funds for a few: each completes or gets a clean 402, the
        balance never goes below zero, and the ledger holds exactly what was spent."""
        max_tokens = 16
        raw = request_body(surface, HELLO, max_tokens, stream=True)
        hold = hold_nano(PRICE, raw, max_tokens)
        funded = 5 * hold
        config = priced_config(time_scale=BURST)
        with billed_gateway(database_url, tmp_path, config) as (live, admin):
            secret, key_id, account_id = live.new_key("acme")
            top_up(admin, account_id, funded)
            seen = asyncio.run(burst(live, account_id, secret, raw, 200, PATHS[surface]))

            served: dict[str, tuple[int, int]] = {}
            refused = 0
            for response in seen.responses:
                if response.status_code == 402:
                    assert_error(surface, response, 402, like=INSUFFICIENT_FUNDS[surface])
                    refused += 1
                else:
                    rid = response.headers["x-request-id"]
                    served[rid] = assert_complete_stream(surface, response)
            assert served and refused, (len(served), refused)
            assert len(served) + refused == 200

            # How many polls fit in the burst depends on the machine (the poller takes at least
            # one); every one taken must show funds within their floor.
            for polled in seen.balances_seen:
                assert polled["balance_nano"] >= 0, polled
                assert polled["available_nano"] >= 0, polled
                assert polled["held_nano"] <= polled["balance_nano"], polled

            after = wait_for_no_holds(admin, account_id)
            assert (after["held_nano"], after["holds_count"]) == (0, 0), after
            assert after["balance_nano"] >= 0
            ledger = ledger_of(live, account_id)
            spent = sum(t.amount_nano for t in ledger.usage)
            assert spent == funded - after["balance_nano"]
            assert ledger.cached[account_id] == after["balance_nano"]
            assert_ledger_balanced(ledger)
            # One usage transfer per served stream, each the price of the usage it showed.
            assert {t.reference for t in ledger.usage} == set(served)
            for transfer in ledger.usage:
                assert transfer.reference is not None
                assert transfer.debit_account == account_id
                assert transfer.credit_account == "revenue:USD"
                assert transfer.amount_nano == cost_nano(PRICE, *served[transfer.reference])
            records = {r.request_id: r for r in live.records(key_id)}
            assert set(records) == set(served)
            assert all(r.status == "ok" and r.loss_nano == 0 for r in records.values())
            assert {r.endpoint for r in records.values()} == {surface}


@pytest.mark.parametrize("surface", SURFACES)
class TestCharges:
    def test_a_request_is_charged_the_price_of_its_usage(
        self, database_url: str, tmp_path: Path, surface: Surface
    ) -> None:
        """Streamed or not, the charge is the usage at the price, rounded up once; the
        record's charge is the transfer's amount, and the balance falls by exactly that."""
        with billed_gateway(database_url, tmp_path, priced_config(ODD_PRICE)) as (live, admin):
            secret, _, account_id = live.new_key("acme")
            funded = NANO
            top_up(admin, account_id, funded)

            answer = post(live.url, surface, secret, request_body(surface, HELLO, 16))
            assert answer.status_code == 200, answer.text
            streamed = post(
                live.url, surface, secret, request_body(surface, HELLO, 20, stream=True)
            )
            usages = {
                answer.headers["x-request-id"]: usage_of(answer, surface),
                streamed.headers["x-request-id"]: assert_complete_stream(surface, streamed),
            }

            ledger = ledger_of(live, account_id)
            for request_id, (prompt_tokens, completion_tokens) in usages.items():
                assert completion_tokens > 0
                expected = cost_nano(ODD_PRICE, prompt_tokens, completion_tokens)
                record = live.record(request_id)
                assert (record.prompt_tokens, record.completion_tokens) == (
                    prompt_tokens,
                    completion_tokens,
                )
                assert record.endpoint == surface
                assert record.charge_nano == expected
                assert record.loss_nano == 0
                transfer = usage_transfer(ledger, request_id)
                assert transfer is not None
                assert transfer.amount_nano == record.charge_nano
                assert (transfer.debit_account, transfer.credit_account) == (
                    account_id,
                    "revenue:USD",
                )
                assert transfer.kind == "usage"
            after = balance(admin, account_id)
            charged = sum(cost_nano(ODD_PRICE, *usage) for usage in usages.values())
            assert after["balance_nano"] == funded - charged
            assert (after["held_nano"], after["holds_count"]) == (0, 0)
            assert_ledger_balanced(ledger)

    def test_a_request_refused_before_any_token_costs_nothing(
        self, database_url: str, tmp_path: Path, surface: Surface
    ) -> None:
        """The sim refuses a request bigger than its KV cache: a 400, a record charged 0, no
        usage transfer, the whole hold given back."""
        config = priced_config(output_tokens_max=100_000)
        config["deployments"]["small"] = {
            "engine": "sim",
            "model": "llama-3.1-8b",
            "gpu": "rtx-4090",
        }
        config["models"]["sim-small"] = {
            "deployments": ["small"],
            "output_tokens_max": 100_000,
            "price": dict(PRICE),
        }
        with billed_gateway(database_url, tmp_path, config) as (live, admin):
            secret, _, account_id = live.new_key("acme")
            funded = NANO
            top_up(admin, account_id, funded)
            for stream in (False, True):
                raw = request_body(surface, HELLO, 90_000, model="sim-small", stream=stream)
                assert hold_nano(PRICE, raw, 90_000) < funded  # the hold is placed, not a 402
                response = post(live.url, surface, secret, raw)
                assert_error(surface, response, 400, CAP_FIELDS[surface])
                record = live.record(response.headers["x-request-id"])
                assert record.status == "error"
                assert (record.prompt_tokens, record.completion_tokens) == (0, 0)
                assert (record.charge_nano, record.loss_nano) == (0, 0)
            after = balance(admin, account_id)
            assert after["balance_nano"] == funded
            assert (after["held_nano"], after["holds_count"]) == (0, 0)
            ledger = ledger_of(live, account_id)
            assert ledger.usage == []
            assert_ledger_balanced(ledger)


@pytest.mark.parametrize("surface", SURFACES)
class TestInsufficientFunds:
    @pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
    def test_an_empty_account_gets_402_until_it_is_topped_up(
        self, database_url: str, tmp_path: Path, stream: bool, surface: Surface
    ) -> None:
        """A zero balance: 402 in the surface's shape (OpenAI's insufficient_quota,
        Anthropic's billing_error), nothing charged or recorded; a top-up by the admin API
        makes the same request succeed within a second."""
        raw = request_body(surface, HELLO, 16, stream=stream)
        with billed_gateway(database_url, tmp_path, priced_config()) as (live, admin):
            secret, key_id, account_id = live.new_key("acme")
            refused = post(live.url, surface, secret, raw)
            assert_error(surface, refused, 402, like=INSUFFICIENT_FUNDS[surface])
            assert balance(admin, account_id)["balance_nano"] == 0
            assert ledger_of(live, account_id).all == []
            assert live.records(key_id) == []

            funded = 10 * hold_nano(PRICE, raw, 16)
            top_up(admin, account_id, funded)
            deadline = time.monotonic() + 1.0
            while (response := post(live.url, surface, secret, raw)).status_code == 402:
                assert time.monotonic() < deadline, "still 402 a second after the top-up"
                time.sleep(0.02)
            assert response.status_code == 200, response.text
            usage = (
                assert_complete_stream(surface, response) if stream else usage_of(response, surface)
            )
            ledger = ledger_of(live, account_id)
            assert [t.amount_nano for t in ledger.usage] == [cost_nano(PRICE, *usage)]
            assert balance(admin, account_id)["balance_nano"] == funded - cost_nano(PRICE, *usage)
            assert_ledger_balanced(ledger)

    def test_funds_short_of_one_output_token_get_402(
        self, database_url: str, tmp_path: Path, surface: Surface
    ) -> None:
        """Funds that pay for the prompt bound but not one output token: 402, nothing held."""
        raw = request_body(surface, HELLO, 16)
        short = hold_nano(PRICE, raw, 1) - 1
        with billed_gateway(database_url, tmp_path, priced_config()) as (live, admin):
            secret, _, account_id = live.new_key("acme")
            top_up(admin, account_id, short)
            refused = post(live.url, surface, secret, raw)
            assert_error(surface, refused, 402, like=INSUFFICIENT_FUNDS[surface])
            after = balance(admin, account_id)
            assert (after["balance_nano"], after["held_nano"], after["holds_count"]) == (
                short,
                0,
                0,
            )
            assert ledger_of(live, account_id).usage == []
            top_up(admin, account_id, 1)
            assert post(live.url, surface, secret, raw).status_code == 200


def post_concurrently(
    admin: httpx.Client, account: str, key: str, amount: str, count: int = 20
) -> list[httpx.Response]:
    """``count`` top-ups with one idempotency key, POSTed at once from as many threads."""
    start = threading.Barrier(count)

    def post(_: int) -> httpx.Response:
        start.wait(timeout=10)
        return admin.post(
            f"/accounts/{account}/transfers",
            json={"amount": amount, "kind": "topup"},
            headers={"Idempotency-Key": key},
        )

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(post, range(count)))


FOLLOWER_BUG = (
    "BUG: billing/follower.py apply_money_changes re-checks a fetched batch only with"
    " state.has_applied(seq), which on SQLite is always False (overlap_of == 0, so"
    " ChangeCursor.mark_applied forgets every seq at once); two sync_money calls that"
    " fetched the same transfer change (concurrent admin POSTs each calling sync_directory,"
    " or one racing the follower's poll) both add it to the in-memory balance, so the"
    " gateway lets the account spend money the ledger does not have"
)


class TestTopUps:
    def test_one_idempotency_key_posted_concurrently_moves_funds_once(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """20 concurrent POSTs with one key: one transfer, the ledger balance rises once, every
        answer is that transfer, and all but one say they were replays; the same key for
        another amount is a 409 that changes nothing."""
        amount = 3 * NANO
        with billed_gateway(database_url, tmp_path, priced_config()) as (live, admin):
            _, _, account_id = live.new_key("acme")
            responses = post_concurrently(admin, account_id, "order-42", "3.00")
            for response in responses:
                assert response.status_code == 200, response.text
            assert {r.json()["id"] for r in responses} == {"idem:order-42"}
            assert {r.json()["amount_nano"] for r in responses} == {amount}
            replays = [r.headers.get("idempotent-replayed") for r in responses]
            assert replays.count("true") == 19, replays
            ledger = ledger_of(live, account_id)
            assert [(t.id, t.amount_nano) for t in ledger.all] == [("idem:order-42", amount)]
            assert ledger.cached[account_id] == amount
            assert_ledger_balanced(ledger)

            # The body's key is the same key as the header's.
            again = admin.post(
                f"/accounts/{account_id}/transfers",
                json={"amount": "3.00", "idempotency_key": "order-42"},
            )
            assert again.status_code == 200, again.text
            assert again.headers.get("idempotent-replayed") == "true"

            before = balance(admin, account_id)["balance_nano"]
            reused = admin.post(
                f"/accounts/{account_id}/transfers",
                json={"amount": "4.00", "kind": "topup", "idempotency_key": "order-42"},
            )
            error = assert_openai_error(reused, 409, "idempotency_key")
            assert error["code"] == "idempotency_key_reused"
            assert balance(admin, account_id)["balance_nano"] == before
            ledger = ledger_of(live, account_id)
            assert [(t.id, t.amount_nano) for t in ledger.all] == [("idem:order-42", amount)]
            assert ledger.cached[account_id] == amount

    def test_concurrent_top_ups_are_spendable_once(
        self, database_url: str, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        """Rounds of 20 concurrent POSTs of one key each: the gateway's balance rises once a
        round, and spending it all never takes the ledger balance below zero."""
        rounds = 8
        raw = chat_body(16)
        amount = hold_nano(OUTPUT_HEAVY, raw, 16)
        with billed_gateway(database_url, tmp_path, priced_config(OUTPUT_HEAVY)) as (live, admin):
            secret, _, account_id = live.new_key("acme")
            for round_index in range(rounds):
                responses = post_concurrently(
                    admin, account_id, f"round-{round_index}", units_text(amount)
                )
                assert all(r.status_code == 200 for r in responses)
            assert ledger_of(live, account_id).cached[account_id] == rounds * amount
            time.sleep(0.6)  # two follower polls: every top-up is applied by now
            seen = balance(admin, account_id)["balance_nano"]

            # Spend all the gateway believes the account has.
            for _ in range(500):
                response = post_chat(live, secret, raw)
                if response.status_code == 402:
                    break
                assert response.status_code == 200, response.text
            assert_openai_error(response, 402)
            ledger = ledger_of(live, account_id)
            assert ledger.cached[account_id] >= 0, (
                f"the ledger balance is {ledger.cached[account_id]} after spending"
                f" {seen} the gateway counted from {rounds * amount} of top-ups"
            )
            assert seen == rounds * amount
            assert_ledger_balanced(ledger)

    def test_a_top_up_made_by_the_billing_service_is_spendable_within_a_second(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """move_funds on the store (as the CLI does) while the gateway runs: the gateway
        sees it within a second and the request that got 402 is served."""
        raw = chat_body(16)
        with billed_gateway(database_url, tmp_path, priced_config()) as (live, admin):
            secret, _, account_id = live.new_key("acme")
            assert_openai_error(post_chat(live, secret, raw), 402)
            funded = 10 * hold_nano(PRICE, raw, 16)
            posted = billing.move_funds(
                live.db,
                account_id,
                funded,
                kind="topup",
                idempotency_key="cli-topup-1",
                actor="cli:test",
            )
            assert not posted.replayed
            deadline = time.monotonic() + 1.0
            while (response := post_chat(live, secret, raw)).status_code == 402:
                assert time.monotonic() < deadline, "the CLI top-up is not spendable in 1 s"
                time.sleep(0.02)
            assert response.status_code == 200, response.text
            after = balance(admin, account_id)
            assert after["balance_nano"] == funded - cost_nano(PRICE, *usage_of(response))
            # Replayed through the service, it moves nothing more.
            replay = billing.move_funds(
                live.db,
                account_id,
                funded,
                kind="topup",
                idempotency_key="cli-topup-1",
                actor="cli:test",
            )
            assert replay.replayed
            time.sleep(0.6)  # two follower polls: a wrongly applied replay would show
            assert balance(admin, account_id)["balance_nano"] == after["balance_nano"]
            assert_ledger_balanced(ledger_of(live, account_id))


class TestPriceChanges:
    def test_a_stream_keeps_the_price_it_started_under(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """A new price set while a slow stream runs: that stream pays the old price, the
        next request the new one."""
        config = priced_config(time_scale=SLOW)
        with billed_gateway(database_url, tmp_path, config) as (live, admin):
            secret, _, account_id = live.new_key("acme")
            top_up(admin, account_id, NANO)
            with httpx.stream(
                "POST",
                live.url + "/v1/chat/completions",
                content=chat_body(30, stream=True),
                headers=key_headers(secret),
                timeout=30,
            ) as streamed:
                assert streamed.status_code == 200
                lines = streamed.iter_lines()
                first = [line for _, line in zip(range(4), lines, strict=False)]
                assert any('"content"' in line for line in first)
                changed = admin.post(
                    "/prices", json={"model": "sim-chat", "currency": "USD", **DEAR_PRICE}
                )
                assert changed.status_code == 201, changed.text
                rest = list(lines)
            old_request = streamed.headers["x-request-id"]
            payloads = sse_payloads("\n".join(first + rest))
            assert payloads[-1] == "[DONE]"
            (usage,) = [orjson.loads(p)["usage"] for p in payloads[:-1] if '"usage"' in p]
            old_usage = (usage["prompt_tokens"], usage["completion_tokens"])

            record = live.record(old_request)
            effective_ms = iso_ms(changed.json()["effective_from"])
            assert record.started_at_ms < effective_ms < record.started_at_ms + record.duration_ms
            assert record.charge_nano == cost_nano(PRICE, *old_usage)
            assert record.charge_nano != cost_nano(DEAR_PRICE, *old_usage)

            new = post_chat(live, secret, chat_body(4))
            assert new.status_code == 200, new.text
            new_record = live.record(new.headers["x-request-id"])
            assert new_record.charge_nano == cost_nano(DEAR_PRICE, *usage_of(new))

            ledger = ledger_of(live, account_id)
            old_transfer = usage_transfer(ledger, old_request)
            assert old_transfer is not None
            assert old_transfer.amount_nano == record.charge_nano
            spent = record.charge_nano + new_record.charge_nano
            assert balance(admin, account_id)["balance_nano"] == NANO - spent
            assert_ledger_balanced(ledger)


@pytest.mark.parametrize("surface", SURFACES)
class TestOutputCap:
    @pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
    def test_the_output_cap_is_lowered_to_what_the_funds_pay_for(
        self, database_url: str, tmp_path: Path, stream: bool, surface: Surface
    ) -> None:
        """Funds for 5 output tokens and a cap of 500: 5 tokens, cut for length (chat's
        'length', Anthropic's 'max_tokens', Responses' incomplete for max_output_tokens),
        and a balance that stays at or above zero."""
        affordable = 5
        max_tokens = 500
        raw = request_body(surface, HELLO, max_tokens, stream=stream)
        # The prompt bound at 1000 nano a token, 5 output tokens at 2000, and less than a 6th.
        funded = prompt_bound(raw) * 1000 + affordable * 2000 + 1500
        assert hold_nano(PRICE, raw, affordable) <= funded < hold_nano(PRICE, raw, affordable + 1)
        with billed_gateway(database_url, tmp_path, priced_config()) as (live, admin):
            secret, _, account_id = live.new_key("acme")
            top_up(admin, account_id, funded)
            response = post(live.url, surface, secret, raw)
            assert response.status_code == 200, response.text
            usage = (
                assert_complete_stream(surface, response) if stream else usage_of(response, surface)
            )
            assert usage[1] == affordable
            assert outcome_of(surface, response).finish == "length"
            after = balance(admin, account_id)
            assert after["balance_nano"] == funded - cost_nano(PRICE, *usage)
            assert after["balance_nano"] >= 0
            assert (after["held_nano"], after["holds_count"]) == (0, 0)
            assert_ledger_balanced(ledger_of(live, account_id))


@pytest.mark.parametrize("surface", SURFACES)
class TestDisconnect:
    def test_a_client_that_leaves_pays_for_what_was_produced(
        self, database_url: str, tmp_path: Path, surface: Surface
    ) -> None:
        """Closing a slow stream after a few pieces of text: a cancelled record of at least
        the tokens the client saw, charged their price, the same amount transferred, and the
        hold released."""
        config = priced_config(time_scale=SLOW)
        with billed_gateway(database_url, tmp_path, config) as (live, admin):
            secret, _, account_id = live.new_key("acme")
            top_up(admin, account_id, NANO)
            with httpx.stream(
                "POST",
                live.url + PATHS[surface],
                content=request_body(surface, HELLO, SIM_ANSWER_TOKENS_MIN, stream=True),
                headers=key_headers(secret),
                timeout=30,
            ) as response:
                assert response.status_code == 200
                request_id = response.headers["x-request-id"]
                seen = read_until(surface, response, 3)
                assert len(seen.pieces) >= 3 and not seen.ended, seen
            record = wait_for_record(live, request_id)
            assert record.status == "cancelled"
            assert record.endpoint == surface
            assert len(seen.pieces) <= record.completion_tokens < SIM_ANSWER_TOKENS_MIN
            assert record.charge_nano == cost_nano(
                PRICE, record.prompt_tokens, record.completion_tokens
            )
            assert record.charge_nano > 0
            after = wait_for_no_holds(admin, account_id)
            assert (after["held_nano"], after["holds_count"]) == (0, 0)
            assert after["balance_nano"] == NANO - record.charge_nano
            ledger = ledger_of(live, account_id)
            transfer = usage_transfer(ledger, request_id)
            assert transfer is not None
            assert transfer.amount_nano == record.charge_nano
            assert_ledger_balanced(ledger)


class TestOneGatewayPerDatabase:
    def test_a_second_gateway_is_refused_and_a_later_one_starts(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """While one gateway serves a database a second is refused clearly; once it stops,
        a new one starts with the balance the first left."""
        config = priced_config()
        settings = Settings(
            home=tmp_path,
            database_url=database_url,
            config=parse_config(config),
            admin_token="tmadmin-second",
            environ={},
        )
        with billed_gateway(database_url, tmp_path, config) as (live, admin):
            secret, _, account_id = live.new_key("acme")
            top_up(admin, account_id, NANO)
            with pytest.raises(Unavailable, match="another tokenmill gateway"):
                Gateway(settings)
            response = post_chat(live, secret, chat_body(16))
            assert response.status_code == 200, response.text
            left = balance(admin, account_id)["balance_nano"]
            assert left == NANO - cost_nano(PRICE, *usage_of(response))
        with billed_gateway(database_url, tmp_path, config) as (again, admin):
            assert balance(admin, account_id)["balance_nano"] == left
            assert post_chat(again, secret, chat_body(16)).status_code == 200


@pytest.mark.parametrize("surface", SURFACES)
class TestPostpaid:
    def test_a_credit_limit_lets_the_balance_go_down_to_minus_the_limit_and_no_further(
        self, database_url: str, tmp_path: Path, surface: Surface
    ) -> None:
        """With a credit limit and no funds, requests are served below zero, concurrent or
        not, until the balance nears minus the limit; it never passes it."""
        raw = request_body(surface, HELLO, 16, stream=True)
        hold = hold_nano(OUTPUT_HEAVY, raw, 16)
        limit = 5 * hold
        config = priced_config(OUTPUT_HEAVY, time_scale=BURST)
        with billed_gateway(database_url, tmp_path, config) as (live, admin):
            secret, _, account_id = live.new_key("acme")
            terms = admin.post(
                f"/accounts/{account_id}/terms", json={"credit_limit": units_text(limit)}
            )
            assert terms.status_code == 200, terms.text
            before = balance(admin, account_id)
            assert (before["balance_nano"], before["credit_limit_nano"]) == (0, limit)
            assert before["available_nano"] == limit

            seen = asyncio.run(burst(live, account_id, secret, raw, 60, PATHS[surface]))
            served = 0
            for response in seen.responses:
                if response.status_code == 402:
                    assert_error(surface, response, 402, like=INSUFFICIENT_FUNDS[surface])
                else:
                    assert_complete_stream(surface, response)
                    served += 1
            assert served >= 1
            for polled in [*seen.balances_seen, balance(admin, account_id)]:
                assert polled["balance_nano"] >= -limit, polled
                assert polled["available_nano"] >= 0, polled

            # One at a time until refused: the balance ends within one request of the limit.
            for _ in range(100):
                response = post(live.url, surface, secret, request_body(surface, HELLO, 16))
                if response.status_code == 402:
                    break
                assert response.status_code == 200, response.text
                assert balance(admin, account_id)["balance_nano"] >= -limit
            assert_error(surface, response, 402, like=INSUFFICIENT_FUNDS[surface])
            after = wait_for_no_holds(admin, account_id)
            assert -limit <= after["balance_nano"] < -limit + hold
            assert (after["held_nano"], after["holds_count"]) == (0, 0)
            ledger = ledger_of(live, account_id)
            assert sum(t.amount_nano for t in ledger.usage) == -after["balance_nano"]
            assert ledger.cached[account_id] == after["balance_nano"]
            assert_ledger_balanced(ledger)
