"""``tokenmill plan scenario``: a token factory over years, while prices fall and demand grows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tokenmill.cli import charts
from tokenmill.cli import plan_options as opt
from tokenmill.cli.common import (
    JsonOption,
    RowsFormatOption,
    output_format,
    print_json,
    print_records,
    print_table,
    run,
)
from tokenmill.economics.scenario import ScenarioQuery, scenario_answer


def register(app: typer.Typer) -> None:
    app.command("scenario")(scenario_command)


def _chart(shown: dict[str, Any], path: Path) -> None:
    def line(key: str) -> list[tuple[float, float]]:
        return [(float(year["year"]), float(year[key]) / 1e6) for year in shown["years"]]

    series = {
        "revenue": line("revenue_usd"),
        "cash flow": line("cash_flow_usd"),
        "cumulative cash": line("cumulative_cash_usd"),
    }
    title = f"{shown['model']}: the buildout year by year"
    charts.write(charts.Chart(title, "year", "million USD", series=series), path)


def scenario_command(
    model: opt.Model = "llama-3.3-70b",
    tokens_per_day: Annotated[
        int, typer.Option(help="Output tokens per day at the start.")
    ] = 100_000_000_000,
    input_tokens: opt.InputTokens = 1000,
    output_tokens: opt.OutputTokens = 500,
    itl_ms: Annotated[float, typer.Option(help="Inter-token latency target, ms.")] = 50,
    start: Annotated[str, typer.Option(help="First month, ISO date.")] = "2026-01-01",
    years: Annotated[int, typer.Option(help="Years to simulate.")] = 6,
    demand_growth: Annotated[str, typer.Option(help="Demand multiplier per year.")] = "2",
    price_multiplier: Annotated[
        str, typer.Option(help="Token price multiplier per year (0.5: halves).")
    ] = "0.5",
    price_input: Annotated[str | None, typer.Option(help="USD per million prompt tokens.")] = None,
    price_output: Annotated[
        str | None, typer.Option(help="USD per million output tokens (default: market's lowest).")
    ] = None,
    lead_months: Annotated[
        int, typer.Option(help="Months from order to serving (power, site, delivery).")
    ] = 12,
    gpu: Annotated[
        list[str] | None, typer.Option("--gpu", help="Candidate GPU (repeat); default: all.")
    ] = None,
    build: Annotated[
        str, typer.Option(help="demand (meet it whatever it costs) or profitable.")
    ] = "demand",
    catalog_file: opt.CatalogFile = None,
    chart: opt.ChartFile = None,
    output: RowsFormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cash flow year by year, payback, and when the fleet stops covering its cost
    (``--chart``: revenue, cash flow and cumulative cash by year; ``--format csv``: a line
    per year)."""
    shown_as = output_format(output, as_json)

    def answer() -> dict[str, Any]:
        d = opt.decimal_of
        growth = d(demand_growth, "--demand-growth")
        multiplier = d(price_multiplier, "--price-multiplier")
        assert growth is not None and multiplier is not None
        query = ScenarioQuery(
            model=model,
            output_tokens_per_day=tokens_per_day,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            itl_ms_max=itl_ms,
            start=start,
            years=years,
            demand_growth_per_year=growth,
            price_multiplier_per_year=multiplier,
            price_input_usd_per_mtok=d(price_input, "--price-input"),
            price_output_usd_per_mtok=d(price_output, "--price-output"),
            lead_months=lead_months,
            gpus=tuple(gpu or ()),
            build=build,
        )
        shown = scenario_answer(query, opt.catalogs_of(catalog_file))
        if chart is not None:
            _chart(shown, chart)
        return shown

    shown = run(answer)
    if shown_as == "json":
        print_json(shown)
        return
    if shown_as == "csv":
        print_records("csv", shown["years"])
        return
    rows = [
        (
            year["year"],
            f"{year['demand_output_tokens_per_day']:,}",
            year["served_ratio"],
            opt.usd(year["price_usd_per_mtok_output"], 4),
            f"{year['gpus_online']:,}",
            opt.usd(year["revenue_usd"], 0),
            opt.usd(year["cash_cost_usd"], 0),
            opt.usd(year["capital_usd"], 0),
            opt.usd(year["cash_flow_usd"], 0),
            opt.usd(year["cumulative_cash_usd"], 0),
        )
        for year in shown["years"]
    ]
    print_table(
        f"{shown['model']} from {shown['start']}: cash flow by year (USD)",
        (
            "year",
            "demand/day",
            "served",
            "price/M out",
            "GPUs",
            "revenue",
            "running",
            "capital",
            "cash flow",
            "cumulative",
        ),
        rows,
    )
    stops = ", ".join(
        f"{kind['gpu']} {kind['stops_covering_cash_cost'] or 'never'}" for kind in shown["kinds"]
    )
    print_table(
        "verdict",
        ("question", "answer"),
        [
            ("payback (cumulative cash >= 0 for good)", shown["payback"] or "not within the years"),
            ("fleet stops covering its full cost", shown["fleet_stops_covering_full_cost"] or "no"),
            ("each GPU kind stops covering its running cost", stops),
        ],
    )
