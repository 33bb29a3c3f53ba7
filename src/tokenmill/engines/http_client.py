"""A lean pooled HTTP/1.1 client for upstreams, on asyncio protocols with httptools' parser.

It does what an engine needs and nothing more, because every relayed token goes through
it: POST a JSON body on a kept-alive connection, read the status and headers, then the
body whole or as it arrives (everything buffered since the last read comes as one piece,
so what arrived together goes on together). The request head is built once per pool; a
response is parsed by httptools (llhttp, in C) straight from the socket's callbacks, with
no per-request streams or tasks, and one read-timeout timer per connection, not per read.

Bounds: connect and read timeouts (a read timeout is the longest gap between two arrivals,
as for a socket), the number of connections, how long an idle connection is kept (below
the 5 s after which uvicorn-based servers close idle ones), the size of a response head,
of a whole body read at once, and of what is buffered while the reader is slow (reading
from the socket pauses meanwhile). A connection is reused only after a response was read
to its end and the server keeps it alive.

Failures are this module's own (``HttpFailure`` and its kinds); the engine edge maps them
to tokenmill's errors (``engines/upstream.py``)::

    HttpFailure
     +-- ConnectFailed      no connection (refused, unreachable, TLS handshake failed)
     +-- TimedOut           no connection or no data in time (also a TimeoutError)
     +-- ConnectionClosed   the server closed the connection before the answer ended
     +-- BadResponse        not HTTP/1.1 as it should be, or over a bound
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from urllib.parse import urlsplit

import httptools

HEAD_BYTES_MAX = 64 * 1024  # a response's status line and headers
BODY_BYTES_MAX = 256 * 1024 * 1024  # a body read whole (a large embeddings answer fits)
BUFFERED_BYTES_MAX = 1024 * 1024  # unread body before reading from the socket pauses


class HttpFailure(Exception):
    """An exchange with an upstream that did not complete."""


class ConnectFailed(HttpFailure):
    pass


class TimedOut(HttpFailure, TimeoutError):
    pass


class ConnectionClosed(HttpFailure):
    pass


class BadResponse(HttpFailure):
    pass


class _Connection(asyncio.Protocol):
    """One connection and the response being read on it (httptools calls ``on_*``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._awaiting = False  # a request was sent and its response has not ended
        # The read timeout: one timer per connection, rescheduled only when it fires early
        # (a timer per wait would cost more than the rest of a relayed chunk's reading).
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._timeout_s = 0.0
        self._active_at = 0.0  # loop time of the last arrival or the start of the wait
        self._begin()

    def _begin(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.failure: HttpFailure | None = None
        self._head_bytes = 0
        self._body: list[bytes] = []
        self.buffered = 0
        self._until_close = False  # a body with no length: it ends when the connection does
        self._keep_alive = False

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self._active_at = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            self._fail(self.failure or BadResponse("the upstream's response could not be read"))
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"the upstream sent malformed HTTP: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and self._until_close and not self.complete:
            self.complete = True
            self._wake()
        elif not self.complete:
            self._fail(ConnectionClosed("the upstream closed the connection"))

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        if not self._awaiting:  # bytes nobody asked for: the connection is not to be trusted
            self._fail(BadResponse("the upstream sent a response to no request"))
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > HEAD_BYTES_MAX:
            self._fail(BadResponse(f"the upstream's response head is over {HEAD_BYTES_MAX} bytes"))
            raise _Stop
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            self._fail(BadResponse(f"the upstream sent a {encoding}-encoded body unasked"))
            raise _Stop
        self._until_close = (
            "content-length" not in self.headers
            and "chunked" not in self.headers.get("transfer-encoding", "").lower()
        )
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self.buffered += len(body)
        if self.buffered > BUFFERED_BYTES_MAX and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._awaiting = False
        self._keep_alive = self._parser.should_keep_alive()  # not known once it returns
        self._wake()

    # -- the exchange ----------------------------------------------------------------------

    @property
    def reusable(self) -> bool:
        return self.complete and not self.closed and self._keep_alive

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self._begin()
        self._awaiting = True
        self.transport.write(data)

    def take(self) -> bytes:
        """Everything buffered since the last take, as one piece."""
        body = self._body
        data = body[0] if len(body) == 1 else b"".join(body)
        self._body = []
        self.buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    async def wait(self, timeout_s: float) -> None:
        """Until something arrives (or fails): raise the failure, or TimedOut when nothing
        came for ``timeout_s``."""
        loop = self._loop
        waiter = loop.create_future()
        self._waiter = waiter
        now = loop.time()
        self._active_at = now
        self._timeout_s = timeout_s
        due = now + timeout_s
        if self._timer is None or self._timer_at > due:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = loop.call_at(due, self._check_timeout), due
        try:
            await waiter
        finally:
            self._waiter = None

    def _check_timeout(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        due = self._active_at + self._timeout_s
        if self._loop.time() >= due:
            waiter.set_exception(TimedOut("the upstream sent nothing in time"))
        else:
            self._timer, self._timer_at = self._loop.call_at(due, self._check_timeout), due

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, failure: HttpFailure) -> None:
        if self.failure is None:
            self.failure = failure
        self.close()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(self.failure)

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()


class _Stop(Exception):
    """Raised in a parser callback to stop the parser (its failure is recorded first)."""


class Response:
    """An upstream's answer: its status and headers (names in lower case), then its body."""

    def __init__(self, connection: _Connection, read_timeout_s: float) -> None:
        self._connection = connection
        self._read_timeout_s = read_timeout_s
        self.status = connection.status
        self.headers: Mapping[str, str] = connection.headers

    async def read(self, limit: int = BODY_BYTES_MAX) -> bytes:
        """The whole body, or its first ``limit`` bytes if longer (BadResponse when the
        limit is the default: a body that large is refused)."""
        connection = self._connection
        while not connection.complete and connection.buffered <= limit:
            await self._more()
        body = connection.take()
        if len(body) > limit:
            if limit == BODY_BYTES_MAX:
                raise BadResponse(f"the upstream's answer is over {limit} bytes")
            connection.close()  # the rest is not read: the connection cannot be reused
            return body[:limit]
        return body

    async def read_some(self) -> bytes:
        """What arrived of the body since the last read, as one piece (waiting for some
        if nothing did); ``b""`` once the body has ended."""
        connection = self._connection
        while not connection.buffered:
            if connection.complete:
                return b""
            await self._more()
        return connection.take()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: everything buffered at each step, as one piece."""
        while data := await self.read_some():
            yield data

    async def _more(self) -> None:
        connection = self._connection
        if connection.failure is not None:
            raise connection.failure
        await connection.wait(self._read_timeout_s)


class _Exchange:
    """``async with pool.request(...) as response``: the connection goes back to the pool
    only if its response was read to the end."""

    def __init__(self, pool: HttpPool, head: bytes, body: bytes, timeout_s: float) -> None:
        self._pool = pool
        self._request = head + body
        self._timeout_s = timeout_s
        self._connection: _Connection | None = None

    async def __aenter__(self) -> Response:
        connection = await self._pool.acquire(self._timeout_s)
        try:
            connection.send(self._request)
            while not connection.headers_done:
                if connection.failure is not None:
                    raise connection.failure
                await connection.wait(self._timeout_s)
        except BaseException:
            self._pool.release(connection)  # not read to its end: dropped
            raise
        self._connection = connection
        return Response(connection, self._timeout_s)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        connection = self._connection
        if connection is not None:
            self._connection = None
            self._pool.release(connection)


class HttpPool:
    """Kept-alive connections to one origin, at most ``connections_max`` at a time."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        connections_max: int,
        keepalive_s: float,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._base_path = parts.path.rstrip("/")
        default_port = self._port == (443 if parts.scheme == "https" else 80)
        host = parts.hostname if default_port else f"{parts.hostname}:{self._port}"
        if ":" in parts.hostname:  # an IPv6 literal
            host = f"[{parts.hostname}]" if default_port else f"[{parts.hostname}]:{self._port}"
        fixed = {"Host": host, "Accept-Encoding": "identity", **headers}
        self._fixed_head = "".join(f"{name}: {value}\r\n" for name, value in fixed.items())
        self._heads: dict[tuple[str, str], str] = {}
        self._connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._connections_max = connections_max
        self._keepalive_s = keepalive_s
        self._idle: list[_Connection] = []
        self._open_count = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    def post(self, path: str, body: bytes, timeout_s: float | None = None) -> _Exchange:
        return self.request("POST", path, body, timeout_s)

    def request(
        self, method: str, path: str, body: bytes = b"", timeout_s: float | None = None
    ) -> _Exchange:
        """One exchange: ``path`` is below the base URL's path."""
        key = (method, path)
        prefix = self._heads.get(key)
        if prefix is None:
            prefix = f"{method} {self._base_path}{path} HTTP/1.1\r\n{self._fixed_head}"
            self._heads[key] = prefix
        head = f"{prefix}Content-Length: {len(body)}\r\n\r\n".encode("latin-1")
        return _Exchange(self, head, body, timeout_s or self.read_timeout_s)

    async def acquire(self, timeout_s: float) -> _Connection:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < self._keepalive_s:
                return connection
            self._drop(connection)
        while self._open_count >= self._connections_max:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, timeout_s)
            except TimeoutError:
                raise TimedOut("no upstream connection came free in time") from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if self._idle:
                return await self.acquire(timeout_s)
        return await self._connect()

    async def _connect(self) -> _Connection:
        if self._closed:
            raise ConnectFailed("the pool is closed")
        loop = asyncio.get_running_loop()
        self._open_count += 1
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(loop),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                ),
                self._connect_timeout_s,
            )
        except TimeoutError:
            self._connection_gone()
            raise TimedOut(f"no connection to {self._host}:{self._port} in time") from None
        except OSError as exc:
            self._connection_gone()
            raise ConnectFailed(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        except BaseException:
            self._connection_gone()
            raise
        return connection

    def release(self, connection: _Connection) -> None:
        if not connection.reusable or self._closed:
            self._drop(connection)
            return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)
        self._wake_one()
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self._keepalive_s, self._expire)

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        self._connection_gone()

    def _connection_gone(self) -> None:
        self._open_count -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _expire(self) -> None:
        """Close the connections idle for longer than the keep-alive."""
        self._sweep = None
        now = time.monotonic()
        kept = []
        for connection in self._idle:
            if connection.closed or now - connection.idle_since >= self._keepalive_s:
                self._drop(connection)
            else:
                kept.append(connection)
        self._idle = kept
        if kept:
            self._sweep = asyncio.get_running_loop().call_later(self._keepalive_s, self._expire)

    async def aclose(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        idle, self._idle = self._idle, []
        for connection in idle:
            self._drop(connection)
        await asyncio.sleep(0)  # the transports close on the next loop turn


__all__ = [
    "BadResponse",
    "ConnectFailed",
    "ConnectionClosed",
    "HttpFailure",
    "HttpPool",
    "Response",
    "TimedOut",
]
