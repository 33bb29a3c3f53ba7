"""``tokenmill report revenue|margin``: revenue by day, model and account; revenue, cost
and gross margin by any of day, model, deployment and account."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from tokenmill.access import service
from tokenmill.billing.margins import GROUPS, margin_csv, margin_json, margin_report
from tokenmill.billing.statements import revenue_json, revenue_report
from tokenmill.cli.common import (
    DatabaseOption,
    HomeOption,
    JsonOption,
    RowsFormatOption,
    output_format,
    parse_period,
    print_json,
    print_records,
    print_table,
    run,
    store,
)
from tokenmill.money import format_amount
from tokenmill.retail.statements import month_of
from tokenmill.store.database import now_ms
from tokenmill.store.usage import TOKEN_COLUMNS

app = typer.Typer(help="Operator reports.", no_args_is_help=True)
# The CSV header even of a period with no usage (revenue_json's fields).
REVENUE_FIELDS = (
    "day",
    "model",
    "account_id",
    "currency",
    "requests",
    *TOKEN_COLUMNS,
    "revenue",
    "revenue_nano",
    "loss_nano",
    "cost_nano",
    "margin_nano",
)
# TOKEN_COLUMNS in a table: the prompt's cache reads and writes, and the completion's
# reasoning tokens, are parts of the prompt and completion columns before them.
TOKEN_HEADINGS = ("prompt", "completion", "cache read", "cache write", "reasoning")


@app.command("revenue")
def revenue(
    since: Annotated[
        str | None, typer.Option(help="ISO 8601 start (default: this UTC month's first day).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 end, exclusive.")] = None,
    account: Annotated[str | None, typer.Option(help="Only this account (id or name).")] = None,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: RowsFormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revenue by day, model and account, with the cost of serving and the margin."""
    shown_as = output_format(output, as_json)
    since_ms, until_ms = parse_period(since, until, month_of(now_ms()))
    assert since_ms is not None and until_ms is not None
    with store(home, database_url) as engine:

        def query() -> list[dict[str, object]]:
            account_id = service.find_account(engine, account).id if account else None
            rows = revenue_report(engine, since_ms, until_ms, account_id=account_id)
            return [revenue_json(row) for row in rows]

        rows = run(query)
    if shown_as != "table":
        print_records(shown_as, rows, REVENUE_FIELDS)
        return
    totals: dict[str, int] = {}
    for row in rows:
        currency = str(row["currency"])
        totals[currency] = totals.get(currency, 0) + int(str(row["revenue_nano"]))
    print_table(
        "revenue",
        ["day", "model", "account", "requests", *TOKEN_HEADINGS, "revenue", "cost", "margin"],
        [
            (
                row["day"],
                row["model"],
                row["account_id"],
                row["requests"],
                *(row[name] for name in TOKEN_COLUMNS),
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
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: RowsFormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revenue, cost of serving (vendor prices, or own GPUs' cost per token) and gross
    margin of usage."""
    shown_as = output_format(output, as_json)
    since_ms, until_ms = parse_period(since, until, month_of(now_ms()))
    assert since_ms is not None and until_ms is not None
    groups = [name.strip() for name in by.split(",") if name.strip()]
    with store(home, database_url) as engine:
        rows = run(
            lambda: margin_report(
                engine,
                since_ms,
                until_ms,
                groups,
                account_id=service.find_account(engine, account).id if account else None,
            )
        )
    if shown_as == "json":
        print_json([margin_json(row) for row in rows])
        return
    if shown_as == "csv":
        sys.stdout.write(margin_csv(rows, groups))
        return
    shown = [margin_json(row) for row in rows]
    print_table(
        "gross margin",
        [*groups, "requests", *TOKEN_HEADINGS, "revenue", "cost", "margin", "margin %"],
        [
            (
                *(row[name] for name in groups),
                row["requests"],
                *(row[name] for name in TOKEN_COLUMNS),
                f"{row['revenue']} {row['currency']}",
                row["cost"],
                row["margin"],
                "" if row["margin_ratio"] is None else f"{float(row['margin_ratio']) * 100:.1f}",
            )
            for row in shown
        ],
    )
