"""The connection as a stranger can use it: bounded request heads (431), a deadline for the
head however it trickles (408, or a close when nothing came), idle keep-alive connections
closed, and a cap on connections (503). Each bound is a ``Limits`` field."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import LiveGateway, gateway_config, live_gateway

HEAD_S = 0.6
IDLE_S = 0.6
CONNECTIONS = 16


@pytest.fixture
def bounded(sqlite_url: str, tmp_path: Path) -> Iterator[LiveGateway]:
    config = gateway_config(
        None,
        header_bytes_max=8192,
        header_count_max=50,
        request_head_s_max=HEAD_S,
        keep_alive_idle_s_max=IDLE_S,
        connections_count_max=CONNECTIONS,
    )
    with live_gateway(sqlite_url, config, tmp_path) as live:
        yield live


def connect(live: LiveGateway) -> socket.socket:
    host, port = live.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def read_all(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (5 s at most)."""
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    return answer


def read_response(connection: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) on a kept-alive connection."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += connection.recv(65536)
    top, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in top.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += connection.recv(65536)
    return top + b"\r\n\r\n" + body


def head(path: str = "/healthz", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def error_of(answer: bytes) -> dict[str, object]:
    error: dict[str, object] = orjson.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    return error


class TestHeadSize:
    def test_a_header_past_the_bound_is_a_431_and_the_server_stays_quick(
        self, bounded: LiveGateway
    ) -> None:
        """A 64 KiB header (bound 8 KiB): 431 in the API's error shape, connection closed;
        /healthz answers right after."""
        with connect(bounded) as connection:
            connection.sendall(head(extra=f"X-Big: {'a' * 65536}\r\n"))
            answer = read_all(connection)
        assert status_of(answer) == 431
        assert error_of(answer)["code"] == "request_header_fields_too_large"
        assert httpx.get(bounded.url + "/healthz", timeout=2).status_code == 200

    def test_a_huge_header_sent_in_pieces_is_cut_at_the_bound(self, bounded: LiveGateway) -> None:
        """A header value that never ends, sent 4 KiB at a time: 431 once past 8 KiB,
        long before 1 MiB is sent."""
        with connect(bounded) as connection:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ")
            sent = 0
            with pytest.raises(OSError):  # the server closed the connection
                while sent < 1024 * 1024:
                    connection.sendall(b"a" * 4096)
                    sent += 4096
                    time.sleep(0.001)
            assert sent < 1024 * 1024

    def test_a_long_url_counts_toward_the_head(self, bounded: LiveGateway) -> None:
        """A 6 KiB URL and a 4 KiB header, each within the 8 KiB bound, in one packet: 431."""
        with connect(bounded) as connection:
            connection.sendall(head(path="/healthz?" + "q" * 6144, extra=f"X-A: {'a' * 4096}\r\n"))
            answer = read_all(connection)
        assert status_of(answer) == 431

    def test_too_many_headers_are_a_431(self, bounded: LiveGateway) -> None:
        """51 small headers (bound 50): 431."""
        extra = "".join(f"X-H{i}: v\r\n" for i in range(51))
        with connect(bounded) as connection:
            connection.sendall(head(extra=extra))
            answer = read_all(connection)
        assert status_of(answer) == 431

    def test_a_head_within_the_bounds_is_served(self, bounded: LiveGateway) -> None:
        """40 headers of 100 bytes: an ordinary 200."""
        extra = "".join(f"X-H{i}: {'v' * 100}\r\n" for i in range(40))
        with connect(bounded) as connection:
            connection.sendall(head(extra=extra + "Connection: close\r\n"))
            assert status_of(read_all(connection)) == 200


class TestTimeouts:
    def test_a_connection_that_sends_nothing_is_closed(self, bounded: LiveGateway) -> None:
        """Closed once the head deadline passes, with no answer."""
        started = time.monotonic()
        with connect(bounded) as connection:
            assert read_all(connection) == b""
        assert time.monotonic() - started < HEAD_S + 2

    def test_a_trickled_head_gets_408_at_the_deadline(self, bounded: LiveGateway) -> None:
        """One header line every 0.1 s never completes the head: 408 at the deadline,
        although bytes keep coming (the keep-alive timer would have restarted on each)."""
        with connect(bounded) as connection:
            connection.sendall(b"GET /healthz HTTP/1.1\r\n")
            started = time.monotonic()
            for index in range(int(HEAD_S * 10) + 20):  # well past the deadline
                try:
                    connection.sendall(f"X-Slow{index}: 1\r\n".encode())
                except OSError:  # the server answered and closed
                    break
                time.sleep(0.1)
            answer = read_all(connection)
        assert status_of(answer) == 408
        assert error_of(answer)["code"] == "request_timeout"
        assert time.monotonic() - started < HEAD_S + 2

    def test_an_idle_kept_alive_connection_is_closed(self, bounded: LiveGateway) -> None:
        """After one answered request, the idle connection closes after the idle bound."""
        with connect(bounded) as connection:
            connection.sendall(head())
            assert status_of(read_response(connection)) == 200
            started = time.monotonic()
            assert read_all(connection) == b""
        assert time.monotonic() - started < IDLE_S + 2

    def test_a_kept_alive_connection_serves_a_second_request_in_time(
        self, bounded: LiveGateway
    ) -> None:
        """The head deadline starts with each request, not with the connection."""
        with connect(bounded) as connection:
            connection.sendall(head())
            assert status_of(read_response(connection)) == 200
            time.sleep(HEAD_S * 0.7)
            connection.sendall(head())
            assert status_of(read_response(connection)) == 200


class TestConnectionCap:
    def test_past_the_cap_a_request_gets_503(self, bounded: LiveGateway) -> None:
        """With 16 connections open (the cap), another request is refused with 503."""
        idle = [connect(bounded) for _ in range(CONNECTIONS)]
        try:
            with connect(bounded) as connection:
                connection.sendall(head(extra="Connection: close\r\n"))
                assert status_of(read_all(connection)) == 503
        finally:
            for connection in idle:
                connection.close()
        time.sleep(0.2)
        assert httpx.get(bounded.url + "/healthz", timeout=2).status_code == 200
