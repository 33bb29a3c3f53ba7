"""The request's first steps, before any money moves: who is asking (the key's grant, from
memory), and the body, read within its bound."""

from __future__ import annotations

import time

from tokenmill.access.directory import KeyDirectory
from tokenmill.access.keys import Grant, check_grant, hash_secret
from tokenmill.api.error_json import Receive, Scope
from tokenmill.errors import AuthenticationFailed, InvalidRequest, PayloadTooLarge

MISSING_KEY = "You didn't provide an API key. Send it in the Authorization header: 'Bearer tm-...'."


def presented_key(scope: Scope) -> str | None:
    """The key in ``Authorization: Bearer`` or ``x-api-key`` (the first one sent)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, rest = value.decode("latin-1").partition(" ")
            return rest.strip() if scheme.lower() == "bearer" else None
        if name == b"x-api-key":
            return value.decode("latin-1").strip()
    return None


def authenticate(directory: KeyDirectory, scope: Scope) -> Grant:
    token = presented_key(scope)
    if not token:
        raise AuthenticationFailed(MISSING_KEY, code="missing_api_key")
    grant = directory.lookup(hash_secret(token))
    if grant is None:
        raise AuthenticationFailed("Incorrect API key provided.")
    check_grant(grant, time.time_ns() // 1_000_000)
    return grant


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest("The client closed the connection before sending the body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def disconnected(receive: Receive) -> None:
    """Return when the client disconnects (the body has been read: nothing else comes)."""
    while (await receive())["type"] != "http.disconnect":
        pass
