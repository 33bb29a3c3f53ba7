"""The admin audit log: who did what, when, with the state before and after (JSON)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select

from tokenmill import json_codec
from tokenmill.store.tables import audit_log


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at_ms: int
    actor: str
    action: str
    entity: str
    entity_id: str
    before: Any
    after: Any


def record_action(
    connection: Connection,
    *,
    actor: str,
    action: str,
    entity: str,
    entity_id: str,
    before: Any,
    after: Any,
    now_ms: int,
) -> None:
    connection.execute(
        insert(audit_log).values(
            at_ms=now_ms,
            actor=actor,
            action=action,
            entity=entity,
            entity_id=entity_id,
            before=None if before is None else json_codec.dumps(before).decode(),
            after=None if after is None else json_codec.dumps(after).decode(),
        )
    )


def entries(
    connection: Connection, *, entity_id: str | None = None, limit: int = 1000
) -> list[AuditEntry]:
    query = select(audit_log).order_by(audit_log.c.seq.desc()).limit(limit)
    if entity_id is not None:
        query = query.where(audit_log.c.entity_id == entity_id)
    return [
        AuditEntry(
            row.seq,
            row.at_ms,
            row.actor,
            row.action,
            row.entity,
            row.entity_id,
            None if row.before is None else json_codec.loads(row.before),
            None if row.after is None else json_codec.loads(row.after),
        )
        for row in connection.execute(query)
    ]
