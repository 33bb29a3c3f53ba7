"""The ledger's rules, pure: transfers between accounts, and the invariants they keep.

Double-entry and append-only: a transfer moves a positive amount from a debit account to
a credit account, and is never changed (a correction is another transfer). Its id is its
idempotency key: the store refuses an id twice. A ledger account's balance is its credits
minus its debits, so the balances of all accounts sum to zero.

Customer accounts are ledger accounts under their own id (``acct_...``); the operator's own
accounts are named ``<role>:<currency>`` (``revenue:USD``): cash received for top-ups,
revenue earned, grants given, losses taken, adjustments made.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tokenmill.retail.funds import Settlement

KINDS = frozenset({"topup", "usage", "refund", "grant", "adjustment", "plan_fee", "loss"})
OPERATOR_ROLES = frozenset({"cash", "revenue", "grants", "loss", "adjustments"})


def operator_account(role: str, currency: str) -> str:
    assert role in OPERATOR_ROLES
    return f"{role}:{currency}"


def is_operator_account(account: str) -> bool:
    return ":" in account


@dataclass(frozen=True)
class Transfer:
    id: str
    debit_account: str
    credit_account: str
    amount_nano: int
    currency: str
    kind: str
    reference: str | None
    created_at_ms: int

    def __post_init__(self) -> None:
        assert self.amount_nano > 0
        assert self.debit_account != self.credit_account
        assert self.kind in KINDS

    def same_as(self, other: Transfer) -> bool:
        """Whether ``other`` asks for the same movement (a replay, not a conflict)."""
        return (
            self.debit_account,
            self.credit_account,
            self.amount_nano,
            self.currency,
            self.kind,
        ) == (
            other.debit_account,
            other.credit_account,
            other.amount_nano,
            other.currency,
            other.kind,
        )


def usage_transfer_id(request_id: str) -> str:
    return f"usage:{request_id}"


def loss_transfer_id(request_id: str) -> str:
    return f"loss:{request_id}"


def usage_transfers(
    request_id: str, account_id: str, currency: str, settlement: Settlement, now_ms: int
) -> tuple[Transfer, ...]:
    """The postings of one settled request: the customer's charge, and any loss."""
    revenue = operator_account("revenue", currency)
    transfers = []
    if settlement.charged_nano:
        transfers.append(
            Transfer(
                usage_transfer_id(request_id),
                account_id,
                revenue,
                settlement.charged_nano,
                currency,
                "usage",
                request_id,
                now_ms,
            )
        )
    if settlement.loss_nano:
        transfers.append(
            Transfer(
                loss_transfer_id(request_id),
                operator_account("loss", currency),
                revenue,
                settlement.loss_nano,
                currency,
                "loss",
                request_id,
                now_ms,
            )
        )
    return tuple(transfers)


def balance_deltas(transfers: Iterable[Transfer]) -> dict[str, int]:
    """How ``transfers`` change each account's balance (credits minus debits)."""
    deltas: dict[str, int] = {}
    for transfer in transfers:
        amount = transfer.amount_nano
        deltas[transfer.debit_account] = deltas.get(transfer.debit_account, 0) - amount
        deltas[transfer.credit_account] = deltas.get(transfer.credit_account, 0) + amount
    assert sum(deltas.values()) == 0
    return deltas


@dataclass(frozen=True)
class Breach:
    """One broken invariant found by the audit."""

    invariant: str  # I1, I2, I3, I7, I9 ...
    subject: str
    detail: str


def audit_balances(
    recomputed: dict[str, int], cached: dict[str, int], floors: dict[str, int]
) -> list[Breach]:
    """Check balances recomputed from transfers against the cached ones and the floors.

    I2: all balances sum to zero; I7: cached = recomputed; I3: no customer below its floor.
    """
    breaches = []
    total = sum(recomputed.values())
    if total != 0:
        breaches.append(Breach("I2", "ledger", f"balances sum to {total}, not 0"))
    for account in sorted(set(recomputed) | set(cached)):
        derived, stored = recomputed.get(account, 0), cached.get(account, 0)
        if derived != stored:
            breaches.append(
                Breach("I7", account, f"cached balance {stored} != {derived} from transfers")
            )
        floor = floors.get(account)
        if floor is not None and derived < floor:
            breaches.append(Breach("I3", account, f"balance {derived} is below its floor {floor}"))
    return breaches
