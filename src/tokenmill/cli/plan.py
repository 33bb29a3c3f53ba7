"""``tokenmill plan``: performance, cost and capacity from first principles."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tokenmill.cli.common import JsonOption, print_json, print_table, run
from tokenmill.economics.queries import PerfQuery, perf_answer
from tokenmill.errors import InvalidRequest

app = typer.Typer(help="Plan: performance, cost and capacity from first principles.")


def _concurrency(text: str) -> int | None:
    if text == "max":
        return None
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 1_000_000:
        raise InvalidRequest("--concurrency is a whole number from 1, or max", param="concurrency")
    return int(text)


@app.command("perf")
def perf_command(
    gpu: Annotated[str, typer.Option(help="Catalog GPU id: h100-sxm, h200, b200, mi300x, ...")],
    model: Annotated[str, typer.Option(help="Catalog model id: llama-3.3-70b, ...")],
    gpus: Annotated[int, typer.Option(help="GPUs in the replica.")] = 1,
    precision: Annotated[str, typer.Option(help="Weights and compute: bf16|fp8|fp4.")] = "bf16",
    kv_precision: Annotated[
        str | None,
        typer.Option("--kv-precision", help="KV cache (default: fp8 beside fp8/fp4 weights)."),
    ] = None,
    parallel: Annotated[
        str, typer.Option(help="tp (tensor parallel) or dep (attention DP + expert parallel).")
    ] = "tp",
    input_tokens: Annotated[int, typer.Option("--input", help="Prompt tokens.")] = 1000,
    output_tokens: Annotated[int, typer.Option("--output", help="Output tokens.")] = 1000,
    concurrency: Annotated[
        str,
        typer.Option(help="Requests in flight, or max (as many as the KV cache holds)."),
    ] = "max",
    efficiency_compute: Annotated[
        float | None, typer.Option(help="Achieved share of peak FLOP/s (default 0.5).")
    ] = None,
    efficiency_memory: Annotated[
        float | None, typer.Option(help="Achieved share of peak bandwidth (default 0.7).")
    ] = None,
    efficiency_moe: Annotated[
        float | None, typer.Option(help="Expert layers' share of their roofline (default 0.3).")
    ] = None,
    batch_requests_max: Annotated[
        int | None, typer.Option(help="Scheduler's cap on requests at once (default 512).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Throughput, time to first token, inter-token latency, the batch and its bound."""
    query = PerfQuery(
        gpu=gpu,
        model=model,
        gpus=gpus,
        precision=precision,
        kv_precision=kv_precision,
        parallel=parallel,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        efficiency_compute_ratio=efficiency_compute,
        efficiency_memory_ratio=efficiency_memory,
        efficiency_moe_ratio=efficiency_moe,
        batch_requests_max=batch_requests_max,
    )
    shown = run(lambda: perf_answer(_at(query, _concurrency(concurrency))))
    if as_json:
        print_json(shown)
        return
    _print_perf(shown)


def _at(query: PerfQuery, concurrency: int | None) -> PerfQuery:
    fields = {name: getattr(query, name) for name in query.__dataclass_fields__}
    fields["concurrency"] = concurrency
    return PerfQuery(**fields)


def _print_perf(shown: dict[str, Any]) -> None:
    title = (
        f"{shown['model']} on {shown['gpus']} x {shown['gpu']} ({shown['precision']},"
        f" KV {shown['kv_precision']}, {shown['parallel']}), {shown['input']} in /"
        f" {shown['output']} out"
    )
    batch = (
        f"{shown['batch']} (KV holds {shown['batch_max']}, scheduler runs"
        f" {shown['batch_limit']})"
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
