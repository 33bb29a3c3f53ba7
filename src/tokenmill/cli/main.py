"""The ``tokenmill`` command: one typer app, one module per command group."""

from __future__ import annotations

import typer

from tokenmill.cli import accounts, billing, invoices, keys, plan, plans, prices, report
from tokenmill.cli.audit import audit
from tokenmill.cli.backup import backup, restore
from tokenmill.cli.bench import bench
from tokenmill.cli.fleet import fleet
from tokenmill.cli.serve import serve
from tokenmill.cli.usage import usage

app = typer.Typer(
    name="tokenmill",
    help="Sell tokens from your own GPUs and upstream vendors.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve)
app.command("usage")(usage)
app.command("audit")(audit)
app.command("fleet")(fleet)
app.command("bench")(bench)
app.command("backup")(backup)
app.command("restore")(restore)
app.add_typer(accounts.app, name="accounts")
app.add_typer(keys.app, name="keys")
app.add_typer(prices.app, name="prices")
app.add_typer(plans.app, name="plans")
app.add_typer(invoices.app, name="invoices")
app.add_typer(billing.app, name="billing")
app.add_typer(report.app, name="report")
app.add_typer(plan.app, name="plan")


def main() -> None:
    app()
