"""The cost of serving a request to the operator (tokenmill.fleet.costs), pure: fresh prompt
tokens, cache reads, cache writes and completion tokens each at their rate, rounded up once.

Expected amounts are worked out here by hand, never by the code under test.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given

from tests.strategies import counts_within
from tokenmill.fleet.costs import ServingCost
from tokenmill.usage import TokenCounts

NANO = 1_000_000_000
# A vendor's price list: 3.00, 0.30, 3.75 and 15.00 per million tokens in, per cache read, per
# cache write and out; per token 3000, 300, 3750 and 15000 nano-units.
VENDOR = ServingCost(
    "vendor",
    "USD",
    3 * NANO,
    15 * NANO,
    3 * NANO // 10,
    cache_write_input_nano_per_mtok=15 * NANO // 4,
)


class TestServingCost:
    def test_each_kind_of_prompt_token_costs_its_own_rate(self) -> None:
        """1000 prompt tokens (500 read, 300 written, 200 fresh) and 100 output tokens:
        200 x 3000 + 500 x 300 + 300 x 3750 + 100 x 15000 = 3_375_000 nano-units."""
        counts = TokenCounts(1000, 100, cached_tokens=500, cache_write_tokens=300)
        assert VENDOR.cost_nano(counts) == 3_375_000

    def test_without_a_write_rate_a_cache_write_costs_the_input_rate(self) -> None:
        """A price list entry with no cache-write price: 1000 written tokens cost 3_000_000."""
        unset = dataclasses.replace(VENDOR, cache_write_input_nano_per_mtok=None)
        assert unset.cache_write_rate_nano_per_mtok == 3 * NANO
        assert unset.cost_nano(TokenCounts(1000, 0, cache_write_tokens=1000)) == 3_000_000

    def test_reasoning_tokens_are_costed_once_as_completion_tokens(self) -> None:
        """100 completion tokens of which 80 reasoning cost 100 output tokens: 1_500_000."""
        assert VENDOR.cost_nano(TokenCounts(0, 100, reasoning_tokens=80)) == 1_500_000

    def test_the_cost_is_rounded_up_once_and_the_fee_added(self) -> None:
        """Reads at 0.3 nano a token and writes at 0.4 (0.0003 and 0.0004 per million): one
        read costs 1, one read and one write (0.7) cost 1, not 2; a fee of 7 is added once."""
        cheap = ServingCost("vendor", "USD", 0, 0, 300_000, cache_write_input_nano_per_mtok=400_000)
        assert cheap.cost_nano(TokenCounts(1, 0, cached_tokens=1)) == 1
        assert cheap.cost_nano(TokenCounts(2, 0, cached_tokens=1, cache_write_tokens=1)) == 1
        with_fee = dataclasses.replace(cheap, request_fee_nano=7)
        assert with_fee.cost_nano(TokenCounts(1, 0, cached_tokens=1)) == 8

    def test_a_negative_cache_write_rate_is_a_bug(self) -> None:
        """No rate is below zero."""
        with pytest.raises(AssertionError):
            dataclasses.replace(VENDOR, cache_write_input_nano_per_mtok=-1)

    @given(counts_within())
    def test_reasoning_never_changes_the_cost(self, counts: TokenCounts) -> None:
        """Whatever share of the completion is reasoning, the cost is the same."""
        plain = dataclasses.replace(counts, reasoning_tokens=0)
        assert VENDOR.cost_nano(counts) == VENDOR.cost_nano(plain)
