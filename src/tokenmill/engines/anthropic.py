"""The ``anthropic`` engine: OpenAI chat requests served by an Anthropic Messages API.

The client's chat body is translated into a Messages request (system and developer messages
joined into ``system``, consecutive messages of one role merged, the gateway's output cap as
``max_tokens``, which Anthropic requires) and the answer back into OpenAI's shape, under the
public model name. A field Anthropic cannot honour (n > 1, logprobs, tools, a JSON
response_format, ...) is refused with its ``param``, never dropped: the client would get an
answer other than the one it asked for. Only the chat endpoint is served.

Anthropic counts cache writes and cache reads apart from ``input_tokens``; OpenAI's
``prompt_tokens`` holds them all, the reads again as ``cached_tokens``. A stream's usage
reaches the meter at ``message_delta`` (cumulative totals), not at ``message_start`` (whose
``output_tokens`` is a placeholder): a stream cut before the end is metered from the text
relayed, and marked estimated. HTTP errors map as for the ``openai`` engine, in one place.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeGuard

import orjson
from yarl import URL

from tokenmill.config import AnthropicEngineConfig, DeploymentConfig, Limits
from tokenmill.engines.base import EngineCall, StreamPart
from tokenmill.engines.openai_compat import (
    LINE_BYTES_MAX,
    UpstreamSession,
    mapped_errors,
    status_error,
)
from tokenmill.errors import InvalidRequest, UpstreamError
from tokenmill.usage import TokenCounts, count_chat_prompt_tokens, count_text_tokens

MESSAGES_PATH = "/v1/messages"
MODELS_PATH = "/v1/models"
SYSTEM_ROLES = frozenset({"system", "developer"})
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}
# OpenAI fields Anthropic has no equivalent for, each with the one value that asks for
# nothing (what an SDK may send by default); any other value is refused.
UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "n": lambda value: value == 1,
    "logprobs": lambda value: value is False,
    "top_logprobs": lambda value: value == 0,
    "tools": lambda value: value == [],
    "tool_choice": lambda value: value == "none",
    "functions": lambda value: value == [],
    "function_call": lambda value: value == "none",
    "response_format": lambda value: value == {"type": "text"},
    "logit_bias": lambda value: value == {},
    "presence_penalty": lambda value: value == 0,
    "frequency_penalty": lambda value: value == 0,
    "modalities": lambda value: value == ["text"],
    "audio": lambda value: False,
    "prediction": lambda value: False,
}
TEMPERATURE_MAX = 1  # Anthropic's range is 0..1, OpenAI's 0..2


class AnthropicSession(UpstreamSession):
    """The pooled HTTP client of one Anthropic endpoint (shared by its deployments)."""

    def __init__(
        self, name: str, config: AnthropicEngineConfig, limits: Limits, api_key: str | None
    ):
        self._version = config.anthropic_version
        super().__init__(name, config, limits, api_key)
        # Parsed once: aiohttp would parse a string URL on every request.
        self.url = URL(self.base_url + MESSAGES_PATH)
        self.models_url = URL(self.base_url + MODELS_PATH)

    def credential_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": self._version}
        if api_key:
            headers["x-api-key"] = api_key
        return headers


class AnthropicBackend:
    kind = "anthropic"
    simulated = False

    def __init__(self, deployment: str, config: DeploymentConfig, session: AnthropicSession):
        self.deployment = deployment
        self.engine = session.name
        self._model = config.model
        self._session = session

    async def aclose(self) -> None:
        """The session belongs to the engine; the app closes it once."""

    async def check_health(self) -> bool:
        return await self._session.check_health(self._session.models_url)

    def _body(self, call: EngineCall) -> bytes:
        """The Messages request; refuses (before any I/O) what cannot be translated."""
        body = orjson.dumps(messages_request(call, self._model, self.engine))
        messages = call.body["messages"]
        call.meter.prompt_counter = lambda: count_chat_prompt_tokens(messages)
        return body

    async def complete(self, call: EngineCall) -> bytes:
        body = self._body(call)
        with mapped_errors(self.engine):
            async with self._session.session().post(self._session.url, data=body) as response:
                if response.status != 200:
                    raise await status_error(self.engine, response)
                raw = await response.read()
        answer = _json_object(self.engine, raw, "an answer")
        call.meter.first_token_at_ns = time.perf_counter_ns()
        chat, counts = chat_completion(call, answer, self.engine)
        if counts is not None:
            call.meter.report(counts)
        else:
            text = chat["choices"][0]["message"]["content"]
            call.meter.completion_tokens_estimate = count_text_tokens(text)
        return orjson.dumps(chat)

    async def stream(self, call: EngineCall) -> AsyncIterator[list[StreamPart]]:
        body = self._body(call)
        reader = EventReader(self.engine)
        chunks = ChunkTranslator(call, self.engine)
        with mapped_errors(self.engine):
            async with self._session.session().post(self._session.url, data=body) as response:
                if response.status != 200:
                    raise await status_error(self.engine, response)
                async for data in response.content.iter_any():
                    # What arrived together goes on together: one batch per read.
                    parts, failure = chunks_of_read(reader, chunks, data)
                    if parts:
                        yield parts
                    if failure is not None:
                        raise failure
                    if chunks.finished:
                        return
        raise UpstreamError(f"upstream {self.engine} closed the stream before message_stop")


def chunks_of_read(
    reader: EventReader, chunks: ChunkTranslator, data: bytes
) -> tuple[list[StreamPart], UpstreamError | None]:
    """The chunks of the events in ``data``, and the failure that ended them if one did:
    what came before a bad event still reaches the client (and was metered as relayed)."""
    parts: list[StreamPart] = []
    try:
        for event in reader.feed(data):
            parts.extend(chunks.parts(event))
    except UpstreamError as failure:
        return parts, failure
    return parts, None


def messages_request(call: EngineCall, model: str, engine: str) -> dict[str, Any]:
    """The Anthropic Messages request for an OpenAI chat call; InvalidRequest for what has
    no Anthropic equivalent."""
    if call.endpoint != "chat":
        raise InvalidRequest(
            f"The model '{call.public_model}' is served by the Anthropic engine '{engine}',"
            f" which answers chat completions only, not {call.endpoint}.",
            param="model",
        )
    body = call.body
    _refuse_unsupported(body, engine)
    system, messages = conversation(body["messages"])
    assert call.output_tokens_max is not None  # the gateway caps every chat call
    request: dict[str, Any] = {
        "model": model,
        "max_tokens": call.output_tokens_max,
        "messages": messages,
    }
    if system:
        request["system"] = system
    if call.stop:
        request["stop_sequences"] = list(call.stop)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            request[name] = body[name]
    if call.stream:
        request["stream"] = True
    assert request["max_tokens"] >= 1
    return request


def _refuse_unsupported(body: dict[str, Any], engine: str) -> None:
    for name, asks_nothing in UNSUPPORTED.items():
        value = body.get(name)
        if value is not None and not asks_nothing(value):
            raise InvalidRequest(
                f"'{name}' is not supported by this model (the Anthropic engine '{engine}'"
                " has no equivalent).",
                param=name,
            )
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= TEMPERATURE_MAX:
        raise InvalidRequest(
            f"'temperature' must be from 0 to {TEMPERATURE_MAX} for this model (the"
            f" Anthropic engine '{engine}').",
            param="temperature",
        )


def conversation(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """(system, messages): system and developer texts joined, the user and assistant turns
    with consecutive messages of one role merged (Anthropic wants the roles to alternate)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        role = message["role"]
        blocks = _text_blocks(index, message)
        if role in SYSTEM_ROLES:
            system.extend(block["text"] for block in blocks)
        elif role not in ("user", "assistant"):
            raise InvalidRequest(
                f"messages.[{index}]: the role '{role}' (a tool result) is not supported by"
                " this model.",
                param=f"messages.[{index}].role",
            )
        elif not blocks:
            continue  # Anthropic refuses empty text, and an empty message says nothing
        elif turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise InvalidRequest(
            "'messages' needs at least one user or assistant message with text.",
            param="messages",
        )
    return "\n\n".join(system), turns


def _text_blocks(index: int, message: dict[str, Any]) -> list[dict[str, str]]:
    """A message's content as Anthropic text blocks (empty texts left out)."""
    param = f"messages.[{index}]"
    for name in ("tool_calls", "function_call"):
        if message.get(name):
            raise InvalidRequest(
                f"{param}.{name}: tool calls are not supported by this model.",
                param=f"{param}.{name}",
            )
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content or ():
        text = part.get("text")
        if part.get("type") != "text" or not isinstance(text, str):
            raise InvalidRequest(
                f"{param}.content: only text parts are supported by this model, not"
                f" '{str(part.get('type'))[:40]}'.",
                param=f"{param}.content",
            )
        if text:
            blocks.append({"type": "text", "text": text})
    return blocks


def usage_counts(usage: Any) -> TokenCounts | None:
    """Anthropic ``usage`` -> OpenAI counts: the prompt is input plus cache writes plus cache
    reads, the reads being the cached tokens; None when absent or malformed."""
    if not isinstance(usage, dict):
        return None
    fresh = usage.get("input_tokens")
    output = usage.get("output_tokens")
    written = usage.get("cache_creation_input_tokens") or 0  # null when caching is unused
    read = usage.get("cache_read_input_tokens") or 0
    if not (_is_count(fresh) and _is_count(output) and _is_count(written) and _is_count(read)):
        return None
    return TokenCounts(fresh + written + read, output, read)


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


def openai_usage(counts: TokenCounts) -> dict[str, Any]:
    return {
        "prompt_tokens": counts.prompt_tokens,
        "completion_tokens": counts.completion_tokens,
        "total_tokens": counts.prompt_tokens + counts.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": counts.cached_tokens},
    }


def finish_reason(stop_reason: Any) -> str:
    """OpenAI's finish_reason for Anthropic's stop_reason (one added later reads as stop)."""
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def chat_completion(
    call: EngineCall, answer: dict[str, Any], engine: str
) -> tuple[dict[str, Any], TokenCounts | None]:
    """An Anthropic message as an OpenAI ``chat.completion`` body, and its usage."""
    content = answer.get("content")
    if answer.get("type") != "message" or not isinstance(content, list):
        raise UpstreamError(f"upstream {engine} answered with something other than a message")
    text = "".join(
        block["text"]
        for block in content
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    )
    message = {"role": "assistant", "content": text}
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish_reason(answer.get("stop_reason")),
    }
    chat: dict[str, Any] = {
        "id": f"chatcmpl-{call.request_id}",
        "object": "chat.completion",
        "created": call.created_s,
        "model": call.public_model,
        "choices": [choice],
    }
    counts = usage_counts(answer.get("usage"))
    if counts is not None:
        chat["usage"] = openai_usage(counts)
    return chat, counts


def _json_object(engine: str, raw: bytes, what: str) -> dict[str, Any]:
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"upstream {engine} sent invalid JSON in {what}") from exc
    if not isinstance(decoded, dict):
        raise UpstreamError(f"upstream {engine} sent {what} that is not a JSON object")
    return decoded


class EventReader:
    """Anthropic's event stream (SSE) split into events: ``data:`` lines joined, each event
    dispatched at its blank line. The ``event:`` line is not needed: the data names its
    type."""

    def __init__(self, engine: str) -> None:
        self._engine = engine
        self._pending = b""
        self._data: list[bytes] = []
        self._data_bytes = 0

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        """The events completed by ``data``, one by one: a bad one raises when reached."""
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
                    yield _json_object(self._engine, b"\n".join(self._data), "an event")
                self._data, self._data_bytes = [], 0
            elif line.startswith(b"data:"):
                self._data.append(line[5:].lstrip(b" "))
                self._data_bytes += len(line)
                if self._data_bytes > LINE_BYTES_MAX:
                    raise UpstreamError(f"upstream {self._engine} sent an over-long event")
            elif not line.startswith((b":", b"event:", b"id:", b"retry:")):
                raise UpstreamError(f"upstream {self._engine} sent a malformed event stream")


class ChunkTranslator:
    """One Anthropic stream, event by event, as OpenAI ``chat.completion.chunk`` payloads;
    meters as it goes."""

    def __init__(self, call: EngineCall, engine: str) -> None:
        self._call = call
        self._engine = engine
        self._usage: dict[str, Any] = {}
        # The role chunk waits for the first text (or the stop), so that an error right
        # after message_start (Anthropic's "overloaded") comes before the first byte and
        # the request can still fail over.
        self._role_sent = False
        self.finished = False  # message_stop seen: nothing may follow

    def parts(self, event: dict[str, Any]) -> list[StreamPart]:
        kind = event.get("type")
        if self.finished:
            return []
        if kind == "message_start":
            return self._started(_object_in(event, "message", self._engine))
        if kind == "content_block_start":
            return self._text(_object_in(event, "content_block", self._engine))
        if kind == "content_block_delta":
            delta = _object_in(event, "delta", self._engine)
            return self._text(delta) if delta.get("type") == "text_delta" else []
        if kind == "message_delta":
            return self._stopped(event)
        if kind == "message_stop":
            self.finished = True
            counts = self._call.meter.reported
            return [] if counts is None else [StreamPart(self._usage_chunk(counts), True)]
        if kind == "error":
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            raise UpstreamError(f"upstream {self._engine} failed mid-stream: {message}"[:600])
        return []  # ping, content_block_stop, and event types added later

    def _started(self, message: dict[str, Any]) -> list[StreamPart]:
        self._take_usage(message.get("usage"))
        counts = usage_counts({"output_tokens": 0, **self._usage})
        if counts is not None:
            # The prompt is known exactly now; only the output of a cut stream is estimated.
            self._call.meter.prompt_tokens_estimate = counts.prompt_tokens
            self._call.meter.prompt_counter = None
        return []

    def _text(self, block: dict[str, Any]) -> list[StreamPart]:
        text = block.get("text")
        if not isinstance(text, str) or not text:
            return []  # a block that opens empty, or one that is not text (thinking, tools)
        meter = self._call.meter
        # Deltas carry several tokens: count their words, so a cut stream is billed fairly.
        meter.completion_tokens_estimate += count_text_tokens(text)
        if meter.first_token_at_ns is None:
            meter.first_token_at_ns = time.perf_counter_ns()
        return [*self._role(), StreamPart(self._chunk({"content": text}))]

    def _stopped(self, event: dict[str, Any]) -> list[StreamPart]:
        delta = _object_in(event, "delta", self._engine)
        self._take_usage(event.get("usage"))
        counts = usage_counts(self._usage)
        if counts is not None:
            self._call.meter.report(counts)  # totals, not increments: the last one wins
        return [*self._role(), StreamPart(self._chunk({}, finish_reason(delta.get("stop_reason"))))]

    def _role(self) -> list[StreamPart]:
        if self._role_sent:
            return []
        self._role_sent = True
        return [StreamPart(self._chunk({"role": "assistant", "content": ""}))]

    def _take_usage(self, usage: Any) -> None:
        """Keep the latest value of each usage field (message_delta's are cumulative)."""
        if isinstance(usage, dict):
            self._usage.update((k, v) for k, v in usage.items() if v is not None)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return orjson.dumps({**self._head(), "choices": [choice]})

    def _usage_chunk(self, counts: TokenCounts) -> bytes:
        return orjson.dumps({**self._head(), "choices": [], "usage": openai_usage(counts)})

    def _head(self) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{self._call.request_id}",
            "object": "chat.completion.chunk",
            "created": self._call.created_s,
            "model": self._call.public_model,
        }


def _object_in(event: dict[str, Any], name: str, engine: str) -> dict[str, Any]:
    found = event.get(name)
    if not isinstance(found, dict):
        raise UpstreamError(f"upstream {engine} sent a {event.get('type')} event without {name}")
    return found


__all__ = [
    "AnthropicBackend",
    "AnthropicSession",
    "ChunkTranslator",
    "EventReader",
    "chat_completion",
    "chunks_of_read",
    "conversation",
    "finish_reason",
    "messages_request",
    "usage_counts",
]
