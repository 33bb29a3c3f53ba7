"""Plans as the store keeps them: by name, the spec as written (JSON)."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection, insert, select, update

from tokenmill.store.accounts import record_change
from tokenmill.store.tables import plans


def put_plan(connection: Connection, name: str, spec: dict[str, Any], now_ms: int) -> bool:
    """Insert or replace plan ``name``; True when it is new."""
    text = orjson.dumps(spec).decode()
    updated = connection.execute(
        update(plans).where(plans.c.name == name).values(spec=text, updated_at_ms=now_ms)
    ).rowcount
    if not updated:
        connection.execute(
            insert(plans).values(name=name, spec=text, created_at_ms=now_ms, updated_at_ms=now_ms)
        )
    record_change(connection, "plan", name, now_ms)
    return not updated


def plan_specs(connection: Connection, names: list[str] | None = None) -> dict[str, Any]:
    query = select(plans.c.name, plans.c.spec).order_by(plans.c.name)
    if names is not None:
        query = query.where(plans.c.name.in_(names))
    return {row.name: orjson.loads(row.spec) for row in connection.execute(query)}
