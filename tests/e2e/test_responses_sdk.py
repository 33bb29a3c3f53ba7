"""The OpenAI Responses surface through the official openai SDK, unchanged, against a live
gateway on loopback, over each engine (the sim, a fake OpenAI-compatible upstream, the fake
Anthropic API), streamed and not: a plain answer (its text, status, usage equal to its
usage record, a balance moved by exactly the record's charge), the order and numbering of
a stream's events, the output cap reached (incomplete, charged for what was produced), and
a two-turn tool loop with function tools and each tool choice.

One pair of fake upstreams and one gateway serve the module; each test has a client of an
account of its own (``responses_engines``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import LiveGateway
from tests.e2e.responses_engines import (
    AGENT_CACHED_TOKENS,
    AGENT_REASONING_TOKENS,
    AGENT_TEXT,
    ARGUMENTS,
    ENGINE_NAMES,
    FORECAST_TOOL,
    QUESTION,
    TELL_ME,
    WEATHER_TOOL,
    Client,
    Engine,
    Upstreams,
    answer,
    assert_billed,
    assert_upstream_got_the_loop,
    assert_usage_is_the_record,
    assert_valid_calls,
    call_outputs,
    client_of,
    engine_named,
    function_calls,
    message_events,
    output_of,
    responses_gateway,
    started_upstreams,
    streamed,
)
from tokenmill.testing import FAKE_CACHE_READ_TOKENS, FAKE_CACHE_WRITE_TOKENS

ONE_MESSAGE_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",  # one or more
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
CAP_TOKENS = 4  # below every engine's whole answer to TELL_ME
TOOLS = [WEATHER_TOOL, FORECAST_TOOL]
ASKED: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
# Each tool choice as the upstream's API names it.
CHOICE_RECEIVED: dict[str, dict[str, Any]] = {
    "openai": {"required": "required", "none": "none"},
    "anthropic": {"required": {"type": "any"}, "none": {"type": "none"}},
}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with started_upstreams() as started:
        yield started


@pytest.fixture(scope="module")
def gateway(
    upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    with responses_gateway(upstreams, tmp_path_factory.mktemp("responses-sdk")) as live:
        yield live


@pytest.fixture(params=ENGINE_NAMES)
def engine(request: pytest.FixtureRequest, upstreams: Upstreams) -> Engine:
    return engine_named(request.param, upstreams)


@pytest.fixture
def client(gateway: LiveGateway) -> Iterator[Client]:
    with client_of(gateway) as made:
        yield made


def assert_engine_usage(engine: Engine, usage: Any) -> None:
    """What each upstream reports beside its text reached the client: the fake agent's
    cached and reasoning tokens, the Anthropic cache's reads and writes."""
    details = usage.input_tokens_details
    if engine.name == "openai":
        assert details.cached_tokens == AGENT_CACHED_TOKENS
        assert usage.output_tokens_details.reasoning_tokens == AGENT_REASONING_TOKENS
    elif engine.name == "anthropic":
        assert details.cached_tokens == FAKE_CACHE_READ_TOKENS
        assert details.cache_write_tokens == FAKE_CACHE_WRITE_TOKENS


class TestPlainAnswer:
    @pytest.mark.parametrize("stream", [False, True])
    def test_a_plain_answer_is_text_whose_usage_is_its_record_and_whose_charge_is_paid(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """A completed message of text; the usage the client sees is its usage record's,
        kind by kind, and the balance fell by exactly the record's charge."""
        before = client.balance_nano()
        response = answer(client, stream=stream, model=engine.model, input=TELL_ME)
        assert (response.status, response.error, response.incomplete_details) == (
            "completed",
            None,
            None,
        )
        (message,) = output_of(response)
        assert (message.type, message.role, message.status) == ("message", "assistant", "completed")
        assert response.output_text.strip()
        assert response.output_text == message.content[0].text
        if engine.name == "openai":
            assert response.output_text == AGENT_TEXT
        record = client.record()
        assert (record.status, record.model) == ("ok", engine.model)
        assert_usage_is_the_record(response.usage, record)
        assert_engine_usage(engine, response.usage)
        assert_billed(client, before, record)

    def test_a_stream_opens_fills_and_closes_one_message_numbered_in_order(
        self, engine: Engine, client: Client
    ) -> None:
        """created, in_progress, the item and its part added, text deltas, each done in
        turn, completed; sequence numbers count up from 0; the deltas join to the text
        of the done events and of the final response, which has the record's usage."""
        events = streamed(client, model=engine.model, input=TELL_ME)
        assert message_events(events) == ONE_MESSAGE_EVENTS
        deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
        assert len(deltas) > 1, "the text came in one piece, not streamed"
        (text_done,) = [event for event in events if event.type == "response.output_text.done"]
        final = events[-1].response
        assert "".join(deltas) == text_done.text == final.output_text
        opening = events[0].response
        assert (opening.id, opening.status, opening.output, opening.usage) == (
            final.id,
            "in_progress",
            [],
            None,
        )
        assert final.status == "completed"
        assert_usage_is_the_record(final.usage, client.record())

    def test_the_sdk_stream_helper_builds_the_response_of_the_deltas(
        self, engine: Engine, client: Client
    ) -> None:
        """``responses.stream`` gives the text deltas and a final response of that text,
        with the record's usage."""
        with client.sdk.responses.stream(model=engine.model, input=TELL_ME) as stream:
            text = "".join(
                event.delta for event in stream if event.type == "response.output_text.delta"
            )
            final = stream.get_final_response()
        assert text.strip()
        assert final.output_text == text
        assert final.status == "completed"
        assert_usage_is_the_record(final.usage, client.record())


class TestStreamHelperCalls:
    def test_the_sdk_stream_helper_parses_a_strict_tools_arguments(
        self, engine: Engine, client: Client
    ) -> None:
        """``responses.stream`` with a strict function tool gives the call's arguments
        parsed, as the arguments text says and valid against the tool's schema."""
        with client.sdk.responses.stream(
            model=engine.model, input=QUESTION, tools=[WEATHER_TOOL]
        ) as stream:
            final = stream.get_final_response()
        (call,) = assert_valid_calls(final)
        assert call.parsed_arguments == json.loads(call.arguments)


class TestOutputCap:
    @pytest.mark.parametrize("stream", [False, True])
    def test_reaching_max_output_tokens_is_incomplete_and_charged_for_what_was_produced(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """An answer cut at ``max_output_tokens`` is incomplete (reason max_output_tokens,
        its message incomplete), has produced exactly the cap, and is billed for that."""
        before = client.balance_nano()
        options: dict[str, Any] = {
            "model": engine.capped_model,
            "input": TELL_ME,
            "max_output_tokens": CAP_TOKENS,
        }
        if stream:
            events = streamed(client, **options)
            assert events[-1].type == "response.incomplete"
            response = events[-1].response
        else:
            response = client.sdk.responses.create(**options)
        assert response.status == "incomplete"
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
        assert response.max_output_tokens == CAP_TOKENS
        (message,) = output_of(response)
        assert message.status == "incomplete"
        assert message.content[0].text
        assert response.usage is not None
        assert response.usage.output_tokens == CAP_TOKENS
        if engine.received is not None:
            assert engine.last_received()["max_tokens"] == CAP_TOKENS
        record = client.record()
        assert_usage_is_the_record(response.usage, record)
        assert_billed(client, before, record)


@pytest.mark.parametrize("stream", [False, True])
class TestToolLoop:
    def test_the_two_turn_loop_gets_function_calls_then_text(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """A question with tools gets calls of valid arguments; sending back the output
        items and a function_call_output for each gets a text answer, its usage recorded."""
        first = answer(client, stream=stream, model=engine.model, input=ASKED, tools=TOOLS)
        assert first.status == "completed"
        calls = assert_valid_calls(first)
        if engine.received is not None:
            assert [json.loads(call.arguments) for call in calls] == [ARGUMENTS]
        turn = [*ASKED, *first.output, *call_outputs(first)]
        second = answer(client, stream=stream, model=engine.model, input=turn, tools=TOOLS)
        assert second.status == "completed"
        assert function_calls(second) == []
        assert second.output_text.strip()
        assert_upstream_got_the_loop(engine, calls)
        assert_usage_is_the_record(second.usage, client.record())

    def test_parallel_tool_calls_false_gives_one_call_and_goes_up(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """With two tools and ``parallel_tool_calls`` false there is one call, the response
        says so, and the upstream was told in its own words."""
        response = answer(
            client,
            stream=stream,
            model=engine.model,
            input="What is the weather in Paris and in Rome?",
            tools=TOOLS,
            parallel_tool_calls=False,
        )
        assert len(assert_valid_calls(response)) == 1
        assert response.parallel_tool_calls is False
        if engine.name == "openai":
            assert engine.last_received()["parallel_tool_calls"] is False
        elif engine.name == "anthropic":
            assert engine.last_received()["tool_choice"]["disable_parallel_tool_use"] is True

    @pytest.mark.parametrize("named", ["get_weather", "get_forecast"])
    def test_a_named_function_choice_calls_that_function(
        self, engine: Engine, client: Client, stream: bool, named: str
    ) -> None:
        """Naming either tool gets calls of that tool only (each engine, left to choose,
        picks one of them: naming both shows the choice is obeyed)."""
        response = answer(
            client,
            stream=stream,
            model=engine.model,
            input=ASKED,
            tools=TOOLS,
            tool_choice={"type": "function", "name": named},
        )
        assert {call.name for call in assert_valid_calls(response)} == {named}

    def test_tool_choice_required_calls_a_tool_and_goes_up_as_required(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """``required`` gets a valid call, and reaches the upstream as its API says it."""
        response = answer(
            client,
            stream=stream,
            model=engine.model,
            input=ASKED,
            tools=TOOLS,
            tool_choice="required",
        )
        assert_valid_calls(response)
        assert response.tool_choice == "required"
        if engine.name in CHOICE_RECEIVED:
            assert engine.last_received()["tool_choice"] == CHOICE_RECEIVED[engine.name]["required"]

    def test_tool_choice_none_answers_text_with_tools_offered(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """``none`` gets text and no call although tools are offered, and goes up."""
        response = answer(
            client, stream=stream, model=engine.model, input=ASKED, tools=TOOLS, tool_choice="none"
        )
        assert function_calls(response) == []
        assert response.output_text.strip()
        if engine.name in CHOICE_RECEIVED:
            assert engine.last_received()["tool_choice"] == CHOICE_RECEIVED[engine.name]["none"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("engine_name", ["sim", "openai"])
def test_tool_choice_required_forces_a_call_even_after_a_tool_result(
    upstreams: Upstreams, client: Client, stream: bool, engine_name: str
) -> None:
    """Where a tool result would get text, ``required`` still gets a valid call (the fake
    Anthropic API answers any tool result with text, so it is not asked)."""
    engine = engine_named(engine_name, upstreams)
    first = answer(client, stream=stream, model=engine.model, input=ASKED, tools=TOOLS)
    turn = [*ASKED, *first.output, *call_outputs(first)]
    again = answer(
        client, stream=stream, model=engine.model, input=turn, tools=TOOLS, tool_choice="required"
    )
    assert_valid_calls(again)
