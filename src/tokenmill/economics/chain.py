"""Where a token's dollar goes: a pool's cost per hour split down the supply chain (pure).

The lines of ``cost.CostBreakdown`` map onto who is paid:

* GPU maker              = capital (the GPUs' purchase, written off)
* network and logistics  = network (the cluster's network and storage, written off)
* data-centre builder    = hosting * (1 - power_cooling_share)
* power and cooling      = hosting * power_cooling_share (electrical and mechanical plant)
* energy                 = energy
* operations             = operations
* cloud provider         = rent (a rented pool: the cloud's whole chain, margin included)

and the operator's margin is the price less all of them. Each line is expressed per
million output tokens: ``line per hour * 1e6 / output tokens served per hour``, rounded up
once; prompts are carried by the output tokens they lead to (the chain of one request).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from tokenmill.economics.cost import CostBreakdown
from tokenmill.money import TOKENS_PER_PRICE, div_ceil

LINES = (
    "gpu_maker",
    "network_and_logistics",
    "datacentre_builder",
    "power_and_cooling",
    "energy",
    "operations",
    "cloud_provider",
)


@dataclass(frozen=True)
class ChainLine:
    name: str
    nano_per_mtok: int


def chain_per_mtok(
    hour: CostBreakdown,
    output_tokens_per_hour: Fraction,
    power_cooling_share: Fraction,
    price_nano_per_mtok: int | None = None,
) -> list[ChainLine]:
    """The chain's lines per million output tokens, then ``operator_margin`` (price less
    the lines' sum, negative at a loss) when a price is given."""
    assert output_tokens_per_hour > 0
    assert 0 <= power_cooling_share <= 1
    per_hour = {
        "gpu_maker": Fraction(hour.capital_nano),
        "network_and_logistics": Fraction(hour.network_nano),
        "datacentre_builder": hour.hosting_nano * (1 - power_cooling_share),
        "power_and_cooling": hour.hosting_nano * power_cooling_share,
        "energy": Fraction(hour.energy_nano),
        "operations": Fraction(hour.operations_nano),
        "cloud_provider": Fraction(hour.rent_nano),
    }
    lines = []
    for name in LINES:
        exact = per_hour[name] * TOKENS_PER_PRICE / output_tokens_per_hour
        lines.append(ChainLine(name, div_ceil(exact.numerator, exact.denominator)))
    if price_nano_per_mtok is not None:
        cost = sum(line.nano_per_mtok for line in lines)
        lines.append(ChainLine("operator_margin", price_nano_per_mtok - cost))
    assert all(line.nano_per_mtok >= 0 for line in lines if line.name != "operator_margin")
    return lines
