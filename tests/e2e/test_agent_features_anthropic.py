"""The agent features through the ``anthropic`` engine: the official openai SDK against a live
gateway in front of the fake Anthropic Messages API on loopback. The gateway translates
both ways, so each test checks both sides: what the upstream received (tools with their
``input_schema``, the tool choice, ``tool_use`` and ``tool_result`` blocks, image blocks,
``thinking``, a forced tool for structured output, system blocks) and what the client got
back (tool calls, JSON that validates, ``reasoning_content``, usage with cache reads and
writes, and the charge), streamed and not; and what cannot go up (logprobs, an ftp image,
thinking beside a forced tool) is a 400 that never does.

One fake upstream and one gateway serve the module; each test gets a key of its own, so the
usage records of a test are those of its key.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

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

from tests.conftest import LiveGateway, gateway_config
from tests.e2e.balances import settled_balance_nano
from tests.e2e.test_agent_features_openai_upstream import admin_usage, funded_key
from tests.integration.test_anthropic_engine import served_gateway
from tokenmill.testing import (
    FAKE_ANSWER_WORDS_COUNT,
    FAKE_THINKING_TEXT,
    FAKE_WORDS,
    FakeAnthropicState,
    ServerThread,
    fake_anthropic_app,
)
from tokenmill.usage import UsageRecord

KEY_ENV = "TM_TEST_AGENT_ANTHROPIC_KEY"
SECRET = "sk-ant-agent-" + secrets.token_hex(16)
NANO = 1_000_000_000
TOKENS_PER_PRICE = 1_000_000  # prices are per million tokens
OUTPUT_TOKENS_MAX = 32_000  # room for the high effort's whole thinking budget
HIGH_EFFORT_BUDGET_TOKENS = 16_384  # docs/engines.md: reasoning_effort high
CACHE_WRITE_TOKENS = 100
CACHE_READ_TOKENS = 50
# Prices with digits below a nano-unit a token, so that the one rounding shows.
PRICE = {
    "input": "3.0000007",
    "cached_input": "0.3000003",
    "cache_write_input": "3.7500009",
    "output": "15.0000001",
}

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
        "parameters": WEATHER_PARAMETERS,
    },
}
CLOCK_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"timezone": {"type": "string"}},
    "required": ["timezone"],
    "additionalProperties": False,
}
CLOCK_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {"name": "get_local_time", "parameters": CLOCK_PARAMETERS},
}
PARAMETERS = {"get_weather": WEATHER_PARAMETERS, "get_local_time": CLOCK_PARAMETERS}
ARGUMENTS = {"city": "Paris", "unit": "c"}
SYSTEM_TEXT = "You are a weather assistant. Use the tools."
QUESTION_TEXT = "What is the weather in Paris right now?"
ASK_WEATHER: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": SYSTEM_TEXT},
    {"role": "user", "content": QUESTION_TEXT},
]
PROMPT_WORDS = len(f"{SYSTEM_TEXT} {QUESTION_TEXT}".split())  # the fake's input tokens
TOOL_RESULT = json.dumps({"temperature_c": 21, "conditions": "sunny"})
WHOLE_ANSWER = "".join(word + " " for word in FAKE_WORDS[:FAKE_ANSWER_WORDS_COUNT])
# A 1x1 PNG.
PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ"
    "AAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


class Forecast(BaseModel):
    city: str
    temperature_c: float
    conditions: Literal["sunny", "cloudy", "rain"]


FORECAST = {"city": "Paris", "temperature_c": 21.5, "conditions": "sunny"}
FORECAST_SCHEMA: dict[str, Any] = {**Forecast.model_json_schema(), "additionalProperties": False}
FORECAST_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "forecast", "strict": True, "schema": FORECAST_SCHEMA},
}


@dataclass
class Upstream:
    url: str
    state: FakeAnthropicState


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    """The fake Anthropic upstream, its weather call and forecasts scripted (the SDK's parse
    helper names the forced tool after the model class)."""
    inputs = {"get_weather": dict(ARGUMENTS), "forecast": FORECAST, "Forecast": FORECAST}
    state = FakeAnthropicState(api_key=SECRET, hang_s=5.0, tool_inputs=inputs)
    with ServerThread(fake_anthropic_app(state)) as server:
        yield Upstream(server.url, state)


@pytest.fixture(scope="module")
def gateway(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """A live gateway whose ``claude-agent`` models are an anthropic deployment of the fake."""
    home = tmp_path_factory.mktemp("agent-anthropic")
    config = gateway_config(None)
    config["engines"]["claude"] = {
        "kind": "anthropic",
        "base_url": upstream.url,
        "api_key_env": KEY_ENV,
        "timeout_s_read": 5,
        "timeout_s_connect": 2,
    }
    config["deployments"]["ant-claude"] = {"engine": "claude", "model": "claude"}
    config["models"]["claude-agent"] = {
        "deployments": ["ant-claude"],
        "output_tokens_max": OUTPUT_TOKENS_MAX,
    }
    config["models"]["claude-agent-priced"] = {"deployments": ["ant-claude"], "price": PRICE}
    url = f"sqlite:///{home / 'tokenmill.db'}"
    with served_gateway(url, config, home, {KEY_ENV: SECRET}) as live:
        yield live


@dataclass
class Client:
    """An SDK client with a key of its own."""

    sdk: OpenAI
    key_id: str


@pytest.fixture
def client(gateway: LiveGateway) -> Iterator[Client]:
    secret, key_id, _ = gateway.new_key()
    sdk = OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0, timeout=10)
    with sdk:
        yield Client(sdk, key_id)


@pytest.fixture
def cache_scripted(upstream: Upstream) -> Iterator[Upstream]:
    """The module's upstream, reporting CACHE_WRITE_TOKENS written to and CACHE_READ_TOKENS
    read from its prompt cache during the test."""
    upstream.state.cache_write_tokens = CACHE_WRITE_TOKENS
    upstream.state.cache_read_tokens = CACHE_READ_TOKENS
    try:
        yield upstream
    finally:
        upstream.state.cache_write_tokens = None
        upstream.state.cache_read_tokens = None


def received(upstream: Upstream) -> dict[str, Any]:
    """The last body the upstream received."""
    assert upstream.state.requests, "the upstream received nothing"
    return upstream.state.requests[-1]


def only_choice(answer: ChatCompletion) -> Any:
    assert len(answer.choices) == 1
    return answer.choices[0]


def record_of(gateway: LiveGateway, key_id: str) -> UsageRecord:
    """The one usage record of ``key_id``, read back from the store."""
    (record,) = gateway.records(key_id)
    return record


def refused(client: Client, upstream: Upstream, **options: Any) -> openai.BadRequestError:
    """The SDK's BadRequestError for a request the gateway refuses; nothing went up."""
    before = len(upstream.state.requests)
    options.setdefault("messages", ASK_WEATHER)
    with pytest.raises(openai.BadRequestError) as caught:
        client.sdk.chat.completions.create(model="claude-agent", **options)
    assert len(upstream.state.requests) == before
    return caught.value


@dataclass
class Streamed:
    """A streamed answer accumulated from its chunks."""

    chunks: list[ChatCompletionChunk]
    content: str = ""
    reasoning: str = ""
    call_deltas: list[Any] = field(default_factory=list)
    finish_reasons: list[str | None] = field(default_factory=list)
    usage: Any = None
    reasoning_after_content: bool = False

    @property
    def arguments(self) -> str:
        return "".join(d.function.arguments or "" for d in self.call_deltas if d.function)


def assemble(chunks: list[ChatCompletionChunk]) -> Streamed:
    streamed = Streamed(chunks)
    for chunk in chunks:
        streamed.usage = chunk.usage or streamed.usage
        for choice in chunk.choices:
            # reasoning_content is no field of the SDK's delta: it comes as an extra one.
            reasoning = str(choice.delta.to_dict().get("reasoning_content") or "")
            streamed.reasoning_after_content |= bool(reasoning and streamed.content)
            streamed.reasoning += reasoning
            streamed.content += choice.delta.content or ""
            streamed.finish_reasons.append(choice.finish_reason)
            for piece in choice.delta.tool_calls or ():
                assert piece.index == 0
                streamed.call_deltas.append(piece)
    return streamed


def stream_chat(client: Client, **options: Any) -> Streamed:
    options.setdefault("model", "claude-agent")
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
    return {"role": "tool", "tool_call_id": call_id, "content": TOOL_RESULT}


def second_turn(call_id: str, arguments: str) -> list[ChatCompletionMessageParam]:
    return [*ASK_WEATHER, call_turn(call_id, "get_weather", arguments), tool_result(call_id)]


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def tool_use_block(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def tool_result_block(call_id: str, text: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": call_id, "content": [text_block(text)]}


def assert_upstream_got_the_loop(upstream: Upstream, call_id: str) -> None:
    """Turn two went up as the question, the call as a tool_use block of the assistant and
    its result as a tool_result block of the user, matched by id."""
    assert received(upstream)["messages"] == [
        {"role": "user", "content": [text_block(QUESTION_TEXT)]},
        {"role": "assistant", "content": [tool_use_block(call_id, "get_weather", ARGUMENTS)]},
        {"role": "user", "content": [tool_result_block(call_id, TOOL_RESULT)]},
    ]


class TestToolLoop:
    def test_the_two_turn_loop_gets_a_call_then_text(
        self, client: Client, upstream: Upstream
    ) -> None:
        """Turn one: the upstream got the tool with its parameters as input_schema and an
        auto choice, and the client a call whose arguments validate (finish tool_calls);
        turn two, with the call and its result as blocks, gets the text (finish stop)."""
        first = client.sdk.chat.completions.create(
            model="claude-agent", messages=ASK_WEATHER, tools=[WEATHER_TOOL]
        )
        sent = received(upstream)
        assert sent["tools"] == [
            {
                "name": "get_weather",
                "description": "The current weather in a city.",
                "input_schema": WEATHER_PARAMETERS,
            }
        ]
        assert sent["tool_choice"] == {"type": "auto"}
        assert sent["system"] == [text_block(SYSTEM_TEXT)]
        choice = only_choice(first)
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls
        assert call.id.startswith("toolu_")
        assert (call.type, call.function.name) == ("function", "get_weather")
        assert json.loads(call.function.arguments) == ARGUMENTS
        jsonschema.validate(json.loads(call.function.arguments), WEATHER_PARAMETERS)
        second = client.sdk.chat.completions.create(
            model="claude-agent",
            messages=second_turn(call.id, call.function.arguments),
            tools=[WEATHER_TOOL],
        )
        assert only_choice(second).finish_reason == "stop"
        assert only_choice(second).message.content == WHOLE_ANSWER
        assert not only_choice(second).message.tool_calls
        assert_upstream_got_the_loop(upstream, call.id)

    def test_the_streamed_loop_assembles_the_call_and_then_streams_the_text(
        self, client: Client, upstream: Upstream
    ) -> None:
        """Streamed: the first call delta carries the id, type and name, the later ones only
        argument pieces that join into the upstream's input; turn two streams the text."""
        first = stream_chat(client, messages=ASK_WEATHER, tools=[WEATHER_TOOL])
        head, *rest = first.call_deltas
        assert head.id is not None and head.id.startswith("toolu_")
        assert (head.type, head.function.name) == ("function", "get_weather")
        assert len(rest) >= 2
        assert all(d.id is None and (d.function.name or None) is None for d in rest)
        assert json.loads(first.arguments) == ARGUMENTS
        jsonschema.validate(json.loads(first.arguments), WEATHER_PARAMETERS)
        assert first.finish_reasons[-1] == "tool_calls"
        assert all(reason is None for reason in first.finish_reasons[:-1])
        assert first.content == ""
        assert received(upstream)["stream"] is True
        second = stream_chat(client, messages=second_turn(head.id, first.arguments))
        assert second.content == WHOLE_ANSWER
        assert second.finish_reasons[-1] == "stop"
        assert second.call_deltas == []
        assert_upstream_got_the_loop(upstream, head.id)

    def test_the_sdk_stream_helper_parses_the_relayed_call(self, client: Client) -> None:
        """chat.completions.stream with a pydantic tool gives parsed_arguments from the
        translated deltas."""

        class GetWeather(BaseModel):
            city: str
            unit: Literal["c", "f"]

        tool = openai.pydantic_function_tool(GetWeather, name="get_weather")
        with client.sdk.chat.completions.stream(
            model="claude-agent", messages=ASK_WEATHER, tools=[tool]
        ) as stream:
            final = stream.get_final_completion()
        (call,) = only_choice(final).message.tool_calls
        assert call.function.parsed_arguments == GetWeather(city="Paris", unit="c")

    def test_two_calls_and_their_results_go_up_as_one_assistant_and_one_user_turn(
        self, client: Client, upstream: Upstream
    ) -> None:
        """An assistant turn with text and two calls, two tool messages and a user message
        after them: one assistant turn (text, then both tool_use blocks) and one user turn
        (both tool_result blocks, then the text); the answer is text."""
        weather_call = call_turn("toolu_weather", "get_weather", json.dumps(ARGUMENTS))
        clock_call = call_turn("toolu_clock", "get_local_time", '{"timezone": "CET"}')
        both = [*weather_call["tool_calls"], *clock_call["tool_calls"]]  # type: ignore[typeddict-item]
        messages: list[Any] = [
            *ASK_WEATHER,
            {"role": "assistant", "content": "Checking both.", "tool_calls": both},
            tool_result("toolu_weather"),
            {"role": "tool", "tool_call_id": "toolu_clock", "content": [text_block("12:00")]},
            {"role": "user", "content": "So?"},
        ]
        answer = client.sdk.chat.completions.create(
            model="claude-agent", messages=messages, tools=[WEATHER_TOOL, CLOCK_TOOL]
        )
        assert only_choice(answer).finish_reason == "stop"
        assistant, user = received(upstream)["messages"][1:]
        assert assistant["content"] == [
            text_block("Checking both."),
            tool_use_block("toolu_weather", "get_weather", ARGUMENTS),
            tool_use_block("toolu_clock", "get_local_time", {"timezone": "CET"}),
        ]
        assert user["content"] == [
            tool_result_block("toolu_weather", TOOL_RESULT),
            tool_result_block("toolu_clock", "12:00"),
            text_block("So?"),
        ]


class TestSystemMessages:
    def test_system_and_developer_messages_go_up_as_system_blocks_with_cache_control(
        self, client: Client, upstream: Upstream
    ) -> None:
        """A developer message whose text part carries cache_control and a system message:
        two system blocks in order, the first with its cache_control; none in the turns."""
        cached_part = {
            "type": "text",
            "text": "Long rules.",
            "cache_control": {"type": "ephemeral"},
        }
        # cache_control is Anthropic's, not in the SDK's types: the part goes as it is.
        messages: list[Any] = [{"role": "developer", "content": [cached_part]}, *ASK_WEATHER]
        client.sdk.chat.completions.create(model="claude-agent", messages=messages)
        sent = received(upstream)
        assert sent["system"] == [cached_part, text_block(SYSTEM_TEXT)]
        assert [turn["role"] for turn in sent["messages"]] == ["user"]


CHOICES = [
    ("auto", True, {"type": "auto"}, "get_weather"),
    ("required", True, {"type": "any"}, "get_weather"),
    (
        {"type": "function", "function": {"name": "get_local_time"}},
        True,
        {"type": "tool", "name": "get_local_time"},
        "get_local_time",
    ),
    ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}, "get_weather"),
    ("required", False, {"type": "any", "disable_parallel_tool_use": True}, "get_weather"),
]


class TestToolChoice:
    @pytest.mark.parametrize(
        ("choice", "parallel", "expected", "called"),
        CHOICES,
        ids=["auto", "required", "named", "auto-serial", "required-serial"],
    )
    def test_the_tool_choice_goes_up_as_anthropic_names_it(
        self,
        client: Client,
        upstream: Upstream,
        choice: Any,
        parallel: bool,
        expected: dict[str, Any],
        called: str,
    ) -> None:
        """auto -> auto, required -> any, a named function -> tool with its name;
        parallel_tool_calls false adds disable_parallel_tool_use; the call that comes back
        is of the tool chosen, its arguments valid for that tool."""
        options: dict[str, Any] = {} if parallel else {"parallel_tool_calls": False}
        answer = client.sdk.chat.completions.create(
            model="claude-agent",
            messages=ASK_WEATHER,
            tools=[WEATHER_TOOL, CLOCK_TOOL],
            tool_choice=choice,
            **options,
        )
        assert received(upstream)["tool_choice"] == expected
        assert [tool["name"] for tool in received(upstream)["tools"]] == [
            "get_weather",
            "get_local_time",
        ]
        (call,) = only_choice(answer).message.tool_calls
        assert call.function.name == called
        jsonschema.validate(json.loads(call.function.arguments), PARAMETERS[called])

    def test_tool_choice_none_goes_up_as_none_and_gets_text(
        self, client: Client, upstream: Upstream
    ) -> None:
        """tool_choice none: Anthropic's none (no parallel flag), and text comes back."""
        answer = client.sdk.chat.completions.create(
            model="claude-agent",
            messages=ASK_WEATHER,
            tools=[WEATHER_TOOL],
            tool_choice="none",
            parallel_tool_calls=False,
        )
        assert received(upstream)["tool_choice"] == {"type": "none"}
        assert only_choice(answer).message.content == WHOLE_ANSWER
        assert only_choice(answer).finish_reason == "stop"

    def test_a_named_tool_that_is_not_offered_is_a_400_before_the_upstream(
        self, client: Client, upstream: Upstream
    ) -> None:
        """Naming a tool not in tools is a BadRequestError on tool_choice; nothing goes up."""
        named = {"type": "function", "function": {"name": "get_local_time"}}
        error = refused(client, upstream, tools=[WEATHER_TOOL], tool_choice=named)
        assert error.param == "tool_choice"


class TestStructuredOutput:
    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_a_json_schema_is_one_forced_tool_and_comes_back_as_valid_content(
        self, client: Client, upstream: Upstream, stream: bool
    ) -> None:
        """The upstream got one tool, named after the format, whose input_schema is the
        schema, forced; the client gets its input as content that validates, finish stop,
        and no tool call."""
        options: dict[str, Any] = {"messages": ASK_WEATHER, "response_format": FORECAST_FORMAT}
        if stream:
            streamed = stream_chat(client, **options)
            content, finish = streamed.content, streamed.finish_reasons[-1]
            assert streamed.call_deltas == []
        else:
            choice = only_choice(
                client.sdk.chat.completions.create(model="claude-agent", **options)
            )
            content, finish = choice.message.content, choice.finish_reason
            assert not choice.message.tool_calls
        sent = received(upstream)
        assert [(t["name"], t["input_schema"]) for t in sent["tools"]] == [
            ("forecast", FORECAST_SCHEMA)
        ]
        assert sent["tool_choice"] == {"type": "tool", "name": "forecast"}
        assert finish == "stop"
        assert json.loads(content) == FORECAST
        jsonschema.validate(json.loads(content), FORECAST_SCHEMA)

    def test_the_sdk_parse_helper_gets_a_parsed_instance(
        self, client: Client, upstream: Upstream
    ) -> None:
        """chat.completions.parse(response_format=Forecast): the SDK's strict schema is the
        forced tool's input_schema, and the answer comes back parsed."""
        answer = client.sdk.chat.completions.parse(
            model="claude-agent", messages=ASK_WEATHER, response_format=Forecast
        )
        assert only_choice(answer).message.parsed == Forecast(**FORECAST)
        (tool,) = received(upstream)["tools"]
        assert tool["name"] == "Forecast"
        assert tool["input_schema"]["required"] == ["city", "temperature_c", "conditions"]

    def test_a_json_object_format_gets_a_json_object(
        self, client: Client, upstream: Upstream
    ) -> None:
        """json_object: a forced tool taking any object; the content is a JSON object."""
        answer = client.sdk.chat.completions.create(
            model="claude-agent", messages=ASK_WEATHER, response_format={"type": "json_object"}
        )
        (tool,) = received(upstream)["tools"]
        assert tool["input_schema"] == {"type": "object"}
        assert received(upstream)["tool_choice"] == {"type": "tool", "name": tool["name"]}
        assert isinstance(json.loads(only_choice(answer).message.content), dict)
        assert only_choice(answer).finish_reason == "stop"


def picture_question(url: str) -> list[ChatCompletionMessageParam]:
    return [
        {"role": "system", "content": SYSTEM_TEXT},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        },
    ]


class TestImages:
    @pytest.mark.parametrize(
        ("url", "source"),
        [
            (
                f"data:image/png;base64,{PNG_BASE64}",
                {"type": "base64", "media_type": "image/png", "data": PNG_BASE64},
            ),
            (
                "https://example.com/cat.png",
                {"type": "url", "url": "https://example.com/cat.png"},
            ),
        ],
        ids=["data", "https"],
    )
    def test_an_image_part_goes_up_as_an_image_block(
        self, client: Client, upstream: Upstream, url: str, source: dict[str, Any]
    ) -> None:
        """A data: PNG goes up as a base64 source with its media type, an https URL as a url
        source, after the text of the same turn."""
        answer = client.sdk.chat.completions.create(
            model="claude-agent", messages=picture_question(url)
        )
        assert only_choice(answer).message.content == WHOLE_ANSWER
        assert received(upstream)["messages"] == [
            {
                "role": "user",
                "content": [
                    text_block("What is in this picture?"),
                    {"type": "image", "source": source},
                ],
            }
        ]

    def test_an_ftp_image_is_a_400_naming_the_message_and_never_goes_up(
        self, client: Client, upstream: Upstream
    ) -> None:
        """An image URL neither data: nor http(s): BadRequestError on messages.[1].content,
        the URL in the message; the upstream is not called."""
        error = refused(client, upstream, messages=picture_question("ftp://example.com/cat.png"))
        assert error.param == "messages.[1].content"
        assert "ftp://example.com/cat.png" in error.message


class TestReasoning:
    @pytest.mark.parametrize(
        ("max_tokens", "budget"),
        [(None, HIGH_EFFORT_BUDGET_TOKENS), (2000, 1999)],
        ids=["model-cap", "client-cap"],
    )
    def test_a_high_effort_is_thinking_with_a_budget_below_the_cap(
        self,
        client: Client,
        upstream: Upstream,
        gateway: LiveGateway,
        max_tokens: int | None,
        budget: int,
    ) -> None:
        """reasoning_effort high: thinking enabled with high's budget, cut below max_tokens;
        the thinking comes back as reasoning_content, counted in reasoning_tokens, and the
        record keeps the same count."""
        options: dict[str, Any] = {} if max_tokens is None else {"max_tokens": max_tokens}
        answer = client.sdk.chat.completions.create(
            model="claude-agent", messages=ASK_WEATHER, reasoning_effort="high", **options
        )
        sent = received(upstream)
        assert sent["thinking"] == {"type": "enabled", "budget_tokens": budget}
        assert sent["thinking"]["budget_tokens"] < sent["max_tokens"]
        message = only_choice(answer).message
        assert message.to_dict()["reasoning_content"] == FAKE_THINKING_TEXT
        assert message.content == WHOLE_ANSWER
        usage = answer.usage
        assert usage is not None and usage.completion_tokens_details is not None
        reasoning_tokens = usage.completion_tokens_details.reasoning_tokens
        assert reasoning_tokens is not None
        assert 0 < reasoning_tokens < usage.completion_tokens
        record = record_of(gateway, client.key_id)
        assert (record.reasoning_tokens, record.completion_tokens) == (
            reasoning_tokens,
            usage.completion_tokens,
        )

    def test_a_streamed_answer_shows_the_thinking_first_as_reasoning_deltas(
        self, client: Client, gateway: LiveGateway
    ) -> None:
        """Streamed: the thinking deltas arrive as reasoning_content (an extra field of the
        SDK's delta), all before the text; the usage chunk and the record count them."""
        streamed = stream_chat(client, messages=ASK_WEATHER, reasoning_effort="high")
        assert streamed.reasoning == FAKE_THINKING_TEXT
        assert not streamed.reasoning_after_content
        assert streamed.content == WHOLE_ANSWER
        assert streamed.finish_reasons[-1] == "stop"
        details = streamed.usage.completion_tokens_details
        assert details.reasoning_tokens > 0
        record = record_of(gateway, client.key_id)
        assert record.reasoning_tokens == details.reasoning_tokens
        assert record.completion_tokens == streamed.usage.completion_tokens


class TestRefusals:
    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_logprobs_are_a_400_that_never_goes_up(
        self, client: Client, upstream: Upstream, stream: bool
    ) -> None:
        """Anthropic has no log probabilities: BadRequestError on logprobs, nothing sent."""
        assert refused(client, upstream, logprobs=True, stream=stream).param == "logprobs"

    @pytest.mark.parametrize(
        ("options", "param"),
        [
            ({"max_tokens": 1000}, "max_tokens"),
            ({"tools": [WEATHER_TOOL], "tool_choice": "required"}, "tool_choice"),
        ],
        ids=["cap-below-the-least-budget", "forced-tool"],
    )
    def test_what_thinking_cannot_take_is_a_400_that_never_goes_up(
        self, client: Client, upstream: Upstream, options: dict[str, Any], param: str
    ) -> None:
        """Reasoning with a cap that leaves no room for Anthropic's least budget, or beside
        a forced tool: BadRequestError naming the field, nothing sent."""
        assert refused(client, upstream, reasoning_effort="high", **options).param == param


def charge_nano(fresh: int, reads: int, writes: int, output: int) -> int:
    """PRICE's charge for the tokens: each kind at its price per million, summed exactly,
    then rounded up once to a nano-unit."""
    per_token = {name: Fraction(Decimal(amount)) * NANO for name, amount in PRICE.items()}
    exact = (
        fresh * per_token["input"]
        + reads * per_token["cached_input"]
        + writes * per_token["cache_write_input"]
        + output * per_token["output"]
    ) / TOKENS_PER_PRICE
    assert exact.denominator != 1  # the rounding is part of what is checked
    return math.ceil(exact)


class TestCacheUsage:
    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_cache_writes_and_reads_are_part_of_the_prompt_and_kept_apart(
        self, client: Client, gateway: LiveGateway, cache_scripted: Upstream, stream: bool
    ) -> None:
        """100 tokens written to and 50 read from the cache: the client's prompt_tokens is
        input + 150 with 50 cached; the record (store and admin API) keeps 50 cached and
        100 written, not estimated."""
        if stream:
            usage = stream_chat(client, messages=ASK_WEATHER).usage
        else:
            usage = client.sdk.chat.completions.create(
                model="claude-agent", messages=ASK_WEATHER
            ).usage
        assert usage is not None
        prompt = PROMPT_WORDS + CACHE_WRITE_TOKENS + CACHE_READ_TOKENS
        assert usage.prompt_tokens == prompt
        assert usage.prompt_tokens_details.cached_tokens == CACHE_READ_TOKENS
        record = record_of(gateway, client.key_id)
        assert (record.prompt_tokens, record.cached_tokens, record.cache_write_tokens) == (
            prompt,
            CACHE_READ_TOKENS,
            CACHE_WRITE_TOKENS,
        )
        assert not record.estimated
        (shown,) = admin_usage(gateway, client.key_id)
        assert (shown["prompt_tokens"], shown["cached_tokens"], shown["cache_write_tokens"]) == (
            prompt,
            CACHE_READ_TOKENS,
            CACHE_WRITE_TOKENS,
        )

    def test_each_kind_of_prompt_token_is_charged_at_its_price_rounded_once(
        self, gateway: LiveGateway, cache_scripted: Upstream
    ) -> None:
        """With input, cached_input, cache_write_input and output prices: the charge is
        fresh, read, written and output tokens each at its price, summed, rounded up once;
        the balance falls by it."""
        account = "claude-cache-payer-" + secrets.token_hex(4)
        secret, key_id = funded_key(gateway, account)
        before = settled_balance_nano(gateway, account)
        with OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0, timeout=10) as sdk:
            answer = sdk.chat.completions.create(model="claude-agent-priced", messages=ASK_WEATHER)
        assert answer.usage is not None
        assert answer.usage.completion_tokens == FAKE_ANSWER_WORDS_COUNT
        record = record_of(gateway, key_id)
        expected = charge_nano(
            PROMPT_WORDS, CACHE_READ_TOKENS, CACHE_WRITE_TOKENS, FAKE_ANSWER_WORDS_COUNT
        )
        assert record.charge_nano == expected
        assert before - settled_balance_nano(gateway, account) == expected
