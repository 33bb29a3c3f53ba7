"""How a surface writes what is not an answer (pure): its errors, as a body and as a stream
event, the framing of its stream events, and the end of a stream. The request path asks
the surface for these bytes, so it knows no wire format of its own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson

from tokenmill.errors import TokenmillError
from tokenmill.neutral import WirePart


@dataclass(frozen=True)
class WireShape:
    error_body: Callable[[TokenmillError], bytes]  # the body of an error answer
    error_event: Callable[[TokenmillError], bytes]  # an error after the stream has begun
    frame: Callable[[WirePart], bytes]  # one stream event, framed
    done: bytes  # the end of a stream that ended well


def openai_error_body(error: TokenmillError) -> bytes:
    """OpenAI's ``{"error": {"message", "type", "param", "code"}}``."""
    return orjson.dumps(error.to_body())


def openai_frame(part: WirePart) -> bytes:
    return b"data: " + part.payload + b"\n\n"


def openai_error_event(error: TokenmillError) -> bytes:
    return b"data: " + openai_error_body(error) + b"\n\n"


OPENAI_WIRE = WireShape(openai_error_body, openai_error_event, openai_frame, b"data: [DONE]\n\n")
