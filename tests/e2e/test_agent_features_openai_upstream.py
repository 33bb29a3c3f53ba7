"""The agent features through the ``openai`` engine: the official openai SDK against a live
gateway in front of a fake OpenAI-compatible upstream on loopback (``fake-agent``, scripted
by ``AgentScript``). The gateway passes the client's body up intact and relays the answer:
a two-turn tool loop, streamed and not, structured output and log probabilities, and usage
records that keep the upstream's cached and reasoning tokens.

One upstream and one gateway serve the module; the SDK's own requests are captured on the
way out (an httpx hook), so "intact" means the upstream got what the SDK sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import jsonschema
import openai
import pytest
from openai import OpenAI
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)
from pydantic import BaseModel

from tests.conftest import LiveGateway, gateway_config, live_gateway
from tests.e2e.balances import balance_of, settled_balance_nano
from tokenmill.testing import AgentScript, FakeUpstreamState, ServerThread, fake_upstream_app

NANO = 1_000_000_000
CACHED_TOKENS = 7
REASONING_TOKENS = 5
# 1.00 per million fresh input tokens, 0.50 per million cached ones, 2.00 per million output
# tokens: 1000, 500 and 2000 nano-units a token.
PRICE = {"input": "1.00", "cached_input": "0.50", "output": "2.00"}
INPUT_NANO_PER_TOKEN = 1_000
CACHED_INPUT_NANO_PER_TOKEN = 500
OUTPUT_NANO_PER_TOKEN = 2_000
# What the gateway may change on the way up: the upstream's model name, the output cap, and
# the usage it asks a stream for.
CHANGED_BY_THE_GATEWAY = ("model", "max_tokens", "max_completion_tokens", "stream_options")

WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["c", "f"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "strict": True,
        "parameters": WEATHER_PARAMETERS,
    },
}
CLOCK_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_local_time",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
            "additionalProperties": False,
        },
    },
}
ARGUMENTS = {"city": "Paris", "unit": "c"}
ASK_WEATHER: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a weather assistant. Use the tools."},
    {"role": "user", "content": "What is the weather in Paris right now?"},
]
ANSWER_TEXT = "It is 21 degrees and sunny in Paris."


class Forecast(BaseModel):
    city: str
    temperature_c: float
    conditions: Literal["sunny", "cloudy", "rain"]


FORECAST = {"city": "Paris", "temperature_c": 21.5, "conditions": "sunny"}
FORECAST_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "forecast",
        "strict": True,
        "schema": {
            **Forecast.model_json_schema(),
            "additionalProperties": False,
        },
    },
}


@dataclass
class Upstream:
    url: str
    state: FakeUpstreamState


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    """A fake OpenAI-compatible upstream of the module's own, its agent scripted."""
    script = AgentScript(
        tool_arguments=dict(ARGUMENTS),
        tool_call_id="call_weather_0001",
        text=ANSWER_TEXT,
        json_instance=dict(FORECAST),
        cached_tokens=CACHED_TOKENS,
        reasoning_tokens=REASONING_TOKENS,
    )
    state = FakeUpstreamState(hang_s=5.0, agent=script)
    with ServerThread(fake_upstream_app(state)) as server:
        yield Upstream(server.url + "/v1", state)


@pytest.fixture(scope="module")
def gateway(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """A live gateway whose ``fake-agent`` models are the upstream's ``fake-agent``."""
    home = tmp_path_factory.mktemp("agent-upstream")
    config = gateway_config(upstream.url)
    config["deployments"]["dep-fake-agent"] = {"engine": "up", "model": "fake-agent"}
    config["models"]["fake-agent"] = {"deployments": ["dep-fake-agent"]}
    config["models"]["fake-agent-priced"] = {
        "deployments": ["dep-fake-agent"],
        "price": dict(PRICE),
    }
    with live_gateway(f"sqlite:///{home / 'tokenmill.db'}", config, home) as live:
        yield live


@dataclass
class Client:
    """An SDK client with a key of its own, and the bodies the SDK sent."""

    sdk: OpenAI
    key_id: str
    sent: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def client(gateway: LiveGateway) -> Iterator[Client]:
    """A fresh key's SDK client that records each request body it sends."""
    secret, key_id, _ = gateway.new_key()
    sent: list[dict[str, Any]] = []

    def keep(request: Any) -> None:
        if request.method == "POST":
            sent.append(json.loads(request.content))

    # The SDK's own HTTP client class, with a hook that sees each request as it leaves.
    http = openai.DefaultHttpxClient(event_hooks={"request": [keep]}, timeout=10)
    sdk = OpenAI(
        base_url=gateway.url + "/v1", api_key=secret, max_retries=0, timeout=10, http_client=http
    )
    with sdk:
        yield Client(sdk, key_id, sent)


def received(upstream: Upstream) -> dict[str, Any]:
    """The last body the upstream received."""
    assert upstream.state.requests, "the upstream received nothing"
    return upstream.state.requests[-1]


def without_gateway_changes(body: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in body.items() if name not in CHANGED_BY_THE_GATEWAY}


def only_choice(answer: ChatCompletion) -> Any:
    assert len(answer.choices) == 1
    return answer.choices[0]


@dataclass
class Streamed:
    """A streamed answer accumulated from its chunks: text, the first tool-call delta, the
    call's id, name and arguments pieces, finish reasons, log probabilities and usage."""

    chunks: list[ChatCompletionChunk]
    content: str = ""
    first_call_delta: Any = None
    call_id: str | None = None
    call_name: str | None = None
    argument_pieces: list[str] = field(default_factory=list)
    finish_reasons: list[str | None] = field(default_factory=list)
    logprobs: list[Any] = field(default_factory=list)
    usage: Any = None

    @property
    def arguments(self) -> str:
        return "".join(self.argument_pieces)


def assemble(chunks: list[ChatCompletionChunk]) -> Streamed:
    streamed = Streamed(chunks)
    for chunk in chunks:
        streamed.usage = chunk.usage or streamed.usage
        for choice in chunk.choices:
            streamed.content += choice.delta.content or ""
            streamed.finish_reasons.append(choice.finish_reason)
            if choice.logprobs is not None:
                streamed.logprobs.extend(choice.logprobs.content or ())
            for piece in choice.delta.tool_calls or ():
                assert piece.index == 0
                if streamed.first_call_delta is None:
                    streamed.first_call_delta = piece
                streamed.call_id = streamed.call_id or piece.id
                if piece.function is not None:
                    streamed.call_name = streamed.call_name or piece.function.name
                    if piece.function.arguments:
                        streamed.argument_pieces.append(piece.function.arguments)
    return streamed


def stream_chat(client: Client, include_usage: bool = True, **options: Any) -> Streamed:
    options.setdefault("model", "fake-agent")
    if include_usage:
        options["stream_options"] = {"include_usage": True}
    return assemble(list(client.sdk.chat.completions.create(stream=True, **options)))


def call_turn(call_id: str, name: str, arguments: str) -> ChatCompletionMessageParam:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        ],
    }


def tool_result(call_id: str) -> ChatCompletionMessageParam:
    return {
        "role": "tool",
        "tool_call_id": call_id,
        "content": json.dumps({"temperature_c": 21, "conditions": "sunny"}),
    }


class TestToolLoop:
    def test_the_two_turn_loop_gets_a_call_then_text(
        self, client: Client, upstream: Upstream
    ) -> None:
        """Turn one is the upstream's call (finish tool_calls, arguments valid for the
        tool); turn two, with the call and its result, is its text (finish stop); the
        upstream got turn two's messages as sent."""
        first = client.sdk.chat.completions.create(
            model="fake-agent", messages=ASK_WEATHER, tools=[WEATHER_TOOL]
        )
        choice = only_choice(first)
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls
        assert (call.id, call.type, call.function.name) == (
            "call_weather_0001",
            "function",
            "get_weather",
        )
        assert json.loads(call.function.arguments) == ARGUMENTS
        jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMETERS)
        messages = [
            *ASK_WEATHER,
            call_turn(call.id, call.function.name, call.function.arguments),
            tool_result(call.id),
        ]
        second = client.sdk.chat.completions.create(
            model="fake-agent", messages=messages, tools=[WEATHER_TOOL]
        )
        assert only_choice(second).finish_reason == "stop"
        assert only_choice(second).message.content == ANSWER_TEXT
        assert not only_choice(second).message.tool_calls
        assert received(upstream)["messages"] == client.sent[-1]["messages"]
        assert received(upstream)["messages"][-2]["tool_calls"][0]["id"] == "call_weather_0001"

    def test_the_streamed_loop_assembles_the_call_and_then_streams_the_text(
        self, client: Client
    ) -> None:
        """Streamed: the first call delta carries the id, type and name; the arguments come
        in pieces and join into the scripted ones; turn two streams the text and stops."""
        first = stream_chat(client, messages=ASK_WEATHER, tools=[WEATHER_TOOL])
        delta = first.first_call_delta
        assert delta is not None
        assert (delta.id, delta.type) == ("call_weather_0001", "function")
        assert delta.function.name == "get_weather"
        assert len(first.argument_pieces) >= 2
        assert json.loads(first.arguments) == ARGUMENTS
        assert first.finish_reasons[-1] == "tool_calls"
        assert all(reason is None for reason in first.finish_reasons[:-1])
        assert first.content == ""
        assert first.call_id is not None and first.call_name is not None
        messages = [
            *ASK_WEATHER,
            call_turn(first.call_id, first.call_name, first.arguments),
            tool_result(first.call_id),
        ]
        second = stream_chat(client, messages=messages, tools=[WEATHER_TOOL])
        assert second.content == ANSWER_TEXT
        assert second.finish_reasons[-1] == "stop"
        assert second.first_call_delta is None
        assert len([c for c in second.chunks if c.choices and c.choices[0].delta.content]) > 1

    def test_the_sdk_stream_helper_parses_the_relayed_call(self, client: Client) -> None:
        """chat.completions.stream with a pydantic tool gives parsed_arguments from the
        relayed deltas."""

        class GetWeather(BaseModel):
            city: str
            unit: Literal["c", "f"]

        tool = openai.pydantic_function_tool(GetWeather, name="get_weather")
        with client.sdk.chat.completions.stream(
            model="fake-agent", messages=ASK_WEATHER, tools=[tool]
        ) as stream:
            final = stream.get_final_completion()
        (call,) = only_choice(final).message.tool_calls
        assert call.function.parsed_arguments == GetWeather(city="Paris", unit="c")

    def test_tool_choice_none_reaches_the_upstream_and_gets_text(
        self, client: Client, upstream: Upstream
    ) -> None:
        """tool_choice none goes up as sent and the upstream's text comes back."""
        answer = client.sdk.chat.completions.create(
            model="fake-agent", messages=ASK_WEATHER, tools=[WEATHER_TOOL], tool_choice="none"
        )
        assert only_choice(answer).message.content == ANSWER_TEXT
        assert only_choice(answer).finish_reason == "stop"
        assert received(upstream)["tool_choice"] == "none"

    def test_a_named_tool_that_is_not_offered_is_a_400_before_the_upstream(
        self, client: Client, gateway: LiveGateway, upstream: Upstream
    ) -> None:
        """Naming a tool not in tools is a BadRequestError on tool_choice; nothing goes up
        and no usage is recorded."""
        before = len(upstream.state.requests)
        with pytest.raises(openai.BadRequestError) as caught:
            client.sdk.chat.completions.create(
                model="fake-agent",
                messages=ASK_WEATHER,
                tools=[WEATHER_TOOL],
                tool_choice={"type": "function", "function": {"name": "get_local_time"}},
            )
        assert caught.value.param == "tool_choice"
        assert len(upstream.state.requests) == before
        assert gateway.records(client.key_id) == []


AGENT_OPTIONS: dict[str, Any] = {
    "tools": [WEATHER_TOOL, CLOCK_TOOL],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": False,
    "response_format": FORECAST_FORMAT,
    "logprobs": True,
    "top_logprobs": 2,
    "reasoning_effort": "high",
    "seed": 11,
    "temperature": 0.2,
    "metadata": {"session": "agent-42"},
}
VENDOR_EXTRA = {"x_vendor_option": {"nested": [1, "two", None, 3.5], "flag": False}}


class TestWhatTheUpstreamReceives:
    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_the_agent_fields_and_an_unknown_one_reach_the_upstream_intact(
        self, client: Client, upstream: Upstream, stream: bool
    ) -> None:
        """tools, tool_choice, parallel_tool_calls, response_format, logprobs, top_logprobs,
        reasoning_effort and an unknown extra field reach the upstream as the SDK sent
        them; the rest of the body too, but for the gateway's own changes."""
        options: dict[str, Any] = {
            "messages": ASK_WEATHER,
            **AGENT_OPTIONS,
            "extra_body": VENDOR_EXTRA,
        }
        if stream:
            stream_chat(client, **options)
        else:
            client.sdk.chat.completions.create(model="fake-agent", **options)
        sent, got = client.sent[-1], received(upstream)
        for name in [*AGENT_OPTIONS, *VENDOR_EXTRA]:
            assert got[name] == sent[name], name
        assert got["x_vendor_option"] == VENDOR_EXTRA["x_vendor_option"]
        assert without_gateway_changes(got) == without_gateway_changes(sent)
        assert got["model"] == "fake-agent"
        if stream:
            assert got["stream"] is True
            assert got["stream_options"] == {"include_usage": True}
        else:
            assert "stream_options" not in got

    def test_the_sdk_parse_helper_sends_a_strict_schema_and_gets_a_parsed_instance(
        self, client: Client, upstream: Upstream
    ) -> None:
        """chat.completions.parse(response_format=Forecast): the SDK's strict json_schema
        goes up intact, and the upstream's instance comes back parsed."""
        answer = client.sdk.chat.completions.parse(
            model="fake-agent", messages=ASK_WEATHER, response_format=Forecast
        )
        assert only_choice(answer).message.parsed == Forecast(**FORECAST)
        sent_format = client.sent[-1]["response_format"]
        assert sent_format["type"] == "json_schema"
        assert sent_format["json_schema"]["strict"] is True
        assert received(upstream)["response_format"] == sent_format

    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_a_json_schema_answer_comes_back_valid(self, client: Client, stream: bool) -> None:
        """The upstream's instance for a strict json_schema reaches the client unchanged
        and validates against the schema."""
        options: dict[str, Any] = {"messages": ASK_WEATHER, "response_format": FORECAST_FORMAT}
        if stream:
            streamed = stream_chat(client, **options)
            content, finish = streamed.content, streamed.finish_reasons[-1]
        else:
            choice = only_choice(client.sdk.chat.completions.create(model="fake-agent", **options))
            content, finish = choice.message.content, choice.finish_reason
        assert finish == "stop"
        assert json.loads(content) == FORECAST
        jsonschema.validate(json.loads(content), FORECAST_FORMAT["json_schema"]["schema"])

    def test_logprobs_come_back_as_the_upstream_sent_them_streamed_or_not(
        self, client: Client
    ) -> None:
        """One entry per token with top_logprobs 2, the tokens joining to the content; the
        streamed entries equal the non-streamed ones."""
        options: dict[str, Any] = {"messages": ASK_WEATHER, "logprobs": True, "top_logprobs": 2}
        answer = client.sdk.chat.completions.create(model="fake-agent", **options)
        logprobs = only_choice(answer).logprobs
        assert logprobs is not None and logprobs.content
        assert "".join(entry.token for entry in logprobs.content) == ANSWER_TEXT
        for entry in logprobs.content:
            assert entry.logprob <= 0
            assert [top.token for top in entry.top_logprobs][:1] == [entry.token]
            assert len(entry.top_logprobs) == 2
        streamed = stream_chat(client, **options)
        assert streamed.logprobs == logprobs.content


def record_usage_of(gateway: LiveGateway, key_id: str) -> Any:
    """The one usage record of ``key_id``, read back from the store."""
    (record,) = gateway.records(key_id)
    return record


def admin_usage(gateway: LiveGateway, key_id: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{gateway.url}/admin/v1/usage",
        params={"key": key_id},
        headers={"Authorization": f"Bearer {gateway.admin_token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


class TestUsageRecords:
    def test_a_plain_answer_keeps_the_cached_and_reasoning_tokens(
        self, client: Client, gateway: LiveGateway
    ) -> None:
        """The client sees the upstream's cached and reasoning tokens, and the usage record
        (the store's and the admin API's) keeps the same counts, not estimated."""
        answer = client.sdk.chat.completions.create(
            model="fake-agent", messages=ASK_WEATHER, reasoning_effort="high"
        )
        usage = answer.usage
        assert usage is not None
        assert usage.prompt_tokens_details is not None
        assert usage.completion_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == CACHED_TOKENS
        assert usage.completion_tokens_details.reasoning_tokens == REASONING_TOKENS
        record = record_usage_of(gateway, client.key_id)
        assert (record.prompt_tokens, record.completion_tokens) == (
            usage.prompt_tokens,
            usage.completion_tokens,
        )
        assert (record.cached_tokens, record.reasoning_tokens) == (
            CACHED_TOKENS,
            REASONING_TOKENS,
        )
        assert not record.estimated
        assert (record.engine, record.status) == ("up", "ok")
        (shown,) = admin_usage(gateway, client.key_id)
        assert (shown["prompt_tokens"], shown["cached_tokens"]) == (
            usage.prompt_tokens,
            CACHED_TOKENS,
        )

    @pytest.mark.parametrize("include_usage", [True, False], ids=["shown", "hidden"])
    def test_a_streamed_tool_call_keeps_the_cached_and_reasoning_tokens(
        self, client: Client, gateway: LiveGateway, include_usage: bool
    ) -> None:
        """A streamed call's record has the upstream's counts whether or not the client
        asked to see usage (the gateway always asks the upstream); a client that asked sees
        the same counts in its last chunk."""
        streamed = stream_chat(client, include_usage, messages=ASK_WEATHER, tools=[WEATHER_TOOL])
        assert streamed.finish_reasons[-1] == "tool_calls"
        record = record_usage_of(gateway, client.key_id)
        assert (record.cached_tokens, record.reasoning_tokens) == (
            CACHED_TOKENS,
            REASONING_TOKENS,
        )
        assert record.completion_tokens == len(streamed.argument_pieces) + REASONING_TOKENS
        assert not record.estimated
        if include_usage:
            assert streamed.usage.prompt_tokens == record.prompt_tokens
            assert streamed.usage.completion_tokens == record.completion_tokens
            assert streamed.usage.prompt_tokens_details.cached_tokens == CACHED_TOKENS
            assert streamed.usage.completion_tokens_details.reasoning_tokens == REASONING_TOKENS
        else:
            assert streamed.usage is None
            assert all(chunk.choices for chunk in streamed.chunks)


@pytest.fixture
def silent_upstream(upstream: Upstream) -> Iterator[Upstream]:
    """The module's upstream, reporting no usage during the test."""
    upstream.state.agent.reports_usage = False
    try:
        yield upstream
    finally:
        upstream.state.agent.reports_usage = True


class TestUsageEstimates:
    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_a_tool_call_without_upstream_usage_is_still_metered(
        self, client: Client, gateway: LiveGateway, silent_upstream: Upstream, stream: bool
    ) -> None:
        """From an upstream that reports no usage, a tool call's record is estimated and
        counts output tokens for the arguments it relayed (not zero)."""
        options: dict[str, Any] = {"messages": ASK_WEATHER, "tools": [WEATHER_TOOL]}
        if stream:
            streamed = stream_chat(client, include_usage=False, **options)
            assert streamed.usage is None
            arguments = streamed.arguments
        else:
            answer = client.sdk.chat.completions.create(model="fake-agent", **options)
            assert answer.usage is None
            arguments = only_choice(answer).message.tool_calls[0].function.arguments
        assert json.loads(arguments) == ARGUMENTS
        record = record_usage_of(gateway, client.key_id)
        assert record.estimated
        assert record.prompt_tokens > 0
        assert record.completion_tokens > 0, record


def funded_key(gateway: LiveGateway, account: str) -> tuple[str, str]:
    """(key secret, key id) of a new account topped up with 10.00 through the admin API,
    once the gateway shows the funds."""
    secret, key_id, _ = gateway.new_key(account)
    response = httpx.post(
        f"{gateway.url}/admin/v1/accounts/{account}/transfers",
        json={"amount": "10.00", "kind": "topup", "idempotency_key": f"seed-{account}"},
        headers={"Authorization": f"Bearer {gateway.admin_token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 5
    while balance_of(gateway, account)["balance_nano"] != 10 * NANO:
        assert time.monotonic() < deadline, "the gateway never showed the top-up"
        time.sleep(0.02)
    return secret, key_id


class TestBilling:
    def test_cached_tokens_are_billed_at_the_cached_price_and_reasoning_once(
        self, gateway: LiveGateway
    ) -> None:
        """A priced answer with cached and reasoning tokens charges the fresh prompt at the
        input price, the cached part at the cached price, and every completion token
        (reasoning among them) once at the output price; the balance falls by that."""
        secret, key_id = funded_key(gateway, "agent-billed")
        before = settled_balance_nano(gateway, "agent-billed")
        with OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0, timeout=10) as sdk:
            answer = sdk.chat.completions.create(
                model="fake-agent-priced", messages=ASK_WEATHER, reasoning_effort="high"
            )
        usage = answer.usage
        assert usage is not None
        record = record_usage_of(gateway, key_id)
        expected = (
            (usage.prompt_tokens - CACHED_TOKENS) * INPUT_NANO_PER_TOKEN
            + CACHED_TOKENS * CACHED_INPUT_NANO_PER_TOKEN
            + usage.completion_tokens * OUTPUT_NANO_PER_TOKEN
        )
        assert record.charge_nano == expected
        assert before - settled_balance_nano(gateway, "agent-billed") == record.charge_nano
