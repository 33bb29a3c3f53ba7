"""The admin API under ``/admin/v1`` (FastAPI: typed, with its OpenAPI spec), bearer admin token.

Thin: each route validates its wire model and calls ``tokenmill.access.service`` (the same
functions the CLI calls) on a worker thread, then refreshes the in-memory key directory so
the change works at once in this process (other processes see it within a poll).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from tokenmill.access import service
from tokenmill.api.admin.auth import ADMIN, Actor
from tokenmill.api.admin.fleet_routes import fleet_routes
from tokenmill.api.admin.limit_routes import rate_limit_routes
from tokenmill.api.admin.money_routes import money_routes
from tokenmill.api.admin.plan_routes import plan_routes
from tokenmill.api.admin.spec import admin_openapi
from tokenmill.api.gateway import Gateway
from tokenmill.api.openai_routes import server_error, store_unavailable
from tokenmill.errors import InvalidRequest, NotFound, TokenmillError
from tokenmill.instants import ms_of
from tokenmill.money import format_amount
from tokenmill.store import accounts as rows
from tokenmill.store.usage import query_records


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccountIn(_Strict):
    name: str = Field(min_length=1, max_length=200, examples=["acme"])


class KeyIn(_Strict):
    account: str = Field(description="account id or name")
    name: str = Field("default", min_length=1, max_length=200)
    models: list[str] | None = Field(None, description="allowed model ids; omit for all")
    expires_at: datetime | None = Field(None, description="ISO 8601; omit for no expiry")


class Account(BaseModel):
    id: str
    name: str
    status: str
    created_at: datetime
    disabled_at: datetime | None
    currency: str
    credit_limit: str = Field(description="postpaid credit limit; 0.00 for prepaid")


class Key(BaseModel):
    id: str
    account_id: str
    name: str
    prefix: str
    models: list[str] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class NewKey(Key):
    key: str = Field(description="the API key; shown this once, stored only as a hash")


class Usage(BaseModel):
    request_id: str
    account_id: str
    key_id: str
    model: str
    deployment: str
    engine: str
    endpoint: str
    prompt_tokens: int  # the whole prompt: cache reads and writes are parts of it
    completion_tokens: int  # the whole output: reasoning tokens are part of it
    cached_tokens: int  # read from a prompt cache
    cache_write_tokens: int
    reasoning_tokens: int
    estimated: bool
    status: str
    http_status: int
    error_type: str | None
    started_at: datetime
    ttft_ms: int | None
    duration_ms: int
    charge_nano: int
    loss_nano: int


def _time(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return ms_of(value)


def account_out(row: rows.AccountRow) -> Account:
    return Account(
        id=row.id,
        name=row.name,
        status=row.status,
        created_at=_time(row.created_at_ms),
        disabled_at=_time(row.disabled_at_ms),
        currency=row.currency,
        credit_limit=format_amount(row.credit_limit_nano),
    )


def key_out(row: rows.KeyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "account_id": row.account_id,
        "name": row.name,
        "prefix": row.key_prefix,
        "models": list(row.models) if row.models is not None else None,
        "created_at": _time(row.created_at_ms),
        "expires_at": _time(row.expires_at_ms),
        "revoked_at": _time(row.revoked_at_ms),
    }


def _error_json(error: TokenmillError) -> JSONResponse:
    return JSONResponse(error.to_body(), status_code=error.http_status)


def create_admin_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(
        title="tokenmill admin API",
        version="1",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )

    async def tokenmill_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, TokenmillError)
        return _error_json(error)

    async def validation_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        param = ".".join(loc) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        return _error_json(InvalidRequest(message, param=param))

    async def http_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        if error.status_code == 404:
            return _error_json(NotFound("No such admin route."))
        body = InvalidRequest(str(error.detail)).to_body()
        # Starlette's own headers (Allow on a 405) go out with the error.
        return JSONResponse(body, status_code=error.status_code, headers=error.headers)

    app.add_exception_handler(TokenmillError, tokenmill_error)
    app.add_exception_handler(OperationalError, store_unavailable)
    app.add_exception_handler(500, server_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)

    app.state.admin_actors = gateway.admin_actors
    app.openapi = lambda: admin_openapi(app)  # type: ignore[method-assign]
    _account_routes(app, gateway, ADMIN)
    _key_routes(app, gateway, ADMIN)
    _usage_routes(app, gateway, ADMIN)
    money_routes(app, gateway)
    rate_limit_routes(app, gateway)
    fleet_routes(app, gateway)
    plan_routes(app)
    return app


def _account_routes(app: FastAPI, gateway: Gateway, admin: list[Any]) -> None:
    db = gateway.db

    @app.post("/accounts", status_code=201, response_model=Account)
    async def create_account(body: AccountIn, actor: Actor) -> Account:
        row = await run_in_threadpool(lambda: service.create_account(db, body.name, actor=actor))
        await gateway.sync_directory()
        return account_out(row)

    @app.get("/accounts", dependencies=admin, response_model=list[Account])
    async def list_accounts(limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> list[Account]:
        found = await run_in_threadpool(service.list_accounts, db, limit)
        return [account_out(row) for row in found]

    @app.get("/accounts/{account}", dependencies=admin, response_model=Account)
    async def show_account(account: str) -> Account:
        return account_out(await run_in_threadpool(service.find_account, db, account))

    @app.post("/accounts/{account}/disable", response_model=Account)
    async def disable_account(account: str, actor: Actor) -> Account:
        row = await run_in_threadpool(
            lambda: service.set_account_status(db, account, "disabled", actor=actor)
        )
        await gateway.sync_directory()
        return account_out(row)

    @app.post("/accounts/{account}/enable", response_model=Account)
    async def enable_account(account: str, actor: Actor) -> Account:
        row = await run_in_threadpool(
            lambda: service.set_account_status(db, account, "active", actor=actor)
        )
        await gateway.sync_directory()
        return account_out(row)


def _key_routes(app: FastAPI, gateway: Gateway, admin: list[Any]) -> None:
    db = gateway.db

    @app.post("/keys", status_code=201, response_model=NewKey)
    async def create_key(body: KeyIn, actor: Actor) -> NewKey:
        unknown = sorted(set(body.models or []) - set(gateway.models))
        if unknown:
            raise InvalidRequest(f"unknown models: {', '.join(unknown)}", param="models")
        made = await run_in_threadpool(
            lambda: service.create_key(
                db,
                body.account,
                name=body.name,
                models=body.models,
                expires_at_ms=_ms(body.expires_at),
                actor=actor,
            )
        )
        await gateway.sync_directory()
        return NewKey(**key_out(made.row), key=made.secret)

    @app.get("/keys", dependencies=admin, response_model=list[Key])
    async def list_keys(
        account: str | None = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000
    ) -> list[Key]:
        found = await run_in_threadpool(service.list_keys, db, account, limit)
        return [Key(**key_out(row)) for row in found]

    @app.post("/keys/{key_id}/revoke", response_model=Key)
    async def revoke_key(key_id: str, actor: Actor) -> Key:
        row = await run_in_threadpool(lambda: service.revoke_key(db, key_id, actor=actor))
        await gateway.sync_directory()
        return Key(**key_out(row))


def _usage_routes(app: FastAPI, gateway: Gateway, admin: list[Any]) -> None:
    db = gateway.db

    @app.get("/usage", dependencies=admin, response_model=list[Usage])
    async def list_usage(
        account: str | None = None,
        key: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> list[Usage]:
        for value, param in ((key, "key"), (model, "model")):
            if value is not None:
                service.check_ref(value, param)

        def query() -> list[Usage]:
            account_id = service.find_account(db, account).id if account else None
            with db.connect() as connection:
                found = query_records(
                    connection,
                    account_id=account_id,
                    key_id=key,
                    model=model,
                    since_ms=_ms(since),
                    until_ms=_ms(until),
                    limit=limit,
                )
            return [
                Usage(**{**record.__dict__, "started_at": _time(record.started_at_ms)})
                for record in found
            ]

        return await run_in_threadpool(query)
