"""What the OpenAI Responses end-to-end tests share: the three engines one gateway serves
the surface over (the sim, a fake OpenAI-compatible upstream, the fake Anthropic API),
priced so that every answer moves a balance; SDK clients of funded accounts that see the
bodies they send and the request ids they get back; and the checks of usage and charge.

Each test module starts its own upstreams and gateway with these (one gateway a module)
and gets one client per test, of an account of its own: the usage records, balance and
stored responses of a test are its account's.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
from openai import OpenAI
from openai.types.responses import FunctionToolParam, Response, ResponseUsage
from sqlalchemy import func, select

from tests.conftest import LiveGateway, gateway_config
from tests.e2e.balances import balance_of, settled_balance_nano
from tests.integration.test_anthropic_engine import served_gateway
from tokenmill.store.tables import stored_responses
from tokenmill.testing import (
    AgentScript,
    FakeAnthropicState,
    FakeUpstreamState,
    ServerThread,
    fake_anthropic_app,
    fake_upstream_app,
)
from tokenmill.usage import UsageRecord

TOP_UP = "10.00"
KEY_ENV = "TM_TEST_RESPONSES_ANTHROPIC_KEY"
OUTPUT_TOKENS_MAX = 4096  # the priced models' cap: room for a cap the funds lower
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

WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "unit": {"type": "string", "enum": ["c", "f"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
# A second tool whose arguments the scripted upstreams can also answer (the fake OpenAI
# agent has one set of arguments for every tool), so only its name tells the two apart.
FORECAST_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "unit": {"type": "string", "enum": ["c", "f"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER_TOOL: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": WEATHER_PARAMETERS,
    "strict": True,
}
FORECAST_TOOL: FunctionToolParam = {
    "type": "function",
    "name": "get_forecast",
    "description": "The weather of the days to come in a city.",
    "parameters": FORECAST_PARAMETERS,
    "strict": False,
}
PARAMETERS_OF = {"get_weather": WEATHER_PARAMETERS, "get_forecast": FORECAST_PARAMETERS}
ARGUMENTS = {"city": "Paris", "unit": "c"}
AGENT_TEXT = "It is 21 degrees and sunny in Paris today."
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
REPORT_FORMAT: dict[str, Any] = {
    "format": {"type": "json_schema", "name": "report", "schema": REPORT_SCHEMA, "strict": True}
}


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
    """A fake OpenAI-compatible upstream (its agent scripted with ARGUMENTS, AGENT_TEXT, the
    REPORT and cached and reasoning tokens) and a fake Anthropic API, on loopback."""
    script = AgentScript(
        tool_arguments=dict(ARGUMENTS),
        tool_call_id="call_weather_0001",
        text=AGENT_TEXT,
        json_instance=dict(REPORT),
        cached_tokens=AGENT_CACHED_TOKENS,
        reasoning_tokens=AGENT_REASONING_TOKENS,
    )
    chat = FakeUpstreamState(hang_s=5.0, agent=script)
    key = "sk-ant-responses-" + secrets.token_hex(16)
    inputs = {"get_weather": dict(ARGUMENTS), "get_forecast": dict(ARGUMENTS), "report": REPORT}
    inputs["Report"] = REPORT  # the SDK's parse helper names the format after its class
    messages = FakeAnthropicState(api_key=key, hang_s=5.0, tool_inputs=inputs)
    with (
        ServerThread(fake_upstream_app(chat)) as openai_server,
        ServerThread(fake_anthropic_app(messages)) as anthropic_server,
    ):
        yield Upstreams(openai_server.url + "/v1", chat, anthropic_server.url, messages, key)


@dataclass(frozen=True)
class Engine:
    """One engine as the tests drive it: its priced model, the priced model that answers
    exactly its output cap (the fake agent ignores caps), and what its upstream received
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


def engine_named(name: str, upstreams: Upstreams) -> Engine:
    if name == "sim":
        return Engine("sim", "sim-priced", "sim-priced", None)
    if name == "openai":
        return Engine("openai", "agent-priced", "fake-priced", lambda: upstreams.openai.requests)
    assert name == "anthropic"
    return Engine(
        "anthropic", "claude-priced", "claude-priced", lambda: upstreams.anthropic.requests
    )


@contextmanager
def responses_gateway(upstreams: Upstreams, home: Path, **limits: Any) -> Iterator[LiveGateway]:
    """A live gateway (instant sim) with one priced model per engine, and priced ones over
    the plain ``fake`` upstream model, which answers exactly its cap, and ``fake-slow``,
    which streams a token every ``slow_s``."""
    # Keys and top-ups reach the gateway within a poll: a short one keeps each test fast.
    limits.setdefault("change_poll_interval_ms", 20)
    config = gateway_config(upstreams.openai_url, **limits)
    config["engines"]["claude"] = {
        "kind": "anthropic",
        "base_url": upstreams.anthropic_url,
        "api_key_env": KEY_ENV,
        "timeout_s_read": 5,
        "timeout_s_connect": 2,
    }
    config["deployments"]["dep-fake-agent"] = {"engine": "up", "model": "fake-agent"}
    # claude-cached reports prompt-cache reads and writes in every usage.
    config["deployments"]["ant-claude"] = {"engine": "claude", "model": "claude-cached"}
    for name, deployment in (
        ("sim-priced", "sim-8b"),
        ("agent-priced", "dep-fake-agent"),
        ("fake-priced", "dep-fake"),
        ("slow-priced", "dep-fake-slow"),
        ("claude-priced", "ant-claude"),
    ):
        config["models"][name] = {
            "deployments": [deployment],
            "output_tokens_max": OUTPUT_TOKENS_MAX,
            "price": dict(PRICE),
        }
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
    """An SDK client of an account of its own, and the request ids it got back (an httpx
    hook sees each response on the way)."""

    sdk: OpenAI
    gateway: LiveGateway
    account: str
    account_id: str
    key_id: str
    request_ids: list[str] = field(default_factory=list)

    @property
    def last_request_id(self) -> str:
        assert self.request_ids, "no response came back"
        return self.request_ids[-1]

    def balance_nano(self) -> int:
        return settled_balance_nano(self.gateway, self.account)

    def record(self) -> UsageRecord:
        """The usage record of the last request."""
        return self.gateway.record(self.last_request_id)

    def records(self) -> list[UsageRecord]:
        return self.gateway.records(self.key_id)

    def stored_count(self) -> int:
        """The responses the store keeps for the account."""
        with self.gateway.db.connect() as connection:
            query = select(func.count()).select_from(stored_responses)
            counted: int = connection.execute(
                query.where(stored_responses.c.account_id == self.account_id)
            ).scalar_one()
        return counted


def sdk_of(gateway: LiveGateway, secret: str, ids: list[str]) -> OpenAI:
    def keep_id(response: httpx.Response) -> None:
        if "x-request-id" in response.headers:
            ids.append(response.headers["x-request-id"])

    # The SDK's own HTTP client class, with a hook that sees each response.
    http = openai.DefaultHttpxClient(event_hooks={"response": [keep_id]}, timeout=10)
    return OpenAI(
        base_url=gateway.url + "/v1", api_key=secret, max_retries=0, timeout=10, http_client=http
    )


@contextmanager
def client_of(
    gateway: LiveGateway, account: str | None = None, amount: str | None = TOP_UP
) -> Iterator[Client]:
    """A client of a new account (its name random unless given), topped up with
    ``amount`` (None: not at all)."""
    name = account or "resp-" + secrets.token_hex(5)
    secret, key_id, account_id = gateway.new_key(name)
    if amount is not None:
        fund(gateway, name, amount)
    ids: list[str] = []
    with sdk_of(gateway, secret, ids) as sdk:
        yield Client(sdk, gateway, name, account_id, key_id, ids)


def streamed(client: Client, **options: Any) -> list[Any]:
    """The events of one streamed response, checked to be in order."""
    events = list(client.sdk.responses.create(stream=True, **options))
    assert_event_order(events)
    return events


def answer(client: Client, *, stream: bool, **options: Any) -> Response:
    """One response, whole or as the last event of a stream (``response.completed`` or
    ``response.incomplete``), whose events must be in order (``assert_event_order``)."""
    if not stream:
        return client.sdk.responses.create(**options)
    final: Response = streamed(client, **options)[-1].response
    return final


def assert_event_order(events: list[Any]) -> None:
    """Numbered from 0 without a gap; created, in_progress, then each output item added,
    filled and done in turn (a message's content part inside it), then the one last event
    carrying the whole response, its output the items done."""
    assert [event.sequence_number for event in events] == list(range(len(events)))
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert all(
        not kind.startswith(("response.completed", "response.incomplete")) for kind in kinds[:-1]
    )
    done: list[Any] = []
    open_item: Any = None
    for event in events[2:-1]:
        if event.type == "response.output_item.added":
            assert open_item is None, "an item was added while another was open"
            assert event.output_index == len(done)
            open_item = event.item
        elif event.type == "response.output_item.done":
            assert open_item is not None and event.item.id == open_item.id
            done.append(event.item)
            open_item = None
        else:
            assert open_item is not None, f"{event.type} outside any item"
            assert event.item_id == open_item.id
    assert open_item is None
    assert events[-1].response.output == done


def message_events(events: list[Any]) -> list[str]:
    """The kinds of the events of a stream that answers one message, the text deltas
    folded into one ``...delta`` entry."""
    kinds: list[str] = []
    for event in events:
        kind = event.type
        if kind == "response.output_text.delta" and kinds[-1:] == [kind]:
            continue
        kinds.append(kind)
    return kinds


def output_of(response: Response) -> list[Any]:
    """The output items of ``response``, to read whatever kind each is."""
    return list(response.output)


def stored_flag(response: Response) -> Any:
    """The response's ``store`` (a field of OpenAI's objects the SDK's model leaves extra)."""
    return (response.model_extra or {}).get("store")


def function_calls(response: Response) -> list[Any]:
    return [item for item in response.output if item.type == "function_call"]


def assert_valid_calls(response: Response) -> list[Any]:
    """The response is calls of the tools offered, each of arguments valid against its
    tool's schema; returns the calls."""
    calls = function_calls(response)
    assert calls, f"no function call in {response.output}"
    for call in calls:
        assert call.call_id and call.status == "completed"
        validator = jsonschema.Draft202012Validator(PARAMETERS_OF[call.name])
        validator.validate(json.loads(call.arguments))
    return calls


def call_outputs(response: Response) -> list[dict[str, Any]]:
    """A ``function_call_output`` item for each call of ``response``."""
    return [
        {"type": "function_call_output", "call_id": call.call_id, "output": TOOL_OUTPUT}
        for call in function_calls(response)
    ]


def assert_usage_is_the_record(usage: ResponseUsage | None, record: UsageRecord) -> None:
    """The usage the client got is the usage record's, token kind by token kind."""
    assert usage is not None
    shown = (
        usage.input_tokens,
        usage.input_tokens_details.cached_tokens,
        usage.input_tokens_details.cache_write_tokens,
        usage.output_tokens,
        usage.output_tokens_details.reasoning_tokens,
        usage.total_tokens,
    )
    kept = (
        record.prompt_tokens,
        record.cached_tokens,
        record.cache_write_tokens,
        record.completion_tokens,
        record.reasoning_tokens,
        record.prompt_tokens + record.completion_tokens,
    )
    assert shown == kept
    assert not record.estimated
    assert record.endpoint == "responses"


def hand_priced_nano(record: UsageRecord) -> int:
    """The charge of a record's tokens at PRICE: every output token (reasoning ones among
    them) once, each prompt token at the price of its kind."""
    fresh = record.prompt_tokens - record.cached_tokens - record.cache_write_tokens
    return (
        fresh * INPUT_NANO_PER_TOKEN
        + record.cached_tokens * CACHED_INPUT_NANO_PER_TOKEN
        + record.cache_write_tokens * CACHE_WRITE_NANO_PER_TOKEN
        + record.completion_tokens * OUTPUT_NANO_PER_TOKEN
    )


def assert_billed(client: Client, before_nano: int, record: UsageRecord) -> None:
    """The record's charge is its tokens' price, and the balance fell by exactly it."""
    assert record.charge_nano > 0
    assert record.charge_nano == hand_priced_nano(record)
    assert record.loss_nano == 0
    assert before_nano - client.balance_nano() == record.charge_nano


def assert_changed_nothing(client: Client, before_nano: int) -> None:
    """No usage record, no stored response, the balance as it was."""
    assert client.records() == []
    assert client.stored_count() == 0
    assert client.balance_nano() == before_nano


def trace_of(client: Client) -> tuple[int, list[UsageRecord], int]:
    """What a request may leave in the account: its balance, usage records and stored
    responses (compare before and after one that must leave nothing)."""
    return client.balance_nano(), client.records(), client.stored_count()


def texts_received(body: dict[str, Any]) -> list[str]:
    """Every text an upstream request carried, in order: chat messages' contents, tool
    calls' arguments, Anthropic's text, tool_use inputs and tool_result texts."""
    texts: list[str] = []
    for message in body.get("messages", ()):
        texts.extend(_texts_of(message.get("content")))
        for call in message.get("tool_calls") or ():
            texts.append(call["function"]["arguments"])
    return texts


def _texts_of(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    texts: list[str] = []
    for block in content or ():
        if block.get("type") == "text":
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            texts.append(json.dumps(block["input"], separators=(",", ":")))
        elif block.get("type") == "tool_result":
            texts.extend(_texts_of(block.get("content")))
    return texts


def loop_received(engine: Engine) -> tuple[list[tuple[str, str, Any]], dict[str, str]]:
    """The calls (id, name, arguments) and the results (by call id) of the last request the
    engine's upstream received, read from chat messages or Anthropic's blocks."""
    calls: list[tuple[str, str, Any]] = []
    results: dict[str, str] = {}
    for message in engine.last_received()["messages"]:
        content = message.get("content")
        for call in message.get("tool_calls") or ():
            function = call["function"]
            calls.append((call["id"], function["name"], json.loads(function["arguments"])))
        if message["role"] == "tool":
            results[message["tool_call_id"]] = content
        for block in content if isinstance(content, list) else ():
            if block.get("type") == "tool_use":
                calls.append((block["id"], block["name"], block["input"]))
            elif block.get("type") == "tool_result":
                results[block["tool_use_id"]] = "".join(_texts_of(block.get("content")))
    return calls, results


def assert_upstream_got_the_loop(engine: Engine, calls: list[Any]) -> None:
    """The fake upstream received each call (id, name, arguments) and its output."""
    if engine.received is None:
        return
    got_calls, got_results = loop_received(engine)
    assert got_calls == [(c.call_id, c.name, json.loads(c.arguments)) for c in calls]
    assert got_results == {call.call_id: TOOL_OUTPUT for call in calls}
