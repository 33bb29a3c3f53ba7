"""``tokenmill billing close-period``: plan fees and invoices of a finished month."""

from __future__ import annotations

import os
from contextlib import ExitStack
from typing import Annotated, Any

import httpx
import typer

from tokenmill.billing import periods
from tokenmill.cli.common import (
    DatabaseOption,
    FormatOption,
    HomeOption,
    JsonOption,
    output_format,
    print_json,
    run,
    store,
)
from tokenmill.cli.money import ASK_TIMEOUT_S, AdminTokenOption, GatewayUrlOption, cli_actor
from tokenmill.cli.money import gateway_url as find_gateway_url
from tokenmill.money import format_amount
from tokenmill.retail.invoices import period_bounds, previous_period
from tokenmill.store.database import now_ms
from tokenmill.store.ownership import gateway_running, owned_meanwhile

app = typer.Typer(help="Billing periods.", no_args_is_help=True)


@app.command("close-period")
def close_period(
    period: Annotated[
        str | None, typer.Option(help="YYYY-MM (UTC); default: the previous month.")
    ] = None,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    url: GatewayUrlOption = None,
    admin_token: AdminTokenOption = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Book the plan fees of a finished month and issue its invoices (postpaid accounts).

    Idempotent: run it again and nothing is booked or issued twice. While a gateway serves
    the database the fees go through it (requests in flight hold funds only it knows of).
    """
    as_json = output_format(output, as_json) == "json"
    chosen = previous_period(now_ms()) if period is None else period
    run(lambda: period_bounds(chosen))
    with store(home, database_url) as engine:
        if gateway_running(engine):
            report = _through_gateway(find_gateway_url(engine, url), admin_token, chosen)
        else:
            with ExitStack() as owned:  # fences a gateway that lost its lock (ownership.py)
                run(lambda: owned.enter_context(owned_meanwhile(engine)))
                spendable = periods.store_spendable(engine)
                report = run(
                    lambda: (
                        periods.close_period(
                            engine, chosen, actor=cli_actor(), spendable=spendable
                        ).__dict__
                    )
                )
    if as_json:
        print_json(report)
        return
    typer.echo(f"period {report['period']} closed")
    for fee in report["fees"]:
        typer.echo(
            f"  plan fee {fee['plan']} of {fee['account_id']}: paid"
            f" {format_amount(fee['paid_nano'])}"
            + (
                f", {format_amount(fee['loss_nano'])} unpaid (plan lapsed)"
                if fee["loss_nano"]
                else ""
            )
        )
    for number in report["invoices_issued"]:
        typer.echo(f"  issued {number}")
    if report["invoices_existing"]:
        typer.echo(f"  already issued: {', '.join(report['invoices_existing'])}")


def _through_gateway(url: str | None, token: str | None, period: str) -> dict[str, Any]:
    token = token or os.environ.get("TOKENMILL_ADMIN_TOKEN")
    if not url or not token:
        typer.echo(
            "error: a gateway serves this database, so the period is closed through it: give"
            " --url and --admin-token, or set TOKENMILL_URL and TOKENMILL_ADMIN_TOKEN",
            err=True,
        )
        raise typer.Exit(1)
    try:
        response = httpx.post(
            f"{url.rstrip('/')}/admin/v1/billing/close-period",
            json={"period": period},
            headers={"Authorization": f"Bearer {token}"},
            timeout=ASK_TIMEOUT_S * 30,
        )
    except httpx.HTTPError as exc:
        typer.echo(f"error: the gateway at {url} did not answer: {exc}", err=True)
        raise typer.Exit(1) from exc
    body = response.json()
    if response.status_code != 200:
        typer.echo(f"error: {body.get('error', {}).get('message', response.text[:200])}", err=True)
        raise typer.Exit(1)
    assert isinstance(body, dict)
    return body
