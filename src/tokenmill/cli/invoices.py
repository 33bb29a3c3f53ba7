"""``tokenmill invoices list|show|credit``: issued invoices, and credit notes against them."""

from __future__ import annotations

import sys
from typing import Annotated, Literal

import typer

from tokenmill.access import service
from tokenmill.billing import periods
from tokenmill.cli.common import (
    DatabaseOption,
    FormatOption,
    HomeOption,
    JsonOption,
    RowsFormatOption,
    output_format,
    print_json,
    print_records,
    print_table,
    run,
    store,
)
from tokenmill.cli.money import cli_actor
from tokenmill.money import format_amount, parse_amount
from tokenmill.retail.invoices import invoice_html, invoice_json

app = typer.Typer(help="Invoices of postpaid accounts; credit notes.", no_args_is_help=True)


@app.command("list")
def list_(
    account: Annotated[str | None, typer.Option(help="Only this account (id or name).")] = None,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: RowsFormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issued invoices, oldest first."""
    shown_as = output_format(output, as_json)
    with store(home, database_url) as engine:
        found = run(lambda: periods.invoices_of(engine, account))
    if shown_as != "table":
        print_records(shown_as, [invoice_json(invoice, credited) for invoice, credited in found])
        return
    print_table(
        "invoices",
        ["number", "account", "period", "total", "credited", "due"],
        [
            (
                invoice.number,
                invoice.account_id,
                invoice.period,
                f"{format_amount(invoice.total_nano)} {invoice.currency}",
                format_amount(credited),
                format_amount(invoice.total_nano - credited),
            )
            for invoice, credited in found
        ],
    )


@app.command("show")
def show(
    number: Annotated[str, typer.Argument(help="Invoice number, e.g. INV-000001.")],
    output: Annotated[
        Literal["json", "html"] | None,
        typer.Option("--format", help="json (default) or html.", show_default=False),
    ] = None,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """One invoice, as JSON or a printable HTML page."""
    invoice_format = output_format(output, as_json, default="json")
    with store(home, database_url) as engine:
        invoice, credited = run(lambda: periods.find_invoice(engine, number))
        account = run(lambda: service.find_account(engine, invoice.account_id))
    if invoice_format == "html":
        sys.stdout.write(invoice_html(invoice, account.name, credited))
    else:
        print_json(invoice_json(invoice, credited))


@app.command("credit", context_settings={"ignore_unknown_options": True})
def credit(
    number: Annotated[str, typer.Argument(help="Invoice number.")],
    amount: Annotated[str, typer.Argument(help="Currency units to credit, e.g. 4.00.")],
    reason: Annotated[str, typer.Option(help="Why (kept with the credit note).")],
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issue a credit note against an invoice (never an edit): the amount is refunded."""
    as_json = output_format(output, as_json) == "json"
    amount_nano = run(lambda: parse_amount(amount, param="amount"))
    with store(home, database_url) as engine:
        note, refund = run(
            lambda: periods.credit_note(engine, number, amount_nano, reason, actor=cli_actor())
        )
    if as_json:
        print_json({"number": note, "invoice": number, "transfer_id": refund.id})
    else:
        typer.echo(f"credit note {note}: {format_amount(amount_nano)} refunded on {number}")
