"""Surfaces: one adapter per wire API, pure (no I/O).

A surface parses its wire request into a ``NeutralCall`` and makes the renderer that turns
what an engine answers (wire bytes passed through, or neutral answers and deltas) into its
own bodies and events. The request path is the same for every surface; only the adapter
differs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tokenmill.config import Limits, ModelConfig
from tokenmill.errors import TokenmillError
from tokenmill.neutral import Completed, NeutralCall, StreamPart, Surface, WirePart
from tokenmill.surfaces.chat_render import ChatRenderer
from tokenmill.surfaces.chat_request import parse_chat
from tokenmill.surfaces.completions import CompletionRenderer, parse_completion
from tokenmill.surfaces.embeddings import EmbeddingsRenderer, parse_embedding
from tokenmill.surfaces.messages_render import ANTHROPIC_WIRE, MessagesRenderer
from tokenmill.surfaces.messages_request import parse_messages
from tokenmill.surfaces.openai_fields import ModelAccess, decode_json
from tokenmill.surfaces.responses_items import KeptResponse
from tokenmill.surfaces.responses_render import RESPONSES_WIRE, ResponsesRenderer, keep_response
from tokenmill.surfaces.responses_request import parse_responses
from tokenmill.surfaces.wire import OPENAI_WIRE, WireShape
from tokenmill.usage import TokenCounts


class Parser(Protocol):
    def __call__(
        self,
        body: dict[str, Any],
        models: dict[str, ModelConfig],
        limits: Limits,
        *,
        may_use: ModelAccess | None = None,
        body_bytes: int | None = None,
        prior: tuple[dict[str, Any], ...] = (),
    ) -> NeutralCall:
        """``prior``: the stored context a request continues (OpenAI Responses'
        ``previous_response_id``), as that surface's items; other surfaces get none."""


class Renderer(Protocol):
    """One request's rendering, made by the surface for the request path."""

    def body(self, completed: Completed) -> bytes:
        """The body of a non-streamed answer (an engine's own bytes pass as they are)."""

    def parts(self, parts: list[StreamPart]) -> list[WirePart]:
        """A batch of the engine's parts as the surface's events (wire parts as they are)."""

    def usage(self, counts: TokenCounts) -> WirePart:
        """A usage event where the client asked for one and the engine sent none."""

    def end(self, counts: TokenCounts) -> bytes:
        """The framed last events of a stream that ended well, sent once its usage
        (``counts``) is committed: OpenAI's ``[DONE]``, Anthropic's ``message_stop``."""

    def fail(self, error: TokenmillError) -> bytes:
        """The framed event of an error after the stream began."""


Keeper = Callable[[Renderer, TokenCounts], KeptResponse | None]  # what of a request is stored


@dataclass(frozen=True)
class SurfaceAdapter:
    name: Surface
    parse: Parser
    renderer: Callable[[NeutralCall, str, int], Renderer]  # (call, request id, created s)
    wire: WireShape  # its errors and event framing
    keeper: Keeper | None = None  # what of a finished request it keeps; None: nothing


SURFACES: dict[Surface, SurfaceAdapter] = {
    "chat": SurfaceAdapter("chat", parse_chat, ChatRenderer, OPENAI_WIRE),
    "completions": SurfaceAdapter("completions", parse_completion, CompletionRenderer, OPENAI_WIRE),
    "embeddings": SurfaceAdapter("embeddings", parse_embedding, EmbeddingsRenderer, OPENAI_WIRE),
    "messages": SurfaceAdapter("messages", parse_messages, MessagesRenderer, ANTHROPIC_WIRE),
    "responses": SurfaceAdapter(
        "responses", parse_responses, ResponsesRenderer, RESPONSES_WIRE, keep_response
    ),
}

__all__ = [
    "SURFACES",
    "KeptResponse",
    "Parser",
    "Renderer",
    "SurfaceAdapter",
    "WireShape",
    "decode_json",
]
