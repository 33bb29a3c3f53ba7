"""``accounts limits`` and ``keys limits``: rate limits, shown or set."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from tokenmill.access import service
from tokenmill.cli.common import print_json, print_records, print_table, run, store
from tokenmill.cli.money import cli_actor
from tokenmill.config import load_config
from tokenmill.errors import TokenmillError
from tokenmill.retail.rate_limits import ALL_MODELS, FIELDS, RateLimit, limits_to_spec

ModelOption = Annotated[
    str, typer.Option("--model", help="A model id the gateway serves, or * for all models.")
]
RequestsOption = Annotated[
    int | None, typer.Option("--rpm", help="Requests per minute.", show_default=False)
]
TokensOption = Annotated[
    int | None,
    typer.Option("--tpm", help="Tokens per minute (prompt bound + max_tokens reserved)."),
]
ConcurrentOption = Annotated[
    int | None, typer.Option("--concurrent", help="Requests in flight at most.")
]
ClearOption = Annotated[bool, typer.Option("--clear", help="Remove the limits of --model.")]


def rate_limits_command(
    entity: str,
    ref: str,
    model: str,
    limit: tuple[int | None, int | None, int | None],
    clear: bool,
    database: tuple[str | None, str | None],
    shown_as: str,
) -> None:
    """Show the limits (no option given) or set those of ``model`` (omitted kinds: none), in
    ``shown_as``: table, json or csv (a line per model)."""
    home, database_url = database
    if clear and any(value is not None for value in limit):
        typer.echo("error: give --clear or limits, not both", err=True)
        raise typer.Exit(1)
    setting = clear or any(value is not None for value in limit)
    wanted = RateLimit() if clear else run(lambda: RateLimit(*limit))
    if setting:
        _warn_unknown(model)
    with store(home, database_url) as engine:
        if setting:
            entity_id, limits = run(
                lambda: service.set_rate_limit(
                    engine, entity, ref, model, wanted, actor=cli_actor()
                )
            )
        else:
            entity_id, limits = run(lambda: service.rate_limits_of(engine, entity, ref))
    spec = limits_to_spec(limits)
    if shown_as == "json":
        print_json({"id": entity_id, "rate_limits": spec})
        return
    if shown_as == "csv":
        records = [{"id": entity_id, "model": name, **entry} for name, entry in spec.items()]
        print_records("csv", records, ("id", "model", *FIELDS))
        return
    rows = [
        (
            name,
            entry.get("requests_per_minute", ""),
            entry.get("tokens_per_minute", ""),
            entry.get("concurrent_count_max", ""),
        )
        for name, entry in spec.items()
    ]
    print_table(
        f"rate limits of {entity_id}", ("model", "requests/min", "tokens/min", "in flight"), rows
    )


def _warn_unknown(model: str) -> None:
    """The CLI does not know which configuration the gateway runs with; warn when the model
    is not in the one it can see ($TOKENMILL_CONFIG, else the built-in default)."""
    if model == ALL_MODELS:
        return
    configured = os.environ.get("TOKENMILL_CONFIG")
    try:
        models = load_config(Path(configured) if configured else None).models
    except TokenmillError:
        return
    if model not in models:
        typer.echo(
            f"warning: '{model}' is not a model of {configured or 'the default configuration'}"
            f" ({', '.join(sorted(models))}); the limit applies only if the gateway serves it",
            err=True,
        )


__all__ = [
    "ALL_MODELS",
    "ClearOption",
    "ConcurrentOption",
    "ModelOption",
    "RequestsOption",
    "TokensOption",
    "rate_limits_command",
]
