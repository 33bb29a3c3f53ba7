"""The ``anthropic`` engine: neutral calls served by an Anthropic Messages API.

This module is the I/O shell: the pooled session (Anthropic's key and version headers), the
POST, and the mapping of HTTP and connection failures, shared with the ``openai`` engine in
one place (``openai_compat``). The translations are pure and live beside it: the request
in ``anthropic_messages`` (with its blocks in ``anthropic_blocks``), the answer in
``anthropic_answers``, the event stream in ``anthropic_stream``. Answers are neutral
(``Answer``, batches of deltas): the surface renders them in its own shape.

A request that cannot be translated is refused before anything goes up. The meter gets
the upstream's usage when there is one, and local counts always: the prompt counted from the
neutral call only if no usage comes, the output from the text produced.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import orjson
from yarl import URL

from tokenmill.config import AnthropicEngineConfig, DeploymentConfig, Limits
from tokenmill.engines.anthropic_answers import (
    answer_parts,
    completion_tokens_estimate,
    json_object,
    reasoning_text,
    usage_counts,
)
from tokenmill.engines.anthropic_messages import (
    json_tool_name,
    messages_request,
)
from tokenmill.engines.anthropic_stream import EventReader, StreamTranslator, deltas_of_read
from tokenmill.engines.base import EngineCall, StreamPart
from tokenmill.engines.openai_compat import UpstreamSession, mapped_errors, status_error
from tokenmill.errors import UpstreamError
from tokenmill.neutral import Answer, prompt_tokens_estimate
from tokenmill.usage import count_text_tokens

MESSAGES_PATH = "/v1/messages"
MODELS_PATH = "/v1/models"


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
        neutral = call.call
        request = messages_request(neutral, call.output_tokens_max, self._model, self.engine)
        call.meter.prompt_counter = lambda: prompt_tokens_estimate(neutral)
        return orjson.dumps(request)

    async def complete(self, call: EngineCall) -> Answer:
        body = self._body(call)
        with mapped_errors(self.engine):
            async with self._session.session().post(self._session.url, data=body) as response:
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
        counts, _ = call.meter.counts()
        return Answer(parts, finish, counts)

    async def stream(self, call: EngineCall) -> AsyncIterator[list[StreamPart]]:
        body = self._body(call)
        reader = EventReader(self.engine)
        json_tool = json_tool_name(call.call.output_format)
        translator = StreamTranslator(call.meter, self.engine, time.perf_counter_ns, json_tool)
        with mapped_errors(self.engine):
            async with self._session.session().post(self._session.url, data=body) as response:
                if response.status != 200:
                    raise await status_error(self.engine, response)
                async for data in response.content.iter_any():
                    # What arrived together goes on together: one batch per read.
                    deltas, failure = deltas_of_read(reader, translator, data)
                    if deltas:
                        batch: list[StreamPart] = [*deltas]
                        yield batch
                    if failure is not None:
                        raise failure
                    if translator.finished:
                        return
        raise UpstreamError(f"upstream {self.engine} closed the stream before message_stop")


__all__ = ["AnthropicBackend", "AnthropicSession"]
