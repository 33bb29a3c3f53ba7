"""What serving a request cost the operator, pure: a vendor's price for resold tokens, or
for own GPUs their cost per hour spread over the tokens they serve (economics.cost).

``ServingCost`` is per deployment, built once at start; ``cost_nano`` is exact and rounded
up once, like a charge. The basis says where the figure came from: ``vendor`` (the price
list), ``modeled`` (the perf model's throughput for the deployment's hardware and model) or
``measured`` (throughput the operator measured, e.g. with ``tokenmill bench``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tokenmill.money import div_ceil

CostBasis = Literal["vendor", "modeled", "measured"]
TOKENS_PER_PRICE = 1_000_000  # prices and costs are per million tokens


@dataclass(frozen=True)
class ServingCost:
    basis: CostBasis
    currency: str
    input_nano_per_mtok: int
    output_nano_per_mtok: int
    cached_input_nano_per_mtok: int
    request_fee_nano: int = 0

    def __post_init__(self) -> None:
        assert self.basis in ("vendor", "modeled", "measured")
        assert min(self.input_nano_per_mtok, self.output_nano_per_mtok) >= 0
        assert min(self.cached_input_nano_per_mtok, self.request_fee_nano) >= 0

    def cost_nano(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> int:
        """The cost of one request's tokens (cached prompt tokens at their own rate)."""
        assert 0 <= cached_tokens <= prompt_tokens
        assert completion_tokens >= 0
        micro = (
            (prompt_tokens - cached_tokens) * self.input_nano_per_mtok
            + cached_tokens * self.cached_input_nano_per_mtok
            + completion_tokens * self.output_nano_per_mtok
        )
        return div_ceil(micro, TOKENS_PER_PRICE) + self.request_fee_nano
