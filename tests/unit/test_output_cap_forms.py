"""The output cap's closed form (no plan) and its search (plans) agree."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tokenmill.retail.plans import Tariff, tariff_output_cap
from tokenmill.retail.rating import Price, output_tokens_affordable

nano_per_mtok = st.integers(min_value=0, max_value=10**11)


class TestOutputCapForms:
    @given(
        input_price=nano_per_mtok,
        output_price=st.integers(min_value=1, max_value=10**11),
        fee=st.integers(min_value=0, max_value=10**7),
        bound=st.integers(min_value=0, max_value=200_000),
        cap=st.integers(min_value=1, max_value=100_000),
        spendable=st.integers(min_value=0, max_value=10**12),
    )
    def test_without_a_plan_the_closed_form_equals_the_search(
        self, input_price: int, output_price: int, fee: int, bound: int, cap: int, spendable: int
    ) -> None:
        """What the gateway computes for a request off plan is what the search would find."""
        price = Price(
            "m",
            "USD",
            0,
            input_price,
            output_price,
            input_price,
            fee,
            cache_write_input_nano_per_mtok=input_price,
        )
        affordable = output_tokens_affordable(price, bound, spendable)
        closed = cap if affordable is None else max(0, min(cap, affordable))
        assert closed == tariff_output_cap(Tariff(price), bound, cap, 0, spendable)
