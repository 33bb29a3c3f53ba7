"""The upstream HTTP client (``engines/http_client.py``) against a raw HTTP server on
loopback that answers each path its own way, well or badly: keep-alive and its bounds,
bodies whole and streamed, and every failure mapped to the client's own kinds."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

import pytest
import uvloop

from tokenmill.engines.http_client import (
    BUFFERED_BYTES_MAX,
    HEAD_BYTES_MAX,
    BadResponse,
    ConnectFailed,
    ConnectionClosed,
    HttpPool,
    TimedOut,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[bool]]


class FarSide:
    """A loopback HTTP/1.1 server: reads a request head and body, hands them to the handler
    of its path; a handler returns whether the connection stays open for the next one."""

    def __init__(self) -> None:
        self.connections = 0
        self.open_now = 0
        self.open_max = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.handlers: dict[bytes, Handler] = {}
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.open_max = max(self.open_max, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.heads.append(head)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.bodies.append(await reader.readexactly(length))
                path = head.split(b" ", 2)[1]
                keep = await self.handlers[path](reader, writer, head)
                await writer.drain()
                if not keep:
                    return
        finally:
            self.open_now -= 1
            writer.close()


def response(body: bytes, *headers: bytes, status: bytes = b"200 OK") -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n" % len(body)
    return head + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
    writer.write(response(b'{"ok":true}', b"Content-Type: application/json"))
    return True


def replies(raw: bytes, *, keep: bool = False) -> Handler:
    """A handler that writes ``raw`` as it is (well-formed or not) and keeps the
    connection or closes it."""

    async def reply(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> bool:
        writer.write(raw)
        return keep

    return reply


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
    """Reads the request and answers nothing for longer than any test waits."""
    await asyncio.sleep(5)
    return False


@asynccontextmanager
async def far_side(**handlers: Handler) -> AsyncIterator[FarSide]:
    side = FarSide()
    side.handlers = {b"/base/" + name.encode(): h for name, h in handlers.items()}
    server = await asyncio.start_server(side.serve, "127.0.0.1", 0)
    side.port = server.sockets[0].getsockname()[1]
    try:
        yield side
    finally:
        server.close()


def pool_of(side: FarSide, **bounds: float) -> HttpPool:
    settings = {
        "connect_timeout_s": 2.0,
        "read_timeout_s": 2.0,
        "connections_max": 8,
        "keepalive_s": 3.0,
    }
    settings.update(bounds)
    return HttpPool(
        f"http://127.0.0.1:{side.port}/base/",
        {"Authorization": "Bearer up-secret"},
        connect_timeout_s=settings["connect_timeout_s"],
        read_timeout_s=settings["read_timeout_s"],
        connections_max=int(settings["connections_max"]),
        keepalive_s=settings["keepalive_s"],
    )


async def post_read(pool: HttpPool, path: str, body: bytes = b"{}") -> tuple[int, bytes]:
    async with pool.post(path, body) as answer:
        return answer.status, await answer.read()


LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
RunScenario = Callable[[Callable[[], Awaitable[None]]], None]


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> RunScenario:
    """Runs a scenario on asyncio's own loop, then on uvloop (the gateway's): their
    transports differ."""
    factory = LOOPS[request.param]

    def run_scenario(scenario: Callable[[], Awaitable[None]]) -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(asyncio.wait_for(scenario(), 20))

    return run_scenario


class TestExchanges:
    def test_a_post_carries_its_head_body_and_headers_and_reads_the_answer(
        self, run: RunScenario
    ) -> None:
        """The request goes to the base path with Host, the pool's headers and the length;
        the answer's status, headers (lower-cased) and body come back."""

        async def scenario() -> None:
            async with far_side(ok=ok) as side:
                pool = pool_of(side)
                async with pool.post("/ok", b'{"model":"m"}') as answer:
                    assert answer.status == 200
                    assert answer.headers["content-type"] == "application/json"
                    assert await answer.read() == b'{"ok":true}'
                await pool.aclose()
            head = side.heads[0]
            assert head.startswith(b"POST /base/ok HTTP/1.1\r\n")
            assert f"Host: 127.0.0.1:{side.port}\r\n".encode() in head
            assert b"Authorization: Bearer up-secret\r\n" in head
            assert b"Content-Length: 13\r\n" in head
            assert side.bodies == [b'{"model":"m"}']

        run(scenario)

    def test_a_kept_alive_connection_serves_the_next_request(self, run: RunScenario) -> None:
        """Ten requests one after another use one connection."""

        async def scenario() -> None:
            async with far_side(ok=ok) as side:
                pool = pool_of(side)
                for _ in range(10):
                    assert await post_read(pool, "/ok") == (200, b'{"ok":true}')
                await pool.aclose()
            assert side.connections == 1

        run(scenario)

    def test_a_server_that_closes_after_answering_gets_a_new_connection_each_time(
        self, run: RunScenario
    ) -> None:
        """``Connection: close`` is honoured: the connection is not reused."""

        closing = replies(response(b"bye", b"Connection: close"))

        async def scenario() -> None:
            async with far_side(closing=closing) as side:
                pool = pool_of(side)
                for _ in range(3):
                    assert await post_read(pool, "/closing") == (200, b"bye")
                await pool.aclose()
            assert side.connections == 3

        run(scenario)

    def test_an_idle_connection_past_the_keepalive_is_not_reused(self, run: RunScenario) -> None:
        """After ``keepalive_s`` idle, the next request opens a fresh connection."""

        async def scenario() -> None:
            async with far_side(ok=ok) as side:
                pool = pool_of(side, keepalive_s=0.2)
                await post_read(pool, "/ok")
                await asyncio.sleep(0.5)
                await post_read(pool, "/ok")
                await pool.aclose()
                await asyncio.sleep(0.05)
                assert side.open_now == 0
            assert side.connections == 2

        run(scenario)

    def test_the_pool_never_opens_more_than_its_bound(self, run: RunScenario) -> None:
        """Twelve requests at once on a pool of 3: the server never sees more than 3
        connections, and every request is answered."""

        async def slow(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
        ) -> bool:
            await asyncio.sleep(0.05)
            writer.write(response(b"done"))
            return True

        async def scenario() -> None:
            async with far_side(slow=slow) as side:
                pool = pool_of(side, connections_max=3)
                answers = await asyncio.gather(*(post_read(pool, "/slow") for _ in range(12)))
                await pool.aclose()
            assert answers == [(200, b"done")] * 12
            assert side.open_max <= 3
            assert side.connections == 3

        run(scenario)

    def test_a_body_without_a_length_ends_with_the_connection(self, run: RunScenario) -> None:
        unframed = replies(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")

        async def scenario() -> None:
            async with far_side(unframed=unframed) as side:
                pool = pool_of(side)
                assert await post_read(pool, "/unframed") == (200, b"all of it")
                await pool.aclose()

        run(scenario)


class TestStreams:
    def test_chunks_come_as_they_arrive_and_the_connection_is_reused(
        self, run: RunScenario
    ) -> None:
        """A chunked body is read piece by piece while the server is still sending; once
        it ended the connection serves the next request."""
        release = asyncio.Event()

        async def events(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
        ) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"6\r\nfirst \r\n")
            await writer.drain()
            await release.wait()
            writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
            return True

        async def scenario() -> None:
            async with far_side(events=events, ok=ok) as side:
                pool = pool_of(side)
                pieces = []
                async with pool.post("/events", b"{}") as answer:
                    async for piece in answer.chunks():
                        pieces.append(piece)
                        release.set()
                assert pieces == [b"first ", b"second"]
                assert await post_read(pool, "/ok") == (200, b'{"ok":true}')
                await pool.aclose()
            assert side.connections == 1

        run(scenario)

    def test_a_stream_cut_midway_gives_what_came_then_fails(self, run: RunScenario) -> None:
        cut = replies(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhalf.\r\n")

        async def scenario() -> None:
            async with far_side(cut=cut) as side:
                pool = pool_of(side)
                pieces = []
                with pytest.raises(ConnectionClosed):
                    async with pool.post("/cut", b"{}") as answer:
                        async for piece in answer.chunks():
                            pieces.append(piece)
                assert pieces == [b"half."]
                await pool.aclose()

        run(scenario)

    def test_a_stream_left_unread_drops_its_connection(self, run: RunScenario) -> None:
        """A reader that leaves mid-stream (a client gone) closes the connection: the next
        request gets a fresh one and its own answer, not the rest of the old one."""

        async def endless(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
        ) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            try:
                for _ in range(200):
                    writer.write(b"4\r\nmore\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.01)
            except ConnectionError:
                pass
            return False

        async def scenario() -> None:
            async with far_side(endless=endless, ok=ok) as side:
                pool = pool_of(side)
                async with pool.post("/endless", b"{}") as answer:
                    async for _piece in answer.chunks():
                        break
                assert await post_read(pool, "/ok") == (200, b'{"ok":true}')
                await pool.aclose()
            assert side.connections == 2

        run(scenario)

    def test_a_slow_reader_bounds_what_is_buffered(self, run: RunScenario) -> None:
        """While nobody reads, the client stops reading the socket once its buffer is over
        the bound: 8 MiB sent, little more than 1 MiB held."""

        async def flood(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
        ) -> bool:
            size = 8 * 1024 * 1024
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            for _ in range(size // 65536):
                writer.write(b"x" * 65536)
            with suppress(ConnectionError):
                await writer.drain()
            return False

        async def scenario() -> None:
            async with far_side(flood=flood) as side:
                pool = pool_of(side)
                async with pool.post("/flood", b"{}") as answer:
                    await asyncio.sleep(0.5)
                    connection = answer._connection
                    assert connection.buffered <= BUFFERED_BYTES_MAX + 512 * 1024
                    total = 0
                    async for piece in answer.chunks():
                        total += len(piece)
                assert total == 8 * 1024 * 1024
                await pool.aclose()

        run(scenario)


class TestFailures:
    def test_no_server_is_a_connect_failure(self, run: RunScenario) -> None:
        async def scenario() -> None:
            async with far_side() as side:
                port = side.port
            pool = HttpPool(
                f"http://127.0.0.1:{port}",
                {},
                connect_timeout_s=1,
                read_timeout_s=1,
                connections_max=2,
                keepalive_s=1,
            )
            for _ in range(3):  # a failed connect does not use up the pool
                with pytest.raises(ConnectFailed):
                    await post_read(pool, "/x")
            await pool.aclose()

        run(scenario)

    def test_a_server_that_stalls_times_out(self, run: RunScenario) -> None:
        """Headers that never come, and a body that stops, each time out after the read
        timeout, not later."""

        async def stalls(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
        ) -> bool:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
            await writer.drain()
            await asyncio.sleep(5)
            return False

        async def scenario() -> None:
            async with far_side(silent=silent, stalls=stalls) as side:
                pool = pool_of(side, read_timeout_s=0.3)
                loop = asyncio.get_running_loop()
                for path in ("/silent", "/stalls"):
                    started = loop.time()
                    with pytest.raises(TimedOut):
                        await post_read(pool, path)
                    assert 0.25 < loop.time() - started < 2.0
                await pool.aclose()

        run(scenario)

    def test_a_shorter_timeout_on_a_kept_alive_connection_is_kept(self, run: RunScenario) -> None:
        """A connection that served a request with a long timeout serves one with a short
        timeout (a health check) that still times out on time."""

        async def scenario() -> None:
            async with far_side(ok=ok, silent=silent) as side:
                pool = pool_of(side, read_timeout_s=30)
                assert await post_read(pool, "/ok") == (200, b'{"ok":true}')
                loop = asyncio.get_running_loop()
                started = loop.time()
                with pytest.raises(TimedOut):
                    async with pool.request("GET", "/silent", timeout_s=0.3) as answer:
                        await answer.read()
                assert loop.time() - started < 2.0
                await pool.aclose()
            assert side.connections == 1

        run(scenario)

    def test_a_response_head_over_the_bound_is_refused(self, run: RunScenario) -> None:
        huge = replies(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * HEAD_BYTES_MAX + b"\r\n\r\n")

        async def scenario() -> None:
            async with far_side(huge=huge) as side:
                pool = pool_of(side)
                with pytest.raises(BadResponse, match="head"):
                    await post_read(pool, "/huge")
                await pool.aclose()

        run(scenario)

    def test_garbage_instead_of_http_is_a_bad_response(self, run: RunScenario) -> None:
        garbage = replies(b"SSH-2.0-OpenSSH\r\n\r\n")

        async def scenario() -> None:
            async with far_side(garbage=garbage) as side:
                pool = pool_of(side)
                with pytest.raises(BadResponse):
                    await post_read(pool, "/garbage")
                await pool.aclose()

        run(scenario)

    def test_a_compressed_body_nobody_asked_for_is_refused(self, run: RunScenario) -> None:
        """The client asks for ``identity``; a gzip body is refused, not passed on."""

        async def zipped(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
        ) -> bool:
            assert b"Accept-Encoding: identity\r\n" in head
            writer.write(response(gzip.compress(b"{}"), b"Content-Encoding: gzip"))
            return True

        async def scenario() -> None:
            async with far_side(zipped=zipped) as side:
                pool = pool_of(side)
                with pytest.raises(BadResponse, match="gzip"):
                    await post_read(pool, "/zipped")
                await pool.aclose()

        run(scenario)

    def test_an_error_body_read_in_part_drops_the_connection(self, run: RunScenario) -> None:
        """``read(limit)`` gives the first ``limit`` bytes of a long body; the rest is not
        read, so the connection is not reused."""

        long_error = replies(
            response(b"e" * 100_000, status=b"500 Internal Server Error"), keep=True
        )

        async def scenario() -> None:
            async with far_side(long_error=long_error, ok=ok) as side:
                pool = pool_of(side)
                async with pool.post("/long_error", b"{}") as answer:
                    assert answer.status == 500
                    assert await answer.read(1000) == b"e" * 1000
                assert await post_read(pool, "/ok") == (200, b'{"ok":true}')
                await pool.aclose()
            assert side.connections == 2

        run(scenario)

    def test_bytes_sent_on_an_idle_connection_retire_it(self, run: RunScenario) -> None:
        """A server that writes to a connection with no request waiting (a second
        response) makes the client drop that connection; the next request is answered on a
        fresh one, correctly."""

        twice = replies(response(b"one") + response(b"two"), keep=True)

        async def scenario() -> None:
            async with far_side(twice=twice, ok=ok) as side:
                pool = pool_of(side)
                assert await post_read(pool, "/twice") == (200, b"one")
                await asyncio.sleep(0.05)
                assert await post_read(pool, "/ok") == (200, b'{"ok":true}')
                await pool.aclose()
            assert side.connections == 2

        run(scenario)

    def test_a_url_that_is_not_http_is_refused_at_once(self) -> None:
        with pytest.raises(ValueError, match="http"):
            HttpPool(
                "ftp://example.com",
                {},
                connect_timeout_s=1,
                read_timeout_s=1,
                connections_max=1,
                keepalive_s=1,
            )
