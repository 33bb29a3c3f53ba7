"""Admin routes for rate limits of accounts and keys (``/admin/v1/.../rate-limits``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.concurrency import run_in_threadpool

from tokenmill.access import service
from tokenmill.api.admin.auth import ADMIN, Actor
from tokenmill.api.gateway import Gateway
from tokenmill.errors import InvalidRequest
from tokenmill.retail.rate_limits import ALL_MODELS, RATE_MAX, RateLimit, limits_to_spec


class RateLimitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(ALL_MODELS, description="a model id, or * for every model together")
    requests_per_minute: StrictInt | None = Field(None, ge=1, le=RATE_MAX)
    tokens_per_minute: StrictInt | None = Field(None, ge=1, le=RATE_MAX)
    concurrent_count_max: StrictInt | None = Field(None, ge=1, le=RATE_MAX)


class RateLimitsOut(BaseModel):
    id: str
    rate_limits: dict[str, dict[str, int]] = Field(description="model or * -> limits")


def check_limited_model(gateway: Gateway, model: str) -> str:
    if model != ALL_MODELS and model not in gateway.models:
        raise InvalidRequest(
            f"unknown model '{model}'; use * or one of: {', '.join(sorted(gateway.models))}",
            param="model",
        )
    return model


def rate_limit_routes(app: FastAPI, gateway: Gateway) -> None:
    db = gateway.db
    admin = ADMIN[0]

    async def _set(entity: str, ref: str, body: RateLimitIn, actor: str) -> RateLimitsOut:
        model = check_limited_model(gateway, body.model)
        limit = RateLimit(
            body.requests_per_minute, body.tokens_per_minute, body.concurrent_count_max
        )
        entity_id, limits = await run_in_threadpool(
            lambda: service.set_rate_limit(db, entity, ref, model, limit, actor=actor)
        )
        await gateway.sync_directory()
        return RateLimitsOut(id=entity_id, rate_limits=limits_to_spec(limits))

    async def _get(entity: str, ref: str) -> RateLimitsOut:
        entity_id, limits = await run_in_threadpool(service.rate_limits_of, db, entity, ref)
        return RateLimitsOut(id=entity_id, rate_limits=limits_to_spec(limits))

    @app.post("/accounts/{account}/rate-limits", response_model=RateLimitsOut)
    async def set_account_limits(account: str, body: RateLimitIn, actor: Actor) -> Any:
        return await _set("account", account, body, actor)

    @app.post("/keys/{key_id}/rate-limits", response_model=RateLimitsOut)
    async def set_key_limits(key_id: str, body: RateLimitIn, actor: Actor) -> Any:
        return await _set("key", key_id, body, actor)

    @app.get("/accounts/{account}/rate-limits", dependencies=[admin], response_model=RateLimitsOut)
    async def account_limits(account: str) -> Any:
        return await _get("account", account)

    @app.get("/keys/{key_id}/rate-limits", dependencies=[admin], response_model=RateLimitsOut)
    async def key_limits(key_id: str) -> Any:
        return await _get("key", key_id)
