"""The OpenAI Responses surface, on the way out: neutral answers and deltas as ``response``
objects and the typed ``response.*`` stream events (pure).

Every event is framed here (``event:`` and ``data:`` lines) and numbered by
``sequence_number`` across the whole stream. A stream opens with ``response.created`` and
``response.in_progress``; each output item (reasoning, a message, a function call) is
added, filled by deltas and done, one at a time, a new kind of delta closing the open one;
it ends with ``response.completed`` (or ``response.incomplete``), whose response carries the
whole output and usage, or ``response.failed``. The renderer remembers the last whole
response it wrote, which ``kept`` hands to the store (``previous_response_id`` reads it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    StreamPart,
    TextDelta,
    ToolCallDelta,
    UsageReport,
    WirePart,
)
from tokenmill.surfaces.chat_render import logprob_json
from tokenmill.surfaces.responses_items import KeptResponse, item_id, normalize_input
from tokenmill.surfaces.responses_output import (
    INCOMPLETE_REASONS,
    ITEM_PREFIXES,
    answer_items,
    echo_of,
    function_call_item,
    message_item,
    reasoning_item,
    usage_json,
)
from tokenmill.surfaces.wire import WireShape, framed, openai_error_body
from tokenmill.usage import TokenCounts

RESPONSES_WIRE = WireShape(openai_error_body, framed)


def keep_response(renderer: object, counts: TokenCounts) -> KeptResponse | None:
    """What the store keeps of a finished Responses request; nothing where the request
    said ``store: false``."""
    assert isinstance(renderer, ResponsesRenderer)
    return renderer.kept(counts) if renderer.store else None


@dataclass
class _OpenItem:
    """The output item a stream is filling: its text (a message's, a call's arguments or
    a reasoning summary) comes in pieces."""

    kind: str
    index: int
    id: str
    pieces: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    call_id: str = ""
    name: str = ""
    tool_index: int = -1
    signature: str | None = None
    summary_open: bool = False
    delta_head: bytes = b""  # its delta events up to the piece (the hot path: no dict)

    def added(self) -> dict[str, Any]:
        """The item as it is added, before any piece of it."""
        if self.kind == "message":
            return message_item(self.id, "", [], "in_progress") | {"content": []}
        if self.kind == "function_call":
            return function_call_item(self.id, self.call_id, self.name, "", "in_progress")
        return reasoning_item(self.id, "", None)

    def whole(self, status: str) -> dict[str, Any]:
        text = "".join(self.pieces)
        if self.kind == "message":
            return message_item(self.id, text, self.logprobs, status)
        if self.kind == "function_call":
            return function_call_item(self.id, self.call_id, self.name, text, status)
        return reasoning_item(self.id, text, self.signature)


class ResponsesRenderer:
    """One request's rendering: the response envelope, and the stream's state (the open
    item, the items done, the event count, the finish and the last response written)."""

    def __init__(self, call: NeutralCall, request_id: str, created_s: int) -> None:
        self._call = call
        self.response_id = "resp_" + request_id.removeprefix("req_")
        self.store = call.body.get("store") is not False
        self._created_s = created_s
        self._echo = echo_of(call)
        self._sequence = 0
        self._started = False
        self._output: list[dict[str, Any]] = []
        self._open: _OpenItem | None = None
        self._finish: FinishReason | None = None
        self._counts: TokenCounts | None = None
        self._last: dict[str, Any] | None = None

    def _response(
        self,
        status: str,
        output: list[dict[str, Any]],
        counts: TokenCounts | None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        reason = INCOMPLETE_REASONS.get(self._finish or "") if status == "incomplete" else None
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self._created_s,
            "status": status,
            "error": error,
            "incomplete_details": {"reason": reason} if reason else None,
            **self._echo,
            "output": output,
            "usage": usage_json(counts) if counts is not None else None,
        }

    def body(self, completed: Completed) -> bytes:
        """A non-streamed answer's body; no engine answers Responses bytes of its own."""
        if isinstance(completed, bytes):
            raise TypeError("An engine answered wire bytes for the Responses surface.")
        assert isinstance(completed, Answer)
        self._finish = completed.finish
        output = answer_items(completed, self.response_id)
        self._last = self._response(self._status(), output, completed.counts)
        return orjson.dumps(self._last)

    def parts(self, parts: list[StreamPart]) -> list[WirePart]:
        """A batch of the engine's parts as framed events (wire parts pass as they are)."""
        if parts and type(parts[0]) is WirePart:
            return parts  # type: ignore[return-value]  # an engine's batch is all one kind
        item = self._open
        if len(parts) == 1 and item is not None and item.kind == "message":
            part = parts[0]  # the hot path: one more piece of the text being written
            if type(part) is TextDelta and part.text and not part.logprobs:
                item.pieces.append(part.text)
                return [WirePart(self._delta_event("response.output_text.delta", part.text))]
        events = self._start()
        for part in parts:
            if isinstance(part, WirePart):
                events.append(part.payload)
            elif isinstance(part, UsageReport):
                self._counts = part.counts
            elif isinstance(part, Finish):
                self._finish = part.reason
                events.extend(self._close())
            elif isinstance(part, TextDelta):
                events.extend(self._text(part))
            elif isinstance(part, ReasoningDelta):
                events.extend(self._reasoning(part))
            elif isinstance(part, ToolCallDelta):
                events.extend(self._tool_call(part))
        return [WirePart(b"".join(events))] if events else []  # framed already: one write

    def usage(self, counts: TokenCounts) -> WirePart:
        """Nothing to send: usage travels in the last event, ``response.completed``."""
        self._counts = counts
        return WirePart(b"")

    def end(self, counts: TokenCounts) -> bytes:
        events = self._start() + self._close()
        assert self._open is None
        status = self._status()
        self._last = self._response(status, list(self._output), counts)
        events.append(self._event(f"response.{status}", response=self._last))
        return b"".join(events)

    def fail(self, error: TokenmillError) -> bytes:
        events = self._start()
        problem = {"code": error.code or error.type, "message": error.message}
        self._last = self._response("failed", self._output_now(), self._counts, problem)
        events.append(self._event("response.failed", response=self._last))
        return b"".join(events)

    def kept(self, counts: TokenCounts) -> KeptResponse:
        """What the store keeps: the last whole response the client saw (or, for a stream
        that never ended, the one it would have seen) and this request's input items."""
        response = self._last
        if response is None:
            response = self._response(self._status(), self._output_now(), counts)
        previous = self._call.body.get("previous_response_id")
        return KeptResponse(
            id=self.response_id,
            previous_response_id=previous if isinstance(previous, str) else None,
            model=self._call.model,
            created_s=self._created_s,
            input_items=normalize_input(self._call.body.get("input"), self.response_id),
            output_items=tuple(response["output"]),
            response=response,
        )

    def _status(self) -> str:
        return "incomplete" if self._finish in INCOMPLETE_REASONS else "completed"

    def _output_now(self) -> list[dict[str, Any]]:
        cut = [self._open.whole("incomplete")] if self._open is not None else []
        return [*self._output, *cut]

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        response = self._response("in_progress", [], None)
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def _begin(self, kind: str, **fields: Any) -> list[bytes]:
        """Close the open item and add a new one of ``kind``."""
        events = self._close()
        assert self._open is None
        index = len(self._output)
        place = item_id(ITEM_PREFIXES[kind], self.response_id, str(index))
        self._open = item = _OpenItem(kind, index, place, **fields)
        events.append(
            self._event("response.output_item.added", output_index=index, item=item.added())
        )
        if kind == "message":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            events.append(self._event("response.content_part.added", **self._where(), part=part))
        return events

    def _continue(self, kind: str) -> list[bytes]:
        """Keep filling the open item if it is of ``kind``, else begin one."""
        if self._open is not None and self._open.kind == kind:
            return []
        return self._begin(kind)

    def _where(self, index: str | None = "content_index") -> dict[str, Any]:
        """Where an event's piece goes: the open item, and its one content or summary part."""
        assert self._open is not None
        place: dict[str, Any] = {"item_id": self._open.id, "output_index": self._open.index}
        return place | ({index: 0} if index is not None else {})

    def _text(self, delta: TextDelta) -> list[bytes]:
        if not delta.text:
            return []
        events = self._continue("message")
        assert self._open is not None
        self._open.pieces.append(delta.text)
        if not delta.logprobs:
            events.append(self._delta_event("response.output_text.delta", delta.text))
            return events
        logprobs = [logprob_json(entry) for entry in delta.logprobs]
        self._open.logprobs.extend(logprobs)
        where = self._where()
        events.append(
            self._event("response.output_text.delta", **where, delta=delta.text, logprobs=logprobs)
        )
        return events

    def _delta_event(self, kind: str, piece: str) -> bytes:
        """A delta event of the open message or call, as ``_event`` would write it but
        from a head made once per item: a stream is mostly these."""
        item = self._open
        assert item is not None
        if not item.delta_head:
            where = self._where("content_index" if item.kind == "message" else None)
            head = {"type": kind, **where} | ({"logprobs": []} if item.kind == "message" else {})
            item.delta_head = b"event: %s\ndata: %s" % (kind.encode(), orjson.dumps(head)[:-1])
        number = self._sequence
        self._sequence += 1
        return item.delta_head + b',"delta":%s,"sequence_number":%d}\n\n' % (
            orjson.dumps(piece),
            number,
        )

    def _reasoning(self, delta: ReasoningDelta) -> list[bytes]:
        if delta.redacted or not (delta.text or delta.signature):
            return []
        events = self._continue("reasoning")
        item = self._open
        assert item is not None
        if delta.signature is not None:
            item.signature = delta.signature
        if delta.text:
            where = self._where("summary_index")
            if not item.summary_open:
                item.summary_open = True
                part = {"type": "summary_text", "text": ""}
                events.append(
                    self._event("response.reasoning_summary_part.added", **where, part=part)
                )
            item.pieces.append(delta.text)
            events.append(
                self._event("response.reasoning_summary_text.delta", **where, delta=delta.text)
            )
        return events

    def _tool_call(self, delta: ToolCallDelta) -> list[bytes]:
        item = self._open
        events: list[bytes] = []
        if item is None or item.kind != "function_call" or item.tool_index != delta.index:
            call_id = delta.id or item_id("call", self.response_id, str(delta.index))
            events = self._begin(
                "function_call", call_id=call_id, name=delta.name or "", tool_index=delta.index
            )
        assert self._open is not None
        if delta.arguments:
            self._open.pieces.append(delta.arguments)
            events.append(
                self._delta_event("response.function_call_arguments.delta", delta.arguments)
            )
        return events

    def _close(self) -> list[bytes]:
        """The events that finish the open item, if any; it joins the output."""
        item = self._open
        if item is None:
            return []
        whole = item.whole("incomplete" if self._finish in INCOMPLETE_REASONS else "completed")
        text = "".join(item.pieces)
        events = []
        if item.kind == "message":
            where = self._where()
            done = self._event(
                "response.output_text.done", **where, text=text, logprobs=item.logprobs
            )
            content = whole["content"][0]
            events += [done, self._event("response.content_part.done", **where, part=content)]
        elif item.kind == "function_call":
            where = self._where(None)
            events.append(
                self._event("response.function_call_arguments.done", **where, arguments=text)
            )
        elif item.summary_open:
            where = self._where("summary_index")
            summary = {"type": "summary_text", "text": text}
            events.append(self._event("response.reasoning_summary_text.done", **where, text=text))
            events.append(
                self._event("response.reasoning_summary_part.done", **where, part=summary)
            )
        events.append(self._event("response.output_item.done", output_index=item.index, item=whole))
        self._output.append(whole)
        self._open = None
        return events
