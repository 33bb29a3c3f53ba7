"""Holds on funds, in memory: the charging half of the hot path (no I/O, no clock).

The one gateway that owns a database keeps every account's balance and the holds of its
requests in flight here. asyncio runs one callback at a time, so a check and the hold it
allows can never interleave with another request's: no lock, no database round trip.

A hold reserves the most a request can cost; it is placed only if the account's available
funds (balance - held - floor) cover it, so settling within the hold can never take a
balance below its floor (TigerBeetle's pessimistic balance check, at reservation time).
Settling charges what was used and releases the rest. Should the charge exceed the hold,
the customer pays the hold and the excess is reported as a loss for the operator. A hold
that outlives its deadline is released by ``expire`` and reported.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.errors import InsufficientFunds
from tokenmill.money import format_amount
from tokenmill.retail.budgets import BudgetBook, over_budget
from tokenmill.retail.plans import IncludedPools

PoolKey = tuple[str, str, int]  # (account, included-token pool, plan month start)


@dataclass
class Funds:
    """One account as the gateway sees it: a committed balance and what is held."""

    currency: str
    balance_nano: int
    floor_nano: int  # 0 for prepaid; minus the credit limit for postpaid
    held_nano: int = 0
    holds_count: int = 0
    plan: str | None = None  # the plan the account subscribes to

    @property
    def available_nano(self) -> int:
        return self.balance_nano - self.held_nano - self.floor_nano


@dataclass
class Hold:
    request_id: str
    account_id: str
    amount_nano: int
    expires_at_ms: int
    open: bool = True
    expired: bool = False  # released by ``expire``, not yet settled
    subjects: tuple[str, ...] = ()  # whose spend budgets it counts against (account, key)
    started_at_ms: int = 0  # the budget period it counts toward
    pool: PoolKey | None = None  # the plan's included tokens it reserved from
    included_reserved: int = 0
    included_allowance: int = 0  # the pool's monthly allowance, for a settle after expiry


@dataclass(frozen=True)
class Settlement:
    """How a charge was booked: what the customer paid and what the operator lost."""

    charged_nano: int  # to the customer's account
    loss_nano: int  # charged to the operator's loss account: the excess over the hold
    included_tokens: int = 0  # tokens the plan covered

    @property
    def total_nano(self) -> int:
        return self.charged_nano + self.loss_nano


class FundsBook:
    """Balances and holds of every account, kept current by the gateway."""

    def __init__(self) -> None:
        self._funds: dict[str, Funds] = {}
        self._holds: dict[str, Hold] = {}
        self.budgets = BudgetBook()
        self.included = IncludedPools()

    def __contains__(self, account_id: str) -> bool:
        return account_id in self._funds

    def funds(self, account_id: str) -> Funds | None:
        return self._funds.get(account_id)

    def set_account(
        self, account_id: str, currency: str, floor_nano: int, plan: str | None = None
    ) -> Funds:
        """Add an account (balance 0) or update its currency, floor and plan."""
        assert floor_nano <= 0
        funds = self._funds.get(account_id)
        if funds is None:
            funds = self._funds[account_id] = Funds(currency, 0, floor_nano, plan=plan)
        else:
            funds.currency = currency
            funds.floor_nano = floor_nano
            funds.plan = plan
        return funds

    def add(self, account_id: str, amount_nano: int) -> None:
        """Apply a committed transfer made elsewhere (a top-up: +; a debit adjustment: -)."""
        funds = self._funds.get(account_id)
        if funds is not None:
            funds.balance_nano += amount_nano

    def place(
        self,
        request_id: str,
        account_id: str,
        amount_nano: int,
        expires_at_ms: int,
        *,
        subjects: tuple[str, ...] = (),
        started_at_ms: int = 0,
        pool: PoolKey | None = None,
        included_reserved: int = 0,
        included_allowance: int = 0,
    ) -> Hold:
        """Reserve ``amount_nano``; raise InsufficientFunds, or RateLimited for a spend
        budget of ``subjects``, changing nothing, if it is not available."""
        assert amount_nano >= 0
        assert request_id not in self._holds
        funds = self._funds[account_id]
        if amount_nano > funds.available_nano:
            raise insufficient(funds, amount_nano)
        room = self.budgets.headroom(subjects, started_at_ms)
        if room is not None and amount_nano > room[0]:
            raise over_budget(room[1], amount_nano, room[0], funds.currency)
        funds.held_nano += amount_nano
        funds.holds_count += 1
        self.budgets.hold(subjects, amount_nano)
        if pool is not None:
            self.included.reserve(pool, included_reserved)
        hold = self._holds[request_id] = Hold(
            request_id,
            account_id,
            amount_nano,
            expires_at_ms,
            subjects=subjects,
            started_at_ms=started_at_ms,
            pool=pool,
            included_reserved=included_reserved,
            included_allowance=included_allowance,
        )
        assert funds.available_nano >= 0
        return hold

    def settle(self, hold: Hold, charge_nano: int, included_used: int = 0) -> Settlement:
        """Charge ``charge_nano`` against ``hold`` and release the rest of it; count
        ``included_used`` tokens as drawn from the plan's included ones."""
        assert charge_nano >= 0
        assert 0 <= included_used <= hold.included_reserved
        funds = self._funds[hold.account_id]
        if hold.open:
            self._close(hold, funds)
            charged = min(charge_nano, hold.amount_nano)
        else:
            # The hold expired and was released: take what is available now, no more. A
            # hold settles once: settling a settled or released one is a bug.
            assert hold.expired
            hold.expired = False
            charged = min(charge_nano, max(0, funds.available_nano))
        funds.balance_nano -= charged
        self.budgets.charge(hold.subjects, charged, hold.started_at_ms)
        if hold.pool is not None and included_used:
            self.included.use(hold.pool, included_used)
        assert 0 <= charged <= charge_nano
        return Settlement(charged, charge_nano - charged, included_used)

    def release(self, hold: Hold) -> None:
        """Give the whole hold back (the request failed before producing anything)."""
        if hold.open:
            self._close(hold, self._funds[hold.account_id])

    def expire(self, now_ms: int) -> list[Hold]:
        """Release every open hold past its deadline; return them to be reported."""
        expired = [hold for hold in self._holds.values() if hold.expires_at_ms <= now_ms]
        for hold in expired:
            self._close(hold, self._funds[hold.account_id])
            hold.expired = True
        return expired

    def _close(self, hold: Hold, funds: Funds) -> None:
        assert hold.open
        hold.open = False
        del self._holds[hold.request_id]
        funds.held_nano -= hold.amount_nano
        funds.holds_count -= 1
        self.budgets.release(hold.subjects, hold.amount_nano)
        if hold.pool is not None:
            self.included.release(hold.pool, hold.included_reserved)
        assert funds.held_nano >= 0
        assert funds.holds_count >= 0

    def included_for(self, hold: Hold) -> int:
        """The included tokens ``hold`` may draw when it settles: its reservation, or, once
        it expired and gave the reservation back, what the pool still has."""
        if hold.pool is None:
            return 0
        if hold.open:
            return hold.included_reserved
        left = self.included.available(hold.pool, hold.included_allowance)
        return min(hold.included_reserved, left)

    @property
    def holds_count(self) -> int:
        return len(self._holds)

    @property
    def held_nano(self) -> int:
        return sum(hold.amount_nano for hold in self._holds.values())


def insufficient(
    funds: Funds, needed_nano: int, cap_param: str = "max_tokens"
) -> InsufficientFunds:
    available = max(0, funds.available_nano)
    return InsufficientFunds(
        f"Insufficient funds: this request can cost up to {format_amount(needed_nano)}"
        f" {funds.currency} and the account has {format_amount(available)} {funds.currency}"
        f" available. Top up the account or lower {cap_param}.",
    )
