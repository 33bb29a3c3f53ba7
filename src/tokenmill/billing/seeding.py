"""The prices a configuration gives: each model's own ``price``, or its ``markup`` over the
upstream vendor's price list (``engines.<engine>.prices``)."""

from __future__ import annotations

from decimal import Decimal

from tokenmill.config import Config, PriceConfig, upstream_cost
from tokenmill.retail.rating import Price, mark_up


def _price(model: str, config: PriceConfig) -> Price:
    """A configured price; a cache read or write with no price of its own pays the input's."""
    return Price(
        model=model,
        currency=config.currency,
        effective_from_ms=0,
        input_nano_per_mtok=config.input,
        output_nano_per_mtok=config.output,
        cached_input_nano_per_mtok=_or_input(config.cached_input, config),
        cache_write_input_nano_per_mtok=_or_input(config.cache_write_input, config),
        request_fee_nano=config.request_fee,
    )


def _or_input(price_nano: int | None, config: PriceConfig) -> int:
    return config.input if price_nano is None else price_nano


def configured_prices(config: Config) -> list[Price]:
    """The prices to seed a price book with (where it has none for the model yet)."""
    prices = []
    for name, model in config.models.items():
        if model.price is not None:
            prices.append(_price(name, model.price))
        elif model.markup is not None:
            cost = upstream_cost(config, model)
            assert cost is not None  # the configuration's validation makes sure
            factor = int(Decimal(model.markup.factor or "1") * 1_000_000)
            prices.append(
                mark_up(
                    _price(name, cost),
                    name,
                    factor,
                    model.markup.plus_input,
                    model.markup.plus_output,
                )
            )
    return prices
