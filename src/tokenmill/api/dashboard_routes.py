"""The customer's own view, with the customer's API key: balance, usage, statement.

A key sees only its own account: every query is scoped by the account the key belongs to,
never by anything the request names, so one tenant cannot read another's figures.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokenmill.api.admin.money_routes import balance_out
from tokenmill.api.gateway import Gateway
from tokenmill.api.openai_routes import error_response, html_response, json_response
from tokenmill.api.serving.intake import authenticate
from tokenmill.billing import periods
from tokenmill.billing.statements import build_statement
from tokenmill.errors import InvalidRequest, TokenmillError
from tokenmill.instants import ms_of
from tokenmill.retail.invoices import invoice_json
from tokenmill.retail.statements import (
    Statement,
    month_of,
    statement_csv,
    statement_html,
    statement_json,
)


def parse_instant(text: str | None, param: str) -> int | None:
    """ISO 8601 (a date, or a date and time; UTC unless it says) -> Unix ms."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRequest(f"'{param}' must be an ISO 8601 date or time", param=param) from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return ms_of(value)


def period(request: Request) -> tuple[int, int]:
    """``since`` and ``until`` from the query; the current UTC month by default."""
    month_start, month_end = month_of(time.time_ns() // 1_000_000)
    since = parse_instant(request.query_params.get("since"), "since")
    until = parse_instant(request.query_params.get("until"), "until")
    return (month_start if since is None else since, month_end if until is None else until)


def render(statement_format: str | None, statement: Statement) -> Response:
    if statement_format in (None, "json"):
        return json_response(statement_json(statement))
    if statement_format == "csv":
        return Response(statement_csv(statement), media_type="text/csv; charset=utf-8")
    if statement_format == "html":
        return html_response(statement_html(statement))
    raise InvalidRequest("'format' must be json, csv or html", param="format")


def dashboard_routes(gateway: Gateway) -> list[Route]:
    async def balance(request: Request) -> Response:
        try:
            grant = authenticate(gateway.directory, request.scope)
        except TokenmillError as error:
            return error_response(error)
        return json_response(balance_out(gateway, grant.account_id).model_dump())

    async def statement(request: Request) -> Response:
        try:
            grant = authenticate(gateway.directory, request.scope)
            since, until = period(request)
            fmt = request.query_params.get("format")
            if fmt not in (None, "json", "csv", "html"):
                raise InvalidRequest("'format' must be json, csv or html", param="format")
            found = await run_in_threadpool(
                build_statement, gateway.db, grant.account_id, since, until
            )
            return render(fmt, found)
        except TokenmillError as error:
            return error_response(error)

    async def usage(request: Request) -> Response:
        try:
            grant = authenticate(gateway.directory, request.scope)
            since, until = period(request)
            found = await run_in_threadpool(
                build_statement, gateway.db, grant.account_id, since, until
            )
        except TokenmillError as error:
            return error_response(error)
        body = statement_json(found)
        return json_response(
            {
                "account_id": body["account_id"],
                "currency": body["currency"],
                "since": body["since"],
                "until": body["until"],
                "usage": body["usage"],
                "usage_total": body["usage_total"],
                "usage_total_nano": body["usage_total_nano"],
            }
        )

    async def invoices(request: Request) -> Response:
        try:
            grant = authenticate(gateway.directory, request.scope)
            found = await run_in_threadpool(periods.invoices_of, gateway.db, grant.account_id)
        except TokenmillError as error:
            return error_response(error)
        return json_response([invoice_json(invoice, credited) for invoice, credited in found])

    return [
        Route("/v1/dashboard/invoices", invoices, methods=["GET"]),
        Route("/v1/dashboard/balance", balance, methods=["GET"]),
        Route("/v1/dashboard/usage", usage, methods=["GET"]),
        Route("/v1/dashboard/statement", statement, methods=["GET"]),
    ]
