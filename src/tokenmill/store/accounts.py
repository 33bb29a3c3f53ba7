"""Rows of accounts, API keys and admin tokens, and the change sequence that announces them.

Every write that a running gateway must see appends a row to ``changes`` in the same
transaction, so a follower that has read up to ``seq`` N has seen every change up to N.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from tokenmill.store.tables import accounts, admin_tokens, api_keys, changes, meta

GATEWAY_URL_META = "gateway_url"  # where the running gateway answers, for the CLI


@dataclass(frozen=True)
class AccountRow:
    id: str
    name: str
    status: str
    created_at_ms: int
    disabled_at_ms: int | None
    currency: str = "USD"
    credit_limit_nano: int = 0  # 0: prepaid, never below zero; else postpaid down to -limit
    daily_budget_nano: int | None = None
    monthly_budget_nano: int | None = None
    plan: str | None = None  # the plan it subscribes to; None: pay as you go
    plan_since_ms: int | None = None
    rate_limits: dict[str, dict[str, int]] | None = None  # {"*" | model: limits}


@dataclass(frozen=True)
class KeyRow:
    id: str
    account_id: str
    name: str
    key_hash: str
    key_prefix: str
    models: tuple[str, ...] | None
    created_at_ms: int
    expires_at_ms: int | None
    revoked_at_ms: int | None
    daily_budget_nano: int | None = None
    monthly_budget_nano: int | None = None
    rate_limits: dict[str, dict[str, int]] | None = None  # {"*" | model: limits}


def _limits(text: str | None) -> dict[str, dict[str, int]] | None:
    return None if text is None else dict(json.loads(text))


def _account(row: Any) -> AccountRow:
    return AccountRow(
        row.id,
        row.name,
        row.status,
        row.created_at_ms,
        row.disabled_at_ms,
        row.currency,
        row.credit_limit_nano,
        row.daily_budget_nano,
        row.monthly_budget_nano,
        row.plan,
        row.plan_since_ms,
        _limits(row.rate_limits),
    )


def _key(row: Any) -> KeyRow:
    models = tuple(json.loads(row.models)) if row.models is not None else None
    return KeyRow(
        row.id,
        row.account_id,
        row.name,
        row.key_hash,
        row.key_prefix,
        models,
        row.created_at_ms,
        row.expires_at_ms,
        row.revoked_at_ms,
        row.daily_budget_nano,
        row.monthly_budget_nano,
        _limits(row.rate_limits),
    )


def record_change(connection: Connection, entity: str, entity_id: str, now_ms: int) -> None:
    connection.execute(
        insert(changes).values(entity=entity, entity_id=entity_id, created_at_ms=now_ms)
    )


def insert_account(connection: Connection, account: AccountRow) -> None:
    connection.execute(
        insert(accounts).values(
            id=account.id,
            name=account.name,
            status=account.status,
            created_at_ms=account.created_at_ms,
            disabled_at_ms=account.disabled_at_ms,
            currency=account.currency,
            credit_limit_nano=account.credit_limit_nano,
        )
    )
    record_change(connection, "account", account.id, account.created_at_ms)


def set_account_status(connection: Connection, account_id: str, status: str, now_ms: int) -> bool:
    disabled_at = now_ms if status == "disabled" else None
    result = connection.execute(
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(status=status, disabled_at_ms=disabled_at)
    )
    if result.rowcount:
        record_change(connection, "account", account_id, now_ms)
    return bool(result.rowcount)


def set_account_terms(
    connection: Connection, account_id: str, currency: str, credit_limit_nano: int, now_ms: int
) -> None:
    connection.execute(
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(currency=currency, credit_limit_nano=credit_limit_nano)
    )
    record_change(connection, "account", account_id, now_ms)


def set_account_plan(
    connection: Connection, account_id: str, plan: str | None, now_ms: int
) -> None:
    since = None if plan is None else now_ms
    connection.execute(
        update(accounts).where(accounts.c.id == account_id).values(plan=plan, plan_since_ms=since)
    )
    record_change(connection, "account", account_id, now_ms)


def set_budget(
    connection: Connection,
    entity: str,
    entity_id: str,
    daily_nano: int | None,
    monthly_nano: int | None,
    now_ms: int,
) -> bool:
    """Set the spend budgets of an account or a key (None: no budget)."""
    table = accounts if entity == "account" else api_keys
    result = connection.execute(
        update(table)
        .where(table.c.id == entity_id)
        .values(daily_budget_nano=daily_nano, monthly_budget_nano=monthly_nano)
    )
    if result.rowcount:
        record_change(connection, entity, entity_id, now_ms)
    return bool(result.rowcount)


def set_rate_limits(
    connection: Connection,
    entity: str,
    entity_id: str,
    limits: dict[str, dict[str, int]] | None,
    now_ms: int,
) -> bool:
    """Set (None: remove) the rate limits of an account or a key."""
    table = accounts if entity == "account" else api_keys
    text = None if not limits else json.dumps(limits, sort_keys=True)
    result = connection.execute(
        update(table).where(table.c.id == entity_id).values(rate_limits=text)
    )
    if result.rowcount:
        record_change(connection, entity, entity_id, now_ms)
    return bool(result.rowcount)


def account_by_id(connection: Connection, account_id: str) -> AccountRow | None:
    row = connection.execute(select(accounts).where(accounts.c.id == account_id)).first()
    return _account(row) if row else None


def account_by_name(connection: Connection, name: str) -> AccountRow | None:
    row = connection.execute(select(accounts).where(accounts.c.name == name)).first()
    return _account(row) if row else None


def list_accounts(connection: Connection, limit: int) -> list[AccountRow]:
    rows = connection.execute(select(accounts).order_by(accounts.c.created_at_ms).limit(limit))
    return [_account(row) for row in rows]


def accounts_by_ids(connection: Connection, ids: Sequence[str]) -> list[AccountRow]:
    rows = connection.execute(select(accounts).where(accounts.c.id.in_(list(ids))))
    return [_account(row) for row in rows]


def insert_key(connection: Connection, key: KeyRow) -> None:
    connection.execute(
        insert(api_keys).values(
            id=key.id,
            account_id=key.account_id,
            name=key.name,
            key_hash=key.key_hash,
            key_prefix=key.key_prefix,
            models=json.dumps(list(key.models)) if key.models is not None else None,
            created_at_ms=key.created_at_ms,
            expires_at_ms=key.expires_at_ms,
            revoked_at_ms=key.revoked_at_ms,
        )
    )
    record_change(connection, "key", key.id, key.created_at_ms)


def revoke_key(connection: Connection, key_id: str, now_ms: int) -> bool:
    result = connection.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at_ms.is_(None))
        .values(revoked_at_ms=now_ms)
    )
    if result.rowcount:
        record_change(connection, "key", key_id, now_ms)
    return bool(result.rowcount)


def key_by_id(connection: Connection, key_id: str) -> KeyRow | None:
    row = connection.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
    return _key(row) if row else None


def keys_by_ids(connection: Connection, ids: Sequence[str]) -> list[KeyRow]:
    rows = connection.execute(select(api_keys).where(api_keys.c.id.in_(list(ids))))
    return [_key(row) for row in rows]


def list_keys(connection: Connection, account_id: str | None, limit: int) -> list[KeyRow]:
    query = select(api_keys).order_by(api_keys.c.created_at_ms).limit(limit)
    if account_id is not None:
        query = query.where(api_keys.c.account_id == account_id)
    return [_key(row) for row in connection.execute(query)]


def live_keys(connection: Connection) -> list[KeyRow]:
    """Every key not revoked: what a gateway loads into memory at start."""
    rows = connection.execute(select(api_keys).where(api_keys.c.revoked_at_ms.is_(None)))
    return [_key(row) for row in rows]


def all_accounts(connection: Connection) -> list[AccountRow]:
    return [_account(row) for row in connection.execute(select(accounts))]


def changes_after(connection: Connection, seq: int, limit: int) -> list[tuple[int, str, str]]:
    rows = connection.execute(
        select(changes.c.seq, changes.c.entity, changes.c.entity_id)
        .where(changes.c.seq > seq)
        .order_by(changes.c.seq)
        .limit(limit)
    )
    return [(row.seq, row.entity, row.entity_id) for row in rows]


def last_change_seq(connection: Connection) -> int:
    return int(connection.execute(select(func.coalesce(func.max(changes.c.seq), 0))).scalar_one())


def insert_admin_token(connection: Connection, token_id: str, token_hash: str, now_ms: int) -> None:
    connection.execute(
        insert(admin_tokens).values(id=token_id, token_hash=token_hash, created_at_ms=now_ms)
    )


def admin_tokens_with_ids(connection: Connection) -> list[tuple[str, str]]:
    rows = connection.execute(select(admin_tokens.c.id, admin_tokens.c.token_hash))
    return [(row.id, row.token_hash) for row in rows]


def meta_value(connection: Connection, name: str) -> str | None:
    row = connection.execute(select(meta.c.value).where(meta.c.name == name)).first()
    return row.value if row else None


def set_meta_value(connection: Connection, name: str, value: str) -> None:
    connection.execute(insert(meta).values(name=name, value=value))


def replace_meta_value(connection: Connection, name: str, value: str | None) -> None:
    """Set (or with None, remove) the value of ``name``."""
    connection.execute(delete(meta).where(meta.c.name == name))
    if value is not None:
        set_meta_value(connection, name, value)
