"""``tokenmill plans list|set``: monthly bundles (fee, included tokens, off-peak ratios)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from tokenmill.billing import service as billing
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
from tokenmill.errors import InvalidRequest
from tokenmill.retail.plan_specs import plan_to_spec

app = typer.Typer(
    help="Plans: monthly fee, included tokens, time-of-day prices.", no_args_is_help=True
)


@app.command("list")
def list_(
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: RowsFormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every plan, as written (JSON: an object of plans by name; CSV: a line per plan)."""
    shown_as = output_format(output, as_json)
    with store(home, database_url) as engine:
        plans = run(lambda: billing.list_plans(engine))
    if shown_as == "json":
        print_json(plans)
        return
    if shown_as == "csv":
        print_records("csv", [{"name": name, **spec} for name, spec in plans.items()], ["name"])
        return
    print_table(
        "plans",
        ["name", "currency", "monthly fee", "time zone", "included tokens per month"],
        [
            (
                name,
                spec["currency"],
                spec["monthly_fee"],
                spec["timezone"],
                ", ".join(f"{k}: {v:,}" for k, v in spec["included"].items()),
            )
            for name, spec in plans.items()
        ],
    )


@app.command("set")
def set_(
    name: Annotated[str, typer.Argument(help="Plan name.")],
    file: Annotated[
        Path, typer.Option("--file", help="The plan as YAML or JSON (see docs/billing.md).")
    ],
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create or replace a plan; subscribers get the new terms from now on."""
    as_json = output_format(output, as_json) == "json"

    def read() -> object:
        try:
            return yaml.safe_load(file.read_text("utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise InvalidRequest(f"cannot read the plan from {file}: {exc}") from exc

    spec = run(read)
    with store(home, database_url) as engine:
        plan = run(lambda: billing.set_plan(engine, name, spec, actor=cli_actor()))
    if as_json:
        print_json({"name": plan.name, **plan_to_spec(plan)})
    else:
        typer.echo(f"plan {plan.name} saved")
