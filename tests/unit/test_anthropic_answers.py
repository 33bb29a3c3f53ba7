"""The ``anthropic`` engine's way back, pure: a Messages answer -> neutral parts and finish,
Anthropic usage -> token counts (cache reads and writes, estimated reasoning), and the event
stream -> neutral deltas (text, tool calls numbered among tool uses, thinking, the forced JSON
tool as text) with the meter filled as it goes, including when the stream is cut or bad."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tokenmill.engines.anthropic_answers import (
    answer_parts,
    finish_reason,
    usage_counts,
)
from tokenmill.engines.anthropic_stream import EventReader, StreamTranslator, deltas_of_read
from tokenmill.errors import UpstreamError
from tokenmill.neutral import (
    Delta,
    Finish,
    ReasoningDelta,
    ReasoningPart,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    UsageReport,
    completion_tokens_estimate,
)
from tokenmill.usage import Meter, TokenCounts, count_text_tokens

ENGINE = "claude-vendor"
UPSTREAM_MODEL = "claude-sonnet-4-5"
CLOCK_NS = 123_456_789


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def message_of(
    *content: dict[str, Any], stop_reason: Any = "end_turn", **fields: Any
) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": UPSTREAM_MODEL,
        "content": list(content),
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 2},
        **fields,
    }


TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}


class TestAnswers:
    def test_each_content_block_becomes_its_part(self) -> None:
        """text, tool_use (input as JSON text), thinking and redacted thinking, in order;
        unknown blocks are skipped."""
        parts, finish = answer_parts(
            message_of(
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
                text("Hello "),
                text("world"),
                {"type": "server_tool_use", "id": "srvtoolu_1"},
                TOOL_USE,
                stop_reason="tool_use",
            ),
            ENGINE,
        )
        assert parts == (
            ReasoningPart("hmm", "sig"),
            ReasoningPart("", "opaque", redacted=True),
            TextPart("Hello "),
            TextPart("world"),
            ToolCallPart("toolu_1", "weather", '{"city":"Paris"}'),
        )
        assert finish == "tool_calls"

    @pytest.mark.parametrize(
        ("stop_reason", "finish"),
        [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("a_reason_added_later", "stop"),
            (None, "stop"),
        ],
    )
    def test_stop_reasons_map_to_finish_reasons(self, stop_reason: Any, finish: str) -> None:
        """Each stop_reason has its finish; an unknown one reads as stop."""
        assert finish_reason(stop_reason) == finish
        assert answer_parts(message_of(text("a"), stop_reason=stop_reason), ENGINE)[1] == finish

    def test_the_forced_json_tool_is_the_answers_text(self) -> None:
        """Its input is the text, the finish stop (length when cut); text from an upstream
        that ignored the forced tool is still shown, never dropped."""
        forced = {"type": "tool_use", "id": "toolu_1", "name": "point", "input": {"x": 1}}
        message = message_of(forced, stop_reason="tool_use")
        assert answer_parts(message, ENGINE, "point") == ((TextPart('{"x":1}'),), "stop")
        assert answer_parts(message_of(text("{}")), ENGINE, "point") == ((TextPart("{}"),), "stop")
        assert (
            answer_parts({**message, "stop_reason": "max_tokens"}, ENGINE, "point")[1] == "length"
        )

    @pytest.mark.parametrize(
        "message",
        [
            {"type": "error", "error": {"type": "api_error", "message": "x"}},
            {"type": "message", "content": "not a list"},
            {"content": []},
            message_of("not a block"),  # type: ignore[arg-type]
            message_of({"type": "text"}),
            message_of({"type": "tool_use", "id": "toolu_1", "input": {}}),
        ],
        ids=["error", "content-not-a-list", "no-type", "block-not-an-object", "no-text", "no-name"],
    )
    def test_an_answer_that_is_not_a_message_is_an_upstream_error(
        self, message: dict[str, Any]
    ) -> None:
        """A 200 whose body is no message is the upstream's fault: 502, not a 500."""
        with pytest.raises(UpstreamError):
            answer_parts(message, ENGINE)

    def test_an_answer_without_usage_is_estimated_from_its_parts(self) -> None:
        """Text, tool names and arguments and reasoning count: ``one two`` 2, ``ping`` 1,
        ``{}`` 2, ``hmm`` 1."""
        parts = (TextPart("one two"), ToolCallPart("t", "ping", "{}"), ReasoningPart("hmm"))
        assert completion_tokens_estimate(parts) == 6


class TestUsage:
    def test_cache_reads_and_writes_are_parts_of_the_prompt(self) -> None:
        """prompt = input + writes + reads; cached = reads; cache_write = writes."""
        usage = {
            "input_tokens": 10,
            "output_tokens": 4,
            "cache_creation_input_tokens": 7,
            "cache_read_input_tokens": 11,
        }
        assert usage_counts(usage) == TokenCounts(28, 4, 11, 7, 0)

    def test_null_cache_fields_count_as_zero(self) -> None:
        """Anthropic sends null cache fields when caching is unused."""
        usage = {"input_tokens": 3, "output_tokens": 1, "cache_creation_input_tokens": None}
        assert usage_counts({**usage, "cache_read_input_tokens": None}) == TokenCounts(3, 1)

    def test_reasoning_is_the_estimate_given_at_most_the_output(self) -> None:
        """Anthropic reports no thinking tokens apart: the local count, capped."""
        usage = {"input_tokens": 3, "output_tokens": 5}
        assert usage_counts(usage, 2).reasoning_tokens == 2  # type: ignore[union-attr]
        assert usage_counts(usage, 9).reasoning_tokens == 5  # type: ignore[union-attr]

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
        """Anything but non-negative integer counts is ignored."""
        assert usage_counts(usage) is None


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


def block_start(index: int, block: dict[str, Any]) -> bytes:
    return sse("content_block_start", index=index, content_block=block)


def block_delta(index: int, **delta: Any) -> bytes:
    return sse("content_block_delta", index=index, delta=delta)


def text_delta(value: str, index: int = 0) -> bytes:
    return block_delta(index, type="text_delta", text=value)


def json_delta(index: int, partial_json: str) -> bytes:
    return block_delta(index, type="input_json_delta", partial_json=partial_json)


def message_delta(stop_reason: str, output_tokens: int) -> bytes:
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    return sse("message_delta", delta=delta, usage={"output_tokens": output_tokens})


def whole_stream(*words: str, written: int = 0, read: int = 0) -> bytes:
    return b"".join(
        [
            message_start(9, written, read),
            block_start(0, {"type": "text", "text": ""}),
            sse("ping"),
            *(text_delta(word) for word in words),
            sse("content_block_stop", index=0),
            message_delta("end_turn", len(words)),
            sse("message_stop"),
        ]
    )


def translate(
    *pieces: bytes, meter: Meter | None = None, json_tool: str | None = None
) -> tuple[list[Delta], StreamTranslator]:
    """Feed ``pieces`` (one read each) through a reader and a translator."""
    reader = EventReader(ENGINE)
    translator = StreamTranslator(meter or Meter(), ENGINE, lambda: CLOCK_NS, json_tool)
    deltas = [d for piece in pieces for e in reader.feed(piece) for d in translator.deltas(e)]
    return deltas, translator


def text_of(deltas: list[Delta]) -> str:
    return "".join(delta.text for delta in deltas if isinstance(delta, TextDelta))


class TestStreamTranslation:
    def test_a_whole_stream_is_text_deltas_then_the_finish_and_the_usage(self) -> None:
        """Pings, block starts and stops give nothing; message_delta gives the Finish and
        message_stop the usage."""
        meter = Meter()
        deltas, translator = translate(whole_stream("Hel", "lo", " world"), meter=meter)
        counts = TokenCounts(9, 3)
        assert deltas == [
            TextDelta("Hel"),
            TextDelta("lo"),
            TextDelta(" world"),
            Finish("stop"),
            UsageReport(counts),
        ]
        assert translator.finished
        assert meter.counts() == (counts, False)
        assert meter.first_token_at_ns == CLOCK_NS

    def test_cache_reads_and_writes_reach_the_meter(self) -> None:
        """message_start's cache writes and reads are in the reported prompt."""
        deltas, _ = translate(whole_stream("a", written=7, read=11))
        assert deltas[-1] == UsageReport(TokenCounts(27, 1, 11, 7))

    def test_tool_calls_are_numbered_among_tool_uses_with_their_arguments_in_pieces(self) -> None:
        """Block 1 and 2 are the calls 0 and 1: id and name first, then the JSON pieces."""
        meter = Meter()
        deltas, _ = translate(
            message_start(),
            block_start(0, {"type": "text", "text": ""}),
            text_delta("Let me look."),
            block_start(1, {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}),
            json_delta(1, ""),
            json_delta(1, '{"city": '),
            json_delta(1, '"Paris"}'),
            block_start(2, {"type": "tool_use", "id": "toolu_2", "name": "ping", "input": {}}),
            json_delta(2, "{}"),
            message_delta("tool_use", 20),
            meter=meter,
        )
        assert deltas == [
            TextDelta("Let me look."),
            ToolCallDelta(0, "toolu_1", "weather"),
            ToolCallDelta(0, arguments='{"city": '),
            ToolCallDelta(0, arguments='"Paris"}'),
            ToolCallDelta(1, "toolu_2", "ping"),
            ToolCallDelta(1, arguments="{}"),
            Finish("tool_calls"),
        ]
        produced = ("Let me look.", "weather", '{"city": ', '"Paris"}', "ping", "{}")
        assert meter.completion_tokens_estimate == sum(map(count_text_tokens, produced))

    def test_thinking_streams_as_reasoning_with_its_signature_and_estimated_tokens(self) -> None:
        """thinking_delta and signature_delta are reasoning deltas; the usage's reasoning
        tokens are the thinking's words."""
        meter = Meter()
        deltas, _ = translate(
            message_start(),
            block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
            block_delta(0, type="thinking_delta", thinking="one two"),
            block_delta(0, type="signature_delta", signature="sig"),
            block_start(1, {"type": "redacted_thinking", "data": "opaque"}),
            block_start(2, {"type": "text", "text": ""}),
            text_delta("four", 2),
            message_delta("end_turn", 6),
            sse("message_stop"),
            meter=meter,
        )
        assert deltas == [
            ReasoningDelta("one two"),
            ReasoningDelta("", "sig"),
            TextDelta("four"),
            Finish("stop"),
            UsageReport(TokenCounts(9, 6, reasoning_tokens=2)),
        ]
        assert meter.first_token_at_ns == CLOCK_NS

    def test_the_forced_json_tool_streams_as_text_and_finishes_with_stop(self) -> None:
        """Its input pieces are text deltas; its start is no tool call; tool_use is stop."""
        deltas, _ = translate(
            message_start(),
            block_start(0, {"type": "tool_use", "id": "toolu_1", "name": "point", "input": {}}),
            json_delta(0, '{"x"'),
            json_delta(0, ": 1}"),
            message_delta("tool_use", 5),
            json_tool="point",
        )
        assert deltas == [TextDelta('{"x"'), TextDelta(": 1}"), Finish("stop")]

    def test_a_stream_read_a_byte_at_a_time_gives_the_same_deltas(self) -> None:
        """Events split anywhere across reads come out whole and the same."""
        stream = whole_stream("one", " two")
        whole, _ = translate(stream)
        split, _ = translate(*(stream[i : i + 1] for i in range(len(stream))))
        assert split == whole

    def test_crlf_line_endings_are_read_like_lf(self) -> None:
        """SSE allows CRLF; the events are the same."""
        stream = whole_stream("x")
        assert translate(stream.replace(b"\n", b"\r\n"))[0] == translate(stream)[0]

    def test_message_delta_usage_is_a_total_the_last_one_wins(self) -> None:
        """Cumulative output counts in two message_deltas are not added up: one Finish, one
        usage report of the last totals."""
        meter = Meter()
        deltas, _ = translate(
            message_start(),
            text_delta("a b c"),
            message_delta("end_turn", 2),
            message_delta("end_turn", 3),
            sse("message_stop"),
            meter=meter,
        )
        assert meter.counts() == (TokenCounts(9, 3), False)
        assert [d for d in deltas if isinstance(d, Finish)] == [Finish("stop")]
        assert [d for d in deltas if isinstance(d, UsageReport)] == [UsageReport(meter.counts()[0])]

    def test_a_stream_without_message_stop_keeps_message_deltas_usage(self) -> None:
        """The finish and the meter's report come at message_delta; the usage report waits
        for message_stop, and the translator is not finished (the engine says so)."""
        meter = Meter()
        deltas, translator = translate(
            message_start(), text_delta("a"), message_delta("max_tokens", 1), meter=meter
        )
        assert deltas == [TextDelta("a"), Finish("length")]
        assert meter.reported == TokenCounts(9, 1)
        assert not translator.finished

    def test_nothing_comes_before_the_first_content(self) -> None:
        """message_start, pings and empty block starts give nothing, so an error right after
        them can still fail over before the first byte."""
        meter = Meter()
        empty = (
            block_start(0, {"type": "text", "text": ""}),
            block_start(1, {"type": "thinking", "thinking": ""}),
        )
        deltas, _ = translate(message_start(), sse("ping"), *empty, meter=meter)
        assert deltas == []
        assert meter.first_token_at_ns is None

    def test_a_cut_stream_is_metered_from_what_was_produced_with_the_exact_prompt(self) -> None:
        """No message_delta: no reported usage; the words produced are the estimate and the
        prompt is message_start's (cache included)."""
        meter = Meter(prompt_counter=lambda: 999)
        deltas, translator = translate(
            message_start(9, 2, 3), text_delta("alpha bravo"), text_delta(" charlie"), meter=meter
        )
        assert text_of(deltas) == "alpha bravo charlie"
        assert not translator.finished
        assert meter.counts() == (TokenCounts(14, 3), True)

    def test_an_error_event_is_an_upstream_error_with_its_message(self) -> None:
        """event: error mid-stream raises UpstreamError carrying Anthropic's message."""
        error = {"type": "overloaded_error", "message": "Overloaded"}
        with pytest.raises(UpstreamError, match="Overloaded"):
            translate(message_start(), text_delta("a"), sse("error", error=error))

    @pytest.mark.parametrize(
        "piece",
        [
            b"<html>502 Bad Gateway</html>\n\n",
            b"data: {not json\n\n",
            b"data: [1, 2]\n\n",
            sse("content_block_delta", index=0),
            sse("message_start"),
            block_start(0, {"type": "tool_use", "input": {}}),
            json_delta(3, "{}"),
            sse("content_block_delta", delta={"type": "input_json_delta", "partial_json": "{}"}),
            b"data: " + b"x" * (4 * 1024 * 1024 + 1),
        ],
        ids=[
            "not-sse",
            "bad-json",
            "not-an-object",
            "no-delta",
            "no-message",
            "tool-without-name",
            "tool-input-without-tool",
            "no-index",
            "over-long",
        ],
    )
    def test_a_malformed_event_stream_is_an_upstream_error(self, piece: bytes) -> None:
        """Garbage in the stream is the upstream's fault: UpstreamError, never a crash."""
        with pytest.raises(UpstreamError):
            translate(message_start(), piece)

    def test_what_came_before_a_bad_event_in_one_read_is_still_relayed(self) -> None:
        """Text and a bad event arrive together: the text goes on (it was metered as
        produced), then the failure."""
        meter = Meter()
        translator = StreamTranslator(meter, ENGINE, lambda: CLOCK_NS, None)
        read = message_start() + text_delta("alpha") + text_delta(" bravo") + b"data: {bad\n\n"
        deltas, failure = deltas_of_read(EventReader(ENGINE), translator, read)
        assert isinstance(failure, UpstreamError)
        assert text_of(deltas) == "alpha bravo"
        assert meter.completion_tokens_estimate == 2

    def test_events_after_message_stop_are_ignored(self) -> None:
        """Nothing after message_stop reaches the client or the meter."""
        meter = Meter()
        deltas, _ = translate(whole_stream("a"), text_delta("late"), meter=meter)
        assert "late" not in text_of(deltas)
        assert meter.reported == TokenCounts(9, 1)
