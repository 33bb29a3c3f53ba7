"""``tokenmill accounts``: create, list, show, disable, enable; money: topup, adjust, terms,
budget, limits, subscribe, transfers, statement."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import typer

from tokenmill.access import service
from tokenmill.billing import service as billing
from tokenmill.billing.statements import build_statement
from tokenmill.cli.common import (
    DatabaseOption,
    FormatOption,
    HomeOption,
    JsonOption,
    RowsFormatOption,
    iso,
    output_format,
    parse_period,
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
from tokenmill.cli.money import (
    AdminTokenOption,
    GatewayUrlOption,
    cli_actor,
    debit_via_gateway,
    funds_json,
    set_budget_command,
)
from tokenmill.money import format_amount, parse_amount
from tokenmill.retail.ledger import Transfer
from tokenmill.retail.statements import month_of, statement_csv, statement_html, statement_json
from tokenmill.store.accounts import AccountRow
from tokenmill.store.database import now_ms
from tokenmill.store.ownership import gateway_running, owned_meanwhile

app = typer.Typer(help="Customer accounts.", no_args_is_help=True)


def account_json(row: AccountRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "status": row.status,
        "created_at": iso(row.created_at_ms),
        "disabled_at": iso(row.disabled_at_ms),
        "currency": row.currency,
        "credit_limit": format_amount(row.credit_limit_nano),
        "plan": row.plan,
    }


def transfer_json(transfer: Transfer) -> dict[str, Any]:
    return {
        "id": transfer.id,
        "kind": transfer.kind,
        "debit_account": transfer.debit_account,
        "credit_account": transfer.credit_account,
        "amount": format_amount(transfer.amount_nano),
        "amount_nano": transfer.amount_nano,
        "currency": transfer.currency,
        "reference": transfer.reference,
        "created_at": iso(transfer.created_at_ms),
    }


def _show(rows: list[AccountRow], shown_as: str, title: str) -> None:
    """Accounts as a table, or one JSON object (CSV line) per account."""
    if shown_as != "table":
        print_records(shown_as, [account_json(row) for row in rows])
        return
    print_table(
        title,
        ["id", "name", "status", "created (UTC)"],
        [(r.id, r.name, r.status, when(r.created_at_ms)) for r in rows],
    )


def _show_one(row: AccountRow, shown_as: str, title: str) -> None:
    if shown_as == "json":
        print_json(account_json(row))
    else:
        _show([row], shown_as, title)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A unique account name.")],
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an account."""
    shown_as = output_format(output, as_json)
    with store(home, database_url) as engine:
        row = run(lambda: service.create_account(engine, name, actor=cli_actor()))
    _show_one(row, shown_as, "account created")


@app.command("list")
def list_(
    limit: Annotated[int, typer.Option(help="At most this many.")] = 1000,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: RowsFormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """List accounts, oldest first."""
    shown_as = output_format(output, as_json)
    with store(home, database_url) as engine:
        rows = run(lambda: service.list_accounts(engine, limit))
    _show(rows, shown_as, "accounts")


@app.command("show")
def show(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    url: GatewayUrlOption = None,
    admin_token: AdminTokenOption = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one account with its balance, held and available funds.

    With a running gateway reachable (and an admin token) the funds come from it, so holds
    of requests in flight show; otherwise from the store.
    """
    shown_as = output_format(output, as_json)
    with store(home, database_url) as engine:
        row = run(lambda: service.find_account(engine, account))
        funds = funds_json(engine, row, url, admin_token)
    shown = {**account_json(row), **funds}
    if shown_as == "json":
        print_json(shown)
        return
    print_table(
        "account",
        ["id", "name", "status", "balance", "held", "available", "source"],
        [
            (
                row.id,
                row.name,
                row.status,
                f"{funds['balance']} {row.currency}",
                format_amount(funds["held_nano"]),
                format_amount(funds["available_nano"]),
                funds["funds_source"],
            )
        ],
    )


KindOption = Annotated[
    str, typer.Option("--kind", help="topup (paid), grant (free credit) or refund.")
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        help="Retrying with the same key applies once; a new key is made if omitted.",
    ),
]
ReferenceOption = Annotated[
    str | None, typer.Option("--reference", help="Free text: a payment id, a ticket.")
]


def _move(
    account: str,
    amount: str,
    kind: str,
    key: str | None,
    reference: str | None,
    home: str | None,
    database_url: str | None,
    as_json: bool,
    url: str | None = None,
    admin_token: str | None = None,
) -> None:
    with store(home, database_url) as engine:
        amount_nano = run(
            lambda: parse_amount(amount, param="amount", allow_negative=kind == "adjustment")
        )
        if amount_nano < 0 and gateway_running(engine):
            shown = debit_via_gateway(engine, account, amount, key, reference, url, admin_token)
            if as_json:
                print_json(shown)
            else:
                typer.echo(
                    f"adjustment of {format_amount(amount_nano)} {shown['currency']} applied"
                    f" through the running gateway (transfer {shown['id']})"
                )
            return
        # A debit made here, with no gateway, owns the database meanwhile: a gateway that
        # lost its lock a moment ago (its holds unknown to the store) is fenced, not raced.
        with ExitStack() as owned:
            if amount_nano < 0:
                run(lambda: owned.enter_context(owned_meanwhile(engine)))
            posted = run(
                lambda: billing.move_funds(
                    engine,
                    account,
                    amount_nano,
                    kind=kind,
                    idempotency_key=key,
                    actor=cli_actor(),
                    reference=reference,
                )
            )
        account_id = service.find_account(engine, account).id
        balance = billing.balance_of(engine, account_id)
    shown = {**transfer_json(posted.transfer), "replayed": posted.replayed}
    shown["balance"] = format_amount(balance)
    if as_json:
        print_json(shown)
        return
    done = "already applied (same idempotency key)" if posted.replayed else "applied"
    # An adjustment goes either way: its sign says which.
    sign = "-" if posted.transfer.debit_account == account_id else "+"
    typer.echo(
        f"{posted.transfer.kind} of {sign if kind == 'adjustment' else ''}{shown['amount']}"
        f" {posted.transfer.currency} {done};"
        f" balance {shown['balance']} {posted.transfer.currency} (transfer {posted.transfer.id})"
    )


# A negative amount ("-3.00") is an argument, not an unknown option.
NEGATIVE_AMOUNTS = {"ignore_unknown_options": True}


@app.command("topup", context_settings=NEGATIVE_AMOUNTS)
def topup(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    amount: Annotated[str, typer.Argument(help="Currency units, e.g. 12.50.")],
    idempotency_key: KeyOption = None,
    kind: KindOption = "topup",
    reference: ReferenceOption = None,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add funds to an account (spendable in a running gateway within a second)."""
    as_json = output_format(output, as_json) == "json"
    if kind not in ("topup", "grant", "refund"):
        raise typer.BadParameter("must be topup, grant or refund", param_hint="--kind")
    _move(account, amount, kind, idempotency_key, reference, home, database_url, as_json)


@app.command("adjust", context_settings=NEGATIVE_AMOUNTS)
def adjust(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    amount: Annotated[str, typer.Argument(help="Signed currency units, e.g. -3.00.")],
    idempotency_key: KeyOption = None,
    reference: ReferenceOption = None,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    url: GatewayUrlOption = None,
    admin_token: AdminTokenOption = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Correct a balance up or down (never below its floor), with a reason as reference.

    While a gateway serves the database, a debit goes through its admin API (requests in
    flight hold funds only it knows of): give --url and --admin-token (or the environment).
    """
    as_json = output_format(output, as_json) == "json"
    _move(
        account,
        amount,
        "adjustment",
        idempotency_key,
        reference,
        home,
        database_url,
        as_json,
        url,
        admin_token,
    )


@app.command("terms")
def terms(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    currency: Annotated[
        str | None, typer.Option(help="ISO 4217 code; only before the first transfer.")
    ] = None,
    credit_limit: Annotated[
        str | None, typer.Option(help="Postpaid credit limit, e.g. 100.00; 0 for prepaid.")
    ] = None,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set an account's currency or credit limit (prepaid or postpaid)."""
    shown_as = output_format(output, as_json)
    with store(home, database_url) as engine:
        row = run(
            lambda: billing.set_terms(
                engine,
                account,
                currency=currency,
                credit_limit_nano=(
                    None
                    if credit_limit is None
                    else parse_amount(credit_limit, param="credit_limit")
                ),
                actor=cli_actor(),
            )
        )
    _show_one(row, shown_as, "account terms")


@app.command("budget")
def budget(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    daily: Annotated[str | None, typer.Option(help="Spend per UTC day, e.g. 5.00.")] = None,
    monthly: Annotated[str | None, typer.Option(help="Spend per UTC month.")] = None,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cap what an account may spend per day and per month (omitted: no cap)."""
    as_json = output_format(output, as_json) == "json"
    set_budget_command("account", account, daily, monthly, home, database_url, as_json)


@app.command("subscribe")
def subscribe(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    plan: Annotated[str, typer.Argument(help="Plan name, or 'none' for pay as you go.")],
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Put an account on a plan from now on (its included tokens count from this month)."""
    as_json = output_format(output, as_json) == "json"
    with store(home, database_url) as engine:
        row = run(
            lambda: billing.subscribe(
                engine, account, None if plan == "none" else plan, actor=cli_actor()
            )
        )
    if as_json:
        print_json({**account_json(row), "plan": row.plan})
    else:
        typer.echo(f"account {row.name}: {row.plan or 'pay as you go'}")


@app.command("transfers")
def transfers(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    limit: Annotated[int, typer.Option(help="At most this many.")] = 1000,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: RowsFormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the ledger transfers of an account, oldest first."""
    shown_as = output_format(output, as_json)
    with store(home, database_url) as engine:
        row = run(lambda: service.find_account(engine, account))
        found = billing.transfers_of(engine, row.id, limit=limit)
    if shown_as != "table":
        print_records(shown_as, [transfer_json(t) for t in found])
        return
    print_table(
        f"transfers of {row.name}",
        ["when (UTC)", "kind", "amount", "debit", "credit", "reference"],
        [
            (
                when(t.created_at_ms),
                t.kind,
                f"{'-' if t.debit_account == row.id else '+'}{format_amount(t.amount_nano)}",
                t.debit_account,
                t.credit_account,
                t.reference,
            )
            for t in found
        ],
    )


@app.command("disable")
def disable(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Disable an account: its keys stop working (within a second in a running gateway)."""
    shown_as = output_format(output, as_json)
    with store(home, database_url) as engine:
        row = run(
            lambda: service.set_account_status(engine, account, "disabled", actor=cli_actor())
        )
    _show_one(row, shown_as, "account disabled")


@app.command("enable")
def enable(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Enable a disabled account again."""
    shown_as = output_format(output, as_json)
    with store(home, database_url) as engine:
        row = run(lambda: service.set_account_status(engine, account, "active", actor=cli_actor()))
    _show_one(row, shown_as, "account enabled")


@app.command("statement")
def statement(
    account: Annotated[str, typer.Argument(help="Account id or name.")],
    since: Annotated[
        str | None, typer.Option(help="ISO 8601 start (default: this UTC month's first day).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 end, exclusive.")] = None,
    output: Annotated[
        Literal["json", "csv", "html"] | None,
        typer.Option("--format", help="json (default), csv or html (a printable page)."),
    ] = None,
    out: Annotated[str | None, typer.Option(help="Write to this file instead of stdout.")] = None,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """A statement for a period: opening balance, top-ups and other movements, usage by day
    and model, closing balance."""
    statement_format = output_format(output, as_json, default="json")
    since_ms, until_ms = parse_period(since, until, month_of(now_ms()))
    assert since_ms is not None and until_ms is not None
    with store(home, database_url) as engine:
        found = run(lambda: build_statement(engine, account, since_ms, until_ms))
    if statement_format == "json":
        text = orjson.dumps(statement_json(found), option=orjson.OPT_INDENT_2).decode() + "\n"
    else:
        text = statement_csv(found) if statement_format == "csv" else statement_html(found)
    if out is None:
        sys.stdout.write(text)
    else:
        Path(out).write_text(text, "utf-8")
        typer.echo(f"statement written to {out}")


@app.command("limits")
def limits(
    account: Annotated[str, typer.Argument(help="The account's id or name.")],
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
    """Show the account's rate limits (all its keys together), or set them for one model."""
    shown_as = output_format(output, as_json)
    rate_limits_command(
        "account", account, model, (rpm, tpm, concurrent), clear, (home, database_url), shown_as
    )
