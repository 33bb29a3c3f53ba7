"""The Anthropic Messages surface through the official ``anthropic`` SDK, unchanged, against a
live gateway on loopback, over each engine (the sim, a fake OpenAI-compatible upstream, the
fake Anthropic API), streamed and not: a plain answer (its text, stop reason, usage equal to
its usage record, a balance moved by exactly the record's charge), the events of a stream in
order, the output cap reached, a two-turn tool loop whose inputs validate against their
schemas, each tool choice, stop sequences, a system prompt as a string and as blocks with
``cache_control``, and extended thinking. Over the ``anthropic`` engine the call is relayed
natively: what goes up is the SDK's body with only the model and ``max_tokens`` changed,
and what comes back is the upstream's bytes, unchanged.

One pair of fake upstreams and one gateway serve the module; each test has a client of an
account of its own (``messages_engines``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import jsonschema
import pytest
from anthropic.types import Message, MessageParam, TextBlockParam, ThinkingConfigEnabledParam
from pydantic import BaseModel

from tests.conftest import LiveGateway
from tests.e2e.messages_engines import (
    AGENT_CACHED_TOKENS,
    AGENT_REASONING_TOKENS,
    AGENT_TEXT,
    AGENT_THINKING,
    ARGUMENTS,
    ASKED,
    CACHE_WRITE_NANO_PER_TOKEN,
    CACHED_INPUT_NANO_PER_TOKEN,
    CLAUDE_UPSTREAM_MODEL,
    ENGINE_NAMES,
    INPUT_NANO_PER_TOKEN,
    OUTPUT_NANO_PER_TOKEN,
    REPORT,
    REPORT_SCHEMA,
    SCHEMA_OF,
    TOLD,
    TOOL_OUTPUT,
    TOOLS,
    Client,
    Engine,
    Upstreams,
    answer,
    asked_directly,
    assert_billed,
    assert_usage_is_the_record,
    blocks_of,
    client_of,
    engine_named,
    messages_config,
    messages_gateway,
    started_upstreams,
    streamed_events,
    text_of,
)
from tokenmill.testing import (
    FAKE_ANSWER_WORDS_COUNT,
    FAKE_CACHE_READ_TOKENS,
    FAKE_CACHE_WRITE_TOKENS,
    FAKE_THINKING_SIGNATURE,
    FAKE_THINKING_TEXT,
    FAKE_WORDS,
)

WHOLE_ANSWER = "".join(word + " " for word in FAKE_WORDS[:FAKE_ANSWER_WORDS_COUNT])
CAP_TOKENS = 4  # below every engine's whole answer to TOLD
SYSTEM_TEXT = "You are a weather assistant. Answer in one sentence."
SYSTEM_BLOCKS: list[TextBlockParam] = [
    {"type": "text", "text": SYSTEM_TEXT, "cache_control": {"type": "ephemeral"}}
]
THINKING_BUDGET_TOKENS = 1024  # Anthropic's least budget
THINKING: ThinkingConfigEnabledParam = {"type": "enabled", "budget_tokens": THINKING_BUDGET_TOKENS}
THINKING_MAX_TOKENS = 2048
# The effort the openai engine asks a chat server for in place of that budget (docs/engines.md:
# a budget up to 2048 tokens is the low effort).
THINKING_EFFORT = "low"
ONE_TEXT_EVENTS = [
    "message_start",
    "content_block_start",
    "content_block_delta",  # one or more
    "content_block_stop",
    "message_delta",
    "message_stop",
]
# Each tool choice as the upstream's API names it.
CHOICE_RECEIVED: dict[str, dict[str, Any]] = {
    "openai": {
        "any": "required",
        "none": "none",
        "tool": {"type": "function", "function": {"name": "get_forecast"}},
    },
    "anthropic": {
        "any": {"type": "any"},
        "none": {"type": "none"},
        "tool": {"type": "tool", "name": "get_forecast"},
    },
}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with started_upstreams() as started:
        yield started


@pytest.fixture(scope="module")
def gateway(
    upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    home = tmp_path_factory.mktemp("messages-sdk")
    with messages_gateway(upstreams, home, messages_config(upstreams)) as live:
        yield live


@pytest.fixture(params=ENGINE_NAMES)
def engine(request: pytest.FixtureRequest, upstreams: Upstreams) -> Engine:
    return engine_named(request.param, upstreams)


@pytest.fixture
def client(gateway: LiveGateway) -> Iterator[Client]:
    with client_of(gateway) as made:
        yield made


def model_shown(engine: Engine) -> str:
    """The model a message names: the one asked for, but over the anthropic engine the
    upstream's own (its body is relayed unchanged)."""
    return CLAUDE_UPSTREAM_MODEL if engine.name == "anthropic" else engine.model


def folded_kinds(events: list[Any]) -> list[str]:
    """The types of a stream's events, runs of content_block_delta folded into one."""
    kinds: list[str] = []
    for event in events:
        if event.type == "content_block_delta" and kinds[-1:] == [event.type]:
            continue
        kinds.append(event.type)
    return kinds


def assert_engine_usage(engine: Engine, message: Message) -> None:
    """What each upstream reports beside its text reached the client: the fake agent's
    cached tokens, the Anthropic cache's reads and writes; the sim caches nothing."""
    usage = message.usage
    cache = (usage.cache_read_input_tokens, usage.cache_creation_input_tokens)
    if engine.name == "openai":
        assert cache == (AGENT_CACHED_TOKENS, 0)
    elif engine.name == "anthropic":
        assert cache == (FAKE_CACHE_READ_TOKENS, FAKE_CACHE_WRITE_TOKENS)
    else:
        assert cache == (0, 0)


def assert_valid_tool_use(message: Message, name: str | None = None) -> Any:
    """The message is one call of an offered tool (``name``, if given), its input valid
    against that tool's schema; returns the call."""
    assert message.stop_reason == "tool_use"
    (call,) = blocks_of(message, "tool_use")
    assert call.id
    assert call.name in SCHEMA_OF
    if name is not None:
        assert call.name == name
    jsonschema.Draft202012Validator(SCHEMA_OF[call.name]).validate(call.input)
    return call


def loop_received(engine: Engine) -> tuple[list[tuple[str, str, Any]], dict[str, str]]:
    """The calls (id, name, input) and the results (by call id) of the last request the
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
                given = block["content"]
                results[block["tool_use_id"]] = (
                    given if isinstance(given, str) else "".join(b["text"] for b in given)
                )
    return calls, results


def tool_turn(first: Message, question: list[MessageParam] = ASKED) -> list[Any]:
    """The conversation after ``first``: the question, the assistant's content as it came
    (the SDK's own blocks), and a tool_result for each of its calls."""
    results = [
        {"type": "tool_result", "tool_use_id": call.id, "content": TOOL_OUTPUT}
        for call in blocks_of(first, "tool_use")
    ]
    return [
        *question,
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": results},
    ]


class TestPlainAnswer:
    @pytest.mark.parametrize("stream", [False, True])
    def test_a_plain_answer_is_text_whose_usage_is_its_record_and_whose_charge_is_paid(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """One text block, end_turn, no stop sequence; the usage the client sees is its
        usage record's, kind by kind, and the balance fell by exactly the record's charge."""
        before = client.balance_nano()
        message = answer(client, stream=stream, model=engine.model, messages=TOLD)
        assert (message.type, message.role, message.model) == (
            "message",
            "assistant",
            model_shown(engine),
        )
        assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
        (block,) = message.content
        assert block.type == "text" and block.text.strip()
        if engine.name == "openai":
            assert block.text == AGENT_TEXT
        elif engine.name == "anthropic":
            assert block.text == WHOLE_ANSWER
        record = client.record()
        assert (record.status, record.model) == ("ok", engine.model)
        assert_usage_is_the_record(message.usage, record)
        assert_engine_usage(engine, message)
        assert_billed(client, before, record)

    def test_a_stream_is_message_start_one_text_block_then_message_delta_and_stop(
        self, engine: Engine, client: Client
    ) -> None:
        """message_start (with the message's id and no content yet), one text block
        started, filled in several deltas and stopped at index 0, message_delta with the
        stop reason and the record's output tokens, message_stop; the deltas join to the
        text a whole answer to the same request has."""
        events = streamed_events(client, model=engine.model, messages=TOLD)
        assert folded_kinds(events) == ONE_TEXT_EVENTS
        opening = events[0].message
        assert (opening.content, opening.stop_reason) == ([], None)
        assert opening.id.startswith("msg_")
        deltas = [event.delta.text for event in events if event.type == "content_block_delta"]
        assert len(deltas) > 1, "the text came in one piece, not streamed"
        assert {event.index for event in events if hasattr(event, "index")} == {0}
        stopped = events[-2]
        assert (stopped.delta.stop_reason, stopped.delta.stop_sequence) == ("end_turn", None)
        assert stopped.usage.output_tokens == client.record().completion_tokens
        whole = answer(client, stream=False, model=engine.model, messages=TOLD)
        assert "".join(deltas) == text_of(whole)

    def test_the_sdk_stream_helper_gives_the_text_and_the_final_message(
        self, engine: Engine, client: Client
    ) -> None:
        """``messages.stream``: ``text_stream`` yields the text, and the final message has
        that text and the record's usage."""
        with client.sdk.messages.stream(
            model=engine.model, max_tokens=256, messages=TOLD
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text.strip()
        assert text_of(final) == text
        assert final.stop_reason == "end_turn"
        assert_usage_is_the_record(final.usage, client.record())

    @pytest.mark.parametrize("stream", [False, True])
    def test_reaching_max_tokens_stops_there_and_is_charged_for_what_was_produced(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """An answer cut at ``max_tokens`` stops with max_tokens, has produced exactly
        the cap (which went up as it was asked), and is billed for that."""
        before = client.balance_nano()
        message = answer(
            client, stream=stream, model=engine.capped_model, messages=TOLD, max_tokens=CAP_TOKENS
        )
        assert message.stop_reason == "max_tokens"
        assert text_of(message).strip()
        assert message.usage.output_tokens == CAP_TOKENS
        if engine.received is not None:
            assert engine.last_received()["max_tokens"] == CAP_TOKENS
        record = client.record()
        assert_usage_is_the_record(message.usage, record)
        assert_billed(client, before, record)


@pytest.mark.parametrize("stream", [False, True])
class TestToolLoop:
    def test_the_two_turn_loop_gets_tool_use_then_text(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """Tools with an input_schema: the question gets a tool_use whose input validates
        (stop_reason tool_use); sending the assistant's content back with a tool_result
        gets text (end_turn), and the upstream received the call and its result."""
        first = answer(client, stream=stream, model=engine.model, messages=ASKED, tools=TOOLS)
        call = assert_valid_tool_use(first)
        if engine.received is not None:
            assert call.input == ARGUMENTS
        if engine.name == "anthropic":
            assert engine.last_received()["tools"] == TOOLS
        second = answer(
            client, stream=stream, model=engine.model, messages=tool_turn(first), tools=TOOLS
        )
        assert second.stop_reason == "end_turn"
        assert blocks_of(second, "tool_use") == []
        assert text_of(second).strip()
        if engine.received is not None:
            assert loop_received(engine) == (
                [(call.id, call.name, call.input)],
                {call.id: TOOL_OUTPUT},
            )
        assert_usage_is_the_record(second.usage, client.record())

    def test_tool_choice_any_calls_a_tool_and_goes_up_as_the_upstream_says_it(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """``any`` gets a valid call, and reaches the upstream in its own words."""
        message = answer(
            client,
            stream=stream,
            model=engine.model,
            messages=ASKED,
            tools=TOOLS,
            tool_choice={"type": "any"},
        )
        assert_valid_tool_use(message)
        if engine.name in CHOICE_RECEIVED:
            assert engine.last_received()["tool_choice"] == CHOICE_RECEIVED[engine.name]["any"]

    def test_tool_choice_tool_calls_the_named_tool(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """Naming the second tool gets a call of it (the first is what each engine calls
        when left to choose)."""
        message = answer(
            client,
            stream=stream,
            model=engine.model,
            messages=ASKED,
            tools=TOOLS,
            tool_choice={"type": "tool", "name": "get_forecast"},
        )
        assert_valid_tool_use(message, "get_forecast")
        if engine.name in CHOICE_RECEIVED:
            assert engine.last_received()["tool_choice"] == CHOICE_RECEIVED[engine.name]["tool"]

    def test_tool_choice_none_answers_text_with_tools_offered(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """``none`` gets text and no call although tools are offered."""
        message = answer(
            client,
            stream=stream,
            model=engine.model,
            messages=ASKED,
            tools=TOOLS,
            tool_choice={"type": "none"},
        )
        assert message.stop_reason == "end_turn"
        assert blocks_of(message, "tool_use") == []
        assert text_of(message).strip()
        if engine.name in CHOICE_RECEIVED:
            assert engine.last_received()["tool_choice"] == CHOICE_RECEIVED[engine.name]["none"]

    @pytest.mark.parametrize("engine_name", ["sim", "openai"])
    def test_tool_choice_any_calls_a_tool_even_after_a_tool_result(
        self, upstreams: Upstreams, client: Client, stream: bool, engine_name: str
    ) -> None:
        """Where a tool result would get text, ``any`` still gets a valid call (the fake
        Anthropic API answers any tool result with text, so it is not asked)."""
        engine = engine_named(engine_name, upstreams)
        first = answer(client, stream=stream, model=engine.model, messages=ASKED, tools=TOOLS)
        again = answer(
            client,
            stream=stream,
            model=engine.model,
            messages=tool_turn(first),
            tools=TOOLS,
            tool_choice={"type": "any"},
        )
        assert_valid_tool_use(again)


@pytest.mark.parametrize("stream", [False, True])
class TestStopSequences:
    def test_the_sim_stops_at_a_stop_sequence_and_names_it(
        self, client: Client, stream: bool
    ) -> None:
        """A word from the middle of the sim's answer as a stop sequence: the same answer
        up to it (the sequence left out), stop_reason stop_sequence naming it."""
        whole = text_of(answer(client, stream=False, model="sim-priced", messages=TOLD))
        words = whole.split()
        stop = " " + words[len(words) // 2]
        message = answer(
            client, stream=stream, model="sim-priced", messages=TOLD, stop_sequences=[stop]
        )
        assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", stop)
        assert text_of(message) == whole[: whole.index(stop)]
        assert_usage_is_the_record(message.usage, client.record())

    def test_the_anthropic_upstream_stops_and_the_sequence_is_relayed(
        self, upstreams: Upstreams, client: Client, stream: bool
    ) -> None:
        """Over the anthropic engine the stop sequences go up as sent, and the stop
        reason and sequence come back from the upstream."""
        stop = FAKE_WORDS[3]
        message = answer(
            client,
            stream=stream,
            model="claude-priced",
            messages=TOLD,
            stop_sequences=[stop, "never-said"],
        )
        assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", stop)
        assert text_of(message) == WHOLE_ANSWER[: WHOLE_ANSWER.index(stop)]
        assert upstreams.anthropic.requests[-1]["stop_sequences"] == [stop, "never-said"]

    def test_over_the_openai_engine_stop_sequences_go_up_as_chats_stop(
        self, upstreams: Upstreams, client: Client, stream: bool
    ) -> None:
        """Over a chat server the stop sequences go up as ``stop``; the server stops by
        itself and, as chat names no sequence, the turn ends end_turn (the fake agent says
        its whole text: it has no stop sequence in it)."""
        message = answer(
            client, stream=stream, model="agent-priced", messages=TOLD, stop_sequences=["zebra"]
        )
        assert upstreams.openai.requests[-1]["stop"] == ["zebra"]
        assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
        assert text_of(message) == AGENT_TEXT


class TestSystem:
    def test_a_system_string_and_system_blocks_reach_the_model_alike(
        self, engine: Engine, client: Client
    ) -> None:
        """The system prompt, as a string or as a cache_control block of the same text,
        counts in the prompt alike (more than no system prompt) and reaches the upstream:
        verbatim over the anthropic engine, as a chat system message over the openai one."""
        bare = answer(client, stream=False, model=engine.model, messages=TOLD)
        prompts = []
        for system in (SYSTEM_TEXT, SYSTEM_BLOCKS):
            message = answer(client, stream=False, model=engine.model, messages=TOLD, system=system)
            assert text_of(message).strip()
            prompts.append(client.record().prompt_tokens)
            if engine.name == "anthropic":
                assert engine.last_received()["system"] == system
            elif engine.name == "openai":
                first = engine.last_received()["messages"][0]
                assert first == {"role": "system", "content": SYSTEM_TEXT}
        assert prompts[0] == prompts[1]
        assert prompts[0] > bare.usage.input_tokens + (bare.usage.cache_read_input_tokens or 0)

    @pytest.mark.parametrize("stream", [False, True])
    def test_cache_reads_and_writes_of_the_anthropic_upstream_are_priced_apart(
        self, upstreams: Upstreams, client: Client, stream: bool
    ) -> None:
        """System blocks with cache_control go up intact; the upstream's cache reads and
        writes reach the client and the record apart from the fresh input, and each is
        charged at its own price: the charge differs from an all-fresh prompt's by exactly
        the reads' and the writes' price differences."""
        before = client.balance_nano()
        message = answer(
            client, stream=stream, model="claude-priced", messages=TOLD, system=SYSTEM_BLOCKS
        )
        assert upstreams.anthropic.requests[-1]["system"] == SYSTEM_BLOCKS
        usage = message.usage
        assert usage.cache_read_input_tokens == FAKE_CACHE_READ_TOKENS
        assert usage.cache_creation_input_tokens == FAKE_CACHE_WRITE_TOKENS
        record = client.record()
        assert (record.cached_tokens, record.cache_write_tokens) == (
            FAKE_CACHE_READ_TOKENS,
            FAKE_CACHE_WRITE_TOKENS,
        )
        assert_usage_is_the_record(usage, record)
        assert_billed(client, before, record)
        all_fresh = (
            record.prompt_tokens * INPUT_NANO_PER_TOKEN
            + record.completion_tokens * OUTPUT_NANO_PER_TOKEN
        )
        reads = FAKE_CACHE_READ_TOKENS * (CACHED_INPUT_NANO_PER_TOKEN - INPUT_NANO_PER_TOKEN)
        writes = FAKE_CACHE_WRITE_TOKENS * (CACHE_WRITE_NANO_PER_TOKEN - INPUT_NANO_PER_TOKEN)
        assert record.charge_nano - all_fresh == reads + writes


@pytest.mark.parametrize("stream", [False, True])
class TestThinking:
    def test_thinking_with_a_budget_comes_back_as_a_thinking_block_before_the_text(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """``thinking`` with ``budget_tokens``: a thinking block, then the text; the
        thinking is counted among the output tokens, within the budget. The sim thinks
        in its own words, the Anthropic upstream's block (with its signature) is relayed,
        and the openai engine asks its chat server for an effort instead and shows the
        server's ``reasoning_content`` as the thinking."""
        message = answer(
            client,
            stream=stream,
            model=engine.model,
            messages=TOLD,
            max_tokens=THINKING_MAX_TOKENS,
            thinking=THINKING,
        )
        assert [block.type for block in message.content] == ["thinking", "text"]
        thinking: Any = message.content[0]  # a ThinkingBlock, as asserted
        assert thinking.thinking.strip()
        assert text_of(message).strip()
        record = client.record()
        assert_usage_is_the_record(message.usage, record)
        assert 0 < record.reasoning_tokens <= THINKING_BUDGET_TOKENS
        if engine.name == "anthropic":
            assert (thinking.thinking, thinking.signature) == (
                FAKE_THINKING_TEXT,
                FAKE_THINKING_SIGNATURE,
            )
            assert engine.last_received()["thinking"] == THINKING
        elif engine.name == "openai":
            assert thinking.thinking == AGENT_THINKING
            assert record.reasoning_tokens == AGENT_REASONING_TOKENS
            sent = engine.last_received()
            assert sent["reasoning_effort"] == THINKING_EFFORT
            assert "thinking" not in sent
        else:
            assert record.reasoning_tokens < record.completion_tokens

    def test_a_thinking_tool_loop_sends_the_thinking_back(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """Thinking with tools: a thinking block and a valid call; the assistant's content
        sent back whole (thinking first, as Anthropic requires) gets text. The Anthropic
        upstream gets the thinking block back with its signature; a chat server gets the
        call and no reasoning (chat takes none back)."""
        options: dict[str, Any] = {
            "model": engine.model,
            "max_tokens": THINKING_MAX_TOKENS,
            "thinking": THINKING,
            "tools": TOOLS,
        }
        first = answer(client, stream=stream, messages=ASKED, **options)
        assert first.content[0].type == "thinking"
        call = assert_valid_tool_use(first)
        second = answer(client, stream=stream, messages=tool_turn(first), **options)
        assert second.stop_reason == "end_turn"
        assert text_of(second).strip()
        if engine.name == "anthropic":
            turn = engine.last_received()["messages"][1]
            assert turn["content"][0] == {
                "type": "thinking",
                "thinking": FAKE_THINKING_TEXT,
                "signature": FAKE_THINKING_SIGNATURE,
            }
        elif engine.name == "openai":
            turn = engine.last_received()["messages"][1]
            assert turn["role"] == "assistant"
            assert [c["id"] for c in turn["tool_calls"]] == [call.id]
            assert AGENT_THINKING not in json.dumps(engine.last_received())


class Report(BaseModel):
    """REPORT_SCHEMA's fields (the SDK moves bounds out of the schema it sends into the
    descriptions, and checks them itself: a schema without any keeps the two alike)."""

    city: str
    temperature_c: float
    conditions: Literal["sunny", "cloudy", "rain"]


class TestStructuredOutput:
    def test_the_sdks_parse_helper_gets_json_of_the_schema(
        self, engine: Engine, client: Client
    ) -> None:
        """``messages.parse`` with a pydantic model sends ``output_config.format``; every
        engine answers one text block of JSON that the SDK parses into the model: the sim
        makes an instance of the schema, a chat server is asked for it as a json_schema
        response format, and the Anthropic upstream gets the format as sent."""
        message = client.sdk.messages.parse(
            model=engine.model, max_tokens=300, messages=ASKED, output_format=Report
        )
        assert message.stop_reason == "end_turn"
        (block,) = message.content
        assert block.type == "text"
        assert isinstance(message.parsed_output, Report)
        assert Report.model_validate_json(block.text) == message.parsed_output
        sent = client.last_sent["output_config"]
        assert sent["format"]["type"] == "json_schema"
        if engine.name == "anthropic":
            assert engine.last_received()["output_config"] == sent
        elif engine.name == "openai":
            format_sent = engine.last_received()["response_format"]
            assert format_sent["type"] == "json_schema"
            assert format_sent["json_schema"]["schema"] == sent["format"]["schema"]
        if engine.received is not None:
            assert message.parsed_output == Report.model_validate(REPORT)

    def test_a_streamed_json_schema_answer_validates(self, engine: Engine, client: Client) -> None:
        """Streamed, the text deltas of an ``output_config`` json_schema answer join into an
        instance of the schema."""
        output_config = {"format": {"type": "json_schema", "schema": REPORT_SCHEMA}}
        message = answer(
            client, stream=True, model=engine.model, messages=ASKED, output_config=output_config
        )
        jsonschema.Draft202012Validator(REPORT_SCHEMA).validate(json.loads(text_of(message)))
        assert_usage_is_the_record(message.usage, client.record())


class TestNativeRelay:
    def test_what_goes_up_is_the_sdks_body_with_only_the_model_changed(
        self, upstreams: Upstreams, client: Client
    ) -> None:
        """Every field the SDK sent (system blocks, metadata, a top-level cache_control,
        sampling, stop sequences, tools and their choice, and one no engine here knows)
        reaches the upstream as sent, but the model (the deployment's) and max_tokens (the
        cap the funds allow: here all of it); the upstream gets the engine's key, never the
        client's."""
        message = client.sdk.messages.create(  # type: ignore[call-overload]  # cache_control
            model="claude-priced",
            max_tokens=300,
            system=SYSTEM_BLOCKS,
            messages=ASKED,
            metadata={"user_id": "user-42"},
            cache_control={"type": "ephemeral"},
            stop_sequences=["zebra"],
            tools=TOOLS,
            tool_choice={"type": "auto", "disable_parallel_tool_use": True},
            # Sampling is no argument of this SDK's create (newer models fix it); older
            # clients still send it.
            extra_body={"temperature": 0.5, "top_k": 40, "some_future_field": {"kept": True}},
        )
        assert_valid_tool_use(message)
        sent = client.last_sent
        assert sent["some_future_field"] == {"kept": True}
        assert upstreams.anthropic.requests[-1] == {**sent, "model": CLAUDE_UPSTREAM_MODEL}
        headers = upstreams.anthropic.headers[-1]
        assert headers["x-api-key"] == upstreams.anthropic_key
        assert client.secret not in json.dumps(headers)

    def test_a_whole_answer_is_the_upstreams_body_byte_for_byte(
        self, upstreams: Upstreams, client: Client
    ) -> None:
        """The body the SDK reads is the very bytes the upstream answers the same request
        with (its model, id and usage included)."""
        raw = client.sdk.messages.with_raw_response.create(
            model="claude-priced",
            max_tokens=THINKING_MAX_TOKENS,
            messages=TOLD,
            thinking=THINKING,
            stop_sequences=[FAKE_WORDS[4]],
        )
        relayed = raw.read()
        direct = asked_directly(upstreams, upstreams.anthropic.requests[-1])
        assert relayed == direct
        parsed = raw.parse()
        assert parsed.stop_reason == "stop_sequence"
        assert_usage_is_the_record(parsed.usage, client.record())

    def test_a_stream_is_the_upstreams_events_byte_for_byte(
        self, upstreams: Upstreams, client: Client
    ) -> None:
        """A stream's bytes are the upstream's events for the same request, every one,
        ping and thinking and signature deltas among them; message_stop, which the
        gateway writes itself, is the same bytes, and it comes after the usage record is
        committed (the record is there the moment the stream ends)."""
        with client.sdk.messages.with_streaming_response.create(
            model="claude-priced",
            max_tokens=THINKING_MAX_TOKENS,
            messages=TOLD,
            thinking=THINKING,
            stream=True,
        ) as response:
            relayed = b"".join(response.iter_bytes())
        record = client.record()  # no wait: committed before message_stop
        direct = asked_directly(upstreams, upstreams.anthropic.requests[-1])
        assert relayed == direct
        assert b"event: ping" in relayed
        assert b'"signature_delta"' in relayed
        assert relayed.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
        assert record.status == "ok"
        assert upstreams.anthropic.requests[-1]["stream"] is True
