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
from tokenmill.neutral import Completed, NeutralCall, StreamPart, Surface, WirePart
from tokenmill.surfaces.chat_render import ChatRenderer
from tokenmill.surfaces.chat_request import parse_chat
from tokenmill.surfaces.completions import CompletionRenderer, parse_completion
from tokenmill.surfaces.embeddings import EmbeddingsRenderer, parse_embedding
from tokenmill.surfaces.openai_fields import ModelAccess, decode_json
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
    ) -> NeutralCall: ...


class Renderer(Protocol):
    def body(self, completed: Completed) -> bytes: ...

    def parts(self, parts: list[StreamPart]) -> list[WirePart]: ...

    def usage(self, counts: TokenCounts) -> WirePart: ...


@dataclass(frozen=True)
class SurfaceAdapter:
    name: Surface
    parse: Parser
    renderer: Callable[[NeutralCall, str, int], Renderer]  # (call, request id, created s)
    wire: WireShape  # its errors, event framing and end of stream


SURFACES: dict[Surface, SurfaceAdapter] = {
    "chat": SurfaceAdapter("chat", parse_chat, ChatRenderer, OPENAI_WIRE),
    "completions": SurfaceAdapter("completions", parse_completion, CompletionRenderer, OPENAI_WIRE),
    "embeddings": SurfaceAdapter("embeddings", parse_embedding, EmbeddingsRenderer, OPENAI_WIRE),
}

__all__ = ["SURFACES", "Parser", "Renderer", "SurfaceAdapter", "WireShape", "decode_json"]
