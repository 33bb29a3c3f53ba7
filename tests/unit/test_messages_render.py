"""The Anthropic Messages surface, its answers: neutral answers rendered as Anthropic
bodies and event streams, errors in Anthropic's shape and status (pure, no I/O; the
official SDK reads the rendered bytes through an in-memory transport)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.unit.messages_fixtures import HELLO, parse
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
    Answer,
    Finish,
    ReasoningDelta,
    ReasoningPart,
    StreamPart,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    UsageReport,
    WirePart,
)
from tokenmill.surfaces.messages_render import (
    ANTHROPIC_WIRE,
    MessagesRenderer,
    anthropic_error_body,
    anthropic_status,
)
from tokenmill.usage import TokenCounts

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
