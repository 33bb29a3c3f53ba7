"""What strangers can make the gateway read: the admin API checks its token before any
body, and every body on the admin and dashboard routes is bounded (413)."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx
import orjson

from tests.assertions import assert_openai_error
from tests.conftest import LiveGateway

FIFTY_MB = 50 * 1024 * 1024


def raw_head_only(url: str, path: str, headers: dict[str, str]) -> bytes:
    """Send only the request head of a 50 MB POST and read the answer (within 5 s)."""
    parts = urlsplit(url)
    lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {FIFTY_MB}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b"{")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


class TestAdminBodies:
    def test_an_unauthenticated_admin_post_is_refused_before_its_body_is_read(
        self, gateway: LiveGateway
    ) -> None:
        """The head of a 50 MB POST without a token gets 401 at once: the gateway does not
        wait for (or keep) the body."""
        answer = raw_head_only(
            gateway.url, "/admin/v1/accounts", {"Content-Type": "application/json"}
        )
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 401"), head
        assert orjson.loads(body)["error"]["type"] == "authentication_error"

    def test_a_wrong_admin_token_is_refused_before_the_body_too(self, gateway: LiveGateway) -> None:
        """A bearer token that is not an admin's: 401 with only the head sent."""
        answer = raw_head_only(
            gateway.url, "/admin/v1/accounts", {"Authorization": "Bearer tmadmin-wrong"}
        )
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]

    def test_an_admin_body_past_the_bound_is_a_413(self, gateway: LiveGateway) -> None:
        """An admin's own POST of 2 MiB (the bound is 1 MiB): 413 in the API's error shape,
        and no account is made."""
        headers = {"Authorization": f"Bearer {gateway.admin_token}"}
        name = "x" * (2 * 1024 * 1024)
        response = httpx.post(
            gateway.url + "/admin/v1/accounts", json={"name": name}, headers=headers, timeout=30
        )
        assert_openai_error(response, 413)
        listed = httpx.get(gateway.url + "/admin/v1/accounts", headers=headers, timeout=30)
        assert all(account["name"] != name for account in listed.json())

    def test_a_streamed_body_without_a_length_is_cut_at_the_bound(
        self, gateway: LiveGateway
    ) -> None:
        """A chunked body with no Content-Length is counted as it arrives: 413 past 1 MiB."""
        headers = {"Authorization": f"Bearer {gateway.admin_token}"}

        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(40):
                yield b"x" * 65536

        response = httpx.post(
            gateway.url + "/admin/v1/accounts", content=chunks(), headers=headers, timeout=30
        )
        assert_openai_error(response, 413)

    def test_an_admin_post_within_the_bound_still_works(self, gateway: LiveGateway) -> None:
        """The guard hands the body on whole: an ordinary account creation succeeds."""
        headers = {"Authorization": f"Bearer {gateway.admin_token}"}
        response = httpx.post(
            gateway.url + "/admin/v1/accounts",
            json={"name": "guarded"},
            headers=headers,
            timeout=30,
        )
        assert response.status_code in (200, 201), response.text
