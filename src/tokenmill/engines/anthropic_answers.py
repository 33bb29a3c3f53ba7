"""An Anthropic Messages answer in the neutral language (pure): parts, finish, token counts.

The engine no longer writes any surface's JSON: the surface renders the ``Answer``. Content
blocks map one for one (text, tool_use as a tool call with its input as JSON text,
thinking and redacted thinking as reasoning with the signature that lets it go back); the
forced tool of a JSON output format is the answer's text instead (see
``anthropic_messages``). Block types added later (server tools, citations) are skipped.

Usage: Anthropic counts cache writes and reads apart from ``input_tokens``; the neutral
prompt holds them all, the reads as ``cached_tokens`` and the writes as
``cache_write_tokens``. Anthropic does not report thinking tokens apart from the output, so
``reasoning_tokens`` is a local count of the thinking text, capped at the output.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import orjson

from tokenmill.errors import UpstreamError
from tokenmill.neutral import FinishReason, ReasoningPart, TextPart, ToolCallPart
from tokenmill.usage import TokenCounts

FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
AnswerPart = TextPart | ToolCallPart | ReasoningPart


def finish_reason(stop_reason: Any, json_answer: bool = False) -> FinishReason:
    """The neutral finish for Anthropic's stop_reason (one added later reads as stop); the
    forced tool of a JSON answer is no tool call but the end of the answer."""
    if not isinstance(stop_reason, str):
        return "stop"
    finish = FINISH_REASONS.get(stop_reason, "stop")
    return "stop" if json_answer and finish == "tool_calls" else finish


def answer_parts(
    message: dict[str, Any], engine: str, json_tool: str | None = None
) -> tuple[tuple[AnswerPart, ...], FinishReason]:
    """(parts, finish) of an Anthropic message; UpstreamError if it is no message. With
    ``json_tool`` (a JSON output format), that tool's input is a text part (a forced tool
    comes with no other text, so it is the whole answer)."""
    content = message.get("content")
    if message.get("type") != "message" or not isinstance(content, list):
        raise UpstreamError(f"upstream {engine} answered with something other than a message")
    parts: list[AnswerPart] = []
    for block in content:
        if not isinstance(block, dict):
            raise UpstreamError(f"upstream {engine} answered with a content block not an object")
        part = answer_part(block, engine, json_tool)
        if part is not None:
            parts.append(part)
    return tuple(parts), finish_reason(message.get("stop_reason"), json_tool is not None)


def answer_part(block: dict[str, Any], engine: str, json_tool: str | None) -> AnswerPart | None:
    """One content block as a part; None for a block with nothing to show."""
    kind = block.get("type")
    if kind == "text":
        return TextPart(_string_in(block, "text", engine))
    if kind == "tool_use":
        arguments = orjson.dumps(block.get("input", {})).decode()
        name = _string_in(block, "name", engine)
        if name == json_tool:
            return TextPart(arguments)
        return ToolCallPart(_string_in(block, "id", engine), name, arguments)
    if kind == "thinking":
        signature = block.get("signature")
        text = _string_in(block, "thinking", engine)
        return ReasoningPart(text, signature if isinstance(signature, str) else None)
    if kind == "redacted_thinking":
        return ReasoningPart("", _string_in(block, "data", engine), redacted=True)
    return None  # block types added later


def _string_in(block: dict[str, Any], name: str, engine: str) -> str:
    value = block.get(name)
    if not isinstance(value, str):
        raise UpstreamError(f"upstream {engine} sent a {block.get('type')} block without {name}")
    return value


def reasoning_text(parts: tuple[AnswerPart, ...]) -> str:
    return " ".join(part.text for part in parts if isinstance(part, ReasoningPart))


def usage_counts(usage: Any, reasoning_tokens_estimate: int = 0) -> TokenCounts | None:
    """Anthropic ``usage`` -> counts: the prompt is input plus cache writes plus cache
    reads; reasoning is the estimate given, at most the output; None when absent or
    malformed."""
    if not isinstance(usage, dict):
        return None
    fresh = usage.get("input_tokens")
    output = usage.get("output_tokens")
    written = usage.get("cache_creation_input_tokens") or 0  # null when caching is unused
    read = usage.get("cache_read_input_tokens") or 0
    if not (_is_count(fresh) and _is_count(output) and _is_count(written) and _is_count(read)):
        return None
    assert reasoning_tokens_estimate >= 0
    reasoning = min(reasoning_tokens_estimate, output)
    return TokenCounts(fresh + written + read, output, read, written, reasoning)


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


__all__ = [
    "FINISH_REASONS",
    "answer_part",
    "answer_parts",
    "finish_reason",
    "reasoning_text",
    "usage_counts",
]
