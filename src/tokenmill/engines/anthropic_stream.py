"""An Anthropic Messages event stream as neutral deltas, metered as it goes (pure: the
clock is passed in).

``EventReader`` frames the SSE bytes into events; ``StreamTranslator`` turns each event
into deltas. Tool calls are numbered by their order among the tool_use blocks (the
neutral stream's index), not by Anthropic's block index, which counts text and thinking
too. The forced tool of a JSON output format streams as text.

Metering: the prompt is known exactly at ``message_start`` (its usage; its
``output_tokens`` is a placeholder), the output at ``message_delta`` (cumulative totals:
the last one wins). The ``Finish`` comes at the first ``message_delta``, the one
``UsageReport`` at ``message_stop`` with the last totals (the surface renders each report
as a usage chunk). Until then each produced delta's text is counted locally, so a stream
cut before the end is billed for what was relayed. Nothing is produced before the first
content: an error right after ``message_start`` (Anthropic's "overloaded") still comes
before the first byte, and the request can fail over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from tokenmill.engines.anthropic_answers import finish_reason, usage_counts
from tokenmill.engines.upstream import LINE_BYTES_MAX, json_object
from tokenmill.errors import UpstreamError
from tokenmill.neutral import (
    Delta,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from tokenmill.usage import Meter, count_text_tokens

SSE_OTHER_FIELDS = (b":", b"event:", b"id:", b"retry:")


class EventReader:
    """Anthropic's event stream (SSE) split into events: ``data:`` lines joined, each event
    dispatched at its blank line. The ``event:`` line is not needed: the data names its
    type."""

    def __init__(self, engine: str) -> None:
        self._engine = engine
        self._pending = b""
        self._data: list[bytes] = []
        self._data_bytes = 0
        self._framing: list[bytes] = []  # the lines of the event being read

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        """The events completed by ``data``, one by one: a bad one raises when reached."""
        for event, _ in self.feed_framed(data):
            yield event

    def feed_framed(self, data: bytes) -> Iterator[tuple[dict[str, Any], bytes]]:
        """The events completed by ``data`` with the bytes that framed each, as they came
        (its ``event:`` and ``data:`` lines and the blank line that ends it)."""
        self._pending += data
        cut = self._pending.rfind(b"\n")
        if cut < 0:
            if len(self._pending) > LINE_BYTES_MAX:
                raise UpstreamError(f"upstream {self._engine} sent an over-long event")
            return
        lines, self._pending = self._pending[:cut].split(b"\n"), self._pending[cut + 1 :]
        for raw_line in lines:
            line = raw_line.rstrip(b"\r")
            if not line:
                if self._data:
                    event = json_object(b"\n".join(self._data), self._engine, "an event")
                    yield event, b"\n".join(self._framing) + b"\n\n"
                self._data, self._data_bytes, self._framing = [], 0, []
                continue
            self._framing.append(line)
            self._data_bytes += len(line)  # of the whole event, comments too
            if self._data_bytes > LINE_BYTES_MAX:
                raise UpstreamError(f"upstream {self._engine} sent an over-long event")
            if line.startswith(b"data:"):
                self._data.append(line[5:].lstrip(b" "))
            elif not line.startswith(SSE_OTHER_FIELDS):
                raise UpstreamError(f"upstream {self._engine} sent a malformed event stream")


class StreamTranslator:
    """One Anthropic stream, event by event, as neutral deltas; fills ``meter`` as it goes.
    ``json_tool`` names the forced tool of a JSON output format (None: a text answer);
    ``clock_ns`` stamps the first token."""

    def __init__(
        self, meter: Meter, engine: str, clock_ns: Callable[[], int], json_tool: str | None
    ) -> None:
        self._meter = meter
        self._engine = engine
        self._clock_ns = clock_ns
        self._json_tool = json_tool
        self._usage: dict[str, Any] = {}
        self._tool_indexes: dict[int, int] = {}  # Anthropic block index -> tool call index
        self._json_blocks: set[int] = set()  # block indexes of the forced JSON tool
        self._reasoning_tokens = 0
        self._finish_sent = False
        self.finished = False  # message_stop seen: nothing may follow

    def deltas(self, event: dict[str, Any]) -> list[Delta]:
        kind = event.get("type")
        if self.finished:
            return []
        if kind == "message_start":
            self._started(self._object_in(event, "message"))
            return []
        if kind == "content_block_start":
            return self._block_started(event, self._object_in(event, "content_block"))
        if kind == "content_block_delta":
            return self._block_delta(event, self._object_in(event, "delta"))
        if kind == "message_delta":
            return self._stopped(event, self._object_in(event, "delta"))
        if kind == "message_stop":
            self.finished = True
            counts = self._meter.reported
            return [] if counts is None else [UsageReport(counts)]
        if kind == "error":
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            raise UpstreamError(f"upstream {self._engine} failed mid-stream: {message}"[:600])
        return []  # ping, content_block_stop, and event types added later

    def _started(self, message: dict[str, Any]) -> None:
        self._take_usage(message.get("usage"))
        counts = usage_counts({**self._usage, "output_tokens": 0})
        if counts is not None:
            # The prompt is known exactly now; only the output of a cut stream is estimated.
            self._meter.prompt_tokens_estimate = counts.prompt_tokens
            self._meter.prompt_counter = None

    def _block_started(self, event: dict[str, Any], block: dict[str, Any]) -> list[Delta]:
        kind = block.get("type")
        if kind == "text":
            return self._text(block.get("text"))
        if kind == "thinking":
            return self._thinking(block.get("thinking"))
        if kind != "tool_use":
            return []  # redacted thinking (no neutral delta carries it), server tools, ...
        index = self._block_index(event)
        name, call_id = block.get("name"), block.get("id")
        if not isinstance(name, str) or not isinstance(call_id, str):
            raise UpstreamError(f"upstream {self._engine} sent a tool_use block without a name")
        if name == self._json_tool:
            self._json_blocks.add(index)
            return []
        tool_index = len(self._tool_indexes)
        self._tool_indexes[index] = tool_index
        return [self._produced(ToolCallDelta(tool_index, call_id, name), name)]

    def _block_delta(self, event: dict[str, Any], delta: dict[str, Any]) -> list[Delta]:
        kind = delta.get("type")
        if kind == "text_delta":
            return self._text(delta.get("text"))
        if kind == "thinking_delta":
            return self._thinking(delta.get("thinking"))
        if kind == "signature_delta":
            signature = delta.get("signature")
            return [ReasoningDelta("", signature)] if isinstance(signature, str) else []
        if kind != "input_json_delta":
            return []  # citations and delta types added later
        index = self._block_index(event)
        arguments = delta.get("partial_json")
        if not isinstance(arguments, str) or not arguments:
            return []
        if index in self._json_blocks:
            return [self._produced(TextDelta(arguments), arguments)]
        if index not in self._tool_indexes:
            raise UpstreamError(f"upstream {self._engine} sent tool input outside a tool_use")
        piece = ToolCallDelta(self._tool_indexes[index], arguments=arguments)
        return [self._produced(piece, arguments)]

    def _text(self, text: Any) -> list[Delta]:
        if not isinstance(text, str) or not text:
            return []  # a block that opens empty
        return [self._produced(TextDelta(text), text)]

    def _thinking(self, text: Any) -> list[Delta]:
        if not isinstance(text, str) or not text:
            return []
        delta = self._produced(ReasoningDelta(text), text)
        self._reasoning_tokens += count_text_tokens(text)
        return [delta]

    def _produced(self, delta: Delta, text: str) -> Delta:
        """Meter a delta the model produced: its words (deltas carry several tokens, so a
        cut stream is billed fairly) and, for the first, the time."""
        self._meter.completion_tokens_estimate += count_text_tokens(text)
        if self._meter.first_token_at_ns is None:
            self._meter.first_token_at_ns = self._clock_ns()
        return delta

    def _stopped(self, event: dict[str, Any], delta: dict[str, Any]) -> list[Delta]:
        self._take_usage(event.get("usage"))
        deltas: list[Delta] = []
        if not self._finish_sent:
            self._finish_sent = True
            json_answer = self._json_tool is not None
            deltas.append(Finish(finish_reason(delta.get("stop_reason"), json_answer)))
        counts = usage_counts(self._usage, self._reasoning_tokens)
        if counts is not None:
            self._meter.report(counts)  # totals, not increments: the last one wins
        return deltas

    def _take_usage(self, usage: Any) -> None:
        """Keep the latest value of each usage field (message_delta's are cumulative)."""
        if isinstance(usage, dict):
            self._usage.update((k, v) for k, v in usage.items() if v is not None)

    def _object_in(self, event: dict[str, Any], name: str) -> dict[str, Any]:
        found = event.get(name)
        if not isinstance(found, dict):
            kind = str(event.get("type"))[:40]
            raise UpstreamError(f"upstream {self._engine} sent a {kind} event without {name}")
        return found

    def _block_index(self, event: dict[str, Any]) -> int:
        index = event.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise UpstreamError(f"upstream {self._engine} sent a content block without index")
        return index


def deltas_of_read(
    reader: EventReader, translator: StreamTranslator, data: bytes
) -> tuple[list[Delta], UpstreamError | None]:
    """The deltas of the events in ``data``, and the failure that ended them if one did:
    what came before a bad event still reaches the client (and was metered as relayed)."""
    deltas: list[Delta] = []
    try:
        for event in reader.feed(data):
            deltas.extend(translator.deltas(event))
    except UpstreamError as failure:
        return deltas, failure
    return deltas, None


__all__ = ["EventReader", "StreamTranslator", "deltas_of_read"]
