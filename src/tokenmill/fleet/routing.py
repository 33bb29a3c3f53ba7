"""Choosing deployments for a request, pure: in-memory load and breakers, no I/O.

A public model is served by several deployments: the operator's own (GPUs it runs) and
vendors' (tokens it buys, with a price). ``own-first`` (the default) tries own deployments
with room, least busy first, then vendors, cheapest first; ``cheapest`` orders everything by
price (own ones cost nothing extra per token); ``least-busy`` by how full each is;
``latency`` by the moving average of each one's time to the first byte (one not yet
measured goes first, so it gets measured). Weights (canary shares) pick the first
deployment at random in proportion to them, from a ``draw`` in [0, 1) the caller passes;
the rest follow in the policy's order. A deployment whose breaker is open, or that is at
its concurrency limit, is never chosen. The request tries the list in order until one
answers (failover happens only before its first byte reaches the client).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tokenmill.fleet.breakers import Breaker

POLICIES = ("own-first", "cheapest", "least-busy", "latency")
LATENCY_WEIGHT_RATIO = 0.2  # of each new measurement in the moving average


@dataclass(frozen=True)
class Candidate:
    name: str
    own: bool
    price_nano_per_mtok: int = 0  # what a vendor charges (input + output); 0 for own
    concurrency_max: int | None = None


@dataclass
class Load:
    in_flight: int = 0
    first_byte_ms_avg: float | None = None  # moving average; None until measured

    def busy_ratio(self, concurrency_max: int | None) -> float:
        return 0.0 if not concurrency_max else self.in_flight / concurrency_max

    def observe(self, first_byte_ms: float) -> None:
        """A successful attempt's time to its first byte, into the moving average."""
        assert first_byte_ms >= 0
        previous = self.first_byte_ms_avg
        self.first_byte_ms_avg = (
            first_byte_ms
            if previous is None
            else previous + LATENCY_WEIGHT_RATIO * (first_byte_ms - previous)
        )


@dataclass
class FleetState:
    """Load and breaker of every deployment, kept by the gateway."""

    breakers: dict[str, Breaker] = field(default_factory=dict)
    loads: dict[str, Load] = field(default_factory=dict)

    def has_room(self, candidate: Candidate) -> bool:
        load = self.loads.setdefault(candidate.name, Load())
        return candidate.concurrency_max is None or load.in_flight < candidate.concurrency_max

    def breaker(self, name: str) -> Breaker:
        return self.breakers.setdefault(name, Breaker())


def choose(
    candidates: list[Candidate],
    state: FleetState,
    now_ms: int,
    policy: str = "own-first",
    weights: Mapping[str, int] | None = None,
    draw: float = 0.0,
) -> list[Candidate]:
    """The deployments to try, in order; empty when every one is full or failing."""
    assert policy in POLICIES
    assert 0.0 <= draw < 1.0
    usable = [c for c in candidates if state.has_room(c) and state.breaker(c.name).allows(now_ms)]
    ordered = _ordered(usable, state, policy)
    if weights:
        first = _weighted(ordered, weights, draw)
        if first is not None:
            ordered.remove(first)
            ordered.insert(0, first)
    assert len(ordered) == len(usable)
    return ordered


def _ordered(usable: list[Candidate], state: FleetState, policy: str) -> list[Candidate]:
    def busy(c: Candidate) -> float:
        return state.loads[c.name].busy_ratio(c.concurrency_max)

    def latency(c: Candidate) -> float:
        measured = state.loads[c.name].first_byte_ms_avg
        return -1.0 if measured is None else measured

    if policy == "cheapest":
        return sorted(usable, key=lambda c: (c.price_nano_per_mtok, busy(c)))
    if policy == "least-busy":
        return sorted(usable, key=busy)
    if policy == "latency":
        return sorted(usable, key=lambda c: (latency(c), busy(c)))
    own = sorted((c for c in usable if c.own), key=busy)
    vendors = sorted(
        (c for c in usable if not c.own), key=lambda c: (c.price_nano_per_mtok, busy(c))
    )
    return own + vendors


def _weighted(
    ordered: list[Candidate], weights: Mapping[str, int], draw: float
) -> Candidate | None:
    """The usable deployment that ``draw`` lands on, each with its share of the total
    weight (a deployment without a weight, or with 0, is never drawn)."""
    weighted = [(c, weights.get(c.name, 0)) for c in ordered if weights.get(c.name, 0) > 0]
    total = sum(weight for _, weight in weighted)
    if not total:
        return None
    point = draw * total
    for candidate, weight in weighted:
        if point < weight:
            return candidate
        point -= weight
    return weighted[-1][0]  # rounding at the top end
