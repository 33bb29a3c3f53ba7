"""Metering: one usage record per authenticated, valid request, successful or failed.

The counts come from ``tokenmill.usage.Meter``: the engine's reported usage when it gave
one, else the local count, and the record says which (``estimated``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UsageRecord:
    """One request, as the store keeps it."""

    request_id: str
    account_id: str
    key_id: str
    model: str
    deployment: str
    engine: str
    endpoint: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    estimated: bool
    status: str  # ok | error | cancelled
    http_status: int
    error_type: str | None
    started_at_ms: int
    ttft_ms: int | None
    duration_ms: int

    def __post_init__(self) -> None:
        assert self.status in ("ok", "error", "cancelled")
        assert min(self.prompt_tokens, self.completion_tokens, self.cached_tokens) >= 0
        assert self.duration_ms >= 0
