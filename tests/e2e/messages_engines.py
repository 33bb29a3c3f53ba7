"""What the Anthropic Messages end-to-end tests share: one gateway serving the surface over
each engine (the sim, a fake OpenAI-compatible upstream, the fake Anthropic API), priced so
that every answer moves a balance; official ``anthropic`` SDK clients of funded accounts
that see the bodies they send and the request ids they get back; and the checks of usage
and charge.

Each test module starts its own upstreams and gateway with these (one gateway a module) and
gets one client per test, of an account of its own: the usage records and balance of a test
are its account's.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anthropic
import httpx
import httpx2
from anthropic.types import Message, MessageParam, ToolParam, Usage

from tests.conftest import LiveGateway, gateway_config
from tests.e2e.balances import balance_of, settled_balance_nano
from tests.integration.test_anthropic_engine import served_gateway
from tokenmill.testing import (
    AgentScript,
    FakeAnthropicState,
    FakeUpstreamState,
    ServerThread,
    fake_anthropic_app,
    fake_upstream_app,
)
from tokenmill.usage import UsageRecord

NANO = 1_000_000_000
TOP_UP = "10.00"
KEY_ENV = "TM_TEST_MESSAGES_ANTHROPIC_KEY"
OUTPUT_TOKENS_MAX = 4096  # the priced models' cap
MAX_TOKENS = 1024  # what the tests ask for, unless they say
# Per million tokens: 1.00 fresh input, 0.50 read from a cache, 1.25 written to one, 2.00
# output: 1000, 500, 1250 and 2000 nano-units a token.
PRICE = {"input": "1.00", "cached_input": "0.50", "cache_write_input": "1.25", "output": "2.00"}
INPUT_NANO_PER_TOKEN = 1_000
CACHED_INPUT_NANO_PER_TOKEN = 500
CACHE_WRITE_NANO_PER_TOKEN = 1_250
OUTPUT_NANO_PER_TOKEN = 2_000
# What the fake OpenAI-compatible upstream's agent reports beside what it answers.
AGENT_CACHED_TOKENS = 7
AGENT_REASONING_TOKENS = 5

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "unit": {"type": "string", "enum": ["c", "f"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
# A second tool whose input the scripted upstreams can also answer (the fake OpenAI agent has
# one set of arguments for every tool), so only its name tells the two apart.
FORECAST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "unit": {"type": "string", "enum": ["c", "f"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": WEATHER_SCHEMA,
}
FORECAST_TOOL: ToolParam = {
    "name": "get_forecast",
    "description": "The weather of the days to come in a city.",
    "input_schema": FORECAST_SCHEMA,
}
TOOLS: list[ToolParam] = [WEATHER_TOOL, FORECAST_TOOL]
SCHEMA_OF = {"get_weather": WEATHER_SCHEMA, "get_forecast": FORECAST_SCHEMA}
ARGUMENTS = {"city": "Paris", "unit": "c"}
AGENT_TEXT = "It is 21 degrees and sunny in Paris today."
AGENT_THINKING = "The user asks for the weather in Paris, so I answer with it."
QUESTION = "What is the weather in Paris right now?"
TELL_ME = "Tell me how the gateway meters tokens."
TOOL_OUTPUT = json.dumps({"temperature_c": 21, "conditions": "sunny"})
REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "temperature_c": {"type": "number", "minimum": -60, "maximum": 60},
        "conditions": {"type": "string", "enum": ["sunny", "cloudy", "rain"]},
    },
    "required": ["city", "temperature_c", "conditions"],
    "additionalProperties": False,
}
REPORT = {"city": "Paris", "temperature_c": 21.5, "conditions": "sunny"}
ASKED: list[MessageParam] = [{"role": "user", "content": QUESTION}]
TOLD: list[MessageParam] = [{"role": "user", "content": TELL_ME}]


@dataclass
class Upstreams:
    """The two fake upstreams of a module, and what each received."""

    openai_url: str
    openai: FakeUpstreamState
    anthropic_url: str
    anthropic: FakeAnthropicState
    anthropic_key: str


@contextmanager
def started_upstreams() -> Iterator[Upstreams]:
    """A fake OpenAI-compatible upstream (its agent scripted with ARGUMENTS, AGENT_TEXT,
    AGENT_THINKING, the REPORT and cached and reasoning tokens) and a fake Anthropic API
    (its tools' inputs and the REPORT scripted), on loopback."""
    script = AgentScript(
        tool_arguments=dict(ARGUMENTS),
        tool_call_id="call_weather_0001",
        text=AGENT_TEXT,
        json_instance=dict(REPORT),
        cached_tokens=AGENT_CACHED_TOKENS,
        reasoning_tokens=AGENT_REASONING_TOKENS,
        reasoning_text=AGENT_THINKING,
    )
    chat = FakeUpstreamState(hang_s=5.0, agent=script)
    key = "sk-ant-messages-" + secrets.token_hex(16)
    inputs = {"get_weather": dict(ARGUMENTS), "get_forecast": dict(ARGUMENTS)}
    messages = FakeAnthropicState(
        api_key=key, hang_s=5.0, tool_inputs=inputs, json_instance=dict(REPORT)
    )
    with (
        ServerThread(fake_upstream_app(chat)) as openai_server,
        ServerThread(fake_anthropic_app(messages)) as anthropic_server,
    ):
        yield Upstreams(openai_server.url + "/v1", chat, anthropic_server.url, messages, key)


@dataclass(frozen=True)
class Engine:
    """One engine as the tests drive it: its priced model, the priced model that answers
    up to its output cap (the fake agent ignores caps), and what its upstream received
    (None for the sim, which has none)."""

    name: str
    model: str
    capped_model: str
    received: Callable[[], list[dict[str, Any]]] | None

    def last_received(self) -> dict[str, Any]:
        assert self.received is not None, f"the {self.name} engine has no upstream"
        bodies = self.received()
        assert bodies, "the upstream received nothing"
        return bodies[-1]

    def received_count(self) -> int:
        return 0 if self.received is None else len(self.received())


ENGINE_NAMES = ("sim", "openai", "anthropic")
# The deployment model the priced Anthropic model goes up as (it reports cache reads and
# writes in every usage).
CLAUDE_UPSTREAM_MODEL = "claude-cached"
MODES = ("plain", "stream")


def engine_named(name: str, upstreams: Upstreams) -> Engine:
    if name == "sim":
        return Engine("sim", "sim-priced", "sim-priced", None)
    if name == "openai":
        return Engine("openai", "agent-priced", "fake-priced", lambda: upstreams.openai.requests)
    assert name == "anthropic"
    return Engine(
        "anthropic", "claude-priced", "claude-priced", lambda: upstreams.anthropic.requests
    )


def priced(deployment: str, **options: Any) -> dict[str, Any]:
    return {
        "deployments": [deployment],
        "output_tokens_max": OUTPUT_TOKENS_MAX,
        "price": dict(PRICE),
        **options,
    }


def messages_config(upstreams: Upstreams, **limits: Any) -> dict[str, Any]:
    """The configuration of the module's gateway: the instant sim, one priced model per
    engine (``sim-priced``, ``agent-priced``, ``claude-priced``), a priced one over the plain
    ``fake`` upstream model (which answers exactly its cap), and priced Anthropic models,
    one per mode (``-plain``, ``-stream``), whose upstream answers 529
    (``claude-overloaded-*``), 429 (``claude-busy-*``) or an error event right after
    ``message_start`` (``claude-early-*``), and one whose streams fail halfway through the
    text with an error event (``claude-midway``)."""
    # Keys and top-ups reach the gateway within a poll: a short one keeps each test fast.
    limits.setdefault("change_poll_interval_ms", 20)
    limits.setdefault("breaker_failures_count_max", 1000)  # failing models stay failing
    config = gateway_config(upstreams.openai_url, **limits)
    config["engines"]["claude"] = {
        "kind": "anthropic",
        "base_url": upstreams.anthropic_url,
        "api_key_env": KEY_ENV,
        "timeout_s_read": 5,
        "timeout_s_connect": 2,
    }
    config["deployments"]["dep-fake-agent"] = {"engine": "up", "model": "fake-agent"}
    config["deployments"]["ant-claude"] = {"engine": "claude", "model": CLAUDE_UPSTREAM_MODEL}
    config["models"] |= {
        "sim-priced": priced("sim-8b", description="The simulated 8B model, priced."),
        "agent-priced": priced("dep-fake-agent"),
        "fake-priced": priced("dep-fake"),
        "claude-priced": priced("ant-claude"),
    }
    # A deployment per failure and mode: a 429's Retry-After opens its breaker a while.
    for name, upstream_model in (
        ("claude-overloaded", "claude-529"),
        ("claude-busy", "claude-429"),
        ("claude-early", "claude-early"),
    ):
        for mode in MODES:
            config["deployments"][f"ant-{name}-{mode}"] = {
                "engine": "claude",
                "model": upstream_model,
            }
            config["models"][f"{name}-{mode}"] = priced(f"ant-{name}-{mode}")
    config["deployments"]["ant-claude-midway"] = {"engine": "claude", "model": "claude-error"}
    config["models"]["claude-midway"] = priced("ant-claude-midway")
    return config


@contextmanager
def messages_gateway(
    upstreams: Upstreams, home: Path, config: dict[str, Any]
) -> Iterator[LiveGateway]:
    """A live gateway of ``config`` (``messages_config``) on a SQLite file in ``home``."""
    url = f"sqlite:///{home / 'tokenmill.db'}"
    with served_gateway(url, config, home, {KEY_ENV: upstreams.anthropic_key}) as live:
        yield live


def fund(gateway: LiveGateway, account: str, amount: str) -> None:
    """Top ``account`` up with ``amount`` through the admin API, once the gateway shows it."""
    response = httpx.post(
        f"{gateway.url}/admin/v1/accounts/{account}/transfers",
        json={"amount": amount, "kind": "topup", "idempotency_key": f"seed-{account}"},
        headers={"Authorization": f"Bearer {gateway.admin_token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 5
    while balance_of(gateway, account)["balance_nano"] == 0:
        assert time.monotonic() < deadline, "the gateway never showed the top-up"
        time.sleep(0.02)


@dataclass
class Client:
    """An SDK client of an account of its own, the requests it sent and the request ids it
    got back (httpx hooks see each on the way)."""

    sdk: anthropic.Anthropic
    gateway: LiveGateway
    account: str
    account_id: str
    key_id: str
    secret: str
    requests: list[httpx2.Request] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)

    @property
    def last_request_id(self) -> str:
        assert self.request_ids, "no response came back"
        return self.request_ids[-1]

    @property
    def last_raw(self) -> bytes:
        """The body of the last request the SDK sent, as it went."""
        assert self.requests, "the SDK sent nothing"
        return self.requests[-1].content

    @property
    def last_sent(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.last_raw)
        return found

    def balance_nano(self) -> int:
        return settled_balance_nano(self.gateway, self.account)

    def record(self) -> UsageRecord:
        """The usage record of the last request."""
        return self.gateway.record(self.last_request_id)

    def records(self) -> list[UsageRecord]:
        return self.gateway.records(self.key_id)


# How an SDK client presents its key: the SDK's ``api_key`` (this SDK sends it as
# ``Authorization: Bearer``), its ``auth_token`` (``Authorization: Bearer``), or the
# ``x-api-key`` header that Anthropic's API documents (given as a default header, with no
# SDK credential at all).
KeyWay = Literal["api_key", "auth_token", "x-api-key"]


def sdk_of(
    gateway: LiveGateway,
    secret: str,
    sent: list[httpx2.Request],
    ids: list[str],
    way: KeyWay = "api_key",
) -> anthropic.Anthropic:
    """The official SDK on the gateway with ``secret`` presented ``way``, no retries, and
    hooks that keep each request sent and request id got."""

    def keep_request(request: httpx2.Request) -> None:
        sent.append(request)

    def keep_id(response: httpx2.Response) -> None:
        if "x-request-id" in response.headers:
            ids.append(response.headers["x-request-id"])

    # The SDK's own HTTP client class, with hooks that see each request and response.
    http = anthropic.DefaultHttpxClient(
        event_hooks={"request": [keep_request], "response": [keep_id]}, timeout=10
    )
    options: dict[str, Any] = (
        {"default_headers": {"x-api-key": secret}} if way == "x-api-key" else {way: secret}
    )
    return anthropic.Anthropic(
        base_url=gateway.url, max_retries=0, timeout=10, http_client=http, **options
    )


@contextmanager
def client_of(
    gateway: LiveGateway,
    account: str | None = None,
    amount: str | None = TOP_UP,
    *,
    way: KeyWay = "api_key",
    **key_options: Any,
) -> Iterator[Client]:
    """A client of a new account (its name random unless given), topped up with ``amount``
    (None: not at all), its key presented ``way``."""
    name = account or "msg-" + secrets.token_hex(5)
    secret, key_id, account_id = gateway.new_key(name, **key_options)
    if amount is not None:
        fund(gateway, name, amount)
    sent: list[httpx2.Request] = []
    ids: list[str] = []
    with sdk_of(gateway, secret, sent, ids, way) as sdk:
        yield Client(sdk, gateway, name, account_id, key_id, secret, sent, ids)


def answer(client: Client, *, stream: bool, **options: Any) -> Message:
    """One message, whole or accumulated by the SDK's stream helper from its events."""
    options.setdefault("max_tokens", MAX_TOKENS)
    if not stream:
        return client.sdk.messages.create(**options)
    with client.sdk.messages.stream(**options) as events:
        return events.get_final_message()


def streamed_events(client: Client, **options: Any) -> list[Any]:
    """The raw events of one streamed message (``create(stream=True)``)."""
    options.setdefault("max_tokens", MAX_TOKENS)
    return list(client.sdk.messages.create(stream=True, **options))


def text_of(message: Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def blocks_of(message: Message, kind: str) -> list[Any]:
    return [block for block in message.content if block.type == kind]


def assert_usage_is_the_record(usage: Usage, record: UsageRecord) -> None:
    """The usage the client got is the usage record's, token kind by token kind (Anthropic
    counts cache reads and writes apart from ``input_tokens``)."""
    shown = (
        usage.input_tokens,
        usage.cache_read_input_tokens,
        usage.cache_creation_input_tokens,
        usage.output_tokens,
    )
    kept = (
        record.prompt_tokens - record.cached_tokens - record.cache_write_tokens,
        record.cached_tokens,
        record.cache_write_tokens,
        record.completion_tokens,
    )
    assert shown == kept
    assert not record.estimated
    assert record.endpoint == "messages"


def hand_priced_nano(record: UsageRecord) -> int:
    """The charge of a record's tokens at PRICE: every output token (thinking among them)
    once, each prompt token at the price of its kind."""
    fresh = record.prompt_tokens - record.cached_tokens - record.cache_write_tokens
    return (
        fresh * INPUT_NANO_PER_TOKEN
        + record.cached_tokens * CACHED_INPUT_NANO_PER_TOKEN
        + record.cache_write_tokens * CACHE_WRITE_NANO_PER_TOKEN
        + record.completion_tokens * OUTPUT_NANO_PER_TOKEN
    )


def assert_billed(client: Client, before_nano: int, record: UsageRecord) -> None:
    """The record's charge is its tokens' price, and the balance fell by exactly it."""
    assert record.status == "ok"
    assert record.charge_nano > 0
    assert record.charge_nano == hand_priced_nano(record)
    assert record.loss_nano == 0
    assert before_nano - client.balance_nano() == record.charge_nano


def asked_directly(upstreams: Upstreams, body: dict[str, Any]) -> bytes:
    """What the fake Anthropic API answers ``body`` when asked directly (not through the
    gateway), streamed or not: its bytes, read to the end."""
    headers = {
        "x-api-key": upstreams.anthropic_key,
        "anthropic-version": upstreams.anthropic.version,
        "content-type": "application/json",
    }
    response = httpx.post(
        upstreams.anthropic_url + "/v1/messages", json=body, headers=headers, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.content
