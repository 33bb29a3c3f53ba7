"""The Anthropic Messages surface, on the way out: neutral answers and deltas as Anthropic
``message`` bodies and event streams, and errors in Anthropic's shape (pure).

An Anthropic engine relays its upstream's own bytes (a body, or whole framed events), which
pass through untouched; it never forwards ``message_stop``, which ``end`` writes once the
usage is committed. Everything else is rendered here, so every engine reads the same to an
Anthropic client: ``message_start`` and a ``ping`` first, then the content blocks one after
another with sequential indexes (text, thinking with its signature, tool_use with its input
as JSON pieces), then ``message_delta`` with the stop reason and the committed usage, then
``message_stop``. Anthropic counts cache reads and writes apart from ``input_tokens``; the
neutral prompt holds them all.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenmill.errors import TokenmillError
from tokenmill.neutral import (
    Answer,
    Completed,
    Finish,
    FinishReason,
    NeutralCall,
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
from tokenmill.surfaces.wire import WireShape, framed
from tokenmill.usage import TokenCounts

STOP_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    409: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    503: "overloaded_error",
    504: "timeout_error",
}
OVERLOADED_STATUS = 529  # Anthropic's own status for an overloaded service


def anthropic_error_body(error: TokenmillError) -> bytes:
    """Anthropic's ``{"type": "error", "error": {"type", "message"}}``."""
    kind = ERROR_TYPES.get(error.http_status, "api_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": error.message}})


def anthropic_status(error: TokenmillError) -> int:
    return OVERLOADED_STATUS if error.http_status == 503 else error.http_status


ANTHROPIC_WIRE = WireShape(anthropic_error_body, framed, anthropic_status)


def event(kind: str, fields: dict[str, Any]) -> bytes:
    """One framed event; its data names its type too, as Anthropic's do."""
    data = orjson.dumps({"type": kind, **fields})
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


MESSAGE_STOP = event("message_stop", {})
PING = event("ping", {})


def usage_json(counts: TokenCounts) -> dict[str, int]:
    fresh = counts.prompt_tokens - counts.cached_tokens - counts.cache_write_tokens
    return {
        "input_tokens": max(0, fresh),
        "output_tokens": counts.completion_tokens,
        "cache_creation_input_tokens": counts.cache_write_tokens,
        "cache_read_input_tokens": counts.cached_tokens,
    }


def stop_reason(finish: FinishReason, stop_sequence: str | None) -> str:
    if finish == "stop" and stop_sequence is not None:
        return "stop_sequence"
    return STOP_REASONS[finish]


def block_json(part: TextPart | ToolCallPart | ReasoningPart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ToolCallPart):
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": _input(part)}
    if part.redacted:
        return {"type": "redacted_thinking", "data": part.signature or ""}
    return {"type": "thinking", "thinking": part.text, "signature": part.signature or ""}


def _input(part: ToolCallPart) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic's ``input`` is ({} if they are not
    one: a model's broken JSON must not break the body)."""
    try:
        arguments = orjson.loads(part.arguments)
    except orjson.JSONDecodeError:
        return {}
    return arguments if isinstance(arguments, dict) else {}


def _is_empty_text(block: dict[str, Any]) -> bool:
    return block["type"] == "text" and not block["text"]


class MessagesRenderer:
    """One request's rendering: the message's id and model, and the stream's state (the
    block open now, the finish and the last usage seen, whether the engine relays)."""

    def __init__(self, call: NeutralCall, request_id: str, created_s: int) -> None:
        self._message_id = "msg_" + request_id.removeprefix("req_")
        self._model = call.model
        self._started = False
        self._relayed = False
        self._index = -1  # the index of the last block started
        self._open: str | None = None  # the type of the block open now
        self._open_tool: int | None = None  # the open tool_use block's neutral index
        self._tool_calls: dict[int, tuple[str, str]] = {}  # neutral index -> (id, name)
        self._finish: FinishReason = "stop"
        self._stop_sequence: str | None = None
        self._reported: TokenCounts | None = None

    def body(self, completed: Completed) -> bytes:
        """A non-streamed answer's body: the engine's bytes as they are, or rendered."""
        if isinstance(completed, bytes):
            return completed
        assert isinstance(completed, Answer)
        return orjson.dumps(self.message(completed))

    def message(self, answer: Answer) -> dict[str, Any]:
        blocks = [block_json(part) for part in answer.parts]
        content = [block for block in blocks if not _is_empty_text(block)] or blocks[:1]
        sequence = answer.stop_sequence if answer.finish == "stop" else None
        return {
            **self._head(),
            "content": content,
            "stop_reason": stop_reason(answer.finish, sequence),
            "stop_sequence": sequence,
            "usage": usage_json(answer.counts),
        }

    def _head(self) -> dict[str, Any]:
        return {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
        }

    def parts(self, parts: list[StreamPart]) -> list[WirePart]:
        """A batch of the engine's parts as events (an engine's own events as they are)."""
        if parts and type(parts[0]) is WirePart:
            self._relayed = True
            return parts  # type: ignore[return-value]  # an engine's batch is all one kind
        if len(parts) == 1 and self._open == "text" and type(parts[0]) is TextDelta:
            return [WirePart(self._text_delta(parts[0].text))] if parts[0].text else []
        events: list[bytes] = []
        for part in parts:
            if isinstance(part, WirePart):
                events.append(part.payload)
            elif isinstance(part, UsageReport):
                self._reported = part.counts
            else:
                if not self._started:
                    events.extend(self._start(_last_report(parts) or self._reported))
                events.extend(self._delta(part))
        return [WirePart(b"".join(events))] if events else []  # framed already: one write

    def usage(self, counts: TokenCounts) -> WirePart:
        return WirePart(self._message_delta(counts))

    def end(self, counts: TokenCounts) -> bytes:
        """``message_stop``, after the stop reason and usage (a relay sent those itself)."""
        if self._relayed:
            return MESSAGE_STOP
        events = [] if self._started else self._start(counts)
        events.extend(self._close())
        assert self._open is None
        events.extend((self._message_delta(counts), MESSAGE_STOP))
        return b"".join(events)

    def fail(self, error: TokenmillError) -> bytes:
        return b"event: error\ndata: " + anthropic_error_body(error) + b"\n\n"

    def _start(self, known: TokenCounts | None) -> list[bytes]:
        """``message_start`` (usage: the best known, its output zero) and a ping."""
        self._started = True
        usage = usage_json(known) if known is not None else usage_json(TokenCounts(0, 0))
        message = {
            **self._head(),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage | {"output_tokens": 0},
        }
        return [event("message_start", {"message": message}), PING]

    def _message_delta(self, counts: TokenCounts) -> bytes:
        delta = {
            "stop_reason": stop_reason(self._finish, self._stop_sequence),
            "stop_sequence": self._stop_sequence if self._finish == "stop" else None,
        }
        return event("message_delta", {"delta": delta, "usage": usage_json(counts)})

    def _delta(self, part: StreamPart) -> list[bytes]:
        if isinstance(part, TextDelta):
            return self._text(part.text)
        if isinstance(part, ReasoningDelta):
            return self._reasoning(part)
        if isinstance(part, ToolCallDelta):
            return self._tool_call(part)
        assert isinstance(part, Finish)
        self._finish, self._stop_sequence = part.reason, part.stop_sequence
        return self._close()

    def _text(self, text: str) -> list[bytes]:
        if not text:
            return []
        events = [] if self._open == "text" else self._open_block({"type": "text", "text": ""})
        events.append(self._text_delta(text))
        return events

    def _text_delta(self, text: str) -> bytes:
        """What a stream is mostly made of, written without a dict: as ``event`` would."""
        return (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
            b'"delta":{"type":"text_delta","text":%s}}\n\n' % (self._index, orjson.dumps(text))
        )

    def _reasoning(self, part: ReasoningDelta) -> list[bytes]:
        if part.redacted:  # Anthropic sends redacted thinking whole, in its block's start
            return self._open_block({"type": "redacted_thinking", "data": part.text})
        if not part.text and part.signature is None:
            return []
        events = []
        if self._open != "thinking":
            events = self._open_block({"type": "thinking", "thinking": "", "signature": ""})
        if part.text:
            events.append(self._block_delta({"type": "thinking_delta", "thinking": part.text}))
        if part.signature is not None:
            events.append(
                self._block_delta({"type": "signature_delta", "signature": part.signature})
            )
        return events

    def _tool_call(self, part: ToolCallDelta) -> list[bytes]:
        """A tool call's block opens at its first piece (or at a piece of another call than
        the open one: blocks do not interleave, so a call's late pieces get a block again,
        with its id and name)."""
        events: list[bytes] = []
        known_id, known_name = self._tool_calls.get(part.index, ("", ""))
        another = part.id is not None and part.id != known_id  # some engines repeat the id
        if another or self._open_tool != part.index:
            call_id, name = part.id or known_id, part.name or known_name
            self._tool_calls[part.index] = (call_id, name)
            block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
            events = self._open_block(block)
            self._open_tool = part.index
        if part.arguments:
            delta = {"type": "input_json_delta", "partial_json": part.arguments}
            events.append(self._block_delta(delta))
        return events

    def _open_block(self, block: dict[str, Any]) -> list[bytes]:
        events = self._close()
        assert self._open is None
        self._index += 1
        self._open = block["type"]
        start = {"index": self._index, "content_block": block}
        return [*events, event("content_block_start", start)]

    def _block_delta(self, delta: dict[str, Any]) -> bytes:
        assert self._open is not None
        return event("content_block_delta", {"index": self._index, "delta": delta})

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open, self._open_tool = None, None
        return [event("content_block_stop", {"index": self._index})]


def _last_report(parts: list[StreamPart]) -> TokenCounts | None:
    """The usage a batch reports, if any: the best known at ``message_start``."""
    reports = [part.counts for part in parts if isinstance(part, UsageReport)]
    return reports[-1] if reports else None


__all__ = [
    "ANTHROPIC_WIRE",
    "MessagesRenderer",
    "anthropic_error_body",
    "anthropic_status",
    "block_json",
    "event",
    "stop_reason",
    "usage_json",
]
