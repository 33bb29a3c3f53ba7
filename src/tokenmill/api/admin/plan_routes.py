"""``POST /admin/v1/plan/{perf,cost,price,capacity,scenario,site}``: the questions of
``tokenmill plan``, answered with the same figures (``tokenmill.economics``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt
from starlette.concurrency import run_in_threadpool

from tokenmill.api.admin.auth import ADMIN
from tokenmill.economics import reference
from tokenmill.economics.capacity import CapacityQuery, Demand, capacity_answer
from tokenmill.economics.costing import CostQuery, cost_answer, price_answer
from tokenmill.economics.mix import Shape
from tokenmill.economics.queries import PerfQuery, perf_answer
from tokenmill.economics.scenario import ScenarioQuery, scenario_answer
from tokenmill.economics.site import MiningQuery, SiteQuery, site_answer
from tokenmill.errors import InvalidRequest

DECIMAL_PATTERN = r"^[0-9]{1,15}(\.[0-9]{1,9})?$"
Precision = Literal["bf16", "fp16", "fp8", "fp4"]
DecimalText = str | None


class PerfIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpu: str = Field(max_length=100)
    model: str = Field(max_length=100)
    gpus: StrictInt = Field(1, ge=1, le=4096)
    precision: Precision = "bf16"
    kv_precision: Precision | None = None
    parallel: Literal["tp", "dep"] = "tp"
    input: StrictInt = Field(1000, ge=1, le=10_000_000)
    output: StrictInt = Field(1000, ge=1, le=10_000_000)
    concurrency: StrictInt | Literal["max"] = "max"
    efficiency_compute_ratio: StrictFloat | None = Field(None, gt=0, le=1)
    efficiency_memory_ratio: StrictFloat | None = Field(None, gt=0, le=1)
    efficiency_moe_ratio: StrictFloat | None = Field(None, gt=0, le=1)
    batch_requests_max: StrictInt | None = Field(None, ge=1, le=1_000_000)

    def query(self) -> PerfQuery:
        if isinstance(self.concurrency, int) and not 1 <= self.concurrency <= 1_000_000:
            message = "concurrency is a whole number from 1, or max"
            raise InvalidRequest(message, param="concurrency")
        return PerfQuery(
            gpu=self.gpu,
            model=self.model,
            gpus=self.gpus,
            precision=self.precision,
            kv_precision=self.kv_precision,
            parallel=self.parallel,
            input_tokens=self.input,
            output_tokens=self.output,
            concurrency=None if self.concurrency == "max" else self.concurrency,
            efficiency_compute_ratio=self.efficiency_compute_ratio,
            efficiency_memory_ratio=self.efficiency_memory_ratio,
            efficiency_moe_ratio=self.efficiency_moe_ratio,
            batch_requests_max=self.batch_requests_max,
        )


def _money(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _text_field(description: str) -> Any:
    return Field(None, pattern=DECIMAL_PATTERN, description=description)


class CostIn(PerfIn):
    pool_gpus: StrictInt | None = Field(None, ge=1, le=10_000_000)
    basis: Literal["owned", "rented"] = "owned"
    purchase_usd_per_gpu: DecimalText = _text_field("US dollars per GPU")
    depreciation_years: DecimalText = _text_field("years")
    residual_ratio: DecimalText = _text_field("share of the price left at the end")
    rent_usd_per_gpu_hour: DecimalText = _text_field("US dollars per GPU-hour")
    energy_usd_per_kwh: DecimalText = _text_field("US dollars per kWh")
    pue: DecimalText = _text_field("facility power / IT power")
    node_overhead_ratio: DecimalText = _text_field("CPU, network, fans over GPU power")
    utilization_power_ratio: DecimalText = _text_field("average over peak power")
    hosting_usd_per_month: DecimalText = _text_field("US dollars per month, whole pool")
    operations_usd_per_month: DecimalText = _text_field("US dollars per month, whole pool")
    utilization_ratio: DecimalText = _text_field("share of hours serving")
    itl_ms_max: StrictFloat | StrictInt | None = Field(None, gt=0, le=1_000_000)
    price_usd_per_mtok: DecimalText = _text_field("US dollars per million output tokens")

    def cost_query(self) -> CostQuery:
        return CostQuery(
            perf=self.query(),
            pool_gpus=self.pool_gpus,
            basis=self.basis,
            purchase_usd_per_gpu=_money(self.purchase_usd_per_gpu),
            depreciation_years=_money(self.depreciation_years),
            residual_ratio=_money(self.residual_ratio),
            rent_usd_per_gpu_hour=_money(self.rent_usd_per_gpu_hour),
            energy_usd_per_kwh=_money(self.energy_usd_per_kwh),
            pue=_money(self.pue),
            node_overhead_ratio=_money(self.node_overhead_ratio),
            utilization_power_ratio=_money(self.utilization_power_ratio),
            hosting_usd_per_month=_money(self.hosting_usd_per_month),
            operations_usd_per_month=_money(self.operations_usd_per_month),
            utilization_ratio=_money(self.utilization_ratio),
            itl_ms_max=None if self.itl_ms_max is None else float(self.itl_ms_max),
            price_usd_per_mtok=_money(self.price_usd_per_mtok),
        )


class SiteIn(PerfIn):
    site_mw: str = Field(pattern=DECIMAL_PATTERN, description="the site's power, MW")
    gpu: str = Field("h100-sxm", max_length=100)
    model: str = Field("llama-3.3-70b", max_length=100)
    gpus: StrictInt = Field(2, ge=1, le=4096)
    precision: Precision = "fp8"
    pue: DecimalText = _text_field("facility power / IT power")
    energy_usd_per_kwh: DecimalText = _text_field("US dollars per kWh")
    utilization_ratio: DecimalText = _text_field("share of hours serving")
    purchase_usd_per_gpu: DecimalText = _text_field("US dollars per GPU")
    price_input_usd_per_mtok: DecimalText = _text_field("US dollars per million prompt tokens")
    price_output_usd_per_mtok: DecimalText = _text_field("US dollars per million output tokens")
    hashprice_usd_per_ph_day: DecimalText = _text_field("US dollars per PH/s per day")
    btc_price_usd: DecimalText = _text_field("US dollars per BTC")
    network_hashrate_eh_s: DecimalText = _text_field("EH/s")
    fees_btc_per_block: str = Field("0", pattern=DECIMAL_PATTERN)
    miner_j_per_th: DecimalText = _text_field("J/TH")
    conversion_usd_per_mw_it: DecimalText = _text_field("US dollars per MW of IT")
    conversion_months: DecimalText = _text_field("months")

    def site_query(self) -> SiteQuery:
        return SiteQuery(
            perf=self.query(),
            site_mw=Decimal(self.site_mw),
            mining=MiningQuery(
                hashprice_usd_per_ph_day=_money(self.hashprice_usd_per_ph_day),
                btc_price_usd=_money(self.btc_price_usd),
                network_hashrate_eh_s=_money(self.network_hashrate_eh_s),
                fees_btc_per_block=Decimal(self.fees_btc_per_block),
                miner_j_per_th=_money(self.miner_j_per_th),
            ),
            pue=_money(self.pue),
            energy_usd_per_kwh=_money(self.energy_usd_per_kwh),
            utilization_ratio=_money(self.utilization_ratio),
            purchase_usd_per_gpu=_money(self.purchase_usd_per_gpu),
            price_input_usd_per_mtok=_money(self.price_input_usd_per_mtok),
            price_output_usd_per_mtok=_money(self.price_output_usd_per_mtok),
            conversion_usd_per_mw_it=_money(self.conversion_usd_per_mw_it),
            conversion_months=_money(self.conversion_months),
        )


class ShapeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    share: StrictFloat | StrictInt = Field(gt=0, le=1_000_000)
    input: StrictInt = Field(ge=1, le=10_000_000)
    output: StrictInt = Field(ge=1, le=10_000_000)


class DemandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=100)
    input: StrictInt = Field(1000, ge=1, le=10_000_000)
    output: StrictInt = Field(500, ge=1, le=10_000_000)
    ttft_ms_p95: StrictFloat | StrictInt = Field(gt=0, le=10_000_000)
    itl_ms_p95: StrictFloat | StrictInt = Field(gt=0, le=10_000_000)
    requests_per_s: DecimalText = _text_field("requests per second")
    output_tokens_per_day: StrictInt | None = Field(None, ge=1, le=10**18)
    lengths: list[ShapeIn] | None = Field(None, min_length=1, max_length=100)

    def demand(self) -> Demand:
        return Demand(
            model=self.model,
            input_tokens=self.input,
            output_tokens=self.output,
            ttft_ms_max=float(self.ttft_ms_p95),
            itl_ms_max=float(self.itl_ms_p95),
            requests_per_s=_money(self.requests_per_s),
            output_tokens_per_day=self.output_tokens_per_day,
            lengths=tuple(
                Shape(float(shape.share), shape.input, shape.output) for shape in self.lengths or ()
            ),
        )


class CapacityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    demand: list[DemandIn] = Field(min_length=1, max_length=100)
    gpus: list[str] = Field(default_factory=list, max_length=100)
    basis: Literal["owned", "rented"] = "owned"
    utilization_max: DecimalText = _text_field("average busy share to plan for")

    def capacity_query(self) -> CapacityQuery:
        return CapacityQuery(
            demands=tuple(entry.demand() for entry in self.demand),
            gpus=tuple(self.gpus),
            basis=self.basis,
            utilization_max=_money(self.utilization_max),
        )


class ScenarioIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("llama-3.3-70b", max_length=100)
    output_tokens_per_day: StrictInt = Field(ge=1, le=10**18)
    input: StrictInt = Field(1000, ge=1, le=10_000_000)
    output: StrictInt = Field(500, ge=1, le=10_000_000)
    itl_ms_max: StrictFloat | StrictInt = Field(50, gt=0, le=10_000_000)
    start: str = Field("2026-01-01", max_length=10)
    years: StrictInt = Field(6, ge=1, le=30)
    demand_growth_per_year: str = Field("2", pattern=DECIMAL_PATTERN)
    price_multiplier_per_year: str = Field("0.5", pattern=DECIMAL_PATTERN)
    price_input_usd_per_mtok: DecimalText = _text_field("US dollars per million prompt tokens")
    price_output_usd_per_mtok: DecimalText = _text_field("US dollars per million output tokens")
    lead_months: StrictInt = Field(12, ge=0, le=120)
    gpus: list[str] = Field(default_factory=list, max_length=100)
    build: Literal["demand", "profitable"] = "demand"

    def scenario_query(self) -> ScenarioQuery:
        return ScenarioQuery(
            model=self.model,
            output_tokens_per_day=self.output_tokens_per_day,
            input_tokens=self.input,
            output_tokens=self.output,
            itl_ms_max=float(self.itl_ms_max),
            start=self.start,
            years=self.years,
            demand_growth_per_year=Decimal(self.demand_growth_per_year),
            price_multiplier_per_year=Decimal(self.price_multiplier_per_year),
            price_input_usd_per_mtok=_money(self.price_input_usd_per_mtok),
            price_output_usd_per_mtok=_money(self.price_output_usd_per_mtok),
            lead_months=self.lead_months,
            gpus=tuple(self.gpus),
            build=self.build,
        )


class PriceIn(CostIn):
    margin_ratio: str = Field("0.4", pattern=DECIMAL_PATTERN, description="target gross margin")


_BODY_NAMES = {"itl_ms_max": "itl_ms_p95", "ttft_ms_max": "ttft_ms_p95"}


def plan_routes(app: FastAPI) -> None:
    admin = ADMIN[0]
    catalogs = reference.packaged()

    @app.post("/plan/perf", dependencies=[admin], response_model=dict[str, Any])
    async def plan_perf(body: PerfIn) -> dict[str, Any]:
        return await run_in_threadpool(perf_answer, body.query(), catalogs)

    @app.post("/plan/cost", dependencies=[admin], response_model=dict[str, Any])
    async def plan_cost(body: CostIn) -> dict[str, Any]:
        return await run_in_threadpool(cost_answer, body.cost_query(), catalogs)

    @app.post("/plan/price", dependencies=[admin], response_model=dict[str, Any])
    async def plan_price(body: PriceIn) -> dict[str, Any]:
        margin = Decimal(body.margin_ratio)
        return await run_in_threadpool(price_answer, body.cost_query(), margin, catalogs)

    @app.post("/plan/capacity", dependencies=[admin], response_model=dict[str, Any])
    async def plan_capacity(body: CapacityIn) -> dict[str, Any]:
        try:
            return await run_in_threadpool(capacity_answer, body.capacity_query(), catalogs)
        except InvalidRequest as error:
            # The body names the targets as p95 figures; the planner as the targets it meets.
            renamed = _BODY_NAMES.get(error.param or "", error.param)
            raise InvalidRequest(error.message, param=renamed) from error

    @app.post("/plan/scenario", dependencies=[admin], response_model=dict[str, Any])
    async def plan_scenario(body: ScenarioIn) -> dict[str, Any]:
        return await run_in_threadpool(scenario_answer, body.scenario_query(), catalogs)

    @app.post("/plan/site", dependencies=[admin], response_model=dict[str, Any])
    async def plan_site(body: SiteIn) -> dict[str, Any]:
        return await run_in_threadpool(site_answer, body.site_query(), catalogs)
