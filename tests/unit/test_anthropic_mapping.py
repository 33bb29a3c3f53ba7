"""The ``anthropic`` engine's way up, pure: neutral call -> Messages request (the
conversation with images, tool calls and results and reasoning; tools and tool choice; JSON
output formats as a forced tool; thinking budgets; sampling), the requests it refuses naming
the field, the local prompt count; its configuration and how routing sees it. The way back
(answers, usage, streams) is in ``test_anthropic_answers``."""

from __future__ import annotations

from typing import Any

import pytest

from tokenmill.api.fleet_costs import serving_costs
from tokenmill.api.fleet_router import fleet_candidates
from tokenmill.api.gateway import build_backends
from tokenmill.config import AnthropicEngineConfig, parse_config, upstream_cost
from tokenmill.engines.anthropic import AnthropicBackend, AnthropicSession
from tokenmill.engines.anthropic_messages import (
    THINKING_BUDGET_TOKENS_BY_EFFORT,
    json_tool_name,
    messages_request,
)
from tokenmill.errors import ConfigurationError, InvalidRequest
from tokenmill.fleet.routing import Candidate
from tokenmill.neutral import (
    ImagePart,
    Message,
    NeutralCall,
    OutputFormat,
    Part,
    PromptSize,
    Reasoning,
    ReasoningPart,
    Sampling,
    Surface,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    prompt_tokens_estimate,
)
from tokenmill.usage import count_text_tokens

ENGINE = "claude-vendor"
UPSTREAM_MODEL = "claude-sonnet-4-5"
CAP = 64
CLOCK_NS = 123_456_789
HELLO = Message("user", (TextPart("hello there"),))
WEATHER = Tool("weather", "The weather in a city.", {"type": "object", "properties": {}})
PING = Tool("ping", "", {"type": "object"})
PNG = "data:image/png;base64,iVBORw0KGgo="
ANSWER_SCHEMA = {"type": "object", "properties": {"x": {"type": "integer"}}}


def call_of(
    *messages: Message,
    surface: Surface = "chat",
    stream: bool = False,
    body: dict[str, Any] | None = None,
    **fields: Any,
) -> NeutralCall:
    """A neutral call of ``messages`` (HELLO when none) with ``fields`` set."""
    chosen = messages or (HELLO,)
    return NeutralCall(
        surface=surface,
        model="sonnet",
        body=body or {},
        stream=stream,
        include_usage=True,
        output_tokens_max=CAP,
        prompt=PromptSize(text_bytes=100, messages_count=len(chosen)),
        read_messages=lambda: chosen,
        **fields,
    )


def request_of(call: NeutralCall, cap: int = CAP) -> dict[str, Any]:
    return messages_request(call, cap, UPSTREAM_MODEL, ENGINE)


def turns_of(*messages: Message) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = request_of(call_of(*messages))["messages"]
    return turns


def refused_param(call: NeutralCall, cap: int = CAP) -> str | None:
    with pytest.raises(InvalidRequest) as caught:
        request_of(call, cap)
    return caught.value.param


def user(*parts: Part) -> Message:
    return Message("user", parts)


def assistant(*parts: Part) -> Message:
    return Message("assistant", parts)


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


class TestConversation:
    def test_system_messages_become_system_blocks_with_their_cache_breakpoints(self) -> None:
        """Every system text, in order, is a system block; cache_control is kept."""
        breakpoint_ = {"type": "ephemeral"}
        request = request_of(
            call_of(
                Message("system", (TextPart("be brief", breakpoint_),)),
                user(TextPart("hi")),
                Message("system", (TextPart("use French"), TextPart(""))),
            )
        )
        assert request["system"] == [
            {"type": "text", "text": "be brief", "cache_control": breakpoint_},
            text("use French"),
        ]
        assert request["messages"] == [{"role": "user", "content": [text("hi")]}]

    def test_consecutive_turns_of_one_role_are_merged_and_empty_texts_left_out(self) -> None:
        """user, user, assistant, (empty), user: three alternating turns, no empty block."""
        turns = turns_of(
            user(TextPart("one")),
            user(TextPart(""), TextPart("two")),
            assistant(TextPart("three", {"type": "ephemeral"})),
            assistant(TextPart("")),
            user(TextPart("four")),
        )
        assert [turn["role"] for turn in turns] == ["user", "assistant", "user"]
        assert turns[0]["content"] == [text("one"), text("two")]
        assert turns[1]["content"] == [
            {"type": "text", "text": "three", "cache_control": {"type": "ephemeral"}}
        ]

    def test_images_become_base64_or_url_sources(self) -> None:
        """A data: URL's bytes go up as base64 with its media type; http(s) as a URL."""
        (turn,) = turns_of(user(ImagePart(PNG, "high"), ImagePart("https://x.test/cat.jpg")))
        assert turn["content"] == [
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
            },
            {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.jpg"}},
        ]

    @pytest.mark.parametrize(
        "url",
        [
            "ftp://x.test/a.png",
            "file:///etc/passwd",
            "data:image/png,rawbytes",
            "data:image/bmp;base64,Qk0=",
        ],
        ids=["ftp", "file", "not-base64", "bmp"],
    )
    def test_an_image_it_cannot_send_is_refused_naming_the_message(self, url: str) -> None:
        """Other schemes, data: URLs that are not base64, and other media types."""
        assert refused_param(call_of(HELLO, user(ImagePart(url)))) == "messages.[1].content"

    def test_tool_calls_become_tool_use_blocks_with_their_input_parsed(self) -> None:
        """The arguments' JSON text is the block's input object; empty arguments read as {}."""
        (_, turn) = turns_of(
            HELLO,
            assistant(
                TextPart("Let me look."),
                ToolCallPart("toolu_1", "weather", '{"city": "Paris"}'),
                ToolCallPart("toolu_2", "ping", ""),
            ),
        )
        assert turn["content"] == [
            text("Let me look."),
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "ping", "input": {}},
        ]

    @pytest.mark.parametrize("arguments", ['{"city": ', "[1, 2]", '"Paris"'])
    def test_tool_call_arguments_that_are_no_json_object_are_refused(self, arguments: str) -> None:
        """Anthropic's input is an object: invalid or other JSON names the tool calls."""
        call = call_of(HELLO, assistant(ToolCallPart("toolu_1", "weather", arguments)))
        assert refused_param(call) == "messages.[1].tool_calls"

    def test_tool_results_are_a_user_turn_merged_with_the_next_user_message(self) -> None:
        """Each result is a tool_result block (text and images, is_error when set), first in
        the user turn that the following user message joins."""
        turns = turns_of(
            HELLO,
            assistant(
                ToolCallPart("toolu_1", "weather", "{}"), ToolCallPart("toolu_2", "ping", "")
            ),
            Message("tool", (ToolResultPart("toolu_1", (TextPart("sunny"), ImagePart(PNG))),)),
            Message("tool", (ToolResultPart("toolu_2", (TextPart(""),), is_error=True),)),
            user(TextPart("thanks")),
        )
        assert [turn["role"] for turn in turns] == ["user", "assistant", "user"]
        image = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
        assert turns[2]["content"] == [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": [text("sunny"), {"type": "image", "source": image}],
            },
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True},
            text("thanks"),
        ]

    def test_tool_results_come_before_text_in_their_turn(self) -> None:
        """A user text before the tool message still follows the results (Anthropic's rule)."""
        turns = turns_of(
            HELLO,
            assistant(ToolCallPart("toolu_1", "ping", "")),
            user(TextPart("also")),
            Message("tool", (ToolResultPart("toolu_1", (TextPart("pong"),)),)),
        )
        assert [block["type"] for block in turns[2]["content"]] == ["tool_result", "text"]

    def test_signed_reasoning_goes_back_and_unsigned_reasoning_is_left_out(self) -> None:
        """thinking with its signature; redacted as redacted_thinking with its data."""
        (_, turn) = turns_of(
            HELLO,
            assistant(
                ReasoningPart("let me think", "sig-1"),
                ReasoningPart("", "opaque", redacted=True),
                ReasoningPart("another model's thoughts"),
                TextPart("42"),
            ),
        )
        assert turn["content"] == [
            {"type": "thinking", "thinking": "let me think", "signature": "sig-1"},
            {"type": "redacted_thinking", "data": "opaque"},
            text("42"),
        ]

    @pytest.mark.parametrize(
        "message",
        [
            Message("system", (ImagePart(PNG),)),
            assistant(ImagePart(PNG)),
            user(ToolCallPart("toolu_1", "ping", "")),
            user(ToolResultPart("toolu_1", ())),
            Message("tool", (TextPart("loose text"),)),
        ],
        ids=["system-image", "assistant-image", "user-tool-call", "user-result", "tool-text"],
    )
    def test_a_part_its_role_cannot_carry_is_refused_naming_the_message(
        self, message: Message
    ) -> None:
        """Never dropped: a 400 naming messages.[i].content."""
        assert refused_param(call_of(HELLO, message)) == "messages.[1].content"

    def test_a_conversation_of_system_messages_only_is_refused(self) -> None:
        """Anthropic needs a turn; the client learns which field."""
        system = Message("system", (TextPart("be brief"),))
        assert refused_param(call_of(system, user(TextPart("")))) == "messages"


class TestRequestFields:
    def test_the_cap_goes_up_as_max_tokens_under_the_upstream_model(self) -> None:
        """max_tokens is the cap given (Anthropic requires it), not the call's own."""
        request = request_of(call_of(), cap=5)
        assert (request["model"], request["max_tokens"]) == (UPSTREAM_MODEL, 5)

    def test_stop_sampling_and_stream_are_translated(self) -> None:
        """stop -> stop_sequences; temperature, top_p, top_k as given; stream when streaming."""
        sampling = Sampling(temperature=0.3, top_p=0.9, top_k=40, seed=7)
        request = request_of(call_of(stream=True, stop=("END",), sampling=sampling))
        assert request["stop_sequences"] == ["END"]
        assert (request["temperature"], request["top_p"], request["top_k"]) == (0.3, 0.9, 40)
        assert request["stream"] is True

    def test_hints_without_an_equivalent_stay_behind(self) -> None:
        """seed, store, service_tier, stream_options, prompt_cache_key and made-up fields are
        not sent (Anthropic answers 400 to fields it does not know)."""
        body = {
            "store": True,
            "service_tier": "auto",
            "stream_options": {"include_usage": True},
            "prompt_cache_key": "k",
            "metadata": {"a": "b"},
            "x": 1,
        }
        request = request_of(call_of(body=body, sampling=Sampling(seed=7)))
        assert set(request) == {"model", "max_tokens", "messages"}

    def test_the_end_user_id_goes_up_as_anthropic_metadata(self) -> None:
        """safety_identifier (or the older user) is metadata.user_id; an over-long one is not."""
        request = request_of(call_of(body={"user": "u-1", "safety_identifier": "s-1"}))
        assert request["metadata"] == {"user_id": "s-1"}
        assert request_of(call_of(body={"user": "u-1"}))["metadata"] == {"user_id": "u-1"}
        assert "metadata" not in request_of(call_of(body={"user": "u" * 257}))

    def test_the_prompt_is_counted_locally_from_the_call(self) -> None:
        """Per message 4 and 3 for the reply (as for OpenAI), texts, tool calls and the
        tools' names, descriptions and schemas; used only when no usage comes."""
        call = call_of(HELLO, assistant(ToolCallPart("t", "ping", "{}")), tools=(PING,))
        schema = count_text_tokens('ping  {"type":"object"}')
        assert prompt_tokens_estimate(call) == 3 + (4 + 2) + (4 + 1 + 2) + schema

    @pytest.mark.parametrize("temperature", [1.01, 2.0, -0.1])
    def test_a_temperature_outside_anthropics_range_is_refused(self, temperature: float) -> None:
        """Anthropic's temperature is 0..1: anything else names temperature."""
        call = call_of(sampling=Sampling(temperature=temperature))
        assert refused_param(call) == "temperature"
        assert request_of(call_of(sampling=Sampling(temperature=1.0)))["temperature"] == 1.0


class TestTools:
    def test_tools_go_up_with_their_schemas_and_auto_choice(self) -> None:
        """name, description (left out when empty), parameters as input_schema."""
        request = request_of(call_of(tools=(WEATHER, PING)))
        assert request["tools"] == [
            {
                "name": "weather",
                "input_schema": WEATHER.parameters,
                "description": WEATHER.description,
            },
            {"name": "ping", "input_schema": {"type": "object"}},
        ]
        assert request["tool_choice"] == {"type": "auto"}

    @pytest.mark.parametrize(
        ("choice", "field"),
        [
            (ToolChoice("none"), {"type": "none"}),
            (ToolChoice("required"), {"type": "any"}),
            (ToolChoice("tool", "ping"), {"type": "tool", "name": "ping"}),
            (ToolChoice(parallel=False), {"type": "auto", "disable_parallel_tool_use": True}),
            (
                ToolChoice("required", parallel=False),
                {"type": "any", "disable_parallel_tool_use": True},
            ),
            (ToolChoice("none", parallel=False), {"type": "none"}),
        ],
        ids=["none", "required", "tool", "auto-serial", "required-serial", "none-serial"],
    )
    def test_tool_choice_maps_to_anthropics(
        self, choice: ToolChoice, field: dict[str, Any]
    ) -> None:
        """auto/none/required/tool -> auto/none/any/tool; one call a turn when not parallel."""
        assert (
            request_of(call_of(tools=(WEATHER, PING), tool_choice=choice))["tool_choice"] == field
        )

    def test_no_tools_sends_no_tool_fields(self) -> None:
        """Without tools, neither tools nor tool_choice goes up (none asks for nothing)."""
        for choice in (ToolChoice(), ToolChoice("none")):
            request = request_of(call_of(tool_choice=choice))
            assert "tools" not in request
            assert "tool_choice" not in request

    @pytest.mark.parametrize(
        ("tools", "choice"),
        [
            ((), ToolChoice("required")),
            ((), ToolChoice("tool", "ping")),
            ((WEATHER,), ToolChoice("tool", "ping")),
        ],
        ids=["required-without-tools", "tool-without-tools", "unknown-tool"],
    )
    def test_a_choice_of_a_tool_it_was_not_given_is_refused(
        self, tools: tuple[Tool, ...], choice: ToolChoice
    ) -> None:
        """A forced call needs the tool: tool_choice is named."""
        assert refused_param(call_of(tools=tools, tool_choice=choice)) == "tool_choice"


class TestOutputFormat:
    def test_a_json_schema_is_a_forced_tool_of_that_schema(self) -> None:
        """The schema's name is the tool's, forced with tool_choice."""
        output = OutputFormat("json_schema", "point", ANSWER_SCHEMA, strict=True)
        request = request_of(call_of(output_format=output))
        (tool,) = request["tools"]
        assert (tool["name"], tool["input_schema"]) == ("point", ANSWER_SCHEMA)
        assert request["tool_choice"] == {"type": "tool", "name": "point"}
        assert json_tool_name(output) == "point"

    def test_a_json_object_is_a_forced_tool_of_any_object(self) -> None:
        """json_object: the tool json_answer, whose input is any object."""
        request = request_of(call_of(output_format=OutputFormat("json_object")))
        (tool,) = request["tools"]
        assert (tool["name"], tool["input_schema"]) == ("json_answer", {"type": "object"})
        assert request["tool_choice"] == {"type": "tool", "name": "json_answer"}
        assert json_tool_name(OutputFormat()) is None

    @pytest.mark.parametrize(
        "call",
        [
            call_of(output_format=OutputFormat("json_object"), tools=(WEATHER,)),
            call_of(output_format=OutputFormat("json_schema", "a", {"type": "array"})),
            call_of(output_format=OutputFormat("json_schema", "a", None)),
        ],
        ids=["with-tools", "array-schema", "no-schema"],
    )
    def test_a_json_format_it_cannot_force_is_refused(self, call: NeutralCall) -> None:
        """Beside client tools, or a schema of no object: response_format is named."""
        assert refused_param(call) == "response_format"


class TestThinking:
    @pytest.mark.parametrize(("effort", "budget"), sorted(THINKING_BUDGET_TOKENS_BY_EFFORT.items()))
    def test_an_effort_is_a_thinking_budget(self, effort: Any, budget: int) -> None:
        """minimal 1024, low 2048, medium 8192, high 16384, xhigh 32768 (under a large cap)."""
        request = request_of(call_of(reasoning=Reasoning(effort=effort)), cap=65536)
        assert request["thinking"] == {"type": "enabled", "budget_tokens": budget}

    @pytest.mark.parametrize(
        ("reasoning", "cap", "budget"),
        [
            (Reasoning(budget_tokens=3000), 32768, 3000),
            (Reasoning(budget_tokens=10), 32768, 1024),
            (Reasoning(effort="high"), 4000, 3999),
            (Reasoning(), 32768, 8192),
            (Reasoning(), 1025, 1024),
        ],
        ids=["budget", "raised-to-1024", "below-the-cap", "default-medium", "least-cap"],
    )
    def test_the_budget_is_clamped_to_anthropics_bounds(
        self, reasoning: Reasoning, cap: int, budget: int
    ) -> None:
        """At least 1024 and below max_tokens; the budget asked for wins over the effort."""
        request = request_of(call_of(reasoning=reasoning), cap=cap)
        assert request["thinking"]["budget_tokens"] == budget
        assert request["max_tokens"] == cap

    def test_a_cap_with_no_room_for_the_least_budget_is_refused(self) -> None:
        """max_tokens 1024 cannot hold a 1024-token budget and an answer: max_tokens named."""
        assert refused_param(call_of(reasoning=Reasoning(effort="low")), cap=1024) == "max_tokens"

    @pytest.mark.parametrize(
        ("fields", "param"),
        [
            ({"output_format": OutputFormat("json_object")}, "response_format"),
            ({"tools": (PING,), "tool_choice": ToolChoice("required")}, "tool_choice"),
            ({"sampling": Sampling(temperature=0.5)}, "temperature"),
            ({"sampling": Sampling(top_p=0.5)}, "top_p"),
            ({"sampling": Sampling(top_k=5)}, "top_k"),
        ],
        ids=["json", "forced-tool", "temperature", "top_p", "top_k"],
    )
    def test_what_anthropic_refuses_beside_thinking_is_refused_by_name(
        self, fields: dict[str, Any], param: str
    ) -> None:
        """A forced tool, temperature other than 1, top_p below 0.95, top_k."""
        call = call_of(reasoning=Reasoning(effort="low"), **fields)
        assert refused_param(call, cap=4096) == param

    def test_what_thinking_allows_goes_up_beside_it(self) -> None:
        """temperature 1, top_p 0.95 and auto tools are fine with thinking."""
        sampling = Sampling(temperature=1.0, top_p=0.95)
        call = call_of(reasoning=Reasoning(effort="low"), sampling=sampling, tools=(PING,))
        assert request_of(call, cap=4096)["tool_choice"] == {"type": "auto"}


REFUSED = [
    ("n", 2),
    ("logit_bias", {"50256": -100}),
    ("presence_penalty", 0.5),
    ("frequency_penalty", -0.2),
    ("modalities", ["text", "audio"]),
    ("audio", {"voice": "alloy"}),
    ("prediction", {"type": "content", "content": "x"}),
    ("web_search_options", {}),
    ("verbosity", "high"),
]
HARMLESS = [
    ("n", 1),
    ("logit_bias", {}),
    ("presence_penalty", 0),
    ("frequency_penalty", 0.0),
    ("modalities", ["text"]),
    ("verbosity", "medium"),
]


class TestRefusals:
    @pytest.mark.parametrize(("name", "value"), REFUSED, ids=[name for name, _ in REFUSED])
    def test_a_field_anthropic_cannot_honour_is_refused_with_its_param(
        self, name: str, value: Any
    ) -> None:
        """InvalidRequest naming the field and the engine, rather than a different answer."""
        with pytest.raises(InvalidRequest) as caught:
            request_of(call_of(body={name: value}))
        assert caught.value.param == name
        assert ENGINE in caught.value.message

    @pytest.mark.parametrize(("name", "value"), HARMLESS, ids=[name for name, _ in HARMLESS])
    def test_the_value_that_asks_for_nothing_is_accepted(self, name: str, value: Any) -> None:
        """What an SDK sends by default (n=1, logit_bias={}, ...) is no reason to refuse."""
        assert request_of(call_of(body={name: value}))["messages"]

    @pytest.mark.parametrize(
        ("fields", "param"),
        [({"logprobs": True}, "logprobs"), ({"top_logprobs": 3}, "top_logprobs")],
    )
    def test_logprobs_are_refused(self, fields: dict[str, Any], param: str) -> None:
        """Anthropic gives no logprobs."""
        assert refused_param(call_of(**fields)) == param

    @pytest.mark.parametrize("surface", ["completions", "embeddings"])
    def test_other_surfaces_than_chat_are_refused_naming_the_engine(self, surface: Surface) -> None:
        """Legacy completions and embeddings: a 400 that says which engine and why."""
        with pytest.raises(InvalidRequest) as caught:
            messages_request(call_of(surface=surface), None, UPSTREAM_MODEL, ENGINE)
        assert caught.value.param == "model"
        assert ENGINE in caught.value.message
        assert surface in caught.value.message


def config_with_prices() -> dict[str, Any]:
    """An anthropic engine priced for one of its two models, beside an own openai engine."""
    return {
        "engines": {
            "claude": {
                "kind": "anthropic",
                "api_key_env": "ANTHROPIC_KEY",
                "prices": {UPSTREAM_MODEL: {"input": "3", "output": "15"}},
            },
            "local": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
        },
        "deployments": {
            "ant-sonnet": {"engine": "claude", "model": UPSTREAM_MODEL},
            "ant-haiku": {"engine": "claude", "model": "claude-haiku"},
            "own-llama": {"engine": "local", "model": "llama"},
        },
        "models": {
            "sonnet": {"deployments": ["own-llama", "ant-sonnet", "ant-haiku"]},
            "resold": {"deployments": ["ant-sonnet"], "markup": {"factor": "1.5"}},
        },
    }


class TestConfig:
    def test_an_anthropic_engine_has_anthropic_defaults(self) -> None:
        """base_url and anthropic-version default to Anthropic's own."""
        engine = parse_config(config_with_prices()).engines["claude"]
        assert isinstance(engine, AnthropicEngineConfig)
        assert engine.base_url == "https://api.anthropic.com"
        assert engine.anthropic_version == "2023-06-01"

    def test_a_bad_field_is_named_without_the_kind_tag(self) -> None:
        """engines.claude.base_url, not engines.claude.anthropic.base_url."""
        config = config_with_prices()
        config["engines"]["claude"]["base_url"] = "ftp://nope"
        with pytest.raises(ConfigurationError) as caught:
            parse_config(config)
        assert caught.value.param == "engines.claude.base_url"

    def test_a_markup_resells_at_the_anthropic_price(self) -> None:
        """The vendor price list of an anthropic engine is the upstream cost."""
        config = parse_config(config_with_prices())
        cost = upstream_cost(config, config.models["resold"])
        assert cost is not None
        assert (cost.input, cost.output) == (3_000_000_000, 15_000_000_000)

    def test_a_priced_anthropic_deployment_is_a_vendor_to_routing(self) -> None:
        """With a price it is a vendor at input + output; without one it counts as own."""
        config = parse_config(config_with_prices())
        candidates = fleet_candidates(config, serving_costs(config))["sonnet"]
        assert candidates == [
            Candidate("own-llama", own=True),
            Candidate("ant-sonnet", own=False, price_nano_per_mtok=18_000_000_000),
            Candidate("ant-haiku", own=True),
        ]

    def test_each_anthropic_deployment_gets_an_anthropic_backend_on_one_session(self) -> None:
        """Each anthropic deployment gets an anthropic backend on its engine's one session."""
        backends, sessions = build_backends(
            parse_config(config_with_prices()), {"ANTHROPIC_KEY": "sk-ant-x"}
        )
        for name in ("ant-sonnet", "ant-haiku"):
            backend = backends[name]
            assert isinstance(backend, AnthropicBackend)
            assert (backend.kind, backend.engine, backend.simulated) == (
                "anthropic",
                "claude",
                False,
            )
        assert isinstance(sessions["claude"], AnthropicSession)
        assert sessions["claude"].base_url == "https://api.anthropic.com"

    def test_a_missing_environment_variable_is_a_configuration_error(self) -> None:
        """The gateway refuses to start without the key, naming the field."""
        with pytest.raises(ConfigurationError) as caught:
            build_backends(parse_config(config_with_prices()), {})
        assert caught.value.param == "engines.claude.api_key_env"
        assert "ANTHROPIC_KEY" in caught.value.message
