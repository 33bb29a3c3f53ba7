"""What an agent needs from a chat model, through the official openai SDK against a live
gateway on the sim engine, streamed and not: a two-turn tool loop, tool choices, structured
output checked with jsonschema, log probabilities, counted reasoning, stop sequences, and a
priced answer billed by exactly the charge of its usage record.

One gateway serves the whole module (its sim answers at once: time_scale 0); each test
finds its usage records by request id or by a key of its own.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import jsonschema
import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionTokenLogprob,
    ChatCompletionToolParam,
)
from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall
from openai.types.completion_usage import CompletionUsage
from pydantic import BaseModel, Field

from tests.conftest import LiveGateway, gateway_config, live_gateway
from tests.e2e.balances import balance_of, settled_balance_nano
from tokenmill.billing import service as billing

NANO = 1_000_000_000
# 1.00 per million input tokens and 2.00 per million output tokens: 1000 and 2000 nano-units
# a token.
PRICE = {"input": "1.00", "output": "2.00"}
INPUT_NANO_PER_TOKEN = 1_000
OUTPUT_NANO_PER_TOKEN = 2_000
TOP_UP = "10.00"

ASK_WEATHER: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a weather assistant. Use the tools."},
    {"role": "user", "content": "What is the weather in Paris right now?"},
]
TELL_ME: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Tell me how the gateway meters tokens."}
]
WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "The city, e.g. Paris"},
        "unit": {"type": "string", "enum": ["c", "f"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
CLOCK_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "timezone": {"type": "string", "pattern": "^[A-Z][a-z]+/[A-Z][a-z]+$"},
        "hours": {"type": "integer", "minimum": 0, "maximum": 23},
        "hour24": {"type": "boolean"},
    },
    "required": ["timezone", "hours", "hour24"],
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
        "description": "The local time in a time zone.",
        "strict": True,
        "parameters": CLOCK_PARAMETERS,
    },
}
PARAMETERS_OF = {"get_weather": WEATHER_PARAMETERS, "get_local_time": CLOCK_PARAMETERS}
REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "temperature_c": {"type": "number", "minimum": -60, "maximum": 60},
        "conditions": {"type": "string", "enum": ["sunny", "cloudy", "rain", "snow"]},
        "hourly": {
            "type": "array",
            "minItems": 2,
            "maxItems": 4,
            "items": {
                "type": "object",
                "properties": {
                    "hour": {"type": "integer", "minimum": 0, "maximum": 23},
                    "rain_ratio": {"type": "number", "minimum": 0, "maximum": 1},
                },
                "required": ["hour", "rain_ratio"],
                "additionalProperties": False,
            },
        },
        "observed_at": {"type": "string", "format": "date-time"},
    },
    "required": ["city", "temperature_c", "conditions", "hourly", "observed_at"],
    "additionalProperties": False,
}
REPORT_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "weather_report", "strict": True, "schema": REPORT_SCHEMA},
}


class GetWeather(BaseModel):
    """The current weather in a city."""

    city: str
    unit: Literal["c", "f"]


class Address(BaseModel):
    street: str
    city: str
    postcode: str = Field(pattern=r"^[0-9]{5}$")


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=130)
    role: Literal["admin", "member", "guest"]
    address: Address
    tags: list[str] = Field(max_length=5)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """A live gateway with the sim models (instant) and a priced one on the same deployment."""
    home = tmp_path_factory.mktemp("agent-sim")
    config = gateway_config(None, time_scale=0.0)
    config["models"]["sim-priced"] = {
        "deployments": ["sim-8b"],
        "output_tokens_max": 512,
        "price": dict(PRICE),
    }
    with live_gateway(f"sqlite:///{home / 'tokenmill.db'}", config, home) as live:
        yield live


@pytest.fixture(scope="module")
def client(gateway: LiveGateway) -> Iterator[OpenAI]:
    with sdk(gateway, gateway.new_key()[0]) as made:
        yield made


def sdk(gateway: LiveGateway, key: str) -> OpenAI:
    return OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=10)


def async_sdk(gateway: LiveGateway, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=10)


def assert_valid(instance: Any, schema: dict[str, Any]) -> None:
    """``instance`` validates against ``schema`` (JSON Schema 2020-12, formats checked)."""
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(instance)


@dataclass
class StreamedCall:
    """One tool call as its deltas built it, and the deltas themselves."""

    id: str | None = None
    name: str | None = None
    arguments: str = ""
    deltas: list[ChoiceDeltaToolCall] = field(default_factory=list)


@dataclass
class Streamed:
    """A streamed answer, accumulated from its chunks the way a client does."""

    content: str = ""
    reasoning: str = ""
    calls: dict[int, StreamedCall] = field(default_factory=dict)
    finish_reasons: list[str | None] = field(default_factory=list)
    logprobs: list[ChatCompletionTokenLogprob] = field(default_factory=list)
    usage: CompletionUsage | None = None
    request_id: str | None = None


def assemble(chunks: Iterable[ChatCompletionChunk]) -> Streamed:
    streamed = Streamed()
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            streamed.usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            streamed.content += delta.content or ""
            streamed.reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
            for piece in delta.tool_calls or ():
                call = streamed.calls.setdefault(piece.index, StreamedCall())
                call.deltas.append(piece)
                call.id = call.id or piece.id
                if piece.function is not None:
                    call.name = call.name or piece.function.name
                    call.arguments += piece.function.arguments or ""
            if choice.logprobs is not None:
                streamed.logprobs.extend(choice.logprobs.content or ())
            streamed.finish_reasons.append(choice.finish_reason)
    return streamed


def stream_chat(client: OpenAI, **options: Any) -> Streamed:
    """A streamed sim-chat answer, with usage, accumulated."""
    options.setdefault("model", "sim-chat")
    stream = client.chat.completions.create(
        stream=True, stream_options={"include_usage": True}, **options
    )
    streamed = assemble(stream)
    streamed.request_id = stream.response.headers["x-request-id"]
    return streamed


def only_choice(answer: ChatCompletion) -> Any:
    assert len(answer.choices) == 1
    return answer.choices[0]


def assistant_turn(answer: ChatCompletion) -> ChatCompletionMessageParam:
    """The assistant's message of ``answer`` as the next request sends it back."""
    message = only_choice(answer).message
    calls = [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.function.name, "arguments": call.function.arguments},
        }
        for call in message.tool_calls or ()
    ]
    return {"role": "assistant", "content": message.content, "tool_calls": calls}  # type: ignore[typeddict-item]


def tool_result(call_id: str) -> ChatCompletionMessageParam:
    return {
        "role": "tool",
        "tool_call_id": call_id,
        "content": json.dumps({"temperature_c": 21, "conditions": "sunny"}),
    }


def assert_the_weather_is_called(answer: ChatCompletion) -> Any:
    """The answer is one call of get_weather with valid arguments; returns the call."""
    choice = only_choice(answer)
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.id
    assert call.function.name == "get_weather"
    assert_valid(json.loads(call.function.arguments), WEATHER_PARAMETERS)
    return call


class TestToolLoop:
    def test_a_user_turn_with_tools_gets_a_tool_call_with_valid_arguments(
        self, client: OpenAI
    ) -> None:
        """Turn one: finish_reason tool_calls and arguments that validate against the tool's
        parameters; no text beside the call."""
        answer = client.chat.completions.create(
            model="sim-chat", messages=ASK_WEATHER, tools=[WEATHER_TOOL]
        )
        assert_the_weather_is_called(answer)
        assert not only_choice(answer).message.content

    def test_a_tool_result_gets_a_text_answer_that_stops(self, client: OpenAI) -> None:
        """Turn two: the assistant's call and the tool's result go back; the answer is text
        with finish_reason stop and no further call, though the tools are still offered."""
        first = client.chat.completions.create(
            model="sim-chat", messages=ASK_WEATHER, tools=[WEATHER_TOOL]
        )
        call = assert_the_weather_is_called(first)
        messages = [*ASK_WEATHER, assistant_turn(first), tool_result(call.id)]
        second = client.chat.completions.create(
            model="sim-chat", messages=messages, tools=[WEATHER_TOOL]
        )
        choice = only_choice(second)
        assert choice.finish_reason == "stop"
        assert choice.message.content
        assert not choice.message.tool_calls

    def test_the_call_sent_back_counts_in_the_prompt_of_turn_two(self, client: OpenAI) -> None:
        """Turn two's prompt counts the assistant's call it sends back: the same turn with
        longer arguments in that call has a longer prompt."""

        def prompt_tokens_with(arguments: dict[str, str]) -> int:
            turn: ChatCompletionMessageParam = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_weather_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": json.dumps(arguments)},
                    }
                ],
            }
            answer = client.chat.completions.create(
                model="sim-chat",
                messages=[*ASK_WEATHER, turn, tool_result("call_weather_1")],
                tools=[WEATHER_TOOL],
            )
            assert answer.usage is not None
            return answer.usage.prompt_tokens

        short = prompt_tokens_with({"city": "Paris", "unit": "c"})
        long = prompt_tokens_with({"city": "Paris" + " la ville lumiere" * 20, "unit": "c"})
        assert long > short, (short, long)

    def test_a_streamed_tool_call_assembles_into_the_non_streamed_one(self, client: OpenAI) -> None:
        """The first delta of the call has its id, type and name; the arguments come in
        several pieces after it and join into the call the non-streamed answer makes."""
        whole = assert_the_weather_is_called(
            client.chat.completions.create(
                model="sim-chat", messages=ASK_WEATHER, tools=[WEATHER_TOOL]
            )
        )
        streamed = stream_chat(client, messages=ASK_WEATHER, tools=[WEATHER_TOOL])
        assert list(streamed.calls) == [0]
        call = streamed.calls[0]
        first, *rest = call.deltas
        assert first.id == whole.id
        assert first.type == "function"
        assert first.function is not None and first.function.name == "get_weather"
        assert len(rest) >= 2
        assert all(d.id is None and (d.function and d.function.name) is None for d in rest)
        assert (call.id, call.name, call.arguments) == (
            whole.id,
            "get_weather",
            whole.function.arguments,
        )
        assert_valid(json.loads(call.arguments), WEATHER_PARAMETERS)
        assert streamed.finish_reasons[-1] == "tool_calls"
        assert all(reason is None for reason in streamed.finish_reasons[:-1])
        assert streamed.content == ""

    def test_the_async_client_runs_the_two_turn_loop_streamed(self, gateway: LiveGateway) -> None:
        """AsyncOpenAI streams turn one into a valid call and turn two into text that stops."""
        key = gateway.new_key()[0]

        async def loop() -> tuple[Streamed, Streamed]:
            async with async_sdk(gateway, key) as client:
                first_stream = await client.chat.completions.create(
                    model="sim-chat", messages=ASK_WEATHER, tools=[WEATHER_TOOL], stream=True
                )
                first = assemble([chunk async for chunk in first_stream])
                call = first.calls[0]
                assert call.id is not None and call.name is not None
                turn: ChatCompletionMessageParam = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        }
                    ],
                }
                second_stream = await client.chat.completions.create(
                    model="sim-chat",
                    messages=[*ASK_WEATHER, turn, tool_result(call.id)],
                    tools=[WEATHER_TOOL],
                    stream=True,
                )
                return first, assemble([chunk async for chunk in second_stream])

        first, second = asyncio.run(loop())
        assert first.finish_reasons[-1] == "tool_calls"
        assert_valid(json.loads(first.calls[0].arguments), WEATHER_PARAMETERS)
        assert second.finish_reasons[-1] == "stop"
        assert second.content
        assert second.calls == {}

    def test_the_sdk_parse_helper_gives_the_arguments_as_the_pydantic_model(
        self, client: OpenAI
    ) -> None:
        """chat.completions.parse with pydantic_function_tool gives parsed_arguments, a
        GetWeather instance equal to the JSON arguments."""
        answer = client.chat.completions.parse(
            model="sim-chat",
            messages=ASK_WEATHER,
            tools=[openai.pydantic_function_tool(GetWeather, name="get_weather")],
        )
        choice = only_choice(answer)
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls
        assert isinstance(call.function.parsed_arguments, GetWeather)
        assert call.function.parsed_arguments.model_dump() == json.loads(call.function.arguments)

    def test_the_sdk_stream_helper_gives_the_same_parsed_call(self, client: OpenAI) -> None:
        """chat.completions.stream's final completion has the call the parse helper has."""
        tool = openai.pydantic_function_tool(GetWeather, name="get_weather")
        parsed = client.chat.completions.parse(model="sim-chat", messages=ASK_WEATHER, tools=[tool])
        with client.chat.completions.stream(
            model="sim-chat", messages=ASK_WEATHER, tools=[tool]
        ) as stream:
            final = stream.get_final_completion()
        (expected,) = only_choice(parsed).message.tool_calls
        (call,) = only_choice(final).message.tool_calls
        assert only_choice(final).finish_reason == "tool_calls"
        assert (call.id, call.function.name) == (expected.id, "get_weather")
        assert call.function.parsed_arguments == expected.function.parsed_arguments


class TestToolChoice:
    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_tool_choice_none_answers_text_even_with_tools(
        self, client: OpenAI, stream: bool
    ) -> None:
        """With tool_choice none the answer is text, never a call."""
        options: dict[str, Any] = {
            "messages": ASK_WEATHER,
            "tools": [WEATHER_TOOL],
            "tool_choice": "none",
        }
        if stream:
            streamed = stream_chat(client, **options)
            assert streamed.content
            assert streamed.calls == {}
            assert streamed.finish_reasons[-1] in ("stop", "length")
            return
        choice = only_choice(client.chat.completions.create(model="sim-chat", **options))
        assert choice.message.content
        assert not choice.message.tool_calls
        assert choice.finish_reason in ("stop", "length")

    def test_tool_choice_required_forces_a_call_even_after_a_tool_result(
        self, client: OpenAI
    ) -> None:
        """required makes a call where auto would answer text: after a tool result."""
        first = client.chat.completions.create(
            model="sim-chat", messages=ASK_WEATHER, tools=[WEATHER_TOOL]
        )
        call = assert_the_weather_is_called(first)
        messages = [*ASK_WEATHER, assistant_turn(first), tool_result(call.id)]
        forced = client.chat.completions.create(
            model="sim-chat", messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
        )
        assert_the_weather_is_called(forced)

    def test_tool_choice_required_calls_one_of_the_tools_with_its_own_arguments(
        self, client: OpenAI
    ) -> None:
        """Of two tools, required calls one, with arguments valid for that one's schema."""
        answer = client.chat.completions.create(
            model="sim-chat",
            messages=TELL_ME,
            tools=[WEATHER_TOOL, CLOCK_TOOL],
            tool_choice="required",
        )
        choice = only_choice(answer)
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls
        for call in choice.message.tool_calls:
            assert call.function.name in PARAMETERS_OF
            assert_valid(json.loads(call.function.arguments), PARAMETERS_OF[call.function.name])

    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_a_named_tool_choice_forces_that_tool(self, client: OpenAI, stream: bool) -> None:
        """Naming get_local_time calls it (not get_weather), with arguments valid for it:
        a pattern, integer bounds and a boolean."""
        named = {"type": "function", "function": {"name": "get_local_time"}}
        options: dict[str, Any] = {
            "messages": ASK_WEATHER,
            "tools": [WEATHER_TOOL, CLOCK_TOOL],
            "tool_choice": named,
        }
        if stream:
            streamed = stream_chat(client, **options)
            assert [(c.name, bool(c.id)) for c in streamed.calls.values()] == [
                ("get_local_time", True)
            ]
            assert streamed.finish_reasons[-1] == "tool_calls"
            arguments = streamed.calls[0].arguments
        else:
            choice = only_choice(client.chat.completions.create(model="sim-chat", **options))
            assert choice.finish_reason == "tool_calls"
            (call,) = choice.message.tool_calls
            assert call.function.name == "get_local_time"
            arguments = call.function.arguments
        assert_valid(json.loads(arguments), CLOCK_PARAMETERS)

    def test_parallel_tool_calls_false_gives_at_most_one_call(self, client: OpenAI) -> None:
        """With parallel_tool_calls false a required turn makes exactly one call."""
        answer = client.chat.completions.create(
            model="sim-chat",
            messages=ASK_WEATHER,
            tools=[WEATHER_TOOL, CLOCK_TOOL],
            tool_choice="required",
            parallel_tool_calls=False,
        )
        assert len(only_choice(answer).message.tool_calls) == 1

    def test_a_named_tool_that_is_not_offered_is_a_400_on_tool_choice(
        self, gateway: LiveGateway
    ) -> None:
        """Naming a tool not in tools is a BadRequestError with param tool_choice, and leaves
        no usage record."""
        secret, key_id, _ = gateway.new_key()
        with pytest.raises(openai.BadRequestError) as caught:
            sdk(gateway, secret).chat.completions.create(
                model="sim-chat",
                messages=ASK_WEATHER,
                tools=[WEATHER_TOOL],
                tool_choice={"type": "function", "function": {"name": "get_local_time"}},
            )
        assert caught.value.status_code == 400
        assert caught.value.param == "tool_choice"
        assert gateway.records(key_id) == []

    def test_tool_choice_required_without_tools_is_a_400_on_tool_choice(
        self, client: OpenAI
    ) -> None:
        """required with no tools to call is a BadRequestError with param tool_choice."""
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="sim-chat", messages=ASK_WEATHER, tool_choice="required"
            )
        assert caught.value.param == "tool_choice"


class TestStructuredOutput:
    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_a_strict_json_schema_answer_validates_against_the_schema(
        self, client: OpenAI, stream: bool
    ) -> None:
        """The content is JSON valid for the strict schema (enum, bounds, arrays, a
        date-time), and finish_reason is stop."""
        options: dict[str, Any] = {"messages": TELL_ME, "response_format": REPORT_FORMAT}
        if stream:
            streamed = stream_chat(client, **options)
            content, finish = streamed.content, streamed.finish_reasons[-1]
        else:
            choice = only_choice(client.chat.completions.create(model="sim-chat", **options))
            content, finish = choice.message.content, choice.finish_reason
        assert finish == "stop"
        assert content is not None
        assert_valid(json.loads(content), REPORT_SCHEMA)

    def test_a_nested_pydantic_schema_answer_validates_and_loads_as_the_model(
        self, client: OpenAI
    ) -> None:
        """A nested model's model_json_schema() (with $defs and $ref) gives a valid instance
        that pydantic loads."""
        schema = Person.model_json_schema()
        assert "$defs" in schema
        answer = client.chat.completions.create(
            model="sim-chat",
            messages=TELL_ME,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": schema},
            },
        )
        content = only_choice(answer).message.content
        assert content is not None
        assert_valid(json.loads(content), schema)
        assert isinstance(Person.model_validate_json(content), Person)

    def test_the_sdk_parse_helper_gives_a_parsed_pydantic_instance(self, client: OpenAI) -> None:
        """chat.completions.parse(response_format=Person) sends a strict schema and gives
        .parsed, a Person."""
        answer = client.chat.completions.parse(
            model="sim-chat", messages=TELL_ME, response_format=Person
        )
        message = only_choice(answer).message
        assert isinstance(message.parsed, Person)
        assert isinstance(message.parsed.address, Address)
        assert message.parsed == Person.model_validate_json(message.content or "")

    def test_the_sdk_stream_helper_gives_the_parsed_instance_of_the_parse_helper(
        self, client: OpenAI
    ) -> None:
        """chat.completions.stream(response_format=Person) ends with the same parsed Person."""
        parsed = client.chat.completions.parse(
            model="sim-chat", messages=TELL_ME, response_format=Person
        )
        with client.chat.completions.stream(
            model="sim-chat", messages=TELL_ME, response_format=Person
        ) as stream:
            final = stream.get_final_completion()
        assert isinstance(only_choice(final).message.parsed, Person)
        assert only_choice(final).message.parsed == only_choice(parsed).message.parsed

    def test_json_object_gives_a_json_object(self, client: OpenAI) -> None:
        """response_format json_object gives content that loads as a JSON object."""
        answer = client.chat.completions.create(
            model="sim-chat",
            messages=[{"role": "user", "content": "Answer in JSON: how are tokens metered?"}],
            response_format={"type": "json_object"},
        )
        content = only_choice(answer).message.content
        assert content is not None
        assert isinstance(json.loads(content), dict)

    def test_a_schema_name_with_a_space_is_a_400_on_its_name(self, client: OpenAI) -> None:
        """A json_schema name outside letters, digits, _ and - is a BadRequestError naming
        response_format.json_schema.name."""
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="sim-chat",
                messages=TELL_ME,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "weather report", "schema": REPORT_SCHEMA},
                },
            )
        assert caught.value.param == "response_format.json_schema.name"


class TestLogprobs:
    def test_each_content_token_has_a_logprob_and_three_sorted_alternatives(
        self, client: OpenAI
    ) -> None:
        """One entry per content token (as many as completion_tokens), each logprob at most
        0, three top entries most likely first with the token itself among them, the
        entries' tokens joining to the content and their bytes its UTF-8."""
        answer = client.chat.completions.create(
            model="sim-chat", messages=TELL_ME, max_tokens=24, logprobs=True, top_logprobs=3
        )
        choice = only_choice(answer)
        assert choice.logprobs is not None
        entries = choice.logprobs.content
        assert entries
        assert answer.usage is not None
        assert len(entries) == answer.usage.completion_tokens
        assert "".join(entry.token for entry in entries) == choice.message.content
        for entry in entries:
            assert entry.logprob <= 0
            assert entry.bytes == list(entry.token.encode())
            assert len(entry.top_logprobs) == 3
            tops = [top.logprob for top in entry.top_logprobs]
            assert tops == sorted(tops, reverse=True)
            assert all(top <= 0 for top in tops)
            assert (entry.token, entry.logprob) in {
                (top.token, top.logprob) for top in entry.top_logprobs
            }

    def test_the_same_answer_twice_has_the_same_logprobs(self, client: OpenAI) -> None:
        """Log probabilities are deterministic: the same request gives the same entries."""

        def ask() -> list[ChatCompletionTokenLogprob]:
            answer = client.chat.completions.create(
                model="sim-chat", messages=TELL_ME, max_tokens=16, logprobs=True, top_logprobs=3
            )
            logprobs = only_choice(answer).logprobs
            assert logprobs is not None and logprobs.content
            return logprobs.content

        assert ask() == ask()

    def test_streamed_logprobs_match_the_non_streamed_ones(self, client: OpenAI) -> None:
        """The logprobs of the chunks, in order, are the non-streamed answer's."""
        options: dict[str, Any] = {
            "messages": TELL_ME,
            "max_tokens": 16,
            "logprobs": True,
            "top_logprobs": 3,
        }
        answer = client.chat.completions.create(model="sim-chat", **options)
        expected = only_choice(answer).logprobs
        assert expected is not None
        streamed = stream_chat(client, **options)
        assert streamed.content == only_choice(answer).message.content
        assert streamed.logprobs == expected.content

    def test_without_logprobs_the_answer_has_none(self, client: OpenAI) -> None:
        """A request that does not ask for log probabilities gets logprobs null."""
        answer = client.chat.completions.create(model="sim-chat", messages=TELL_ME, max_tokens=5)
        assert only_choice(answer).logprobs is None

    def test_top_logprobs_without_logprobs_is_a_400_on_top_logprobs(self, client: OpenAI) -> None:
        """top_logprobs needs logprobs true: a BadRequestError naming top_logprobs."""
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="sim-chat", messages=TELL_ME, max_tokens=5, top_logprobs=3
            )
        assert caught.value.param == "top_logprobs"


class TestReasoning:
    def test_high_effort_counts_reasoning_tokens_within_the_completion(
        self, gateway: LiveGateway, client: OpenAI
    ) -> None:
        """reasoning_effort high: reasoning_tokens above 0, part of completion_tokens (which
        also has the answer), the reasoning text apart as reasoning_content, and the usage
        record keeps the same counts."""
        raw = client.chat.completions.with_raw_response.create(
            model="sim-chat", messages=TELL_ME, reasoning_effort="high"
        )
        answer = raw.parse()
        usage = answer.usage
        assert usage is not None and usage.completion_tokens_details is not None
        reasoning = usage.completion_tokens_details.reasoning_tokens
        assert reasoning is not None and reasoning > 0
        assert usage.completion_tokens > reasoning
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        message = only_choice(answer).message
        assert message.content
        assert (message.model_extra or {}).get("reasoning_content")
        record = gateway.record(raw.headers["x-request-id"])
        assert (record.completion_tokens, record.reasoning_tokens) == (
            usage.completion_tokens,
            reasoning,
        )

    def test_without_reasoning_effort_no_reasoning_tokens_are_counted(self, client: OpenAI) -> None:
        """No reasoning_effort: reasoning_tokens is 0 and there is no reasoning text."""
        answer = client.chat.completions.create(model="sim-chat", messages=TELL_ME)
        assert answer.usage is not None and answer.usage.completion_tokens_details is not None
        assert answer.usage.completion_tokens_details.reasoning_tokens == 0
        assert not (only_choice(answer).message.model_extra or {}).get("reasoning_content")

    def test_a_higher_effort_spends_more_reasoning_tokens(self, client: OpenAI) -> None:
        """low reasons less than high, and the visible answer is the same."""

        def ask(effort: Literal["low", "high"]) -> tuple[int, str | None]:
            answer = client.chat.completions.create(
                model="sim-chat", messages=TELL_ME, reasoning_effort=effort
            )
            assert answer.usage is not None and answer.usage.completion_tokens_details
            tokens = answer.usage.completion_tokens_details.reasoning_tokens or 0
            return tokens, only_choice(answer).message.content

        low, high = ask("low"), ask("high")
        assert 0 < low[0] < high[0]
        assert low[1] == high[1]

    def test_a_streamed_answer_reasons_first_and_reports_the_same_usage(
        self, client: OpenAI
    ) -> None:
        """Streamed: the reasoning text and the answer are those of the non-streamed answer,
        and the usage chunk has its counts."""
        answer = client.chat.completions.create(
            model="sim-chat", messages=TELL_ME, reasoning_effort="medium"
        )
        streamed = stream_chat(client, messages=TELL_ME, reasoning_effort="medium")
        message = only_choice(answer).message
        assert streamed.reasoning == (message.model_extra or {})["reasoning_content"]
        assert streamed.content == message.content
        assert streamed.usage == answer.usage

    def test_an_unknown_reasoning_effort_is_a_400_on_reasoning_effort(self, client: OpenAI) -> None:
        """An effort that is not one of the known ones is a BadRequestError naming it."""
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="sim-chat",
                messages=TELL_ME,
                extra_body={"reasoning_effort": "extreme"},
            )
        assert caught.value.param == "reasoning_effort"


class TestStop:
    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_a_stop_sequence_ends_the_answer_before_it(self, client: OpenAI, stream: bool) -> None:
        """The answer is the full text up to the stop sequence, without it, finish stop."""
        full = only_choice(
            client.chat.completions.create(model="sim-chat", messages=TELL_ME, max_tokens=40)
        ).message.content
        assert full is not None
        stop = " " + full.split(" ")[6]
        expected = full[: full.find(stop)]
        assert expected
        options: dict[str, Any] = {
            "messages": TELL_ME,
            "max_tokens": 40,
            "stop": [stop, "never-said"],
        }
        if stream:
            streamed = stream_chat(client, **options)
            text, finish = streamed.content, streamed.finish_reasons[-1]
        else:
            choice = only_choice(client.chat.completions.create(model="sim-chat", **options))
            text, finish = choice.message.content, choice.finish_reason
        assert finish == "stop"
        assert text == expected
        assert stop not in (text or "")

    def test_a_stop_sequence_also_cuts_reasoned_answers(self, client: OpenAI) -> None:
        """With reasoning, the stop sequence cuts the visible answer, which still stops."""
        full = only_choice(
            client.chat.completions.create(
                model="sim-chat", messages=TELL_ME, reasoning_effort="low", max_tokens=80
            )
        ).message.content
        assert full is not None
        stop = " " + full.split(" ")[4]
        choice = only_choice(
            client.chat.completions.create(
                model="sim-chat",
                messages=TELL_ME,
                reasoning_effort="low",
                max_tokens=80,
                stop=stop,
            )
        )
        assert choice.finish_reason == "stop"
        assert choice.message.content == full[: full.find(stop)]


def admin_headers(gateway: LiveGateway) -> dict[str, str]:
    return {"Authorization": f"Bearer {gateway.admin_token}"}


def funded_key(gateway: LiveGateway, account: str) -> tuple[str, str]:
    """(key secret, account id) of a new account topped up with 10.00 through the admin
    API, once the gateway shows the funds."""
    secret, _, account_id = gateway.new_key(account)
    response = httpx.post(
        f"{gateway.url}/admin/v1/accounts/{account}/transfers",
        json={"amount": TOP_UP, "kind": "topup", "idempotency_key": f"seed-{account}"},
        headers=admin_headers(gateway),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 5
    while balance_of(gateway, account)["balance_nano"] != 10 * NANO:
        assert time.monotonic() < deadline, "the gateway never showed the top-up"
        time.sleep(0.02)
    return secret, account_id


def committed_balance_nano(
    gateway: LiveGateway, account_id: str, expected: int, within_s: float = 5.0
) -> int:
    """The ledger's balance in the store, once it reaches ``expected`` (or the deadline)."""
    deadline = time.monotonic() + within_s
    while (found := billing.balance_of(gateway.db, account_id)) != expected:
        if time.monotonic() > deadline:
            return found
        time.sleep(0.02)
    return found


def hand_priced_nano(prompt_tokens: int, completion_tokens: int) -> int:
    """The charge at 1.00 / 2.00 per million: every completion token (reasoning ones among
    them) once at the output price."""
    return prompt_tokens * INPUT_NANO_PER_TOKEN + completion_tokens * OUTPUT_NANO_PER_TOKEN


class TestBilling:
    def test_a_priced_reasoned_answer_takes_exactly_its_record_charge_from_the_balance(
        self, gateway: LiveGateway
    ) -> None:
        """After a priced request with reasoning, the balance went down by the record's
        charge, which is the hand-computed price with reasoning tokens charged once, as
        output; the store's ledger agrees."""
        secret, account_id = funded_key(gateway, "billed-plain")
        before = settled_balance_nano(gateway, "billed-plain")
        raw = sdk(gateway, secret).chat.completions.with_raw_response.create(
            model="sim-priced", messages=TELL_ME, reasoning_effort="high"
        )
        usage = raw.parse().usage
        assert usage is not None and usage.completion_tokens_details is not None
        reasoning = usage.completion_tokens_details.reasoning_tokens or 0
        assert reasoning > 0
        record = gateway.record(raw.headers["x-request-id"])
        assert (record.prompt_tokens, record.completion_tokens, record.reasoning_tokens) == (
            usage.prompt_tokens,
            usage.completion_tokens,
            reasoning,
        )
        expected = hand_priced_nano(usage.prompt_tokens, usage.completion_tokens)
        assert record.charge_nano == expected
        assert record.charge_nano != expected + reasoning * OUTPUT_NANO_PER_TOKEN
        assert record.loss_nano == 0
        after = settled_balance_nano(gateway, "billed-plain")
        assert before - after == record.charge_nano
        assert committed_balance_nano(gateway, account_id, after) == after

    def test_a_streamed_tool_call_is_billed_by_its_record_charge(
        self, gateway: LiveGateway
    ) -> None:
        """A streamed priced tool call with reasoning: the usage chunk, the record and the
        balance's fall all say the same charge."""
        secret, account_id = funded_key(gateway, "billed-stream")
        before = settled_balance_nano(gateway, "billed-stream")
        streamed = stream_chat(
            sdk(gateway, secret),
            model="sim-priced",
            messages=ASK_WEATHER,
            tools=[WEATHER_TOOL],
            reasoning_effort="low",
        )
        assert streamed.finish_reasons[-1] == "tool_calls"
        assert streamed.usage is not None and streamed.usage.completion_tokens_details
        assert streamed.request_id is not None
        record = gateway.record(streamed.request_id)
        assert not record.estimated
        assert record.reasoning_tokens == streamed.usage.completion_tokens_details.reasoning_tokens
        assert record.reasoning_tokens > 0
        assert record.charge_nano == hand_priced_nano(
            streamed.usage.prompt_tokens, streamed.usage.completion_tokens
        )
        after = settled_balance_nano(gateway, "billed-stream")
        assert before - after == record.charge_nano
        assert committed_balance_nano(gateway, account_id, after) == after

    def test_a_priced_request_without_funds_is_refused_and_charges_nothing(
        self, gateway: LiveGateway
    ) -> None:
        """An account with no funds gets a 402 for a priced model, and its balance stays 0."""
        secret, _, _ = gateway.new_key("unfunded")
        with pytest.raises(openai.APIStatusError) as caught:
            sdk(gateway, secret).chat.completions.create(
                model="sim-priced", messages=ASK_WEATHER, tools=[WEATHER_TOOL]
            )
        assert caught.value.status_code == 402
        assert settled_balance_nano(gateway, "unfunded") == 0

    def test_a_free_model_leaves_the_balance_alone(self, gateway: LiveGateway) -> None:
        """A request to an unpriced model charges 0 and the balance stays as it was."""
        secret, _ = funded_key(gateway, "billed-free")
        raw = sdk(gateway, secret).chat.completions.with_raw_response.create(
            model="sim-chat", messages=TELL_ME, reasoning_effort="low"
        )
        assert gateway.record(raw.headers["x-request-id"]).charge_nano == 0
        assert settled_balance_nano(gateway, "billed-free") == 10 * NANO
