"""``plan cost`` and ``plan price`` as data in, data out (pure), shared by the CLI and the
admin API.

A pool of ``pool_gpus`` GPUs runs replicas of ``gpus`` GPUs each. Its cost per hour comes
from ``cost.PoolCost`` with every unset figure filled from the catalogs (the GPU's price and
power, ``site_defaults.yaml``); its throughput from the performance model at the
concurrency asked, or at the largest one that keeps the mean inter-token latency within
``itl_ms_max``. Money crosses the boundary as decimal text in US dollars.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

from tokenmill.economics import chain, perf
from tokenmill.economics.cost import (
    SECONDS_PER_HOUR,
    CostBreakdown,
    PoolCost,
    TokenCosts,
    pool_cost_per_hour,
    token_costs,
)
from tokenmill.economics.queries import PerfQuery, setup_of
from tokenmill.economics.reference import Catalogs, MarketPrice
from tokenmill.errors import InvalidRequest, TokenmillError
from tokenmill.money import NANO_PER_UNIT, TOKENS_PER_PRICE, div_ceil, format_amount

Basis = Literal["owned", "rented"]
POOL_GPUS_MAX = 10_000_000
MONTHS_PER_YEAR = 12


@dataclass(frozen=True)
class CostQuery:
    """What a pool costs and what its tokens cost. Decimal fields are US dollars or ratios;
    ``None`` takes the catalog's figure (the GPU's price, ``site_defaults.yaml``)."""

    perf: PerfQuery
    pool_gpus: int | None = None  # default: one replica
    basis: Basis = "owned"
    purchase_usd_per_gpu: Decimal | None = None
    depreciation_years: Decimal | None = None
    residual_ratio: Decimal | None = None
    rent_usd_per_gpu_hour: Decimal | None = None
    energy_usd_per_kwh: Decimal | None = None  # rented: 0 unless given (rent includes power)
    pue: Decimal | None = None
    node_overhead_ratio: Decimal | None = None
    utilization_power_ratio: Decimal | None = None
    hosting_usd_per_month: Decimal | None = None  # owned: colocation per kW of IT load
    operations_usd_per_month: Decimal | None = None  # default: per GPU-month * GPUs
    utilization_ratio: Decimal | None = None
    itl_ms_max: float | None = None
    price_usd_per_mtok: Decimal | None = None  # for the chain's margin line


def _nano(value: Decimal, param: str) -> int:
    if not value.is_finite() or value < 0:
        raise InvalidRequest(f"{param} must be a finite amount >= 0, got {value}", param=param)
    nano = value * NANO_PER_UNIT
    if nano != nano.to_integral_value():
        raise InvalidRequest(f"{param} has more than 9 decimals", param=param)
    return int(nano)


def _usd(nano: int) -> str:
    return format_amount(nano)


def _or_zero(value: Decimal | None) -> Decimal:
    return Decimal(0) if value is None else value


def _pick(value: Decimal | None, catalogs: Catalogs, name: str) -> Decimal:
    return catalogs.default(name) if value is None else value


def _pool_gpus(query: CostQuery, setup: perf.Setup) -> int:
    pool_gpus = setup.gpu_count if query.pool_gpus is None else query.pool_gpus
    if isinstance(pool_gpus, bool) or not isinstance(pool_gpus, int):
        raise InvalidRequest("pool_gpus must be a whole number", param="pool_gpus")
    if not 1 <= pool_gpus <= POOL_GPUS_MAX or pool_gpus % setup.gpu_count:
        message = (
            f"pool_gpus must be a multiple of the replica's {setup.gpu_count} GPUs"
            f" (at most {POOL_GPUS_MAX}), got {pool_gpus}"
        )
        raise InvalidRequest(message, param="pool_gpus")
    return pool_gpus


def pool_of(query: CostQuery, setup: perf.Setup, catalogs: Catalogs) -> PoolCost:
    """The pool's costs, every unset figure filled in from the catalogs."""
    pool_gpus = _pool_gpus(query, setup)
    if query.basis not in ("owned", "rented"):
        message = f"basis must be owned or rented, got {query.basis!r}"
        raise InvalidRequest(message, param="basis")
    gpu = setup.gpu
    node_overhead = _pick(query.node_overhead_ratio, catalogs, "node_overhead_ratio")
    it_kw = Decimal(pool_gpus) * Decimal(repr(gpu.power_w)) * (1 + node_overhead) / 1000
    operations = query.operations_usd_per_month
    if operations is None:
        operations = catalogs.default("operations_usd_per_gpu_month") * pool_gpus
    common: dict[str, Any] = {
        "gpu_count": pool_gpus,
        "power_w_per_gpu": gpu.power_w,
        "node_overhead_ratio": node_overhead,
        "pue": _pick(query.pue, catalogs, "pue"),
        "utilization_power_ratio": _pick(
            query.utilization_power_ratio, catalogs, "utilization_power_ratio"
        ),
        "operations_nano_per_month": _nano(operations, "operations_usd_per_month"),
    }
    if query.basis == "rented":
        rent = query.rent_usd_per_gpu_hour
        if rent is None:
            rent = gpu.rent_usd_per_gpu_hour
        if rent is None:
            message = f"the catalog has no rent for {gpu.id}; give rent_usd_per_gpu_hour"
            raise InvalidRequest(message, param="rent_usd_per_gpu_hour")
        return PoolCost(
            **common,
            energy_nano_per_kwh=_nano(_or_zero(query.energy_usd_per_kwh), "energy_usd_per_kwh"),
            hosting_nano_per_month=_nano(
                _or_zero(query.hosting_usd_per_month), "hosting_usd_per_month"
            ),
            rent_nano_per_gpu_hour=_nano(rent, "rent_usd_per_gpu_hour"),
        )
    purchase = query.purchase_usd_per_gpu
    if purchase is None:
        purchase = gpu.purchase_usd
    if purchase is None:
        message = f"the catalog has no purchase price for {gpu.id}; give purchase_usd_per_gpu"
        raise InvalidRequest(message, param="purchase_usd_per_gpu")
    hosting = query.hosting_usd_per_month
    if hosting is None:
        hosting = catalogs.default("colocation_usd_per_kw_month") * it_kw
    return PoolCost(
        **common,
        energy_nano_per_kwh=_nano(
            _pick(query.energy_usd_per_kwh, catalogs, "energy_usd_per_kwh"), "energy_usd_per_kwh"
        ),
        hosting_nano_per_month=_nano(
            hosting.quantize(Decimal("0.000000001")), "hosting_usd_per_month"
        ),
        purchase_nano_per_gpu=_nano(purchase, "purchase_usd_per_gpu"),
        depreciation_years=_pick(query.depreciation_years, catalogs, "depreciation_years"),
        residual_ratio=_pick(query.residual_ratio, catalogs, "residual_ratio"),
        network_storage_ratio=catalogs.network_storage_ratio().quantize(Decimal("0.0001")),
    )


def _concurrency_for_itl(setup: perf.Setup, query: PerfQuery, itl_ms_max: float) -> int:
    """The largest concurrency whose mean inter-token latency stays within the target (the
    latency grows with the batch, so a binary search finds it)."""
    if not math.isfinite(itl_ms_max) or itl_ms_max <= 0:
        message = f"itl_ms_max must be a number of milliseconds > 0, got {itl_ms_max}"
        raise InvalidRequest(message, param="itl_ms_max")
    high = perf.batch_limit(setup)
    if query.concurrency is not None:
        high = min(high, query.concurrency)

    def itl_ms(concurrency: int) -> float:
        point = perf.operating_point(setup, query.input_tokens, query.output_tokens, concurrency)
        return point.itl_ms

    found = perf.largest_meeting(lambda concurrency: itl_ms(concurrency) <= itl_ms_max, high)
    if found is None:
        message = (
            f"no concurrency meets itl_ms_max {itl_ms_max}: one request alone gets"
            f" {itl_ms(1):.1f} ms between tokens on this replica"
        )
        raise InvalidRequest(message, param="itl_ms_max")
    return found


def _hour_lines(hour: CostBreakdown) -> dict[str, str]:
    return {
        "capital": _usd(hour.capital_nano),
        "network_and_storage": _usd(hour.network_nano),
        "rent": _usd(hour.rent_nano),
        "energy": _usd(hour.energy_nano),
        "hosting": _usd(hour.hosting_nano),
        "operations": _usd(hour.operations_nano),
        "total": _usd(hour.total_nano),
    }


def cost_answer(query: CostQuery, catalogs: Catalogs) -> dict[str, Any]:
    """What ``plan cost --json`` prints."""
    return _costed(query, catalogs)[0]


def _costed(query: CostQuery, catalogs: Catalogs) -> tuple[dict[str, Any], TokenCosts]:
    """The answer and the token costs behind it (price advice reads the latter exactly)."""
    setup = setup_of(query.perf, catalogs)
    perf_query = query.perf
    if query.itl_ms_max is not None:
        concurrency = _concurrency_for_itl(setup, perf_query, query.itl_ms_max)
        perf_query = dataclasses.replace(perf_query, concurrency=concurrency)
    point = perf.operating_point(
        setup, perf_query.input_tokens, perf_query.output_tokens, perf_query.concurrency
    )
    pool = pool_of(query, setup, catalogs)
    replicas = pool.gpu_count // setup.gpu_count
    hour = pool_cost_per_hour(pool)
    utilization = _pick(query.utilization_ratio, catalogs, "utilization_ratio")
    costs = token_costs(
        hour.total_nano,
        Fraction(repr(point.prefill_tokens_per_s)) * replicas,
        Fraction(repr(point.decode_tokens_per_s)) * replicas,
        utilization,
        basis="modeled",
    )
    served_per_hour = (
        Fraction(repr(point.output_tokens_per_s)) * replicas * SECONDS_PER_HOUR
    ) * Fraction(utilization)
    all_in = Fraction(hour.total_nano * TOKENS_PER_PRICE) / served_per_hour
    price_nano = (
        None
        if query.price_usd_per_mtok is None
        else _nano(query.price_usd_per_mtok, "price_usd_per_mtok")
    )
    lines = chain.chain_per_mtok(
        hour,
        served_per_hour,
        Fraction(catalogs.default("build_power_cooling_share")),
        price_nano,
    )
    answer = {
        "gpu": setup.gpu.id,
        "model": setup.model.id,
        "gpus_per_replica": setup.gpu_count,
        "pool_gpus": pool.gpu_count,
        "replicas": replicas,
        "basis": pool.basis,
        "input": perf_query.input_tokens,
        "output": perf_query.output_tokens,
        "concurrency": point.batch,
        "itl_ms": round(point.itl_ms, 3),
        "ttft_ms": round(point.ttft_ms, 3),
        "output_tokens_per_s": round(point.output_tokens_per_s * replicas, 3),
        "utilization_ratio": str(utilization),
        "cost_usd_per_hour": _hour_lines(hour),
        "cost_usd_per_mtok": {
            "input": _usd(costs.input_nano_per_mtok),
            "output": _usd(costs.output_nano_per_mtok),
            "output_all_in": _usd(div_ceil(all_in.numerator, all_in.denominator)),
        },
        "chain_usd_per_mtok": {line.name: _usd(line.nano_per_mtok) for line in lines},
        "assumptions": _assumptions(pool, utilization, catalogs),
    }
    return answer, costs


def _assumptions(pool: PoolCost, utilization: Decimal, catalogs: Catalogs) -> dict[str, str]:
    shown = {
        "pue": str(pool.pue),
        "node_overhead_ratio": str(pool.node_overhead_ratio),
        "utilization_power_ratio": str(pool.utilization_power_ratio),
        "energy_usd_per_kwh": _usd(pool.energy_nano_per_kwh),
        "hosting_usd_per_month": _usd(pool.hosting_nano_per_month),
        "operations_usd_per_month": _usd(pool.operations_nano_per_month),
        "utilization_ratio": str(utilization),
        "build_power_cooling_share": str(catalogs.default("build_power_cooling_share")),
    }
    if pool.basis == "owned":
        assert pool.purchase_nano_per_gpu is not None
        shown["purchase_usd_per_gpu"] = _usd(pool.purchase_nano_per_gpu)
        shown["depreciation_years"] = str(pool.depreciation_years)
        shown["residual_ratio"] = str(pool.residual_ratio)
        shown["network_storage_ratio"] = str(pool.network_storage_ratio)
    else:
        assert pool.rent_nano_per_gpu_hour is not None
        shown["rent_usd_per_gpu_hour"] = _usd(pool.rent_nano_per_gpu_hour)
    return shown


# Price advice ------------------------------------------------------------------------------


def price_for_margin(cost_nano: int, margin_ratio: Decimal) -> int:
    """The price whose gross margin ``(price - cost) / price`` is ``margin_ratio``, rounded up
    to a whole nano-unit (so the margin is never below the target)."""
    if not margin_ratio.is_finite() or not 0 <= margin_ratio < 1:
        message = f"margin_ratio must be in [0, 1), got {margin_ratio}"
        raise InvalidRequest(message, param="margin_ratio")
    exact = Fraction(cost_nano) / (1 - Fraction(margin_ratio))
    return div_ceil(exact.numerator, exact.denominator)


def _margin_at(price_nano: int, cost_nano: int) -> str | None:
    if price_nano == 0:
        return None
    margin = Decimal(price_nano - cost_nano) / Decimal(price_nano)
    return str(margin.quantize(Decimal("0.001")))


def _market_row(price: MarketPrice, cost: dict[str, int]) -> dict[str, Any]:
    input_nano = _nano(price.input_usd_per_mtok, "input_usd_per_mtok")
    output_nano = _nano(price.output_usd_per_mtok, "output_usd_per_mtok")
    return {
        "model": price.model,
        "provider": price.provider,
        "date": price.date,
        "input_usd_per_mtok": _usd(input_nano),
        "output_usd_per_mtok": _usd(output_nano),
        "margin_ratio_input": _margin_at(input_nano, cost["input"]),
        "margin_ratio_output": _margin_at(output_nano, cost["output"]),
        "source": price.source,
    }


def price_answer(query: CostQuery, margin_ratio: Decimal, catalogs: Catalogs) -> dict[str, Any]:
    """What ``plan price --json`` prints: the cost, the price for the target margin, and the
    market's prices of the same model with the margin each would leave."""
    cost, costs = _costed(query, catalogs)
    cost_nano = {"input": costs.input_nano_per_mtok, "output": costs.output_nano_per_mtok}
    advice = {side: price_for_margin(nano, margin_ratio) for side, nano in cost_nano.items()}
    market = [_market_row(price, cost_nano) for price in catalogs.prices_of(cost["model"])]
    return {
        "model": cost["model"],
        "gpu": cost["gpu"],
        "margin_ratio": str(margin_ratio),
        "cost_usd_per_mtok": {side: _usd(nano) for side, nano in cost_nano.items()},
        "price_usd_per_mtok": {side: _usd(nano) for side, nano in advice.items()},
        "market": market,
        "cost": cost,
    }


def cost_by_gpu(query: CostQuery, catalogs: Catalogs) -> list[dict[str, Any]]:
    """The query's all-in cost per million output tokens on every priced catalog GPU, on the
    cheapest replica of 1, 2, 4 or 8 GPUs at the query's precision (or fp8, or bf16 where
    the GPU lacks it); cheapest first."""
    rows = []
    for gpu in catalogs.gpus.values():
        best: dict[str, Any] | None = None
        for precision in dict.fromkeys([query.perf.precision, "fp8", "bf16"]):
            for size in (1, 2, 4, 8):
                row = _cost_on(query, catalogs, gpu.id, size, precision)
                if row is not None and (best is None or _all_in(row) < _all_in(best)):
                    best = row
            if best is not None:
                break
        if best is not None:
            rows.append(best)
    rows.sort(key=_all_in)
    return rows


def _all_in(row: dict[str, Any]) -> Decimal:
    return Decimal(row["output_all_in_usd_per_mtok"])


def _cost_on(
    query: CostQuery, catalogs: Catalogs, gpu_id: str, size: int, precision: str
) -> dict[str, Any] | None:
    perf_query = dataclasses.replace(
        query.perf, gpu=gpu_id, gpus=size, precision=precision, concurrency=None
    )
    try:
        answer = cost_answer(dataclasses.replace(query, perf=perf_query, pool_gpus=None), catalogs)
    except TokenmillError:
        return None  # no price on this basis, no such precision, or the model does not fit
    return {
        "gpu": gpu_id,
        "gpus_per_replica": size,
        "precision": precision,
        "output_all_in_usd_per_mtok": answer["cost_usd_per_mtok"]["output_all_in"],
    }
