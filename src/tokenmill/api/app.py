"""``create_app(settings)``: the ASGI application of the gateway.

The serving POST endpoints (OpenAI's and Anthropic's) are dispatched straight to their
raw-ASGI handlers (the hot path skips the router); everything else goes through a Starlette
router, with the admin API mounted at ``/admin/v1``. Any exception that escapes a handler
is a bug: it is logged with the request id here, in the one place that catches
``Exception``, and answered with a 500 in OpenAI's shape when the response has not started.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount

from tokenmill.api.admin.routes import create_admin_app
from tokenmill.api.body_guard import BodyGuard
from tokenmill.api.dashboard_routes import dashboard_routes
from tokenmill.api.error_json import Message, Receive, Scope, Send, send_error
from tokenmill.api.gateway import Gateway
from tokenmill.api.openai_routes import (
    ServerError,
    error_response,
    routes,
    server_error,
    store_unavailable,
)
from tokenmill.api.responses_routes import responses_routes
from tokenmill.api.serving.count_tokens import CountTokensEndpoint
from tokenmill.api.serving.request_path import SurfaceEndpoint
from tokenmill.config import Settings
from tokenmill.errors import InvalidRequest, MethodNotAllowed, NotFound
from tokenmill.surfaces import SURFACES
from tokenmill.surfaces.messages_request import parse_count_tokens

log = logging.getLogger("tokenmill.api")


class GatewayApp:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        messages = SURFACES["messages"]
        self._hot: dict[str, SurfaceEndpoint | CountTokensEndpoint] = {
            "/v1/chat/completions": SurfaceEndpoint(gateway.serving, SURFACES["chat"]),
            "/v1/completions": SurfaceEndpoint(gateway.serving, SURFACES["completions"]),
            "/v1/embeddings": SurfaceEndpoint(gateway.serving, SURFACES["embeddings"]),
            "/v1/messages": SurfaceEndpoint(gateway.serving, messages),
            "/v1/messages/count_tokens": CountTokensEndpoint(
                gateway.serving, parse_count_tokens, messages.wire
            ),
            "/v1/responses": SurfaceEndpoint(gateway.serving, SURFACES["responses"]),
        }
        self._router = BodyGuard(_router(gateway), gateway)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._router(scope, receive, send)
            return
        hot = self._hot.get(scope["path"])
        handler = hot or self._router
        # The hot path makes its own request id; other routes get one here.
        stamp = None if hot else (b"x-request-id", self.gateway.request_ids().encode())
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if stamp is not None:
                    message["headers"] = [*message.get("headers", ()), stamp]
            await send(message)

        try:
            await handler(scope, receive, tracked_send)
        except Exception:
            request_id = self.gateway.request_ids()
            log.exception(
                "unhandled error on %s %s (%s)", scope["method"], scope["path"], request_id
            )
            if not started:
                await send_error(
                    send,
                    ServerError(f"Internal error; it was logged as {request_id}."),
                    request_id,
                )


def _router(gateway: Gateway) -> Starlette:
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        if error.status_code == 404:
            return error_response(NotFound("Unknown path.", code="unknown_url"))
        if error.status_code == 405:
            allowed = (error.headers or {}).get("Allow", "GET")
            methods = tuple(method.strip() for method in allowed.split(","))
            return error_response(MethodNotAllowed(request.method, request.url.path, methods))
        return error_response(InvalidRequest(str(error.detail)))

    return Starlette(
        routes=[
            *routes(gateway),
            *responses_routes(gateway),
            *dashboard_routes(gateway),
            Mount("/admin/v1", app=create_admin_app(gateway)),
        ],
        lifespan=lifespan,
        exception_handlers={
            HTTPException: http_error,
            OperationalError: store_unavailable,
            500: server_error,
        },
    )


def create_app(settings: Settings) -> GatewayApp:
    return GatewayApp(Gateway(settings))
