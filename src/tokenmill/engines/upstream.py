"""The HTTP side every remote engine shares: one connection pool per upstream
(``http_client.HttpPool``: its credential, connect and read timeouts, a bounded pool), and
the mapping of what fails on the wire (statuses, timeouts, dropped connections,
``Retry-After``) to tokenmill's errors, once, where they enter."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from tokenmill.config import AnthropicEngineConfig, Limits, OpenAIEngineConfig
from tokenmill.engines.http_client import (
    BadResponse,
    ConnectFailed,
    ConnectionClosed,
    HttpFailure,
    HttpPool,
    Response,
)
from tokenmill.errors import (
    InvalidRequest,
    RateLimited,
    TokenmillError,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)

ERROR_BODY_BYTES_MAX = 64 * 1024
# An idle pooled connection is dropped before the server drops it: uvicorn (vLLM, SGLang)
# closes idle keep-alive connections after 5 s, and a request sent on a connection the server
# is closing at that moment fails before its first byte.
KEEPALIVE_S = 3.0
LINE_BYTES_MAX = 4 * 1024 * 1024


class UpstreamSession:
    """The pooled HTTP client of one upstream (shared by its deployments): explicit connect
    and read timeouts, a bounded pool, and the upstream's own headers (its credential)."""

    def __init__(
        self,
        name: str,
        config: OpenAIEngineConfig | AnthropicEngineConfig,
        limits: Limits,
        api_key: str | None,
    ):
        self.name = name
        self.base_url = config.base_url.rstrip("/")
        connect_s = config.timeout_s_connect or limits.timeout_s_connect
        headers = {"Content-Type": "application/json", **self.credential_headers(api_key)}
        self.pool = HttpPool(
            self.base_url,
            headers,
            connect_timeout_s=connect_s,
            read_timeout_s=config.timeout_s_read or limits.timeout_s_read,
            connections_max=config.connections_max or limits.upstream_connections_max,
            keepalive_s=KEEPALIVE_S,
        )
        # A health check waits for a connection and an answer, not for a generation.
        self.health_timeout_s = 2 * connect_s

    def credential_headers(self, api_key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def check_health(self, path: str) -> bool:
        """Whether the upstream answers at all: a GET of ``path`` gets any status below 500
        in time (a server without that route still answers 404: it is up)."""
        try:
            exchange = self.pool.request("GET", path, timeout_s=self.health_timeout_s)
            async with exchange as response:
                await response.read(ERROR_BODY_BYTES_MAX)
                return response.status < 500
        except HttpFailure:
            return False

    async def aclose(self) -> None:
        await self.pool.aclose()


async def status_error(engine: str, response: Response) -> TokenmillError:
    body = await response.read(ERROR_BODY_BYTES_MAX)
    message = body.decode("utf-8", "replace")[:500]
    try:
        decoded = orjson.loads(body)
        if isinstance(decoded, dict) and isinstance(decoded.get("error"), dict):
            message = str(decoded["error"].get("message", message))[:500]
        elif isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
            message = decoded["error"][:500]
    except orjson.JSONDecodeError:
        pass
    status = response.status
    if status in (400, 413, 422):
        return InvalidRequest(f"upstream {engine} rejected the request: {message}")
    wait_s = retry_after_s(response.headers)
    if status == 429:
        return RateLimited(f"upstream {engine} is rate limiting: {message}", retry_after_s=wait_s)
    if status in (503, 529):
        return Unavailable(
            f"upstream {engine} is unavailable ({status}): {message}", retry_after_s=wait_s
        )
    return UpstreamError(f"upstream {engine} answered {status}: {message}")


RETRY_AFTER_S_MAX = 3600  # an upstream asking for longer is heeded for an hour


def retry_after_s(headers: Mapping[str, str]) -> int | None:
    """An upstream's ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), in
    whole seconds rounded up and at most ``RETRY_AFTER_S_MAX``; None when absent or
    unreadable."""
    millis = _whole_number(headers.get("retry-after-ms"))
    if millis is not None:
        return min(RETRY_AFTER_S_MAX, -(-millis // 1000))
    text = headers.get("retry-after")
    if text is None:
        return None
    seconds = _whole_number(text)
    if seconds is not None:
        return min(RETRY_AFTER_S_MAX, seconds)
    try:
        when = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    wait = math.ceil((when - datetime.now(UTC)).total_seconds())
    return min(RETRY_AFTER_S_MAX, max(0, wait))


def _whole_number(text: str | None) -> int | None:
    """ASCII digits as an int, capped (an absurdly long number is just very long)."""
    if text is None:
        return None
    text = text.strip()
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text) if len(text) <= 12 else 10**12


@contextmanager
def mapped_errors(engine: str) -> Iterator[None]:
    """Map the HTTP client's failures to ours, once, where they enter."""
    try:
        yield
    except TimeoutError as exc:  # TimedOut is one
        raise UpstreamTimeout(f"upstream {engine} timed out") from exc
    except ConnectFailed as exc:
        raise Unavailable(f"upstream {engine} is unreachable") from exc
    except ConnectionClosed as exc:
        raise UpstreamError(f"upstream {engine} closed the connection mid-answer") from exc
    except BadResponse as exc:
        raise UpstreamError(f"upstream {engine} failed: {exc}") from exc
    except ValueError as exc:  # what the engine made of a body it could not read
        raise UpstreamError(f"upstream {engine} failed: {exc.__class__.__name__}") from exc


SSE_OTHER_FIELDS = (b":", b"event:", b"id:", b"retry:")


class DataPayloads:
    """An OpenAI-style event stream (``data:`` lines, ending with ``data: [DONE]``) split
    into its payloads as reads arrive; comments and other fields are skipped, what follows
    ``[DONE]`` is ignored, a line longer than ``LINE_BYTES_MAX`` or one that is no field
    raises UpstreamError."""

    def __init__(self, engine: str) -> None:
        self._engine = engine
        self._pending = b""
        self.done = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The payloads ``data`` completes, one by one: a bad line raises when reached, so
        what came before it is still had."""
        if self.done:
            return
        pending = self._pending + data if self._pending else data
        cut = pending.rfind(b"\n")
        if cut < 0:
            if len(pending) > LINE_BYTES_MAX:
                raise UpstreamError(f"upstream {self._engine} sent an over-long event")
            self._pending = pending
            return
        lines, self._pending = pending[:cut].split(b"\n"), pending[cut + 1 :]
        for raw_line in lines:
            line = raw_line.strip()
            if not line or line.startswith(SSE_OTHER_FIELDS):
                continue
            if not line.startswith(b"data:"):
                raise UpstreamError(f"upstream {self._engine} sent a malformed event stream")
            payload = line[5:].lstrip()
            if payload == b"[DONE]":
                self.done = True
                return
            yield payload


def json_object(raw: bytes, engine: str, what: str) -> dict[str, Any]:
    """``raw`` as a JSON object; UpstreamError naming ``what`` if it is not one."""
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"upstream {engine} sent invalid JSON in {what}") from exc
    if not isinstance(decoded, dict):
        raise UpstreamError(f"upstream {engine} sent {what} that is not a JSON object")
    return decoded


__all__ = [
    "LINE_BYTES_MAX",
    "DataPayloads",
    "UpstreamSession",
    "json_object",
    "mapped_errors",
    "retry_after_s",
    "status_error",
]
