"""Circuit breakers, pure: one per deployment, fed by the outcome of each attempt.

Closed: every attempt may go. After ``failures_to_open`` failures in a row it opens: no
attempt goes until ``open_ms`` has passed (or an upstream's ``Retry-After``, if longer).
Then it is half-open: one probe may go; its success closes the breaker, its failure opens it
again for another period.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Breaker:
    failures_to_open: int = 5
    open_ms: int = 10_000
    state: str = "closed"  # closed | open | half_open
    failures_count: int = 0  # consecutive
    reopens_at_ms: int = 0
    probing: bool = False

    def __post_init__(self) -> None:
        assert self.failures_to_open >= 1
        assert self.open_ms >= 0

    def allows(self, now_ms: int) -> bool:
        """Whether an attempt may go to this deployment now (does not reserve the probe)."""
        if self.state == "closed":
            return True
        if self.state == "open":
            return now_ms >= self.reopens_at_ms
        return not self.probing

    def attempt(self, now_ms: int) -> None:
        """An attempt goes now; from an open breaker whose time is up, it is the probe."""
        assert self.allows(now_ms)
        if self.state == "open":
            self.state = "half_open"
        if self.state == "half_open":
            self.probing = True

    def succeeded(self) -> None:
        self.state = "closed"
        self.failures_count = 0
        self.probing = False

    def failed(self, now_ms: int, retry_after_ms: int = 0) -> None:
        self.failures_count += 1
        self.probing = False
        if self.state == "half_open" or self.failures_count >= self.failures_to_open:
            self.state = "open"
            self.reopens_at_ms = now_ms + max(self.open_ms, retry_after_ms)
        assert self.state != "half_open"
