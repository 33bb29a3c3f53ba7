"""Fit a replica's efficiency factors to what a benchmark measured (pure).

Given the replica (``perf.Setup``) and measurements at several concurrencies, find the
compute and memory efficiency (``e_c``, ``e_m``) for which the performance model comes
closest: the sum over measurements of the squared log ratio of modeled to measured output
tokens per second (prefill included) and decode step (the median gap between a request's
tokens). A log, so 10% high and 10% low weigh the same at any scale. A coarse grid over
(0, 1] finds the basin, a finer one around the best point the answer; the other factors
keep the setup's values.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from tokenmill.economics import perf
from tokenmill.errors import InvalidRequest, TokenmillError

_COARSE = 0.05
_FINE = 0.005


@dataclass(frozen=True)
class Measurement:
    """One level of a benchmark: ``concurrency`` requests in flight of this shape."""

    concurrency: int
    input_tokens: int
    output_tokens: int
    output_tokens_per_s: float  # over the replica
    step_ms: float  # the median gap between tokens: one decode step


@dataclass(frozen=True)
class Fit:
    efficiency_compute_ratio: float
    efficiency_memory_ratio: float
    error_before: float  # root mean squared log error with the setup's own factors
    error_after: float


def _check(measurements: Sequence[Measurement]) -> None:
    if not measurements:
        raise InvalidRequest("nothing measured to fit to", param="measurements")
    for measurement in measurements:
        for value in (measurement.output_tokens_per_s, measurement.step_ms):
            if not math.isfinite(value) or value <= 0:
                message = "measured throughput and latency must be finite and > 0"
                raise InvalidRequest(message, param="measurements")


def error(setup: perf.Setup, measurements: Sequence[Measurement]) -> float:
    """Root mean squared log ratio of modeled to measured throughput and decode step."""
    _check(measurements)
    total = 0.0
    for measurement in measurements:
        point = perf.operating_point(
            setup, measurement.input_tokens, measurement.output_tokens, measurement.concurrency
        )
        total += math.log(point.output_tokens_per_s / measurement.output_tokens_per_s) ** 2
        total += math.log(point.step_ms / measurement.step_ms) ** 2
    return math.sqrt(total / (2 * len(measurements)))


def _grid(low: float, high: float, step: float) -> list[float]:
    count = round((high - low) / step)
    return [round(low + step * index, 6) for index in range(count + 1)]


def _search(
    setup: perf.Setup,
    measurements: Sequence[Measurement],
    compute: list[float],
    memory: list[float],
    best: tuple[float, float, float],
) -> tuple[float, float, float]:
    for e_c in compute:
        for e_m in memory:
            trial = dataclasses.replace(
                setup, efficiency_compute_ratio=e_c, efficiency_memory_ratio=e_m
            )
            try:
                found = error(trial, measurements)
            except TokenmillError:
                continue
            best = min(best, (found, e_c, e_m))
    return best


def fit(setup: perf.Setup, measurements: Sequence[Measurement]) -> Fit:
    """The (e_c, e_m) that bring the model closest to the measurements."""
    before = error(setup, measurements)
    own = (before, setup.efficiency_compute_ratio, setup.efficiency_memory_ratio)
    coarse = _grid(_COARSE, 1.0, _COARSE)
    _, e_c, e_m = _search(setup, measurements, coarse, coarse, own)

    def around(centre: float) -> list[float]:
        low = max(_FINE, centre - _COARSE)
        return [value for value in _grid(low, min(1.0, centre + _COARSE), _FINE) if value > 0]

    after, e_c, e_m = _search(setup, measurements, around(e_c), around(e_m), own)
    result = Fit(
        efficiency_compute_ratio=e_c,
        efficiency_memory_ratio=e_m,
        error_before=before,
        error_after=after,
    )
    assert result.error_after <= result.error_before
    return result
