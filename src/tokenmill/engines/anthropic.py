"""The ``anthropic`` engine: neutral calls served by an Anthropic Messages API.

This module is the I/O shell: the pooled session (Anthropic's key and version headers), the
POST, and the mapping of HTTP and connection failures, shared with the ``openai`` engine in
one place (``openai_compat``). The translations are pure and live beside it: the request
in ``anthropic_messages`` (with its blocks in ``anthropic_blocks``), the answer in
``anthropic_answers``, the event stream in ``anthropic_stream``. Answers are neutral
(``Answer``, batches of deltas): the surface renders them in its own shape.

A call made on the Messages surface itself is relayed natively: the client's body goes up
with only the model and ``max_tokens`` (the cap the funds allow) changed, and the answer or
the events come back as they arrived (``WirePart``: each event's own bytes), metered on the
way through; ``message_stop`` is the gateway's to send, once the usage is committed.

A request that cannot be translated is refused before anything goes up. The meter gets
the upstream's usage when there is one, and local counts always: the prompt counted from the
neutral call only if no usage comes, the output from the text produced.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import orjson

from tokenmill.config import AnthropicEngineConfig, DeploymentConfig, Limits
from tokenmill.engines.anthropic_answers import (
    answer_parts,
    reasoning_text,
    usage_counts,
)
from tokenmill.engines.anthropic_messages import (
    json_tool_name,
    messages_request,
)
from tokenmill.engines.anthropic_stream import EventReader, StreamTranslator, deltas_of_read
from tokenmill.engines.base import EngineCall, StreamPart
from tokenmill.engines.upstream import UpstreamSession, json_object, mapped_errors, status_error
from tokenmill.errors import UpstreamError
from tokenmill.neutral import (
    Answer,
    WirePart,
    completion_tokens_estimate,
    prompt_tokens_estimate,
)
from tokenmill.usage import count_text_tokens

MESSAGES_PATH = "/v1/messages"
NATIVE_SURFACE = "messages"  # a call on this surface is relayed, not translated
MODELS_PATH = "/v1/models"


class AnthropicSession(UpstreamSession):
    """The pooled HTTP client of one Anthropic endpoint (shared by its deployments)."""

    def __init__(
        self, name: str, config: AnthropicEngineConfig, limits: Limits, api_key: str | None
    ):
        self._version = config.anthropic_version
        super().__init__(name, config, limits, api_key)

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
        return await self._session.check_health(MODELS_PATH)

    def _body(self, call: EngineCall) -> bytes:
        """The Messages request; refuses (before any I/O) what cannot be translated."""
        neutral = call.call
        call.meter.prompt_counter = lambda: prompt_tokens_estimate(neutral)
        if neutral.surface == NATIVE_SURFACE:
            body = dict(neutral.body)
            body["model"] = self._model
            body["max_tokens"] = call.output_tokens_max
            return orjson.dumps(body)
        request = messages_request(neutral, call.output_tokens_max, self._model, self.engine)
        return orjson.dumps(request)

    async def complete(self, call: EngineCall) -> Answer | bytes:
        body = self._body(call)
        with mapped_errors(self.engine):
            async with self._session.pool.post(MESSAGES_PATH, body) as response:
                if response.status != 200:
                    raise await status_error(self.engine, response)
                raw = await response.read()
        message = json_object(raw, self.engine, "an answer")
        call.meter.first_token_at_ns = time.perf_counter_ns()
        parts, finish = answer_parts(message, self.engine, json_tool_name(call.call.output_format))
        reasoning_tokens = count_text_tokens(reasoning_text(parts))
        reported = usage_counts(message.get("usage"), reasoning_tokens)
        if reported is not None:
            call.meter.report(reported)
        else:
            call.meter.completion_tokens_estimate = completion_tokens_estimate(parts)
        if call.call.surface == NATIVE_SURFACE:
            return raw  # the upstream's own answer, as it came
        counts, _ = call.meter.counts()
        return Answer(parts, finish, counts)

    async def stream(self, call: EngineCall) -> AsyncIterator[list[StreamPart]]:
        body = self._body(call)
        reader = EventReader(self.engine)
        json_tool = json_tool_name(call.call.output_format)
        translator = StreamTranslator(call.meter, self.engine, time.perf_counter_ns, json_tool)
        native = call.call.surface == NATIVE_SURFACE
        held: list[StreamPart] = []  # native events before the first token (failover room)
        with mapped_errors(self.engine):
            async with self._session.pool.post(MESSAGES_PATH, body) as response:
                if response.status != 200:
                    raise await status_error(self.engine, response)
                async for data in response.chunks():
                    # What arrived together goes on together: one batch per read.
                    if native:
                        failure = relayed_events(reader, translator, data, held)
                        if held and call.meter.first_token_at_ns is not None:
                            batch, held = held, []
                            yield batch
                    else:
                        deltas, failure = deltas_of_read(reader, translator, data)
                        if deltas:
                            yield [*deltas]
                    if failure is not None:
                        raise failure
                    if translator.finished:
                        if held:
                            yield held
                        return
        raise UpstreamError(f"upstream {self.engine} closed the stream before message_stop")


def relayed_events(
    reader: EventReader, translator: StreamTranslator, data: bytes, out: list[StreamPart]
) -> UpstreamError | None:
    """The events in ``data`` as they came, metered, appended to ``out``; ``message_stop``
    is kept back (the gateway ends the stream). The failure that ended them, if one did."""
    try:
        for event, framed in reader.feed_framed(data):
            translator.deltas(event)  # meters; raises on an error event
            if translator.finished:
                return None
            out.append(WirePart(framed))
    except UpstreamError as failure:
        return failure
    return None


__all__ = ["AnthropicBackend", "AnthropicSession"]
