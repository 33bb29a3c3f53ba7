"""The chat completions surface, on the way out: neutral answers and deltas as OpenAI
``chat.completion`` bodies and ``chat.completion.chunk`` events (pure).

An engine that speaks chat itself answers wire bytes, which pass through untouched
(``WirePart``); everything else is rendered here, so every engine's answer reads the same
to a client: tool calls with ``finish_reason: tool_calls``, log probabilities, usage with
``prompt_tokens_details.cached_tokens`` and ``completion_tokens_details.reasoning_tokens``.
Reasoning text, where an engine gives it, goes out as ``reasoning_content`` (the name
DeepSeek's and vLLM's chat APIs use); OpenAI's own reasoning is counted, never shown.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenmill.neutral import (
    Answer,
    Completed,
    Finish,
    NeutralCall,
    ReasoningDelta,
    ReasoningPart,
    StreamPart,
    TextDelta,
    TextPart,
    TokenLogprob,
    ToolCallDelta,
    ToolCallPart,
    UsageReport,
    WirePart,
)
from tokenmill.surfaces.wire import OpenAIStreamEnds
from tokenmill.usage import TokenCounts


def usage_json(counts: TokenCounts) -> dict[str, Any]:
    return {
        "prompt_tokens": counts.prompt_tokens,
        "completion_tokens": counts.completion_tokens,
        "total_tokens": counts.prompt_tokens + counts.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": counts.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": counts.reasoning_tokens},
    }


def logprob_json(entry: TokenLogprob) -> dict[str, Any]:
    token_bytes = list(entry.token.encode("utf-8"))
    return {
        "token": entry.token,
        "logprob": entry.logprob,
        "bytes": token_bytes,
        "top_logprobs": [
            {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}
            for token, logprob in entry.top
        ],
    }


def _logprobs(entries: tuple[TokenLogprob, ...] | None) -> dict[str, Any] | None:
    if entries is None:
        return None
    return {"content": [logprob_json(entry) for entry in entries], "refusal": None}


def tool_call_json(part: ToolCallPart) -> dict[str, Any]:
    return {
        "id": part.id,
        "type": "function",
        "function": {"name": part.name, "arguments": part.arguments},
    }


class ChatRenderer(OpenAIStreamEnds):
    """One request's rendering: the envelope every body and chunk shares, and the stream's
    state (the role chunk comes once, before the first delta)."""

    def __init__(self, call: NeutralCall, request_id: str, created_s: int) -> None:
        model = call.model
        self._head = {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion.chunk",
            "created": created_s,
            "model": model,
        }
        self._role_sent = False

    def body(self, completed: Completed) -> bytes:
        """A non-streamed answer's body: the engine's bytes as they are, or rendered."""
        if isinstance(completed, bytes):
            return completed
        assert isinstance(completed, Answer)
        return self.answer(completed)

    def answer(self, answer: Answer) -> bytes:
        texts = [part.text for part in answer.parts if isinstance(part, TextPart)]
        calls = [tool_call_json(part) for part in answer.parts if isinstance(part, ToolCallPart)]
        reasoning = [p.text for p in answer.parts if isinstance(p, ReasoningPart) and p.text]
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(texts) if texts or not calls else None,
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = calls
        if reasoning:
            message["reasoning_content"] = "".join(reasoning)
        body = {**self._head, "object": "chat.completion"}
        if answer.fingerprint is not None:
            body["system_fingerprint"] = answer.fingerprint
        choice = {
            "index": 0,
            "message": message,
            "logprobs": _logprobs(answer.logprobs),
            "finish_reason": answer.finish,
        }
        return orjson.dumps(body | {"choices": [choice], "usage": usage_json(answer.counts)})

    def parts(self, parts: list[StreamPart]) -> list[WirePart]:
        """A batch of the engine's parts as chunks (wire parts pass as they are)."""
        if parts and type(parts[0]) is WirePart:
            return parts  # type: ignore[return-value]  # an engine's batch is all one kind
        chunks: list[WirePart] = []
        for part in parts:
            if isinstance(part, WirePart):
                chunks.append(part)
            elif isinstance(part, UsageReport):
                chunks.append(self.usage(part.counts))
            else:
                delta = self._delta(part)
                if delta is not None:
                    if not self._role_sent:
                        self._role_sent = True
                        chunks.append(self._chunk({"role": "assistant", "content": ""}))
                    chunks.append(delta)
        return chunks

    def usage(self, counts: TokenCounts) -> WirePart:
        return WirePart(
            orjson.dumps(self._head | {"choices": [], "usage": usage_json(counts)}), True
        )

    def _delta(self, part: StreamPart) -> WirePart | None:
        if isinstance(part, TextDelta):
            return self._chunk({"content": part.text}, logprobs=_logprobs(part.logprobs))
        if isinstance(part, ToolCallDelta):
            return self._chunk({"tool_calls": [_tool_call_delta(part)]})
        if isinstance(part, ReasoningDelta):
            return self._chunk({"reasoning_content": part.text}) if part.text else None
        if isinstance(part, Finish):
            return self._chunk({}, finish=part.reason)
        return None

    def _chunk(
        self, delta: dict[str, Any], *, finish: str | None = None, logprobs: Any = None
    ) -> WirePart:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return WirePart(orjson.dumps(self._head | {"choices": [choice]}))


def _tool_call_delta(part: ToolCallDelta) -> dict[str, Any]:
    if part.id is None:
        return {"index": part.index, "function": {"arguments": part.arguments}}
    return {
        "index": part.index,
        "id": part.id,
        "type": "function",
        "function": {"name": part.name or "", "arguments": part.arguments},
    }
