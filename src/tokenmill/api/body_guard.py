"""What a stranger can make the gateway read, on every route but the OpenAI POST endpoints
(those bound their bodies themselves, in ``serving.intake.read_body``).

* The admin API checks its bearer token before it reads a byte of a body: an unauthenticated
  POST of 50 MB costs a hash lookup, not 50 MB of memory and a JSON parse.
* Every body is read here, whole, up to ``Limits.admin_body_bytes_max`` (413 past it, as
  soon as the Content-Length or the bytes received say so), and handed to the route as one
  message: no route ever sees more than the bound.
"""

from __future__ import annotations

from starlette.types import ASGIApp

from tokenmill.api.admin.auth import admin_actor
from tokenmill.api.error_json import Message, Receive, Scope, Send, send_error
from tokenmill.api.gateway import Gateway
from tokenmill.api.serving.intake import read_body
from tokenmill.errors import AuthenticationFailed, TokenmillError

ADMIN_PREFIX = "/admin/"
ADMIN_PUBLIC = frozenset({"/admin/v1/openapi.json", "/admin/v1/docs"})  # GET, no body
BODILESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class BodyGuard:
    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self._app = app
        self._gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        try:
            if path.startswith(ADMIN_PREFIX) and path not in ADMIN_PUBLIC:
                admin_actor(_authorization(scope), self._gateway.admin_actors)
            if method not in BODILESS_METHODS:
                limit = self._gateway.limits.admin_body_bytes_max
                body = await read_body(scope, receive, limit)
                receive = _replay(body, receive)
        except TokenmillError as error:
            await _send_error(send, error)
            return
        await app(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives ``body`` once, then whatever the client sends next (its
    disconnect)."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _authorization(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1")
    return ""


async def _send_error(send: Send, error: TokenmillError) -> None:
    """The error, without a request id: the app's sender stamps every answer with one."""
    extra = []
    if isinstance(error, AuthenticationFailed):
        extra.append((b"www-authenticate", b'Bearer realm="tokenmill-admin"'))
    await send_error(send, error, None, *extra)
