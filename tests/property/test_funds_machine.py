"""FundsBook under any interleaving of top-ups, holds, settles, releases and expiry, checked
against a plain model of the same accounts and against the ledger built from its settles."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tokenmill.errors import InsufficientFunds
from tokenmill.retail.funds import FundsBook, Hold, Settlement
from tokenmill.retail.ledger import (
    Transfer,
    audit_balances,
    balance_deltas,
    operator_account,
    usage_transfers,
)

CURRENCY = "USD"
PREPAID = "acct_prepaid"  # floor 0
POSTPAID = "acct_postpaid"  # a credit limit of 5_000: floor -5_000
ADJUSTED = "acct_adjusted"  # prepaid, and the only account debit adjustments land on
FLOORS = {PREPAID: 0, POSTPAID: -5_000, ADJUSTED: 0}
CLEAN = (PREPAID, POSTPAID)  # only positive adds ever happen to these

accounts = st.sampled_from(sorted(FLOORS))
amounts = st.integers(min_value=0, max_value=20_000)
picks = st.integers(min_value=0, max_value=10**6)
# Mostly near the holds; sometimes past anything 40 top-ups of 20_000 can fund.
charges = st.integers(min_value=0, max_value=30_000) | st.integers(min_value=10**6, max_value=10**7)


@dataclass
class ModelAccount:
    balance_nano: int = 0
    holds: dict[str, int] = field(default_factory=dict)  # request id -> amount held

    def available_nano(self, floor_nano: int) -> int:
        return self.balance_nano - sum(self.holds.values()) - floor_nano


class FundsMachine(RuleBasedStateMachine):
    """Holds, settles, releases and expiry keep the book, the model and the ledger agreed."""

    def __init__(self) -> None:
        super().__init__()
        self.book = FundsBook()
        for account_id, floor in FLOORS.items():
            self.book.set_account(account_id, CURRENCY, floor)
        self.model = {account_id: ModelAccount() for account_id in FLOORS}
        self.now_ms = 0
        self.requests = 0
        self.open: dict[str, Hold] = {}  # holds placed, neither settled, released nor expired
        self.expired: dict[str, Hold] = {}  # released by expire, not settled yet
        self.closed: list[Hold] = []  # settled or released
        self.transfers: list[Transfer] = []
        self.asked_nano = 0
        self.charged_nano = 0
        self.lost_nano = 0

    def _transfer(self, kind: str, debit: str, credit: str, amount: int) -> None:
        transfer_id = f"{kind}:{len(self.transfers)}"
        self.transfers.append(
            Transfer(transfer_id, debit, credit, amount, CURRENCY, kind, None, self.now_ms)
        )

    def _book_settlement(self, hold: Hold, settlement: Settlement, asked: int) -> None:
        self.asked_nano += asked
        self.charged_nano += settlement.charged_nano
        self.lost_nano += settlement.loss_nano
        self.model[hold.account_id].balance_nano -= settlement.charged_nano
        self.transfers.extend(
            usage_transfers(hold.request_id, hold.account_id, CURRENCY, settlement, self.now_ms)
        )
        self.closed.append(hold)

    @staticmethod
    def _pick(holds: dict[str, Hold], pick: int) -> Hold:
        return holds[sorted(holds)[pick % len(holds)]]

    @rule(account_id=accounts, amount=st.integers(min_value=1, max_value=20_000))
    def top_up(self, account_id: str, amount: int) -> None:
        self.book.add(account_id, amount)
        self.model[account_id].balance_nano += amount
        self._transfer("topup", operator_account("cash", CURRENCY), account_id, amount)

    @rule(amount=st.integers(min_value=1, max_value=20_000))
    def adjust_down(self, amount: int) -> None:
        """A debit adjustment: may take the account below its floor."""
        self.book.add(ADJUSTED, -amount)
        self.model[ADJUSTED].balance_nano -= amount
        self._transfer("adjustment", ADJUSTED, operator_account("adjustments", CURRENCY), amount)

    @rule(account_id=accounts, amount=amounts, ttl_ms=st.integers(min_value=1, max_value=100))
    def place(self, account_id: str, amount: int, ttl_ms: int) -> None:
        self._place(account_id, amount, ttl_ms)

    @rule(account_id=accounts, off=st.integers(min_value=-2, max_value=2))
    def place_about_all_available(self, account_id: str, off: int) -> None:
        """A hold within a nano-unit or two of the available funds, either side."""
        available = self.model[account_id].available_nano(FLOORS[account_id])
        self._place(account_id, max(0, available + off), ttl_ms=50)

    def _place(self, account_id: str, amount: int, ttl_ms: int) -> None:
        """Either refused with InsufficientFunds, changing nothing, or placed."""
        self.requests += 1
        request_id = f"req_{self.requests}"
        model = self.model[account_id]
        funds = self.book.funds(account_id)
        assert funds is not None
        before = (funds.balance_nano, funds.held_nano, funds.holds_count, self.book.holds_count)
        if amount > model.available_nano(FLOORS[account_id]):
            with pytest.raises(InsufficientFunds):
                self.book.place(request_id, account_id, amount, self.now_ms + ttl_ms)
            after = (funds.balance_nano, funds.held_nano, funds.holds_count, self.book.holds_count)
            assert after == before
            return
        hold = self.book.place(request_id, account_id, amount, self.now_ms + ttl_ms)
        assert (hold.request_id, hold.account_id, hold.amount_nano) == (
            request_id,
            account_id,
            amount,
        )
        assert hold.open
        model.holds[request_id] = amount
        self.open[request_id] = hold

    @precondition(lambda self: self.open)
    @rule(pick=picks, charge=charges)
    def settle(self, pick: int, charge: int) -> None:
        """Settle an open hold; the charge may be above the hold."""
        hold = self._pick(self.open, pick)
        del self.open[hold.request_id]
        amount = self.model[hold.account_id].holds.pop(hold.request_id)
        settlement = self.book.settle(hold, charge)
        expected = min(charge, amount)
        assert settlement == Settlement(expected, charge - expected)
        assert not hold.open
        self._book_settlement(hold, settlement, charge)

    @precondition(lambda self: self.open)
    @rule(pick=picks)
    def release(self, pick: int) -> None:
        hold = self._pick(self.open, pick)
        del self.open[hold.request_id]
        del self.model[hold.account_id].holds[hold.request_id]
        self.book.release(hold)
        assert not hold.open
        self.closed.append(hold)

    @precondition(lambda self: self.closed)
    @rule(pick=picks)
    def release_again(self, pick: int) -> None:
        """Releasing a hold already closed changes nothing."""
        hold = self.closed[pick % len(self.closed)]
        self.book.release(hold)

    @rule(advance_ms=st.integers(min_value=0, max_value=60))
    def expire(self, advance_ms: int) -> None:
        self.now_ms += advance_ms
        due = {rid for rid, hold in self.open.items() if hold.expires_at_ms <= self.now_ms}
        expired = self.book.expire(self.now_ms)
        assert {hold.request_id for hold in expired} == due
        for hold in expired:
            assert not hold.open
            del self.open[hold.request_id]
            del self.model[hold.account_id].holds[hold.request_id]
            self.expired[hold.request_id] = hold

    @precondition(lambda self: self.expired)
    @rule(pick=picks, charge=charges)
    def settle_expired(self, pick: int, charge: int) -> None:
        """A late settle takes at most what is available now; the rest is a loss."""
        hold = self._pick(self.expired, pick)
        del self.expired[hold.request_id]
        available = self.model[hold.account_id].available_nano(FLOORS[hold.account_id])
        settlement = self.book.settle(hold, charge)
        expected = min(charge, max(0, available))
        assert settlement == Settlement(expected, charge - expected)
        self._book_settlement(hold, settlement, charge)

    @invariant()
    def held_is_the_sum_of_open_holds(self) -> None:
        assert self.book.held_nano == sum(hold.amount_nano for hold in self.open.values())
        assert self.book.holds_count == len(self.open)
        for account_id, model in self.model.items():
            funds = self.book.funds(account_id)
            assert funds is not None
            assert funds.held_nano == sum(model.holds.values())
            assert funds.holds_count == len(model.holds)

    @invariant()
    def balances_match_the_model(self) -> None:
        for account_id, model in self.model.items():
            funds = self.book.funds(account_id)
            assert funds is not None
            assert funds.balance_nano == model.balance_nano
            assert funds.available_nano == model.available_nano(FLOORS[account_id])

    @invariant()
    def accounts_with_only_top_ups_stay_within_their_floor(self) -> None:
        for account_id in CLEAN:
            funds = self.book.funds(account_id)
            assert funds is not None
            assert funds.available_nano >= 0
            assert funds.balance_nano >= funds.floor_nano == FLOORS[account_id]

    @invariant()
    def every_charge_asked_is_charged_or_lost(self) -> None:
        assert self.charged_nano + self.lost_nano == self.asked_nano
        assert self.charged_nano >= 0
        assert self.lost_nano >= 0

    @invariant()
    def the_ledger_sums_to_zero_and_agrees_with_the_book(self) -> None:
        ids = [transfer.id for transfer in self.transfers]
        assert len(set(ids)) == len(ids)
        deltas = balance_deltas(self.transfers)
        assert sum(deltas.values()) == 0
        for account_id in FLOORS:
            funds = self.book.funds(account_id)
            assert funds is not None
            assert deltas.get(account_id, 0) == funds.balance_nano
        revenue = deltas.get(operator_account("revenue", CURRENCY), 0)
        assert revenue == self.charged_nano + self.lost_nano
        assert deltas.get(operator_account("loss", CURRENCY), 0) == -self.lost_nano
        cached = {account: balance for account, balance in deltas.items() if ":" in account}
        for account_id in FLOORS:
            funds = self.book.funds(account_id)
            assert funds is not None
            cached[account_id] = funds.balance_nano
        floors = {account_id: FLOORS[account_id] for account_id in CLEAN}
        assert audit_balances(deltas, cached, floors) == []


# Modest, so the file runs in a few seconds; each example is up to 40 steps.
TestFundsBook = FundsMachine.TestCase
TestFundsBook.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
