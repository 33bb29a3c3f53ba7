"""``tokenmill prices list|set``: the price book (per model and currency, by effective time)."""

from __future__ import annotations

from typing import Annotated

import typer

from tokenmill.billing import service as billing
from tokenmill.cli.common import (
    DatabaseOption,
    FormatOption,
    HomeOption,
    JsonOption,
    RowsFormatOption,
    output_format,
    parse_time,
    print_json,
    print_records,
    print_table,
    run,
    store,
    when,
)
from tokenmill.cli.money import cli_actor
from tokenmill.money import format_amount, parse_amount
from tokenmill.retail.rating import Price
from tokenmill.store.database import now_ms

app = typer.Typer(
    help="The price book: what each model costs per million tokens.", no_args_is_help=True
)

AmountOption = Annotated[str, typer.Option(help="Currency units per million tokens, e.g. 0.20.")]


@app.command("list")
def list_(
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: RowsFormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every price, by model, currency and the instant it takes effect."""
    shown_as = output_format(output, as_json)
    with store(home, database_url) as engine:
        prices = run(lambda: billing.list_prices(engine))
    if shown_as != "table":
        print_records(shown_as, [billing.price_json(p) for p in prices])
        return
    print_table(
        "prices per million tokens",
        [
            "model",
            "currency",
            "from (UTC)",
            "input",
            "cache read",
            "cache write",
            "output",
            "per request",
        ],
        [
            (
                p.model,
                p.currency,
                when(p.effective_from_ms) if p.effective_from_ms else "always",
                format_amount(p.input_nano_per_mtok),
                format_amount(p.cached_input_nano_per_mtok),
                format_amount(p.cache_write_input_nano_per_mtok),
                format_amount(p.output_nano_per_mtok),
                format_amount(p.request_fee_nano),
            )
            for p in prices
        ],
    )


@app.command("set")
def set_(
    model: Annotated[str, typer.Argument(help="The model id clients ask for.")],
    input: AmountOption,
    output: AmountOption = "0",
    cached_input: Annotated[
        str | None,
        typer.Option(help="Per million input tokens read from a prompt cache (default: input)."),
    ] = None,
    cache_write_input: Annotated[
        str | None,
        typer.Option(help="Per million input tokens written to a prompt cache (default: input)."),
    ] = None,
    request_fee: Annotated[str, typer.Option(help="Per request, in currency units.")] = "0",
    currency: Annotated[str, typer.Option(help="ISO 4217 code.")] = "USD",
    effective_from: Annotated[
        str | None, typer.Option(help="ISO 8601 instant it takes effect (default: now).")
    ] = None,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    print_format: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a price; requests that start from its instant on pay it (older usage keeps its
    price). A running gateway applies it within a second."""
    as_json = output_format(print_format, as_json) == "json"
    effective = parse_time(effective_from, "--effective-from")

    def price() -> Price:
        input_nano = parse_amount(input, param="input")

        def or_input(amount: str | None, param: str) -> int:
            return input_nano if amount is None else parse_amount(amount, param=param)

        return Price(
            model=model,
            currency=currency,
            effective_from_ms=now_ms() if effective is None else effective,
            input_nano_per_mtok=input_nano,
            output_nano_per_mtok=parse_amount(output, param="output"),
            cached_input_nano_per_mtok=or_input(cached_input, "cached_input"),
            cache_write_input_nano_per_mtok=or_input(cache_write_input, "cache_write_input"),
            request_fee_nano=parse_amount(request_fee, param="request_fee"),
        )

    made = run(price)
    with store(home, database_url) as engine:
        run(lambda: billing.set_price(engine, made, actor=cli_actor()))
    if as_json:
        print_json(billing.price_json(made))
    else:
        typer.echo(
            f"{model}: {format_amount(made.input_nano_per_mtok)} in,"
            f" {format_amount(made.output_nano_per_mtok)} out {currency} per million tokens"
            f" from {when(made.effective_from_ms)} UTC"
        )
