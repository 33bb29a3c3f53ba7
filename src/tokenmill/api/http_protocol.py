"""The HTTP/1.1 connection as a stranger can use it: uvicorn's httptools protocol with the
bounds it lacks, each a field of ``Limits``.

httptools has no limit on a request head (a 64 MiB header was taken, and stalled the
process), uvicorn has no timeout for one (a client trickling header lines kept its socket
as long as it liked: the keep-alive timer restarts on every byte), and a connection that
never sends a byte was never closed. So:

* the request head (request line and headers) is at most ``header_bytes_max`` bytes and
  ``header_count_max`` headers: past either, 431 and the connection closes, having buffered
  at most one read beyond the bound;
* it must arrive whole within ``request_head_s_max`` of the connection opening, or of the
  first byte of the next request on a kept-alive connection, however it trickles: then 408
  (or a plain close if nothing came) ;
* an idle kept-alive connection closes after ``keep_alive_idle_s_max``;
* past ``connections_count_max`` connections or requests in flight, a request gets 503
  (uvicorn's ``limit_concurrency``).

The hot path is untouched: the checks are a counter per read and per header, and two timer
operations per request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tokenmill.api.error_json import error_body
from tokenmill.config import Limits
from tokenmill.errors import HeadersTooLarge, RequestTimeout, TokenmillError

REASONS = {431: b"Request Header Fields Too Large", 408: b"Request Timeout"}


def raw_error(error: TokenmillError) -> bytes:
    """A whole HTTP response for ``error`` that closes the connection (before any app)."""
    body = error_body(error)
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (error.http_status, REASONS[error.http_status]),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Set by ``protocol_for``: the bounds of one configuration."""

    header_bytes_max = 32 * 1024
    header_count_max = 100
    request_head_s_max = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # bytes read while a head was awaited or incomplete
        self._head_size = 0  # the current head's headers, as parsed (its URL is added last)
        self._head_count = 0
        self._in_head = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's, with the head's bounds: its own answers a parser error with a 400,
        # which would hide our 431 raised from a parser callback.
        self._unset_keepalive_if_required()
        if self._in_head or self.cycle is None or self.cycle.response_complete:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as wrapped:
            cause = wrapped.__context__
            if isinstance(cause, _Refusal):
                self._refuse(cause.error)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._head_bytes > self.header_bytes_max and (self._in_head or self.cycle is None):
            self._refuse(self._too_large())

    def _too_large(self) -> HeadersTooLarge:
        return HeadersTooLarge(
            f"The request head is larger than {self.header_bytes_max} bytes or"
            f" {self.header_count_max} headers."
        )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_size = self._head_count = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_count += 1
        self._head_size += len(name) + len(value) + 4
        if self._head_count > self.header_count_max or self._head_size > self.header_bytes_max:
            raise _Refusal(self._too_large())
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        self._head_bytes = 0
        if self._head_size + len(self.url) > self.header_bytes_max:
            raise _Refusal(self._too_large())
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request's head is awaited from its first byte (``on_message_begin``);
        # until then the keep-alive timer bounds the idle connection.
        self._head_bytes = 0

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.request_head_s_max, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._in_head or self._head_bytes:
            message = f"The request head did not arrive within {self.request_head_s_max:g} s."
            self._refuse(RequestTimeout(message))
        else:
            self.transport.close()

    def _refuse(self, error: TokenmillError) -> None:
        self._disarm_head_timer()
        if not self.transport.is_closing():
            self.transport.write(raw_error(error))
            self.transport.close()


class _Refusal(Exception):
    """A bound broken inside a parser callback (httptools wraps it; data_received unwraps)."""

    def __init__(self, error: TokenmillError) -> None:
        super().__init__(error.message)
        self.error = error


def protocol_for(limits: Limits) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for ``limits`` (uvicorn makes one instance per connection)."""
    return type(
        "ConfiguredHttpToolsProtocol",
        (BoundedHttpToolsProtocol,),
        {
            "header_bytes_max": limits.header_bytes_max,
            "header_count_max": limits.header_count_max,
            "request_head_s_max": limits.request_head_s_max,
        },
    )


def server_options(limits: Limits) -> dict[str, Any]:
    """The uvicorn options that bound connections, for ``tokenmill serve`` and the tests."""
    return {
        "http": protocol_for(limits),
        "timeout_keep_alive": limits.keep_alive_idle_s_max,
        "limit_concurrency": limits.connections_count_max,
    }
