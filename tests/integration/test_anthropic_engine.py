"""The ``anthropic`` engine against the fake Anthropic upstream on loopback, through a live
gateway and the real ``openai`` SDK: what goes up, what comes back, what is metered and
billed, how each upstream failure reaches the client, failover, and the API key.

Most tests share one gateway and each gets a key of its own, so "the records of this
request" are the records of its key.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.assertions import assert_openai_error
from tests.conftest import LiveGateway, gateway_config
from tests.integration.test_openai_engine import assert_one_error_record, chunks_of, content_of
from tokenmill.access import service
from tokenmill.api.app import create_app
from tokenmill.config import Settings, parse_config
from tokenmill.errors import ConfigurationError
from tokenmill.store.database import open_engine
from tokenmill.testing import (
    FAKE_ANSWER_WORDS_COUNT,
    FAKE_CACHE_READ_TOKENS,
    FAKE_CACHE_WRITE_TOKENS,
    FAKE_WORDS,
    FakeAnthropicState,
    FakeUpstreamState,
    ServerThread,
    fake_anthropic_app,
    free_port,
)
from tokenmill.usage import UsageRecord

KEY_ENV = "TM_TEST_ANTHROPIC_KEY"
SECRET = "sk-ant-test-" + secrets.token_hex(16)
BEHAVIOURS = (
    "claude",
    "claude-cached",
    "claude-hang",
    "claude-garbage",
    "claude-cut",
    "claude-error",
    "claude-badjson",
    "claude-nostop",
    "claude-early",
)
STATUSES = (400, 401, 403, 413, 422, 429, 500, 502, 503, 529)
MODES = ("plain", "stream")
SYSTEM = {"role": "system", "content": "be brief"}
QUESTION = {"role": "user", "content": "one two three"}
MESSAGES = [SYSTEM, QUESTION]
PROMPT_TOKENS = 5  # the fake's count: the words of the system prompt and the question
WHOLE_ANSWER = "".join(word + " " for word in FAKE_WORDS[:FAKE_ANSWER_WORDS_COUNT])
PRICE = {"input": "3.00", "output": "15.00", "cached_input": "0.30"}
NANO = 10**9

Upstream = tuple[str, FakeUpstreamState]
AnthropicUpstream = tuple[str, FakeAnthropicState]


def anthropic_config(anthropic_url: str, openai_url: str) -> dict[str, Any]:
    """The sim and openai fakes of the shared configuration, plus one model per Anthropic
    behaviour and status, and the models the tests below name."""
    config = gateway_config(openai_url, breaker_failures_count_max=1000)
    config["engines"]["claude"] = {
        "kind": "anthropic",
        "base_url": anthropic_url,
        "api_key_env": KEY_ENV,
        "timeout_s_read": 2,
        "timeout_s_connect": 2,
        "prices": {"claude": {"input": "3", "output": "15"}},
    }
    for model in BEHAVIOURS:
        config["deployments"][f"ant-{model}"] = {"engine": "claude", "model": model}
        config["models"][model] = {"deployments": [f"ant-{model}"]}
    # A deployment per status and mode: a 429's Retry-After opens its breaker for a while.
    for status in STATUSES:
        for mode in MODES:
            name = f"claude-{status}-{mode}"
            config["deployments"][f"ant-{name}"] = {"engine": "claude", "model": f"claude-{status}"}
            config["models"][name] = {"deployments": [f"ant-{name}"]}
    # Deployments of their own for failover, so that the error tests' breakers stay apart.
    config["deployments"]["ant-overloaded"] = {"engine": "claude", "model": "claude-529"}
    config["deployments"]["ant-early"] = {"engine": "claude", "model": "claude-early"}
    config["models"] |= {
        "sonnet": {"deployments": ["ant-claude"]},
        "sonnet-capped": {"deployments": ["ant-claude"], "output_tokens_max": 4},
        "sonnet-priced": {"deployments": ["ant-claude-cached"], "price": PRICE},
        "sonnet-embed": {"kind": "embedding", "deployments": ["ant-claude"]},
        # least-busy keeps the listed order when nothing is in flight
        "overloaded-then-fake": {
            "deployments": ["ant-overloaded", "dep-fake"],
            "routing": "least-busy",
        },
        "early-error-then-fake": {
            "deployments": ["ant-early", "dep-fake"],
            "routing": "least-busy",
        },
    }
    return config


@contextmanager
def served_gateway(
    database_url: str, config: dict[str, Any], home: Path, environ: dict[str, str]
) -> Iterator[LiveGateway]:
    """conftest's live gateway, with an environment: the engine reads its key from it."""
    admin = "tmadmin-" + secrets.token_urlsafe(24)
    settings = Settings(
        home=home,
        database_url=database_url,
        config=parse_config(config),
        admin_token=admin,
        environ=environ,
    )
    app = create_app(settings)
    db = open_engine(database_url, migrate=False)
    try:
        with ServerThread(app) as server:
            yield LiveGateway(server.url, database_url, admin, db)
    finally:
        db.dispose()


@pytest.fixture(scope="module")
def fake_anthropic() -> Iterator[AnthropicUpstream]:
    state = FakeAnthropicState(api_key=SECRET, hang_s=5.0)
    with ServerThread(fake_anthropic_app(state)) as server:
        yield server.url, state


@pytest.fixture(scope="module")
def gateway(
    fake_anthropic: AnthropicUpstream,
    fake_upstream: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveGateway]:
    home = tmp_path_factory.mktemp("anthropic")
    url = f"sqlite:///{home / 'tokenmill.db'}"
    config = anthropic_config(fake_anthropic[0], fake_upstream[0])
    with served_gateway(url, config, home, {KEY_ENV: SECRET}) as live:
        yield live


@pytest.fixture
def key(gateway: LiveGateway) -> str:
    return gateway.new_key()[0]


def client_for(gateway: LiveGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=15)


def post(
    gateway: LiveGateway, key: str, body: dict[str, Any], path: str = "/chat/completions"
) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1" + path,
        headers={"Authorization": f"Bearer {key}"},
        json=body,
        timeout=15,
    )


def stream_events(
    gateway: LiveGateway, key: str, body: dict[str, Any]
) -> tuple[httpx.Response, list[str]]:
    """The response and its SSE ``data:`` payloads, in order (``[DONE]`` included)."""
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={**body, "stream": True},
        timeout=15,
    ) as response:
        text = response.read().decode()
    payloads = [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]
    return response, payloads


def chat(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, **fields}


def record_of(gateway: LiveGateway, response: httpx.Response) -> UsageRecord:
    return gateway.record(response.headers["x-request-id"])


def cost_nano(prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> int:
    """PRICE's charge for the usage: exact, then rounded up once to a nano-unit."""
    exact = (
        (
            Fraction(Decimal(PRICE["input"])) * (prompt_tokens - cached_tokens)
            + Fraction(Decimal(PRICE["cached_input"])) * cached_tokens
            + Fraction(Decimal(PRICE["output"])) * completion_tokens
        )
        * NANO
        / 1_000_000
    )
    return math.ceil(exact)


class TestAnswers:
    def test_a_chat_answer_comes_back_in_openai_shape_under_the_public_model(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """The SDK gets a chat.completion of the public model with the whole text, its finish
        reason and usage; the record has the same counts, not estimated."""
        raw = client_for(gateway, key).chat.completions.with_raw_response.create(
            model="sonnet", messages=MESSAGES
        )
        completion = raw.parse()
        assert completion.model == "sonnet"
        assert completion.id.startswith("chatcmpl-")
        assert completion.choices[0].message.role == "assistant"
        assert completion.choices[0].message.content == WHOLE_ANSWER
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None
        assert completion.usage.prompt_tokens == PROMPT_TOKENS
        assert completion.usage.completion_tokens == FAKE_ANSWER_WORDS_COUNT
        record = gateway.record(raw.headers["x-request-id"])
        assert (record.model, record.deployment, record.engine) == (
            "sonnet",
            "ant-claude",
            "claude",
        )
        assert (record.prompt_tokens, record.completion_tokens) == (
            PROMPT_TOKENS,
            FAKE_ANSWER_WORDS_COUNT,
        )
        assert (record.status, record.estimated) == ("ok", False)

    def test_the_upstream_gets_a_messages_request_with_the_operator_key(
        self, gateway: LiveGateway, key: str, fake_anthropic: AnthropicUpstream
    ) -> None:
        """System joined, same-role messages merged, the cap as max_tokens, stop sequences,
        temperature; the key from the environment, never the client's own."""
        state = fake_anthropic[1]
        before = len(state.requests)
        messages = [SYSTEM, QUESTION, {"role": "user", "content": "four"}]
        client_for(gateway, key).chat.completions.create(
            model="sonnet-capped", messages=messages, max_tokens=50, stop=["zulu"], temperature=0.5
        )
        assert len(state.requests) == before + 1
        assert state.requests[-1] == {
            "model": "claude",
            "max_tokens": 4,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "one two three"},
                        {"type": "text", "text": "four"},
                    ],
                }
            ],
            "system": [{"type": "text", "text": "be brief"}],
            "stop_sequences": ["zulu"],
            "temperature": 0.5,
        }
        headers = state.headers[-1]
        assert headers["x-api-key"] == SECRET
        assert headers["anthropic-version"] == "2023-06-01"
        assert "authorization" not in headers
        assert key not in str(headers)

    def test_a_stream_comes_back_as_openai_chunks_with_usage(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """Role first, the text, a stop finish, then the usage chunk the client asked for;
        the record has the upstream's counts."""
        raw = client_for(gateway, key).chat.completions.with_raw_response.create(
            model="sonnet",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(raw.parse())
        assert chunks[0].choices[0].delta.role == "assistant"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == WHOLE_ANSWER
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert finishes[-1] == "stop"
        assert finishes.count("stop") == 1
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == FAKE_ANSWER_WORDS_COUNT
        assert all(c.model == "sonnet" for c in chunks)
        record = gateway.record(raw.headers["x-request-id"])
        assert (record.prompt_tokens, record.completion_tokens) == (
            PROMPT_TOKENS,
            FAKE_ANSWER_WORDS_COUNT,
        )
        assert (record.status, record.estimated) == ("ok", False)
        assert record.ttft_ms is not None

    def test_a_stream_shows_no_usage_to_a_client_that_did_not_ask(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """Without include_usage every chunk has choices and no usage; [DONE] ends it."""
        response, payloads = stream_events(gateway, key, chat("sonnet"))
        assert response.status_code == 200
        assert payloads[-1] == "[DONE]"
        chunks = chunks_of(payloads)
        assert all(chunk["choices"] and chunk.get("usage") is None for chunk in chunks)
        assert "".join(map(content_of, chunks)) == WHOLE_ANSWER
        assert record_of(gateway, response).completion_tokens == FAKE_ANSWER_WORDS_COUNT

    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_the_output_cap_reached_finishes_with_length(
        self, gateway: LiveGateway, key: str, stream: bool
    ) -> None:
        """max_tokens 3 of a 6-word answer: three words, finish_reason length."""
        client = client_for(gateway, key)
        if stream:
            chunks = list(
                client.chat.completions.create(
                    model="sonnet", messages=MESSAGES, max_tokens=3, stream=True
                )
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        else:
            completion = client.chat.completions.create(
                model="sonnet", messages=MESSAGES, max_tokens=3
            )
            text = completion.choices[0].message.content or ""
            finish = completion.choices[0].finish_reason
        assert text == "alpha bravo charlie "
        assert finish == "length"

    def test_a_stop_sequence_ends_the_answer_before_it_with_stop(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """stop goes up as stop_sequences; the answer ends before it, finish_reason stop."""
        completion = client_for(gateway, key).chat.completions.create(
            model="sonnet", messages=MESSAGES, stop=["charlie"]
        )
        assert completion.choices[0].message.content == "alpha bravo "
        assert completion.choices[0].finish_reason == "stop"


class TestBilling:
    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_cache_tokens_are_metered_and_billed_at_the_cached_price(
        self, gateway: LiveGateway, stream: bool
    ) -> None:
        """Prompt = input + cache writes + cache reads; the reads are cached tokens, charged
        at the cached price; the balance falls by the charge."""
        secret, key_id, account_id = gateway.new_key("claude-payer-" + secrets.token_hex(4))
        admin = httpx.Client(
            base_url=gateway.url + "/admin/v1",
            headers={"Authorization": f"Bearer {gateway.admin_token}"},
            timeout=15,
        )
        with admin:
            topped = admin.post(f"/accounts/{account_id}/transfers", json={"amount": "1"})
            assert topped.status_code == 200, topped.text
            body = chat("sonnet-priced")
            if stream:
                response, payloads = stream_events(gateway, secret, body)
                assert payloads[-1] == "[DONE]"
            else:
                response = post(gateway, secret, body)
                details = response.json()["usage"]["prompt_tokens_details"]
                assert details == {"cached_tokens": FAKE_CACHE_READ_TOKENS}
            assert response.status_code == 200
            record = record_of(gateway, response)
            prompt = PROMPT_TOKENS + FAKE_CACHE_WRITE_TOKENS + FAKE_CACHE_READ_TOKENS
            assert (record.prompt_tokens, record.cached_tokens, record.completion_tokens) == (
                prompt,
                FAKE_CACHE_READ_TOKENS,
                FAKE_ANSWER_WORDS_COUNT,
            )
            assert not record.estimated
            expected = cost_nano(prompt, FAKE_CACHE_READ_TOKENS, FAKE_ANSWER_WORDS_COUNT)
            assert record.charge_nano == expected
            assert record.charge_nano < cost_nano(prompt, 0, FAKE_ANSWER_WORDS_COUNT)
            balance = admin.get(f"/accounts/{account_id}/balance").json()
            assert balance["balance_nano"] == NANO - expected
        assert [r.request_id for r in gateway.records(key_id)] == [record.request_id]

    def test_an_unfunded_account_is_refused_before_the_upstream(
        self, gateway: LiveGateway, fake_anthropic: AnthropicUpstream
    ) -> None:
        """A priced anthropic model on an empty account: 402, nothing sent upstream."""
        state = fake_anthropic[1]
        account = service.create_account(gateway.db, "claude-empty-" + secrets.token_hex(4))
        secret = service.create_key(gateway.db, account.id).secret
        gateway.wait_for_key(secret)
        before = len(state.requests)
        assert_openai_error(post(gateway, secret, chat("sonnet-priced")), 402)
        assert len(state.requests) == before


REFUSED = [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    (
        {
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "response_format": {"type": "json_object"},
        },
        "response_format",
    ),
    ({"temperature": 1.7}, "temperature"),
    (
        {
            "messages": [
                QUESTION,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}
                    ],
                },
            ]
        },
        None,
    ),
]


class TestRefusals:
    @pytest.mark.parametrize(("fields", "param"), REFUSED, ids=[p or "tool" for _, p in REFUSED])
    def test_what_anthropic_cannot_take_is_a_400_that_never_goes_up(
        self,
        gateway: LiveGateway,
        key: str,
        fake_anthropic: AnthropicUpstream,
        fields: dict[str, Any],
        param: str | None,
    ) -> None:
        """A 400 in OpenAI's shape naming the field; the upstream is not called."""
        state = fake_anthropic[1]
        before = len(state.requests)
        response = post(gateway, key, chat("sonnet", **fields))
        assert_openai_error(response, 400, param or "messages.[1].tool_calls")
        assert len(state.requests) == before

    @pytest.mark.parametrize(
        ("path", "body"),
        [
            ("/completions", {"model": "sonnet", "prompt": "one two"}),
            ("/embeddings", {"model": "sonnet-embed", "input": "one two"}),
        ],
        ids=["completions", "embeddings"],
    )
    def test_endpoints_other_than_chat_are_refused_naming_the_engine(
        self,
        gateway: LiveGateway,
        key: str,
        fake_anthropic: AnthropicUpstream,
        path: str,
        body: dict[str, Any],
    ) -> None:
        """Completions and embeddings on an anthropic deployment: 400, never sent up."""
        state = fake_anthropic[1]
        before = len(state.requests)
        error = assert_openai_error(post(gateway, key, body, path), 400, "model")
        assert "Anthropic engine 'claude'" in error["message"]
        assert len(state.requests) == before


STATUS_MAP = [
    (400, 400),
    (401, 502),
    (403, 502),
    (413, 400),
    (422, 400),
    (429, 429),
    (500, 502),
    (502, 502),
    (503, 503),
    (529, 503),
]


def send(gateway: LiveGateway, key: str, model: str, stream: bool) -> httpx.Response:
    """A request whose whole answer is read (a stream's error comes before its first byte)."""
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json=chat(model, stream=stream),
        timeout=15,
    ) as response:
        response.read()
    return response


class TestUpstreamErrors:
    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    @pytest.mark.parametrize(
        ("upstream", "status"), STATUS_MAP, ids=[str(s) for s, _ in STATUS_MAP]
    )
    def test_an_upstream_status_becomes_its_openai_error_and_one_error_record(
        self, gateway: LiveGateway, key: str, upstream: int, status: int, stream: bool
    ) -> None:
        """400/413/422 -> 400; 401/403 (the operator's key) -> 502; 429 -> 429;
        500/502 -> 502; 503/529 -> 503: OpenAI's shape, one error record, no tokens."""
        response = send(gateway, key, f"claude-{upstream}-{MODES[stream]}", stream)
        error = assert_openai_error(response, status)
        assert f"the fake upstream says {upstream}" in error["message"]
        assert_one_error_record(gateway, response, status)

    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_garbage_from_the_upstream_is_502(
        self, gateway: LiveGateway, key: str, stream: bool
    ) -> None:
        """A 200 whose body is not JSON, or whose stream is not SSE: 502, one record."""
        response = send(gateway, key, "claude-garbage", stream)
        assert_openai_error(response, 502)
        assert_one_error_record(gateway, response, 502)

    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_a_hung_upstream_is_504_after_the_read_timeout(
        self, gateway: LiveGateway, key: str, stream: bool
    ) -> None:
        """No byte within the engine's 2 s read timeout: 504 timeout_error, one record."""
        response = send(gateway, key, "claude-hang", stream)
        error = assert_openai_error(response, 504)
        assert error["type"] == "timeout_error"
        assert_one_error_record(gateway, response, 504)

    def test_an_error_right_after_message_start_is_an_error_before_the_first_byte(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """Overloaded just after message_start: nothing was relayed, so the client gets a
        502 in OpenAI's shape rather than a 200 stream."""
        response = send(gateway, key, "claude-early", True)
        error = assert_openai_error(response, 502)
        assert "Overloaded" in error["message"]
        assert_one_error_record(gateway, response, 502)

    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_an_unreachable_upstream_is_503(
        self, fake_upstream: Upstream, sqlite_url: str, tmp_path: Path, stream: bool
    ) -> None:
        """Nothing listening at base_url: 503 service_unavailable, one record."""
        config = anthropic_config(f"http://127.0.0.1:{free_port()}", fake_upstream[0])
        with served_gateway(sqlite_url, config, tmp_path, {KEY_ENV: SECRET}) as live:
            key = live.new_key()[0]
            response = send(live, key, "sonnet", stream)
            error = assert_openai_error(response, 503)
            assert error["type"] == "service_unavailable"
            assert_one_error_record(live, response, 503)


class TestMidStreamFailures:
    @pytest.mark.parametrize("model", ["claude-cut", "claude-error", "claude-badjson"])
    def test_a_failure_mid_stream_ends_with_an_error_event_metered_as_relayed(
        self, gateway: LiveGateway, key: str, model: str
    ) -> None:
        """200, the text before the failure, an OpenAI error event, no [DONE]; the record
        is an estimated error with the words relayed and message_start's exact prompt."""
        response, payloads = stream_events(gateway, key, chat(model))
        assert response.status_code == 200
        assert "[DONE]" not in payloads
        *relayed, last = [orjson.loads(p) for p in payloads]
        assert "".join(map(content_of, relayed)) == "alpha bravo charlie "
        assert set(last) == {"error"}
        assert set(last["error"]) == {"message", "type", "param", "code"}
        assert last["error"]["type"] == "upstream_error"
        record = record_of(gateway, response)
        assert (record.status, record.http_status, record.estimated) == ("error", 502, True)
        assert (record.prompt_tokens, record.completion_tokens) == (PROMPT_TOKENS, 3)

    def test_an_error_event_carries_anthropic_message(self, gateway: LiveGateway, key: str) -> None:
        """The overloaded message of event: error reaches the client's error event."""
        _, payloads = stream_events(gateway, key, chat("claude-error"))
        assert "Overloaded" in orjson.loads(payloads[-1])["error"]["message"]

    def test_a_stream_that_ends_without_message_stop_is_an_error(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """The whole text and its finish, then an error event instead of [DONE]; the usage of
        message_delta is kept (not estimated)."""
        response, payloads = stream_events(gateway, key, chat("claude-nostop"))
        assert response.status_code == 200
        assert "[DONE]" not in payloads
        *relayed, last = [orjson.loads(p) for p in payloads]
        assert "".join(map(content_of, relayed)) == WHOLE_ANSWER
        assert "message_stop" in last["error"]["message"]
        record = record_of(gateway, response)
        assert (record.status, record.estimated) == ("error", False)
        assert record.completion_tokens == FAKE_ANSWER_WORDS_COUNT


class TestFailover:
    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_an_overloaded_anthropic_deployment_is_passed_over_for_the_next_one(
        self,
        gateway: LiveGateway,
        fake_anthropic: AnthropicUpstream,
        fake_upstream: Upstream,
        stream: bool,
    ) -> None:
        """529 from Anthropic: the client gets the next deployment's whole answer, and the
        record names the deployment that served it."""
        anthropic_state, openai_state = fake_anthropic[1], fake_upstream[1]
        secret, key_id, _ = gateway.new_key()
        asked_before, fallback_before = len(anthropic_state.requests), len(openai_state.requests)
        response = send(gateway, secret, "overloaded-then-fake", stream)
        assert response.status_code == 200, response.text
        assert response.headers["x-tokenmill-deployment"] == "dep-fake"
        assert [r["model"] for r in anthropic_state.requests[asked_before:]] == ["claude-529"]
        assert [r["model"] for r in openai_state.requests[fallback_before:]] == ["fake"]
        if stream:
            assert response.text.rstrip().endswith("data: [DONE]")
        (record,) = gateway.records(key_id)
        assert (record.deployment, record.status) == ("dep-fake", "ok")

    def test_a_stream_overloaded_after_message_start_fails_over(
        self, gateway: LiveGateway, fake_anthropic: AnthropicUpstream
    ) -> None:
        """An error event right after message_start, before any text: the next deployment
        serves the stream from its start."""
        state = fake_anthropic[1]
        secret, key_id, _ = gateway.new_key()
        before = len(state.requests)
        response = send(gateway, secret, "early-error-then-fake", True)
        assert response.status_code == 200
        assert response.headers["x-tokenmill-deployment"] == "dep-fake"
        assert [r["model"] for r in state.requests[before:]] == ["claude-early"]
        assert "error" not in response.text
        (record,) = gateway.records(key_id)
        assert (record.deployment, record.status) == ("dep-fake", "ok")


class TestApiKey:
    def test_the_key_never_appears_in_logs_or_answers(
        self,
        gateway: LiveGateway,
        key: str,
        fake_anthropic: AnthropicUpstream,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Across answers, failures and cut streams the key from the environment goes up as
        x-api-key and nowhere else: not in a log line, a body or a header; no 500 is logged."""
        caplog.set_level(logging.DEBUG)
        state = fake_anthropic[1]
        before = len(state.headers)
        models = (
            "sonnet",
            "claude-401-{mode}",
            "claude-500-{mode}",
            "claude-garbage",
            "claude-cut",
        )
        seen = [
            send(gateway, key, model.format(mode=MODES[stream]), stream)
            for model in models
            for stream in (False, True)
        ]
        assert [h["x-api-key"] for h in state.headers[before:]] == [SECRET] * len(seen)
        assert SECRET not in caplog.text
        assert "unhandled error" not in caplog.text
        for response in seen:
            assert response.status_code != 500
            assert SECRET not in response.text
            assert SECRET not in str(response.headers)

    def test_a_key_the_upstream_refuses_is_502_without_either_key(
        self,
        fake_anthropic: AnthropicUpstream,
        fake_upstream: Upstream,
        sqlite_url: str,
        tmp_path: Path,
    ) -> None:
        """A wrong operator key is not the client's fault: 502 upstream_error, and the
        message names neither key."""
        wrong = "sk-ant-wrong-" + secrets.token_hex(8)
        config = anthropic_config(fake_anthropic[0], fake_upstream[0])
        with served_gateway(sqlite_url, config, tmp_path, {KEY_ENV: wrong}) as live:
            key = live.new_key()[0]
            response = post(live, key, chat("sonnet"))
        error = assert_openai_error(response, 502)
        assert error["type"] == "upstream_error"
        assert "x-api-key" in error["message"]
        assert wrong not in response.text
        assert SECRET not in response.text
        assert fake_anthropic[1].headers[-1]["x-api-key"] == wrong

    def test_the_gateway_will_not_start_without_the_key(
        self,
        fake_anthropic: AnthropicUpstream,
        fake_upstream: Upstream,
        sqlite_url: str,
        tmp_path: Path,
    ) -> None:
        """The environment variable named in the config is unset: a ConfigurationError that
        names it, before anything is served."""
        config = anthropic_config(fake_anthropic[0], fake_upstream[0])
        settings = Settings(
            home=tmp_path, database_url=sqlite_url, config=parse_config(config), environ={}
        )
        with pytest.raises(ConfigurationError, match=KEY_ENV) as caught:
            create_app(settings)
        assert caught.value.param == "engines.claude.api_key_env"
