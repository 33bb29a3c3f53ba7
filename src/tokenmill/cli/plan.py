"""``tokenmill plan``: performance, cost and capacity from first principles."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from tokenmill.cli import charts, plan_capacity, plan_cost, plan_scenario, plan_site
from tokenmill.cli import plan_options as opt
from tokenmill.cli.common import (
    FormatOption,
    JsonOption,
    output_format,
    print_json,
    print_table,
    run,
)
from tokenmill.economics import reference
from tokenmill.economics.queries import PerfQuery, perf_answer, perf_curve

app = typer.Typer(help="Plan: performance, cost and capacity from first principles.")


@app.command("perf")
def perf_command(
    gpu: opt.Gpu,
    model: opt.Model,
    gpus: opt.Gpus = 1,
    precision: opt.Precision = "bf16",
    kv_precision: opt.KvPrecision = None,
    parallel: opt.Parallel = "tp",
    input_tokens: opt.InputTokens = 1000,
    output_tokens: opt.OutputTokens = 1000,
    concurrency: opt.Concurrency = "max",
    efficiency_compute: Annotated[
        float | None, typer.Option(help="Achieved share of peak FLOP/s (default 0.5).")
    ] = None,
    efficiency_memory: Annotated[
        float | None, typer.Option(help="Achieved share of peak bandwidth (default 0.7).")
    ] = None,
    efficiency_moe: Annotated[
        float | None, typer.Option(help="Expert layers' share of their roofline (default 0.4).")
    ] = None,
    batch_requests_max: Annotated[
        int | None, typer.Option(help="Scheduler's cap on requests at once (default 512).")
    ] = None,
    catalog_file: opt.CatalogFile = None,
    chart: opt.ChartFile = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Throughput, time to first token, inter-token latency, the batch and its bound;
    ``--chart`` draws throughput and latency against concurrency."""

    as_json = output_format(output, as_json) == "json"

    def answer() -> dict[str, Any]:
        query = opt.perf_query(
            (gpu, model, gpus, precision, kv_precision, parallel),
            (input_tokens, output_tokens, concurrency),
        )
        query = dataclasses.replace(
            query,
            efficiency_compute_ratio=efficiency_compute,
            efficiency_memory_ratio=efficiency_memory,
            efficiency_moe_ratio=efficiency_moe,
            batch_requests_max=batch_requests_max,
        )
        catalogs = opt.catalogs_of(catalog_file)
        if chart is not None:
            _chart(query, catalogs, chart)
        return perf_answer(query, catalogs)

    shown = run(answer)
    if as_json:
        print_json(shown)
        return
    _print_perf(shown)


def _chart(query: PerfQuery, catalogs: reference.Catalogs, path: Path) -> None:
    """The throughput-latency frontier: output tokens/s per GPU against the inter-token
    latency, as requests in flight double from 1 to the limit."""
    concurrencies = [2**power for power in range(15)]
    points = perf_curve(query, concurrencies, catalogs)
    series = {
        f"1 to {points[-1]['batch']} requests in flight": [
            (point["itl_ms"], point["output_tokens_per_s_per_gpu"]) for point in points
        ],
    }
    title = f"{query.model} on {query.gpus} x {query.gpu} ({query.precision})"
    chart = charts.Chart(title, "inter-token latency, ms", "output tokens/s per GPU", series=series)
    charts.write(chart, path)


def _print_perf(shown: dict[str, Any]) -> None:
    title = (
        f"{shown['model']} on {shown['gpus']} x {shown['gpu']} ({shown['precision']},"
        f" KV {shown['kv_precision']}, {shown['parallel']}), {shown['input']} in /"
        f" {shown['output']} out"
    )
    batch = (
        f"{shown['batch']} (KV holds {shown['batch_max']}, scheduler runs {shown['batch_limit']})"
    )
    print_table(
        title,
        ("figure", "value"),
        [
            ("requests in flight", batch),
            ("bound", f"{shown['bound']} (decode step: {shown['step_bound']})"),
            ("output tokens/s (replica)", f"{shown['output_tokens_per_s']:,.0f}"),
            ("output tokens/s per GPU", f"{shown['output_tokens_per_s_per_gpu']:,.0f}"),
            ("time to first token", f"{shown['ttft_ms']:,.1f} ms"),
            ("inter-token latency", f"{shown['itl_ms']:,.1f} ms"),
            ("decode step", f"{shown['step_ms']:,.1f} ms"),
            ("prefill tokens/s", f"{shown['prefill_tokens_per_s']:,.0f}"),
        ],
    )


plan_cost.register(app)
plan_site.register(app)
plan_capacity.register(app)
plan_scenario.register(app)
