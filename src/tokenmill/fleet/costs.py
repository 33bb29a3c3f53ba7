"""What serving a request cost the operator, pure: a vendor's price for resold tokens, or
for own GPUs their cost per hour spread over the tokens they serve (economics.cost).

``ServingCost`` is per deployment, built once at start; ``cost_nano`` is exact and rounded
up once, like a charge. The basis says where the figure came from: ``vendor`` (the price
list), ``modeled`` (the perf model's throughput for the deployment's hardware and model) or
``measured`` (throughput the operator measured, e.g. with ``tokenmill bench``).

A prompt token is fresh input, a cache read or a cache write, each at its own rate: a
vendor's price list gives all three (a read or write it gives no price for costs the
input's), own GPUs cost the input rate for each (a cache write is a prefill). Reasoning
tokens are completion tokens, costed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tokenmill.money import div_ceil
from tokenmill.usage import TokenCounts

CostBasis = Literal["vendor", "modeled", "measured"]
TOKENS_PER_PRICE = 1_000_000  # prices and costs are per million tokens


@dataclass(frozen=True)
class ServingCost:
    basis: CostBasis
    currency: str
    input_nano_per_mtok: int
    output_nano_per_mtok: int
    cached_input_nano_per_mtok: int  # a cache read
    request_fee_nano: int = 0
    cache_write_input_nano_per_mtok: int | None = None  # None: the input rate

    def __post_init__(self) -> None:
        assert self.basis in ("vendor", "modeled", "measured")
        assert min(self.input_nano_per_mtok, self.output_nano_per_mtok) >= 0
        assert min(self.cached_input_nano_per_mtok, self.request_fee_nano) >= 0
        assert (self.cache_write_input_nano_per_mtok or 0) >= 0

    @property
    def cache_write_rate_nano_per_mtok(self) -> int:
        """What a prompt token written to the cache costs: its own rate, else the input's."""
        written = self.cache_write_input_nano_per_mtok
        return self.input_nano_per_mtok if written is None else written

    def cost_nano(self, counts: TokenCounts) -> int:
        """The cost of one request's tokens: fresh prompt tokens, cache reads and cache
        writes each at their rate, completion tokens (reasoning ones among them) once."""
        fresh = counts.prompt_tokens - counts.cached_tokens - counts.cache_write_tokens
        assert fresh >= 0
        assert counts.completion_tokens >= 0
        micro = (
            fresh * self.input_nano_per_mtok
            + counts.cached_tokens * self.cached_input_nano_per_mtok
            + counts.cache_write_tokens * self.cache_write_rate_nano_per_mtok
            + counts.completion_tokens * self.output_nano_per_mtok
        )
        cost = div_ceil(micro, TOKENS_PER_PRICE) + self.request_fee_nano
        assert cost >= 0
        return cost
