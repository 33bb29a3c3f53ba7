"""The read-only OpenAI routes (models), health and metrics: small, so Starlette serves them.
A client that sends ``anthropic-version`` (the Anthropic SDK) gets the models in Anthropic's
shape.

Each route takes every method and answers one it does not serve itself, with a 405 in
OpenAI's shape and an ``Allow`` header (Starlette's own 405 would lose the header).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tokenmill import json_codec
from tokenmill.access.keys import Grant, may_use_model, unknown_model
from tokenmill.api.gateway import Gateway
from tokenmill.api.serving.intake import authenticate
from tokenmill.errors import MethodNotAllowed, TokenmillError, Unavailable
from tokenmill.surfaces.messages_render import ANTHROPIC_WIRE

log = logging.getLogger("tokenmill.api")


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json_codec.dumps(body), status_code=status, media_type="application/json")


# HTML pages (statements, invoices) are printable documents: no script, nothing loaded from
# elsewhere, never framed, and never sniffed as another type.
HTML_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:;"
    " base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
}


def html_response(page: str) -> Response:
    return Response(page, media_type="text/html; charset=utf-8", headers=HTML_HEADERS)


def error_response(error: TokenmillError) -> Response:
    response = json_response(error.to_body(), error.http_status)
    if error.retry_after_s is not None:
        response.headers["retry-after"] = str(error.retry_after_s)
    if isinstance(error, MethodNotAllowed):
        response.headers["allow"] = error.allow_header[1].decode()
    return response


Endpoint = Callable[[Request], Awaitable[Response]]
READ_METHODS = ("GET", "HEAD")


class ReadOnly:
    """The ASGI app of a GET (and HEAD) route: any other method gets OpenAI's 405 with
    ``Allow``. An app, not a function, so that Starlette routes every method to it."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        if request.method in READ_METHODS:
            response = await self.endpoint(request)
        else:
            failure = MethodNotAllowed(request.method, request.url.path, READ_METHODS)
            response = error_response(failure)
        await response(scope, receive, send)


def read_only(path: str, endpoint: Endpoint) -> Route:
    route = Route(path, ReadOnly(endpoint))
    assert route.methods is None  # every method reaches ReadOnly
    return route


class ServerError(TokenmillError):
    http_status = 500
    type = "server_error"
    code = "internal_error"


async def store_unavailable(request: Request, error: Exception) -> Response:
    """The store cannot be reached (a connection refused or lost): 503, try again."""
    log.warning("store unavailable on %s: %s", request.url.path[:200], error.__class__.__name__)
    return error_response(
        Unavailable("The store is unavailable right now; retry shortly.", retry_after_s=1)
    )


async def server_error(request: Request, _error: Exception) -> Response:
    """What Starlette's error middleware answers for an unhandled exception: OpenAI's shape.

    The middleware logs the exception itself; every such 500 is a bug.
    """
    path = request.url.path
    return error_response(ServerError(f"Internal error on {path[:200]}; it was logged."))


def _model_object(gateway: Gateway, name: str, created_s: int) -> dict[str, Any]:
    model = gateway.models[name]
    simulated = gateway.simulated(name)
    return {
        "id": name,
        "object": "model",
        "created": created_s,
        "owned_by": "tokenmill-sim" if simulated else "tokenmill",
        "kind": model.kind,
        "simulated": simulated,
        "context_tokens": model.context_tokens,
        "output_tokens_max": model.output_tokens_max,
        "description": model.description,
    }


def _anthropic_model(gateway: Gateway, name: str, created_s: int) -> dict[str, Any]:
    """A model as Anthropic's ``GET /v1/models`` lists it."""
    created = datetime.fromtimestamp(created_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    display = gateway.models[name].description or name
    return {"type": "model", "id": name, "display_name": display, "created_at": created}


def _anthropic_client(request: Request) -> bool:
    """An Anthropic SDK sends ``anthropic-version``: it gets Anthropic's shapes."""
    return "anthropic-version" in request.headers


def _model_error(request: Request, error: TokenmillError) -> Response:
    if not _anthropic_client(request):
        return error_response(error)
    wire = ANTHROPIC_WIRE
    return Response(
        wire.error_body(error), status_code=wire.status(error), media_type="application/json"
    )


def routes(gateway: Gateway) -> list[Route]:
    started_s = int(time.time())

    def _grant(request: Request) -> Grant:
        return authenticate(gateway.directory, request.scope)

    async def list_models(request: Request) -> Response:
        try:
            grant = _grant(request)
        except TokenmillError as error:
            return _model_error(request, error)
        names = [name for name in gateway.models if may_use_model(grant, name)]
        if _anthropic_client(request):
            data = [_anthropic_model(gateway, name, started_s) for name in names]
            first, last = (names[0], names[-1]) if names else (None, None)
            page = {"data": data, "has_more": False, "first_id": first, "last_id": last}
            return json_response(page)
        data = [_model_object(gateway, name, started_s) for name in names]
        return json_response({"object": "list", "data": data})

    async def show_model(request: Request) -> Response:
        name = request.path_params["model"]
        try:
            grant = _grant(request)
            if name not in gateway.models or not may_use_model(grant, name):
                raise unknown_model(name)
        except TokenmillError as error:
            return _model_error(request, error)
        if _anthropic_client(request):
            return json_response(_anthropic_model(gateway, name, started_s))
        return json_response(_model_object(gateway, name, started_s))

    async def healthz(_request: Request) -> Response:
        return json_response({"status": "ok", "keys": len(gateway.directory)})

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return [
        read_only("/v1/models", list_models),
        read_only("/v1/models/{model:path}", show_model),
        read_only("/healthz", healthz),
        read_only("/health", healthz),  # the path some load balancers and tools probe
        read_only("/metrics", metrics),
    ]
