"""A replica serving a mix of request lengths (pure): ``perf.operating_point`` for a
distribution of (input, output) shapes instead of one.

With shares ``s_i`` of requests (normalised to sum to 1) of ``I_i`` prompt and ``O_i``
output tokens, a request stays in the batch for its ``O_i`` steps, so shape ``i`` holds a
share ``w_i = s_i * O_i / O`` of the batch's slots, where ``O = sum s_i * O_i``:

* KV reserved per slot  = sum w_i * (I_i + O_i)   (what caps the batch)
* KV read per slot      = sum w_i * (I_i + O_i // 2)
* prefill per request   = sum s_i * prefill_busy(I_i)
* per request           = prefill + (O - 1) * step / batch;  output tokens/s = O / that
* ITL                   = step + batch * prefill / O
* TTFT                  = per shape, an idle prefill plus one step of the batch; the p95 is
                          the shape at which the requests' cumulative share reaches 95%

One shape gives exactly ``perf.operating_point``'s figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tokenmill.economics import perf
from tokenmill.errors import InvalidRequest

SHAPES_MAX = 100


@dataclass(frozen=True)
class Shape:
    share: float  # of requests
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class MixPoint:
    batch: int
    batch_max: int
    step_ms: float
    itl_ms: float
    ttft_ms_p95: float  # under load: an idle prefill plus one step of the batch
    output_tokens_per_s: float
    input_tokens_mean: float
    output_tokens_mean: float


def _checked(shapes: Sequence[Shape]) -> list[Shape]:
    if not 1 <= len(shapes) <= SHAPES_MAX:
        raise InvalidRequest(f"give 1 to {SHAPES_MAX} request shapes", param="lengths")
    total = 0.0
    for shape in shapes:
        for name, count in (("input", shape.input_tokens), ("output", shape.output_tokens)):
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10**7:
                raise InvalidRequest(f"{name} tokens must be from 1 to 10000000", param=name)
        if not math.isfinite(shape.share) or shape.share <= 0:
            raise InvalidRequest("every share must be a number > 0", param="share")
        total += shape.share
    return [Shape(s.share / total, s.input_tokens, s.output_tokens) for s in shapes]


def _ttft_p95_ms(setup: perf.Setup, shapes: list[Shape], step_s: float) -> float:
    ttfts = sorted(
        (perf.prefill_time_s(setup, shape.input_tokens) + step_s, shape.share) for shape in shapes
    )
    cumulative = 0.0
    for ttft_s, share in ttfts:
        cumulative += share
        if cumulative >= 0.95 - 1e-12:
            return ttft_s * 1000
    return ttfts[-1][0] * 1000


def mix_point(setup: perf.Setup, shapes: Sequence[Shape], concurrency: int | None) -> MixPoint:
    """The replica at ``concurrency`` requests in flight (None: as many as fit) serving
    ``shapes``; InvalidRequest if the model or a slot's reserve does not fit."""
    mix = _checked(shapes)
    if len(mix) == 1:
        only = mix[0]
        point = perf.operating_point(setup, only.input_tokens, only.output_tokens, concurrency)
        ttft_s = perf.prefill_time_s(setup, only.input_tokens) + point.step_ms / 1000
        return MixPoint(
            batch=point.batch,
            batch_max=point.batch_max,
            step_ms=point.step_ms,
            itl_ms=point.itl_ms,
            ttft_ms_p95=ttft_s * 1000,
            output_tokens_per_s=point.output_tokens_per_s,
            input_tokens_mean=only.input_tokens,
            output_tokens_mean=only.output_tokens,
        )
    output_mean = sum(shape.share * shape.output_tokens for shape in mix)
    slots = [shape.share * shape.output_tokens / output_mean for shape in mix]
    reserved = sum(w * (s.input_tokens + s.output_tokens) for w, s in zip(slots, mix, strict=True))
    read = sum(w * (s.input_tokens + s.output_tokens // 2) for w, s in zip(slots, mix, strict=True))
    if not perf.fits(setup):
        message = f"{setup.model.id} does not fit in {setup.gpu_count} x {setup.gpu.id}"
        raise InvalidRequest(message, param="gpus")
    largest = perf.batch_max(setup, math.ceil(reserved))
    if largest == 0:
        raise InvalidRequest("the mix's requests do not fit in the KV memory", param="lengths")
    limit = perf.batch_limit(setup)
    batch = min(largest, limit if concurrency is None else min(concurrency, limit))
    step_s = perf.decode_step_time_s(setup, batch, round(batch * read))
    busy_s = sum(shape.share * perf.prefill_busy_s(setup, shape.input_tokens) for shape in mix)
    request_s = busy_s + (output_mean - 1) * step_s / batch
    result = MixPoint(
        batch=batch,
        batch_max=largest,
        step_ms=step_s * 1000,
        itl_ms=(step_s + batch * busy_s / output_mean) * 1000,
        ttft_ms_p95=_ttft_p95_ms(setup, mix, step_s),
        output_tokens_per_s=output_mean / request_s,
        input_tokens_mean=sum(shape.share * shape.input_tokens for shape in mix),
        output_tokens_mean=output_mean,
    )
    assert result.output_tokens_per_s > 0
    return result
