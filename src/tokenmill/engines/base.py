"""The contract between the request path and whatever produces tokens.

A ``Backend`` serves one deployment. It answers a non-streamed call with the body bytes of
an OpenAI response, or a streamed call with batches of SSE payloads (the bytes after
``data: ``, never ``[DONE]``: the gateway sends that itself once the usage is committed); a
batch is what arrived together, and the gateway relays it in one write. Either way it fills
``call.meter``: reported usage when it has it, local estimates always. Errors are
``TokenmillError``s (``UpstreamError``, ``UpstreamTimeout``, ``Unavailable``, ...), mapped
where a foreign exception enters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tokenmill.usage import Meter

Endpoint = Literal["chat", "completions", "embeddings"]


@dataclass
class EngineCall:
    request_id: str
    endpoint: Endpoint
    public_model: str
    body: dict[str, Any]  # the client's validated JSON, unknown fields included
    stream: bool
    output_tokens_max: int | None  # the cap to send upstream; None for embeddings
    stop: tuple[str, ...]
    created_s: int
    meter: Meter = field(default_factory=Meter)


@dataclass(frozen=True)
class StreamPart:
    """One SSE payload; ``usage_only`` marks a ``choices: []`` usage chunk."""

    payload: bytes
    usage_only: bool = False


class Backend(Protocol):
    deployment: str
    engine: str
    kind: str  # "sim" | "openai"
    simulated: bool

    async def complete(self, call: EngineCall) -> bytes: ...

    def stream(self, call: EngineCall) -> AsyncIterator[list[StreamPart]]: ...

    async def aclose(self) -> None: ...
