"""The ``anthropic`` engine's translations, pure: OpenAI chat request -> Messages request,
Messages answer and event stream -> OpenAI answer and chunks, usage with cache tokens, and
the requests it refuses; its configuration and how routing sees it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tokenmill.api.fleet_costs import serving_costs
from tokenmill.api.fleet_router import fleet_candidates
from tokenmill.api.gateway import build_backends
from tokenmill.config import AnthropicEngineConfig, parse_config, upstream_cost
from tokenmill.engines.anthropic import (
    AnthropicBackend,
    AnthropicSession,
    ChunkTranslator,
    EventReader,
    chat_completion,
    chunks_of_read,
    finish_reason,
    messages_request,
    usage_counts,
)
from tokenmill.engines.base import Endpoint, EngineCall, StreamPart
from tokenmill.errors import ConfigurationError, InvalidRequest, UpstreamError
from tokenmill.fleet.routing import Candidate
from tokenmill.usage import TokenCounts

ENGINE = "claude-vendor"
UPSTREAM_MODEL = "claude-sonnet-4-5"
HELLO = [{"role": "user", "content": "hello there"}]


def call_of(
    *,
    endpoint: Endpoint = "chat",
    stream: bool = False,
    cap: int | None = 64,
    stop: tuple[str, ...] = (),
    **fields: Any,
) -> EngineCall:
    body = {"model": "sonnet", "messages": HELLO, **fields}
    return EngineCall("req_1", endpoint, "sonnet", body, stream, cap, stop, 1700000000)


def request_of(call: EngineCall) -> dict[str, Any]:
    return messages_request(call, UPSTREAM_MODEL, ENGINE)


def sse(kind: str, **data: Any) -> bytes:
    return f"event: {kind}\ndata: ".encode() + orjson.dumps({"type": kind, **data}) + b"\n\n"


def message_start(input_tokens: int = 9, written: int | None = 0, read: int | None = 0) -> bytes:
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": 1,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }
    message = {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "usage": usage}
    return sse("message_start", message=message)


def text_delta(text: str) -> bytes:
    return sse("content_block_delta", index=0, delta={"type": "text_delta", "text": text})


def message_delta(stop_reason: str, output_tokens: int) -> bytes:
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    return sse("message_delta", delta=delta, usage={"output_tokens": output_tokens})


def whole_stream(*words: str, written: int = 0, read: int = 0) -> bytes:
    return b"".join(
        [
            message_start(9, written, read),
            sse("content_block_start", index=0, content_block={"type": "text", "text": ""}),
            sse("ping"),
            *(text_delta(word) for word in words),
            sse("content_block_stop", index=0),
            message_delta("end_turn", len(words)),
            sse("message_stop"),
        ]
    )


def translate(call: EngineCall, *pieces: bytes) -> tuple[list[StreamPart], ChunkTranslator]:
    """Feed ``pieces`` (one read each) through a reader and a translator."""
    reader = EventReader(ENGINE)
    chunks = ChunkTranslator(call, ENGINE)
    parts = [part for piece in pieces for e in reader.feed(piece) for part in chunks.parts(e)]
    return parts, chunks


def decoded(parts: list[StreamPart]) -> list[dict[str, Any]]:
    return [orjson.loads(part.payload) for part in parts]


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


class TestRequestMapping:
    def test_system_and_developer_messages_are_joined_into_system(self) -> None:
        """Every system and developer text, in order, becomes the one system prompt."""
        messages = [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": [{"type": "text", "text": "use French"}]},
        ]
        request = request_of(call_of(messages=messages))
        assert request["system"] == "be brief\n\nuse French"
        assert request["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]}
        ]

    def test_consecutive_messages_of_one_role_are_merged(self) -> None:
        """Two user messages in a row become one turn with both texts; roles alternate."""
        messages = [
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {"role": "assistant", "content": "three"},
            {"role": "user", "content": "four"},
        ]
        request = request_of(call_of(messages=messages))
        assert [turn["role"] for turn in request["messages"]] == ["user", "assistant", "user"]
        assert request["messages"][0]["content"] == [
            {"type": "text", "text": "one"},
            {"type": "text", "text": "two"},
        ]

    def test_empty_texts_are_left_out(self) -> None:
        """An empty message or part is dropped (Anthropic refuses empty text blocks)."""
        messages = [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": ""},
            {
                "role": "user",
                "content": [{"type": "text", "text": ""}, {"type": "text", "text": "b"}],
            },
        ]
        request = request_of(call_of(messages=messages))
        assert request["messages"] == [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ]
        assert "system" not in request

    def test_the_output_cap_goes_up_as_max_tokens_whatever_the_client_sent(self) -> None:
        """max_tokens is the gateway's cap (required by Anthropic); the client's fields are not
        sent under their OpenAI names."""
        request = request_of(call_of(cap=5, max_tokens=50, max_completion_tokens=40))
        assert request["max_tokens"] == 5
        assert "max_completion_tokens" not in request
        assert request["model"] == UPSTREAM_MODEL

    def test_stop_temperature_top_p_and_stream_are_translated(self) -> None:
        """stop -> stop_sequences; temperature and top_p as given; stream only when streaming."""
        request = request_of(call_of(stream=True, stop=("END",), temperature=0.3, top_p=0.9))
        assert request["stop_sequences"] == ["END"]
        assert (request["temperature"], request["top_p"]) == (0.3, 0.9)
        assert request["stream"] is True
        assert "stream" not in request_of(call_of())
        assert "stop_sequences" not in request_of(call_of())

    def test_fields_anthropic_would_refuse_are_not_sent(self) -> None:
        """seed, user, stream_options and made-up fields stay behind (Anthropic answers 400
        to fields it does not know)."""
        request = request_of(
            call_of(stream=True, seed=7, user="u-1", stream_options={"include_usage": True}, x=1)
        )
        assert set(request) == {"model", "max_tokens", "messages", "stream"}


REFUSED = [
    ("n", 2),
    ("logprobs", True),
    ("top_logprobs", 3),
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    ("tool_choice", "auto"),
    ("functions", [{"name": "f"}]),
    ("function_call", "auto"),
    ("response_format", {"type": "json_object"}),
    ("logit_bias", {"50256": -100}),
    ("presence_penalty", 0.5),
    ("frequency_penalty", -0.2),
    ("modalities", ["text", "audio"]),
    ("audio", {"voice": "alloy"}),
    ("prediction", {"type": "content", "content": "x"}),
    ("temperature", 1.5),
]
HARMLESS = [
    ("n", 1),
    ("logprobs", False),
    ("top_logprobs", 0),
    ("tools", []),
    ("tool_choice", "none"),
    ("response_format", {"type": "text"}),
    ("logit_bias", {}),
    ("presence_penalty", 0),
    ("frequency_penalty", 0.0),
    ("modalities", ["text"]),
    ("temperature", 1),
]


class TestRefusals:
    @pytest.mark.parametrize(("name", "value"), REFUSED, ids=[name for name, _ in REFUSED])
    def test_a_field_anthropic_cannot_honour_is_refused_with_its_param(
        self, name: str, value: Any
    ) -> None:
        """InvalidRequest naming the field and the engine, rather than a different answer."""
        with pytest.raises(InvalidRequest) as caught:
            request_of(call_of(**{name: value}))
        assert caught.value.param == name
        assert ENGINE in caught.value.message

    @pytest.mark.parametrize(("name", "value"), HARMLESS, ids=[name for name, _ in HARMLESS])
    def test_the_value_that_asks_for_nothing_is_accepted(self, name: str, value: Any) -> None:
        """What an SDK sends by default (n=1, tools=[], ...) is no reason to refuse."""
        assert request_of(call_of(**{name: value}))["messages"]

    @pytest.mark.parametrize(
        ("message", "param"),
        [
            ({"role": "tool", "tool_call_id": "c1", "content": "42"}, "messages.[1].role"),
            ({"role": "function", "name": "f", "content": "42"}, "messages.[1].role"),
            (
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
                "messages.[1].tool_calls",
            ),
            (
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                "messages.[1].content",
            ),
        ],
        ids=["tool-result", "function-result", "tool-calls", "image"],
    )
    def test_messages_it_cannot_translate_are_refused_with_their_param(
        self, message: dict[str, Any], param: str
    ) -> None:
        """Tool results, tool calls and non-text parts are refused, naming the message."""
        with pytest.raises(InvalidRequest) as caught:
            request_of(call_of(messages=[*HELLO, message]))
        assert caught.value.param == param

    def test_a_conversation_of_system_messages_only_is_refused(self) -> None:
        """Anthropic needs a user or assistant turn; the client learns which field."""
        with pytest.raises(InvalidRequest) as caught:
            request_of(call_of(messages=[{"role": "system", "content": "be brief"}]))
        assert caught.value.param == "messages"

    @pytest.mark.parametrize("endpoint", ["completions", "embeddings"])
    def test_other_endpoints_than_chat_are_refused_naming_the_engine(
        self, endpoint: Endpoint
    ) -> None:
        """Legacy completions and embeddings: a 400 that says which engine and why."""
        with pytest.raises(InvalidRequest) as caught:
            request_of(call_of(endpoint=endpoint, cap=None))
        assert caught.value.param == "model"
        assert ENGINE in caught.value.message
        assert endpoint in caught.value.message


def answer_of(stop_reason: Any = "end_turn", usage: Any = None, **fields: Any) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": UPSTREAM_MODEL,
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Hello "},
            {"type": "text", "text": "world"},
        ],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 5, "output_tokens": 2},
        **fields,
    }


class TestResponseMapping:
    def test_an_answer_becomes_a_chat_completion_under_the_public_model(self) -> None:
        """OpenAI's shape: our id and created, the public model, the text blocks joined."""
        chat, counts = chat_completion(call_of(), answer_of(), ENGINE)
        assert chat["id"] == "chatcmpl-req_1"
        assert chat["object"] == "chat.completion"
        assert chat["created"] == 1700000000
        assert chat["model"] == "sonnet"
        (choice,) = chat["choices"]
        assert choice["message"] == {"role": "assistant", "content": "Hello world"}
        assert choice["finish_reason"] == "stop"
        assert counts == TokenCounts(5, 2, 0)

    @pytest.mark.parametrize(
        ("stop_reason", "finish"),
        [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("a_reason_added_later", "stop"),
            (None, "stop"),
        ],
    )
    def test_stop_reasons_map_to_finish_reasons(self, stop_reason: Any, finish: str) -> None:
        """Each stop_reason has its finish_reason; an unknown one reads as stop."""
        assert finish_reason(stop_reason) == finish
        chat, _ = chat_completion(call_of(), answer_of(stop_reason), ENGINE)
        assert chat["choices"][0]["finish_reason"] == finish

    @pytest.mark.parametrize(
        "answer",
        [
            {"type": "error", "error": {"type": "api_error", "message": "x"}},
            {"type": "message", "content": "not a list"},
            {"content": []},
        ],
    )
    def test_an_answer_that_is_not_a_message_is_an_upstream_error(
        self, answer: dict[str, Any]
    ) -> None:
        """A 200 whose body is no message is the upstream's fault: 502, not a 500."""
        with pytest.raises(UpstreamError):
            chat_completion(call_of(), answer, ENGINE)


class TestUsage:
    def test_cache_writes_and_reads_count_as_prompt_and_reads_as_cached(self) -> None:
        """prompt = input + cache writes + cache reads; cached = reads; output as is."""
        usage = {
            "input_tokens": 10,
            "output_tokens": 4,
            "cache_creation_input_tokens": 7,
            "cache_read_input_tokens": 11,
        }
        assert usage_counts(usage) == TokenCounts(28, 4, 11)
        chat, _ = chat_completion(call_of(), answer_of(usage=usage), ENGINE)
        assert chat["usage"] == {
            "prompt_tokens": 28,
            "completion_tokens": 4,
            "total_tokens": 32,
            "prompt_tokens_details": {"cached_tokens": 11},
        }

    def test_null_cache_fields_count_as_zero(self) -> None:
        """Anthropic sends null cache fields when caching is unused."""
        usage = {
            "input_tokens": 3,
            "output_tokens": 1,
            "cache_creation_input_tokens": None,
            "cache_read_input_tokens": None,
        }
        assert usage_counts(usage) == TokenCounts(3, 1, 0)

    @pytest.mark.parametrize(
        "usage",
        [
            None,
            [],
            {"output_tokens": 1},
            {"input_tokens": 3},
            {"input_tokens": -1, "output_tokens": 1},
            {"input_tokens": True, "output_tokens": 1},
            {"input_tokens": 3, "output_tokens": "1"},
            {"input_tokens": 3, "output_tokens": 1, "cache_read_input_tokens": 2.5},
        ],
    )
    def test_malformed_usage_is_no_usage(self, usage: Any) -> None:
        """Anything but non-negative integer counts is ignored; the answer has no usage."""
        assert usage_counts(usage) is None
        chat, counts = chat_completion(call_of(), {**answer_of(), "usage": usage}, ENGINE)
        assert counts is None
        assert "usage" not in chat


class TestStreamTranslation:
    def test_a_whole_stream_becomes_role_text_finish_and_usage_chunks(self) -> None:
        """Role first, text deltas as content, the finish, then a usage-only chunk; pings and
        block starts and stops give nothing."""
        call = call_of(stream=True)
        parts, chunks = translate(call, whole_stream("Hel", "lo", " world"))
        payloads = decoded(parts)
        assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert [p["choices"][0]["delta"].get("content") for p in payloads[1:4]] == [
            "Hel",
            "lo",
            " world",
        ]
        assert payloads[4]["choices"][0] == {
            "index": 0,
            "delta": {},
            "logprobs": None,
            "finish_reason": "stop",
        }
        assert payloads[5]["choices"] == []
        assert payloads[5]["usage"]["completion_tokens"] == 3
        assert [part.usage_only for part in parts] == [False] * 5 + [True]
        assert all(p["object"] == "chat.completion.chunk" for p in payloads)
        assert all(p["model"] == "sonnet" and p["id"] == "chatcmpl-req_1" for p in payloads)
        assert chunks.finished
        assert call.meter.counts() == (TokenCounts(9, 3, 0), False)
        assert call.meter.first_token_at_ns is not None

    def test_cache_tokens_reach_the_meter_and_the_usage_chunk(self) -> None:
        """message_start's cache writes and reads are in the reported prompt."""
        call = call_of(stream=True)
        parts, _ = translate(call, whole_stream("a", written=7, read=11))
        assert call.meter.reported == TokenCounts(27, 1, 11)
        usage = decoded(parts)[-1]["usage"]
        assert usage["prompt_tokens_details"] == {"cached_tokens": 11}
        assert usage["total_tokens"] == 28

    def test_a_stream_read_a_byte_at_a_time_gives_the_same_chunks(self) -> None:
        """Events split anywhere across reads come out whole and the same."""
        stream = whole_stream("one", " two")
        whole, _ = translate(call_of(stream=True), stream)
        split, _ = translate(call_of(stream=True), *(stream[i : i + 1] for i in range(len(stream))))
        assert [p.payload for p in split] == [p.payload for p in whole]

    def test_crlf_line_endings_are_read_like_lf(self) -> None:
        """SSE allows CRLF; the events are the same."""
        stream = whole_stream("x")
        crlf, _ = translate(call_of(stream=True), stream.replace(b"\n", b"\r\n"))
        lf, _ = translate(call_of(stream=True), stream)
        assert [p.payload for p in crlf] == [p.payload for p in lf]

    def test_message_delta_usage_is_a_total_the_last_one_wins(self) -> None:
        """Cumulative output counts in two message_deltas are not added up."""
        call = call_of(stream=True)
        translate(
            call,
            message_start(),
            text_delta("a b c"),
            message_delta("end_turn", 2),
            message_delta("end_turn", 3),
            sse("message_stop"),
        )
        assert call.meter.counts() == (TokenCounts(9, 3, 0), False)

    def test_the_role_chunk_waits_for_the_first_text(self) -> None:
        """message_start alone relays nothing, so an error right after it can still fail
        over before the first byte."""
        parts, _ = translate(call_of(stream=True), message_start(), sse("ping"))
        assert parts == []

    def test_a_cut_stream_is_metered_from_the_text_relayed_with_the_exact_prompt(self) -> None:
        """No message_delta: no reported usage; the words relayed are the estimate and the
        prompt is message_start's (cache included)."""
        call = call_of(stream=True)
        parts, chunks = translate(
            call, message_start(9, 2, 3), text_delta("alpha bravo"), text_delta(" charlie")
        )
        assert text_of(decoded(parts)) == "alpha bravo charlie"
        assert not chunks.finished
        assert call.meter.counts() == (TokenCounts(14, 3, 0), True)

    def test_an_error_event_is_an_upstream_error_with_its_message(self) -> None:
        """event: error mid-stream raises UpstreamError carrying Anthropic's message."""
        error = {"type": "overloaded_error", "message": "Overloaded"}
        with pytest.raises(UpstreamError, match="Overloaded"):
            translate(
                call_of(stream=True), message_start(), text_delta("a"), sse("error", error=error)
            )

    @pytest.mark.parametrize(
        "piece",
        [
            b"<html>502 Bad Gateway</html>\n\n",
            b"data: {not json\n\n",
            b"data: [1, 2]\n\n",
            sse("content_block_delta", index=0),
            sse("message_start"),
            b"data: " + b"x" * (4 * 1024 * 1024 + 1),
        ],
        ids=["not-sse", "bad-json", "not-an-object", "no-delta", "no-message", "over-long"],
    )
    def test_a_malformed_event_stream_is_an_upstream_error(self, piece: bytes) -> None:
        """Garbage in the stream is the upstream's fault: UpstreamError, never a crash."""
        with pytest.raises(UpstreamError):
            translate(call_of(stream=True), message_start(), piece)

    def test_what_came_before_a_bad_event_in_one_read_is_still_relayed(self) -> None:
        """Text and a bad event arrive together: the text goes on (it was metered as
        relayed), then the failure."""
        call = call_of(stream=True)
        read = message_start() + text_delta("alpha") + text_delta(" bravo") + b"data: {bad\n\n"
        parts, failure = chunks_of_read(EventReader(ENGINE), ChunkTranslator(call, ENGINE), read)
        assert isinstance(failure, UpstreamError)
        assert text_of(decoded(parts)) == "alpha bravo"
        assert call.meter.completion_tokens_estimate == 2

    def test_events_after_message_stop_are_ignored(self) -> None:
        """Nothing after message_stop reaches the client or the meter."""
        call = call_of(stream=True)
        parts, _ = translate(call, whole_stream("a"), text_delta("late"))
        assert "late" not in text_of(decoded(parts))
        assert call.meter.reported == TokenCounts(9, 1, 0)

    def test_thinking_and_tool_input_deltas_are_not_relayed_as_text(self) -> None:
        """Only text_delta is content; other delta types are skipped, not counted."""
        call = call_of(stream=True)
        thinking = sse("content_block_delta", index=0, delta={"type": "thinking_delta"})
        tool = sse("content_block_delta", index=1, delta={"type": "input_json_delta"})
        parts, _ = translate(call, message_start(), thinking, tool, text_delta("hi"))
        assert text_of(decoded(parts)) == "hi"
        assert call.meter.completion_tokens_estimate == 1


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
        assert str(sessions["claude"].url) == "https://api.anthropic.com/v1/messages"

    def test_a_missing_environment_variable_is_a_configuration_error(self) -> None:
        """The gateway refuses to start without the key, naming the field."""
        with pytest.raises(ConfigurationError) as caught:
            build_backends(parse_config(config_with_prices()), {})
        assert caught.value.param == "engines.claude.api_key_env"
        assert "ANTHROPIC_KEY" in caught.value.message
