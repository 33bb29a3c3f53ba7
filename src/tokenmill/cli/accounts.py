"""``tokenmill accounts create|list|show|disable|enable``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tokenmill.access import service
from tokenmill.cli.common import (
    DatabaseOption,
    HomeOption,
    JsonOption,
    iso,
    print_json,
    print_table,
    run,
    store,
    when,
)
from tokenmill.store.accounts import AccountRow

app = typer.Typer(help="Customer accounts.", no_args_is_help=True)


def account_json(row: AccountRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "status": row.status,
        "created_at": iso(row.created_at_ms),
        "disabled_at": iso(row.disabled_at_ms),
    }


def _show(rows: list[AccountRow], as_json: bool, title: str) -> None:
    if as_json:
        print_json([account_json(row) for row in rows])
        return
    print_table(
        title,
        ["id", "name", "status", "created (UTC)"],
        [(r.id, r.name, r.status, when(r.created_at_ms)) for r in rows],
    )


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A unique account name.")],
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an account."""
    with store(home, database_url) as engine:
        row = run(lambda: service.create_account(engine, name))
    if as_json:
        print_json(account_json(row))
    else:
        _show([row], False, "account created")


@app.command("list")
def list_(
    limit: Annotated[int, typer.Option(help="At most this many.")] = 1000,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """List accounts, oldest first."""
    with store(home, database_url) as engine:
        rows = run(lambda: service.list_accounts(engine, limit))
    _show(rows, as_json, "accounts")


@app.command("show")
def show(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one account."""
    with store(home, database_url) as engine:
        row = run(lambda: service.find_account(engine, account))
    if as_json:
        print_json(account_json(row))
    else:
        _show([row], False, "account")


@app.command("disable")
def disable(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Disable an account: its keys stop working (within a second in a running gateway)."""
    with store(home, database_url) as engine:
        row = run(lambda: service.set_account_status(engine, account, "disabled"))
    print_json(account_json(row)) if as_json else _show([row], False, "account disabled")


@app.command("enable")
def enable(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Enable a disabled account again."""
    with store(home, database_url) as engine:
        row = run(lambda: service.set_account_status(engine, account, "active"))
    print_json(account_json(row)) if as_json else _show([row], False, "account enabled")
