"""The chat surface: agents' fields read into the neutral call, and neutral answers
rendered in OpenAI's shapes (pure, no I/O)."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from tokenmill.config import Limits, ModelConfig
from tokenmill.errors import InvalidRequest
from tokenmill.neutral import (
    Answer,
    Finish,
    ImagePart,
    Reasoning,
    ReasoningDelta,
    TextDelta,
    TextPart,
    TokenLogprob,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    UsageReport,
    WirePart,
)
from tokenmill.surfaces import SURFACES
from tokenmill.surfaces.chat_render import ChatRenderer
from tokenmill.surfaces.chat_request import parse_chat
from tokenmill.usage import TokenCounts

MODELS = {"chat": ModelConfig(deployments=["d"])}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
TOOL_LOOP = [
    {"role": "developer", "content": "be brief"},
    {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "4 C"},
]


def parse(**fields: Any) -> Any:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], **fields}
    return parse_chat(body, MODELS, Limits())


def refusal(**fields: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse(**fields)
    return caught.value


class TestTools:
    def test_function_tools_are_read_with_their_schemas(self) -> None:
        """A tool's name, description, parameters and strictness reach the neutral call."""
        call = parse(tools=[WEATHER])
        (tool,) = call.tools
        assert tool.name == "get_weather"
        assert tool.parameters["required"] == ["city"]
        assert tool.strict
        assert call.tool_choice.mode == "auto"
        assert call.tools_offered

    def test_the_older_functions_field_is_read_as_tools(self) -> None:
        """``functions`` and ``function_call`` are the same as tools and a tool choice."""
        call = parse(functions=[WEATHER["function"]], function_call={"name": "get_weather"})
        assert call.tools[0].name == "get_weather"
        assert call.tool_choice.mode == "tool"
        assert call.tool_choice.name == "get_weather"

    @pytest.mark.parametrize("choice", ["none", "auto", "required"])
    def test_a_tool_choice_word_is_its_mode(self, choice: str) -> None:
        """none, auto and required are read as they are; none offers no tool."""
        call = parse(tools=[WEATHER], tool_choice=choice)
        assert call.tool_choice.mode == choice
        assert call.tools_offered is (choice != "none")

    def test_a_named_tool_choice_must_name_a_given_tool(self) -> None:
        """A function not among the tools is a 400 on tool_choice."""
        choice = {"type": "function", "function": {"name": "other"}}
        assert refusal(tools=[WEATHER], tool_choice=choice).param == "tool_choice"

    def test_required_without_tools_is_refused(self) -> None:
        """A tool call cannot be required when no tool is given."""
        assert refusal(tool_choice="required").param == "tool_choice"

    def test_parallel_tool_calls_false_is_kept(self) -> None:
        """parallel_tool_calls: false reaches the tool choice."""
        assert not parse(tools=[WEATHER], parallel_tool_calls=False).tool_choice.parallel

    @pytest.mark.parametrize(
        ("tools", "param"),
        [
            ([{"type": "custom", "custom": {"name": "x"}}], "tools.[0].type"),
            ([{"type": "function", "function": {"name": "no spaces"}}], "tools.[0].function.name"),
            (
                [{"type": "function", "function": {"name": "f", "parameters": []}}],
                "tools.[0].function.parameters",
            ),
            ([WEATHER, WEATHER], "tools"),
        ],
        ids=["custom", "bad-name", "bad-parameters", "duplicate"],
    )
    def test_a_malformed_tool_is_refused_naming_it(self, tools: Any, param: str) -> None:
        """Each malformed tool is a 400 that names its place."""
        assert refusal(tools=tools).param == param

    def test_a_tool_call_without_its_function_is_refused(self) -> None:
        """An assistant tool call must have an id and a function with name and arguments."""
        messages = [{"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}]
        assert refusal(messages=messages).param == "messages.[0].tool_calls.[0]"

    def test_a_tool_message_needs_its_call_id(self) -> None:
        """A tool message without tool_call_id is a 400 naming it."""
        messages = [{"role": "tool", "content": "4"}]
        assert refusal(messages=messages).param == "messages.[0].tool_call_id"


class TestLeastCap:
    def test_a_call_offering_tools_is_worth_its_whole_cap_and_others_one_token(self) -> None:
        """The funds may lower a plain answer's cap to one token, never a tool turn's (a
        call cut mid-JSON is worthless); with tool_choice none it is plain again."""
        assert parse(max_tokens=300).output_tokens_min == 1
        assert parse(max_tokens=300, tools=[WEATHER]).output_tokens_min == 300
        assert parse(max_tokens=300, tools=[WEATHER], tool_choice="none").output_tokens_min == 1

    def test_a_thinking_budget_needs_one_token_beyond_it(self) -> None:
        call = dataclasses.replace(parse(max_tokens=3000), reasoning=Reasoning(budget_tokens=2048))
        assert call.output_tokens_min == 2049


class TestOutputFormatAndReasoning:
    def test_a_json_schema_format_is_read_whole(self) -> None:
        """Name, schema and strictness of a json_schema response format."""
        schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
        spec = {"name": "answer", "schema": schema, "strict": True}
        output = parse(response_format={"type": "json_schema", "json_schema": spec}).output_format
        assert (output.kind, output.name, output.schema, output.strict) == (
            "json_schema",
            "answer",
            schema,
            True,
        )

    @pytest.mark.parametrize(
        ("response_format", "param"),
        [
            ({"type": "yaml"}, "response_format.type"),
            ({"type": "json_schema"}, "response_format.json_schema"),
            ({"type": "json_schema", "json_schema": {}}, "response_format.json_schema.name"),
            (
                {"type": "json_schema", "json_schema": {"name": "a", "schema": 1}},
                "response_format.json_schema.schema",
            ),
        ],
        ids=["unknown-type", "no-spec", "no-name", "bad-schema"],
    )
    def test_a_malformed_format_is_refused_naming_it(
        self, response_format: Any, param: str
    ) -> None:
        """Each malformed response_format is a 400 naming its place."""
        assert refusal(response_format=response_format).param == param

    def test_reasoning_effort_is_read_and_none_means_no_reasoning(self) -> None:
        """An effort is kept; 'none' asks for no reasoning; an unknown one is refused."""
        reasoning = parse(reasoning_effort="high").reasoning
        assert reasoning is not None and reasoning.effort == "high"
        assert parse(reasoning_effort="none").reasoning is None
        assert refusal(reasoning_effort="extreme").param == "reasoning_effort"

    def test_logprobs_and_their_count_are_read(self) -> None:
        """logprobs and top_logprobs reach the neutral call."""
        call = parse(logprobs=True, top_logprobs=4)
        assert (call.logprobs, call.top_logprobs) == (True, 4)


class TestMessages:
    def test_a_tool_loop_reads_into_neutral_messages(self) -> None:
        """developer is system; tool calls and results become their parts."""
        messages = parse(messages=TOOL_LOOP, tools=[WEATHER]).messages
        assert [m.role for m in messages] == ["system", "user", "assistant", "tool"]
        assert messages[1].parts == (TextPart("weather?"),)
        assert messages[2].parts == (ToolCallPart("call_1", "get_weather", '{"city": "Oslo"}'),)
        assert messages[3].parts == (ToolResultPart("call_1", (TextPart("4 C"),)),)

    def test_an_image_part_keeps_its_url_and_detail(self) -> None:
        """A user's image_url part is an image part."""
        image = {
            "type": "image_url",
            "image_url": {"url": "data:image/png;base64,AA", "detail": "low"},
        }
        content = [{"type": "text", "text": "what is it?"}, image]
        call = parse(messages=[{"role": "user", "content": content}])
        assert call.messages[0].parts[1] == ImagePart("data:image/png;base64,AA", "low")
        assert call.prompt.images_count == 1

    def test_a_part_no_neutral_form_has_is_refused_when_read(self) -> None:
        """An audio part is a 400 naming it, once an engine reads the messages."""
        content = [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]
        call = parse(messages=[{"role": "user", "content": content}])
        with pytest.raises(InvalidRequest) as caught:
            _ = call.messages
        assert caught.value.param == "messages.[0].content.[0].type"


def renderer() -> ChatRenderer:
    return ChatRenderer(parse(), "req_1", 1700000000)


COUNTS = TokenCounts(10, 6, cached_tokens=4, reasoning_tokens=2)


class TestRendering:
    def test_an_answer_with_a_tool_call_has_no_content_and_says_tool_calls(self) -> None:
        """A tool call answer: content null, the call, finish tool_calls, detailed usage."""
        answer = Answer((ToolCallPart("call_1", "f", "{}"),), "tool_calls", COUNTS)
        body = orjson.loads(renderer().body(answer))
        message = body["choices"][0]["message"]
        assert message["content"] is None
        assert message["tool_calls"] == [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ]
        assert body["choices"][0]["finish_reason"] == "tool_calls"
        assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 4}
        assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 2}
        assert body["id"] == "chatcmpl-req_1"

    def test_logprobs_are_rendered_with_bytes_and_top_entries(self) -> None:
        """Each content token's logprob, its UTF-8 bytes and its top alternatives."""
        logprobs = (TokenLogprob("Hé", -0.5, (("Hé", -0.5), ("a", -2.0))),)
        answer = Answer((TextPart("Hé"),), "stop", COUNTS, logprobs)
        (entry,) = orjson.loads(renderer().body(answer))["choices"][0]["logprobs"]["content"]
        assert entry["bytes"] == list("Hé".encode())
        assert [top["token"] for top in entry["top_logprobs"]] == ["Hé", "a"]

    def test_wire_parts_pass_through_untouched(self) -> None:
        """A batch of an engine that speaks chat is relayed as it came."""
        batch = [WirePart(b'{"x":1}')]
        assert renderer().parts(batch) is batch  # type: ignore[arg-type]

    def test_a_stream_starts_with_the_role_then_deltas_then_finish_and_usage(self) -> None:
        """Role once before the first delta; tool-call pieces keep their index; usage is
        a choices-less chunk marked usage-only."""
        render = renderer()
        chunks = render.parts([TextDelta("Hi")]) + render.parts(
            [
                ReasoningDelta("hmm"),
                ToolCallDelta(0, "call_1", "f", '{"a'),
                ToolCallDelta(0, arguments='": 1}'),
                Finish("tool_calls"),
                UsageReport(COUNTS),
            ]
        )
        decoded = [orjson.loads(chunk.payload) for chunk in chunks]
        deltas = [d["choices"][0]["delta"] for d in decoded[:-1]]
        assert deltas[0] == {"role": "assistant", "content": ""}
        assert deltas[1] == {"content": "Hi"}
        assert deltas[2] == {"reasoning_content": "hmm"}
        assert deltas[3]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a'}
        assert deltas[4]["tool_calls"] == [{"index": 0, "function": {"arguments": '": 1}'}}]
        assert decoded[-2]["choices"][0]["finish_reason"] == "tool_calls"
        assert decoded[-1]["choices"] == [] and chunks[-1].usage_only
        assert [chunk.usage_only for chunk in chunks[:-1]] == [False] * (len(chunks) - 1)


class TestWireShape:
    def test_the_openai_surfaces_write_errors_and_events_in_openais_shape(self) -> None:
        """An error body, the same error as a stream event, a framed event, the end."""
        surface = SURFACES["chat"]
        wire = surface.wire
        error = InvalidRequest("bad", param="tools")
        assert orjson.loads(wire.error_body(error)) == error.to_body()
        assert wire.status(error) == 400
        renderer = surface.renderer(parse(), "req_1", 1)
        assert renderer.fail(error) == b"data: " + wire.error_body(error) + b"\n\n"
        assert wire.frame(WirePart(b'{"a":1}')) == b'data: {"a":1}\n\n'
        assert renderer.end(TokenCounts(1, 1)) == b"data: [DONE]\n\n"
        assert {SURFACES[name].wire for name in ("completions", "embeddings")} == {wire}
