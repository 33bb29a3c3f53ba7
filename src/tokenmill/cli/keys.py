"""``tokenmill keys create|list|revoke|budget|limits``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tokenmill.access import service
from tokenmill.cli.common import (
    DatabaseOption,
    FormatOption,
    HomeOption,
    JsonOption,
    RowsFormatOption,
    iso,
    output_format,
    parse_time,
    print_json,
    print_records,
    print_table,
    run,
    store,
    when,
)
from tokenmill.cli.limits import (
    ALL_MODELS,
    ClearOption,
    ConcurrentOption,
    ModelOption,
    RequestsOption,
    TokensOption,
    rate_limits_command,
)
from tokenmill.cli.money import cli_actor, set_budget_command
from tokenmill.store.accounts import KeyRow

app = typer.Typer(
    help="API keys: made here, shown once, stored only as hashes.", no_args_is_help=True
)


def key_json(row: KeyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "account_id": row.account_id,
        "name": row.name,
        "prefix": row.key_prefix,
        "models": list(row.models) if row.models is not None else None,
        "created_at": iso(row.created_at_ms),
        "expires_at": iso(row.expires_at_ms),
        "revoked_at": iso(row.revoked_at_ms),
    }


def _rows(rows: list[KeyRow]) -> list[tuple[Any, ...]]:
    return [
        (
            r.id,
            r.account_id,
            r.name,
            r.key_prefix + "...",
            ",".join(r.models) if r.models is not None else "all",
            when(r.expires_at_ms),
            "revoked" if r.revoked_at_ms else "live",
        )
        for r in rows
    ]


COLUMNS = ["id", "account", "name", "key", "models", "expires (UTC)", "state"]


@app.command("create")
def create(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "default",
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="Allow only this model (repeat for several); default all."),
    ] = None,
    expires: Annotated[
        str | None, typer.Option(help="Expiry, ISO 8601 (UTC unless it says), e.g. 2027-01-31.")
    ] = None,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key; it is printed this once (under "key" with --json)."""
    shown_as = output_format(output, as_json)
    expires_at_ms = parse_time(expires, "--expires")
    with store(home, database_url) as engine:
        made = run(
            lambda: service.create_key(
                engine,
                account,
                name=name,
                models=model or None,
                expires_at_ms=expires_at_ms,
                actor=cli_actor(),
            )
        )
    if shown_as == "json":
        print_json({**key_json(made.row), "key": made.secret})
        return
    print_table("key created", COLUMNS, _rows([made.row]))
    typer.echo(f"\n  {made.secret}\n\nThis key is shown once; only its hash is stored.")


@app.command("list")
def list_(
    account: Annotated[str | None, typer.Option(help="Only this account (id or name).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 1000,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: RowsFormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """List keys (never the keys themselves: only their first characters)."""
    shown_as = output_format(output, as_json)
    with store(home, database_url) as engine:
        rows = run(lambda: service.list_keys(engine, account, limit))
    if shown_as != "table":
        print_records(shown_as, [key_json(row) for row in rows])
    else:
        print_table("keys", COLUMNS, _rows(rows))


@app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")],
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a key: a running gateway refuses it within a second."""
    shown_as = output_format(output, as_json)
    with store(home, database_url) as engine:
        row = run(lambda: service.revoke_key(engine, key_id, actor=cli_actor()))
    if shown_as == "json":
        print_json(key_json(row))
    else:
        print_table("key revoked", COLUMNS, _rows([row]))


@app.command("budget")
def budget(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")],
    daily: Annotated[str | None, typer.Option(help="Spend per UTC day, e.g. 5.00.")] = None,
    monthly: Annotated[str | None, typer.Option(help="Spend per UTC month.")] = None,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cap what one key may spend per day and per month (omitted: no cap)."""
    as_json = output_format(output, as_json) == "json"
    set_budget_command("key", key_id, daily, monthly, home, database_url, as_json)


@app.command("limits")
def limits(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")],
    model: ModelOption = ALL_MODELS,
    rpm: RequestsOption = None,
    tpm: TokensOption = None,
    concurrent: ConcurrentOption = None,
    clear: ClearOption = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: RowsFormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the key's rate limits, or set them for one model (or * for all models together)."""
    shown_as = output_format(output, as_json)
    rate_limits_command(
        "key", key_id, model, (rpm, tpm, concurrent), clear, (home, database_url), shown_as
    )
