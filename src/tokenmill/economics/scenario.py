"""Scenarios over years: does a token factory's buildout pay off while prices fall (pure)?

A month-by-month simulation of one model's business, reported by year:

* demand (output tokens per day) grows by ``demand_growth_per_year`` (2 = doubles a year),
  the market price per million tokens is multiplied by ``price_multiplier_per_year``
  (0.5 = halves a year), both smoothly month by month;
* each month the operator looks ``lead_months`` ahead (power, site and delivery lead
  time); where the GPUs online or on order then would serve less than the demand then
  over ``utilization_max``, it orders the GPU kind with the lowest cost per output token
  among those shipping by the delivery date (``available_from``), paying for it on order.
  With ``build="profitable"`` it orders only if the new GPUs would earn back their price
  over ``depreciation_years`` at the falling price (undiscounted), and retires GPUs that
  no longer cover their cash cost; with ``build="demand"`` (the default) it meets demand
  whatever that costs, which is what shows whether the buildout pays off;
* GPUs serve the demand newest cohort first (the cheapest to run per token); revenue is
  what they serve times the price (prompts at the input price, in the request's ratio);
* each cohort pays energy, hosting and operations each month (its cash cost). A GPU kind
  "stops covering its cash cost" the month the price times what it serves at
  ``utilization_max`` falls below that cost; the fleet "stops covering its full cost" the
  month revenue falls below cash cost plus depreciation (straight-line over
  ``depreciation_years``);
* cash flow = revenue - cash costs - capital paid; payback is the month cumulative cash
  turns positive for good.

A cohort's per-GPU figures come from the capacity planner's replica of that GPU with the
lowest cost per token (``capacity.options_for``) at the model's request shape and targets.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

from tokenmill.economics.capacity import CapacityQuery, Demand, options_for
from tokenmill.economics.reference import Catalogs
from tokenmill.errors import InvalidRequest
from tokenmill.money import format_amount, nano_rounded

HOURS_PER_MONTH = 730
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
DAYS_PER_MONTH = Fraction(365, 12)
YEARS_MAX = 30
SECONDS_PER_DAY_NOMINAL = 86_400  # a token a second: a demand small enough for any pool


@dataclass(frozen=True)
class ScenarioQuery:
    model: str
    output_tokens_per_day: int  # demand at the start
    input_tokens: int = 1000
    output_tokens: int = 500
    itl_ms_max: float = 50.0
    ttft_ms_max: float = 2000.0
    start: str = "2026-01-01"
    years: int = 6
    demand_growth_per_year: Decimal = Decimal(2)
    price_multiplier_per_year: Decimal = Decimal("0.5")
    price_input_usd_per_mtok: Decimal | None = None  # default: the market's lowest
    price_output_usd_per_mtok: Decimal | None = None
    lead_months: int = 12
    gpus: tuple[str, ...] = ()  # candidate kinds; empty: every priced GPU in the catalog
    utilization_max: Decimal | None = None
    build: str = "demand"  # demand: meet it whatever it costs; profitable: only what pays


@dataclass
class _Kind:
    """One GPU kind as the planner would deploy it for this model."""

    gpu: str
    available_from: str
    tokens_per_s_per_gpu: Fraction
    capex_per_gpu: Fraction  # USD
    cash_cost_per_gpu_month: Fraction  # USD: energy, hosting, operations


@dataclass
class _Cohort:
    kind: _Kind
    ordered: int  # month index
    online: int
    gpus: int
    depreciation_months: int
    retired: int | None = None
    served_tokens: Fraction = field(default_factory=Fraction)


def _month_date(start: datetime.date, month: int) -> str:
    year = start.year + (start.month - 1 + month) // 12
    return f"{year:04d}-{(start.month - 1 + month) % 12 + 1:02d}"


def _kinds(query: ScenarioQuery, catalogs: Catalogs) -> list[_Kind]:
    demand = Demand(
        model=query.model,
        input_tokens=query.input_tokens,
        output_tokens=query.output_tokens,
        ttft_ms_max=query.ttft_ms_max,
        itl_ms_max=query.itl_ms_max,
        output_tokens_per_day=SECONDS_PER_DAY_NOMINAL,  # per-GPU figures: any amount will do
    )
    candidates = query.gpus or tuple(
        gpu.id
        for gpu in catalogs.gpus.values()
        if gpu.purchase_usd is not None and gpu.available_from is not None
    )
    kinds = []
    for gpu_id in candidates:
        gpu = catalogs.gpu(gpu_id)
        if gpu.available_from is None or gpu.purchase_usd is None:
            message = f"{gpu.id} needs available_from and purchase_usd in the catalog"
            raise InvalidRequest(message, param="gpus")
        options = options_for(demand, CapacityQuery(demands=(demand,), gpus=(gpu.id,)), catalogs)
        if not options:
            continue
        # The replica that makes a token cheapest (at a nominal demand every option is one
        # replica, so its cost per hour over its throughput ranks them per token).
        best = min(
            options,
            key=lambda option: (
                Fraction(option.cost_nano_per_hour)
                / (option.replicas * Fraction(repr(option.replica_output_tokens_per_s)))
            ),
        )
        per_gpu = Fraction(repr(best.replica_output_tokens_per_s)) / best.gpus_per_replica
        cash_per_hour = _cash_cost_per_gpu_hour(gpu.id, best.gpus_per_replica, catalogs)
        network = Fraction(catalogs.network_storage_ratio())
        kinds.append(
            _Kind(
                gpu=gpu.id,
                available_from=gpu.available_from,
                tokens_per_s_per_gpu=per_gpu,
                capex_per_gpu=Fraction(gpu.purchase_usd) * (1 + network),
                cash_cost_per_gpu_month=cash_per_hour * HOURS_PER_MONTH,
            )
        )
    if not kinds:
        raise InvalidRequest(
            f"no GPU serves {query.model} within the latency targets", param="itl_ms_max"
        )
    return kinds


def _cash_cost_per_gpu_hour(gpu_id: str, gpus: int, catalogs: Catalogs) -> Fraction:
    """Energy, colocation and operations of one GPU for an hour (no capital)."""
    gpu = catalogs.gpu(gpu_id)
    d = catalogs.default
    it_kw = Fraction(repr(gpu.power_w)) * (1 + Fraction(d("node_overhead_ratio"))) / 1000
    energy = it_kw * Fraction(d("utilization_power_ratio")) * Fraction(d("pue"))
    energy *= Fraction(d("energy_usd_per_kwh"))
    hosting = it_kw * Fraction(d("colocation_usd_per_kw_month")) / HOURS_PER_MONTH
    operations = Fraction(d("operations_usd_per_gpu_month")) / HOURS_PER_MONTH
    assert gpus >= 1
    return energy + hosting + operations


def _cost_per_token(kind: _Kind, depreciation_months: int) -> Fraction:
    monthly = kind.capex_per_gpu / depreciation_months + kind.cash_cost_per_gpu_month
    return monthly / (kind.tokens_per_s_per_gpu * SECONDS_PER_MONTH)


def _prices(query: ScenarioQuery, catalogs: Catalogs) -> tuple[Fraction, Fraction]:
    """(input, output) USD per million tokens at the start (``Catalogs.token_prices``)."""
    given_in, given_out = query.price_input_usd_per_mtok, query.price_output_usd_per_mtok
    for name, value in (
        ("price_input_usd_per_mtok", given_in),
        ("price_output_usd_per_mtok", given_out),
    ):
        if value is not None and (not value.is_finite() or value < 0):
            raise InvalidRequest(f"{name} must be >= 0, got {value}", param=name)
    price_in, price_out, _ = catalogs.token_prices(query.model, given_in, given_out)
    return Fraction(price_in), Fraction(price_out)


def _check(query: ScenarioQuery) -> datetime.date:
    if not 1 <= query.years <= YEARS_MAX:
        raise InvalidRequest(f"years must be from 1 to {YEARS_MAX}", param="years")
    if not 0 <= query.lead_months <= 120:
        raise InvalidRequest("lead_months must be from 0 to 120", param="lead_months")
    if query.build not in ("demand", "profitable"):
        raise InvalidRequest("build is demand or profitable", param="build")
    if query.output_tokens_per_day < 1:
        raise InvalidRequest("output_tokens_per_day must be >= 1", param="output_tokens_per_day")
    for name in ("demand_growth_per_year", "price_multiplier_per_year"):
        value = getattr(query, name)
        if not value.is_finite() or not 0 < value <= 100:
            raise InvalidRequest(f"{name} must be in (0, 100], got {value}", param=name)
    utilization = query.utilization_max
    if utilization is not None and (not utilization.is_finite() or not 0 < utilization <= 1):
        message = f"utilization_max must be in (0, 1], got {utilization}"
        raise InvalidRequest(message, param="utilization_max")
    try:
        return datetime.date.fromisoformat(query.start)
    except ValueError as exc:
        raise InvalidRequest("start must be an ISO date like 2026-01-01", param="start") from exc


def _growth(ratio_per_year: Decimal, month: int) -> Fraction:
    """``ratio ** (month / 12)``, exactly enough for money: a float power read back as a
    fraction (the curve is an assumption; its last digits do not matter)."""
    return Fraction(repr(float(ratio_per_year) ** (month / 12)))


def scenario_answer(query: ScenarioQuery, catalogs: Catalogs) -> dict[str, Any]:
    """What ``plan scenario --json`` prints."""
    start = _check(query)
    kinds = _kinds(query, catalogs)
    prices = _prices(query, catalogs)
    chosen = query.utilization_max
    utilization = Fraction(catalogs.default("utilization_ratio") if chosen is None else chosen)
    depreciation_months = int(catalogs.default("depreciation_years") * 12)
    months = query.years * 12
    cohorts: list[_Cohort] = []
    rows: list[dict[str, Fraction]] = []
    for month in range(months):
        _order(query, kinds, cohorts, month, start, utilization, depreciation_months, prices)
        if query.build == "profitable":
            for cohort in cohorts:
                online = cohort.online <= month and cohort.retired is None
                if online and not _covers_cash(query, cohort.kind, month, utilization, prices):
                    cohort.retired = month
        rows.append(_serve(query, cohorts, month, prices))
    return _report(query, start, cohorts, rows, (kinds, utilization, prices), depreciation_months)


def _demand_per_s(query: ScenarioQuery, month: int) -> Fraction:
    per_day = query.output_tokens_per_day * _growth(query.demand_growth_per_year, month)
    return per_day / 86_400


def _order(
    query: ScenarioQuery,
    kinds: list[_Kind],
    cohorts: list[_Cohort],
    month: int,
    start: datetime.date,
    utilization: Fraction,
    depreciation_months: int,
    price: tuple[Fraction, Fraction],
) -> None:
    delivery = month + query.lead_months
    needed = _demand_per_s(query, delivery) / utilization
    planned = sum(
        (c.gpus * c.kind.tokens_per_s_per_gpu for c in cohorts if c.retired is None),
        Fraction(0),
    )
    if planned >= needed:
        return
    shipping = [kind for kind in kinds if kind.available_from[:7] <= _month_date(start, delivery)]
    if not shipping:
        return
    best = min(shipping, key=lambda kind: _cost_per_token(kind, depreciation_months))
    if query.build == "profitable" and not _pays_back(
        query, best, delivery, depreciation_months, utilization, price
    ):
        return
    gpus = math.ceil((needed - planned) / best.tokens_per_s_per_gpu)
    cohorts.append(_Cohort(best, month, delivery, gpus, depreciation_months))


def _price_per_output_token(
    query: ScenarioQuery, price: tuple[Fraction, Fraction], month: int
) -> Fraction:
    """US dollars per output token at ``month``, its prompt tokens' price included."""
    price_in, price_out = price
    ratio = Fraction(query.input_tokens, query.output_tokens)
    multiplier = _growth(query.price_multiplier_per_year, month)
    return (price_out + price_in * ratio) * multiplier / 1_000_000


def _covers_cash(
    query: ScenarioQuery,
    kind: _Kind,
    month: int,
    utilization: Fraction,
    price: tuple[Fraction, Fraction],
) -> bool:
    earned = _price_per_output_token(query, price, month) * kind.tokens_per_s_per_gpu
    return earned * SECONDS_PER_MONTH * utilization >= kind.cash_cost_per_gpu_month


def _pays_back(
    query: ScenarioQuery,
    kind: _Kind,
    delivery: int,
    depreciation_months: int,
    utilization: Fraction,
    price: tuple[Fraction, Fraction],
) -> bool:
    """Whether one GPU of ``kind`` earns its price back over its life, undiscounted."""
    served = kind.tokens_per_s_per_gpu * SECONDS_PER_MONTH * utilization
    margin = Fraction(0)
    for month in range(delivery, delivery + depreciation_months):
        earned = _price_per_output_token(query, price, month) * served
        margin += max(earned - kind.cash_cost_per_gpu_month, Fraction(0))
    return margin >= kind.capex_per_gpu


def _serve(
    query: ScenarioQuery, cohorts: list[_Cohort], month: int, prices: tuple[Fraction, Fraction]
) -> dict[str, Fraction]:
    price_in, price_out = prices
    multiplier = _growth(query.price_multiplier_per_year, month)
    per_output_token = (
        (price_out + price_in * Fraction(query.input_tokens, query.output_tokens))
        * multiplier
        / 1_000_000
    )
    left = _demand_per_s(query, month) * SECONDS_PER_MONTH
    revenue = cash = capital = Fraction(0)
    served = Fraction(0)
    online = [c for c in cohorts if c.online <= month and c.retired is None]
    for cohort in sorted(online, key=lambda c: -c.online):
        capacity = cohort.gpus * cohort.kind.tokens_per_s_per_gpu * SECONDS_PER_MONTH
        tokens = min(left, capacity)
        left -= tokens
        revenue += tokens * per_output_token
        cash += cohort.gpus * cohort.kind.cash_cost_per_gpu_month
        served += tokens
        cohort.served_tokens += tokens
    for cohort in cohorts:
        if cohort.ordered == month:
            capital += cohort.gpus * cohort.kind.capex_per_gpu
    depreciation = sum(
        (
            c.gpus * c.kind.capex_per_gpu / c.depreciation_months
            for c in cohorts
            if c.online <= month < c.online + c.depreciation_months
        ),
        Fraction(0),
    )
    return {
        "revenue": revenue,
        "cash_cost": cash,
        "capital": capital,
        "depreciation": depreciation,
        "served": served,
        "demand": _demand_per_s(query, month) * SECONDS_PER_MONTH,
        "price": prices[1] * _growth(query.price_multiplier_per_year, month),
        "gpus": Fraction(sum(c.gpus for c in online)),
    }


def _usd(value: Fraction) -> str:
    return format_amount(nano_rounded(value))


def _report(
    query: ScenarioQuery,
    start: datetime.date,
    cohorts: list[_Cohort],
    rows: list[dict[str, Fraction]],
    market: tuple[list[_Kind], Fraction, tuple[Fraction, Fraction]],
    depreciation_months: int,
) -> dict[str, Any]:
    kinds, utilization, prices = market
    months = len(rows)
    years = []
    cumulative = Fraction(0)
    cumulative_by_month = []
    for row in rows:
        cumulative += row["revenue"] - row["cash_cost"] - row["capital"]
        cumulative_by_month.append(cumulative)
    for year in range(query.years):
        chunk = rows[year * 12 : (year + 1) * 12]
        total = {key: sum((row[key] for row in chunk), Fraction(0)) for key in chunk[0]}
        cash_flow = total["revenue"] - total["cash_cost"] - total["capital"]
        years.append(
            {
                "year": start.year + year,
                "demand_output_tokens_per_day": int(total["demand"] / 12 / DAYS_PER_MONTH),
                "served_ratio": f"{float(total['served'] / total['demand']):.3f}",
                "price_usd_per_mtok_output": _usd(chunk[-1]["price"]),
                "gpus_online": int(chunk[-1]["gpus"]),
                "revenue_usd": _usd(total["revenue"]),
                "cash_cost_usd": _usd(total["cash_cost"]),
                "capital_usd": _usd(total["capital"]),
                "depreciation_usd": _usd(total["depreciation"]),
                "cash_flow_usd": _usd(cash_flow),
                "cumulative_cash_usd": _usd(cumulative_by_month[(year + 1) * 12 - 1]),
                "full_margin_usd": _usd(
                    total["revenue"] - total["cash_cost"] - total["depreciation"]
                ),
            }
        )
    spent = any(row["capital"] > 0 for row in rows)
    payback = _payback(cumulative_by_month) if spent else None
    stops = next(
        (
            index
            for index, row in enumerate(rows)
            if row["gpus"] > 0 and row["revenue"] < row["cash_cost"] + row["depreciation"]
        ),
        None,
    )
    return {
        "model": query.model,
        "start": query.start,
        "kinds": [
            {
                "gpu": kind.gpu,
                "available_from": kind.available_from,
                "output_tokens_per_s_per_gpu": f"{float(kind.tokens_per_s_per_gpu):.1f}",
                "capex_usd_per_gpu": _usd(kind.capex_per_gpu),
                "cash_cost_usd_per_gpu_month": _usd(kind.cash_cost_per_gpu_month),
                "full_cost_usd_per_mtok": _usd(
                    _cost_per_token(kind, depreciation_months) * 1_000_000
                ),
                "stops_covering_cash_cost": _first_month(
                    start,
                    months,
                    lambda month, kind=kind: (
                        not _covers_cash(query, kind, month, utilization, prices)
                    ),
                ),
            }
            for kind in kinds
        ],
        "orders": _orders_by_year(start, cohorts),
        "years": years,
        "payback": None if payback is None else _month_date(start, payback),
        "payback_months": payback,
        "fleet_stops_covering_full_cost": None if stops is None else _month_date(start, stops),
    }


def _first_month(start: datetime.date, months: int, test: Any) -> str | None:
    return next((_month_date(start, month) for month in range(months) if test(month)), None)


def _orders_by_year(start: datetime.date, cohorts: list[_Cohort]) -> list[dict[str, Any]]:
    """GPUs ordered per year and kind, with when the first of them came online."""
    grouped: dict[tuple[int, str], dict[str, Any]] = {}
    for cohort in cohorts:
        year = start.year + cohort.ordered // 12  # the report's years run from the start month
        entry = grouped.setdefault(
            (year, cohort.kind.gpu),
            {
                "year": year,
                "gpu": cohort.kind.gpu,
                "gpus": 0,
                "first_online": _month_date(start, cohort.online),
                "retired_gpus": 0,
            },
        )
        entry["gpus"] += cohort.gpus
        if cohort.retired is not None:
            entry["retired_gpus"] += cohort.gpus
    return list(grouped.values())


def _payback(cumulative_by_month: list[Fraction]) -> int | None:
    """The first month from which cumulative cash stays >= 0 (0 if it never went below;
    the caller asks only when capital was spent)."""
    for month in range(len(cumulative_by_month)):
        if all(value >= 0 for value in cumulative_by_month[month:]):
            return month
    return None
