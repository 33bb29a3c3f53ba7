"""``tokenmill plan site``: a mining site's megawatts as a token factory, beside mining."""

from __future__ import annotations

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
from tokenmill.economics.site import MiningQuery, SiteQuery, site_answer

Text = Annotated[str | None, typer.Option(help="Decimal text.")]


def register(app: typer.Typer) -> None:
    app.command("site")(site_command)


def site_command(
    mw: Annotated[str, typer.Option(help="The site's power, MW (facility, at the meter).")],
    gpu: opt.Gpu = "h100-sxm",
    model: opt.Model = "llama-3.3-70b",
    gpus: opt.Gpus = 2,
    precision: opt.Precision = "fp8",
    kv_precision: opt.KvPrecision = None,
    parallel: opt.Parallel = "tp",
    input_tokens: opt.InputTokens = 1000,
    output_tokens: opt.OutputTokens = 1000,
    concurrency: opt.Concurrency = "max",
    pue: Text = None,
    energy: Annotated[str | None, typer.Option(help="US dollars per kWh.")] = None,
    utilization: Text = None,
    purchase: Annotated[str | None, typer.Option(help="US dollars per GPU.")] = None,
    price_input: Annotated[str | None, typer.Option(help="USD per million prompt tokens.")] = None,
    price_output: Annotated[str | None, typer.Option(help="USD per million output tokens.")] = None,
    hashprice: Annotated[str | None, typer.Option(help="USD per PH/s per day.")] = None,
    btc_price: Annotated[str | None, typer.Option(help="USD per BTC (with --hashrate).")] = None,
    hashrate: Annotated[str | None, typer.Option(help="Network hashrate, EH/s.")] = None,
    fees: Annotated[str, typer.Option(help="Fees per block, BTC.")] = "0",
    miner_j_per_th: Text = None,
    conversion_cost: Annotated[
        str | None, typer.Option(help="Retrofit, US dollars per MW of IT.")
    ] = None,
    conversion_months: Text = None,
    catalog_file: opt.CatalogFile = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """GPUs the site powers, tokens per day, revenue and margin beside bitcoin mining, the
    retrofit, and the token price at which converting pays."""

    as_json = output_format(output, as_json) == "json"

    def answer() -> dict[str, Any]:
        d = opt.decimal_of
        site_mw = d(mw, "--mw")
        assert site_mw is not None
        fees_btc = d(fees, "--fees")
        assert fees_btc is not None
        query = SiteQuery(
            perf=opt.perf_query(
                (gpu, model, gpus, precision, kv_precision, parallel),
                (input_tokens, output_tokens, concurrency),
            ),
            site_mw=site_mw,
            mining=MiningQuery(
                hashprice_usd_per_ph_day=d(hashprice, "--hashprice"),
                btc_price_usd=d(btc_price, "--btc-price"),
                network_hashrate_eh_s=d(hashrate, "--hashrate"),
                fees_btc_per_block=fees_btc,
                miner_j_per_th=d(miner_j_per_th, "--miner-j-per-th"),
            ),
            pue=d(pue, "--pue"),
            energy_usd_per_kwh=d(energy, "--energy"),
            utilization_ratio=d(utilization, "--utilization"),
            purchase_usd_per_gpu=d(purchase, "--purchase"),
            price_input_usd_per_mtok=d(price_input, "--price-input"),
            price_output_usd_per_mtok=d(price_output, "--price-output"),
            conversion_usd_per_mw_it=d(conversion_cost, "--conversion-cost"),
            conversion_months=d(conversion_months, "--conversion-months"),
        )
        return site_answer(query, opt.catalogs_of(catalog_file))

    shown = run(answer)
    if as_json:
        print_json(shown)
        return
    ai = shown["ai_usd_per_day"]
    mining = shown["mining_usd_per_day"]
    conversion = shown["conversion"]
    print_table(
        f"{shown['site_mw']} MW ({shown['it_mw']} MW of IT): {shown['gpus']:,} x"
        f" {shown['gpu']} serving {shown['model']}, or mining",
        ("per day, USD", "tokens", "mining"),
        [
            ("revenue", opt.usd(ai["revenue"]), opt.usd(mining["revenue"])),
            ("energy", opt.usd(ai["cost_energy"]), opt.usd(mining["cost_energy"])),
            ("GPUs written off", opt.usd(ai["cost_gpus"]), ""),
            ("retrofit written off", opt.usd(ai["cost_retrofit"]), ""),
            ("operations", opt.usd(ai["cost_operations"]), ""),
            ("margin", opt.usd(ai["margin"]), opt.usd(mining["margin"])),
        ],
    )
    price = shown["price_usd_per_mtok"]
    print_table(
        "conversion",
        ("figure", "value"),
        [
            ("output tokens per day", f"{shown['output_tokens_per_day']:,}"),
            ("token price (in / out per million)", f"{price['input']} / {price['output']}"),
            ("price source", price["source"]),
            (
                "hashprice (USD/PH/day)",
                f"{mining['hashprice_usd_per_ph_day']} ({mining['hashprice_source']})",
            ),
            ("capital (GPUs + retrofit)", opt.usd(conversion["capex_usd"])),
            ("months to convert", conversion["months"]),
            (
                "break-even price per million output tokens",
                opt.usd(conversion["break_even_usd_per_mtok_output"], 4),
            ),
            ("payback, months", conversion["payback_months"] or "never"),
        ],
    )
