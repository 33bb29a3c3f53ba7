"""The Anthropic Messages surface: a /v1/messages body read into the neutral call, and
neutral answers rendered as Anthropic bodies and event streams (pure, no I/O; the official
SDK reads the rendered bytes through an in-memory transport)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from tokenmill.config import Limits, ModelConfig
from tokenmill.errors import (
    AuthenticationFailed,
    InsufficientFunds,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    TokenmillError,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)
from tokenmill.neutral import (
    TEXT_OUTPUT,
    Answer,
    DocumentPart,
    Finish,
    ImagePart,
    Message,
    OutputFormat,
    Reasoning,
    ReasoningDelta,
    ReasoningPart,
    StreamPart,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    UsageReport,
    WirePart,
)
from tokenmill.surfaces import Parser
from tokenmill.surfaces.messages_render import (
    ANTHROPIC_WIRE,
    MessagesRenderer,
    anthropic_error_body,
    anthropic_status,
)
from tokenmill.surfaces.messages_request import (
    STOP_SEQUENCE_CHARS_MAX,
    STOP_SEQUENCES_COUNT_MAX,
    parse_count_tokens,
    parse_messages,
)
from tokenmill.usage import TokenCounts

MODELS = {
    "claude": ModelConfig(deployments=["d"], context_tokens=200_000, output_tokens_max=8192),
    "embed": ModelConfig(kind="embedding", deployments=["d"]),
}
HELLO = [{"role": "user", "content": "hi"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}


def parse(**fields: Any) -> Any:
    body = {"model": "claude", "max_tokens": 1024, "messages": HELLO, **fields}
    return parse_messages({k: v for k, v in body.items() if v is not ...}, MODELS, Limits())


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


COUNTS = TokenCounts(100, 20, cached_tokens=30, cache_write_tokens=10, reasoning_tokens=5)
USAGE = {
    "input_tokens": 60,
    "output_tokens": 20,
    "cache_creation_input_tokens": 10,
    "cache_read_input_tokens": 30,
}
ZERO_CACHE = {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def renderer(**fields: Any) -> MessagesRenderer:
    return MessagesRenderer(parse(**fields), "req_abc123", 1700000000)


def body_of(answer: Answer) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(renderer().body(answer))
    return decoded


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Framed events as (event name, data), checking each frame's shape."""
    assert raw.endswith(b"\n\n")
    read = []
    for frame in raw[:-2].split(b"\n\n"):
        head, data = frame.split(b"\n")
        assert head.startswith(b"event: ") and data.startswith(b"data: ")
        decoded = orjson.loads(data[6:])
        assert decoded["type"] == head[7:].decode()
        read.append((head[7:].decode(), decoded))
    return read


def streamed(
    parts: list[StreamPart], counts: TokenCounts = COUNTS
) -> list[tuple[str, dict[str, Any]]]:
    """The events of a whole stream: the parts in one batch, then its end."""
    rendering = renderer()
    written = rendering.parts(parts)
    assert all(not part.usage_only for part in written)
    return events(b"".join(part.payload for part in written) + rendering.end(counts))


START, DELTA, STOP = "content_block_start", "content_block_delta", "content_block_stop"
START_MESSAGE: dict[str, Any] = {
    "id": "msg_abc123",
    "type": "message",
    "role": "assistant",
    "model": "claude",
    "content": [],
    "stop_reason": None,
    "stop_sequence": None,
    "usage": {**USAGE, "input_tokens": 90, "output_tokens": 0} | ZERO_CACHE,
}


def brief(read: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, Any, Any]]:
    """Events as (name, block index, the block started or the delta)."""
    return [
        (name, data.get("index"), data.get("content_block", data.get("delta")))
        for name, data in read
    ]


class TestBody:
    def test_an_answer_is_an_anthropic_message(self) -> None:
        answer = Answer(
            (
                ReasoningPart("hmm", "sig"),
                TextPart(""),
                TextPart("It is 4 C."),
                ToolCallPart("toolu_1", "get_weather", '{"city": "Oslo"}'),
            ),
            "tool_calls",
            COUNTS,
        )
        assert body_of(answer) == {
            "id": "msg_abc123",
            "type": "message",
            "role": "assistant",
            "model": "claude",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "It is 4 C."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": USAGE,
        }

    def test_redacted_and_unsigned_thinking_and_broken_arguments_still_render(self) -> None:
        parts = (
            ReasoningPart("", "opaque", redacted=True),
            ReasoningPart("plain"),
            ToolCallPart("t1", "f", '{"cut'),
            ToolCallPart("t2", "f", "[1, 2]"),
        )
        assert body_of(Answer(parts, "tool_calls", COUNTS))["content"] == [
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "thinking", "thinking": "plain", "signature": ""},
            {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
            {"type": "tool_use", "id": "t2", "name": "f", "input": {}},
        ]

    def test_an_empty_answer_keeps_one_empty_text(self) -> None:
        answer = Answer((TextPart(""), TextPart("")), "stop", COUNTS)
        assert body_of(answer)["content"] == [{"type": "text", "text": ""}]
        assert body_of(Answer((), "stop", COUNTS))["content"] == []

    @pytest.mark.parametrize(
        ("finish", "sequence", "reason", "shown"),
        [
            ("stop", None, "end_turn", None),
            ("stop", "END", "stop_sequence", "END"),
            ("length", None, "max_tokens", None),
            ("length", "END", "max_tokens", None),
            ("tool_calls", None, "tool_use", None),
            ("content_filter", None, "refusal", None),
        ],
    )
    def test_the_finish_is_anthropics_stop_reason(
        self, finish: Any, sequence: str | None, reason: str, shown: str | None
    ) -> None:
        body = body_of(Answer((TextPart("x"),), finish, COUNTS, stop_sequence=sequence))
        assert (body["stop_reason"], body["stop_sequence"]) == (reason, shown)

    def test_an_engines_own_body_passes_untouched(self) -> None:
        raw = b'{"id":"msg_up","type":"message","extra":1}'
        assert renderer().body(raw) is raw


class TestStream:
    def test_a_whole_stream_is_anthropics_event_sequence(self) -> None:
        parts: list[StreamPart] = [
            ReasoningDelta("hm"),
            ReasoningDelta("m", "sig"),
            TextDelta("Hel"),
            TextDelta(""),
            TextDelta("lo"),
            ToolCallDelta(0, "toolu_1", "get_weather"),
            ToolCallDelta(0, arguments='{"city":'),
            ToolCallDelta(0, "toolu_1", arguments=' "Oslo"}'),
            ToolCallDelta(1, "toolu_2", "get_time", "{}"),
            Finish("tool_calls"),
            UsageReport(TokenCounts(90, 18)),
        ]
        read = streamed(parts)
        assert read[:2] == [
            ("message_start", {"type": "message_start", "message": START_MESSAGE}),
            ("ping", {"type": "ping"}),
        ]
        assert brief(read[2:-2]) == [
            (START, 0, {"type": "thinking", "thinking": "", "signature": ""}),
            (DELTA, 0, {"type": "thinking_delta", "thinking": "hm"}),
            (DELTA, 0, {"type": "thinking_delta", "thinking": "m"}),
            (DELTA, 0, {"type": "signature_delta", "signature": "sig"}),
            (STOP, 0, None),
            (START, 1, {"type": "text", "text": ""}),
            (DELTA, 1, {"type": "text_delta", "text": "Hel"}),
            (DELTA, 1, {"type": "text_delta", "text": "lo"}),
            (STOP, 1, None),
            (START, 2, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}),
            (DELTA, 2, {"type": "input_json_delta", "partial_json": '{"city":'}),
            (DELTA, 2, {"type": "input_json_delta", "partial_json": ' "Oslo"}'}),
            (STOP, 2, None),
            (START, 3, {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}),
            (DELTA, 3, {"type": "input_json_delta", "partial_json": "{}"}),
            (STOP, 3, None),
        ]
        final = {"stop_reason": "tool_use", "stop_sequence": None}
        assert read[-2:] == [
            ("message_delta", {"type": "message_delta", "delta": final, "usage": USAGE}),
            ("message_stop", {"type": "message_stop"}),
        ]

    def test_blocks_and_state_carry_across_batches(self) -> None:
        rendering = renderer()
        first = rendering.parts([TextDelta("a")])
        second = rendering.parts([TextDelta("b"), Finish("stop", "END")])
        raw = b"".join(part.payload for part in first + second) + rendering.end(COUNTS)
        read = events(raw)
        assert [(name, index) for name, index, _ in brief(read)] == [
            ("message_start", None),
            ("ping", None),
            (START, 0),
            (DELTA, 0),
            (DELTA, 0),
            (STOP, 0),
            ("message_delta", None),
            ("message_stop", None),
        ]
        assert read[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}

    def test_a_stream_with_nothing_in_it_is_still_well_formed(self) -> None:
        kinds = [name for name, _ in events(renderer().end(COUNTS))]
        assert kinds == ["message_start", "ping", "message_delta", "message_stop"]
        start = events(renderer().end(COUNTS))[0][1]
        assert start["message"]["usage"] == USAGE | {"output_tokens": 0}

    def test_a_stream_cut_before_its_finish_closes_its_block_and_ends_its_turn(self) -> None:
        read = streamed([TextDelta("a")])
        assert [name for name, _ in read][-3:] == [STOP, "message_delta", "message_stop"]
        assert read[-2][1]["delta"]["stop_reason"] == "end_turn"

    def test_redacted_reasoning_streams_whole_in_its_block_start(self) -> None:
        read = streamed([ReasoningDelta("opaque", redacted=True), TextDelta("x")])
        assert read[2][1]["content_block"] == {"type": "redacted_thinking", "data": "opaque"}
        assert read[3] == ("content_block_stop", {"type": "content_block_stop", "index": 0})
        assert read[4][1]["index"] == 1

    def test_an_engines_own_events_pass_through_and_end_adds_only_message_stop(self) -> None:
        rendering = renderer()
        relayed: list[StreamPart] = [WirePart(b'event: ping\ndata: {"type":"ping"}\n\n')]
        assert rendering.parts(relayed) is relayed
        assert rendering.end(COUNTS) == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'

    def test_usage_is_a_message_delta_never_a_usage_only_chunk(self) -> None:
        part = renderer().usage(COUNTS)
        assert not part.usage_only
        ((name, data),) = events(part.payload)
        assert (name, data["usage"]) == ("message_delta", USAGE)

    def test_an_error_mid_stream_is_an_error_event(self) -> None:
        raw = renderer().fail(UpstreamError("upstream broke"))
        assert raw == (
            b'event: error\ndata: {"type":"error","error":'
            b'{"type":"api_error","message":"upstream broke"}}\n\n'
        )


class TestErrors:
    @pytest.mark.parametrize(
        ("error", "kind", "status"),
        [
            (InvalidRequest("bad"), "invalid_request_error", 400),
            (AuthenticationFailed("who"), "authentication_error", 401),
            (InsufficientFunds("broke"), "billing_error", 402),
            (NotFound("gone"), "not_found_error", 404),
            (PayloadTooLarge("big"), "request_too_large", 413),
            (RateLimited("slow"), "rate_limit_error", 429),
            (UpstreamError("up"), "api_error", 502),
            (Unavailable("busy"), "overloaded_error", 529),
            (UpstreamTimeout("late"), "timeout_error", 504),
            (TokenmillError("bug"), "api_error", 500),
        ],
    )
    def test_errors_are_in_anthropics_shape_and_status(
        self, error: TokenmillError, kind: str, status: int
    ) -> None:
        body = orjson.loads(anthropic_error_body(error))
        assert body == {"type": "error", "error": {"type": kind, "message": error.message}}
        assert anthropic_status(error) == status
        assert ANTHROPIC_WIRE.status(error) == status
        assert ANTHROPIC_WIRE.error_body(error) == anthropic_error_body(error)

    def test_the_wire_frames_nothing_itself(self) -> None:
        payload = b"event: ping\ndata: {}\n\n"
        assert ANTHROPIC_WIRE.frame(WirePart(payload)) is payload


def sdk() -> Any:
    return pytest.importorskip("anthropic")


def sdk_client(status: int, content: bytes, content_type: str) -> Any:
    """The official client over an in-memory transport that answers ``content``."""
    httpx2 = pytest.importorskip("httpx2")  # the HTTP client this SDK is built on

    def answer(request: Any) -> Any:
        return httpx2.Response(status, headers={"content-type": content_type}, content=content)

    http_client = httpx2.Client(transport=httpx2.MockTransport(answer))
    return sdk().Anthropic(
        api_key="test", base_url="http://tokenmill.test", http_client=http_client, max_retries=0
    )


ASK = {"model": "claude", "max_tokens": 1024, "messages": HELLO}


class TestOfficialSdk:
    def test_the_sdk_accumulates_a_rendered_stream(self) -> None:
        parts: list[StreamPart] = [
            ReasoningDelta("think"),
            ReasoningDelta("", "sig"),
            TextDelta("It is "),
            TextDelta("4 C."),
            ToolCallDelta(0, "toolu_1", "get_weather"),
            ToolCallDelta(0, arguments='{"city": '),
            ToolCallDelta(0, arguments='"Oslo"}'),
            Finish("tool_calls"),
        ]
        rendering = renderer()
        raw = b"".join(part.payload for part in rendering.parts(parts)) + rendering.end(COUNTS)
        client = sdk_client(200, raw, "text/event-stream")
        with client.messages.stream(**ASK) as stream:
            message = stream.get_final_message()
        assert message.id == "msg_abc123"
        assert [block.type for block in message.content] == ["thinking", "text", "tool_use"]
        assert (message.content[0].thinking, message.content[0].signature) == ("think", "sig")
        assert message.content[1].text == "It is 4 C."
        assert (message.content[2].name, message.content[2].input) == (
            "get_weather",
            {"city": "Oslo"},
        )
        assert message.stop_reason == "tool_use"
        usage = message.usage
        assert (usage.input_tokens, usage.output_tokens) == (60, 20)
        assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (30, 10)

    def test_the_sdk_reads_a_rendered_body(self) -> None:
        answer = Answer((TextPart("Hi."),), "stop", COUNTS, stop_sequence="END")
        client = sdk_client(200, renderer().body(answer), "application/json")
        message = client.messages.create(**ASK)
        assert message.content[0].text == "Hi."
        assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")
        assert (message.usage.input_tokens, message.usage.output_tokens) == (60, 20)

    def test_the_sdk_reads_an_overloaded_error(self) -> None:
        error = Unavailable("no capacity")
        client = sdk_client(
            anthropic_status(error), anthropic_error_body(error), "application/json"
        )
        with pytest.raises(sdk().OverloadedError) as caught:
            client.messages.create(**ASK)
        assert caught.value.body["error"]["type"] == "overloaded_error"

    def test_the_sdk_raises_an_error_event_mid_stream(self) -> None:
        rendering = renderer()
        raw = b"".join(part.payload for part in rendering.parts([TextDelta("partial")]))
        raw += rendering.fail(UpstreamError("upstream broke"))
        client = sdk_client(200, raw, "text/event-stream")
        with pytest.raises(sdk().APIStatusError) as caught, client.messages.stream(**ASK) as stream:
            stream.get_final_message()
        assert "upstream broke" in str(caught.value)
