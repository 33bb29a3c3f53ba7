"""The OpenAI Responses surface, its requests: input items, the prior context and the
prompt size read into the neutral call, the fields it acts on, and the refusals of what
is malformed or unsupported (pure)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.unit.responses_fixtures import MODELS, PNG, WEATHER, parse
from tokenmill.config import Limits
from tokenmill.errors import InvalidRequest
from tokenmill.neutral import (
    DocumentPart,
    ImagePart,
    Message,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from tokenmill.surfaces.responses_request import parse_responses


def refusal(limits: Limits | None = None, **fields: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse(limits, **fields)
    return caught.value


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
