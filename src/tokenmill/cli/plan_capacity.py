"""``tokenmill plan capacity``: GPUs of which kind for a demand forecast, cheapest first."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer

from tokenmill.cli import plan_options as opt
from tokenmill.cli.common import (
    FormatOption,
    JsonOption,
    output_format,
    print_json,
    print_table,
    run,
)
from tokenmill.economics.capacity import CapacityQuery, Demand, capacity_answer
from tokenmill.economics.mix import Shape
from tokenmill.errors import ConfigurationError, InvalidRequest

DEMAND_FIELDS = {
    "lengths",
    "model",
    "input",
    "output",
    "ttft_ms_p95",
    "itl_ms_p95",
    "requests_per_s",
    "output_tokens_per_day",
}


def register(app: typer.Typer) -> None:
    app.command("capacity")(capacity_command)


def _number(raw: dict[str, Any], field: str, where: str) -> float:
    value = raw.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{where}: '{field}' must be a number, got {value!r}", param=field)
    return float(value)


def _count(raw: dict[str, Any], field: str, where: str) -> int:
    value = raw.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        message = f"{where}: '{field}' must be a whole number >= 1, got {value!r}"
        raise ConfigurationError(message, param=field)
    return value


def demands_of(path: Path) -> tuple[Demand, ...]:
    """The demand file: ``demand:`` a list of {model, input, output, ttft_ms_p95, itl_ms_p95,
    requests_per_s | output_tokens_per_day}."""
    document = opt.read_yaml(path, "--demand")
    if not isinstance(document, dict) or not isinstance(document.get("demand"), list):
        raise ConfigurationError(f"{path.name} must map 'demand' to a list")
    demands = []
    for index, raw in enumerate(document["demand"]):
        where = f"{path.name} demand {index}"
        if not isinstance(raw, dict):
            raise ConfigurationError(f"{where} must be a mapping")
        for field in raw:
            if field not in DEMAND_FIELDS:
                raise ConfigurationError(f"{where}: unknown field {field!r}", param=str(field))
        rps = raw.get("requests_per_s")
        if rps is not None:
            rps = Decimal(repr(_number(raw, "requests_per_s", where)))
        per_day = raw.get("output_tokens_per_day")
        if per_day is not None:
            per_day = _count(raw, "output_tokens_per_day", where)
        lengths = _lengths(raw.get("lengths"), where)
        if lengths:
            raw = {"input": 1, "output": 1, **raw}  # the mix replaces them
        model = raw.get("model")
        if not isinstance(model, str):
            raise ConfigurationError(f"{where}: 'model' must be a catalog model id", param="model")
        demands.append(
            Demand(
                model=model,
                input_tokens=_count(raw, "input", where),
                output_tokens=_count(raw, "output", where),
                ttft_ms_max=_number(raw, "ttft_ms_p95", where),
                itl_ms_max=_number(raw, "itl_ms_p95", where),
                requests_per_s=rps,
                output_tokens_per_day=per_day,
                lengths=lengths,
            )
        )
    return tuple(demands)


def _lengths(raw: object, where: str) -> tuple[Shape, ...]:
    """``lengths: [{share, input, output}, ...]``, a mix of request shapes."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise ConfigurationError(f"{where}: 'lengths' must be a list of shapes", param="lengths")
    shapes = []
    for index, entry in enumerate(raw):
        at = f"{where} lengths {index}"
        if not isinstance(entry, dict) or set(entry) != {"share", "input", "output"}:
            message = f"{at}: a shape is {{share, input, output}}, got {entry!r}"
            raise ConfigurationError(message, param="lengths")
        shapes.append(
            Shape(
                _number(entry, "share", at), _count(entry, "input", at), _count(entry, "output", at)
            )
        )
    return tuple(shapes)


def capacity_command(
    model: Annotated[str | None, typer.Option(help="Catalog model id (one demand).")] = None,
    requests_per_s: Annotated[
        str | None, typer.Option("--rps", help="Requests per second.")
    ] = None,
    output_tokens_per_day: Annotated[
        int | None, typer.Option("--tokens-per-day", help="Output tokens per day.")
    ] = None,
    input_tokens: opt.InputTokens = 1000,
    output_tokens: opt.OutputTokens = 500,
    ttft_ms: Annotated[float, typer.Option(help="p95 time to first token target, ms.")] = 2000,
    itl_ms: Annotated[float, typer.Option(help="p95 inter-token latency target, ms.")] = 50,
    demand_file: Annotated[
        Path | None, typer.Option("--demand", help="A YAML demand forecast (several models).")
    ] = None,
    gpu: Annotated[
        list[str] | None, typer.Option("--gpu", help="Candidate GPU (repeat); default: all.")
    ] = None,
    basis: Annotated[str, typer.Option(help="owned (bought) or rented.")] = "owned",
    utilization_max: Annotated[
        str | None, typer.Option(help="Average busy share to plan for (default 0.6).")
    ] = None,
    catalog_file: opt.CatalogFile = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """How many GPUs of which kind serve the demand within its latency targets, cheapest
    first, and what they cost per hour."""

    as_json = output_format(output, as_json) == "json"

    def answer() -> dict[str, Any]:
        if basis not in ("owned", "rented"):
            raise InvalidRequest("--basis is owned or rented", param="basis")
        if demand_file is not None:
            demands = demands_of(demand_file)
        elif model is not None:
            demands = (
                Demand(
                    model=model,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    ttft_ms_max=ttft_ms,
                    itl_ms_max=itl_ms,
                    requests_per_s=opt.decimal_of(requests_per_s, "--rps"),
                    output_tokens_per_day=output_tokens_per_day,
                ),
            )
        else:
            raise InvalidRequest("give --model with --rps or --tokens-per-day, or --demand FILE")
        query = CapacityQuery(
            demands=demands,
            gpus=tuple(gpu or ()),
            basis=basis,  # type: ignore[arg-type]
            utilization_max=opt.decimal_of(utilization_max, "--utilization-max"),
        )
        return capacity_answer(query, opt.catalogs_of(catalog_file))

    shown = run(answer)
    if as_json:
        print_json(shown)
        return
    for entry in shown["models"]:
        rows = [
            (
                f"{row['gpus']} x {row['gpu']}",
                f"{row['replicas']} x {row['gpus_per_replica']}"
                f" ({row['precision']}, {row['parallel']})",
                row["concurrency"],
                f"{row['ttft_ms']:,.0f} / {row['itl_ms']:,.1f}",
                opt.usd(row["cost_usd_per_hour"]),
            )
            for row in entry["options"]
        ]
        print_table(
            f"{entry['model']}: {float(entry['output_tokens_per_s']):,.0f} output tokens/s,"
            " cheapest first",
            ("GPUs", "replicas", "in flight each", "TTFT / ITL ms", "USD per hour"),
            rows,
        )
    kinds = ", ".join(f"{count} x {kind}" for kind, count in shown["gpus"].items())
    print_table(
        f"the plan ({shown['basis']})",
        ("GPUs", "USD per hour"),
        [(kinds, opt.usd(shown["cost_usd_per_hour"]))],
    )
