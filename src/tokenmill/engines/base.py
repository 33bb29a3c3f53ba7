"""The contract between the request path and whatever produces tokens.

A ``Backend`` serves one deployment. It gets an ``EngineCall``: the neutral call (with the
client's original body) and what the request path decided for this attempt (the output
cap the funds allow, the request id, a fresh meter). Where the engine speaks the surface's
own API it answers wire bytes: a non-streamed body, or batches of ``WirePart`` (SSE
payloads, never ``[DONE]``: the gateway sends that itself once the usage is committed).
Otherwise it answers in the neutral language (``Answer``, ``EmbeddingsAnswer``, batches of
deltas) and the surface renders it. A batch is what arrived together; the gateway relays
it in one write. Either way the engine fills ``call.meter``: reported usage when it has it,
local estimates always. Errors are ``TokenmillError``s (``UpstreamError``,
``UpstreamTimeout``, ``Unavailable``, ``InvalidRequest`` naming the field an engine cannot
honour, ...), mapped where a foreign exception enters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from tokenmill.neutral import Completed, NeutralCall, StreamPart, Surface, WirePart
from tokenmill.usage import Meter

Endpoint = Surface  # the OpenAI endpoints are the first surfaces


@dataclass
class EngineCall:
    request_id: str
    call: NeutralCall
    output_tokens_max: int | None  # the cap to send upstream (lowered to the funds); None: none
    created_s: int
    meter: Meter = field(default_factory=Meter)

    @property
    def endpoint(self) -> Surface:
        return self.call.surface

    @property
    def public_model(self) -> str:
        return self.call.model

    @property
    def body(self) -> dict[str, Any]:
        return self.call.body

    @property
    def stream(self) -> bool:
        return self.call.stream

    @property
    def stop(self) -> tuple[str, ...]:
        return self.call.stop


class Backend(Protocol):
    deployment: str
    engine: str
    kind: str  # "sim" | "openai" | "anthropic"
    simulated: bool

    async def complete(self, call: EngineCall) -> Completed: ...

    def stream(self, call: EngineCall) -> AsyncIterator[list[StreamPart]]: ...

    async def aclose(self) -> None: ...


__all__ = ["Backend", "Completed", "Endpoint", "EngineCall", "StreamPart", "WirePart"]
