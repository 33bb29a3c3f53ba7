"""The ``openai`` engine's translating path: calls of surfaces other than chat (Anthropic
Messages, OpenAI Responses) served over the upstream's chat completions.

This module is the I/O shell, beside ``openai_compat`` (whose pooled session and error
mapping it uses): the POST to ``/chat/completions`` and the framing of the event stream. The
translations are pure, in ``chat_translate``. Answers are neutral (``Answer``, batches of
deltas, one batch per network read): the surface renders them in its own shape.

A request that cannot be translated is refused before anything goes up. The meter gets the
upstream's usage when there is one, and local counts always: the prompt counted from the
neutral call only if no usage comes, the output from what was produced.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson

from tokenmill.engines.base import EngineCall, StreamPart
from tokenmill.engines.chat_translate import (
    ChatChunkTranslator,
    chat_answer,
    chat_logprobs,
    chat_request,
)
from tokenmill.engines.upstream import (
    DataPayloads,
    UpstreamSession,
    json_object,
    mapped_errors,
    status_error,
)
from tokenmill.errors import UpstreamError
from tokenmill.neutral import Answer, Delta, completion_tokens_estimate, prompt_tokens_estimate
from tokenmill.usage import parse_usage


class ChatEventReader:
    """A chat completions event stream as its events, each a JSON object, until
    ``[DONE]``."""

    def __init__(self, engine: str) -> None:
        self._engine = engine
        self._payloads = DataPayloads(engine)

    @property
    def done(self) -> bool:
        return self._payloads.done

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        """The events completed by ``data``, one by one: a bad one raises when reached."""
        for payload in self._payloads.feed(data):
            yield json_object(payload, self._engine, "a stream event")


class TranslatedChat:
    """Neutral calls over one upstream's ``/chat/completions`` (``path``), as ``model``."""

    def __init__(self, engine: str, model: str, upstream: UpstreamSession, path: str) -> None:
        self._engine = engine
        self._model = model
        self._upstream = upstream
        self._path = path

    def _body(self, call: EngineCall) -> bytes:
        """The chat request; refuses (before any I/O) what cannot be translated."""
        neutral = call.call
        request = chat_request(
            neutral, call.output_tokens_max, self._model, self._engine, stream=call.stream
        )
        call.meter.prompt_counter = lambda: prompt_tokens_estimate(neutral)
        return orjson.dumps(request)

    async def complete(self, call: EngineCall) -> Answer:
        body = self._body(call)
        with mapped_errors(self._engine):
            async with self._upstream.pool.post(self._path, body) as response:
                if response.status != 200:
                    raise await status_error(self._engine, response)
                raw = await response.read()
        answer = json_object(raw, self._engine, "an answer")
        call.meter.first_token_at_ns = time.perf_counter_ns()
        parts, finish = chat_answer(answer, self._engine)
        reported = parse_usage(answer.get("usage"))
        if reported is not None:
            call.meter.report(reported)
        else:
            call.meter.completion_tokens_estimate = completion_tokens_estimate(parts)
        counts, _ = call.meter.counts()
        logprobs = None
        if call.call.logprobs:
            logprobs = chat_logprobs(answer["choices"][0], self._engine)
        fingerprint = answer.get("system_fingerprint")
        fingerprint = fingerprint if isinstance(fingerprint, str) else None
        return Answer(parts, finish, counts, logprobs, fingerprint)

    async def stream(self, call: EngineCall) -> AsyncIterator[list[StreamPart]]:
        body = self._body(call)
        reader = ChatEventReader(self._engine)
        translator = ChatChunkTranslator(
            call.meter, self._engine, time.perf_counter_ns, logprobs=call.call.logprobs
        )
        with mapped_errors(self._engine):
            async with self._upstream.pool.post(self._path, body) as response:
                if response.status != 200:
                    raise await status_error(self._engine, response)
                async for data in response.chunks():
                    # What arrived together goes on together: one batch per read.
                    deltas, failure = deltas_of_read(reader, translator, data)
                    if deltas:
                        batch: list[StreamPart] = [*deltas]
                        yield batch
                    if failure is not None:
                        raise failure
                    if reader.done:
                        return
        raise UpstreamError(f"upstream {self._engine} closed the stream before [DONE]")


def deltas_of_read(
    reader: ChatEventReader, translator: ChatChunkTranslator, data: bytes
) -> tuple[list[Delta], UpstreamError | None]:
    """The deltas of the events in ``data`` (with the finish and usage when it holds
    ``[DONE]``), and the failure that ended them if one did: what came before a bad event
    still reaches the client (and was metered as relayed)."""
    deltas: list[Delta] = []
    try:
        for chunk in reader.feed(data):
            deltas.extend(translator.deltas(chunk))
    except UpstreamError as failure:
        return deltas, failure
    if reader.done:
        deltas.extend(translator.end())
    return deltas, None


__all__ = ["ChatEventReader", "TranslatedChat", "deltas_of_read"]
