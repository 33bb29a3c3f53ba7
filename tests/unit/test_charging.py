"""One request's money (tokenmill.retail.charging): the hold before, the settle after."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import counts_within, prices
from tokenmill.errors import InsufficientFunds, PermissionDenied
from tokenmill.money import format_amount, parse_amount
from tokenmill.retail.charging import ChargeTerms, close_charge, open_charge
from tokenmill.retail.funds import Funds, FundsBook, Settlement
from tokenmill.retail.rating import Price, PriceBook, PromptAllowance, PromptSize, charge_nano
from tokenmill.usage import TokenCounts

ACCOUNT = "acct_1"
# 0.20 per million input tokens (1000 prompt tokens: 200_000 nano), 0.80 per million output
# tokens (800 nano each).
PRICE = Price(
    model="m",
    currency="USD",
    effective_from_ms=0,
    input_nano_per_mtok=parse_amount("0.20"),
    output_nano_per_mtok=parse_amount("0.80"),
    cached_input_nano_per_mtok=parse_amount("0.05"),
    cache_write_input_nano_per_mtok=parse_amount("0.20"),
)
PROMPT_HOLD = 200_000
TOKEN = 800


def terms(**changes: object) -> ChargeTerms:
    """A request for model "m" whose prompt bound is exactly 1000 tokens, cap 4096."""
    made = ChargeTerms(
        request_id="req_1",
        account_id=ACCOUNT,
        model="m",
        prompt=PromptSize(text_bytes=1000),
        allowance=PromptAllowance(0, 0, 0, 0),
        context_tokens=8192,
        output_cap=4096,
        started_at_ms=10_000,
        hold_expires_at_ms=70_000,
    )
    return dataclasses.replace(made, **changes)  # type: ignore[arg-type]


def book_with(balance_nano: int, *, floor_nano: int = 0, currency: str = "USD") -> FundsBook:
    funds = FundsBook()
    funds.set_account(ACCOUNT, currency, floor_nano)
    funds.add(ACCOUNT, balance_nano)
    return funds


def account(funds: FundsBook) -> Funds:
    found = funds.funds(ACCOUNT)
    assert found is not None
    return found


def snapshot(funds: FundsBook) -> tuple[int, int, int, int]:
    found = account(funds)
    return found.balance_nano, found.held_nano, found.holds_count, funds.holds_count


class TestOpenCharge:
    def test_a_request_with_funds_for_its_whole_cap_keeps_its_cap(self) -> None:
        """Enough funds: the cap is unchanged and the hold is prompt plus the whole cap."""
        funds = book_with(10**9)
        charge = open_charge(funds, PriceBook([PRICE]), terms(output_cap=100))
        assert charge.output_cap == 100
        assert charge.price is PRICE
        assert charge.hold is not None
        assert charge.hold.amount_nano == PROMPT_HOLD + 100 * TOKEN
        assert charge.hold.expires_at_ms == 70_000
        assert account(funds).held_nano == PROMPT_HOLD + 100 * TOKEN

    def test_the_output_cap_is_lowered_to_what_the_funds_pay_for(self) -> None:
        """1_000_000 available: 200_000 for the prompt, 800_000 for 1000 output tokens."""
        funds = book_with(1_000_000)
        charge = open_charge(funds, PriceBook([PRICE]), terms(output_cap=4096))
        assert charge.output_cap == 1000
        assert charge.hold is not None
        assert charge.hold.amount_nano == 1_000_000
        assert account(funds).available_nano == 0

    def test_funds_for_exactly_one_output_token_let_the_request_run(self) -> None:
        """The prompt and one token: cap 1."""
        funds = book_with(PROMPT_HOLD + TOKEN)
        charge = open_charge(funds, PriceBook([PRICE]), terms())
        assert charge.output_cap == 1
        assert account(funds).held_nano == PROMPT_HOLD + TOKEN

    def test_a_postpaid_account_may_hold_up_to_its_credit_limit(self) -> None:
        """Balance 0 with a credit limit of 1_000_000 affords 1000 output tokens."""
        funds = book_with(0, floor_nano=-1_000_000)
        charge = open_charge(funds, PriceBook([PRICE]), terms())
        assert charge.output_cap == 1000
        assert account(funds).held_nano == 1_000_000

    @pytest.mark.parametrize("balance", [0, PROMPT_HOLD - 1, PROMPT_HOLD, PROMPT_HOLD + TOKEN - 1])
    def test_not_one_affordable_output_token_is_refused_changing_nothing(
        self, balance: int
    ) -> None:
        """402 insufficient_quota before any engine call, and no hold is left behind."""
        funds = book_with(balance)
        before = snapshot(funds)
        with pytest.raises(InsufficientFunds) as caught:
            open_charge(funds, PriceBook([PRICE]), terms())
        assert caught.value.http_status == 402
        assert caught.value.code == "insufficient_quota"
        assert snapshot(funds) == before
        assert account(funds).held_nano == 0

    def test_a_request_worth_no_less_than_its_least_cap_is_refused_rather_than_lowered(
        self,
    ) -> None:
        """Funds for 1000 output tokens: a request whose least useful cap is 1001 (a
        thinking budget of 1000, or a tool call it must not cut) gets 402 and holds
        nothing; one whose least cap is 1000 runs with cap 1000."""
        funds = book_with(1_000_000)
        before = snapshot(funds)
        with pytest.raises(InsufficientFunds) as caught:
            open_charge(funds, PriceBook([PRICE]), terms(output_cap_min=1001))
        assert format_amount(PROMPT_HOLD + 1001 * TOKEN) in caught.value.message
        assert snapshot(funds) == before
        charge = open_charge(funds, PriceBook([PRICE]), terms(output_cap_min=1000))
        assert charge.output_cap == 1000

    def test_the_refusal_says_what_one_output_token_would_hold(self) -> None:
        """The message names the smallest hold and the funds available."""
        funds = book_with(1_000)
        with pytest.raises(InsufficientFunds) as caught:
            open_charge(funds, PriceBook([PRICE]), terms())
        assert "0.0002008 USD" in caught.value.message
        assert "0.000001 USD" in caught.value.message

    def test_an_account_unknown_to_the_funds_book_is_refused(self) -> None:
        """A priced model needs an account with funds."""
        with pytest.raises(InsufficientFunds):
            open_charge(FundsBook(), PriceBook([PRICE]), terms())

    def test_an_unpriced_model_is_served_free_with_no_hold(self) -> None:
        """No price for the model: no hold, the cap as asked, even with no account at all."""
        funds = FundsBook()
        charge = open_charge(funds, PriceBook([PRICE]), terms(model="free-model"))
        assert charge.price is None
        assert charge.hold is None
        assert charge.output_cap == 4096
        assert funds.held_nano == 0

    def test_a_model_priced_at_zero_runs_on_an_empty_account(self) -> None:
        """A free price holds nothing and does not lower the cap."""
        zero = dataclasses.replace(
            PRICE,
            input_nano_per_mtok=0,
            output_nano_per_mtok=0,
            cached_input_nano_per_mtok=0,
            cache_write_input_nano_per_mtok=0,
        )
        funds = book_with(0)
        charge = open_charge(funds, PriceBook([zero]), terms())
        assert charge.output_cap == 4096
        assert charge.hold is not None
        assert charge.hold.amount_nano == 0

    def test_a_model_priced_only_in_another_currency_is_refused(self) -> None:
        """Account in EUR, model sold in USD: 403 naming the model, and nothing held."""
        funds = book_with(10**9, currency="EUR")
        with pytest.raises(PermissionDenied) as caught:
            open_charge(funds, PriceBook([PRICE]), terms())
        assert caught.value.http_status == 403
        assert caught.value.param == "model"
        assert account(funds).held_nano == 0
        assert funds.holds_count == 0

    def test_the_price_in_force_when_the_request_started_is_used(self) -> None:
        """A price effective 1 ms after the start does not apply to the request."""
        dearer = dataclasses.replace(
            PRICE, effective_from_ms=10_001, input_nano_per_mtok=parse_amount("2.00")
        )
        funds = book_with(10**9)
        charge = open_charge(funds, PriceBook([PRICE, dearer]), terms(output_cap=10))
        assert charge.price is PRICE
        assert charge.hold is not None
        assert charge.hold.amount_nano == PROMPT_HOLD + 10 * TOKEN

    def test_a_request_without_output_holds_its_prompt_bound(self) -> None:
        """Embeddings (no output cap): the hold is the prompt bound alone."""
        funds = book_with(10**9)
        charge = open_charge(funds, PriceBook([PRICE]), terms(output_cap=None))
        assert charge.output_cap is None
        assert charge.hold is not None
        assert charge.hold.amount_nano == PROMPT_HOLD

    def test_a_request_without_output_is_refused_when_its_prompt_is_unaffordable(self) -> None:
        """Embeddings too are refused before the engine runs, holding nothing."""
        funds = book_with(PROMPT_HOLD - 1)
        with pytest.raises(InsufficientFunds):
            open_charge(funds, PriceBook([PRICE]), terms(output_cap=None))
        assert account(funds).held_nano == 0


class TestCloseCharge:
    def test_nothing_produced_releases_the_whole_hold(self) -> None:
        """counts None: nothing owed, the hold given back, the balance untouched."""
        funds = book_with(10**9)
        charge = open_charge(funds, PriceBook([PRICE]), terms())
        settlement = close_charge(funds, charge, None)
        assert settlement == Settlement(0, 0)
        assert snapshot(funds) == (10**9, 0, 0, 0)

    def test_usage_within_the_hold_is_charged_and_the_rest_released(self) -> None:
        """1000 prompt + 500 completion tokens: exactly 600_000 charged, no loss."""
        funds = book_with(10**9)
        charge = open_charge(funds, PriceBook([PRICE]), terms())
        settlement = close_charge(funds, charge, TokenCounts(1000, 500))
        assert settlement == Settlement(charged_nano=600_000, loss_nano=0)
        assert snapshot(funds) == (10**9 - 600_000, 0, 0, 0)

    def test_a_charge_above_the_hold_charges_the_hold_and_books_the_excess_as_loss(
        self,
    ) -> None:
        """Usage past the bound: the customer pays exactly the hold, the operator the rest."""
        funds = book_with(10**9)
        charge = open_charge(funds, PriceBook([PRICE]), terms(output_cap=100))
        assert charge.hold is not None
        held = charge.hold.amount_nano
        used = TokenCounts(prompt_tokens=5000, completion_tokens=100)
        asked = charge_nano(PRICE, used)
        settlement = close_charge(funds, charge, used)
        assert settlement.charged_nano == held
        assert settlement.loss_nano == asked - held == 800_000
        assert settlement.total_nano == asked
        assert snapshot(funds) == (10**9 - held, 0, 0, 0)

    def test_an_unpriced_charge_settles_free(self) -> None:
        """No hold: nothing charged whatever was used."""
        funds = FundsBook()
        charge = open_charge(funds, PriceBook(), terms())
        assert close_charge(funds, charge, TokenCounts(10**6, 10**6)) == Settlement(0, 0)

    def test_a_charge_whose_hold_expired_takes_only_what_is_available(self) -> None:
        """After expiry the settle takes what the account has now; the rest is a loss."""
        funds = book_with(PROMPT_HOLD + TOKEN)
        charge = open_charge(funds, PriceBook([PRICE]), terms())
        expired = funds.expire(now_ms=70_000)
        assert [hold.request_id for hold in expired] == ["req_1"]
        funds.add(ACCOUNT, -100_000)  # a debit adjustment landed meanwhile
        settlement = close_charge(funds, charge, TokenCounts(1000, 1))
        assert settlement == Settlement(charged_nano=100_800, loss_nano=100_000)
        assert snapshot(funds) == (0, 0, 0, 0)


# Prompt caching priced as vendors do: reads at a tenth of the input price, writes dearer.
CACHING = dataclasses.replace(
    PRICE,
    cached_input_nano_per_mtok=parse_amount("0.02"),
    cache_write_input_nano_per_mtok=parse_amount("0.25"),
)


class TestCachingWithinTheHold:
    def test_a_prompt_written_whole_to_the_cache_is_charged_its_hold_and_no_loss(self) -> None:
        """Writes at 0.25 above input at 0.20: the hold prices the prompt at 0.25, so the
        dearest prompt of the bound (1000 tokens, all written) settles at the hold."""
        funds = book_with(10**9)
        charge = open_charge(funds, PriceBook([CACHING]), terms(output_cap=100))
        assert charge.hold is not None
        assert charge.hold.amount_nano == 250_000 + 100 * TOKEN
        written = TokenCounts(1000, 100, cache_write_tokens=1000)
        settlement = close_charge(funds, charge, written)
        assert settlement == Settlement(charged_nano=charge.hold.amount_nano, loss_nano=0)

    def test_funds_lower_the_cap_with_the_prompt_held_at_the_write_price(self) -> None:
        """1_000_000 available: 250_000 for a prompt of cache writes, 750_000 for 937 output
        tokens at 800 each."""
        funds = book_with(1_000_000)
        charge = open_charge(funds, PriceBook([CACHING]), terms())
        assert charge.output_cap == 937

    @given(
        prices(),
        st.integers(min_value=0, max_value=10**12),
        st.integers(min_value=0, max_value=2000),
        st.data(),
    )
    def test_no_mix_of_cache_reads_writes_and_reasoning_settles_above_the_hold(
        self, price: Price, balance: int, text_bytes: int, data: st.DataObject
    ) -> None:
        """Any price, any funds, any usage within the prompt bound and the output cap: the
        settle charges at most the hold and books no loss, however the prompt splits."""
        funds = book_with(balance)
        asked = terms(
            prompt=PromptSize(text_bytes=text_bytes),
            output_cap=500,
            started_at_ms=price.effective_from_ms,
            hold_expires_at_ms=price.effective_from_ms + 60_000,
        )
        try:
            charge = open_charge(funds, PriceBook([price]), asked)
        except InsufficientFunds:
            return
        assert charge.hold is not None
        counts = data.draw(counts_within(text_bytes, charge.output_cap or 0), label="counts")
        settlement = close_charge(funds, charge, counts)
        assert settlement.loss_nano == 0
        assert settlement.charged_nano <= charge.hold.amount_nano
        assert settlement.charged_nano == charge_nano(price, counts)
