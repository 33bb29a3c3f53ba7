"""How a surface writes what is not an answer (pure): its errors as a body (and the HTTP
status it gives each), and the framing of its stream events. The request path asks the
surface for these bytes, so it knows no wire format of its own. The end of a stream and an
error inside one are the renderer's (``Renderer.end``, ``Renderer.fail``): some surfaces'
last event carries the whole answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson

from tokenmill.errors import TokenmillError
from tokenmill.neutral import WirePart
from tokenmill.usage import TokenCounts


@dataclass(frozen=True)
class WireShape:
    error_body: Callable[[TokenmillError], bytes]  # the body of an error answer
    frame: Callable[[WirePart], bytes]  # one stream event, framed
    status: Callable[[TokenmillError], int] = lambda error: error.http_status


def openai_error_body(error: TokenmillError) -> bytes:
    """OpenAI's ``{"error": {"message", "type", "param", "code"}}``."""
    return orjson.dumps(error.to_body())


def openai_frame(part: WirePart) -> bytes:
    return b"data: " + part.payload + b"\n\n"


def openai_error_event(error: TokenmillError) -> bytes:
    return b"data: " + openai_error_body(error) + b"\n\n"


def framed(part: WirePart) -> bytes:
    """A surface whose renderer frames its own events (``event:`` and ``data:`` lines)."""
    return part.payload


OPENAI_DONE = b"data: [DONE]\n\n"


class OpenAIStreamEnds:
    """The end of an OpenAI stream: ``[DONE]`` after a good one, an error event otherwise."""

    def end(self, counts: TokenCounts) -> bytes:
        return OPENAI_DONE

    def fail(self, error: TokenmillError) -> bytes:
        return openai_error_event(error)


OPENAI_WIRE = WireShape(openai_error_body, openai_frame)
