"""``tokenmill fleet``: the deployments behind each model, with load and breakers, as the
running gateway sees them."""

from __future__ import annotations

import os
from typing import Any

import httpx
import typer

from tokenmill.cli.common import (
    DatabaseOption,
    FormatOption,
    HomeOption,
    JsonOption,
    output_format,
    print_json,
    print_table,
    store,
)
from tokenmill.cli.money import ASK_TIMEOUT_S, AdminTokenOption, GatewayUrlOption, gateway_url


def fleet(
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    url: GatewayUrlOption = None,
    admin_token: AdminTokenOption = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show each deployment (own or a vendor's, its cost, requests in flight and capacity, its
    circuit breaker) and each model's routing."""
    as_json = output_format(output, as_json) == "json"
    with store(home, database_url) as engine:
        found = gateway_url(engine, url)
    token = admin_token or os.environ.get("TOKENMILL_ADMIN_TOKEN")
    if not found or not token:
        typer.echo(
            "error: the fleet's state lives in the running gateway: give --url and"
            " --admin-token, or set TOKENMILL_URL and TOKENMILL_ADMIN_TOKEN",
            err=True,
        )
        raise typer.Exit(1)
    view = _ask(found, token)
    if as_json:
        print_json(view)
        return
    print_table(
        "deployments",
        ("deployment", "engine", "upstream model", "cost in/out per Mtok", "in flight", "breaker"),
        [_deployment_row(d) for d in view["deployments"]],
    )
    print_table(
        "models",
        ("model", "routing", "deployments"),
        [(name, m["routing"], ", ".join(m["deployments"])) for name, m in view["models"].items()],
    )


def _ask(url: str, token: str) -> dict[str, Any]:
    try:
        response = httpx.get(
            f"{url.rstrip('/')}/admin/v1/fleet",
            headers={"Authorization": f"Bearer {token}"},
            timeout=ASK_TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        typer.echo(f"error: the gateway at {url} did not answer: {exc}", err=True)
        raise typer.Exit(1) from exc
    if response.status_code != 200:
        typer.echo(f"error: the gateway answered {response.status_code}: {response.text}", err=True)
        raise typer.Exit(1)
    answer = response.json()
    assert isinstance(answer, dict)
    return answer


def _cost_text(d: dict[str, Any]) -> str:
    side = "own" if d["own"] else "vendor"
    cost = d["cost"]
    if cost is None:
        return f"{side}, no cost known"
    return (
        f"{side}: {cost['input_per_mtok']} / {cost['output_per_mtok']} {cost['currency']}"
        f" ({cost['basis']})"
    )


def _deployment_row(d: dict[str, Any]) -> tuple[Any, ...]:
    capacity = d["concurrency_max"] if d["concurrency_max"] is not None else "-"
    breaker = d["breaker"]
    if d["retry_in_ms"]:
        breaker += f" ({d['retry_in_ms'] / 1000:.1f} s)"
    return (
        d["name"],
        f"{d['engine']} ({d['kind']})",
        d["upstream_model"],
        _cost_text(d),
        f"{d['in_flight']}/{capacity}",
        breaker,
    )
