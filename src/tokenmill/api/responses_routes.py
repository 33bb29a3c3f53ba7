"""The stored responses of the OpenAI Responses API, read and deleted by their account:
``GET`` and ``DELETE /v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items``.

A response belongs to the account whose key made it; any other key, and an expired or
deleted id, gets the same 404. Input items are listed as OpenAI lists them: newest first
by default (``order``), ``limit`` 1 to 100 (20), paged with ``after`` (an item id).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tokenmill.api.gateway import Gateway
from tokenmill.api.openai_routes import error_response, json_response
from tokenmill.api.serving.intake import authenticate
from tokenmill.errors import InvalidRequest, MethodNotAllowed, NotFound, TokenmillError
from tokenmill.store.responses import StoredResponse

ITEMS_LIMIT_DEFAULT = 20
ITEMS_LIMIT_MAX = 100


def _not_found(response_id: str) -> NotFound:
    return NotFound(
        f"Response with id '{response_id[:64]}' not found.",
        param="response_id",
        code="response_not_found",
    )


class _Methods:
    """A route answering some methods, and OpenAI's 405 with ``Allow`` for the rest."""

    def __init__(self, gateway: Gateway, **handlers: Any) -> None:
        self.gateway = gateway
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        handler = self.handlers.get(request.method)
        try:
            if handler is None:
                raise MethodNotAllowed(request.method, request.url.path, tuple(self.handlers))
            grant = authenticate(self.gateway.directory, scope)
            response = await handler(request, grant.account_id)
        except TokenmillError as error:
            response = error_response(error)
        await response(scope, receive, send)


def responses_routes(gateway: Gateway) -> list[Route]:
    store = gateway.serving.responses

    async def found(request: Request, account_id: str) -> StoredResponse:
        response_id = request.path_params["response_id"]
        stored = await store.get(account_id, response_id)
        if stored is None:
            raise _not_found(response_id)
        return stored

    async def show(request: Request, account_id: str) -> Response:
        return json_response((await found(request, account_id)).response)

    async def delete(request: Request, account_id: str) -> Response:
        response_id = request.path_params["response_id"]
        if not await store.delete(account_id, response_id):
            raise _not_found(response_id)
        return json_response({"id": response_id, "object": "response.deleted", "deleted": True})

    async def input_items(request: Request, account_id: str) -> Response:
        stored = await found(request, account_id)
        return json_response(items_page(stored.input_items, request.query_params))

    async def head_of(request: Request, account_id: str) -> Response:
        await found(request, account_id)
        return Response(status_code=200)

    return [
        Route(
            "/v1/responses/{response_id}",
            _Methods(gateway, GET=show, HEAD=head_of, DELETE=delete),
        ),
        Route(
            "/v1/responses/{response_id}/input_items",
            _Methods(gateway, GET=input_items),
        ),
    ]


def items_page(items: tuple[dict[str, Any], ...], query: Any) -> dict[str, Any]:
    """One page of ``items`` as OpenAI's list object; 400 for a bad ``limit`` or ``order``."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be 'asc' or 'desc'.", param="order")
    text = query.get("limit", str(ITEMS_LIMIT_DEFAULT))
    if not text.isdigit() or not 1 <= int(text) <= ITEMS_LIMIT_MAX:
        raise InvalidRequest(
            f"'limit' must be an integer from 1 to {ITEMS_LIMIT_MAX}.", param="limit"
        )
    ordered = list(items) if order == "asc" else list(reversed(items))
    after = query.get("after")
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise InvalidRequest(f"No input item with id '{after[:64]}'.", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    page = ordered[: int(text)]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": len(ordered) > len(page),
    }
