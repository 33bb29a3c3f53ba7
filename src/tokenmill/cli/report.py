"""``tokenmill report revenue``: revenue by day, model and account."""

from __future__ import annotations

from typing import Annotated

import typer

from tokenmill.access import service
from tokenmill.billing.statements import revenue_json, revenue_report
from tokenmill.cli.common import (
    DatabaseOption,
    HomeOption,
    JsonOption,
    parse_time,
    print_json,
    print_table,
    run,
    store,
)
from tokenmill.money import format_amount
from tokenmill.retail.statements import month_of
from tokenmill.store.database import now_ms

app = typer.Typer(help="Operator reports.", no_args_is_help=True)


@app.command("revenue")
def revenue(
    since: Annotated[
        str | None, typer.Option(help="ISO 8601 start (default: this UTC month's first day).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 end, exclusive.")] = None,
    account: Annotated[str | None, typer.Option(help="Only this account (id or name).")] = None,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revenue by day, model and account (cost and margin arrive with the fleet)."""
    month_start, month_end = month_of(now_ms())
    since_ms = parse_time(since, "--since")
    until_ms = parse_time(until, "--until")
    with store(home, database_url) as engine:

        def query() -> list[dict[str, object]]:
            account_id = service.find_account(engine, account).id if account else None
            rows = revenue_report(
                engine,
                month_start if since_ms is None else since_ms,
                month_end if until_ms is None else until_ms,
                account_id=account_id,
            )
            return [revenue_json(row) for row in rows]

        rows = run(query)
    if as_json:
        print_json(rows)
        return
    totals: dict[str, int] = {}
    for row in rows:
        currency = str(row["currency"])
        totals[currency] = totals.get(currency, 0) + int(str(row["revenue_nano"]))
    print_table(
        "revenue",
        ["day", "model", "account", "requests", "tokens", "revenue", "cost", "margin"],
        [
            (
                row["day"],
                row["model"],
                row["account_id"],
                row["requests"],
                int(str(row["prompt_tokens"])) + int(str(row["completion_tokens"])),
                f"{row['revenue']} {row['currency']}",
                "",
                "",
            )
            for row in rows
        ],
    )
    for currency, total in sorted(totals.items()):
        typer.echo(f"total revenue {format_amount(total)} {currency}")
