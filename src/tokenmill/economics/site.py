"""Site conversion: a mining site's megawatts as a token factory, beside bitcoin mining (pure).

Per day, with money exact (``Fraction`` inside, nano-unit ``int`` out, rounded half-up):

* IT power        = site MW / PUE; GPUs = IT W / (GPU power * (1 + node overhead)), rounded
                    down to whole replicas
* tokens          = replicas * output tokens/s (prefill included) * 86,400 * utilization;
                    prompt tokens = that * input / output
* AI revenue      = prompt tokens * input price + output tokens * output price
* AI costs        = GPU capital (purchase * (1 + network share) / life) + retrofit (cost per
                    MW of IT * IT MW / facility life) + energy (IT kW * power ratio * PUE * 24
                    * price) + operations (per GPU-month * GPUs * 12 / 365)
* mining revenue  = hashrate (mining IT W / J per TH, in PH/s) * hashprice, where hashprice
                    (USD per PH/s per day) is given or = (subsidy + fees) * 144 blocks * BTC
                    price / network hashrate (PH/s)
* mining costs    = energy of the whole site at the mining PUE (ASICs are taken as paid off)
* break-even      = the price per million output tokens (prompts carried by them) at which
                    the AI margin equals the mining margin the site gives up
* payback         = months to convert + capital / (AI cash margin - mining margin) per
                    month, the cash margin being revenue less energy and operations (the
                    write-offs are the capital paying itself back)
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from tokenmill.economics import perf
from tokenmill.economics.queries import PerfQuery, setup_of
from tokenmill.economics.reference import Catalogs
from tokenmill.errors import InvalidRequest
from tokenmill.money import format_amount, nano_rounded

SECONDS_PER_DAY = 86_400
DAYS_PER_YEAR = 365
DAYS_PER_MONTH = Fraction(365, 12)
BLOCKS_PER_DAY = 144
SITE_MW_MAX = 100_000


@dataclass(frozen=True)
class MiningQuery:
    """The mining side: a hashprice, or what it derives from. Decimals in US dollars, BTC,
    EH/s and J/TH; ``None`` takes ``site_defaults.yaml``."""

    hashprice_usd_per_ph_day: Decimal | None = None
    btc_price_usd: Decimal | None = None
    network_hashrate_eh_s: Decimal | None = None
    fees_btc_per_block: Decimal = Decimal(0)
    miner_j_per_th: Decimal | None = None
    mining_pue: Decimal | None = None


@dataclass(frozen=True)
class SiteQuery:
    perf: PerfQuery
    site_mw: Decimal
    mining: MiningQuery = MiningQuery()
    pue: Decimal | None = None
    node_overhead_ratio: Decimal | None = None
    utilization_ratio: Decimal | None = None
    utilization_power_ratio: Decimal | None = None
    energy_usd_per_kwh: Decimal | None = None
    purchase_usd_per_gpu: Decimal | None = None
    depreciation_years: Decimal | None = None
    operations_usd_per_gpu_month: Decimal | None = None
    conversion_usd_per_mw_it: Decimal | None = None
    conversion_months: Decimal | None = None
    facility_years: Decimal | None = None
    price_input_usd_per_mtok: Decimal | None = None  # default: the market's lowest
    price_output_usd_per_mtok: Decimal | None = None


def _usd(value: Fraction) -> str:
    return format_amount(nano_rounded(value))


def _positive(
    value: Decimal | None, default: Decimal, param: str, *, allow_zero: bool = False
) -> Fraction:
    chosen = default if value is None else value
    if not chosen.is_finite() or chosen < 0 or (chosen == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidRequest(f"{param} must be a finite number {bound}, got {chosen}", param=param)
    return Fraction(chosen)


def _market_price(
    query: SiteQuery, catalogs: Catalogs, model_id: str
) -> tuple[Fraction, Fraction, str]:
    """(input, output) USD per million tokens and their source (``Catalogs.token_prices``)."""
    given_in = query.price_input_usd_per_mtok
    given_out = query.price_output_usd_per_mtok
    if given_out is not None:
        _positive(given_out, Decimal(0), "price_output_usd_per_mtok")
    if given_in is not None:
        _positive(given_in, Decimal(0), "price_input_usd_per_mtok", allow_zero=True)
    price_in, price_out, source = catalogs.token_prices(model_id, given_in, given_out)
    return Fraction(price_in), Fraction(price_out), source


def _hashprice(mining: MiningQuery, catalogs: Catalogs) -> tuple[Fraction, str]:
    if mining.hashprice_usd_per_ph_day is not None:
        return _positive(
            mining.hashprice_usd_per_ph_day, Decimal(0), "hashprice_usd_per_ph_day"
        ), "given"
    if mining.btc_price_usd is not None or mining.network_hashrate_eh_s is not None:
        if mining.btc_price_usd is None or mining.network_hashrate_eh_s is None:
            message = "derive the hashprice from both btc_price_usd and network_hashrate_eh_s"
            raise InvalidRequest(message, param="network_hashrate_eh_s")
        btc = _positive(mining.btc_price_usd, Decimal(0), "btc_price_usd")
        network_ph_s = (
            _positive(mining.network_hashrate_eh_s, Decimal(0), "network_hashrate_eh_s") * 1000
        )
        fees = _positive(
            mining.fees_btc_per_block, Decimal(0), "fees_btc_per_block", allow_zero=True
        )
        subsidy = Fraction(catalogs.default("btc_block_subsidy"))
        return (subsidy + fees) * BLOCKS_PER_DAY * btc / network_ph_s, "derived"
    return Fraction(catalogs.default("hashprice_usd_per_ph_day")), "default"


def site_answer(query: SiteQuery, catalogs: Catalogs) -> dict[str, Any]:
    """What ``plan site --json`` prints."""
    d = catalogs.default
    site_mw = _positive(query.site_mw, Decimal(0), "site_mw")
    if site_mw > SITE_MW_MAX:
        raise InvalidRequest(f"site_mw must be at most {SITE_MW_MAX}", param="site_mw")
    setup = setup_of(query.perf, catalogs)
    pue = _positive(query.pue, d("pue"), "pue")
    if pue < 1:
        raise InvalidRequest("pue must be >= 1", param="pue")
    overhead = _positive(
        query.node_overhead_ratio, d("node_overhead_ratio"), "node_overhead_ratio", allow_zero=True
    )
    utilization = _positive(query.utilization_ratio, d("utilization_ratio"), "utilization_ratio")
    power_ratio = _positive(
        query.utilization_power_ratio, d("utilization_power_ratio"), "utilization_power_ratio"
    )
    energy = _positive(
        query.energy_usd_per_kwh, d("energy_usd_per_kwh"), "energy_usd_per_kwh", allow_zero=True
    )
    if utilization > 1:
        raise InvalidRequest("utilization_ratio must be at most 1", param="utilization_ratio")
    if power_ratio > 1:
        message = "utilization_power_ratio must be at most 1"
        raise InvalidRequest(message, param="utilization_power_ratio")

    it_w = site_mw * 1_000_000 / pue
    gpu_w = Fraction(repr(setup.gpu.power_w)) * (1 + overhead)
    replicas = int(it_w / (gpu_w * setup.gpu_count))
    if replicas == 0:
        raise InvalidRequest(
            f"{query.site_mw} MW powers no replica of {setup.gpu_count} x {setup.gpu.id}",
            param="site_mw",
        )
    gpus = replicas * setup.gpu_count
    point = perf.operating_point(
        setup, query.perf.input_tokens, query.perf.output_tokens, query.perf.concurrency
    )
    output_per_day = (
        Fraction(repr(point.output_tokens_per_s)) * replicas * SECONDS_PER_DAY * utilization
    )
    prompt_per_day = output_per_day * query.perf.input_tokens / query.perf.output_tokens
    price_in, price_out, price_source = _market_price(query, catalogs, setup.model.id)
    revenue = (prompt_per_day * price_in + output_per_day * price_out) / 1_000_000

    purchase = query.purchase_usd_per_gpu
    if purchase is None:
        purchase = setup.gpu.purchase_usd
    elif not purchase.is_finite() or purchase < 0:
        message = f"purchase_usd_per_gpu must be >= 0, got {purchase}"
        raise InvalidRequest(message, param="purchase_usd_per_gpu")
    if purchase is None:
        raise InvalidRequest(
            f"the catalog has no purchase price for {setup.gpu.id}", param="purchase_usd_per_gpu"
        )
    network_ratio = Fraction(catalogs.network_storage_ratio())
    gpu_capex = gpus * Fraction(purchase) * (1 + network_ratio)
    life_years = _positive(query.depreciation_years, d("depreciation_years"), "depreciation_years")
    retrofit_capex = (
        _positive(
            query.conversion_usd_per_mw_it,
            d("conversion_usd_per_mw_it"),
            "conversion_usd_per_mw_it",
            allow_zero=True,
        )
        * it_w
        / 1_000_000
    )
    facility_years = _positive(
        query.facility_years, d("facility_depreciation_years"), "facility_years"
    )
    used_it_kw = gpus * gpu_w / 1000
    costs = {
        "gpus": gpu_capex / (life_years * DAYS_PER_YEAR),
        "retrofit": retrofit_capex / (facility_years * DAYS_PER_YEAR),
        "energy": used_it_kw * power_ratio * pue * 24 * energy,
        "operations": _positive(
            query.operations_usd_per_gpu_month,
            d("operations_usd_per_gpu_month"),
            "operations_usd_per_gpu_month",
            allow_zero=True,
        )
        * gpus
        / DAYS_PER_MONTH,
    }
    ai_cost = sum(costs.values(), Fraction(0))
    ai_margin = revenue - ai_cost

    mining = query.mining
    hashprice, hashprice_source = _hashprice(mining, catalogs)
    mining_pue = _positive(mining.mining_pue, d("mining_pue"), "mining_pue")
    if mining_pue < 1:
        raise InvalidRequest("mining_pue must be >= 1", param="mining_pue")
    j_per_th = _positive(mining.miner_j_per_th, d("miner_j_per_th"), "miner_j_per_th")
    hashrate_ph_s = site_mw * 1_000_000 / mining_pue / j_per_th / 1000
    mining_revenue = hashrate_ph_s * hashprice
    mining_energy = site_mw * 1000 * 24 * energy
    mining_margin = mining_revenue - mining_energy

    output_mtok = output_per_day / 1_000_000
    break_even = (ai_cost + mining_margin) / output_mtok
    months = _positive(
        query.conversion_months, d("conversion_months"), "conversion_months", allow_zero=True
    )
    # Payback counts cash: the write-offs are the capital being paid back, not a cost on top.
    ai_cash_margin = revenue - costs["energy"] - costs["operations"]
    gain_per_month = (ai_cash_margin - mining_margin) * DAYS_PER_MONTH
    capex = gpu_capex + retrofit_capex
    payback = None if gain_per_month <= 0 else months + capex / gain_per_month
    return {
        "site_mw": str(query.site_mw),
        "it_mw": f"{float(it_w / 1_000_000):.3f}",
        "gpu": setup.gpu.id,
        "model": setup.model.id,
        "gpus": gpus,
        "replicas": replicas,
        "output_tokens_per_day": int(output_per_day),
        "prompt_tokens_per_day": int(prompt_per_day),
        "price_usd_per_mtok": {
            "input": _usd(price_in),
            "output": _usd(price_out),
            "source": price_source,
        },
        "ai_usd_per_day": {
            "revenue": _usd(revenue),
            **{f"cost_{name}": _usd(value) for name, value in costs.items()},
            "margin": _usd(ai_margin),
        },
        "mining_usd_per_day": {
            "hashprice_usd_per_ph_day": _usd(hashprice),
            "hashprice_source": hashprice_source,
            "hashrate_ph_s": f"{float(hashrate_ph_s):.1f}",
            "revenue": _usd(mining_revenue),
            "cost_energy": _usd(mining_energy),
            "margin": _usd(mining_margin),
        },
        "conversion": {
            "capex_usd": _usd(capex),
            "gpu_capex_usd": _usd(gpu_capex),
            "retrofit_capex_usd": _usd(retrofit_capex),
            "months": str(months),
            "break_even_usd_per_mtok_output": _usd(break_even),
            "payback_months": None if payback is None else f"{float(payback):.1f}",
        },
    }
