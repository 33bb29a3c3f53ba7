"""The ``openai`` engine: any OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama, ...).

One connection pool per upstream (``http_client``), with explicit connect and read
timeouts. A chat, completions or embeddings call's JSON goes up with only the model name,
the output cap and (for streams) ``stream_options.include_usage`` changed; unknown fields
pass through. Stream
chunks come back as they arrive and are relayed without re-encoding: only chunks that
mention ``usage`` are parsed. A call of another surface (Anthropic Messages, OpenAI
Responses) is translated to chat completions and answered in the neutral language, in
``openai_translated``. Foreign errors are mapped here, where they enter.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from tokenmill.config import DeploymentConfig
from tokenmill.engines.base import Completed, EngineCall, StreamPart, WirePart
from tokenmill.engines.chat_translate import SURFACES_TRANSLATED
from tokenmill.engines.openai_translated import TranslatedChat
from tokenmill.engines.upstream import (
    DataPayloads,
    UpstreamSession,
    mapped_errors,
    status_error,
)
from tokenmill.errors import (
    UpstreamError,
)
from tokenmill.usage import (
    TokenCounts,
    count_chat_prompt_tokens,
    count_embedding_tokens,
    count_prompt_tokens,
    count_text_tokens,
    parse_usage,
)

_PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}
_USAGE_NULL = re.compile(rb'"usage"\s*:\s*null')
_HAS_TEXT = re.compile(rb'"(?:content|text|arguments|reasoning_content)"\s*:\s*"(?!")')
# What an event produced, if it has any: text, a tool call's arguments, or reasoning.
_TEXT_KEYS = (b'"content":"', b'"text":"', b'"arguments":"', b'"reasoning_content":"')
_TEXT_NAMES = (b'"content"', b'"text"', b'"arguments"', b'"reasoning_content"')


class OpenAIBackend:
    kind = "openai"
    simulated = False

    def __init__(self, deployment: str, config: DeploymentConfig, upstream: UpstreamSession):
        self.deployment = deployment
        self.engine = upstream.name
        self._model = config.model
        self._upstream = upstream
        self._translated = TranslatedChat(self.engine, self._model, upstream, _PATHS["chat"])

    async def aclose(self) -> None:
        """The session belongs to the upstream; the app closes it once."""

    async def check_health(self) -> bool:
        return await self._upstream.check_health("/models")

    def _body(self, call: EngineCall) -> bytes:
        body = dict(call.body)
        body["model"] = self._model
        if call.output_tokens_max is not None:
            field = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
            body[field] = call.output_tokens_max
        if call.stream:
            options = body.get("stream_options")
            body["stream_options"] = {**(options or {}), "include_usage": True}
        return orjson.dumps(body)

    def _estimate_prompt(self, call: EngineCall) -> None:
        """A local prompt count, made only if the upstream reports no usage."""
        body = call.body
        if call.endpoint == "chat":
            call.meter.prompt_counter = lambda: count_chat_prompt_tokens(body["messages"])
        elif call.endpoint == "completions":
            call.meter.prompt_counter = lambda: count_prompt_tokens(body["prompt"])
        else:
            call.meter.prompt_counter = lambda: count_embedding_tokens(body["input"])

    async def complete(self, call: EngineCall) -> Completed:
        if call.endpoint in SURFACES_TRANSLATED:
            return await self._translated.complete(call)
        self._estimate_prompt(call)
        path = _PATHS[call.endpoint]
        with mapped_errors(self.engine):
            async with self._upstream.pool.post(path, self._body(call)) as response:
                if response.status != 200:
                    raise await status_error(self.engine, response)
                raw = await response.read()
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"upstream {self.engine} answered with invalid JSON") from exc
        if not isinstance(answer, dict):
            raise UpstreamError(f"upstream {self.engine} answered with a non-object JSON body")
        call.meter.first_token_at_ns = time.perf_counter_ns()
        counts = parse_usage(answer.get("usage"))
        if counts is not None:
            call.meter.report(counts)
        else:
            call.meter.completion_tokens_estimate = _count_answer_tokens(answer)
        return raw

    def stream(self, call: EngineCall) -> AsyncIterator[list[StreamPart]]:
        if call.endpoint in SURFACES_TRANSLATED:
            return self._translated.stream(call)
        return self._relayed_stream(call)

    async def _relayed_stream(self, call: EngineCall) -> AsyncIterator[list[StreamPart]]:
        """The upstream's events, a batch per read: whatever arrived together goes on
        together (one generator between the socket and the relay: each level costs per read)."""
        self._estimate_prompt(call)
        path = _PATHS[call.endpoint]
        events = _RelayedEvents(self.engine, call)
        with mapped_errors(self.engine):
            async with self._upstream.pool.post(path, self._body(call)) as response:
                if response.status != 200:
                    raise await status_error(self.engine, response)
                read = response.read_some
                while data := await read():
                    parts = events.feed(data)
                    if parts:
                        yield parts
                    if events.done:
                        return
        raise UpstreamError(f"upstream {self.engine} closed the stream before [DONE]")


class _RelayedEvents:
    """A relayed event stream's payloads, each metered as it passes (``_part``)."""

    def __init__(self, engine: str, call: EngineCall) -> None:
        self._engine = engine
        self._call = call
        self._payloads = DataPayloads(engine)
        self._checked = False

    @property
    def done(self) -> bool:
        return self._payloads.done

    def feed(self, data: bytes) -> list[StreamPart]:
        """The events ``data`` completes, metered; raises on a malformed one."""
        parts: list[StreamPart] = []
        for payload in self._payloads.feed(data):
            if not self._checked:
                _check_json_object(self._engine, payload)
                self._checked = True
            parts.append(_part(self._engine, self._call, payload))
        return parts


def _part(engine: str, call: EngineCall, payload: bytes) -> WirePart:
    """Meter one event: parse it only if it carries usage; count it if it carries text."""
    usage_only = False
    mentions_usage = b'"usage"' in payload and b'"usage":null' not in payload
    if mentions_usage and not _USAGE_NULL.search(payload):  # also "usage": null, spaced
        usage_only = _take_usage(engine, payload, call)
    if _carries_text(payload):
        meter = call.meter
        meter.completion_tokens_estimate += 1
        if meter.first_token_at_ns is None:
            meter.first_token_at_ns = time.perf_counter_ns()
    return WirePart(payload, usage_only)


def _carries_text(payload: bytes) -> bool:
    """Whether an event produced something (content, text, a tool call's arguments or
    reasoning): a substring test for compact JSON, the regular expression only for spaced
    JSON (the hot path runs this per event)."""
    for key in _TEXT_KEYS:
        at = payload.find(key)
        if at >= 0 and payload[at + len(key) : at + len(key) + 1] != b'"':
            return True
    if any(name in payload for name in _TEXT_NAMES):
        return _HAS_TEXT.search(payload) is not None
    return False


def _take_usage(engine: str, payload: bytes, call: EngineCall) -> bool:
    """Record the usage in ``payload``; True when it is a usage-only chunk."""
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"upstream {engine} sent invalid JSON in a stream") from exc
    if not isinstance(chunk, dict):
        return False
    counts = parse_usage(chunk.get("usage"))
    if counts is not None:
        call.meter.report(counts)
    return chunk.get("choices") == []


def _check_json_object(engine: str, payload: bytes) -> None:
    try:
        ok = isinstance(orjson.loads(payload), dict)
    except orjson.JSONDecodeError:
        ok = False
    if not ok:
        raise UpstreamError(f"upstream {engine} sent a stream event that is not a JSON object")


def _count_answer_tokens(answer: dict[str, Any]) -> int:
    """A local count of what an answer produced: text, reasoning and tool-call arguments."""
    total = 0
    for choice in answer.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if not isinstance(message, dict):
            text = choice.get("text")
            total += count_text_tokens(text) if isinstance(text, str) else 0
            continue
        for name in ("content", "reasoning_content"):
            text = message.get(name)
            total += count_text_tokens(text) if isinstance(text, str) else 0
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                total += count_text_tokens(function["arguments"])
    return total


__all__ = ["OpenAIBackend", "TokenCounts", "UpstreamSession"]
