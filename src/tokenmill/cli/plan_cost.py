"""``tokenmill plan cost`` and ``plan price``: what a pool's tokens cost, and what to charge."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tokenmill.cli import charts
from tokenmill.cli import plan_options as opt
from tokenmill.cli.common import (
    FormatOption,
    JsonOption,
    output_format,
    print_json,
    print_table,
    run,
)
from tokenmill.economics.costing import CostQuery, cost_answer, cost_by_gpu, price_answer
from tokenmill.errors import InvalidRequest

Money = Annotated[str | None, typer.Option(help="US dollars, decimal text.")]
Ratio = Annotated[str | None, typer.Option(help="A ratio, decimal text.")]
CHAIN_NAMES = {
    "gpu_maker": "GPU maker",
    "network_and_logistics": "network, storage and logistics",
    "datacentre_builder": "data-centre builder",
    "power_and_cooling": "power equipment and cooling",
    "energy": "energy",
    "operations": "operations",
    "cloud_provider": "cloud provider (rent)",
    "operator_margin": "operator's margin",
}


def register(app: typer.Typer) -> None:
    # One command under two names: they share every option, and the name picks the answer.
    cost_help = (
        "Cost per hour of a pool and per million tokens, and where a token's dollar goes"
        " (--chart); --chart-by-gpu compares the catalog's GPUs."
    )
    price_help = "The price per million tokens for a target margin, beside the market's prices."
    app.command("cost", help=cost_help)(cost_or_price)
    app.command("price", help=price_help)(cost_or_price)


def _query(shared: dict[str, Any]) -> CostQuery:
    d = opt.decimal_of
    basis = shared["basis"]
    if basis not in ("owned", "rented"):
        raise InvalidRequest("--basis is owned or rented", param="basis")
    return CostQuery(
        perf=opt.perf_query(shared["replica"], shared["shape"]),
        pool_gpus=shared["pool_gpus"],
        basis=basis,
        purchase_usd_per_gpu=d(shared["purchase"], "--purchase"),
        depreciation_years=d(shared["depreciation_years"], "--depreciation-years"),
        rent_usd_per_gpu_hour=d(shared["rent"], "--rent"),
        energy_usd_per_kwh=d(shared["energy"], "--energy"),
        pue=d(shared["pue"], "--pue"),
        hosting_usd_per_month=d(shared["hosting"], "--hosting"),
        operations_usd_per_month=d(shared["operations"], "--operations"),
        utilization_ratio=d(shared["utilization"], "--utilization"),
        itl_ms_max=shared["itl_ms_max"],
        price_usd_per_mtok=d(shared.get("price"), "--price"),
    )


def cost_or_price(
    context: typer.Context,
    gpu: opt.Gpu,
    model: opt.Model,
    gpus: opt.Gpus = 1,
    precision: opt.Precision = "bf16",
    kv_precision: opt.KvPrecision = None,
    parallel: opt.Parallel = "tp",
    input_tokens: opt.InputTokens = 1000,
    output_tokens: opt.OutputTokens = 1000,
    concurrency: opt.Concurrency = "max",
    pool_gpus: Annotated[int | None, typer.Option(help="GPUs in the pool.")] = None,
    basis: Annotated[str, typer.Option(help="owned (bought) or rented.")] = "owned",
    purchase: Money = None,
    depreciation_years: Ratio = None,
    rent: Money = None,
    energy: Money = None,
    pue: Ratio = None,
    hosting: Money = None,
    operations: Money = None,
    utilization: Ratio = None,
    itl_ms_max: Annotated[
        float | None, typer.Option(help="Latency target: mean ms between tokens at most.")
    ] = None,
    price: Annotated[
        str | None, typer.Option(help="cost: your price per million output tokens (USD).")
    ] = None,
    margin: Annotated[
        str | None, typer.Option(help="price: the target gross margin (default 0.4).")
    ] = None,
    catalog_file: opt.CatalogFile = None,
    chart: opt.ChartFile = None,
    chart_by_gpu: Annotated[
        Path | None,
        typer.Option(help="Draw the cost per million output tokens on every GPU: .png|.html."),
    ] = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    as_json = output_format(output, as_json) == "json"
    advice = context.info_name == "price"
    shared = dict(locals())
    shared["replica"] = (gpu, model, gpus, precision, kv_precision, parallel)
    shared["shape"] = (input_tokens, output_tokens, concurrency)

    def answer() -> dict[str, Any]:
        query = _query(shared)
        catalogs = opt.catalogs_of(catalog_file)
        if advice:
            margin_ratio = opt.decimal_of(margin or "0.4", "--margin")
            assert margin_ratio is not None
            shown = price_answer(query, margin_ratio, catalogs)
            cost = shown["cost"]
        else:
            shown = cost = cost_answer(query, catalogs)
        if chart is not None:
            _chain_chart(cost, chart)
        if chart_by_gpu is not None:
            _by_gpu_chart(query, catalogs, chart_by_gpu)
        return shown

    shown = run(answer)
    if as_json:
        print_json(shown)
    elif advice:
        _print_price(shown)
    else:
        _print_cost(shown)


def _chain_chart(shown: dict[str, Any], path: Path) -> None:
    bars = [
        (CHAIN_NAMES[name], float(value))
        for name, value in shown["chain_usd_per_mtok"].items()
        if float(value) != 0 or name == "operator_margin"
    ]
    title = f"where a token's dollar goes: {shown['model']} on {shown['gpu']}"
    charts.write(charts.Chart(title, "", "USD per million output tokens", bars=bars), path)


def _by_gpu_chart(query: CostQuery, catalogs: Any, path: Path) -> None:
    rows = cost_by_gpu(query, catalogs)
    if not rows:
        raise InvalidRequest("no catalog GPU holds this model", param="chart_by_gpu")
    bars = [
        (
            f"{row['gpus_per_replica']} x {row['gpu']} {row['precision']}",
            float(row["output_all_in_usd_per_mtok"]),
        )
        for row in rows
    ]
    title = f"{query.perf.model}: cost per million output tokens ({query.basis})"
    charts.write(charts.Chart(title, "", "USD per million output tokens", bars=bars), path)


def _print_cost(shown: dict[str, Any]) -> None:
    title = (
        f"{shown['model']} on {shown['pool_gpus']} x {shown['gpu']} ({shown['basis']},"
        f" {shown['replicas']} replicas of {shown['gpus_per_replica']}), {shown['input']} in /"
        f" {shown['output']} out, {shown['concurrency']} at a time"
    )
    hour = shown["cost_usd_per_hour"]
    print_table(title, ("cost per hour", "USD"), [(name, opt.usd(hour[name])) for name in hour])
    mtok = shown["cost_usd_per_mtok"]
    print_table(
        f"per million tokens at {shown['utilization_ratio']} utilization"
        f" ({shown['output_tokens_per_s']:,.0f} output tokens/s at full load,"
        f" ITL {shown['itl_ms']:,.1f} ms)",
        ("tokens", "USD"),
        [
            ("input", opt.usd(mtok["input"], 4)),
            ("output", opt.usd(mtok["output"], 4)),
            ("output, prompts included", opt.usd(mtok["output_all_in"], 4)),
        ],
    )
    _print_chain(shown["chain_usd_per_mtok"])


def _print_chain(chain: dict[str, str]) -> None:
    total = sum(float(value) for name, value in chain.items() if name != "operator_margin")
    rows = []
    for name, value in chain.items():
        if float(value) == 0 and name != "operator_margin":
            continue
        share = f"{float(value) / total:.0%}" if total else ""
        rows.append((CHAIN_NAMES[name], opt.usd(value, 4), share))
    print_table(
        "where a token's dollar goes (per million output tokens, prompts included)",
        ("who", "USD", "of cost"),
        rows,
    )


def _print_price(shown: dict[str, Any]) -> None:
    cost = shown["cost_usd_per_mtok"]
    price = shown["price_usd_per_mtok"]
    print_table(
        f"{shown['model']} on {shown['gpu']}: price for a {shown['margin_ratio']} gross margin",
        ("per million tokens", "cost USD", "price USD"),
        [
            ("input", opt.usd(cost["input"], 4), opt.usd(price["input"], 4)),
            ("output", opt.usd(cost["output"], 4), opt.usd(price["output"], 4)),
        ],
    )
    rows = [
        (
            row["model"],
            row["provider"],
            row["date"],
            row["input_usd_per_mtok"],
            row["output_usd_per_mtok"],
            row["margin_ratio_output"],
        )
        for row in shown["market"]
    ]
    if rows:
        print_table(
            "the market (margin: what that output price would leave at this cost)",
            ("model", "provider", "date", "input", "output", "margin"),
            rows,
        )
