"""``tokenmill plan perf``: what a model does on GPUs, from the performance model."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tokenmill.cli.common import JsonOption, print_json, print_table, run
from tokenmill.economics import catalog, perf
from tokenmill.errors import InvalidRequest

app = typer.Typer(help="Plan: performance, cost and capacity from first principles.")

PRECISIONS = ("bf16", "fp16", "fp8", "fp4")


def _concurrency(text: str) -> int | None:
    if text == "max":
        return None
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 1_000_000:
        raise InvalidRequest("--concurrency is a whole number from 1, or max", param="concurrency")
    return int(text)


def _precision(text: str, option: str) -> str:
    if text not in PRECISIONS:
        raise InvalidRequest(f"{option} is one of {', '.join(PRECISIONS)}", param=option)
    return text


@app.command("perf")
def perf_command(
    gpu: Annotated[str, typer.Option(help="Catalog GPU id: h100-sxm, h200, b200, mi300x, ...")],
    model: Annotated[str, typer.Option(help="Catalog model id: llama-3.3-70b, ...")],
    gpus: Annotated[int, typer.Option(help="GPUs in the replica (tensor parallel).")] = 1,
    precision: Annotated[str, typer.Option(help="Weights and compute: bf16|fp8|fp4.")] = "bf16",
    kv_precision: Annotated[
        str | None, typer.Option("--kv-precision", help="KV cache (default: bf16).")
    ] = None,
    parallel: Annotated[str, typer.Option(help="tp (tensor parallel; dep: not yet).")] = "tp",
    input_tokens: Annotated[int, typer.Option("--input", help="Prompt tokens.")] = 1000,
    output_tokens: Annotated[int, typer.Option("--output", help="Output tokens.")] = 1000,
    concurrency: Annotated[
        str, typer.Option(help="Requests in flight, or max (as many as the KV cache holds).")
    ] = "max",
    as_json: JsonOption = False,
) -> None:
    """Throughput, time to first token, inter-token latency, the batch and its bound."""
    shown = run(
        lambda: _perf(
            gpu,
            model,
            gpus,
            (precision, kv_precision or "bf16"),
            parallel,
            (input_tokens, output_tokens, concurrency),
        )
    )
    if as_json:
        print_json(shown)
        return
    print_table(
        f"{shown['model']} on {shown['gpus']} x {shown['gpu']} ({shown['precision']})",
        ("figure", "value"),
        [
            ("batch (requests in flight)", f"{shown['batch']} of at most {shown['batch_max']}"),
            ("bound", shown["bound"]),
            ("output tokens/s (replica)", f"{shown['output_tokens_per_s']:,.0f}"),
            ("output tokens/s per GPU", f"{shown['output_tokens_per_s_per_gpu']:,.0f}"),
            ("time to first token", f"{shown['ttft_ms']:,.1f} ms"),
            ("inter-token latency", f"{shown['itl_ms']:,.1f} ms"),
            ("prefill tokens/s", f"{shown['prefill_tokens_per_s']:,.0f}"),
        ],
    )


def _perf(
    gpu_id: str,
    model_id: str,
    gpu_count: int,
    precisions: tuple[str, str],
    parallel: str,
    shape: tuple[int, int, str],
) -> dict[str, Any]:
    if parallel != "tp":
        raise InvalidRequest("only --parallel tp is modeled so far", param="parallel")
    if not 1 <= gpu_count <= 4096:
        raise InvalidRequest("--gpus is a whole number from 1 to 4096", param="gpus")
    precision = _precision(precisions[0], "--precision")
    kv_precision = _precision(precisions[1], "--kv-precision")
    input_tokens, output_tokens, concurrency_text = shape
    setup = perf.Setup(
        gpu=catalog.gpu(gpu_id),
        gpu_count=gpu_count,
        model=catalog.model(model_id),
        precision=precision,
        kv_precision=kv_precision,
    )
    point = perf.operating_point(setup, input_tokens, output_tokens, _concurrency(concurrency_text))
    return {
        "gpu": setup.gpu.id,
        "gpus": gpu_count,
        "model": setup.model.id,
        "precision": precision,
        "kv_precision": kv_precision,
        "parallel": parallel,
        "input": input_tokens,
        "output": output_tokens,
        "concurrency": concurrency_text if concurrency_text == "max" else int(concurrency_text),
        "batch": point.batch,
        "batch_max": point.batch_max,
        "bound": point.bound,
        "output_tokens_per_s": round(point.output_tokens_per_s, 3),
        "output_tokens_per_s_per_gpu": round(point.output_tokens_per_s_per_gpu, 3),
        "ttft_ms": round(point.ttft_ms, 3),
        "itl_ms": round(point.itl_ms, 3),
        "prefill_tokens_per_s": round(point.prefill_tokens_per_s, 3),
        "efficiency_compute_ratio": setup.efficiency_compute_ratio,
        "efficiency_memory_ratio": setup.efficiency_memory_ratio,
    }
