"""The planning questions as plain data in and plain data out (pure), shared by the CLI
(``tokenmill plan``) and the admin API, so both answer with the same figures and errors."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from tokenmill.economics import perf, reference
from tokenmill.errors import InvalidRequest

PRECISIONS = ("bf16", "fp16", "fp8", "fp4")
GPU_COUNT_MAX = 4096
TOKENS_MAX = 10_000_000
CONCURRENCY_MAX = 1_000_000


@dataclass(frozen=True)
class PerfQuery:
    """``tokenmill plan perf``'s options; ``None`` leaves the model's default."""

    gpu: str
    model: str
    gpus: int = 1
    precision: str = "bf16"
    kv_precision: str | None = None
    parallel: str = "tp"
    input_tokens: int = 1000
    output_tokens: int = 1000
    concurrency: int | None = None  # None: as many as the KV cache and the scheduler allow
    efficiency_compute_ratio: float | None = None
    efficiency_memory_ratio: float | None = None
    efficiency_moe_ratio: float | None = None
    batch_requests_max: int | None = None


def _count(value: object, param: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        message = f"{param} must be a whole number from 1 to {maximum}, got {value!r}"
        raise InvalidRequest(message, param=param)
    return value


def _precision(value: object, param: str) -> str:
    if value not in PRECISIONS:
        message = f"{param} must be one of {', '.join(PRECISIONS)}, got {value!r}"
        raise InvalidRequest(message, param=param)
    assert isinstance(value, str)
    return value


def setup_of(query: PerfQuery, catalogs: reference.Catalogs | None = None) -> perf.Setup:
    """The replica the query describes; InvalidRequest or NotFound on bad input."""
    catalogs = catalogs or reference.packaged()
    factors: dict[str, Any] = {
        name: getattr(query, name)
        for name in (
            "efficiency_compute_ratio",
            "efficiency_memory_ratio",
            "efficiency_moe_ratio",
            "batch_requests_max",
        )
        if getattr(query, name) is not None
    }
    return perf.Setup(
        gpu=catalogs.gpu(query.gpu),
        gpu_count=_count(query.gpus, "gpus", GPU_COUNT_MAX),
        model=catalogs.model(query.model),
        precision=_precision(query.precision, "precision"),
        kv_precision=None
        if query.kv_precision is None
        else _precision(query.kv_precision, "kv_precision"),
        parallel=perf.parallel_of(query.parallel),
        **factors,
    )


def _rounded(value: float) -> float:
    assert math.isfinite(value)
    return round(value, 3)


def perf_answer(query: PerfQuery, catalogs: reference.Catalogs | None = None) -> dict[str, Any]:
    """What ``plan perf --json`` prints: the query, resolved, and the operating point."""
    setup = setup_of(query, catalogs)
    input_tokens = _count(query.input_tokens, "input", TOKENS_MAX)
    output_tokens = _count(query.output_tokens, "output", TOKENS_MAX)
    concurrency = query.concurrency
    if concurrency is not None:
        _count(concurrency, "concurrency", CONCURRENCY_MAX)
    point = perf.operating_point(setup, input_tokens, output_tokens, concurrency)
    return {
        "gpu": setup.gpu.id,
        "gpus": setup.gpu_count,
        "model": setup.model.id,
        "precision": setup.precision,
        "kv_precision": setup.kv,
        "parallel": setup.parallel,
        "input": input_tokens,
        "output": output_tokens,
        "concurrency": "max" if concurrency is None else concurrency,
        "batch": point.batch,
        "batch_max": point.batch_max,
        "batch_limit": perf.batch_limit(setup),
        "bound": point.bound,
        "step_bound": point.step_bound,
        "output_tokens_per_s": _rounded(point.output_tokens_per_s),
        "output_tokens_per_s_per_gpu": _rounded(point.output_tokens_per_s_per_gpu),
        "decode_tokens_per_s": _rounded(point.decode_tokens_per_s),
        "prefill_tokens_per_s": _rounded(point.prefill_tokens_per_s),
        "ttft_ms": _rounded(point.ttft_ms),
        "itl_ms": _rounded(point.itl_ms),
        "step_ms": _rounded(point.step_ms),
        "efficiency_compute_ratio": setup.efficiency_compute_ratio,
        "efficiency_memory_ratio": setup.efficiency_memory_ratio,
        "efficiency_moe_ratio": setup.efficiency_moe_ratio,
    }


def perf_curve(
    query: PerfQuery, concurrencies: list[int], catalogs: reference.Catalogs | None = None
) -> list[dict[str, Any]]:
    """The operating point at each concurrency (for a throughput-vs-concurrency chart),
    stopping at the first one the KV cache or the scheduler caps."""
    points = []
    for concurrency in concurrencies:
        answer = perf_answer(dataclasses.replace(query, concurrency=concurrency), catalogs)
        points.append(answer)
        if answer["batch"] < concurrency:
            break
    return points
