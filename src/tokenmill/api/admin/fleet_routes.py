"""``GET /admin/v1/fleet``: the deployments behind each model, with their live load and
breakers, as routing sees them (what ``tokenmill fleet`` shows)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from tokenmill.api.admin.auth import ADMIN
from tokenmill.api.gateway import Gateway
from tokenmill.money import format_amount
from tokenmill.store.database import now_ms


def fleet_view(gateway: Gateway) -> dict[str, Any]:
    """The fleet now: per deployment its engine, load, capacity and breaker; per model its
    routing policy and deployments in configured order."""
    now = now_ms()
    deployments = []
    for name, deployment in gateway.config.deployments.items():
        candidate = gateway.router.fleet_candidate(name)
        breaker = gateway.router.fleet.breaker(name)
        backend = gateway.backends[name]
        load = gateway.router.fleet.loads.get(name)
        deployments.append(
            {
                "name": name,
                "engine": backend.engine,
                "kind": backend.kind,
                "upstream_model": deployment.model,
                "own": candidate.own if candidate else True,
                "cost": _cost(gateway, name),
                "in_flight": load.in_flight if load else 0,
                "concurrency_max": deployment.concurrency_max,
                "breaker": breaker.state,
                "failures_count": breaker.failures_count,
                "retry_in_ms": breaker.retry_in_ms(now),
            }
        )
    models = {
        name: {"routing": model.routing, "deployments": list(model.deployments)}
        for name, model in gateway.models.items()
    }
    return {
        "deployments": deployments,
        "models": models,
        "queued_count": gateway.router.queued_count,
    }


def _cost(gateway: Gateway, deployment: str) -> dict[str, str] | None:
    serving = gateway.serving_costs.get(deployment)
    if serving is None:
        return None
    return {
        "basis": serving.basis,
        "currency": serving.currency,
        "input_per_mtok": format_amount(serving.input_nano_per_mtok),
        "output_per_mtok": format_amount(serving.output_nano_per_mtok),
    }


def fleet_routes(app: FastAPI, gateway: Gateway) -> None:
    @app.get("/fleet", dependencies=[ADMIN[0]], response_model=dict[str, Any])
    async def fleet() -> dict[str, Any]:
        return fleet_view(gateway)
