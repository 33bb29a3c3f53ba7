"""Capacity plans: how many GPUs of which kind serve a demand forecast within latency targets,
cheapest first (pure).

For each model's demand (requests per second, or output tokens per day, with fixed input
and output lengths and p95 TTFT / ITL targets), every candidate replica is tried: each
catalog GPU with a price, replicas of 1, 2, 4 and 8 GPUs, the precisions the GPU runs
(fp4 where it has an fp4 path, else fp8, else bf16), tp and, for a mixture of experts, dep.
A candidate runs at the largest concurrency whose mean ITL meets the target; its TTFT under
load is an idle prefill plus one decode step of that batch. The model gives means, not
percentiles: the p95 targets are met by the means, which errs optimistic under bursty load.

    replicas = ceil(demand output tokens/s / (replica output tokens/s * utilization_max))

and the candidate's cost per hour is its pool's (``costing.pool_of``): owned or rented, the
catalog's prices and ``site_defaults.yaml``. Candidates are ranked by cost per hour; the
plan takes each model's cheapest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction
from typing import Any

from tokenmill.economics import perf
from tokenmill.economics.cost import pool_cost_per_hour
from tokenmill.economics.costing import Basis, CostQuery, pool_of
from tokenmill.economics.mix import MixPoint, Shape, mix_point
from tokenmill.economics.queries import PerfQuery, setup_of
from tokenmill.economics.reference import Catalogs
from tokenmill.errors import InvalidRequest, TokenmillError
from tokenmill.money import format_amount

REPLICA_SIZES = (1, 2, 4, 8)
SECONDS_PER_DAY = 86_400
OPTIONS_SHOWN = 5


@dataclass(frozen=True)
class Demand:
    """One model's load: ``requests_per_s`` or ``output_tokens_per_day`` (one of them)."""

    model: str
    input_tokens: int
    output_tokens: int
    ttft_ms_max: float
    itl_ms_max: float
    requests_per_s: Decimal | None = None
    output_tokens_per_day: int | None = None
    lengths: tuple[Shape, ...] = ()  # a mix of request shapes, instead of input/output

    def shapes(self) -> tuple[Shape, ...]:
        return self.lengths or (Shape(1.0, self.input_tokens, self.output_tokens),)

    def output_tokens_mean(self) -> Fraction:
        shapes = self.shapes()
        total = sum((Fraction(repr(shape.share)) for shape in shapes), Fraction(0))
        weighted = sum(
            (Fraction(repr(shape.share)) * shape.output_tokens for shape in shapes), Fraction(0)
        )
        return weighted / total

    def output_tokens_per_s(self) -> Fraction:
        if (self.requests_per_s is None) == (self.output_tokens_per_day is None):
            message = f"{self.model}: give requests_per_s or output_tokens_per_day, one of them"
            raise InvalidRequest(message, param="requests_per_s")
        if self.requests_per_s is not None:
            if not self.requests_per_s.is_finite() or self.requests_per_s <= 0:
                raise InvalidRequest("requests_per_s must be > 0", param="requests_per_s")
            return Fraction(self.requests_per_s) * self.output_tokens_mean()
        assert self.output_tokens_per_day is not None
        if self.output_tokens_per_day <= 0:
            raise InvalidRequest("output_tokens_per_day must be > 0", param="output_tokens_per_day")
        return Fraction(self.output_tokens_per_day, SECONDS_PER_DAY)


@dataclass(frozen=True)
class CapacityQuery:
    demands: tuple[Demand, ...]
    gpus: tuple[str, ...] = ()  # candidate GPU ids; empty: every catalog GPU with a price
    basis: Basis = "owned"
    utilization_max: Decimal | None = None  # default: site_defaults utilization_ratio


@dataclass(frozen=True)
class Option:
    gpu: str
    gpus_per_replica: int
    precision: str
    parallel: str
    concurrency: int
    itl_ms: float
    ttft_ms: float
    replica_output_tokens_per_s: float
    replicas: int
    cost_nano_per_hour: int

    @property
    def gpu_count(self) -> int:
        return self.replicas * self.gpus_per_replica


def _precisions(setup_gpu: Any) -> tuple[str, ...]:
    if setup_gpu.flops_fp4_per_s is not None:
        return ("fp4",)
    if setup_gpu.flops_fp8_per_s is not None:
        return ("fp8",)
    return ("bf16",)


def _concurrency_for(setup: perf.Setup, demand: Demand) -> MixPoint | None:
    """The point at the largest concurrency meeting both targets, or None if even one
    request misses them."""
    shapes = demand.shapes()

    def point(concurrency: int) -> MixPoint:
        return mix_point(setup, shapes, concurrency)

    def meets(at: MixPoint) -> bool:
        return at.itl_ms <= demand.itl_ms_max and at.ttft_ms_p95 <= demand.ttft_ms_max

    most = min(perf.batch_limit(setup), point(1).batch_max)
    found = perf.largest_meeting(lambda concurrency: meets(point(concurrency)), most)
    return None if found is None else point(found)


def _option(
    perf_query: PerfQuery,
    demand: Demand,
    needed_tokens_per_s: Fraction,
    query: CapacityQuery,
    catalogs: Catalogs,
) -> Option | None:
    try:
        setup = setup_of(perf_query, catalogs)
        if not perf.fits(setup):
            return None
        found = _concurrency_for(setup, demand)
    except TokenmillError:
        return None  # the GPU lacks the precision, or a request does not fit
    if found is None:
        return None
    point = found
    served = Fraction(repr(point.output_tokens_per_s))
    replicas = math.ceil(needed_tokens_per_s / served)
    pool_query = CostQuery(perf=perf_query, pool_gpus=replicas * setup.gpu_count, basis=query.basis)
    try:
        hour = pool_cost_per_hour(pool_of(pool_query, setup, catalogs))
    except TokenmillError:
        return None  # no price for this GPU on this basis
    return Option(
        gpu=setup.gpu.id,
        gpus_per_replica=setup.gpu_count,
        precision=setup.precision,
        parallel=setup.parallel,
        concurrency=point.batch,
        itl_ms=point.itl_ms,
        ttft_ms=point.ttft_ms_p95,
        replica_output_tokens_per_s=point.output_tokens_per_s,
        replicas=replicas,
        cost_nano_per_hour=hour.total_nano,
    )


def options_for(demand: Demand, query: CapacityQuery, catalogs: Catalogs) -> list[Option]:
    """Every candidate that meets the demand's targets, cheapest per hour first."""
    model = catalogs.model(demand.model)
    utilization = query.utilization_max
    if utilization is None:
        utilization = catalogs.default("utilization_ratio")
    if not utilization.is_finite() or not 0 < utilization <= 1:
        raise InvalidRequest("utilization_max must be in (0, 1]", param="utilization_max")
    for name, count in (("input", demand.input_tokens), ("output", demand.output_tokens)):
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10**7:
            message = f"{demand.model}: {name} tokens must be a whole number from 1, got {count!r}"
            raise InvalidRequest(message, param=name)
    for name, value in (("ttft_ms_max", demand.ttft_ms_max), ("itl_ms_max", demand.itl_ms_max)):
        if not math.isfinite(value) or value <= 0:
            raise InvalidRequest(f"{name} must be a number > 0", param=name)
    needed = demand.output_tokens_per_s() / Fraction(utilization)
    gpu_ids = query.gpus or tuple(
        gpu.id for gpu in catalogs.gpus.values() if gpu.purchase_usd is not None
    )
    parallels = ("tp", "dep") if model.experts else ("tp",)
    base = PerfQuery(
        gpu="",
        model=demand.model,
        input_tokens=demand.input_tokens,
        output_tokens=demand.output_tokens,
    )
    options = []
    for gpu_id in gpu_ids:
        gpu = catalogs.gpu(gpu_id)
        for size in REPLICA_SIZES:
            for precision in _precisions(gpu):
                for parallel in parallels:
                    if parallel == "dep" and size == 1:
                        continue
                    perf_query = replace(
                        base, gpu=gpu.id, gpus=size, precision=precision, parallel=parallel
                    )
                    option = _option(perf_query, demand, needed, query, catalogs)
                    if option is not None:
                        options.append(option)
    options.sort(key=lambda option: (option.cost_nano_per_hour, option.gpu_count))
    return options


def _shown(option: Option) -> dict[str, Any]:
    return {
        "gpu": option.gpu,
        "gpus_per_replica": option.gpus_per_replica,
        "precision": option.precision,
        "parallel": option.parallel,
        "replicas": option.replicas,
        "gpus": option.gpu_count,
        "concurrency": option.concurrency,
        "itl_ms": round(option.itl_ms, 3),
        "ttft_ms": round(option.ttft_ms, 3),
        "replica_output_tokens_per_s": round(option.replica_output_tokens_per_s, 3),
        "cost_usd_per_hour": format_amount(option.cost_nano_per_hour),
    }


def capacity_answer(query: CapacityQuery, catalogs: Catalogs) -> dict[str, Any]:
    """What ``plan capacity --json`` prints: per model the cheapest options, and the plan."""
    if not query.demands:
        raise InvalidRequest("give at least one demand", param="demand")
    models = []
    total_nano = 0
    gpus_by_kind: dict[str, int] = {}
    for demand in query.demands:
        options = options_for(demand, query, catalogs)
        if not options:
            message = (
                f"no candidate serves {demand.model} within ttft {demand.ttft_ms_max} ms and"
                f" itl {demand.itl_ms_max} ms, or its requests fit in no candidate's memory;"
                " loosen the targets, shorten the requests or add GPUs to the catalog"
            )
            raise InvalidRequest(message, param="itl_ms_max")
        chosen = options[0]
        total_nano += chosen.cost_nano_per_hour
        gpus_by_kind[chosen.gpu] = gpus_by_kind.get(chosen.gpu, 0) + chosen.gpu_count
        models.append(
            {
                "model": demand.model,
                "output_tokens_per_s": f"{float(demand.output_tokens_per_s()):.3f}",
                "chosen": _shown(chosen),
                "options": [_shown(option) for option in options[:OPTIONS_SHOWN]],
            }
        )
    return {
        "basis": query.basis,
        "models": models,
        "gpus": gpus_by_kind,
        "cost_usd_per_hour": format_amount(total_nano),
    }
