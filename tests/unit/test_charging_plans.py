"""One request's money under a plan (tokenmill.retail.charging with FundsBook): included
tokens reserved with the hold, drawn first when it settles, given back when it fails, and
counted per plan month.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest

from tokenmill.errors import InsufficientFunds
from tokenmill.instants import ms_of
from tokenmill.retail.charging import Charge, ChargeTerms, close_charge, open_charge
from tokenmill.retail.funds import Funds, FundsBook, Settlement
from tokenmill.retail.plans import OveragePrice, Plan
from tokenmill.retail.rating import Price, PriceBook, PromptAllowance, PromptSize
from tokenmill.usage import TokenCounts

ACCOUNT = "acct_1"
NANO = 1_000_000_000
# The price book: 1000 nano-units per input token, 2000 per output token.
PRICES = PriceBook(
    [Price("m", "USD", 0, NANO, 2 * NANO, NANO, cache_write_input_nano_per_mtok=NANO)]
)
# The plan's overage price for "m" is flat: 3000 nano-units a token, in, cached or out.
FLAT = OveragePrice(3 * NANO, 3 * NANO, 3 * NANO, 3 * NANO)
TOKEN = 3000
ALLOWANCE = 5000
NOON = ms_of(datetime.fromisoformat("2026-11-15T12:00:00+00:00"))


def plan(included: int = ALLOWANCE, **fields: object) -> Plan:
    return Plan(
        name="p",
        currency="USD",
        included_tokens={"m": included},
        overage={"m": FLAT},
        **fields,  # type: ignore[arg-type]
    )


def terms(request_id: str = "req_1", **changes: object) -> ChargeTerms:
    """A request for model "m" whose prompt bound is exactly 1000 tokens, cap 1000."""
    made = ChargeTerms(
        request_id=request_id,
        account_id=ACCOUNT,
        model="m",
        prompt=PromptSize(text_bytes=1000),
        allowance=PromptAllowance(0, 0, 0, 0),
        context_tokens=8192,
        output_cap=1000,
        started_at_ms=NOON,
        hold_expires_at_ms=NOON + 60_000,
    )
    return dataclasses.replace(made, **changes)  # type: ignore[arg-type]


def subscribed(balance_nano: int = 0) -> FundsBook:
    funds = FundsBook()
    funds.set_account(ACCOUNT, "USD", 0, plan="p")
    funds.add(ACCOUNT, balance_nano)
    return funds


def account(funds: FundsBook) -> Funds:
    found = funds.funds(ACCOUNT)
    assert found is not None
    return found


def pool_key(plan_: Plan, at_ms: int = NOON) -> tuple[str, str, int]:
    return (ACCOUNT, "m", plan_.period_start_ms(at_ms))


def available(funds: FundsBook, plan_: Plan, at_ms: int = NOON) -> int:
    return funds.included.available(pool_key(plan_, at_ms), plan_.included_tokens["m"])


def open_(funds: FundsBook, plan_: Plan, request_id: str = "req_1", **changes: object) -> Charge:
    return open_charge(funds, PRICES, terms(request_id, **changes), {"p": plan_})


class TestZeroBalance:
    def test_an_account_without_funds_is_served_within_its_included_tokens(self) -> None:
        """Balance 0, 5000 included, 2000 at most: no 402, a hold of 0, the cap kept."""
        funds, terms_plan = subscribed(0), plan()
        charge = open_(funds, terms_plan)
        assert charge.hold is not None
        assert charge.hold.amount_nano == 0
        assert charge.hold.included_reserved == 2000
        assert charge.output_cap == 1000
        assert available(funds, terms_plan) == 3000

    def test_a_request_within_its_included_tokens_is_charged_nothing(self) -> None:
        """800 prompt + 900 completion, all included: charged 0, 1700 tokens used."""
        funds, terms_plan = subscribed(0), plan()
        charge = open_(funds, terms_plan)
        settled = close_charge(funds, charge, TokenCounts(800, 900))
        assert settled == Settlement(0, 0, 1700)
        assert account(funds).balance_nano == 0
        assert funds.included.used(pool_key(terms_plan)) == 1700
        assert available(funds, terms_plan) == ALLOWANCE - 1700

    def test_the_output_cap_is_lowered_to_the_included_tokens_left(self) -> None:
        """Balance 0, 1300 included left for a 1000-token prompt: the cap becomes 300."""
        funds, terms_plan = subscribed(0), plan(1300)
        charge = open_(funds, terms_plan)
        assert charge.output_cap == 300
        assert charge.hold is not None
        assert (charge.hold.amount_nano, charge.hold.included_reserved) == (0, 1300)

    def test_an_account_without_funds_is_refused_when_the_prompt_alone_is_not_covered(
        self,
    ) -> None:
        """Balance 0, 1000 included for a 1000-token prompt: not one output token: 402."""
        funds, terms_plan = subscribed(0), plan(1000)
        with pytest.raises(InsufficientFunds):
            open_(funds, terms_plan)
        assert funds.holds_count == 0
        assert available(funds, terms_plan) == 1000

    def test_an_account_without_funds_is_served_at_the_price_book_price_too(self) -> None:
        """No overage price (the book's: output dearer than input), all tokens included."""
        funds = subscribed(0)
        book_plan = Plan(name="p", currency="USD", included_tokens={"m": ALLOWANCE})
        charge = open_(funds, book_plan)
        assert charge.hold is not None
        assert charge.hold.amount_nano == 0
        assert charge.output_cap == 1000


class TestConcurrentHolds:
    def test_holds_never_reserve_more_included_tokens_than_the_pool_has(self) -> None:
        """Four 2000-token requests on a 5000 pool: 2000, 2000, 1000, then 0 reserved."""
        funds, terms_plan = subscribed(10 * NANO), plan()
        charges = []
        for number in range(4):
            charges.append(open_(funds, terms_plan, f"req_{number}"))
            reserved = sum(c.hold.included_reserved for c in charges if c.hold is not None)
            assert reserved <= ALLOWANCE
            assert available(funds, terms_plan) == ALLOWANCE - reserved
        holds = [c.hold for c in charges]
        assert all(hold is not None for hold in holds)
        assert [h.included_reserved for h in holds if h] == [2000, 2000, 1000, 0]
        # What each may cost: all its tokens less the included ones, at 3000 a token.
        assert [h.amount_nano for h in holds if h] == [0, 0, 1000 * TOKEN, 2000 * TOKEN]
        assert account(funds).held_nano == 3000 * TOKEN

    def test_without_funds_requests_are_served_while_the_pool_covers_them(self) -> None:
        """Balance 0, a 5000 pool: two whole requests, then 402 (1000 left: the prompt alone)."""
        funds, terms_plan = subscribed(0), plan()
        first = open_(funds, terms_plan, "req_1")
        second = open_(funds, terms_plan, "req_2")
        with pytest.raises(InsufficientFunds):
            open_(funds, terms_plan, "req_3")  # 1000 left: the prompt bound, no output
        assert [c.output_cap for c in (first, second)] == [1000, 1000]
        assert available(funds, terms_plan) == 1000
        assert funds.holds_count == 2

    def test_settling_counts_what_was_used_and_returns_the_rest(self) -> None:
        """2000 reserved, 1300 used: the pool has 3700 for the next request."""
        funds, terms_plan = subscribed(0), plan()
        charge = open_(funds, terms_plan, "req_1")
        assert close_charge(funds, charge, TokenCounts(1000, 300)) == Settlement(0, 0, 1300)
        assert funds.included.used(pool_key(terms_plan)) == 1300
        assert available(funds, terms_plan) == 3700
        following = open_(funds, terms_plan, "req_2")
        assert following.hold is not None
        assert following.hold.included_reserved == 2000
        assert available(funds, terms_plan) == 1700

    def test_past_the_included_tokens_the_overage_price_is_paid(self) -> None:
        """500 included left, 1000 + 1000 tokens used: 1500 pay 3000 nano each."""
        funds, terms_plan = subscribed(10 * NANO), plan(500)
        charge = open_(funds, terms_plan)
        settled = close_charge(funds, charge, TokenCounts(1000, 1000))
        assert settled == Settlement(1500 * TOKEN, 0, 500)
        assert account(funds).balance_nano == 10 * NANO - 1500 * TOKEN
        assert account(funds).held_nano == 0
        assert available(funds, terms_plan) == 0

    def test_a_failed_request_returns_its_whole_reservation(self) -> None:
        """close_charge with no counts: nothing used, nothing charged, the pool whole again."""
        funds, terms_plan = subscribed(10 * NANO), plan(3000)
        charge = open_(funds, terms_plan)
        assert available(funds, terms_plan) == 1000
        assert close_charge(funds, charge, None) == Settlement(0, 0, 0)
        assert funds.included.used(pool_key(terms_plan)) == 0
        assert available(funds, terms_plan) == 3000
        assert (account(funds).balance_nano, account(funds).held_nano) == (10 * NANO, 0)

    def test_an_expired_hold_settled_late_never_overdraws_the_pool(self) -> None:
        """A hold expires, another request reserves the pool, the first settles late."""
        funds, terms_plan = subscribed(0), plan(2000)
        late = open_(funds, terms_plan, "req_late")
        assert [hold.request_id for hold in funds.expire(NOON + 60_000)] == ["req_late"]
        other = open_(funds, terms_plan, "req_other")
        close_charge(funds, late, TokenCounts(1000, 1000))
        close_charge(funds, other, TokenCounts(1000, 1000))
        assert funds.included.used(pool_key(terms_plan)) <= 2000


class TestPlanMonth:
    # In Paris, December begins at 23:00Z on 30 November.
    NOVEMBER = ms_of(datetime.fromisoformat("2026-11-30T22:59:59.999+00:00"))
    DECEMBER = ms_of(datetime.fromisoformat("2026-11-30T23:00:00+00:00"))

    def test_a_request_of_the_next_month_sees_the_whole_allowance_again(self) -> None:
        """November's pool used up; a request started in December (Paris) is served free."""
        funds, terms_plan = subscribed(0), plan(2000, timezone="Europe/Paris")
        used_up = open_(funds, terms_plan, "req_1")
        assert close_charge(funds, used_up, TokenCounts(1000, 1000)).included_tokens == 2000
        with pytest.raises(InsufficientFunds):
            open_(funds, terms_plan, "req_2", started_at_ms=self.NOVEMBER)
        fresh = open_(funds, terms_plan, "req_3", started_at_ms=self.DECEMBER)
        assert fresh.hold is not None
        assert fresh.hold.pool == (ACCOUNT, "m", self.DECEMBER)
        assert fresh.hold.included_reserved == 2000
        settled = close_charge(funds, fresh, TokenCounts(1000, 1000))
        assert settled == Settlement(0, 0, 2000)
        assert funds.included.used(pool_key(terms_plan, self.NOVEMBER)) == 2000
        assert funds.included.used(pool_key(terms_plan, self.DECEMBER)) == 2000


class TestPools:
    def test_a_model_outside_the_plan_pays_without_touching_any_pool(self) -> None:
        """A plan that includes only the frontier tier: a standard-tier request pays all."""
        funds = subscribed(10 * NANO)
        frontier = Plan(name="p", currency="USD", included_tokens={"tier:frontier": 5000})
        charge = open_(funds, frontier)
        assert charge.hold is not None
        assert (charge.hold.pool, charge.hold.included_reserved) == (None, 0)
        # The book's price: 1000 prompt at 1000 nano, 500 completion at 2000.
        assert close_charge(funds, charge, TokenCounts(1000, 500)) == Settlement(2_000_000, 0, 0)

    def test_a_tier_pool_serves_the_models_of_its_tier(self) -> None:
        """The same plan, a frontier-tier request: drawn from "tier:frontier"."""
        funds = subscribed(10 * NANO)
        frontier = Plan(name="p", currency="USD", included_tokens={"tier:frontier": 5000})
        charge = open_(funds, frontier, tier="frontier")
        assert charge.hold is not None
        assert charge.hold.included_reserved == 2000
        assert charge.hold.pool == (ACCOUNT, "tier:frontier", frontier.period_start_ms(NOON))
        assert close_charge(funds, charge, TokenCounts(1000, 500)) == Settlement(0, 0, 1500)

    def test_an_account_whose_plan_is_unknown_pays_the_price_book(self) -> None:
        """The account names a plan the gateway does not have: pay as you go."""
        funds = subscribed(10 * NANO)
        charge = open_charge(funds, PRICES, terms(), {})
        assert charge.hold is not None
        assert charge.hold.pool is None
        assert close_charge(funds, charge, TokenCounts(1000, 500)) == Settlement(2_000_000, 0, 0)
