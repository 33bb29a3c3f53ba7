"""Account and key operations shared by the admin API and the CLI (synchronous, on the store).

Each write appends to the change sequence in its transaction, so a running gateway sees it
within one poll. Input is validated here, once, for both shells.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from tokenmill.access.keys import (
    ADMIN_PREFIX,
    KEY_DISPLAY_CHARS,
    KEY_PREFIX,
    hash_secret,
    new_id,
    new_secret,
)
from tokenmill.errors import Conflict, InvalidRequest, NotFound
from tokenmill.retail.ledger import Transfer, operator_account
from tokenmill.retail.rate_limits import RateLimit, limits_from_spec, limits_to_spec
from tokenmill.store import accounts as rows
from tokenmill.store.audit import record_action
from tokenmill.store.database import now_ms, write_transaction
from tokenmill.store.ledger import post_transfers

DEMO_GRANT_NANO = 5_000_000_000  # 5.00 USD: the demo key works on the first start
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,199}$")
MODELS_PER_KEY_MAX = 1000
LIST_LIMIT_MAX = 10_000


@dataclass(frozen=True)
class NewKey:
    row: rows.KeyRow
    secret: str  # shown once, never stored


def _check_name(name: str, param: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidRequest(
            f"{param} must be 1-200 characters: letters, digits, space, '.', '_', '@' or '-',"
            " starting with a letter or digit",
            param=param,
        )
    return name


def _check_limit(limit: int) -> int:
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise InvalidRequest(f"limit must be between 1 and {LIST_LIMIT_MAX}", param="limit")
    return limit


def _key_state(key: rows.KeyRow) -> dict[str, object]:
    """What the audit log keeps of a key: never its hash or secret."""
    return {
        "account_id": key.account_id,
        "name": key.name,
        "prefix": key.key_prefix,
        "models": list(key.models) if key.models is not None else None,
        "expires_at_ms": key.expires_at_ms,
        "revoked_at_ms": key.revoked_at_ms,
    }


def create_account(engine: Engine, name: str, *, actor: str = "cli") -> rows.AccountRow:
    account = rows.AccountRow(new_id("acct"), _check_name(name, "name"), "active", now_ms(), None)
    try:
        with write_transaction(engine) as connection:
            rows.insert_account(connection, account)
            record_action(
                connection,
                actor=actor,
                action="account_created",
                entity="account",
                entity_id=account.id,
                before=None,
                after={"name": account.name, "status": account.status},
                now_ms=account.created_at_ms,
            )
    except IntegrityError as exc:
        raise Conflict(f"an account named '{name}' exists already", param="name") from exc
    return account


def check_ref(value: str, param: str) -> str:
    """An id or name given to look something up: text a database can store, bounded."""
    if not isinstance(value, str) or not 0 < len(value) <= 200 or "\x00" in value:
        raise InvalidRequest(f"{param} must be 1-200 characters of text", param=param)
    return value


def find_account(engine: Engine, ref: str) -> rows.AccountRow:
    """The account whose id or name is ``ref``."""
    check_ref(ref, "account")
    with engine.connect() as connection:
        account = rows.account_by_id(connection, ref) or rows.account_by_name(connection, ref)
    if account is None:
        raise NotFound(f"no account '{ref}'", param="account")
    return account


def list_accounts(engine: Engine, limit: int = 1000) -> list[rows.AccountRow]:
    with engine.connect() as connection:
        return rows.list_accounts(connection, _check_limit(limit))


def set_account_status(
    engine: Engine, ref: str, status: str, *, actor: str = "cli"
) -> rows.AccountRow:
    assert status in ("active", "disabled")
    account = find_account(engine, ref)
    with write_transaction(engine) as connection:
        rows.set_account_status(connection, account.id, status, now_ms())
        updated = rows.account_by_id(connection, account.id)
        record_action(
            connection,
            actor=actor,
            action=f"account_{'enabled' if status == 'active' else 'disabled'}",
            entity="account",
            entity_id=account.id,
            before={"status": account.status},
            after={"status": status},
            now_ms=now_ms(),
        )
    assert updated is not None
    return updated


def create_key(
    engine: Engine,
    account_ref: str,
    *,
    name: str = "default",
    models: list[str] | None = None,
    expires_at_ms: int | None = None,
    actor: str = "cli",
) -> NewKey:
    account = find_account(engine, account_ref)
    _check_name(name, "name")
    if models is not None and (
        len(models) > MODELS_PER_KEY_MAX
        or not all(isinstance(m, str) and 0 < len(m) <= 200 and "\x00" not in m for m in models)
    ):
        raise InvalidRequest(
            f"models must be a list of at most {MODELS_PER_KEY_MAX} model ids",
            param="models",
        )
    created = now_ms()
    if expires_at_ms is not None and expires_at_ms <= created:
        raise InvalidRequest("expires_at must be in the future", param="expires_at")
    secret = new_secret(KEY_PREFIX)
    row = rows.KeyRow(
        id=new_id("key"),
        account_id=account.id,
        name=name,
        key_hash=hash_secret(secret),
        key_prefix=secret[:KEY_DISPLAY_CHARS],
        models=tuple(models) if models is not None else None,
        created_at_ms=created,
        expires_at_ms=expires_at_ms,
        revoked_at_ms=None,
    )
    with write_transaction(engine) as connection:
        rows.insert_key(connection, row)
        record_action(
            connection,
            actor=actor,
            action="key_created",
            entity="key",
            entity_id=row.id,
            before=None,
            after=_key_state(row),
            now_ms=created,
        )
    return NewKey(row, secret)


def list_keys(engine: Engine, account_ref: str | None, limit: int = 1000) -> list[rows.KeyRow]:
    account_id = find_account(engine, account_ref).id if account_ref else None
    with engine.connect() as connection:
        return rows.list_keys(connection, account_id, _check_limit(limit))


def revoke_key(engine: Engine, key_id: str, *, actor: str = "cli") -> rows.KeyRow:
    check_ref(key_id, "key_id")
    with write_transaction(engine) as connection:
        before = rows.key_by_id(connection, key_id)
        if before is None:
            raise NotFound(f"no key '{key_id}'", param="key_id")
        rows.revoke_key(connection, key_id, now_ms())
        key = rows.key_by_id(connection, key_id)
        assert key is not None and key.revoked_at_ms is not None
        if before.revoked_at_ms is None:
            record_action(
                connection,
                actor=actor,
                action="key_revoked",
                entity="key",
                entity_id=key_id,
                before=_key_state(before),
                after=_key_state(key),
                now_ms=key.revoked_at_ms,
            )
    return key


def admin_token_actors(engine: Engine) -> dict[str, str]:
    """Admin token hash -> the actor the audit log names (``admin:<token id>``)."""
    with engine.connect() as connection:
        return {
            token_hash: f"admin:{token_id}"
            for token_id, token_hash in rows.admin_tokens_with_ids(connection)
        }


@dataclass(frozen=True)
class FirstStart:
    admin_token: str | None  # None when TOKENMILL_ADMIN_TOKEN is set
    demo_key: str
    demo_account_id: str


def first_start(engine: Engine, *, make_admin_token: bool) -> FirstStart | None:
    """On a database never started before: an admin token and a demo account with a key.

    Returns the secrets to print once, or None when the database was initialized before.
    """
    with write_transaction(engine) as connection:
        if rows.meta_value(connection, "initialized_at_ms") is not None:
            return None
        created = now_ms()
        rows.set_meta_value(connection, "initialized_at_ms", str(created))
        admin = new_secret(ADMIN_PREFIX) if make_admin_token else None
        if admin is not None:
            rows.insert_admin_token(connection, new_id("adm"), hash_secret(admin), created)
        account = rows.account_by_name(connection, "demo")
        if account is None:
            account = rows.AccountRow(new_id("acct"), "demo", "active", created, None)
            rows.insert_account(connection, account)
        secret = new_secret(KEY_PREFIX)
        key = rows.KeyRow(
            new_id("key"),
            account.id,
            "demo",
            hash_secret(secret),
            secret[:KEY_DISPLAY_CHARS],
            None,
            created,
            None,
            None,
        )
        rows.insert_key(connection, key)
        grant = Transfer(
            "grant:demo-welcome",
            operator_account("grants", account.currency),
            account.id,
            DEMO_GRANT_NANO,
            account.currency,
            "grant",
            "first start",
            created,
        )
        post_transfers(connection, [grant], created)
    return FirstStart(admin, secret, account.id)


def set_rate_limit(
    engine: Engine, entity: str, ref: str, model: str, limit: RateLimit, *, actor: str
) -> tuple[str, dict[str, RateLimit]]:
    """Set the rate limit of an account or a key for ``model`` (``"*"``: every model); an
    empty limit removes it. Returns the entity's id and all its limits."""
    assert entity in ("account", "key")
    check_ref(model, "model")
    entity_id = find_account(engine, ref).id if entity == "account" else check_ref(ref, "key_id")
    with write_transaction(engine) as connection:
        row: rows.AccountRow | rows.KeyRow | None = (
            rows.account_by_id(connection, entity_id)
            if entity == "account"
            else rows.key_by_id(connection, entity_id)
        )
        if row is None:
            raise NotFound(f"no {entity} '{ref}'", param="key_id")
        before = limits_from_spec(row.rate_limits or {})
        after = {name: found for name, found in before.items() if name != model}
        if not limit.empty:
            after[model] = limit
        spec = limits_to_spec(after)
        rows.set_rate_limits(connection, entity, entity_id, spec or None, now_ms())
        record_action(
            connection,
            actor=actor,
            action="rate_limits",
            entity=entity,
            entity_id=entity_id,
            before=limits_to_spec(before),
            after=spec,
            now_ms=now_ms(),
        )
    return entity_id, after


def rate_limits_of(engine: Engine, entity: str, ref: str) -> tuple[str, dict[str, RateLimit]]:
    """The id and the rate limits of an account or a key."""
    assert entity in ("account", "key")
    if entity == "account":
        account = find_account(engine, ref)
        return account.id, limits_from_spec(account.rate_limits or {})
    with engine.connect() as connection:
        key = rows.key_by_id(connection, check_ref(ref, "key_id"))
    if key is None:
        raise NotFound(f"no key '{ref}'", param="key_id")
    return key.id, limits_from_spec(key.rate_limits or {})
