"""What one level of a benchmark measured, summed up (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class Sample:
    """One request: when it was sent, its first and last token arrived, and its usage."""

    sent_s: float
    first_token_s: float | None
    done_s: float
    prompt_tokens: int
    output_tokens: int
    error: str | None = None
    chunk_gaps_s: tuple[float, ...] = ()  # between content chunks after the first

    @property
    def ttft_ms(self) -> float | None:
        if self.first_token_s is None:
            return None
        return (self.first_token_s - self.sent_s) * 1000

    @property
    def itl_ms(self) -> float | None:
        """The mean gap between this request's tokens after the first."""
        if self.first_token_s is None or self.output_tokens < 2:
            return None
        return (self.done_s - self.first_token_s) * 1000 / (self.output_tokens - 1)


def token_gaps_ms(sample: Sample) -> list[float]:
    """The gaps between this request's tokens, a chunk's gap spread over its tokens (a
    server may send several tokens in one chunk)."""
    if not sample.chunk_gaps_s or sample.output_tokens < 2:
        return []
    tokens_per_chunk = (sample.output_tokens - 1) / len(sample.chunk_gaps_s)
    return [gap * 1000 / tokens_per_chunk for gap in sample.chunk_gaps_s]


def percentile(values: Sequence[float], rank: float) -> float:
    """The ``rank``-th percentile by linear interpolation between order statistics."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * rank / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _spread(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    shown = {f"p{rank}": round(percentile(values, rank), 3) for rank in PERCENTILES}
    shown["mean"] = round(sum(values) / len(values), 3)
    return shown


def summary(concurrency: int, samples: Sequence[Sample]) -> dict[str, Any]:
    """One level: throughput over its wall time, TTFT and ITL percentiles, errors."""
    good = [sample for sample in samples if sample.error is None]
    errors = [sample.error for sample in samples if sample.error is not None]
    wall_s = 0.0
    if samples:
        wall_s = max(sample.done_s for sample in samples) - min(s.sent_s for s in samples)
    output_tokens = sum(sample.output_tokens for sample in good)
    ttfts = [value for sample in good if (value := sample.ttft_ms) is not None]
    itls = [value for sample in good if (value := sample.itl_ms) is not None]
    gaps = [gap for sample in good for gap in token_gaps_ms(sample)]
    return {
        "concurrency": concurrency,
        "requests": len(samples),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "wall_s": round(wall_s, 3),
        "output_tokens_per_s": round(output_tokens / wall_s, 3) if wall_s > 0 else 0.0,
        "requests_per_s": round(len(good) / wall_s, 3) if wall_s > 0 else 0.0,
        "prompt_tokens_mean": round(sum(s.prompt_tokens for s in good) / len(good), 1)
        if good
        else 0.0,
        "output_tokens_mean": round(output_tokens / len(good), 1) if good else 0.0,
        "ttft_ms": _spread(ttfts),
        "itl_ms": _spread(itls),
        # The median gap between tokens is one decode step: other requests' prefills stall
        # a few steps (the mean and tail), not the median.
        "token_gap_ms": _spread(gaps),
    }
