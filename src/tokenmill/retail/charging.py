"""One request's money, pure: the hold before the engine call and the settle after it.

``open_charge`` rates the request's worst case at the price in force when it started,
lowers its output cap to what the funds can pay for, and places the hold; it raises
InsufficientFunds (402) when not even one output token is affordable, before any engine
is called. ``close_charge`` rates what was produced and settles the hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.errors import InsufficientFunds, PermissionDenied
from tokenmill.retail.budgets import over_budget
from tokenmill.retail.funds import FundsBook, Hold, Settlement, insufficient
from tokenmill.retail.rating import (
    Price,
    PriceBook,
    PromptAllowance,
    PromptSize,
    charge_nano,
    hold_nano,
    output_tokens_affordable,
    prompt_bound_tokens,
)
from tokenmill.usage import TokenCounts

FREE = Settlement(0, 0)


@dataclass(frozen=True)
class ChargeTerms:
    """What the request path knows of a request when it opens its charge."""

    request_id: str
    account_id: str
    model: str
    prompt: PromptSize
    allowance: PromptAllowance
    context_tokens: int
    output_cap: int | None  # None: the endpoint makes no output tokens (embeddings)
    started_at_ms: int
    hold_expires_at_ms: int
    key_id: str | None = None  # with the account, whose spend budgets apply


@dataclass(frozen=True)
class Charge:
    price: Price | None  # None: the model is unpriced, served free
    hold: Hold | None
    output_cap: int | None  # the cap to send upstream: the request's, lowered to the funds


def open_charge(funds: FundsBook, prices: PriceBook, terms: ChargeTerms) -> Charge:
    if not prices.priced(terms.model):
        return Charge(None, None, terms.output_cap)
    account = funds.funds(terms.account_id)
    if account is None:
        raise InsufficientFunds("The account has no funds yet. Top it up first.")
    price = prices.at(terms.model, account.currency, terms.started_at_ms)
    if price is None:
        raise PermissionDenied(
            f"The model '{terms.model}' is not sold in {account.currency}.", param="model"
        )
    bound = prompt_bound_tokens(terms.prompt, terms.allowance, terms.context_tokens)
    subjects = (terms.account_id,) if terms.key_id is None else (terms.account_id, terms.key_id)
    spendable = account.available_nano
    room = funds.budgets.headroom(subjects, terms.started_at_ms)
    if room is not None and room[0] < spendable:
        spendable = room[0]
    cap = terms.output_cap
    if cap is not None:
        affordable = output_tokens_affordable(price, bound, spendable)
        if affordable is not None:
            if affordable < 1:
                needed = hold_nano(price, bound, 1)
                if room is not None and spendable == room[0] < account.available_nano:
                    raise over_budget(room[1], needed, room[0], account.currency)
                raise insufficient(account, needed)
            cap = min(cap, affordable)
    amount = hold_nano(price, bound, cap or 0)
    hold = funds.place(
        terms.request_id,
        terms.account_id,
        amount,
        terms.hold_expires_at_ms,
        subjects=subjects,
        started_at_ms=terms.started_at_ms,
    )
    assert cap is None or cap >= 1
    return Charge(price, hold, cap)


def close_charge(funds: FundsBook, charge: Charge, counts: TokenCounts | None) -> Settlement:
    """Settle ``charge`` for ``counts`` (None: nothing was produced, nothing is owed)."""
    if charge.hold is None:
        return FREE
    if counts is None or charge.price is None:
        funds.release(charge.hold)
        return FREE
    return funds.settle(charge.hold, charge_nano(charge.price, counts))
