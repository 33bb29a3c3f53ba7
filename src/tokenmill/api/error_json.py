"""Rendering errors in OpenAI's shape, and the small raw-ASGI senders of the hot path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from tokenmill.errors import TokenmillError

# The ASGI types (as the ASGI spec and Starlette define them), here so that the hot path
# needs no web framework.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

__all__ = ["Message", "Receive", "Scope", "Send"]

JSON_TYPE = (b"content-type", b"application/json")
SSE_TYPE = (b"content-type", b"text/event-stream; charset=utf-8")


def error_body(error: TokenmillError) -> bytes:
    return orjson.dumps(error.to_body())


def headers_for(request_id: str | None, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """Response headers; ``request_id`` None where the caller's sender adds it."""
    stamp = [] if request_id is None else [(b"x-request-id", request_id.encode())]
    return [*stamp, *extra]


async def send_bytes(
    send: Send, status: int, body: bytes, request_id: str | None, *extra: tuple[bytes, bytes]
) -> None:
    headers = headers_for(request_id, JSON_TYPE, (b"content-length", str(len(body)).encode()))
    headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(
    send: Send,
    error: TokenmillError,
    request_id: str | None,
    *headers: tuple[bytes, bytes],
    body: bytes | None = None,
    status: int | None = None,
) -> None:
    """An error answer: ``body`` and ``status`` in the caller's surface's shape, OpenAI's
    by default."""
    extra = list(headers)
    if error.retry_after_s is not None:
        extra.append((b"retry-after", str(error.retry_after_s).encode()))
    code = status or error.http_status
    await send_bytes(send, code, body or error_body(error), request_id, *extra)


def sse_event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
