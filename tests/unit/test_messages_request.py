"""The Anthropic Messages surface, its requests: a /v1/messages (or count_tokens) body
read into the neutral call: fields, thinking, output format, tools, system and messages,
content blocks, and the refusals of what is malformed, unbounded or unsupported (pure)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from tests.unit.messages_fixtures import HELLO, MODELS, parse
from tokenmill.config import Limits
from tokenmill.errors import (
    InvalidRequest,
    NotFound,
)
from tokenmill.neutral import (
    TEXT_OUTPUT,
    DocumentPart,
    ImagePart,
    Message,
    OutputFormat,
    Reasoning,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
)
from tokenmill.surfaces import Parser
from tokenmill.surfaces.messages_request import (
    STOP_SEQUENCE_CHARS_MAX,
    STOP_SEQUENCES_COUNT_MAX,
    parse_count_tokens,
    parse_messages,
)

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}


def refusal(**fields: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse(**fields)
    return caught.value


def user(*blocks: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(blocks)}]


def assistant(*blocks: Any) -> list[dict[str, Any]]:
    return [*HELLO, {"role": "assistant", "content": list(blocks)}]


class TestRequestFields:
    def test_a_plain_body_reads_into_a_messages_call(self) -> None:
        """Surface, model, the body kept whole, no stream and no usage chunk asked for."""
        call = parse(service_tier="auto", anthropic_beta_thing={"kept": True})
        assert call.surface == "messages"
        assert call.model == "claude"
        assert call.body["anthropic_beta_thing"] == {"kept": True}
        assert (call.stream, call.include_usage, call.output_tokens_max) == (False, False, 1024)
        assert call.messages == (Message("user", (TextPart("hi"),)),)

    def test_the_output_cap_is_the_least_of_max_tokens_the_model_and_the_system(self) -> None:
        body = {"model": "claude", "max_tokens": 100_000, "messages": HELLO}
        assert parse_messages(body, MODELS, Limits()).output_tokens_max == 8192
        low = Limits(output_tokens_max=500)
        assert parse_messages(body, MODELS, low).output_tokens_max == 500
        assert parse(max_tokens=7).output_tokens_max == 7

    @pytest.mark.parametrize("value", [..., 0, -3, True, "10", 1.5, None])
    def test_max_tokens_is_required_and_a_positive_integer(self, value: Any) -> None:
        assert refusal(max_tokens=value).param == "max_tokens"

    def test_max_tokens_beyond_the_context_is_refused(self) -> None:
        error = refusal(max_tokens=200_001)
        assert error.param == "max_tokens"
        assert "200000" in error.message

    def test_the_model_is_checked_first(self) -> None:
        assert refusal(model=..., max_tokens=0).param == "model"
        with pytest.raises(NotFound):
            parse(model="nope")
        with pytest.raises(NotFound):
            parse_messages({"model": "claude"}, MODELS, Limits(), may_use=lambda name: False)
        assert refusal(model="embed").param == "model"

    def test_stream_is_read_and_must_be_a_boolean(self) -> None:
        assert parse(stream=True).stream is True
        assert refusal(stream="yes").param == "stream"

    def test_sampling_is_read_in_anthropics_ranges(self) -> None:
        call = parse(temperature=0.5, top_p=0.9, top_k=40)
        assert (call.sampling.temperature, call.sampling.top_p, call.sampling.top_k) == (
            0.5,
            0.9,
            40,
        )

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("temperature", 1.5),
            ("temperature", "hot"),
            ("top_p", -0.1),
            ("top_k", -1),
            ("top_k", True),
            ("top_k", 2.5),
        ],
    )
    def test_sampling_out_of_range_is_refused_naming_it(self, name: str, value: Any) -> None:
        assert refusal(**{name: value}).param == name

    def test_stop_sequences_are_read(self) -> None:
        assert parse(stop_sequences=["\n\nHuman:", "END"]).stop == ("\n\nHuman:", "END")

    @pytest.mark.parametrize(
        "value",
        [
            "END",
            [""],
            [3],
            ["x" * (STOP_SEQUENCE_CHARS_MAX + 1)],
            ["s"] * (STOP_SEQUENCES_COUNT_MAX + 1),
        ],
    )
    def test_malformed_or_unbounded_stop_sequences_are_refused(self, value: Any) -> None:
        assert refusal(stop_sequences=value).param == "stop_sequences"

    def test_metadata_holds_a_user_id_only(self) -> None:
        assert parse(metadata={"user_id": "u-1"}).model == "claude"
        assert parse(metadata={"user_id": None}).model == "claude"
        assert refusal(metadata={"user_id": "u", "team": "x"}).param == "metadata"
        assert refusal(metadata="u-1").param == "metadata"
        assert refusal(metadata={"user_id": "u" * 257}).param == "metadata.user_id"
        assert refusal(metadata={"user_id": 7}).param == "metadata.user_id"

    @pytest.mark.parametrize("name", ["mcp_servers", "container"])
    def test_what_no_engine_here_does_is_refused_by_name(self, name: str) -> None:
        error = refusal(**{name: [{"url": "https://mcp.example"}]})
        assert error.param == name
        assert error.code == "unsupported_value"

    def test_a_service_tier_is_accepted_and_must_be_a_string(self) -> None:
        assert parse(service_tier="standard_only").batch is False
        assert refusal(service_tier=1).param == "service_tier"


class TestThinking:
    def test_an_enabled_budget_is_the_reasoning_and_needs_a_token_beyond_it(self) -> None:
        call = parse(max_tokens=4000, thinking={"type": "enabled", "budget_tokens": 2048})
        assert call.reasoning == Reasoning(budget_tokens=2048)
        assert call.output_tokens_min == 2049

    def test_disabled_thinking_is_no_reasoning_and_adaptive_leaves_the_budget_open(self) -> None:
        assert parse(thinking={"type": "disabled"}).reasoning is None
        assert parse(thinking={"type": "adaptive"}).reasoning == Reasoning()

    @pytest.mark.parametrize(
        ("thinking", "param"),
        [
            ({"type": "enabled", "budget_tokens": 1023}, "thinking.budget_tokens"),
            ({"type": "enabled", "budget_tokens": "2048"}, "thinking.budget_tokens"),
            ({"type": "enabled"}, "thinking.budget_tokens"),
            ({"type": "enabled", "budget_tokens": 4000}, "thinking.budget_tokens"),
            ({"type": "on"}, "thinking.type"),
            ({"type": ["enabled"]}, "thinking.type"),
            ("enabled", "thinking"),
        ],
    )
    def test_a_bad_thinking_config_is_refused_naming_it(self, thinking: Any, param: str) -> None:
        assert refusal(max_tokens=4000, thinking=thinking).param == param

    def test_a_budget_beyond_the_models_output_cap_is_refused(self) -> None:
        """max_tokens above the model's 8192 is capped; a budget of 9000 would not fit."""
        error = refusal(max_tokens=20_000, thinking={"type": "enabled", "budget_tokens": 9000})
        assert error.param == "thinking.budget_tokens"
        assert "8192" in error.message


class TestOutputFormat:
    def test_a_json_schema_output_format_is_the_calls_strict_output_format(self) -> None:
        """``output_config.format`` (Anthropic's structured outputs) is read into the
        neutral output format, so an engine that is not Anthropic's answers JSON too."""
        schema = {"type": "object", "properties": {"city": {"type": "string"}}}
        config = {"format": {"type": "json_schema", "schema": schema}, "effort": "high"}
        call = parse(output_config=config)
        assert call.output_format == OutputFormat("json_schema", schema=schema, strict=True)
        assert call.body["output_config"] == config  # relayed as sent

    def test_no_format_is_a_text_answer(self) -> None:
        assert parse().output_format == TEXT_OUTPUT
        assert parse(output_config={"effort": "low"}).output_format == TEXT_OUTPUT
        assert parse(output_config={"format": None}).output_format == TEXT_OUTPUT

    def test_count_tokens_reads_it_too(self) -> None:
        body: dict[str, Any] = {"model": "claude", "messages": HELLO}
        body["output_config"] = {"format": {"type": "json_schema", "schema": {}}}
        assert parse_count_tokens(body, MODELS, Limits()).output_format.kind == "json_schema"

    @pytest.mark.parametrize(
        ("config", "param"),
        [
            ("json", "output_config"),
            ({"effort": 3}, "output_config.effort"),
            ({"format": "json_schema"}, "output_config.format"),
            ({"format": {"type": "json_object"}}, "output_config.format.type"),
            ({"format": {"type": "json_schema"}}, "output_config.format.schema"),
            ({"format": {"type": "json_schema", "schema": "{}"}}, "output_config.format.schema"),
        ],
    )
    def test_a_bad_output_config_is_refused_naming_it(self, config: Any, param: str) -> None:
        assert refusal(output_config=config).param == param


class TestTools:
    def test_custom_tools_are_read_with_their_schemas(self) -> None:
        custom = {**WEATHER, "type": "custom", "cache_control": {"type": "ephemeral"}}
        call = parse(tools=[WEATHER, {**custom, "name": "other", "strict": True}])
        first, second = call.tools
        assert (first.name, first.description, first.parameters) == (
            "get_weather",
            "The weather in a city.",
            WEATHER["input_schema"],
        )
        assert (second.name, second.strict, first.strict) == ("other", True, False)
        assert call.prompt.tools_count == 2

    @pytest.mark.parametrize("kind", ["web_search_20250305", "bash_20250124", "computer_20250124"])
    def test_a_server_tool_is_refused_saying_no_engine_provides_it(self, kind: str) -> None:
        error = refusal(tools=[WEATHER, {"type": kind, "name": "x"}])
        assert error.param == "tools.[1].type"
        assert "no engine here provides the server tool" in error.message
        assert kind in error.message

    @pytest.mark.parametrize(
        ("tool", "param"),
        [
            ({**WEATHER, "name": "has space"}, "tools.[0].name"),
            ({**WEATHER, "name": None}, "tools.[0].name"),
            ({"name": "f"}, "tools.[0].input_schema"),
            ({**WEATHER, "input_schema": "{}"}, "tools.[0].input_schema"),
            ({**WEATHER, "description": 3}, "tools.[0].description"),
            ({**WEATHER, "cache_control": "yes"}, "tools.[0].cache_control"),
            ({**WEATHER, "type": 5}, "tools.[0].type"),
        ],
    )
    def test_a_malformed_tool_is_refused_naming_it(self, tool: Any, param: str) -> None:
        assert refusal(tools=[tool]).param == param

    @pytest.mark.parametrize("tools", ["x", [WEATHER] * 129, [WEATHER, WEATHER], [3]])
    def test_tools_are_an_array_bounded_and_uniquely_named(self, tools: Any) -> None:
        assert refusal(tools=tools).param == "tools"

    @pytest.mark.parametrize(
        ("choice", "want"),
        [
            ({"type": "auto"}, ToolChoice("auto")),
            ({"type": "any"}, ToolChoice("required")),
            ({"type": "none"}, ToolChoice("none")),
            ({"type": "tool", "name": "get_weather"}, ToolChoice("tool", "get_weather")),
            (
                {"type": "any", "disable_parallel_tool_use": True},
                ToolChoice("required", parallel=False),
            ),
        ],
    )
    def test_a_tool_choice_is_its_mode_name_and_parallelism(
        self, choice: Any, want: ToolChoice
    ) -> None:
        assert parse(tools=[WEATHER], tool_choice=choice).tool_choice == want

    @pytest.mark.parametrize(
        ("choice", "param"),
        [
            ({"type": "tool", "name": "other"}, "tool_choice.name"),
            ({"type": "tool"}, "tool_choice.name"),
            ({"type": "required"}, "tool_choice.type"),
            ({"type": {}}, "tool_choice.type"),
            ("auto", "tool_choice"),
            (
                {"type": "auto", "disable_parallel_tool_use": 1},
                "tool_choice.disable_parallel_tool_use",
            ),
        ],
    )
    def test_a_bad_tool_choice_is_refused_naming_it(self, choice: Any, param: str) -> None:
        assert refusal(tools=[WEATHER], tool_choice=choice).param == param

    def test_any_tool_without_tools_is_refused(self) -> None:
        assert refusal(tool_choice={"type": "any"}).param == "tool_choice"


class TestSystemAndMessages:
    def test_a_system_string_is_one_system_message_counted_as_one(self) -> None:
        call = parse(system="be brief")
        assert call.messages[0] == Message("system", (TextPart("be brief"),))
        assert call.prompt.messages_count == 2

    def test_system_blocks_keep_their_cache_breakpoints(self) -> None:
        cached = {"type": "ephemeral"}
        system = [
            {"type": "text", "text": "a"},
            {"type": "text", "text": "b", "cache_control": cached},
        ]
        (first, *_) = parse(system=system).messages
        assert first == Message("system", (TextPart("a"), TextPart("b", cached)))

    @pytest.mark.parametrize(
        ("system", "param"),
        [
            (3, "system"),
            ([{"type": "image", "source": PNG}], "system.[0]"),
            (["text"], "system.[0]"),
            ([{"type": "text", "text": 3}], "system.[0].text"),
            (
                [{"type": "text", "text": "a", "cache_control": {"type": "x"}}],
                "system.[0].cache_control",
            ),
        ],
    )
    def test_a_bad_system_is_refused_naming_it(self, system: Any, param: str) -> None:
        assert refusal(system=system).param == param

    @pytest.mark.parametrize(
        ("messages", "param"),
        [
            ([], "messages"),
            ("hi", "messages"),
            ([3], "messages.[0]"),
            ([{"role": "system", "content": "x"}], "messages.[0].role"),
            ([{"role": ["user"], "content": "x"}], "messages.[0].role"),
            ([{"role": "user"}], "messages.[0].content"),
            ([{"role": "user", "content": {"text": "x"}}], "messages.[0].content"),
            (user("text"), "messages.[0].content.[0]"),
            (user({"text": "x"}), "messages.[0].content.[0]"),
            (user({"type": "text"}), "messages.[0].content.[0].text"),
            (
                user({"type": "text", "text": "x", "citations": "y"}),
                "messages.[0].content.[0].citations",
            ),
            (user({"type": "audio", "data": "x"}), "messages.[0].content.[0].type"),
        ],
    )
    def test_a_malformed_message_is_refused_naming_it(self, messages: Any, param: str) -> None:
        assert refusal(messages=messages).param == param

    def test_more_messages_than_the_limit_are_refused(self) -> None:
        body = {"model": "claude", "max_tokens": 5, "messages": HELLO * 3}
        with pytest.raises(InvalidRequest) as caught:
            parse_messages(body, MODELS, Limits(messages_count_max=2))
        assert caught.value.param == "messages"

    def test_the_prompt_size_leaves_image_data_out(self) -> None:
        """text_bytes is the body's size less the images' data; images and tools counted."""
        messages = user(
            {"type": "text", "text": "what is this?"},
            {"type": "image", "source": PNG},
            {"type": "image", "source": {"type": "url", "url": "https://x.example/a.png"}},
        )
        body = {"model": "claude", "max_tokens": 5, "messages": messages, "system": "s"}
        call = parse_messages(body, MODELS, Limits(), body_bytes=5000)
        assert call.prompt.text_bytes == 5000 - len(PNG["data"]) - len("https://x.example/a.png")
        assert (call.prompt.messages_count, call.prompt.images_count) == (2, 2)
        measured = parse_messages(body, MODELS, Limits())
        assert measured.prompt.text_bytes == len(orjson.dumps(body)) - 12 - 23


class TestBlocks:
    def test_images_are_data_urls_or_their_url(self) -> None:
        call = parse(
            messages=user(
                {"type": "image", "source": PNG},
                {"type": "image", "source": {"type": "url", "url": "https://x.example/a.png"}},
            )
        )
        assert call.messages[0].parts == (
            ImagePart("data:image/png;base64,iVBORw0KGgo="),
            ImagePart("https://x.example/a.png"),
        )

    @pytest.mark.parametrize(
        ("source", "param"),
        [
            (None, "messages.[0].content.[0].source"),
            ({**PNG, "media_type": "image/bmp"}, "messages.[0].content.[0].source.media_type"),
            ({**PNG, "data": ""}, "messages.[0].content.[0].source.data"),
            ({"type": "url"}, "messages.[0].content.[0].source.url"),
            ({"type": "file", "file_id": "f"}, "messages.[0].content.[0].source"),
        ],
    )
    def test_a_bad_image_source_is_refused_naming_it(self, source: Any, param: str) -> None:
        assert refusal(messages=user({"type": "image", "source": source})).param == param

    def test_documents_are_document_parts_or_text(self) -> None:
        cached = {"type": "ephemeral"}
        pdf = {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}
        call = parse(
            messages=user(
                {"type": "document", "source": pdf, "title": "T", "cache_control": cached},
                {"type": "document", "source": {"type": "url", "url": "https://x.example/a.pdf"}},
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "plain"},
                },
                {
                    "type": "document",
                    "source": {"type": "content", "content": [{"type": "text", "text": "c1"}]},
                    "cache_control": cached,
                },
                {"type": "document", "source": {"type": "content", "content": "c2"}},
            )
        )
        assert call.messages[0].parts == (
            DocumentPart("application/pdf", data="JVBERi0=", title="T", cache_control=cached),
            DocumentPart("application/pdf", url="https://x.example/a.pdf"),
            TextPart("plain"),
            TextPart("c1", cached),
            TextPart("c2"),
        )

    @pytest.mark.parametrize(
        ("document", "param"),
        [
            (
                {"source": {"type": "base64", "media_type": "text/plain", "data": "x"}},
                ".source.media_type",
            ),
            ({"source": {"type": "text", "media_type": "text/plain"}}, ".source.data"),
            (
                {"source": {"type": "content", "content": [{"type": "image", "source": PNG}]}},
                ".source.content.[0]",
            ),
            ({"source": {"type": "content", "content": 3}}, ".source.content"),
            ({"source": {"type": ["url"]}}, ".source"),
            ({"source": {"type": "url", "url": "u"}, "title": 3}, ".title"),
        ],
    )
    def test_a_bad_document_is_refused_naming_it(self, document: Any, param: str) -> None:
        error = refusal(messages=user({"type": "document", **document}))
        assert error.param == "messages.[0].content.[0]" + param

    def test_an_assistant_turn_keeps_thinking_text_and_tool_calls_in_order(self) -> None:
        call = parse(
            messages=assistant(
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            )
        )
        assert call.messages[1] == Message(
            "assistant",
            (
                ReasoningPart("hmm", "sig"),
                ReasoningPart("", "opaque", redacted=True),
                TextPart("Let me look."),
                ToolCallPart("toolu_1", "get_weather", '{"city":"Oslo"}'),
            ),
        )

    def test_a_user_turn_with_tool_results_is_tool_messages_then_the_user_message(self) -> None:
        messages = user(
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "4 C"},
            {
                "type": "tool_result",
                "tool_use_id": "toolu_2",
                "is_error": True,
                "content": [{"type": "text", "text": "down"}, {"type": "image", "source": PNG}],
            },
            {"type": "tool_result", "tool_use_id": "toolu_3"},
            {"type": "text", "text": "thanks"},
        )
        call = parse(messages=messages)
        assert call.messages == (
            Message("tool", (ToolResultPart("toolu_1", (TextPart("4 C"),)),)),
            Message(
                "tool",
                (
                    ToolResultPart(
                        "toolu_2",
                        (TextPart("down"), ImagePart("data:image/png;base64,iVBORw0KGgo=")),
                        is_error=True,
                    ),
                ),
            ),
            Message("tool", (ToolResultPart("toolu_3", ()),)),
            Message("user", (TextPart("thanks"),)),
        )
        assert call.prompt.images_count == 1

    @pytest.mark.parametrize(
        ("turn", "block", "field"),
        [
            (user, {"type": "tool_use", "id": "t", "name": "f", "input": {}}, "type"),
            (user, {"type": "thinking", "thinking": "x", "signature": "s"}, "type"),
            (assistant, {"type": "tool_result", "tool_use_id": "t"}, "type"),
            (assistant, {"type": "image", "source": PNG}, "type"),
            (assistant, {"type": "tool_use", "id": "t", "name": "f", "input": "{}"}, "input"),
            (assistant, {"type": "tool_use", "id": "", "name": "f", "input": {}}, "id"),
            (assistant, {"type": "tool_use", "id": "t", "input": {}}, "name"),
            (assistant, {"type": "thinking", "thinking": "x"}, "signature"),
            (assistant, {"type": "redacted_thinking"}, "data"),
            (user, {"type": "tool_result", "content": "x"}, "tool_use_id"),
            (user, {"type": "tool_result", "tool_use_id": "t", "is_error": "no"}, "is_error"),
            (user, {"type": "tool_result", "tool_use_id": "t", "content": 3}, "content"),
            (user, {"type": "tool_result", "tool_use_id": "t", "content": [{}]}, "content.[0]"),
            (user, {"type": "text", "text": "x", "cache_control": "ephemeral"}, "cache_control"),
        ],
    )
    def test_a_block_in_the_wrong_turn_or_malformed_is_refused_naming_it(
        self, turn: Any, block: Any, field: str
    ) -> None:
        index = 0 if turn is user else 1
        assert refusal(messages=turn(block)).param == f"messages.[{index}].content.[0].{field}"

    @pytest.mark.parametrize("kind", ["server_tool_use", "web_search_tool_result", "mcp_tool_use"])
    def test_a_server_tool_block_is_refused_naming_it(self, kind: str) -> None:
        error = refusal(messages=assistant({"type": kind, "id": "srvtoolu_1"}))
        assert error.param == "messages.[1].content.[0].type"
        assert kind in error.message


GARBAGE: list[Any] = [None, 0, True, "x", [], {}, [1], [None], [{}], {"type": 1}, {"type": []}]
# Dotted, as the params are (a number is an array index); one string keeps the table short.
PATHS = (  # noqa: SIM905
    "system system.0 messages.0 messages.0.content messages.0.content.0"
    " messages.0.content.0.content messages.0.content.0.content.0"
    " messages.0.content.0.content.1.source messages.0.content.1.source"
    " messages.0.content.1.source.type messages.0.content.2.source"
    " messages.0.content.2.source.content messages.0.content.2.source.content.0"
    " messages.1.content.0 messages.1.content.0.input messages.1.content.1.signature"
    " tools tools.0 tools.0.input_schema tool_choice tool_choice.type thinking"
    " thinking.budget_tokens metadata stop_sequences top_k temperature"
).split()
TEXT = {"type": "text", "text": "r"}
DOCUMENT = {"type": "document", "source": {"type": "content", "content": [TEXT]}}


def _full_body() -> dict[str, Any]:
    image = {"type": "image", "source": PNG}
    result = {"type": "tool_result", "tool_use_id": "t", "content": [TEXT, image]}
    calls = [
        {"type": "tool_use", "id": "t", "name": "f", "input": {}},
        {"type": "thinking", "thinking": "x", "signature": "s"},
    ]
    return {
        "model": "claude",
        "max_tokens": 4000,
        "system": [TEXT],
        "messages": [*user(result, image, DOCUMENT), {"role": "assistant", "content": calls}],
        "tools": [WEATHER],
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "metadata": {"user_id": "u"},
        "stop_sequences": ["x"],
        "top_k": 3,
        "temperature": 1,
    }


class TestStrangersJson:
    @pytest.mark.parametrize("path", PATHS)
    def test_any_value_anywhere_is_read_or_refused_never_a_crash(self, path: str) -> None:
        """A stranger's JSON can be anything: each value is a call or an InvalidRequest."""
        *steps, last = [int(step) if step.isdigit() else step for step in path.split(".")]
        for value in GARBAGE:
            body = copy.deepcopy(_full_body())
            holder: Any = body
            for step in steps:
                holder = holder[step]
            holder[last] = copy.deepcopy(value)
            try:
                call = parse_messages(body, MODELS, Limits())
                assert call.messages
                parse_count_tokens(body, MODELS, Limits())
            except InvalidRequest as error:
                assert error.param is not None


class TestCountTokens:
    def test_both_parsers_are_surface_parsers(self) -> None:
        """Either can be a SurfaceAdapter's parse (mypy checks the assignment)."""
        parsers: list[Parser] = [parse_messages, parse_count_tokens]
        calls = [
            parser({"model": "claude", "max_tokens": 9, "messages": HELLO}, MODELS, Limits())
            for parser in parsers
        ]
        assert [call.output_tokens_max for call in calls] == [9, None]

    def test_count_tokens_needs_no_max_tokens_and_answers_no_output(self) -> None:
        body = {"model": "claude", "messages": HELLO, "stream": True, "tools": [WEATHER]}
        call = parse_count_tokens(body, MODELS, Limits())
        assert (call.surface, call.output_tokens_max, call.stream) == ("messages", None, False)
        assert call.tools[0].name == "get_weather"
        assert call.messages == (Message("user", (TextPart("hi"),)),)

    def test_count_tokens_checks_the_same_fields(self) -> None:
        with pytest.raises(InvalidRequest) as caught:
            parse_count_tokens({"model": "claude", "messages": [3]}, MODELS, Limits())
        assert caught.value.param == "messages.[0]"
        thinking = {"type": "enabled", "budget_tokens": 50_000}
        body = {"model": "claude", "messages": HELLO, "thinking": thinking, "max_tokens": "x"}
        assert parse_count_tokens(body, MODELS, Limits()).reasoning == Reasoning(
            budget_tokens=50_000
        )
