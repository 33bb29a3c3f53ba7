"""Circuit breakers, pure: one per deployment, fed by the outcome of each attempt.

Closed: every attempt may go. After ``failures_to_open`` failures in a row, or when the
moving failure ratio reaches ``failure_ratio_max`` (after ``RATIO_ATTEMPTS_MIN`` attempts:
a deployment failing every other request never fails five in a row), it opens: no
attempt goes until ``open_ms`` has passed. An upstream's ``Retry-After`` opens it at once, until
the time the upstream named.
Then it is half-open: one probe may go; its success closes the breaker, its failure opens it
again for another period.
"""

from __future__ import annotations

from dataclasses import dataclass

RATIO_WEIGHT = 0.1  # of each attempt in the moving failure ratio
RATIO_ATTEMPTS_MIN = 20  # attempts seen before the ratio may open the breaker


@dataclass
class Breaker:
    failures_to_open: int = 5
    open_ms: int = 10_000
    failure_ratio_max: float = 1.0  # a moving failure ratio at or above it opens; 1.0: off
    state: str = "closed"  # closed | open | half_open
    failures_count: int = 0  # consecutive
    reopens_at_ms: int = 0
    probing: bool = False
    failure_ratio: float = 0.0  # moving average over attempts, RATIO_WEIGHT each
    attempts_count: int = 0  # since the breaker last closed

    def __post_init__(self) -> None:
        assert self.failures_to_open >= 1
        assert self.open_ms >= 0
        assert 0.0 < self.failure_ratio_max <= 1.0

    def _count(self, failed: bool) -> None:
        self.attempts_count += 1
        self.failure_ratio += RATIO_WEIGHT * ((1.0 if failed else 0.0) - self.failure_ratio)

    def _ratio_trips(self) -> bool:
        return (
            self.failure_ratio_max < 1.0
            and self.attempts_count >= RATIO_ATTEMPTS_MIN
            and self.failure_ratio >= self.failure_ratio_max
        )

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
        if self.state != "closed":  # closing again: the ratio starts over
            self.failure_ratio, self.attempts_count = 0.0, 0
        else:
            self._count(failed=False)
        self.state = "closed"
        self.failures_count = 0
        self.probing = False

    def failed(self, now_ms: int, retry_after_ms: int = 0) -> None:
        """An attempt failed; ``retry_after_ms``: the upstream said when to come back (its
        ``Retry-After``), which opens the breaker at once until then."""
        assert retry_after_ms >= 0
        self.failures_count += 1
        self.probing = False
        self._count(failed=True)
        if retry_after_ms:
            self.state = "open"
            self.reopens_at_ms = max(self.reopens_at_ms, now_ms + retry_after_ms)
        elif (
            self.state == "half_open"
            or self.failures_count >= self.failures_to_open
            or self._ratio_trips()
        ):
            self.state = "open"
            # never sooner than an upstream's Retry-After asked for
            self.reopens_at_ms = max(self.reopens_at_ms, now_ms + self.open_ms)
        assert self.state != "half_open"

    def checked(self, now_ms: int, healthy: bool) -> None:
        """A background health check's outcome: a pass closes an open breaker whose time is
        up (no client request has to be the probe); a failure counts like a failed attempt."""
        if not healthy:
            self.failed(now_ms)
        elif self.state == "open" and now_ms >= self.reopens_at_ms:
            self.succeeded()

    def retry_in_ms(self, now_ms: int) -> int:
        """How long until an attempt may go here again (0: now)."""
        return max(0, self.reopens_at_ms - now_ms) if self.state == "open" else 0
