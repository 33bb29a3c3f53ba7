"""The performance model of LLM inference on a GPU replica: a two-roof roofline (pure).

A replica is ``gpu_count`` identical GPUs serving one model (tensor parallel). Peaks are
derated by two named, tunable efficiency factors, ``e_c`` for compute and ``e_m`` for memory
bandwidth (see docs/sim.md for the defaults and why):

* prefill time  = 2 * P_active * prompt_tokens / (peak_flops * e_c)
* decode step   = max(memory time, compute time) + step overhead, where
  memory time   = (weight bytes read + kv_tokens_total * kv_bytes_per_token)
                  / (gpu_count * bandwidth * e_m)
  compute time  = 2 * P_active * batch / (peak_flops * e_c)
* output tokens/s = batch / decode step; KV capacity = (memory * (1 - reserve) - weights)
  / kv_bytes_per_token.

Weights read per decode step are ``min(all weights, active weights * batch)``: all of a dense
model, and for a mixture of experts the active share grows with the batch until every expert
is touched (assumes each request touches experts no other request touches; an upper bound).

Not modelled yet: tensor-parallel communication (all-reduce) cost, the quadratic attention
term of prefill, activation memory, and pipeline or expert parallelism; the economics issue
extends the model.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from tokenmill.economics.catalog import Gpu, ModelSpec
from tokenmill.errors import InvalidRequest

PRECISION_BYTES: Mapping[str, float] = types.MappingProxyType(
    {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "fp4": 0.5}
)
_BF16_BYTES = 2.0

Bound = Literal["memory", "compute"]


@dataclass(frozen=True)
class Setup:
    """One replica: a model on ``gpu_count`` GPUs, with precisions and efficiency factors."""

    gpu: Gpu
    gpu_count: int
    model: ModelSpec
    precision: str = "bf16"  # weights and compute
    kv_precision: str = "bf16"
    efficiency_compute_ratio: float = 0.5  # e_c: achieved / peak FLOP/s
    efficiency_memory_ratio: float = 0.7  # e_m: achieved / peak memory bandwidth
    step_overhead_s: float = 0.003  # per decode step: scheduler, kernel launches, sampling
    memory_reserve_ratio: float = 0.1  # of GPU memory kept for activations and fragmentation

    def __post_init__(self) -> None:
        _check_count(self.gpu_count, "gpu_count", minimum=1)
        _check_precision(self.precision, "precision")
        _check_precision(self.kv_precision, "kv_precision")
        _check_ratio(self.efficiency_compute_ratio, "efficiency_compute_ratio")
        _check_ratio(self.efficiency_memory_ratio, "efficiency_memory_ratio")
        _check_finite(self.step_overhead_s, "step_overhead_s")
        if self.step_overhead_s < 0:
            raise InvalidRequest("step_overhead_s must be >= 0", param="step_overhead_s")
        _check_finite(self.memory_reserve_ratio, "memory_reserve_ratio")
        if not 0 <= self.memory_reserve_ratio < 1:
            message = f"memory_reserve_ratio must be in [0, 1), got {self.memory_reserve_ratio}"
            raise InvalidRequest(message, param="memory_reserve_ratio")


def _check_count(value: int, param: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidRequest(f"{param} must be an integer >= {minimum}, got {value!r}", param=param)


def _check_precision(value: str, param: str) -> None:
    if value not in PRECISION_BYTES:
        known = ", ".join(PRECISION_BYTES)
        raise InvalidRequest(f"unknown {param} {value!r}; known: {known}", param=param)


def _check_finite(value: float, param: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f"{param} must be a finite number, got {value!r}", param=param)


def _check_ratio(value: float, param: str) -> None:
    _check_finite(value, param)
    if not 0 < value <= 1:
        raise InvalidRequest(f"{param} must be in (0, 1], got {value}", param=param)


def weight_bytes(setup: Setup) -> float:
    """Bytes of all weights of the model at ``setup.precision`` (summed over the GPUs)."""
    result = setup.model.parameters * PRECISION_BYTES[setup.precision]
    assert result > 0
    return result


def _active_weight_bytes(setup: Setup) -> float:
    return setup.model.parameters_active * PRECISION_BYTES[setup.precision]


def kv_bytes_per_token(setup: Setup) -> float:
    """Bytes of KV cache one token occupies at ``setup.kv_precision``."""
    scale = PRECISION_BYTES[setup.kv_precision] / _BF16_BYTES
    result = setup.model.kv_bytes_per_token_bf16 * scale
    assert result > 0
    return result


def kv_capacity_tokens(setup: Setup) -> int:
    """Tokens of KV cache that fit beside the weights and the reserve; 0 if weights don't fit."""
    usable_bytes = setup.gpu_count * setup.gpu.memory_bytes * (1 - setup.memory_reserve_ratio)
    free_bytes = usable_bytes - weight_bytes(setup)
    if free_bytes <= 0:
        return 0
    result = math.floor(free_bytes / kv_bytes_per_token(setup))
    assert result >= 0
    return result


def fits(setup: Setup) -> bool:
    """Whether the weights fit with room for at least one token of KV cache."""
    return kv_capacity_tokens(setup) >= 1


def batch_max(setup: Setup, tokens_per_request: int) -> int:
    """How many requests of ``tokens_per_request`` KV tokens each fit at once (>= 0)."""
    _check_count(tokens_per_request, "tokens_per_request", minimum=1)
    result = kv_capacity_tokens(setup) // tokens_per_request
    assert result >= 0
    return result


def peak_flops_per_s(setup: Setup) -> float:
    """Peak dense FLOP/s of the replica at ``setup.precision``; raises if the GPU lacks it."""
    per_gpu_by_precision = {
        "bf16": setup.gpu.flops_bf16_per_s,
        "fp16": setup.gpu.flops_bf16_per_s,
        "fp8": setup.gpu.flops_fp8_per_s,
        "fp4": setup.gpu.flops_fp4_per_s,
    }
    per_gpu = per_gpu_by_precision[setup.precision]
    if per_gpu is None:
        message = f"GPU '{setup.gpu.id}' has no {setup.precision} throughput figure"
        raise InvalidRequest(message, param="precision")
    result = per_gpu * setup.gpu_count
    assert result > 0
    return result


def prefill_time_s(setup: Setup, prompt_tokens: int) -> float:
    """Seconds to prefill ``prompt_tokens`` tokens: compute-bound, linear in tokens."""
    _check_count(prompt_tokens, "prompt_tokens", minimum=0)
    flops = 2 * setup.model.parameters_active * prompt_tokens
    result = flops / (peak_flops_per_s(setup) * setup.efficiency_compute_ratio)
    assert math.isfinite(result)
    assert result >= 0
    return result


def _decode_memory_time_s(setup: Setup, batch: int, kv_tokens_total: int) -> float:
    weights_read_bytes = min(weight_bytes(setup), _active_weight_bytes(setup) * batch)
    bytes_read = weights_read_bytes + kv_tokens_total * kv_bytes_per_token(setup)
    bandwidth_bytes_per_s = setup.gpu_count * setup.gpu.bandwidth_bytes_per_s
    return bytes_read / (bandwidth_bytes_per_s * setup.efficiency_memory_ratio)


def _decode_compute_time_s(setup: Setup, batch: int) -> float:
    flops = 2 * setup.model.parameters_active * batch
    return flops / (peak_flops_per_s(setup) * setup.efficiency_compute_ratio)


def _check_decode_input(batch: int, kv_tokens_total: int) -> None:
    _check_count(batch, "batch", minimum=1)
    _check_count(kv_tokens_total, "kv_tokens_total", minimum=0)


def decode_step_time_s(setup: Setup, batch: int, kv_tokens_total: int) -> float:
    """Seconds for one decode step of ``batch`` requests holding ``kv_tokens_total`` KV tokens."""
    _check_decode_input(batch, kv_tokens_total)
    memory_s = _decode_memory_time_s(setup, batch, kv_tokens_total)
    compute_s = _decode_compute_time_s(setup, batch)
    result = max(memory_s, compute_s) + setup.step_overhead_s
    assert math.isfinite(result)
    assert result > 0
    return result


def bound(setup: Setup, batch: int, kv_tokens_total: int) -> Bound:
    """Which roof limits this decode step: ``"memory"`` or ``"compute"`` (memory on a tie)."""
    _check_decode_input(batch, kv_tokens_total)
    memory_s = _decode_memory_time_s(setup, batch, kv_tokens_total)
    compute_s = _decode_compute_time_s(setup, batch)
    return "memory" if memory_s >= compute_s else "compute"


def output_tokens_per_s(setup: Setup, batch: int, kv_tokens_total: int) -> float:
    """Output tokens per second of the replica while decoding this batch."""
    result = batch / decode_step_time_s(setup, batch, kv_tokens_total)
    assert math.isfinite(result)
    assert result > 0
    return result


@dataclass(frozen=True)
class OperatingPoint:
    """A replica serving requests of ``prompt_tokens`` in and ``output_tokens`` out, ``batch``
    at a time, decoding at the middle of the answer."""

    batch: int
    bound: Bound
    ttft_ms: float  # prefill of one prompt, then its first decode step
    itl_ms: float  # one decode step of the whole batch
    output_tokens_per_s: float  # over the replica's GPUs
    output_tokens_per_s_per_gpu: float
    prefill_tokens_per_s: float
    batch_max: int  # the most requests of this size the KV memory holds


def operating_point(
    setup: Setup, prompt_tokens: int, output_tokens: int, concurrency: int | None
) -> OperatingPoint:
    """The replica at ``concurrency`` requests in flight (None: as many as the KV memory
    holds). Raises InvalidRequest if the model does not fit or one request does not."""
    _check_count(prompt_tokens, "input", minimum=1)
    _check_count(output_tokens, "output", minimum=1)
    if concurrency is not None:
        _check_count(concurrency, "concurrency", minimum=1)
    if not fits(setup):
        raise InvalidRequest(
            f"{setup.model.id} does not fit in {setup.gpu_count} x {setup.gpu.id}", param="gpus"
        )
    largest = batch_max(setup, prompt_tokens + output_tokens)
    if largest == 0:
        raise InvalidRequest(
            f"one request of {prompt_tokens + output_tokens} tokens does not fit in the KV"
            " memory left after the weights",
            param="input",
        )
    batch = largest if concurrency is None else min(concurrency, largest)
    kv_tokens_total = batch * (prompt_tokens + output_tokens // 2)
    step_s = decode_step_time_s(setup, batch, kv_tokens_total)
    prefill_s = prefill_time_s(setup, prompt_tokens)
    total = batch / step_s
    point = OperatingPoint(
        batch=batch,
        bound=bound(setup, batch, kv_tokens_total),
        ttft_ms=(prefill_s + decode_step_time_s(setup, 1, prompt_tokens)) * 1000,
        itl_ms=step_s * 1000,
        output_tokens_per_s=total,
        output_tokens_per_s_per_gpu=total / setup.gpu_count,
        prefill_tokens_per_s=prompt_tokens / prefill_s,
        batch_max=largest,
    )
    assert point.batch <= point.batch_max
    assert point.output_tokens_per_s > 0
    return point
