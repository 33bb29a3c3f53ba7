"""The OpenAI Responses surface: requests read into the neutral call, neutral answers and
deltas rendered as response objects and typed events, and what the store keeps (pure, no
I/O; the official SDK reads the rendered bytes through a mock transport)."""

from __future__ import annotations

import importlib
from typing import Any

import openai
import orjson
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from tokenmill.config import Limits, ModelConfig
from tokenmill.errors import InvalidRequest, TokenmillError, UpstreamError
from tokenmill.neutral import (
    Answer,
    DocumentPart,
    Finish,
    ImagePart,
    Message,
    NeutralCall,
    ReasoningDelta,
    ReasoningPart,
    TextDelta,
    TextPart,
    TokenLogprob,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    UsageReport,
    WirePart,
)
from tokenmill.surfaces.responses_render import (
    RESPONSES_WIRE,
    ResponsesRenderer,
    keep_response,
)
from tokenmill.surfaces.responses_request import parse_responses
from tokenmill.usage import TokenCounts

MODELS = {
    "chat": ModelConfig(deployments=["d"], context_tokens=4096, output_tokens_max=1000),
    "embed": ModelConfig(kind="embedding", deployments=["d"]),
}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}
COUNTS = TokenCounts(20, 9, cached_tokens=4, reasoning_tokens=2)
PNG = "data:image/png;base64," + "A" * 400
EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)


def parse(limits: Limits | None = None, prior: Any = (), **fields: Any) -> NeutralCall:
    body = {"model": "chat", "input": "hi", **fields}
    return parse_responses(body, MODELS, limits or Limits(), prior=prior)


def refusal(limits: Limits | None = None, **fields: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse(limits, **fields)
    return caught.value


def events_of(raw: bytes) -> list[dict[str, Any]]:
    """The events of framed stream bytes, each checked: its event line names its type."""
    events = []
    for frame in raw.decode().split("\n\n"):
        if not frame:
            continue
        head, data = frame.split("\n")
        event = orjson.loads(data.removeprefix("data: "))
        assert head == f"event: {event['type']}"
        events.append(event)
    return events


def stream(call: NeutralCall, batches: list[list[Any]], counts: TokenCounts = COUNTS) -> bytes:
    renderer = ResponsesRenderer(call, "req_abc", 1700000000)
    raw = b"".join(
        RESPONSES_WIRE.frame(part) for batch in batches for part in renderer.parts(batch)
    )
    return raw + renderer.end(counts)


TOOL_TURN: list[list[Any]] = [
    [ReasoningDelta("Think"), ReasoningDelta(" more", signature="sig")],
    [TextDelta("Let me "), TextDelta("look.")],
    [ToolCallDelta(0, "call_1", "get_weather", '{"city":'), ToolCallDelta(0, arguments='"Oslo"}')],
    [ToolCallDelta(1, "call_2", "get_weather", '{"city":"Bergen"}')],
    [Finish("tool_calls"), UsageReport(COUNTS)],
]


class TestInput:
    def test_a_string_is_one_user_message_after_the_instructions(self) -> None:
        """A string input is a user message; instructions come first as a system message."""
        call = parse(instructions="be brief")
        assert call.surface == "responses"
        assert call.messages == (
            Message("system", (TextPart("be brief"),)),
            Message("user", (TextPart("hi"),)),
        )

    def test_content_parts_are_read_into_neutral_parts(self) -> None:
        """Text, images and files (a data: URL, base64 with a file name, a URL) are read."""
        content = [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "low"},
            {
                "type": "input_file",
                "filename": "scan",
                "file_data": "data:application/pdf;base64,QUJD",
            },
            {"type": "input_file", "filename": "notes.txt", "file_data": "QUJD"},
            {"type": "input_file", "file_url": "https://x.test/report.pdf"},
        ]
        items = [{"role": "developer", "content": "rules"}, {"role": "user", "content": content}]
        system, user = parse(input=items).messages
        assert system == Message("system", (TextPart("rules"),))
        assert user.parts == (
            TextPart("look"),
            ImagePart("https://x.test/a.png", "low"),
            DocumentPart("application/pdf", data="QUJD", title="scan"),
            DocumentPart("text/plain", data="QUJD", title="notes.txt"),
            DocumentPart("application/pdf", url="https://x.test/report.pdf"),
        )

    def test_an_assistant_turn_of_several_items_is_one_message(self) -> None:
        """Reasoning, an assistant message and its function calls merge; outputs are tool
        messages, and reasoning after calls begins a new assistant message."""
        items = [
            {"role": "user", "content": "weather?"},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [
                    {"type": "summary_text", "text": "a"},
                    {"type": "summary_text", "text": "b"},
                ],
                "encrypted_content": "enc",
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "checking"}],
            },
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {
                "type": "function_call",
                "call_id": "c2",
                "name": "f",
                "arguments": "{}",
                "id": "fc_9",
            },
            {"type": "function_call_output", "call_id": "c1", "output": "4 C"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "9 C"}],
            },
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
        ]
        messages = parse(input=items).messages
        assert [m.role for m in messages] == ["user", "assistant", "tool", "tool", "assistant"]
        assert messages[1].parts == (
            ReasoningPart("a\n\nb", "enc"),
            TextPart("checking"),
            ToolCallPart("c1", "f", "{}"),
            ToolCallPart("c2", "f", "{}"),
        )
        assert messages[2].parts == (ToolResultPart("c1", (TextPart("4 C"),)),)
        assert messages[3].parts == (ToolResultPart("c2", (TextPart("9 C"),)),)
        assert messages[4].parts == (TextPart("no"),)

    def test_reasoning_after_function_calls_begins_a_new_assistant_message(self) -> None:
        """A turn's tool calls end its assistant message."""
        items = [
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "x"}]},
            {"type": "function_call_output", "call_id": "c1", "output": "4 C"},
        ]
        first, second, result = parse(input=items).messages
        assert first.parts == (ToolCallPart("c1", "f", "{}"),)
        assert second.parts == (ReasoningPart("x"),)
        assert result.parts == (ToolResultPart("c1", (TextPart("4 C"),)),)

    def test_the_prior_context_goes_between_instructions_and_input(self) -> None:
        """Stored items are read after the instructions and before this request's input."""
        prior = (
            {"id": "m1", "type": "message", "role": "user", "status": "completed",
             "content": [{"type": "input_text", "text": "earlier"}]},
            {"id": "m2", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "answer", "annotations": []}]},
        )  # fmt: skip
        call = parse(prior=prior, instructions="sys")
        assert [m.parts[0] for m in call.messages] == [
            TextPart("sys"),
            TextPart("earlier"),
            TextPart("answer"),
            TextPart("hi"),
        ]


class TestPromptSize:
    def test_images_are_left_out_and_counted_apart(self) -> None:
        """The body's bytes less its image URLs; each image is counted."""
        content = [{"type": "input_image", "image_url": PNG}]
        body = {"model": "chat", "input": [{"role": "user", "content": content}]}
        size = parse_responses(body, MODELS, Limits(), body_bytes=1000).prompt
        assert size.text_bytes == 1000 - len(PNG)
        assert size.images_count == 1
        assert size.messages_count == 1

    def test_the_prior_context_adds_its_bytes_and_messages(self) -> None:
        """Stored items add their JSON bytes (images left out), messages and images."""
        image = {"type": "input_image", "image_url": PNG, "detail": "auto"}
        prior = ({"id": "m", "type": "message", "role": "user", "status": "completed",
                  "content": [{"type": "input_text", "text": "x"}, image]},)  # fmt: skip
        body = {"model": "chat", "input": "hi", "instructions": "sys", "tools": [WEATHER]}
        alone = parse_responses(body, MODELS, Limits(), body_bytes=500).prompt
        size = parse_responses(body, MODELS, Limits(), body_bytes=500, prior=prior).prompt
        assert alone.messages_count == 2  # the instructions and the input
        assert alone.tools_count == 1
        assert size.text_bytes == 500 + len(orjson.dumps(prior)) - len(PNG)
        assert size.messages_count == 3
        assert size.images_count == 1


class TestFields:
    def test_the_output_cap_is_the_smallest_of_request_model_and_system(self) -> None:
        """max_output_tokens caps within the model's and the limits' caps."""
        assert parse(max_output_tokens=50).output_tokens_max == 50
        assert parse(max_output_tokens=2000).output_tokens_max == 1000
        assert parse().output_tokens_max == 1000
        assert parse(Limits(output_tokens_max=10)).output_tokens_max == 10

    def test_tools_and_a_named_choice_are_read(self) -> None:
        """A function tool becomes a neutral tool; a named choice and parallelism are kept."""
        choice = {"type": "function", "name": "get_weather"}
        call = parse(tools=[WEATHER], tool_choice=choice, parallel_tool_calls=False)
        (tool,) = call.tools
        assert (tool.name, tool.description, tool.strict) == (
            "get_weather",
            WEATHER["description"],
            True,
        )
        assert tool.parameters == WEATHER["parameters"]
        assert (call.tool_choice.mode, call.tool_choice.name) == ("tool", "get_weather")
        assert not call.tool_choice.parallel

    @pytest.mark.parametrize("choice", ["none", "auto", "required"])
    def test_a_tool_choice_word_is_its_mode(self, choice: str) -> None:
        """none, auto and required are read as they are."""
        assert parse(tools=[WEATHER], tool_choice=choice).tool_choice.mode == choice

    def test_a_json_schema_format_is_read(self) -> None:
        """text.format json_schema becomes the output format with its schema."""
        schema = {"type": "object", "properties": {}}
        text = {"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}}
        out = parse(text=text).output_format
        assert (out.kind, out.name, out.schema, out.strict) == ("json_schema", "out", schema, True)
        assert parse(text={"format": {"type": "json_object"}}).output_format.kind == "json_object"
        assert parse(text={"verbosity": "low"}).output_format.kind == "text"

    def test_reasoning_effort_is_read_and_none_is_no_reasoning(self) -> None:
        """An effort reaches the call; effort none asks for none."""
        reasoning = parse(reasoning={"effort": "high", "summary": "auto"}).reasoning
        assert reasoning is not None
        assert reasoning.effort == "high"
        assert parse(reasoning={"effort": "none"}).reasoning is None
        assert parse().reasoning is None

    def test_sampling_stream_tier_and_logprobs_are_read(self) -> None:
        """temperature, top_p, stream, flex and the logprobs include reach the call."""
        call = parse(
            temperature=0.5,
            top_p=0.9,
            stream=True,
            service_tier="flex",
            include=["message.output_text.logprobs", "reasoning.encrypted_content"],
            top_logprobs=3,
            store=False,
            metadata={"k": "v"},
            truncation="auto",
            user="u",
            safety_identifier="s",
            prompt_cache_key="p",
            previous_response_id="resp_1",
            stream_options={"include_obfuscation": False},
        )
        assert (call.sampling.temperature, call.sampling.top_p) == (0.5, 0.9)
        assert call.stream
        assert not call.include_usage
        assert call.batch
        assert call.logprobs
        assert call.top_logprobs == 3
        assert not parse(top_logprobs=3).logprobs

    def test_unknown_fields_stay_in_the_body(self) -> None:
        """A field the gateway does not act on is kept for an engine that relays the body."""
        assert parse(max_tool_calls=3).body["max_tool_calls"] == 3


def _item(**fields: Any) -> list[dict[str, Any]]:
    return [fields]


def _user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


REFUSALS: list[tuple[dict[str, Any], str]] = [
    ({"model": None}, "model"),
    ({"model": "embed"}, "model"),
    ({"input": None}, "input"),
    ({"input": []}, "input"),
    ({"input": 5}, "input"),
    ({"input": [5]}, "input.[0]"),
    ({"input": _item(type="item_reference", id="msg_1")}, "input.[0].type"),
    ({"input": _item(type="web_search_call", id="ws_1")}, "input.[0].type"),
    ({"input": _item(content="x")}, "input.[0].type"),
    ({"input": _item(role="bot", content="x")}, "input.[0].role"),
    ({"input": _item(role="user", content=5)}, "input.[0].content"),
    ({"input": _item(role="user", content="x", id=5)}, "input.[0].id"),
    ({"input": _user({"type": "input_text", "text": 5})}, "input.[0].content.[0].text"),
    ({"input": _user({"text": "x"})}, "input.[0].content.[0].type"),
    ({"input": _item(role="user", content=["x"])}, "input.[0].content.[0].type"),
    ({"input": _user({"type": "output_text", "text": "x"})}, "input.[0].content.[0].type"),
    ({"input": _user({"type": "input_audio"})}, "input.[0].content.[0].type"),
    (
        {"input": _item(role="assistant", content=[{"type": "input_text", "text": "x"}])},
        "input.[0].content.[0].type",
    ),
    (
        {"input": _user({"type": "input_image", "file_id": "file_1", "detail": "auto"})},
        "input.[0].content.[0].file_id",
    ),
    (
        {"input": _user({"type": "input_image", "image_url": "ftp://x/a.png"})},
        "input.[0].content.[0].image_url",
    ),
    (
        {"input": _user({"type": "input_image", "image_url": PNG, "detail": "max"})},
        "input.[0].content.[0].detail",
    ),
    ({"input": _user({"type": "input_file", "file_id": "f"})}, "input.[0].content.[0].file_id"),
    ({"input": _user({"type": "input_file"})}, "input.[0].content.[0].file_data"),
    (
        {"input": _user({"type": "input_file", "file_url": "ftp://x/a.pdf"})},
        "input.[0].content.[0].file_url",
    ),
    (
        {"input": _user({"type": "input_file", "file_data": "data:application/pdf,raw"})},
        "input.[0].content.[0].file_data",
    ),
    (
        {"input": _user({"type": "input_file", "file_data": "QUJD", "filename": 5})},
        "input.[0].content.[0].filename",
    ),
    ({"input": _item(type="function_call", call_id="c", name="f")}, "input.[0].arguments"),
    ({"input": _item(type="function_call_output", output="x")}, "input.[0].call_id"),
    ({"input": _item(type="function_call_output", call_id="c", output=5)}, "input.[0].output"),
    (
        {"input": _item(type="function_call_output", call_id="c", output=[{"type": "refusal"}])},
        "input.[0].output.[0].type",
    ),
    ({"input": _item(type="reasoning", summary="x")}, "input.[0].summary"),
    ({"input": _item(type="reasoning", summary=[{"text": "x"}])}, "input.[0].summary"),
    (
        {"input": _item(type="reasoning", summary=[], encrypted_content=5)},
        "input.[0].encrypted_content",
    ),
    ({"instructions": 5}, "instructions"),
    ({"tools": {}}, "tools"),
    ({"tools": [{"type": "web_search"}]}, "tools.[0].type"),
    ({"tools": [{"name": "f"}]}, "tools.[0].type"),
    ({"tools": [{"type": "function", "name": "no spaces"}]}, "tools.[0].name"),
    ({"tools": [{"type": "function", "name": "f", "parameters": []}]}, "tools.[0].parameters"),
    ({"tools": [{"type": "function", "name": "f", "strict": "yes"}]}, "tools.[0].strict"),
    ({"tools": [{"type": "function", "name": "f", "description": 5}]}, "tools.[0].description"),
    ({"tools": [WEATHER, WEATHER]}, "tools"),
    ({"tool_choice": 5}, "tool_choice"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "x"}}, "tool_choice.name"),
    ({"tools": [WEATHER], "tool_choice": {"type": "web_search_preview"}}, "tool_choice.type"),
    ({"parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"max_output_tokens": "9"}, "max_output_tokens"),
    ({"max_output_tokens": True}, "max_output_tokens"),
    ({"max_output_tokens": 5000}, "max_output_tokens"),
    ({"temperature": 3}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"text": "x"}, "text"),
    ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
    ({"text": {"format": "json"}}, "text.format.type"),
    ({"text": {"verbosity": "loud"}}, "text.verbosity"),
    (
        {"text": {"format": {"type": "json_schema", "name": "a b", "schema": {}}}},
        "text.format.name",
    ),
    ({"text": {"format": {"type": "json_schema", "name": "a"}}}, "text.format.schema"),
    (
        {"text": {"format": {"type": "json_schema", "name": "a", "schema": {}, "strict": 1}}},
        "text.format.strict",
    ),
    ({"reasoning": "high"}, "reasoning"),
    ({"reasoning": {"effort": "max"}}, "reasoning.effort"),
    ({"reasoning": {"summary": "long"}}, "reasoning.summary"),
    ({"store": "no"}, "store"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_obfuscation": True}}, "stream_options"),
    (
        {"stream": True, "stream_options": {"include_obfuscation": "x"}},
        "stream_options.include_obfuscation",
    ),
    ({"previous_response_id": 5}, "previous_response_id"),
    ({"previous_response_id": ""}, "previous_response_id"),
    ({"include": "reasoning.encrypted_content"}, "include"),
    ({"include": ["bogus"]}, "include"),
    ({"include": [5]}, "include"),
    ({"metadata": {"k": 1}}, "metadata"),
    ({"truncation": "sometimes"}, "truncation"),
    ({"user": 5}, "user"),
    ({"safety_identifier": "s" * 65}, "safety_identifier"),
    ({"prompt_cache_key": "p" * 257}, "prompt_cache_key"),
    ({"service_tier": "cheap"}, "service_tier"),
    ({"top_logprobs": 21}, "top_logprobs"),
    ({"background": True}, "background"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
]


class TestRefusals:
    @pytest.mark.parametrize(("fields", "param"), REFUSALS)
    def test_each_bad_field_is_a_400_naming_it(self, fields: dict[str, Any], param: str) -> None:
        """A malformed or unsupported field is refused with its dotted param."""
        error = refusal(**fields)
        assert error.param == param
        assert error.http_status == 400

    def test_a_built_in_tool_is_unsupported(self) -> None:
        """web_search and the other built-in tools are named as unsupported."""
        error = refusal(tools=[WEATHER, {"type": "code_interpreter"}])
        assert error.param == "tools.[1].type"
        assert error.code == "unsupported_value"
        assert "built-in tool" in error.message

    def test_a_function_call_without_its_output_is_a_400_on_input(self) -> None:
        """A call left open (as OpenAI's API, and every upstream, refuses it) is named."""
        items = [
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "4 C"},
            {"role": "user", "content": "and?"},
        ]
        error = refusal(input=items)
        assert (error.param, error.http_status) == ("input", 400)
        assert "'c2'" in error.message

    def test_an_output_without_its_call_is_a_400_on_input(self) -> None:
        """An output must answer a call made before it."""
        items = [
            {"type": "function_call_output", "call_id": "c1", "output": "4 C"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        ]
        error = refusal(input=items)
        assert (error.param, error.http_status) == ("input", 400)
        assert "'c1'" in error.message

    def test_a_stored_call_is_answered_by_this_input_or_refused(self) -> None:
        """The check spans the stored context and this input: a continuation answers the
        stored calls, and one that does not is a 400; a call answered before needs
        nothing more, and a call id made again needs its own output."""
        call = {"id": "fc_1", "type": "function_call", "call_id": "c1", "name": "f",
                "arguments": "{}", "status": "completed"}  # fmt: skip
        output = {"type": "function_call_output", "call_id": "c1", "output": "4 C"}
        answered = parse(prior=(call,), input=[output]).messages
        assert [message.role for message in answered] == ["assistant", "tool"]
        assert refusal(prior=(call,), input="and?").param == "input"
        assert parse(prior=(call, output), input="and?").messages[-1].role == "user"
        assert refusal(prior=(call, output, call), input="and?").param == "input"

    def test_input_is_bounded_by_the_messages_limit(self) -> None:
        """More input items than messages_count_max is a 400."""
        items = [{"role": "user", "content": "x"}] * 3
        assert refusal(Limits(messages_count_max=2), input=items).param == "input"

    @pytest.mark.parametrize(
        "value", [None, 0, 1.5, True, "x", [], {}, [1], [None], [{}], {"type": 5}, [[]], {"x": {}}]
    )
    @pytest.mark.parametrize(
        "name",
        ["input", "tools", "tool_choice", "text", "reasoning", "include", "metadata",
         "instructions", "stream_options", "max_output_tokens", "top_logprobs", "user"],
    )  # fmt: skip
    def test_any_json_is_refused_cleanly_or_read(self, name: str, value: Any) -> None:
        """A stranger's JSON in any field raises nothing but InvalidRequest, and what is
        accepted reads into messages without error."""
        for where in ({name: value}, {"input": [{"role": "user", "content": [{name: value}]}]}):
            try:
                call = parse(stream=True, **where)
            except InvalidRequest:
                continue
            assert isinstance(call.messages, tuple)


def answer_call(**fields: Any) -> NeutralCall:
    return parse(tools=[WEATHER], **fields)


def rendered(answer: Answer, **fields: Any) -> dict[str, Any]:
    body = ResponsesRenderer(answer_call(**fields), "req_abc", 1700000000).body(answer)
    response: dict[str, Any] = orjson.loads(body)
    Response.model_validate(response)
    return response


class TestBody:
    def test_a_text_answer_is_a_completed_response(self) -> None:
        """The envelope, one assistant message and the usage in OpenAI's names."""
        response = rendered(Answer((TextPart("Hel"), TextPart("lo")), "stop", COUNTS))
        assert response["id"] == "resp_abc"
        assert response["object"] == "response"
        assert response["created_at"] == 1700000000
        assert response["status"] == "completed"
        assert response["error"] is None
        assert response["incomplete_details"] is None
        assert response["model"] == "chat"
        assert response["output"] == [
            {
                "type": "message",
                "id": "msg_abc_0",
                "role": "assistant",
                "status": "completed",
                "content": [
                    {"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}
                ],
            }
        ]
        assert response["usage"] == {
            "input_tokens": 20,
            "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
            "output_tokens": 9,
            "output_tokens_details": {"reasoning_tokens": 2},
            "total_tokens": 29,
        }

    def test_reasoning_and_tool_calls_are_items_of_their_own(self) -> None:
        """Each reasoning part and tool call is an output item with an id from its place."""
        parts = (
            ReasoningPart("thought", "sig"),
            ReasoningPart("", None, redacted=True),
            TextPart("calling"),
            ToolCallPart("call_1", "get_weather", '{"city":"Oslo"}'),
            ToolCallPart("call_2", "get_weather", "{}"),
        )
        output = rendered(Answer(parts, "tool_calls", COUNTS))["output"]
        assert [item["id"] for item in output] == ["rs_abc_0", "msg_abc_1", "fc_abc_2", "fc_abc_3"]
        assert output[0] == {
            "type": "reasoning",
            "id": "rs_abc_0",
            "summary": [{"type": "summary_text", "text": "thought"}],
            "encrypted_content": "sig",
        }
        assert output[2] == {
            "type": "function_call",
            "id": "fc_abc_2",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Oslo"}',
            "status": "completed",
        }

    def test_an_answer_cut_at_the_cap_is_incomplete(self) -> None:
        """Finish length: status incomplete for the response and its last item."""
        response = rendered(Answer((TextPart("abc"),), "length", COUNTS), max_output_tokens=3)
        assert response["status"] == "incomplete"
        assert response["incomplete_details"] == {"reason": "max_output_tokens"}
        assert response["output"][0]["status"] == "incomplete"
        assert response["max_output_tokens"] == 3

    def test_log_probabilities_go_with_the_text(self) -> None:
        """An answer's log probabilities are the message's output_text logprobs."""
        logprobs = (TokenLogprob("Hi", -0.5, (("Hi", -0.5), ("Yo", -1.0))),)
        answer = Answer((TextPart("Hi"),), "stop", COUNTS, logprobs=logprobs)
        (entry,) = rendered(answer)["output"][0]["content"][0]["logprobs"]
        assert (entry["token"], entry["logprob"], entry["bytes"]) == ("Hi", -0.5, [72, 105])
        assert [top["token"] for top in entry["top_logprobs"]] == ["Hi", "Yo"]

    def test_the_request_is_echoed(self) -> None:
        """instructions, tools as given, the choice, sampling, store and metadata."""
        response = rendered(
            Answer((TextPart("x"),), "stop", COUNTS),
            instructions="sys",
            tool_choice="required",
            temperature=0.2,
            store=False,
            metadata={"k": "v"},
            previous_response_id="resp_0",
            reasoning={"effort": "low"},
            text={"format": {"type": "json_object"}},
        )
        assert response["instructions"] == "sys"
        assert response["tools"] == [WEATHER]
        assert response["tool_choice"] == "required"
        assert response["temperature"] == 0.2
        assert response["store"] is False
        assert response["metadata"] == {"k": "v"}
        assert response["previous_response_id"] == "resp_0"
        assert response["reasoning"] == {"effort": "low", "summary": None}
        assert response["text"]["format"] == {"type": "json_object"}
        assert response["parallel_tool_calls"] is True

    def test_wire_bytes_are_not_an_answer_here(self) -> None:
        """No engine answers Responses bytes; getting them is a bug, not a relay."""
        renderer = ResponsesRenderer(parse(), "req_abc", 0)
        with pytest.raises(TypeError):
            renderer.body(b"{}")


class TestStream:
    def test_a_turn_streams_every_event_in_order_numbered_from_zero(self) -> None:
        """Reasoning, a message and two calls: added, deltas, done for each, then completed."""
        events = events_of(stream(answer_call(stream=True), TOOL_TURN))
        assert [event["sequence_number"] for event in events] == list(range(len(events)))
        assert [event["type"].removeprefix("response.") for event in events] == [
            "created", "in_progress",
            "output_item.added", "reasoning_summary_part.added",
            "reasoning_summary_text.delta", "reasoning_summary_text.delta",
            "reasoning_summary_text.done", "reasoning_summary_part.done", "output_item.done",
            "output_item.added", "content_part.added",
            "output_text.delta", "output_text.delta",
            "output_text.done", "content_part.done", "output_item.done",
            "output_item.added", "function_call_arguments.delta", "function_call_arguments.delta",
            "function_call_arguments.done", "output_item.done",
            "output_item.added", "function_call_arguments.delta",
            "function_call_arguments.done", "output_item.done",
            "completed",
        ]  # fmt: skip
        for event in events:
            assert EVENTS.validate_python(event).type == event["type"]

    def test_the_opening_response_is_in_progress_and_empty(self) -> None:
        """response.created and in_progress carry no output and no usage yet."""
        created, in_progress, *_ = events_of(stream(answer_call(stream=True), TOOL_TURN))
        for event in (created, in_progress):
            assert event["response"]["status"] == "in_progress"
            assert event["response"]["output"] == []
            assert event["response"]["usage"] is None

    def test_items_carry_their_pieces_and_the_whole_on_done(self) -> None:
        """Deltas name their item and place; done events carry the whole text and item."""
        events = events_of(stream(answer_call(stream=True), TOOL_TURN))
        by_type: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            by_type.setdefault(event["type"], []).append(event)
        delta = by_type["response.output_text.delta"][0]
        assert (delta["item_id"], delta["output_index"], delta["content_index"]) == (
            "msg_abc_1",
            1,
            0,
        )
        assert delta["delta"] == "Let me "
        assert by_type["response.output_text.done"][0]["text"] == "Let me look."
        assert by_type["response.reasoning_summary_text.done"][0]["text"] == "Think more"
        arguments = by_type["response.function_call_arguments.done"]
        assert [event["arguments"] for event in arguments] == [
            '{"city":"Oslo"}',
            '{"city":"Bergen"}',
        ]
        added = by_type["response.output_item.added"][2]["item"]
        assert (added["status"], added["arguments"], added["call_id"]) == (
            "in_progress",
            "",
            "call_1",
        )
        done = [event["item"] for event in by_type["response.output_item.done"]]
        assert done[0]["encrypted_content"] == "sig"
        assert [item["status"] for item in done[1:]] == ["completed"] * 3

    def test_the_last_event_carries_the_whole_output_and_usage(self) -> None:
        """response.completed has every item done and the committed counts."""
        *_, completed = events_of(stream(answer_call(stream=True), TOOL_TURN))
        done = [e["item"] for e in events_of(stream(answer_call(stream=True), TOOL_TURN))
                if e["type"] == "response.output_item.done"]  # fmt: skip
        response = completed["response"]
        assert response["status"] == "completed"
        assert response["output"] == done
        assert response["usage"]["total_tokens"] == 29
        Response.model_validate(response)

    def test_a_stream_cut_at_the_cap_ends_incomplete(self) -> None:
        """Finish length: response.incomplete, its reason, the open item incomplete."""
        batches: list[list[Any]] = [[TextDelta("abc")], [Finish("length")]]
        *_, item_done, last = events_of(stream(answer_call(stream=True), batches))
        assert item_done["item"]["status"] == "incomplete"
        assert last["type"] == "response.incomplete"
        assert last["response"]["status"] == "incomplete"
        assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}

    def test_an_empty_stream_still_opens_and_completes(self) -> None:
        """end() with no parts writes created, in_progress and completed."""
        events = events_of(stream(answer_call(stream=True), []))
        assert [event["type"] for event in events] == [
            "response.created",
            "response.in_progress",
            "response.completed",
        ]
        assert events[-1]["response"]["output"] == []

    def test_an_error_mid_stream_is_response_failed_in_sequence(self) -> None:
        """fail() continues the count, with the error and what was written so far."""
        renderer = ResponsesRenderer(answer_call(stream=True), "req_abc", 0)
        written = renderer.parts([TextDelta("partial")])
        events = events_of(renderer.fail(UpstreamError("the upstream broke")))
        (failed,) = events
        assert failed["type"] == "response.failed"
        assert failed["sequence_number"] == len(events_of(b"".join(p.payload for p in written)))
        assert failed["response"]["status"] == "failed"
        assert failed["response"]["error"] == {
            "code": "bad_gateway",
            "message": "the upstream broke",
        }
        assert failed["response"]["output"][0]["content"][0]["text"] == "partial"

    def test_an_error_before_any_part_opens_the_stream_first(self) -> None:
        """A failure before the first part still begins with response.created."""
        renderer = ResponsesRenderer(answer_call(stream=True), "req_abc", 0)
        error = TokenmillError("boom")
        events = events_of(renderer.fail(error))
        assert [event["type"] for event in events] == [
            "response.created",
            "response.in_progress",
            "response.failed",
        ]
        assert events[-1]["response"]["error"]["code"] == "server_error"

    def test_usage_is_never_a_usage_only_part(self) -> None:
        """usage() sends nothing of its own; the counts travel in response.completed."""
        part = ResponsesRenderer(parse(), "req_abc", 0).usage(COUNTS)
        assert isinstance(part, WirePart)
        assert not part.usage_only
        assert RESPONSES_WIRE.frame(part) == b""

    def test_log_probabilities_stream_with_the_text(self) -> None:
        """A delta's log probabilities are on its event and in the whole text."""
        logprob = TokenLogprob("a", -0.1)
        events = events_of(stream(answer_call(stream=True), [[TextDelta("a", (logprob,))]]))
        delta = next(e for e in events if e["type"] == "response.output_text.delta")
        assert delta["logprobs"][0]["token"] == "a"
        content = events[-1]["response"]["output"][0]["content"][0]
        assert content["logprobs"][0]["logprob"] == -0.1

    def test_wire_parts_pass_as_they_are(self) -> None:
        """An engine's own events are relayed untouched."""
        part = WirePart(b"event: x\ndata: {}\n\n")
        assert ResponsesRenderer(parse(), "req_abc", 0).parts([part]) == [part]


class TestKept:
    def test_the_store_keeps_the_body_the_client_saw(self) -> None:
        """kept() after a body: that response, its output and the normalized input."""
        items = [
            {"role": "developer", "content": "rules"},
            {"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                         {"type": "input_image", "image_url": PNG}]},
            {"role": "assistant", "content": "before"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}",
             "id": "fc_x"},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            {"type": "reasoning", "id": "rs_x", "status": "completed",
             "summary": [{"type": "summary_text", "text": "s"}]},
        ]  # fmt: skip
        call = parse(input=items, previous_response_id="resp_0")
        renderer = ResponsesRenderer(call, "req_abc", 7)
        body = renderer.body(Answer((TextPart("done"),), "stop", COUNTS))
        kept = renderer.kept(COUNTS)
        assert kept.response == orjson.loads(body)
        assert (kept.id, kept.previous_response_id, kept.model, kept.created_s) == (
            "resp_abc", "resp_0", "chat", 7,
        )  # fmt: skip
        assert kept.output_items == tuple(kept.response["output"])
        assert kept.input_items == (
            {"id": "msg_abc_in0", "type": "message", "role": "developer", "status": "completed",
             "content": [{"type": "input_text", "text": "rules"}]},
            {"id": "msg_abc_in1", "type": "message", "role": "user", "status": "completed",
             "content": [{"type": "input_text", "text": "hi"},
                         {"type": "input_image", "image_url": PNG, "detail": "auto"}]},
            {"id": "msg_abc_in2", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "before", "annotations": []}]},
            {"id": "fc_x", "type": "function_call", "call_id": "c1", "name": "f",
             "arguments": "{}", "status": "completed"},
            {"id": "fco_abc_in4", "type": "function_call_output", "call_id": "c1",
             "output": "ok", "status": "completed"},
            {"id": "rs_x", "type": "reasoning",
             "summary": [{"type": "summary_text", "text": "s"}], "encrypted_content": None},
        )  # fmt: skip

    def test_the_store_keeps_the_last_event_of_a_stream(self) -> None:
        """kept() after end(): the response of response.completed."""
        renderer = ResponsesRenderer(answer_call(stream=True), "req_abc", 0)
        for batch in TOOL_TURN:
            renderer.parts(batch)
        *_, completed = events_of(renderer.end(COUNTS))
        kept = renderer.kept(COUNTS)
        assert kept.response == completed["response"]
        assert [item["type"] for item in kept.output_items] == [
            "reasoning", "message", "function_call", "function_call",
        ]  # fmt: skip
        assert kept.input_items[0]["content"] == [{"type": "input_text", "text": "hi"}]

    def test_a_response_asked_not_to_be_stored_is_not_kept(self) -> None:
        """store: false keeps nothing; by default the response is kept."""
        answer = Answer((TextPart("x"),), "stop", COUNTS)
        kept, skipped = (
            ResponsesRenderer(parse(store=store), "req_abc", 0) for store in (True, False)
        )
        for renderer in (kept, skipped):
            renderer.body(answer)
        assert keep_response(kept, COUNTS) is not None
        assert keep_response(skipped, COUNTS) is None

    def test_kept_items_read_back_as_the_same_conversation(self) -> None:
        """A kept turn given as prior reads as the messages it was, then the new input."""
        renderer = ResponsesRenderer(answer_call(), "req_abc", 0)
        parts = (ReasoningPart("why", "sig"), ToolCallPart("c1", "get_weather", "{}"))
        renderer.body(Answer(parts, "tool_calls", COUNTS))
        kept = renderer.kept(COUNTS)
        follow_up = [{"type": "function_call_output", "call_id": "c1", "output": "4 C"}]
        prior = kept.input_items + kept.output_items
        call = parse(input=follow_up, prior=prior, instructions="sys")
        assert call.messages == (
            Message("system", (TextPart("sys"),)),
            Message("user", (TextPart("hi"),)),
            Message(
                "assistant", (ReasoningPart("why", "sig"), ToolCallPart("c1", "get_weather", "{}"))
            ),
            Message("tool", (ToolResultPart("c1", (TextPart("4 C"),)),)),
        )


def sdk_client(payload: bytes, content_type: str) -> openai.OpenAI:
    """The official client, answered by ``payload`` instead of a network."""
    # The HTTP library the installed SDK is built on: httpx, or httpx2 from openai 3.x.
    http: Any = importlib.import_module(
        openai.DefaultHttpxClient.__mro__[1].__module__.split(".")[0]
    )

    def answer(request: Any) -> Any:
        assert request.url.path == "/v1/responses"
        return http.Response(200, content=payload, headers={"content-type": content_type})

    return openai.OpenAI(
        base_url="http://tokenmill.test/v1",
        api_key="x",
        max_retries=0,
        http_client=http.Client(transport=http.MockTransport(answer)),
    )


class TestOfficialClient:
    def test_the_sdk_reads_a_body(self) -> None:
        """responses.create parses the body: output_text, calls and usage."""
        parts = (TextPart("Hello"), ToolCallPart("call_1", "get_weather", '{"city":"Oslo"}'))
        body = ResponsesRenderer(answer_call(), "req_abc", 0).body(
            Answer(parts, "tool_calls", COUNTS)
        )
        client = sdk_client(body, "application/json")
        response = client.responses.create(model="chat", input="hi")
        assert response.id == "resp_abc"
        assert response.output_text == "Hello"
        assert response.output[1].type == "function_call"
        assert response.usage is not None
        assert (response.usage.input_tokens, response.usage.output_tokens) == (20, 9)
        assert response.usage.input_tokens_details.cached_tokens == 4

    def test_the_sdk_reads_the_stream_events(self) -> None:
        """create(stream=True) yields every event, typed, in sequence."""
        raw = stream(answer_call(stream=True), TOOL_TURN)
        client = sdk_client(raw, "text/event-stream")
        events = list(client.responses.create(model="chat", input="hi", stream=True))
        assert [event.sequence_number for event in events] == list(range(len(events)))
        assert events[0].type == "response.created"
        assert events[-1].type == "response.completed"

    def test_the_sdk_stream_helper_builds_the_final_response(self) -> None:
        """responses.stream accumulates text deltas and its final response has everything."""
        raw = stream(answer_call(stream=True), TOOL_TURN)
        client = sdk_client(raw, "text/event-stream")
        tools: Any = [WEATHER]  # a plain dict where the SDK types a TypedDict
        with client.responses.stream(model="chat", input="hi", tools=tools) as events:
            texts = [e.delta for e in events if e.type == "response.output_text.delta"]
            final = events.get_final_response()
        assert "".join(texts) == "Let me look."
        assert final.output_text == "Let me look."
        calls = [item for item in final.output if item.type == "function_call"]
        assert [(call.call_id, call.arguments) for call in calls] == [
            ("call_1", '{"city":"Oslo"}'),
            ("call_2", '{"city":"Bergen"}'),
        ]
        assert final.usage is not None
        assert final.usage.total_tokens == 29
        assert final.usage.output_tokens_details.reasoning_tokens == 2
