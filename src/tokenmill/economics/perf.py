"""The performance model of LLM inference on a GPU replica: a roofline per operator (pure).

A replica is ``gpu_count`` identical GPUs holding one copy of a model, split by tensor
parallelism (``tp``: every weight matrix cut across the GPUs) or, for a mixture of experts,
by attention data parallelism with expert parallelism (``dep``: every GPU holds the dense
weights and its own requests' KV cache, the experts are spread over the GPUs).

Every forward pass over ``tokens`` tokens (a decode step of a batch, or one prompt's prefill)
costs, on each GPU, the sum of three operator groups, each a two-roof roofline
``max(bytes / (bandwidth * e_m), flops / (peak * e_c))``:

* dense weights (attention projections, shared experts, embeddings): all read once per pass;
* routed experts: only the experts the pass's tokens touch are read, an expected
  ``E * (1 - (1 - k/E)^tokens)`` of ``E`` per layer, and the group runs at ``e_moe`` of its
  roofline (grouped GEMMs of few tokens each, token permutation, imbalance between experts);
* attention: reads the KV cache of every request in the pass; its FLOPs grow with context;

plus routing (``moe_token_overhead_s`` per token per MoE layer), the interconnect (tp: two
all-reduces of the activations per layer; dep: an all-to-all dispatch and combine per MoE
layer) and, for a decode step, a fixed ``step_overhead_s``.

A request of ``I`` prompt and ``O`` output tokens served ``batch`` at a time takes, of the
replica's time, its prefill's marginal cost (compute, routing and traffic: on a busy
server it rides in decode steps that read the weights anyway) plus ``O - 1`` decode steps
shared with ``batch - 1`` others, so ``output tokens/s = O / (prefill + (O - 1) * step /
batch)``: the sustained rate of a server kept full, as ``trtllm-bench`` measures it. The
batch is at most what the KV cache holds and what the scheduler runs (``batch_limit``).
docs/economics.md gives every formula and the calibration against published measurements.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from tokenmill.economics.catalog import Gpu, ModelSpec
from tokenmill.errors import InvalidRequest

# Bytes per weight or KV value; fp4 counts its block scales (NVFP4: one 8-bit scale per 16
# values, 4.5 bits; MXFP4: one per 32, 4.25 bits).
PRECISION_BYTES: Mapping[str, float] = types.MappingProxyType(
    {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "fp4": 0.5625}
)
_BF16_BYTES = 2.0
_ACTIVATION_BYTES = 2.0  # activations cross the interconnect in bf16

Bound = Literal["compute", "bandwidth", "memory"]
StepBound = Literal["compute", "bandwidth"]
Parallel = Literal["tp", "dep"]
PARALLEL_KINDS: tuple[Parallel, ...] = ("tp", "dep")


def parallel_of(text: str) -> Parallel:
    """``text`` as a parallel kind; InvalidRequest (param ``parallel``) if it is none."""
    for kind in PARALLEL_KINDS:
        if text == kind:
            return kind
    message = f"parallel must be one of {', '.join(PARALLEL_KINDS)}, got {text!r}"
    raise InvalidRequest(message, param="parallel")


def default_kv_precision(precision: str) -> str:
    """The KV cache precision engines use with these weights: fp8 beside fp8 or fp4 weights
    (quantized checkpoints ship an fp8 KV scale), else the weights' own precision."""
    return "fp8" if precision in ("fp8", "fp4") else precision


@dataclass(frozen=True)
class Setup:
    """One replica: a model on ``gpu_count`` GPUs, its precisions, how it is split and the
    efficiency factors (the defaults are calibrated in docs/economics.md)."""

    gpu: Gpu
    gpu_count: int
    model: ModelSpec
    precision: str = "bf16"  # weights and compute
    kv_precision: str | None = None  # None: default_kv_precision(precision)
    parallel: Parallel = "tp"
    efficiency_compute_ratio: float = 0.5  # e_c: achieved / peak FLOP/s
    efficiency_memory_ratio: float = 0.7  # e_m: achieved / peak memory bandwidth
    efficiency_moe_ratio: float = 0.4  # e_moe: expert layers' share of their roofline
    moe_token_overhead_s: float = 0.4e-6  # per token per MoE layer: routing, permutation
    efficiency_network_ratio: float = 0.7  # achieved / peak interconnect bandwidth
    collective_latency_s: float = 10e-6  # fixed cost of one all-reduce or all-to-all
    step_overhead_s: float = 0.003  # per decode step: scheduler, kernel launches, sampling
    batch_requests_max: int = 512  # requests one scheduler runs at once (per GPU under dep)
    memory_reserve_ratio: float = 0.1  # of GPU memory kept for activations and fragmentation

    def __post_init__(self) -> None:
        _check_count(self.gpu_count, "gpu_count", minimum=1)
        _check_precision(self.precision, "precision")
        if self.kv_precision is None:
            object.__setattr__(self, "kv_precision", default_kv_precision(self.precision))
        _check_precision(self.kv_precision, "kv_precision")
        if self.parallel not in PARALLEL_KINDS:
            message = f"parallel must be one of {', '.join(PARALLEL_KINDS)}, got {self.parallel!r}"
            raise InvalidRequest(message, param="parallel")
        if self.parallel == "dep" and self.model.experts == 0:
            message = f"parallel 'dep' spreads experts; {self.model.id} has none (use tp)"
            raise InvalidRequest(message, param="parallel")
        for name in (
            "efficiency_compute_ratio",
            "efficiency_memory_ratio",
            "efficiency_moe_ratio",
            "efficiency_network_ratio",
        ):
            _check_ratio(getattr(self, name), name)
        _check_count(self.batch_requests_max, "batch_requests_max", minimum=1)
        for name in ("step_overhead_s", "collective_latency_s", "moe_token_overhead_s"):
            _check_finite(getattr(self, name), name)
            if getattr(self, name) < 0:
                raise InvalidRequest(f"{name} must be >= 0", param=name)
        _check_finite(self.memory_reserve_ratio, "memory_reserve_ratio")
        if not 0 <= self.memory_reserve_ratio < 1:
            message = f"memory_reserve_ratio must be in [0, 1), got {self.memory_reserve_ratio}"
            raise InvalidRequest(message, param="memory_reserve_ratio")

    @property
    def kv(self) -> str:
        """The KV cache precision, resolved."""
        assert self.kv_precision is not None
        return self.kv_precision


def _check_count(value: int, param: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidRequest(f"{param} must be an integer >= {minimum}, got {value!r}", param=param)


def _check_precision(value: str | None, param: str) -> None:
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


# Weights ---------------------------------------------------------------------------------


def _expert_bytes_per_weight(setup: Setup) -> float:
    """Experts keep their checkpoint's precision when it is smaller (gpt-oss ships MXFP4)."""
    chosen = PRECISION_BYTES[setup.precision]
    native = setup.model.expert_precision
    return chosen if native is None else min(chosen, PRECISION_BYTES[native])


def _dense_weight_bytes(setup: Setup) -> float:
    return setup.model.dense_parameters * PRECISION_BYTES[setup.precision]


def _expert_weight_bytes(setup: Setup) -> float:
    return setup.model.expert_parameters * _expert_bytes_per_weight(setup)


def weight_bytes(setup: Setup) -> float:
    """Bytes of one copy of the model's weights (dense part at ``precision``, experts at the
    smaller of ``precision`` and their checkpoint's)."""
    result = _dense_weight_bytes(setup) + _expert_weight_bytes(setup)
    assert result > 0
    return result


def _weight_bytes_per_gpu(setup: Setup) -> float:
    """Weights each GPU holds: a 1/n slice of everything (tp), or the dense part whole and
    1/n of the experts (dep)."""
    n = setup.gpu_count
    if setup.parallel == "dep":
        return _dense_weight_bytes(setup) + _expert_weight_bytes(setup) / n
    return weight_bytes(setup) / n


# KV cache --------------------------------------------------------------------------------


def kv_bytes_per_token(setup: Setup) -> float:
    """Bytes of KV cache one token occupies at the KV precision (one copy)."""
    scale = PRECISION_BYTES[setup.kv] / _BF16_BYTES
    result = setup.model.kv_bytes_per_token_bf16 * scale
    assert result > 0
    return result


def _kv_copies(setup: Setup) -> float:
    """How many copies of one token's KV the replica keeps: tp splits the KV heads over the
    GPUs and copies them to GPUs beyond the KV head count; dep keeps each request's KV
    whole on one GPU, once."""
    if setup.parallel == "dep":
        return 1.0
    return setup.gpu_count / min(setup.gpu_count, setup.model.heads_kv)


def _kv_bytes_per_token_replica(setup: Setup) -> float:
    """Bytes one token's KV takes over the whole replica, copies included."""
    return kv_bytes_per_token(setup) * _kv_copies(setup)


def kv_capacity_tokens(setup: Setup) -> int:
    """Tokens of KV cache the replica holds beside the weights and the reserve; 0 if the
    weights do not fit on a GPU."""
    usable_bytes = setup.gpu.memory_bytes * (1 - setup.memory_reserve_ratio)
    free_bytes_per_gpu = usable_bytes - _weight_bytes_per_gpu(setup)
    if free_bytes_per_gpu <= 0:
        return 0
    free_bytes = free_bytes_per_gpu * setup.gpu_count
    result = math.floor(free_bytes / _kv_bytes_per_token_replica(setup))
    assert result >= 0
    return result


def fits(setup: Setup) -> bool:
    """Whether the weights fit with room for at least one token of KV cache."""
    return kv_capacity_tokens(setup) >= 1


def batch_limit(setup: Setup) -> int:
    """The most requests the replica's schedulers run at once, memory aside: one scheduler
    under tp, one per GPU under dep (attention data parallel)."""
    ranks = setup.gpu_count if setup.parallel == "dep" else 1
    return setup.batch_requests_max * ranks


def batch_max(setup: Setup, tokens_per_request: int) -> int:
    """How many requests of ``tokens_per_request`` KV tokens each fit at once (>= 0). Under
    dep a request's KV lives on one GPU, so each GPU holds whole requests."""
    _check_count(tokens_per_request, "tokens_per_request", minimum=1)
    capacity = kv_capacity_tokens(setup)
    if setup.parallel == "dep":
        per_gpu = capacity // setup.gpu_count
        result = setup.gpu_count * (per_gpu // tokens_per_request)
    else:
        result = capacity // tokens_per_request
    assert result >= 0
    return result


# Peaks -----------------------------------------------------------------------------------


def _peak_per_gpu(setup: Setup, precision: str) -> float:
    per_gpu_by_precision = {
        "bf16": setup.gpu.flops_bf16_per_s,
        "fp16": setup.gpu.flops_bf16_per_s,
        "fp8": setup.gpu.flops_fp8_per_s,
        "fp4": setup.gpu.flops_fp4_per_s,
    }
    per_gpu = per_gpu_by_precision[precision]
    if per_gpu is None:
        message = f"GPU '{setup.gpu.id}' has no {precision} throughput figure"
        raise InvalidRequest(message, param="precision")
    return per_gpu


def peak_flops_per_s(setup: Setup) -> float:
    """Peak dense FLOP/s of the replica at ``setup.precision``; raises if the GPU lacks it."""
    result = _peak_per_gpu(setup, setup.precision) * setup.gpu_count
    assert result > 0
    return result


def _attention_peak_per_gpu(setup: Setup) -> float:
    """Attention runs at the KV cache's precision (fp8 attention kernels read fp8 KV), never
    below fp8, and at bf16 where the GPU has no fp8 path."""
    precision = "fp8" if setup.kv == "fp4" else setup.kv
    if precision == "fp8" and setup.gpu.flops_fp8_per_s is None:
        precision = "bf16"
    return _peak_per_gpu(setup, precision)


# One forward pass --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pass:
    """Seconds of one forward pass on each GPU, by operator group and roof."""

    dense_s: float
    expert_s: float
    attention_s: float
    route_s: float
    network_s: float
    compute_s: float  # the part of the three groups where the compute roof was higher
    memory_s: float  # the part where the bandwidth roof was higher
    flops_s: float  # the groups' FLOPs at their derated peaks, whichever roof was higher

    @property
    def total_s(self) -> float:
        return self.dense_s + self.expert_s + self.attention_s + self.route_s + self.network_s

    @property
    def marginal_s(self) -> float:
        """What the pass adds to a forward pass that reads the weights anyway: its FLOPs,
        routing and traffic (a prefill riding in the decode steps of a busy server)."""
        return self.flops_s + self.route_s + self.network_s


def _experts_touched_ratio(setup: Setup, tokens: int) -> float:
    """Expected share of a layer's experts that ``tokens`` tokens route to (each picks k of
    E, independently and uniformly)."""
    experts = setup.model.experts
    if experts == 0:
        return 0.0
    missed = (1 - setup.model.experts_per_token / experts) ** tokens
    return 1 - missed


def _attention_flops_per_context_token(setup: Setup) -> float:
    """FLOPs one query token spends on one earlier token, over all attention layers (the
    scores and the weighted sum)."""
    model = setup.model
    width = model.attention_dim_qk + model.attention_dim_v
    return 2 * model.attention_layers * model.heads_query * width


def _network_s(setup: Setup, tokens: int, *, spread: bool) -> float:
    """The interconnect's share of a pass of ``tokens`` tokens, on each GPU (``spread``: the
    tokens of many requests, shared over the GPUs under dep; else one request's, on one)."""
    n = setup.gpu_count
    if n == 1:
        return 0.0
    model = setup.model
    link_bytes_per_s = setup.gpu.interconnect_bytes_per_s / 2 * setup.efficiency_network_ratio
    if setup.parallel == "tp":
        # Two ring all-reduces per layer; each GPU sends 2(n-1)/n of the activations.
        message_bytes = tokens * model.hidden_size * _ACTIVATION_BYTES * 2 * (n - 1) / n
        per_collective = setup.collective_latency_s + message_bytes / link_bytes_per_s
        return 2 * model.layers * per_collective
    # dep: each MoE layer sends every token to its k experts and back; (n-1)/n of them leave
    # the GPU. A GPU holds tokens / n of a spread pass's tokens, all of one request's.
    tokens_here = tokens / n if spread else tokens
    sent_bytes = tokens_here * model.experts_per_token * model.hidden_size * _ACTIVATION_BYTES
    per_collective = setup.collective_latency_s + sent_bytes * (n - 1) / n / link_bytes_per_s
    return 2 * model.moe_layers * per_collective


def _forward_pass(
    setup: Setup, tokens: int, kv_read_tokens: int, attention_pairs: float, *, spread: bool
) -> _Pass:
    """One pass of ``tokens`` tokens that reads ``kv_read_tokens`` tokens of KV cache and
    scores ``attention_pairs`` (query, key) pairs. ``spread``: the work of many requests,
    shared over the GPUs; otherwise one request, whose dense part and attention sit on one
    GPU under dep."""
    model = setup.model
    n = setup.gpu_count
    bandwidth = setup.gpu.bandwidth_bytes_per_s * setup.efficiency_memory_ratio
    peak = _peak_per_gpu(setup, setup.precision) * setup.efficiency_compute_ratio
    attention_peak = _attention_peak_per_gpu(setup) * setup.efficiency_compute_ratio
    dense_share = 1 if setup.parallel == "dep" and not spread else n

    dense_bytes = _dense_weight_bytes(setup) / (1 if setup.parallel == "dep" else n)
    dense_flops = 2 * model.dense_parameters_active * tokens / dense_share
    expert_bytes = _expert_weight_bytes(setup) * _experts_touched_ratio(setup, tokens) / n
    expert_flops = 2 * model.expert_parameters_active * tokens / n
    # Each GPU reads its share of the KV: tp spreads every token's KV over the GPUs
    # (copies included), dep spreads the requests.
    kv_bytes = kv_read_tokens * _kv_bytes_per_token_replica(setup) / dense_share
    attention_flops = attention_pairs * _attention_flops_per_context_token(setup) / dense_share

    groups = (
        (dense_bytes / bandwidth, dense_flops / peak, 1.0),
        (expert_bytes / bandwidth, expert_flops / peak, setup.efficiency_moe_ratio),
        (kv_bytes / bandwidth, attention_flops / attention_peak, 1.0),
    )
    times = [max(memory_s, compute_s) / ratio for memory_s, compute_s, ratio in groups]
    compute_s = sum(t for t, (m, c, _) in zip(times, groups, strict=True) if c > m)
    memory_s = sum(t for t, (m, c, _) in zip(times, groups, strict=True) if c <= m)
    # Routing each token through each MoE layer (top-k, permute, unpermute): every GPU
    # routes all tokens under tp, its own requests' tokens under dep.
    routed_tokens = tokens / n if setup.parallel == "dep" and spread else tokens
    route_s = routed_tokens * model.moe_layers * setup.moe_token_overhead_s
    result = _Pass(
        flops_s=sum(compute_s / ratio for _, compute_s, ratio in groups),
        dense_s=times[0],
        expert_s=times[1],
        route_s=route_s,
        attention_s=times[2],
        network_s=_network_s(setup, tokens, spread=spread),
        compute_s=compute_s,
        memory_s=memory_s,
    )
    assert math.isfinite(result.total_s)
    assert result.total_s >= 0
    return result


def _prefill_pass(setup: Setup, prompt_tokens: int, *, spread: bool) -> _Pass:
    # Causal attention: token i scores i earlier tokens, I^2/2 pairs in all.
    pairs = prompt_tokens * prompt_tokens / 2
    return _forward_pass(setup, prompt_tokens, 0, pairs, spread=spread)


def prefill_time_s(setup: Setup, prompt_tokens: int) -> float:
    """Seconds to prefill one prompt of ``prompt_tokens`` tokens on an otherwise idle replica."""
    _check_count(prompt_tokens, "prompt_tokens", minimum=0)
    if prompt_tokens == 0:
        return 0.0
    return _prefill_pass(setup, prompt_tokens, spread=False).total_s


def prefill_busy_s(setup: Setup, prompt_tokens: int) -> float:
    """Seconds of the whole replica one prompt's prefill adds on a busy server: its FLOPs,
    routing and traffic, spread over the GPUs (the weights are read by the decode steps it
    rides in anyway)."""
    _check_count(prompt_tokens, "prompt_tokens", minimum=0)
    if prompt_tokens == 0:
        return 0.0
    return _prefill_pass(setup, prompt_tokens, spread=True).marginal_s


def _check_decode_input(batch: int, kv_tokens_total: int) -> None:
    _check_count(batch, "batch", minimum=1)
    _check_count(kv_tokens_total, "kv_tokens_total", minimum=0)


def _decode_pass(setup: Setup, batch: int, kv_tokens_total: int) -> _Pass:
    _check_decode_input(batch, kv_tokens_total)
    return _forward_pass(setup, batch, kv_tokens_total, kv_tokens_total, spread=True)


def decode_step_time_s(setup: Setup, batch: int, kv_tokens_total: int) -> float:
    """Seconds for one decode step of ``batch`` requests holding ``kv_tokens_total`` KV tokens."""
    result = _decode_pass(setup, batch, kv_tokens_total).total_s + setup.step_overhead_s
    assert math.isfinite(result)
    assert result > 0
    return result


def _bound_of(step: _Pass) -> StepBound:
    return "compute" if step.compute_s > step.memory_s else "bandwidth"


def step_bound(setup: Setup, batch: int, kv_tokens_total: int) -> StepBound:
    """Which roof limits most of this decode step: ``"bandwidth"`` or ``"compute"``
    (bandwidth on a tie)."""
    return _bound_of(_decode_pass(setup, batch, kv_tokens_total))


def output_tokens_per_s(setup: Setup, batch: int, kv_tokens_total: int) -> float:
    """Output tokens per second of the replica while decoding this batch (prefill aside)."""
    result = batch / decode_step_time_s(setup, batch, kv_tokens_total)
    assert math.isfinite(result)
    assert result > 0
    return result


# An operating point ------------------------------------------------------------------------


def largest_meeting(meets: Callable[[int], bool], high: int) -> int | None:
    """The largest concurrency in [1, ``high``] for which ``meets`` holds, for a target
    that more requests in flight only make harder (latency grows with the batch); None
    when even one request misses it. A binary search: ``meets`` runs about log2(high)
    times."""
    _check_count(high, "high", minimum=1)
    if not meets(1):
        return None
    low = 1
    while low < high:
        middle = (low + high + 1) // 2
        if meets(middle):
            low = middle
        else:
            high = middle - 1
    return low


@dataclass(frozen=True)
class OperatingPoint:
    """A replica serving requests of ``prompt_tokens`` in and ``output_tokens`` out, ``batch``
    at a time, with new requests prefilled as others finish."""

    batch: int  # requests in flight: the concurrency asked, at most batch_max and batch_limit
    bound: Bound  # memory: the KV cache capped the batch of a bandwidth-bound step
    step_bound: StepBound
    ttft_ms: float  # prefill of one prompt, then its first decode step
    itl_ms: float  # the mean gap between a request's tokens, others' prefills included
    step_ms: float  # one decode step of the whole batch
    output_tokens_per_s: float  # over the replica's GPUs, prefill time included
    output_tokens_per_s_per_gpu: float
    decode_tokens_per_s: float  # while decoding only
    prefill_tokens_per_s: float  # prompt tokens per second of replica time
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
    wanted = batch_limit(setup) if concurrency is None else min(concurrency, batch_limit(setup))
    batch = min(wanted, largest)
    kv_tokens_total = batch * (prompt_tokens + output_tokens // 2)
    step = _decode_pass(setup, batch, kv_tokens_total)
    step_s = step.total_s + setup.step_overhead_s
    busy_s = prefill_busy_s(setup, prompt_tokens)
    # The first output token comes with the prefill; each later one is a decode step.
    request_s = busy_s + (output_tokens - 1) * step_s / batch
    total = output_tokens / request_s
    limited_by = _bound_of(step)
    ttft_s = prefill_time_s(setup, prompt_tokens) + decode_step_time_s(setup, 1, prompt_tokens)
    capped = largest < wanted
    point = OperatingPoint(
        batch=batch,
        bound="memory" if capped and limited_by == "bandwidth" else limited_by,
        step_bound=limited_by,
        ttft_ms=ttft_s * 1000,
        itl_ms=(step_s + batch * busy_s / output_tokens) * 1000,
        step_ms=step_s * 1000,
        output_tokens_per_s=total,
        output_tokens_per_s_per_gpu=total / setup.gpu_count,
        decode_tokens_per_s=batch / step_s,
        prefill_tokens_per_s=prompt_tokens / busy_s,
        batch_max=largest,
    )
    assert point.batch <= point.batch_max
    assert point.output_tokens_per_s > 0
    return point
