"""The read-only OpenAI routes (models), health and metrics: small, so Starlette serves them."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokenmill.access.keys import Grant, may_use_model
from tokenmill.api.gateway import Gateway
from tokenmill.api.request_path import authenticate
from tokenmill.errors import NotFound, TokenmillError, Unavailable

log = logging.getLogger("tokenmill.api")


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def error_response(error: TokenmillError) -> Response:
    response = json_response(error.to_body(), error.http_status)
    if error.retry_after_s is not None:
        response.headers["retry-after"] = str(error.retry_after_s)
    return response


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


def routes(gateway: Gateway) -> list[Route]:
    started_s = int(time.time())

    def _grant(request: Request) -> Grant:
        return authenticate(gateway, request.scope)

    async def list_models(request: Request) -> Response:
        try:
            grant = _grant(request)
        except TokenmillError as error:
            return error_response(error)
        data = [
            _model_object(gateway, name, started_s)
            for name in gateway.models
            if may_use_model(grant, name)
        ]
        return json_response({"object": "list", "data": data})

    async def show_model(request: Request) -> Response:
        name = request.path_params["model"]
        try:
            grant = _grant(request)
            if name not in gateway.models or not may_use_model(grant, name):
                raise NotFound(
                    f"The model '{name[:200]}' does not exist or you do not have access to it.",
                    param="model",
                    code="model_not_found",
                )
        except TokenmillError as error:
            return error_response(error)
        return json_response(_model_object(gateway, name, started_s))

    async def healthz(_request: Request) -> Response:
        return json_response({"status": "ok", "keys": len(gateway.directory)})

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", show_model, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
