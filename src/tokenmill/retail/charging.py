"""One request's money, pure: the hold before the engine call and the settle after it.

``open_charge`` rates the request's worst case at the tariff in force when it started (the
price, and the account's plan: included tokens, time of day, batch), lowers its output cap
to what the funds and budgets can pay for, and places the hold; it raises
InsufficientFunds (402) when not even one output token is affordable, or fewer than the
least the request is worth (``output_cap_min``: a thinking budget, a tool call), before
any engine is called. ``close_charge`` rates what was produced and settles the hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tokenmill.errors import InsufficientFunds, PermissionDenied
from tokenmill.money import AMOUNT_NANO_MAX
from tokenmill.retail.budgets import over_budget
from tokenmill.retail.funds import FundsBook, Hold, Settlement, insufficient
from tokenmill.retail.plans import (
    RATIO_DEN,
    Plan,
    Tariff,
    tariff_charge,
    tariff_for,
    tariff_hold,
    tariff_output_cap,
)
from tokenmill.retail.rating import (
    Price,
    PriceBook,
    PromptAllowance,
    PromptSize,
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
    tier: str = "standard"  # the model's tier, for plans that include tokens by tier
    batch: bool = False  # service_tier "flex": a plan's batch discount applies
    output_cap_min: int = 1  # the least cap the request is worth: below it, 402, not lowered
    cap_param: str = "max_tokens"  # the request's cap field, named in a refusal


@dataclass(frozen=True)
class Charge:
    price: Price | None  # None: the model is unpriced, served free
    hold: Hold | None
    output_cap: int | None  # the cap to send upstream: the request's, lowered to the funds
    tariff: Tariff | None = None  # what it pays per token (price, plan multipliers, pool)


def open_charge(
    funds: FundsBook,
    prices: PriceBook,
    terms: ChargeTerms,
    plans: Mapping[str, Plan] | None = None,
) -> Charge:
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
    plan = (plans or {}).get(account.plan) if account.plan else None
    tariff = tariff_for(plan, price, terms.model, terms.tier, terms.started_at_ms, terms.batch)
    pool = None
    included_available = allowance = 0
    if plan is not None and tariff.pool is not None:
        pool = (terms.account_id, tariff.pool, tariff.period_start_ms)
        allowance = plan.included_tokens[tariff.pool]
        included_available = funds.included.available(pool, allowance)
    bound = prompt_bound_tokens(terms.prompt, terms.allowance, terms.context_tokens)
    subjects = (terms.account_id,) if terms.key_id is None else (terms.account_id, terms.key_id)
    # One request is one movement of the ledger, at most AMOUNT_NANO_MAX however rich the
    # account (its balance may pass 64 bits; a transfer's amount never does).
    spendable = funds_spendable = min(account.available_nano, AMOUNT_NANO_MAX)
    room = funds.budgets.headroom(subjects, terms.started_at_ms)
    if room is not None and room[0] < spendable:
        spendable = room[0]
    cap = terms.output_cap
    if cap is not None:
        if included_available or tariff.ratio != RATIO_DEN:
            cap = tariff_output_cap(tariff, bound, cap, included_available, spendable)
        else:  # no plan in play: the closed form (the search gives the same)
            affordable = output_tokens_affordable(price, bound, spendable)
            cap = cap if affordable is None else max(0, min(cap, affordable))
        if cap < terms.output_cap_min:
            least = terms.output_cap_min
            needed = tariff_hold(tariff, bound, least, min(bound + least, included_available))
            if room is not None and spendable == room[0] < funds_spendable:
                raise over_budget(room[1], needed, room[0], account.currency)
            raise insufficient(account, needed, terms.cap_param)
    included = min(bound + (cap or 0), included_available)
    amount = tariff_hold(tariff, bound, cap or 0, included)
    hold = funds.place(
        terms.request_id,
        terms.account_id,
        amount,
        terms.hold_expires_at_ms,
        subjects=subjects,
        started_at_ms=terms.started_at_ms,
        pool=pool,
        included_reserved=included if pool is not None else 0,
        included_allowance=allowance,
    )
    assert cap is None or cap >= 1
    return Charge(price, hold, cap, tariff)


def close_charge(funds: FundsBook, charge: Charge, counts: TokenCounts | None) -> Settlement:
    """Settle ``charge`` for ``counts`` (None: nothing was produced, nothing is owed)."""
    if charge.hold is None:
        return FREE
    if counts is None or charge.tariff is None:
        funds.release(charge.hold)
        return FREE
    amount, included_used = tariff_charge(charge.tariff, counts, funds.included_for(charge.hold))
    return funds.settle(charge.hold, amount, included_used)
