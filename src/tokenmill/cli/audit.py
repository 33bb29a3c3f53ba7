"""``tokenmill audit``: recompute the ledger and check its invariants; exit 1 on a breach."""

from __future__ import annotations

import typer

from tokenmill.billing.audit import run_audit
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


def audit(
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute every balance from the transfers and check the ledger's invariants
    (balances sum to zero, cached = recomputed, no balance below its floor, each charged
    request has exactly its transfer). Exits 1 if any is broken."""
    as_json = output_format(output, as_json) == "json"
    with store(home, database_url) as engine:
        report = run(lambda: run_audit(engine))
    if as_json:
        print_json(
            {
                "ok": report.ok,
                "transfers_count": report.transfers_count,
                "records_count": report.records_count,
                "accounts_count": report.accounts_count,
                "breaches": [breach.__dict__ for breach in report.breaches],
            }
        )
    else:
        typer.echo(
            f"audited {report.transfers_count} transfers, {report.records_count} usage records,"
            f" {report.accounts_count} accounts"
        )
        for breach in report.breaches:
            typer.echo(f"BREACH {breach.invariant} {breach.subject}: {breach.detail}")
        typer.echo("ok: every invariant holds" if report.ok else "FAILED")
    if not report.ok:
        raise typer.Exit(1)
