"""Options that every ``tokenmill plan`` command shares: the replica, the request shape,
the catalogs, and the parsing of decimal text."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
import yaml

from tokenmill.economics import reference
from tokenmill.economics.queries import PerfQuery
from tokenmill.errors import ConfigurationError, InvalidRequest

_PLAIN_DECIMAL = re.compile(r"[0-9]{1,15}(\.[0-9]{1,9})?")

Gpu = Annotated[str, typer.Option(help="Catalog GPU id: h100-sxm, h200, b200, mi300x, ...")]
Model = Annotated[str, typer.Option(help="Catalog model id: llama-3.3-70b, ...")]
Gpus = Annotated[int, typer.Option(help="GPUs in one replica.")]
Precision = Annotated[str, typer.Option(help="Weights and compute: bf16|fp8|fp4.")]
KvPrecision = Annotated[
    str | None,
    typer.Option("--kv-precision", help="KV cache (default: fp8 beside fp8/fp4 weights)."),
]
Parallel = Annotated[
    str, typer.Option(help="tp (tensor parallel) or dep (attention DP + expert parallel).")
]
InputTokens = Annotated[int, typer.Option("--input", help="Prompt tokens per request.")]
OutputTokens = Annotated[int, typer.Option("--output", help="Output tokens per request.")]
Concurrency = Annotated[
    str, typer.Option(help="Requests in flight, or max (as many as the KV cache holds).")
]
ChartFile = Annotated[
    Path | None, typer.Option("--chart", help="Also draw a chart: FILE.png or FILE.html.")
]
CatalogFile = Annotated[
    Path | None,
    typer.Option("--catalog", help="Your own catalog YAML (gpus, models, market_prices, ...)."),
]


def concurrency_of(text: str) -> int | None:
    if text == "max":
        return None
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 1_000_000:
        raise InvalidRequest("--concurrency is a whole number from 1, or max", param="concurrency")
    return int(text)


def decimal_of(text: str | None, option: str) -> Decimal | None:
    """Decimal text such as ``0.08`` (no exponent, no sign); None stays None."""
    if text is None:
        return None
    if not _PLAIN_DECIMAL.fullmatch(text.strip()):
        message = f"{option} must be a plain decimal number such as 0.08, got {text!r}"
        raise InvalidRequest(message, param=option)
    return Decimal(text.strip())


def catalogs_of(path: Path | None) -> reference.Catalogs:
    """The packaged catalogs, extended by the user's file if one is given."""
    packaged = reference.packaged()
    if path is None:
        return packaged
    document = read_yaml(path, "--catalog")
    return packaged.extended(document, path.name)


def read_yaml(path: Path, option: str) -> object:
    """A user's YAML file, parsed; every failure is one line naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read {option} {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{option} {path} is not UTF-8 text") from exc
    try:
        document: object = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = "" if mark is None else f" at line {mark.line + 1}"
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        message = f"{option} {path} is not valid YAML{where}: {problem}"
        raise ConfigurationError(message) from exc
    return document


def perf_query(
    replica: tuple[str, str, int, str, str | None, str],
    shape: tuple[int, int, str],
) -> PerfQuery:
    gpu, model, gpus, precision, kv_precision, parallel = replica
    input_tokens, output_tokens, concurrency = shape
    return PerfQuery(
        gpu=gpu,
        model=model,
        gpus=gpus,
        precision=precision,
        kv_precision=kv_precision,
        parallel=parallel,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        concurrency=concurrency_of(concurrency),
    )


def usd(text: str | None, places: int = 2) -> str:
    """Exact decimal text shown for people: ``1234567.891`` -> ``1,234,567.89``."""
    if text is None:
        return ""
    value = Decimal(text).quantize(Decimal(1).scaleb(-places))
    return f"{value:,}"
