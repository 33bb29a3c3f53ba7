"""The price book as the store keeps it: one row per (model, currency, effective_from)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select

from tokenmill.retail.rating import Price
from tokenmill.store.accounts import record_change
from tokenmill.store.tables import prices

_FIELDS = (
    "model",
    "currency",
    "effective_from_ms",
    "input_nano_per_mtok",
    "output_nano_per_mtok",
    "cached_input_nano_per_mtok",
    "cache_write_input_nano_per_mtok",
    "request_fee_nano",
)


def _price(row: Any) -> Price:
    return Price(**{name: getattr(row, name) for name in _FIELDS})


def insert_price(connection: Connection, price: Price, now_ms: int) -> None:
    values = {name: getattr(price, name) for name in _FIELDS}
    connection.execute(insert(prices).values(**values, created_at_ms=now_ms))
    record_change(connection, "price", price.model, now_ms)


def all_prices(connection: Connection) -> list[Price]:
    query = select(prices).order_by(prices.c.model, prices.c.currency, prices.c.effective_from_ms)
    return [_price(row) for row in connection.execute(query)]


def prices_of(connection: Connection, model: str) -> list[Price]:
    query = (
        select(prices)
        .where(prices.c.model == model)
        .order_by(prices.c.currency, prices.c.effective_from_ms)
    )
    return [_price(row) for row in connection.execute(query)]
