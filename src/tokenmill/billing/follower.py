"""The gateway's money state (balances, holds, prices), loaded from the store and kept
current by following its change sequence (I/O shell around ``retail``).

Transfers made outside the gateway's own group commit (top-ups, grants, refunds and
adjustments from the admin API or the CLI) are announced as ``transfer`` changes; the
follower adds each one to the in-memory balance exactly once. The gateway's own usage
transfers are applied in memory when they are settled and are not announced.

The load reads balances and the last change in one snapshot (REPEATABLE READ on
PostgreSQL), and marks the changes inside the overlap window as applied, so a transfer is
counted by the load or by the follower, never both.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from tokenmill.access.follower import CHANGES_PER_POLL_MAX, overlap_of, unapplied_changes
from tokenmill.changes import ChangeCursor
from tokenmill.errors import InvalidRequest
from tokenmill.retail.budgets import Budget, period_starts
from tokenmill.retail.funds import FundsBook
from tokenmill.retail.ledger import Transfer
from tokenmill.retail.plan_specs import plan_from_spec
from tokenmill.retail.plans import Plan
from tokenmill.retail.rating import Price, PriceBook
from tokenmill.store import accounts as account_rows
from tokenmill.store import ledger as ledger_rows
from tokenmill.store import plans as plan_rows
from tokenmill.store import prices as price_rows
from tokenmill.store.database import now_ms
from tokenmill.store.usage import charged_since, included_used_since

log = logging.getLogger("tokenmill.billing")


class MoneyState(ChangeCursor):
    """Balances and holds (``funds``) and the price book (``prices``) of one gateway."""

    def __init__(self) -> None:
        super().__init__()
        self.funds = FundsBook()
        self.prices = PriceBook()
        self.plans: dict[str, Plan] = {}


def _snapshot(engine: Engine) -> Connection:
    connection = engine.connect()
    if engine.dialect.name == "postgresql":
        connection = connection.execution_options(isolation_level="REPEATABLE READ")
    return connection


def _plans(specs: dict[str, Any]) -> dict[str, Plan]:
    plans = {}
    for name, spec in specs.items():
        try:
            plans[name] = plan_from_spec(name, spec)
        except InvalidRequest as exc:  # written by an older version, say: skip it, loudly
            log.error("plan %s in the store is not valid, ignored: %s", name, exc.message)
    return plans


def _set_account(state: MoneyState, account: account_rows.AccountRow) -> None:
    state.funds.set_account(
        account.id, account.currency, -account.credit_limit_nano, plan=account.plan
    )
    _set_budget(state, account.id, account)


def _load_included_used(
    connection: Connection,
    state: MoneyState,
    accounts: list[account_rows.AccountRow],
    tiers: dict[str, str],
) -> None:
    """Included tokens each subscribed account used so far in its plan's month."""
    at = now_ms()
    for account in accounts:
        plan = state.plans.get(account.plan) if account.plan else None
        if plan is None:
            continue
        start = plan.period_start_ms(at)
        for model, tokens in included_used_since(connection, account.id, start).items():
            pool = plan.pool_for(model, tiers.get(model, "standard"))
            if pool is not None:
                key = (account.id, pool, start)
                state.funds.included.load_used(key, state.funds.included.used(key) + tokens)


def load_money(engine: Engine, tiers: dict[str, str] | None = None) -> MoneyState:
    """The money state as the store has it; ``tiers`` maps model ids to their tiers."""
    tiers = tiers or {}
    state = MoneyState()
    overlap = overlap_of(engine)
    with _snapshot(engine) as connection:
        seq = account_rows.last_change_seq(connection)
        recent = account_rows.changes_after(connection, max(0, seq - overlap), CHANGES_PER_POLL_MAX)
        balances = ledger_rows.cached_balances(connection)
        state.plans = _plans(plan_rows.plan_specs(connection))
        accounts = account_rows.all_accounts(connection)
        for account in accounts:
            _set_account(state, account)
            state.funds.add(account.id, balances.get(account.id, 0))
        for key in account_rows.live_keys(connection):
            _set_budget(state, key.id, key)
        for start in period_starts(now_ms()):
            for subject in ("account", "key"):
                for ident, charged in charged_since(connection, subject, start).items():
                    state.funds.budgets.load_spent(ident, start, charged)
        state.prices = PriceBook(price_rows.all_prices(connection))
        _load_included_used(connection, state, accounts, tiers)
    state.seq = seq
    state.mark_applied([change_seq for change_seq, _, _ in recent], overlap)
    return state


def _set_budget(
    state: MoneyState, subject: str, row: account_rows.AccountRow | account_rows.KeyRow
) -> None:
    state.funds.budgets.set_budget(subject, Budget(row.daily_budget_nano, row.monthly_budget_nano))


@dataclass
class MoneyChanges:
    seqs: list[int]
    accounts: list[account_rows.AccountRow] = field(default_factory=list)
    keys: list[account_rows.KeyRow] = field(default_factory=list)
    plans: dict[str, Any] = field(default_factory=dict)
    transfers: list[Transfer] = field(default_factory=list)
    prices: dict[str, list[Price]] = field(default_factory=dict)


def fetch_money_changes(engine: Engine, state: MoneyState) -> MoneyChanges | None:
    """Read the changes not applied yet and the rows they name (on a worker thread)."""
    with engine.connect() as connection:
        found = unapplied_changes(connection, state, overlap_of(engine))
        if not found:
            return None
        ids = {entity: sorted({i for _, e, i in found if e == entity}) for entity in _ENTITIES}
        batch = MoneyChanges([seq for seq, _, _ in found])
        if ids["account"]:
            batch.accounts = account_rows.accounts_by_ids(connection, ids["account"])
        if ids["key"]:
            batch.keys = account_rows.keys_by_ids(connection, ids["key"])
        if ids["transfer"]:
            batch.transfers = ledger_rows.transfers_by_ids(connection, ids["transfer"])
        for model in ids["price"]:
            batch.prices[model] = price_rows.prices_of(connection, model)
        if ids["plan"]:
            batch.plans = plan_rows.plan_specs(connection, ids["plan"])
    return batch


_ENTITIES = ("account", "key", "transfer", "price", "plan")


def apply_money_changes(state: MoneyState, batch: MoneyChanges, overlap: int) -> None:
    """Apply ``batch`` (on the event loop). A transfer seen twice (two racing fetches) is
    added once: its seq is checked again here, where nothing can interleave."""
    fresh = {seq for seq in batch.seqs if not state.has_applied(seq)}
    if len(fresh) != len(batch.seqs):
        return  # another fetch applied (some of) these already; the next poll reads the rest
    state.plans.update(_plans(batch.plans))
    for account in batch.accounts:
        _set_account(state, account)
    for key in batch.keys:
        _set_budget(state, key.id, key)
    for transfer in batch.transfers:
        state.funds.add(transfer.credit_account, transfer.amount_nano)
        state.funds.add(transfer.debit_account, -transfer.amount_nano)
    for model, prices in batch.prices.items():
        state.prices.replace_model(model, prices)
    state.mark_applied(batch.seqs, overlap)


async def follow_money(
    engine: Engine, state: MoneyState, interval_s: float, executor: Executor
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s)
        await sync_money(engine, state, executor, loop)


async def sync_money(
    engine: Engine,
    state: MoneyState,
    executor: Executor,
    loop: asyncio.AbstractEventLoop | None = None,
) -> None:
    loop = loop or asyncio.get_running_loop()
    try:
        batch = await loop.run_in_executor(executor, fetch_money_changes, engine, state)
    except SQLAlchemyError as exc:
        log.warning("money change poll failed, retrying: %s", exc.__class__.__name__)
        return
    if batch is not None:
        apply_money_changes(state, batch, overlap_of(engine))
