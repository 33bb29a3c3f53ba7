"""Rating (tokenmill.retail.rating): what a request costs, and the most it can cost."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import counts_within, prices, token_totals
from tokenmill.money import TOKENS_PER_PRICE, parse_amount
from tokenmill.retail.rating import (
    Price,
    PriceBook,
    PromptAllowance,
    PromptSize,
    charge_nano,
    cost_micro,
    fresh_input_tokens,
    hold_nano,
    output_tokens_affordable,
    price_at,
    prompt_bound_tokens,
)
from tokenmill.usage import TokenCounts

# 0.20 per million input tokens, 0.80 per million output tokens, 0.05 per million cache reads,
# 0.20 (the input price) per million cache writes.
PRICE = Price(
    model="m",
    currency="USD",
    effective_from_ms=0,
    input_nano_per_mtok=parse_amount("0.20"),
    output_nano_per_mtok=parse_amount("0.80"),
    cached_input_nano_per_mtok=parse_amount("0.05"),
    cache_write_input_nano_per_mtok=parse_amount("0.20"),
)
NO_ALLOWANCE = PromptAllowance(0, 0, 0, 0)


def priced(**changes: int) -> Price:
    return dataclasses.replace(PRICE, **changes)


PRICE_FIELDS = (
    "input_nano_per_mtok",
    "output_nano_per_mtok",
    "cached_input_nano_per_mtok",
    "cache_write_input_nano_per_mtok",
    "request_fee_nano",
)
ZERO = priced(**{field: 0 for field in PRICE_FIELDS})
# Prompt caching priced as vendors do: reads at a tenth of the input, writes at 1.25 times.
CACHING = priced(
    cached_input_nano_per_mtok=parse_amount("0.02"),
    cache_write_input_nano_per_mtok=parse_amount("0.25"),
)


class TestPrice:
    def test_a_price_of_all_zeros_is_free(self) -> None:
        """No token price and no fee: free."""
        assert ZERO.free

    @pytest.mark.parametrize("field", PRICE_FIELDS)
    def test_any_one_non_zero_part_makes_a_price_not_free(self, field: str) -> None:
        """A fee alone, or any one token price alone (a cache write's too), is a price."""
        assert not dataclasses.replace(ZERO, **{field: 1}).free

    def test_a_price_without_its_cache_write_price_is_refused(self) -> None:
        """The cache-write price is keyword-only and required: a price written positionally
        as before it existed (its seventh value the fee) cannot be made."""
        with pytest.raises(TypeError):
            Price("m", "USD", 0, 1, 1, 1, 7)  # type: ignore[call-arg]

    @pytest.mark.parametrize("field", PRICE_FIELDS)
    def test_negative_prices_are_refused(self, field: str) -> None:
        """No part of a price may be below zero."""
        with pytest.raises(AssertionError):
            priced(**{field: -1})


class TestCharge:
    def test_a_thousand_prompt_and_five_hundred_completion_tokens_cost_exactly(self) -> None:
        """1000 x 0.20/M + 500 x 0.80/M = 0.0006, i.e. 600_000 nano-units, nothing rounded."""
        counts = TokenCounts(prompt_tokens=1000, completion_tokens=500)
        assert cost_micro(PRICE, counts) == 600_000 * TOKENS_PER_PRICE
        assert charge_nano(PRICE, counts) == 600_000

    def test_a_request_costing_four_tenths_of_a_nano_unit_pays_one(self) -> None:
        """One token at 0.0004 per million tokens is 0.4 nano-units, rounded up to 1."""
        price = priced(input_nano_per_mtok=400_000)
        counts = TokenCounts(prompt_tokens=1, completion_tokens=0)
        assert cost_micro(price, counts) == 400_000
        assert charge_nano(price, counts) == 1

    def test_a_millionth_past_a_whole_nano_unit_rounds_up(self) -> None:
        """1.000001 nano-units are charged as 2."""
        price = priced(input_nano_per_mtok=1_000_001, output_nano_per_mtok=0)
        assert charge_nano(price, TokenCounts(1, 0)) == 2

    def test_nothing_used_and_no_fee_costs_nothing(self) -> None:
        """Zero tokens at any token price is zero."""
        assert charge_nano(PRICE, TokenCounts(0, 0)) == 0

    def test_cached_prompt_tokens_are_priced_at_the_cached_price(self) -> None:
        """1000 prompt tokens of which 600 cached: 400 x 0.20/M + 600 x 0.05/M = 110_000."""
        counts = TokenCounts(prompt_tokens=1000, completion_tokens=0, cached_tokens=600)
        assert charge_nano(PRICE, counts) == 110_000

    def test_a_request_with_cache_writes_pays_the_write_price_for_them(self) -> None:
        """1000 prompt tokens: 300 written, 500 read, 200 fresh; 100 output:
        200 x 0.20/M + 500 x 0.02/M + 300 x 0.25/M + 100 x 0.80/M = 205_000."""
        counts = TokenCounts(1000, 100, cached_tokens=500, cache_write_tokens=300)
        assert cost_micro(CACHING, counts) == 205_000 * TOKENS_PER_PRICE
        assert charge_nano(CACHING, counts) == 205_000

    def test_a_whole_prompt_written_to_the_cache_pays_only_the_write_price(self) -> None:
        """1000 prompt tokens, all written: 1000 x 0.25/M = 250_000, no fresh input."""
        counts = TokenCounts(1000, 0, cache_write_tokens=1000)
        assert charge_nano(CACHING, counts) == 250_000

    def test_reasoning_tokens_are_charged_once_as_output(self) -> None:
        """500 completion tokens of which 300 reasoning cost what 500 output tokens cost:
        the reasoning tokens are part of the completion, never added to it."""
        reasoning = TokenCounts(1000, 500, reasoning_tokens=300)
        assert charge_nano(PRICE, reasoning) == 600_000
        assert charge_nano(PRICE, reasoning) == charge_nano(PRICE, TokenCounts(1000, 500))

    @given(prices(), counts_within())
    def test_reasoning_never_changes_the_charge(self, price: Price, counts: TokenCounts) -> None:
        """Whatever share of the completion is reasoning, the charge is the same."""
        plain = dataclasses.replace(counts, reasoning_tokens=0)
        assert charge_nano(price, counts) == charge_nano(price, plain)

    def test_the_request_fee_is_added_once_per_request(self) -> None:
        """A fee of 0.001 is added once, not per token."""
        price = priced(request_fee_nano=parse_amount("0.001"))
        assert charge_nano(price, TokenCounts(0, 0)) == 1_000_000
        assert charge_nano(price, TokenCounts(1000, 500)) == 1_600_000

    @given(prices(), counts_within())
    def test_the_charge_is_never_negative(self, price: Price, counts: TokenCounts) -> None:
        """Whatever the price and the usage, nothing is paid back."""
        assert charge_nano(price, counts) >= 0

    @given(prices(), counts_within())
    def test_the_charge_is_rounded_up_once_by_less_than_one_nano_unit(
        self, price: Price, counts: TokenCounts
    ) -> None:
        """charge x 1e6 - exact cost is in [0, 1e6): one rounding, up, at the very end."""
        excess = charge_nano(price, counts) * TOKENS_PER_PRICE - cost_micro(price, counts)
        assert 0 <= excess < TOKENS_PER_PRICE

    @given(prices(), counts_within(), token_totals)
    def test_more_prompt_tokens_never_cost_less(
        self, price: Price, counts: TokenCounts, more: int
    ) -> None:
        """Monotone in the prompt count, the cached count held."""
        larger = dataclasses.replace(counts, prompt_tokens=counts.prompt_tokens + more)
        assert charge_nano(price, larger) >= charge_nano(price, counts)

    @given(prices(), counts_within(), token_totals)
    def test_more_completion_tokens_never_cost_less(
        self, price: Price, counts: TokenCounts, more: int
    ) -> None:
        """Monotone in the completion count."""
        larger = dataclasses.replace(counts, completion_tokens=counts.completion_tokens + more)
        assert charge_nano(price, larger) >= charge_nano(price, counts)

    @given(prices(), counts_within(), token_totals)
    def test_more_cached_tokens_move_the_charge_toward_the_cached_price(
        self, price: Price, counts: TokenCounts, more: int
    ) -> None:
        """More cached tokens never cost more when cached is cheaper, nor less when dearer."""
        more = min(more, fresh_input_tokens(counts))  # fresh prompt tokens read instead
        larger = dataclasses.replace(counts, cached_tokens=counts.cached_tokens + more)
        before, after = charge_nano(price, counts), charge_nano(price, larger)
        if price.cached_input_nano_per_mtok <= price.input_nano_per_mtok:
            assert after <= before
        else:
            assert after >= before

    @given(prices(), counts_within(), token_totals)
    def test_more_cache_writes_move_the_charge_toward_the_write_price(
        self, price: Price, counts: TokenCounts, more: int
    ) -> None:
        """Fresh prompt tokens written to the cache instead never cost more when writing is
        cheaper than input, nor less when it is dearer."""
        more = min(more, fresh_input_tokens(counts))
        larger = dataclasses.replace(counts, cache_write_tokens=counts.cache_write_tokens + more)
        before, after = charge_nano(price, counts), charge_nano(price, larger)
        if price.cache_write_input_nano_per_mtok <= price.input_nano_per_mtok:
            assert after <= before
        else:
            assert after >= before


class TestPromptBound:
    def test_the_bound_is_bytes_plus_every_allowance(self) -> None:
        """1000 bytes + 32 template + 3 x 8 messages + 2 x 16 tools + 1 x 4096 image."""
        size = PromptSize(text_bytes=1000, messages_count=3, tools_count=2, images_count=1)
        assert prompt_bound_tokens(size, PromptAllowance(), 100_000) == 5184

    def test_a_model_allowance_replaces_the_default(self) -> None:
        """Per-model allowances are used as given."""
        size = PromptSize(text_bytes=10, messages_count=2, tools_count=1, images_count=3)
        allowance = PromptAllowance(
            template_tokens=1, tokens_per_message=2, tokens_per_tool=3, tokens_per_image=4
        )
        assert prompt_bound_tokens(size, allowance, 100_000) == 10 + 1 + 4 + 3 + 12

    def test_the_bound_never_passes_the_context(self) -> None:
        """A prompt longer than the context is refused by the engine, so the bound stops there."""
        size = PromptSize(text_bytes=1_000_000, messages_count=5)
        assert prompt_bound_tokens(size, PromptAllowance(), 4096) == 4096

    @given(
        st.builds(
            PromptSize,
            text_bytes=token_totals,
            messages_count=st.integers(0, 500),
            tools_count=st.integers(0, 100),
            images_count=st.integers(0, 20),
        ),
        st.integers(min_value=1, max_value=10**6),
    )
    def test_the_bound_is_within_the_context_and_covers_the_bytes(
        self, size: PromptSize, context: int
    ) -> None:
        """min(bytes + allowances, context): at least the bytes unless the context is less."""
        bound = prompt_bound_tokens(size, PromptAllowance(), context)
        assert bound <= context
        assert bound >= min(size.text_bytes, context)


class TestHold:
    def test_the_hold_is_the_prompt_bound_and_the_whole_output_cap(self) -> None:
        """1000 x 0.20/M + 500 x 0.80/M = 600_000."""
        assert hold_nano(PRICE, 1000, 500) == 600_000

    def test_the_hold_takes_the_higher_of_the_input_prices(self) -> None:
        """A cached price above the input price is the one held for every prompt token."""
        dear_cache = priced(cached_input_nano_per_mtok=parse_amount("0.30"))
        assert hold_nano(dear_cache, 1000, 500) == 700_000

    def test_the_hold_takes_the_cache_write_price_when_it_is_the_dearest(self) -> None:
        """Writes at 0.25 per million above input at 0.20: every prompt token is held at 0.25,
        1000 x 0.25/M + 500 x 0.80/M = 650_000."""
        assert hold_nano(CACHING, 1000, 500) == 650_000

    def test_a_prompt_written_whole_to_the_cache_settles_at_its_hold(self) -> None:
        """The dearest usage of a 1000-token bound with writes dearer than input is the whole
        prompt written: it costs the hold exactly, so it never settles above it."""
        written = TokenCounts(1000, 500, cache_write_tokens=1000)
        assert charge_nano(CACHING, written) == hold_nano(CACHING, 1000, 500)

    def test_the_affordable_output_leaves_room_for_a_prompt_of_cache_writes(self) -> None:
        """1_000_000 available, the prompt held at the write price (250_000): 750_000 pays
        937 output tokens at 800 each, not the 1000 an input-priced prompt would leave."""
        assert output_tokens_affordable(CACHING, 1000, 1_000_000) == 937

    def test_the_hold_includes_the_request_fee(self) -> None:
        """The fee is held too."""
        assert hold_nano(priced(request_fee_nano=7), 1000, 500) == 600_007

    @given(prices(), st.data())
    def test_the_hold_covers_any_usage_within_its_bounds(
        self, price: Price, data: st.DataObject
    ) -> None:
        """hold(bound, cap) >= charge of prompt <= bound, completion <= cap, however the prompt
        splits into fresh input, cache reads and cache writes."""
        bound = data.draw(token_totals, label="bound")
        cap = data.draw(token_totals, label="cap")
        counts = data.draw(counts_within(bound, cap), label="counts")
        assert hold_nano(price, bound, cap) >= charge_nano(price, counts)

    @given(prices(), token_totals, token_totals)
    def test_the_hold_is_reached_by_the_worst_usage(
        self, price: Price, bound: int, cap: int
    ) -> None:
        """The hold is not padded: the dearest usage in bounds costs exactly the hold (the
        whole prompt of the dearest input kind)."""
        dearest = price.input_nano_per_mtok_max
        if price.cache_write_input_nano_per_mtok == dearest:
            worst = TokenCounts(bound, cap, cache_write_tokens=bound)
        elif price.cached_input_nano_per_mtok == dearest:
            worst = TokenCounts(bound, cap, cached_tokens=bound)
        else:
            worst = TokenCounts(bound, cap)
        assert hold_nano(price, bound, cap) == charge_nano(price, worst)


class TestOutputTokensAffordable:
    def test_the_funds_left_after_the_prompt_pay_for_whole_output_tokens(self) -> None:
        """1_000_000 less 200_000 for the prompt leaves 800_000: 1000 tokens at 800 each."""
        assert output_tokens_affordable(PRICE, 1000, 1_000_000) == 1000
        assert output_tokens_affordable(PRICE, 1000, 1_000_799) == 1000
        assert output_tokens_affordable(PRICE, 1000, 1_000_800) == 1001

    def test_funds_short_of_the_prompt_afford_no_output(self) -> None:
        """Less than the prompt bound costs: zero or fewer output tokens."""
        affordable = output_tokens_affordable(PRICE, 1000, 199_999)
        assert affordable is not None
        assert affordable < 1

    def test_free_output_is_not_limited_by_funds(self) -> None:
        """Output at zero: no limit (None) once the prompt is paid for."""
        free_output = priced(output_nano_per_mtok=0)
        assert output_tokens_affordable(free_output, 1000, 200_000) is None

    def test_free_output_with_an_unaffordable_prompt_affords_nothing(self) -> None:
        """Output at zero does not help when the prompt itself is not covered."""
        free_output = priced(output_nano_per_mtok=0)
        assert output_tokens_affordable(free_output, 1000, 199_999) == 0

    @given(
        prices(output_free=False),
        token_totals,
        st.integers(min_value=-(10**12), max_value=10**12),
    )
    def test_the_hold_for_the_affordable_tokens_fits_and_one_more_does_not(
        self, price: Price, bound: int, available: int
    ) -> None:
        """hold(n) <= available < hold(n + 1); n < 0 only when not even the prompt fits."""
        affordable = output_tokens_affordable(price, bound, available)
        assert affordable is not None
        if affordable >= 0:
            assert hold_nano(price, bound, affordable) <= available
            assert hold_nano(price, bound, affordable + 1) > available
        else:
            assert hold_nano(price, bound, 0) > available

    @given(prices(output_free=True), token_totals, st.integers(-(10**12), 10**12))
    def test_free_output_is_unlimited_exactly_when_the_prompt_hold_fits(
        self, price: Price, bound: int, available: int
    ) -> None:
        """None when hold(bound, 0) <= available, else 0."""
        expected = None if hold_nano(price, bound, 0) <= available else 0
        assert output_tokens_affordable(price, bound, available) == expected


def at(effective_from_ms: int, input_nano_per_mtok: int, **changes: object) -> Price:
    return dataclasses.replace(
        PRICE,
        effective_from_ms=effective_from_ms,
        input_nano_per_mtok=input_nano_per_mtok,
        **changes,  # type: ignore[arg-type]
    )


OLD = at(1_000, 100)
NEW = at(2_000, 200)


class TestPriceAt:
    def test_exactly_at_its_effective_instant_the_new_price_applies(self) -> None:
        """effective_from_ms is inclusive."""
        assert price_at([OLD, NEW], 2_000) is NEW

    def test_one_millisecond_before_the_old_price_still_applies(self) -> None:
        """The old price holds up to the instant before."""
        assert price_at([OLD, NEW], 1_999) is OLD

    def test_long_after_the_newest_price_applies(self) -> None:
        """The latest effective price wins."""
        assert price_at([OLD, NEW], 10**12) is NEW

    def test_before_the_first_price_there_is_none(self) -> None:
        """A model not yet priced at that instant has no price."""
        assert price_at([OLD, NEW], 999) is None
        assert price_at([], 5_000) is None

    @given(st.lists(st.integers(0, 10_000), min_size=1, max_size=6), st.integers(-10, 10_010))
    def test_the_price_in_force_is_the_latest_not_after_the_instant(
        self, starts: list[int], instant: int
    ) -> None:
        """Among sorted prices, the one with the greatest effective_from_ms <= instant."""
        listed = [at(start, index) for index, start in enumerate(sorted(starts))]
        found = price_at(listed, instant)
        started = [price for price in listed if price.effective_from_ms <= instant]
        if not started:
            assert found is None
        else:
            assert found is not None
            assert found.effective_from_ms == max(p.effective_from_ms for p in started)


class TestPriceBook:
    def test_prices_given_in_any_order_are_found_by_instant(self) -> None:
        """The book sorts each model's prices by effective_from_ms."""
        book = PriceBook([NEW, OLD])
        assert book.at("m", "USD", 1_500) is OLD
        assert book.at("m", "USD", 2_000) is NEW

    def test_prices_are_kept_per_currency(self) -> None:
        """A price in EUR is no price in USD, though the model is priced."""
        book = PriceBook([at(0, 100, currency="EUR")])
        assert book.priced("m")
        assert book.at("m", "USD", 5) is None
        assert book.at("m", "EUR", 5) is not None

    def test_a_model_without_prices_is_not_priced(self) -> None:
        """Unpriced models are served free."""
        book = PriceBook([OLD])
        assert not book.priced("other")
        assert book.at("other", "USD", 5_000) is None

    def test_replacing_a_model_swaps_all_its_prices_and_keeps_the_others(self) -> None:
        """replace_model drops every old price of the model in every currency."""
        other = at(0, 7, model="other")
        book = PriceBook([OLD, NEW, at(0, 9, currency="EUR"), other])
        latest = at(3_000, 300)
        book.replace_model("m", [latest])
        assert book.at("m", "USD", 2_500) is None
        assert book.at("m", "USD", 3_000) is latest
        assert book.at("m", "EUR", 3_000) is None
        assert book.at("other", "USD", 0) is other
        assert sorted(book.all(), key=lambda p: p.model) == [latest, other]

    def test_replacing_a_model_sorts_its_new_prices(self) -> None:
        """New prices given newest first are still found by instant."""
        book = PriceBook()
        book.replace_model("m", [NEW, OLD])
        assert book.at("m", "USD", 1_500) is OLD
        assert book.at("m", "USD", 2_500) is NEW

    def test_replacing_a_model_with_no_prices_unprices_it(self) -> None:
        """An empty list: the model is served free again."""
        book = PriceBook([OLD])
        book.replace_model("m", [])
        assert not book.priced("m")
        assert book.all() == []

    def test_replacing_prices_of_another_model_is_refused(self) -> None:
        """Each price given must be of the model replaced."""
        with pytest.raises(AssertionError):
            PriceBook().replace_model("other", [OLD])
