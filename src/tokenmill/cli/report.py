"""``tokenmill report revenue|margin``: revenue by day, model and account; revenue, cost
and gross margin by any of day, model, deployment and account."""

from __future__ import annotations

import sys
from typing import Annotated, Literal

import typer

from tokenmill.access import service
from tokenmill.billing.margins import GROUPS, margin_csv, margin_json, margin_report
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
    """Revenue by day, model and account, with the cost of serving and the margin."""
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
                format_amount(int(str(row["cost_nano"]))),
                format_amount(int(str(row["margin_nano"]))),
            )
            for row in rows
        ],
    )
    for currency, total in sorted(totals.items()):
        typer.echo(f"total revenue {format_amount(total)} {currency}")


@app.command("margin")
def margin(
    since: Annotated[
        str | None, typer.Option(help="ISO 8601 start (default: this UTC month's first day).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 end, exclusive.")] = None,
    by: Annotated[
        str, typer.Option(help=f"Group by, comma-separated: {', '.join(GROUPS)}.")
    ] = "day,model,deployment,account",
    account: Annotated[str | None, typer.Option(help="Only this account (id or name).")] = None,
    output: Annotated[
        Literal["table", "json", "csv"], typer.Option("--format", help="table, json or csv.")
    ] = "table",
    home: HomeOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Revenue, cost of serving (vendor prices, or own GPUs' cost per token) and gross
    margin of usage."""
    month_start, month_end = month_of(now_ms())
    since_ms = parse_time(since, "--since")
    until_ms = parse_time(until, "--until")
    groups = [name.strip() for name in by.split(",") if name.strip()]
    with store(home, database_url) as engine:
        rows = run(
            lambda: margin_report(
                engine,
                month_start if since_ms is None else since_ms,
                month_end if until_ms is None else until_ms,
                groups,
                account_id=service.find_account(engine, account).id if account else None,
            )
        )
    if output == "json":
        print_json([margin_json(row) for row in rows])
        return
    if output == "csv":
        sys.stdout.write(margin_csv(rows, groups))
        return
    shown = [margin_json(row) for row in rows]
    print_table(
        "gross margin",
        [*groups, "requests", "revenue", "cost", "margin", "margin %"],
        [
            (
                *(row[name] for name in groups),
                row["requests"],
                f"{row['revenue']} {row['currency']}",
                row["cost"],
                row["margin"],
                "" if row["margin_ratio"] is None else f"{float(row['margin_ratio']) * 100:.1f}",
            )
            for row in shown
        ],
    )
