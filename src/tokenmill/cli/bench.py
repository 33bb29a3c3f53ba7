"""``tokenmill bench TARGET``: measure an OpenAI-compatible endpoint under a concurrency
sweep, save the figures, and (``--calibrate POOL``) fit the pool's efficiency factors."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tokenmill.api.fleet_costs import deployment_setup
from tokenmill.benchmark.runner import Plan, run
from tokenmill.cli import plan_options as opt
from tokenmill.cli.common import (
    JsonOption,
    RowsFormatOption,
    output_format,
    print_json,
    print_records,
    print_table,
)
from tokenmill.cli.common import run as run_or_exit
from tokenmill.config import Config, load_config
from tokenmill.economics import fit
from tokenmill.errors import ConfigurationError, InvalidRequest

CONCURRENCY_MAX = 4096


def _concurrencies(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError as exc:
        message = "--concurrency is a comma-separated list of whole numbers, e.g. 1,4,16"
        raise InvalidRequest(message, param="concurrency") from exc
    if not values or any(not 1 <= value <= CONCURRENCY_MAX for value in values):
        message = f"--concurrency values run from 1 to {CONCURRENCY_MAX}"
        raise InvalidRequest(message, param="concurrency")
    return values


def _deployment_for(config: Config, pool_id: str, model: str) -> str:
    """The deployment on ``pool_id`` that serves ``model`` (its public or upstream name)."""
    if pool_id not in config.pools:
        known = ", ".join(sorted(config.pools)) or "none"
        raise ConfigurationError(f"no pool '{pool_id}' in the configuration; pools: {known}")
    on_pool = {
        name: deployment
        for name, deployment in config.deployments.items()
        if deployment.pool == pool_id
    }
    public = config.models.get(model)
    for name, deployment in on_pool.items():
        if deployment.model == model or (public is not None and name in public.deployments):
            return name
    message = f"no deployment on pool '{pool_id}' serves '{model}'"
    raise ConfigurationError(message, param="calibrate")


def calibrate(
    config: Config, pool_id: str, model: str, levels: list[dict[str, Any]]
) -> dict[str, Any]:
    """Fit the deployment's e_c and e_m to the measured levels."""
    name = _deployment_for(config, pool_id, model)
    deployment = config.deployments[name]
    setup = deployment_setup(config.pools[pool_id], deployment)
    measurements = [
        fit.Measurement(
            concurrency=level["concurrency"],
            input_tokens=max(1, round(level["prompt_tokens_mean"])),
            output_tokens=max(1, round(level["output_tokens_mean"])),
            output_tokens_per_s=level["output_tokens_per_s"],
            step_ms=level["token_gap_ms"]["p50"],
        )
        for level in levels
        if level["errors"] == 0
        and level["token_gap_ms"] is not None
        and level["output_tokens_per_s"]
    ]
    fitted = fit.fit(setup, measurements)
    return {
        "pool": pool_id,
        "deployment": name,
        "efficiency_compute_ratio": fitted.efficiency_compute_ratio,
        "efficiency_memory_ratio": fitted.efficiency_memory_ratio,
        "error_before": round(fitted.error_before, 4),
        "error_after": round(fitted.error_after, 4),
    }


def bench(
    target: Annotated[str, typer.Argument(help="Base URL, e.g. http://127.0.0.1:8080/v1")],
    model: Annotated[str, typer.Option(help="The model name the target serves.")],
    api_key: Annotated[
        str | None, typer.Option(help="Bearer key (default $OPENAI_API_KEY).")
    ] = None,
    input_tokens: opt.InputTokens = 1000,
    output_tokens: opt.OutputTokens = 200,
    concurrency: Annotated[
        str, typer.Option(help="The sweep: comma-separated requests in flight.")
    ] = "1,4,16,64",
    requests: Annotated[
        int | None, typer.Option(help="Requests per level (default 4 per slot, at least 8).")
    ] = None,
    ignore_eos: Annotated[
        bool, typer.Option(help="Ask for exactly --output tokens (vLLM's ignore_eos).")
    ] = True,
    out: Annotated[Path | None, typer.Option(help="Save the results here (JSON).")] = None,
    calibrate_pool: Annotated[
        str | None, typer.Option("--calibrate", help="Fit this pool's efficiency factors.")
    ] = None,
    config_path: Annotated[
        Path | None, typer.Option("--config", help="Configuration with the pool (--calibrate).")
    ] = None,
    output: RowsFormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Throughput, TTFT and ITL percentiles of TARGET at each concurrency (``--format csv``:
    a line per level). Exits 1 when not one request succeeded."""
    shown_as = output_format(output, as_json)

    def plan() -> Plan:
        if requests is not None and not 1 <= requests <= 1_000_000:
            raise InvalidRequest("--requests runs from 1 to 1000000", param="requests")
        for name, value in (("--input", input_tokens), ("--output", output_tokens)):
            if not 1 <= value <= 10_000_000:
                raise InvalidRequest(f"{name} runs from 1 to 10000000", param=name)
        if not target.startswith(("http://", "https://")):
            raise InvalidRequest("TARGET is a base URL such as http://127.0.0.1:8080/v1")
        return Plan(
            base_url=target,
            model=model,
            api_key=api_key or os.environ.get("OPENAI_API_KEY"),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            concurrencies=_concurrencies(concurrency),
            requests_per_level=requests,
            ignore_eos=ignore_eos,
        )

    sweep = run_or_exit(plan)
    config = run_or_exit(lambda: load_config(config_path)) if calibrate_pool else None
    if config is not None and calibrate_pool is not None:
        # A pool or model that cannot be calibrated is known before the sweep, not after it.
        run_or_exit(lambda: _deployment_for(config, calibrate_pool, model))
    levels = _measure(sweep)
    results: dict[str, Any] = {
        "target": target,
        "model": model,
        "input": input_tokens,
        "output": output_tokens,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "levels": levels,
    }
    failed = _all_failed(levels)
    if calibrate_pool is not None and failed is None:
        assert config is not None
        results["calibration"] = run_or_exit(
            lambda: calibrate(config, calibrate_pool, model, levels)
        )
    if out is not None:
        _save(out, results)
    if shown_as == "json":
        print_json(results)
    elif shown_as == "csv":
        print_records("csv", levels)
    else:
        _print(results)
    if failed is not None:
        # The figures of a sweep that measured nothing are not a result: say why, exit 1.
        typer.echo(f"error: {failed}", err=True)
        raise typer.Exit(1)


def _measure(sweep: Plan) -> list[dict[str, Any]]:
    """Run the sweep, with a progress bar on a terminal's stderr."""
    total = sum(sweep.requests_at(level) for level in sweep.concurrencies)
    progress = Progress(
        TextColumn("bench"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not sys.stderr.isatty(),
    )
    with progress:
        task = progress.add_task("requests", total=total)
        return asyncio.run(run(sweep, lambda: progress.advance(task)))


def _save(out: Path, results: dict[str, Any]) -> None:
    try:
        out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    except OSError as exc:
        typer.echo(f"error: cannot write {out}: {exc.strerror}", err=True)
        raise typer.Exit(1) from exc


def _all_failed(levels: list[dict[str, Any]]) -> str | None:
    """Why not one request of the sweep succeeded, or None when some did."""
    total = sum(level["requests"] for level in levels)
    assert total > 0
    if sum(level["errors"] for level in levels) < total:
        return None
    first = next((level["first_error"] for level in levels if level["first_error"]), "")
    hint = ""
    if first.startswith(("HTTP 401", "HTTP 403")):
        hint = " (is --api-key, or $OPENAI_API_KEY, a key TARGET accepts?)"
    elif first.startswith("ClientConnector"):
        hint = " (is TARGET the right address, and is it serving?)"
    return f"all {total} requests failed; the first: {first}{hint}"


def _ms(spread: dict[str, float] | None, key: str) -> str:
    return "" if spread is None else f"{spread[key]:,.1f}"


def _print(results: dict[str, Any]) -> None:
    rows = [
        (
            level["concurrency"],
            level["requests"],
            level["errors"],
            f"{level['output_tokens_per_s']:,.0f}",
            _ms(level["ttft_ms"], "p50"),
            _ms(level["ttft_ms"], "p95"),
            _ms(level["itl_ms"], "p50"),
            _ms(level["itl_ms"], "p95"),
        )
        for level in results["levels"]
    ]
    print_table(
        f"{results['model']} at {results['target']}: {results['input']} in / {results['output']}"
        " out",
        (
            "in flight",
            "requests",
            "errors",
            "output tok/s",
            "TTFT p50",
            "TTFT p95",
            "ITL p50",
            "ITL p95",
        ),
        rows,
    )
    failed = next((level for level in results["levels"] if level["first_error"]), None)
    if failed is not None and not _all_failed(results["levels"]):
        typer.echo(f"first error: {failed['first_error']}", err=True)
    calibration = results.get("calibration")
    if calibration is not None:
        typer.echo(
            f"fitted for deployment {calibration['deployment']} (pool {calibration['pool']}):"
            f" error {calibration['error_before']} -> {calibration['error_after']}\n"
            "add to its configuration:\n"
            f"  efficiency_compute_ratio: {calibration['efficiency_compute_ratio']}\n"
            f"  efficiency_memory_ratio: {calibration['efficiency_memory_ratio']}"
        )
