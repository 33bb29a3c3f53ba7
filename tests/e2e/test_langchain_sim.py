"""LangChain's ``ChatOpenAI`` against a live gateway on the sim engine: tools bound with
``bind_tools`` get calls whose args are valid for the tool, a tool loop ends in text, and
``with_structured_output`` gives model instances, by json_schema and by function calling.

One gateway serves the whole module; its sim answers at once (time_scale 0).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import reduce
from operator import add
from typing import Any, Literal

import jsonschema
import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from tests.conftest import LiveGateway, gateway_config, live_gateway


class GetWeather(BaseModel):
    """The current weather in a city."""

    city: str = Field(description="The city, e.g. Paris")
    unit: Literal["c", "f"]


@tool
def get_local_time(timezone: str, hour24: bool) -> str:
    """The local time in a time zone, e.g. Europe/Paris."""
    return "12:00"


class Address(BaseModel):
    street: str
    city: str


class Person(BaseModel):
    """A person the text is about."""

    name: str
    age: int = Field(ge=0, le=130)
    role: Literal["admin", "member", "guest"]
    address: Address
    tags: list[str]


ASK_WEATHER: list[BaseMessage] = [
    SystemMessage("You are a weather assistant. Use the tools."),
    HumanMessage("What is the weather in Paris right now?"),
]
DESCRIBE = "Describe the person who runs the gateway."


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """A live gateway with the sim models, answering at once."""
    home = tmp_path_factory.mktemp("langchain")
    config = gateway_config(None, time_scale=0.0)
    with live_gateway(f"sqlite:///{home / 'tokenmill.db'}", config, home) as live:
        yield live


@pytest.fixture(scope="module")
def llm(gateway: LiveGateway) -> ChatOpenAI:
    """ChatOpenAI on the gateway's sim-chat, on the chat completions API."""
    return chat_model(gateway, gateway.new_key()[0])


def chat_model(gateway: LiveGateway, key: str, **options: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model="sim-chat",
        base_url=gateway.url + "/v1",
        api_key=key,
        max_retries=0,
        timeout=10,
        use_responses_api=False,
        **options,
    )


def parameters_of(schema: Any) -> dict[str, Any]:
    """The JSON schema of a tool's arguments, as LangChain sends it."""
    parameters: dict[str, Any] = convert_to_openai_tool(schema)["function"]["parameters"]
    return parameters


def one_call(message: AIMessage, name: str) -> dict[str, Any]:
    """The message's one tool call, of ``name``, with an id; returns its args."""
    assert len(message.tool_calls) == 1, message.tool_calls
    (call,) = message.tool_calls
    assert call["name"] == name
    assert call["id"]
    assert message.invalid_tool_calls == []
    return call["args"]


class TestBindTools:
    def test_a_bound_tool_is_called_with_args_valid_for_it(self, llm: ChatOpenAI) -> None:
        """bind_tools + invoke gives a tool call whose args validate against the tool's
        schema and load as the tool's model; the finish reason is tool_calls."""
        answer = llm.bind_tools([GetWeather]).invoke(ASK_WEATHER)
        assert isinstance(answer, AIMessage)
        args = one_call(answer, "GetWeather")
        jsonschema.validate(args, parameters_of(GetWeather))
        assert isinstance(GetWeather(**args), GetWeather)
        assert answer.response_metadata["finish_reason"] == "tool_calls"

    def test_a_named_tool_choice_calls_that_tool(self, llm: ChatOpenAI) -> None:
        """tool_choice naming the @tool function calls it, with args valid for it."""
        bound = llm.bind_tools([GetWeather, get_local_time], tool_choice="get_local_time")
        answer = bound.invoke(ASK_WEATHER)
        assert isinstance(answer, AIMessage)
        args = one_call(answer, "get_local_time")
        jsonschema.validate(args, parameters_of(get_local_time))

    def test_the_tool_loop_ends_in_text_after_the_tool_result(self, llm: ChatOpenAI) -> None:
        """The call, then a ToolMessage with its result: the next answer is text that stops."""
        bound = llm.bind_tools([GetWeather])
        first = bound.invoke(ASK_WEATHER)
        assert isinstance(first, AIMessage)
        one_call(first, "GetWeather")
        result = ToolMessage('{"temperature_c": 21}', tool_call_id=first.tool_calls[0]["id"])
        second = bound.invoke([*ASK_WEATHER, first, result])
        assert isinstance(second, AIMessage)
        assert second.tool_calls == []
        assert isinstance(second.content, str) and second.content
        assert second.response_metadata["finish_reason"] == "stop"

    def test_a_streamed_tool_call_adds_up_to_the_invoked_one(self, llm: ChatOpenAI) -> None:
        """The chunks of a streamed call add up to the call invoke gives."""
        bound = llm.bind_tools([GetWeather])
        invoked = bound.invoke(ASK_WEATHER)
        chunks = list(bound.stream(ASK_WEATHER))
        assert len(chunks) > 2
        assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
        streamed = reduce(add, chunks)
        assert isinstance(invoked, AIMessage) and isinstance(streamed, AIMessageChunk)
        assert [(c["id"], c["name"], c["args"]) for c in streamed.tool_calls] == [
            (c["id"], c["name"], c["args"]) for c in invoked.tool_calls
        ]


class TestStructuredOutput:
    @pytest.mark.parametrize("method", ["json_schema", "function_calling"])
    def test_structured_output_returns_a_model_instance(
        self, llm: ChatOpenAI, method: Literal["json_schema", "function_calling"]
    ) -> None:
        """with_structured_output(Person) gives a Person, nested Address and all."""
        person = llm.with_structured_output(Person, method=method).invoke(DESCRIBE)
        assert isinstance(person, Person)
        assert isinstance(person.address, Address)
        assert 0 <= person.age <= 130

    @pytest.mark.parametrize("method", ["json_schema", "function_calling"])
    def test_structured_output_with_the_raw_message_has_no_parsing_error(
        self, llm: ChatOpenAI, method: Literal["json_schema", "function_calling"]
    ) -> None:
        """include_raw gives the raw AIMessage, the parsed Person and no parsing error."""
        found = llm.with_structured_output(Person, method=method, include_raw=True).invoke(DESCRIBE)
        assert isinstance(found, dict)
        assert found["parsing_error"] is None
        assert isinstance(found["parsed"], Person)
        assert isinstance(found["raw"], AIMessage)


class TestUsage:
    def test_reasoning_effort_shows_in_the_usage_metadata(self, gateway: LiveGateway) -> None:
        """reasoning_effort high: the usage metadata counts reasoning output tokens, within
        the output tokens."""
        answer = chat_model(gateway, gateway.new_key()[0], reasoning_effort="high").invoke(DESCRIBE)
        assert isinstance(answer, AIMessage)
        usage = answer.usage_metadata
        assert usage is not None
        reasoning = usage.get("output_token_details", {}).get("reasoning", 0)
        assert 0 < reasoning < usage["output_tokens"]
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
