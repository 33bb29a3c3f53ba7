"""Money operations on the store (synchronous), shared by the admin API and the CLI.

Top-ups, grants, refunds and adjustments are transfers whose id is the caller's idempotency
key: the same key again answers the same transfer and moves nothing; the same key asking
for another movement is a Conflict. Each one is announced in the change sequence (a running
gateway adds it to its in-memory balance within a poll) and written to the audit log.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from tokenmill.access.service import check_ref, find_account
from tokenmill.errors import Conflict, InvalidRequest, NotFound, Unprocessable
from tokenmill.money import AMOUNT_NANO_MAX, BALANCE_NANO_MAX, format_amount
from tokenmill.retail.ledger import Transfer, operator_account
from tokenmill.retail.plan_specs import plan_from_spec, plan_to_spec
from tokenmill.retail.plans import Plan
from tokenmill.retail.rating import Price
from tokenmill.store import accounts as account_rows
from tokenmill.store import ledger as ledger_rows
from tokenmill.store import plans as plan_rows
from tokenmill.store import prices as price_rows
from tokenmill.store.audit import record_action
from tokenmill.store.database import now_ms, write_transaction
from tokenmill.store.tables import ledger_balances, transfers
from tokenmill.store.wide_sums import joined_balance

IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
# Which operator account is the other side of each kind of movement the admin makes.
COUNTERPART = {"topup": "cash", "grant": "grants", "refund": "revenue", "adjustment": "adjustments"}


@dataclass(frozen=True)
class Posted:
    transfer: Transfer
    replayed: bool  # True when the idempotency key was used before for the same movement


def one_idempotency_key(in_body: str | None, in_header: str | None) -> str | None:
    """The key a request gives in its body or its ``Idempotency-Key`` header; both must
    agree when both are given (an empty one is a key too, and ``check_idempotency_key``
    refuses it: it never means "no idempotency")."""
    if in_body is not None and in_header is not None and in_body != in_header:
        raise InvalidRequest(
            "the Idempotency-Key header and the body's idempotency_key differ; give one key",
            param="idempotency_key",
            code="idempotency_key_mismatch",
        )
    return in_body if in_body is not None else in_header


def check_idempotency_key(key: str | None) -> str:
    """The caller's key, or a new random one when none was given."""
    if key is None:
        return "auto-" + secrets.token_hex(12)
    if not isinstance(key, str) or not IDEMPOTENCY_KEY.match(key):
        raise InvalidRequest(
            "idempotency key must be 1-128 characters: letters, digits, '.', '_', ':' or '-'",
            param="idempotency_key",
        )
    return key


def check_currency(currency: str) -> str:
    if not isinstance(currency, str) or not CURRENCY.match(currency):
        raise InvalidRequest(
            "currency must be a three-letter ISO 4217 code such as USD", param="currency"
        )
    return currency


def move_funds(
    engine: Engine,
    account_ref: str,
    amount_nano: int,
    *,
    kind: str,
    idempotency_key: str | None,
    actor: str,
    reference: str | None = None,
) -> Posted:
    """Credit (amount > 0) or, for an adjustment, debit (amount < 0) a customer account."""
    if kind not in COUNTERPART:
        raise InvalidRequest(f"kind must be one of {', '.join(sorted(COUNTERPART))}", param="kind")
    if amount_nano == 0 or abs(amount_nano) > AMOUNT_NANO_MAX:
        raise InvalidRequest("amount must be non-zero and at most 1e9", param="amount")
    if amount_nano < 0 and kind != "adjustment":
        raise InvalidRequest(f"a {kind} must be positive", param="amount")
    if reference is not None and (len(reference) > 200 or "\x00" in reference):
        raise InvalidRequest("reference must be at most 200 characters", param="reference")
    key = check_idempotency_key(idempotency_key)
    account = find_account(engine, account_ref)
    other = operator_account(COUNTERPART[kind], account.currency)
    debit, credit = (other, account.id) if amount_nano > 0 else (account.id, other)
    transfer = Transfer(
        "idem:" + key, debit, credit, abs(amount_nano), account.currency, kind, reference, now_ms()
    )
    try:
        return _post_once(engine, transfer, account, actor)
    except IntegrityError:
        # Another writer inserted the same id between our read and our insert (PostgreSQL):
        # read it now and answer as a replay or a conflict.
        return _post_once(engine, transfer, account, actor)


def _post_once(
    engine: Engine, transfer: Transfer, account: account_rows.AccountRow, actor: str
) -> Posted:
    with write_transaction(engine) as connection:
        existing = ledger_rows.transfer_by_id(connection, transfer.id)
        if existing is not None:
            if not existing.same_as(transfer):
                raise Conflict(
                    "this idempotency key was used for a different movement"
                    f" ({existing.kind} of {format_amount(existing.amount_nano)}"
                    f" {existing.currency}); use a new key",
                    param="idempotency_key",
                    code="idempotency_key_reused",
                )
            return Posted(existing, True)
        balance = _locked_balance(connection, account.id, account.currency)
        after = balance + (transfer.amount_nano if transfer.credit_account == account.id else 0)
        if transfer.debit_account == account.id:
            after = balance - transfer.amount_nano
            if after < -account.credit_limit_nano:
                raise Unprocessable(
                    f"the adjustment would take the balance to {format_amount(after)}"
                    f" {account.currency}, below its floor of"
                    f" {format_amount(-account.credit_limit_nano)}",
                    param="amount",
                )
        _check_in_range(connection, transfer, account.id, after)
        ledger_rows.post_transfers(connection, [transfer], transfer.created_at_ms)
        record_action(
            connection,
            actor=actor,
            action=transfer.kind,
            entity="account",
            entity_id=account.id,
            before={"balance_nano": balance},
            after={"balance_nano": after, "transfer_id": transfer.id},
            now_ms=transfer.created_at_ms,
        )
    return Posted(transfer, False)


def _check_in_range(connection: Any, transfer: Transfer, account_id: str, after: int) -> None:
    """Refuse a movement that would take either side's balance out of the range a balance
    is kept in (``BALANCE_NANO_MAX``): such a movement is never stored."""
    credited = transfer.credit_account == account_id
    other = transfer.debit_account if credited else transfer.credit_account
    other_delta = -transfer.amount_nano if credited else transfer.amount_nano
    other_after = ledger_rows.cached_balance(connection, other) + other_delta
    for side, balance in ((account_id, after), (other, other_after)):
        if abs(balance) > BALANCE_NANO_MAX:
            raise InvalidRequest(
                f"the movement would take the balance of {side} past the"
                f" {format_amount(BALANCE_NANO_MAX)} a ledger account can hold",
                param="amount",
            )


def _locked_balance(connection: Any, account_id: str, currency: str) -> int:
    """The account's cached balance, its row locked until commit (PostgreSQL).

    The row is made first if the account has none yet: locking a row that does not exist
    locks nothing, and two first debits would both pass the floor check.
    """
    connection.exec_driver_sql(
        "INSERT INTO ledger_balances"
        " (account_id, currency, balance_nano_high, balance_nano_low, updated_at_ms)"
        f" VALUES ({_marks(connection, 5)}) ON CONFLICT (account_id) DO NOTHING",
        (account_id, currency, 0, 0, now_ms()),
    )
    row = connection.execute(
        select(ledger_balances.c.balance_nano_high, ledger_balances.c.balance_nano_low)
        .where(ledger_balances.c.account_id == account_id)
        .with_for_update()
    ).one()
    return joined_balance(*row)


def _marks(connection: Any, count: int) -> str:
    mark = "?" if connection.dialect.name == "sqlite" else "%s"
    return ", ".join([mark] * count)


def transfer_exists(engine: Engine, idempotency_key: str) -> bool:
    with engine.connect() as connection:
        return ledger_rows.transfer_by_id(connection, "idem:" + idempotency_key) is not None


def balance_of(engine: Engine, account_id: str) -> int:
    with engine.connect() as connection:
        return ledger_rows.cached_balance(connection, account_id)


def set_terms(
    engine: Engine,
    account_ref: str,
    *,
    currency: str | None,
    credit_limit_nano: int | None,
    actor: str,
) -> account_rows.AccountRow:
    """Change an account's currency (only before its first transfer) or credit limit."""
    account = find_account(engine, account_ref)
    new_currency = account.currency if currency is None else check_currency(currency)
    limit = account.credit_limit_nano if credit_limit_nano is None else credit_limit_nano
    if not 0 <= limit <= AMOUNT_NANO_MAX:
        raise InvalidRequest("credit limit must be between 0 and 1e9", param="credit_limit")
    with write_transaction(engine) as connection:
        if new_currency != account.currency and _has_transfers(connection, account.id):
            raise Conflict(
                "the account has transfers in its currency; open a new account instead",
                param="currency",
            )
        account_rows.set_account_terms(connection, account.id, new_currency, limit, now_ms())
        record_action(
            connection,
            actor=actor,
            action="terms",
            entity="account",
            entity_id=account.id,
            before={"currency": account.currency, "credit_limit_nano": account.credit_limit_nano},
            after={"currency": new_currency, "credit_limit_nano": limit},
            now_ms=now_ms(),
        )
        updated = account_rows.account_by_id(connection, account.id)
    assert updated is not None
    return updated


def _has_transfers(connection: Any, account_id: str) -> bool:
    query = select(transfers.c.id).where(
        (transfers.c.debit_account == account_id) | (transfers.c.credit_account == account_id)
    )
    return connection.execute(query.limit(1)).first() is not None


def set_price(engine: Engine, price: Price, *, actor: str) -> Price:
    """Add ``price`` to the book, in force from its ``effective_from_ms``."""
    check_currency(price.currency)
    if not 0 < len(price.model) <= 200:
        raise InvalidRequest("model must be 1-200 characters", param="model")
    with write_transaction(engine) as connection:
        current = price_rows.prices_of(connection, price.model)
        if any(
            p.currency == price.currency and p.effective_from_ms == price.effective_from_ms
            for p in current
        ):
            raise Conflict(
                f"a price of {price.model} in {price.currency} takes effect at that instant"
                " already; prices are never edited, give another effective time",
                param="effective_from",
            )
        price_rows.insert_price(connection, price, now_ms())
        in_force = [p for p in current if p.currency == price.currency]
        record_action(
            connection,
            actor=actor,
            action="price",
            entity="model",
            entity_id=price.model,
            before=price_json(in_force[-1]) if in_force else None,
            after=price_json(price),
            now_ms=now_ms(),
        )
    return price


def price_json(price: Price) -> dict[str, Any]:
    return {
        "model": price.model,
        "currency": price.currency,
        "effective_from_ms": price.effective_from_ms,
        "input_nano_per_mtok": price.input_nano_per_mtok,
        "output_nano_per_mtok": price.output_nano_per_mtok,
        "cached_input_nano_per_mtok": price.cached_input_nano_per_mtok,
        "cache_write_input_nano_per_mtok": price.cache_write_input_nano_per_mtok,
        "request_fee_nano": price.request_fee_nano,
    }


def list_prices(engine: Engine) -> list[Price]:
    with engine.connect() as connection:
        return price_rows.all_prices(connection)


def seed_prices(engine: Engine, prices: list[Price]) -> list[Price]:
    """Add each configured price whose model has no price in its currency yet."""
    added = []
    with write_transaction(engine) as connection:
        for price in prices:
            known = price_rows.prices_of(connection, price.model)
            if not any(p.currency == price.currency for p in known):
                price_rows.insert_price(connection, price, now_ms())
                added.append(price)
    return added


def transfer(engine: Engine, transfer_id: str) -> Transfer:
    with engine.connect() as connection:
        found = ledger_rows.transfer_by_id(connection, transfer_id)
    if found is None:
        raise NotFound(f"no transfer '{transfer_id}'", param="transfer_id")
    return found


def transfers_of(engine: Engine, account_id: str, *, limit: int = 1000) -> list[Transfer]:
    with engine.connect() as connection:
        return ledger_rows.transfers_of(connection, account_id, limit=limit)


def set_budget(
    engine: Engine,
    entity: str,
    ref: str,
    *,
    daily_nano: int | None,
    monthly_nano: int | None,
    actor: str,
) -> tuple[str, int | None, int | None]:
    """Set (None: remove) the daily and monthly spend budgets of an account or a key."""
    assert entity in ("account", "key")
    for value, param in ((daily_nano, "daily"), (monthly_nano, "monthly")):
        if value is not None and not 0 <= value <= AMOUNT_NANO_MAX:
            raise InvalidRequest(f"{param} budget must be between 0 and 1e9", param=param)
    entity_id = find_account(engine, ref).id if entity == "account" else check_ref(ref, "key_id")
    with write_transaction(engine) as connection:
        before_row: Any = (
            account_rows.account_by_id(connection, entity_id)
            if entity == "account"
            else account_rows.key_by_id(connection, entity_id)
        )
        if before_row is None:
            raise NotFound(f"no {entity} '{ref}'", param="key_id")
        account_rows.set_budget(connection, entity, entity_id, daily_nano, monthly_nano, now_ms())
        record_action(
            connection,
            actor=actor,
            action="budget",
            entity=entity,
            entity_id=entity_id,
            before={
                "daily_budget_nano": before_row.daily_budget_nano,
                "monthly_budget_nano": before_row.monthly_budget_nano,
            },
            after={"daily_budget_nano": daily_nano, "monthly_budget_nano": monthly_nano},
            now_ms=now_ms(),
        )
    return entity_id, daily_nano, monthly_nano


def seed_plans(engine: Engine, specs: dict[str, Any]) -> list[str]:
    """Add each configured plan the store has no plan of that name for."""
    added = []
    with write_transaction(engine) as connection:
        known = plan_rows.plan_specs(connection, list(specs))
        for name, spec in specs.items():
            if name not in known:
                plan = plan_from_spec(name, spec)
                plan_rows.put_plan(connection, name, plan_to_spec(plan), now_ms())
                added.append(name)
    return added


def set_plan(engine: Engine, name: str, spec: Any, *, actor: str) -> Plan:
    """Create or replace plan ``name`` (subscribers get the new terms from now on)."""
    plan = plan_from_spec(name, spec)
    written = plan_to_spec(plan)
    with write_transaction(engine) as connection:
        before = plan_rows.plan_specs(connection, [name]).get(name)
        plan_rows.put_plan(connection, name, written, now_ms())
        record_action(
            connection,
            actor=actor,
            action="plan",
            entity="plan",
            entity_id=name,
            before=before,
            after=written,
            now_ms=now_ms(),
        )
    return plan


def list_plans(engine: Engine) -> dict[str, Any]:
    with engine.connect() as connection:
        return plan_rows.plan_specs(connection)


def subscribe(
    engine: Engine, account_ref: str, plan_name: str | None, *, actor: str
) -> account_rows.AccountRow:
    """Put an account on a plan (None: pay as you go), from now on."""
    account = find_account(engine, account_ref)
    if account.plan == plan_name:
        return account  # already on it: its subscription keeps its start
    with write_transaction(engine) as connection:
        if plan_name is not None:
            specs = plan_rows.plan_specs(connection, [plan_name])
            if plan_name not in specs:
                raise NotFound(f"no plan '{plan_name[:64]}'", param="plan")
            currency = specs[plan_name].get("currency", "USD")
            if currency != account.currency:
                raise Conflict(
                    f"plan {plan_name} is in {currency}; the account is in {account.currency}",
                    param="plan",
                )
        account_rows.set_account_plan(connection, account.id, plan_name, now_ms())
        record_action(
            connection,
            actor=actor,
            action="subscribe",
            entity="account",
            entity_id=account.id,
            before={"plan": account.plan},
            after={"plan": plan_name},
            now_ms=now_ms(),
        )
        updated = account_rows.account_by_id(connection, account.id)
    assert updated is not None
    return updated
