"""What the money commands share: the admin actor, and asking the running gateway."""

from __future__ import annotations

import getpass
import os
from typing import Annotated, Any

import httpx
import typer
from sqlalchemy import Engine

from tokenmill.billing import service as billing
from tokenmill.cli.common import print_json, run, store
from tokenmill.money import format_amount, parse_amount
from tokenmill.store import accounts as account_rows
from tokenmill.store.accounts import AccountRow

AdminTokenOption = Annotated[
    str | None,
    typer.Option(
        "--admin-token",
        help="Admin token to ask the running gateway (default $TOKENMILL_ADMIN_TOKEN).",
    ),
]
GatewayUrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The running gateway (default $TOKENMILL_URL, else where it said it listens).",
    ),
]
ASK_TIMEOUT_S = 2.0


def cli_actor() -> str:
    """Who the audit log names for a CLI action: the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"[:64]
    except (KeyError, OSError):
        return "cli"


def funds_json(
    engine: Engine, account: AccountRow, url: str | None, token: str | None
) -> dict[str, Any]:
    """Balance, held and available funds: from the running gateway, which knows the holds
    in flight, when it answers; otherwise from the store (nothing is held without one)."""
    live = _ask_gateway(engine, account.id, url, token)
    if live is not None:
        balance, held, available = (
            live["balance_nano"],
            live["held_nano"],
            live["available_nano"],
        )
        source = "gateway"
    else:
        balance = billing.balance_of(engine, account.id)
        held, available = 0, balance + account.credit_limit_nano
        source = "store"
    return {
        "currency": account.currency,
        "credit_limit": format_amount(account.credit_limit_nano),
        "credit_limit_nano": account.credit_limit_nano,
        "balance": format_amount(balance),
        "balance_nano": balance,
        "held_nano": held,
        "available_nano": available,
        "funds_source": source,
    }


def gateway_url(engine: Engine, url: str | None) -> str | None:
    url = url or os.environ.get("TOKENMILL_URL")
    if url is None:
        with engine.connect() as connection:
            url = account_rows.meta_value(connection, account_rows.GATEWAY_URL_META)
    return url


def debit_via_gateway(
    engine: Engine,
    account: str,
    amount: str,
    key: str | None,
    reference: str | None,
    url: str | None,
    token: str | None,
) -> dict[str, Any]:
    """Post a debit adjustment through the running gateway's admin API; exit 1 with a clear
    line if it cannot be reached or refuses."""
    token = token or os.environ.get("TOKENMILL_ADMIN_TOKEN")
    url = gateway_url(engine, url)
    if not url or not token:
        typer.echo(
            "error: a gateway serves this database, and a debit must go through it (requests"
            " in flight hold funds only it knows of): give --url and --admin-token, or set"
            " TOKENMILL_URL and TOKENMILL_ADMIN_TOKEN",
            err=True,
        )
        raise typer.Exit(1)
    body: dict[str, Any] = {"amount": amount, "kind": "adjustment", "reference": reference}
    if key is not None:
        body["idempotency_key"] = key
    try:
        response = httpx.post(
            f"{url.rstrip('/')}/admin/v1/accounts/{account}/transfers",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=ASK_TIMEOUT_S * 5,
        )
    except httpx.HTTPError as exc:
        typer.echo(f"error: the gateway at {url} did not answer: {exc}", err=True)
        raise typer.Exit(1) from exc
    answer = response.json()
    if response.status_code != 200:
        message = answer.get("error", {}).get("message", response.text[:200])
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1)
    assert isinstance(answer, dict)
    return answer


def _ask_gateway(
    engine: Engine, account_id: str, url: str | None, token: str | None
) -> dict[str, Any] | None:
    token = token or os.environ.get("TOKENMILL_ADMIN_TOKEN")
    url = gateway_url(engine, url)
    if not url or not token:
        return None
    try:
        response = httpx.get(
            f"{url.rstrip('/')}/admin/v1/accounts/{account_id}/balance",
            headers={"Authorization": f"Bearer {token}"},
            timeout=ASK_TIMEOUT_S,
        )
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    body = response.json()
    return body if isinstance(body, dict) else None


def set_budget_command(
    entity: str,
    ref: str,
    daily: str | None,
    monthly: str | None,
    home: str | None,
    database_url: str | None,
    as_json: bool,
) -> None:
    """``accounts budget`` and ``keys budget``: set both budgets (an omitted one is removed)."""

    def amounts() -> tuple[int | None, int | None]:
        return (
            None if daily is None else parse_amount(daily, param="daily"),
            None if monthly is None else parse_amount(monthly, param="monthly"),
        )

    daily_nano, monthly_nano = run(amounts)
    with store(home, database_url) as engine:
        entity_id, _, _ = run(
            lambda: billing.set_budget(
                engine,
                entity,
                ref,
                daily_nano=daily_nano,
                monthly_nano=monthly_nano,
                actor=cli_actor(),
            )
        )
    shown = {"id": entity_id, "daily_budget_nano": daily_nano, "monthly_budget_nano": monthly_nano}
    if as_json:
        print_json(shown)
        return
    parts = [
        f"{name} {format_amount(value)}" if value is not None else f"no {name} budget"
        for name, value in (("daily", daily_nano), ("monthly", monthly_nano))
    ]
    typer.echo(f"{entity} {entity_id}: {', '.join(parts)}")
