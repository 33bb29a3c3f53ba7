"""Choosing deployments for a request, pure: in-memory load and breakers, no I/O.

A public model is served by several deployments: the operator's own (GPUs it runs) and
vendors' (tokens it buys, with a price). ``own-first`` (the default) tries own deployments
with room, least busy first, then vendors, cheapest first; ``cheapest`` orders everything by
price (own ones cost nothing extra per token); ``least-busy`` by how full each is. A
deployment whose breaker is open, or that is at its concurrency limit, is never chosen. The
request tries the list in order until one answers (failover happens only before its first
byte reaches the client).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenmill.fleet.breakers import Breaker

POLICIES = ("own-first", "cheapest", "least-busy")


@dataclass(frozen=True)
class Candidate:
    name: str
    own: bool
    price_nano_per_mtok: int = 0  # what a vendor charges (input + output); 0 for own
    concurrency_max: int | None = None


@dataclass
class Load:
    in_flight: int = 0

    def busy_ratio(self, concurrency_max: int | None) -> float:
        return 0.0 if not concurrency_max else self.in_flight / concurrency_max


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
    candidates: list[Candidate], state: FleetState, now_ms: int, policy: str = "own-first"
) -> list[Candidate]:
    """The deployments to try, in order; empty when every one is full or failing."""
    assert policy in POLICIES
    usable = [c for c in candidates if state.has_room(c) and state.breaker(c.name).allows(now_ms)]

    def busy(c: Candidate) -> float:
        return state.loads[c.name].busy_ratio(c.concurrency_max)

    if policy == "cheapest":
        ordered = sorted(usable, key=lambda c: (c.price_nano_per_mtok, busy(c)))
    elif policy == "least-busy":
        ordered = sorted(usable, key=busy)
    else:
        own = sorted((c for c in usable if c.own), key=busy)
        vendors = sorted(
            (c for c in usable if not c.own), key=lambda c: (c.price_nano_per_mtok, busy(c))
        )
        ordered = own + vendors
    assert len(ordered) == len(usable)
    return ordered
