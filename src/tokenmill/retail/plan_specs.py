"""Plans as people write them (YAML, JSON: amounts as decimal text, times as "HH:MM") and as
the store keeps them; ``plan_from_spec`` validates one into a ``retail.plans.Plan``.

    currency: USD
    monthly_fee: "20.00"
    timezone: Europe/Paris            # for time-of-day ratios and the plan's month
    included:                         # tokens per month, by model id or "tier:<tier>"
      "tier:standard": 10000000
      llama-3.3-70b: 1000000
    overage:                          # optional: per million tokens past the included ones
      "tier:standard": {input: "0.02", output: "0.04"}
    time_of_day:                      # optional: price ratios by local time
      - {from: "22:00", to: "06:00", ratio: "0.5"}
    batch_discount: "0.5"             # optional: off for service_tier "flex" requests
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tokenmill.errors import InvalidRequest
from tokenmill.money import format_amount, parse_amount
from tokenmill.retail.plans import PPM, OveragePrice, Plan, TimeBand

PLAN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$|^24:00$")
RATIO_MAX_PPM = 100 * PPM


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OverageSpec(_Strict):
    input: str | int | float
    output: str | int | float = "0"
    cached_input: str | int | float | None = None  # a cache read; None: the input price
    cache_write_input: str | int | float | None = None  # None: the input price


class BandSpec(_Strict):
    start: str = Field(alias="from")
    end: str = Field(alias="to")
    ratio: str | int | float


class PlanSpec(_Strict):
    currency: str = "USD"
    monthly_fee: str | int | float = "0"
    timezone: str = "UTC"
    included: dict[str, int] = Field(default_factory=dict)
    overage: dict[str, OverageSpec] = Field(default_factory=dict)
    time_of_day: list[BandSpec] = Field(default_factory=list, max_length=48)
    batch_discount: str | int | float = "0"


def _text(value: str | int | float) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _amount(value: str | int | float, param: str) -> int:
    return parse_amount(_text(value), param=param)


def _amount_or(value: str | int | float | None, default_nano: int, param: str) -> int:
    return default_nano if value is None else _amount(value, param)


RATIO_TEXT = re.compile(r"[0-9]{1,3}(\.[0-9]{1,6})?")


def _ratio_ppm(value: str | int | float, param: str) -> int:
    text = _text(value)
    if not RATIO_TEXT.fullmatch(text):  # plain decimals only: no exponents, NaN or signs
        raise InvalidRequest(
            f"{param} must be a ratio from 0 to 100 with at most 6 decimals, such as 0.5",
            param=param,
        )
    try:
        ratio = Decimal(text)
    except InvalidOperation as exc:  # unreachable after the pattern; kept as the mapping
        raise InvalidRequest(f"{param} must be a decimal ratio such as 0.5", param=param) from exc
    ppm = ratio * PPM
    if ppm != ppm.to_integral_value() or not 0 <= ppm <= RATIO_MAX_PPM:
        raise InvalidRequest(
            f"{param} must be a ratio from 0 to 100 with at most 6 decimals", param=param
        )
    return int(ppm)


def _minute(clock: str, param: str) -> int:
    match = CLOCK.match(clock)
    if not match:
        raise InvalidRequest(f"{param} must be a time of day such as 22:00", param=param)
    return 24 * 60 if clock == "24:00" else int(clock[:2]) * 60 + int(clock[3:])


def plan_from_spec(name: str, data: Any) -> Plan:
    """Validate a plan as written; raise InvalidRequest naming the bad field."""
    if not isinstance(name, str) or not PLAN_NAME.match(name):
        raise InvalidRequest(
            "plan name must be 1-64 letters, digits, '.', '_' or '-'", param="name"
        )
    try:
        spec = PlanSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRequest(f"plan {name}: {where}: {first['msg']}", param=where) from exc
    if not re.match(r"^[A-Z]{3}$", spec.currency):
        raise InvalidRequest("currency must be a three-letter code such as USD", param="currency")
    try:
        ZoneInfo(spec.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidRequest(f"unknown time zone '{spec.timezone[:64]}'", param="timezone") from exc
    for key, tokens in spec.included.items():
        if tokens < 0 or tokens > 10**15:
            raise InvalidRequest(f"included.{key} must be 0 to 1e15 tokens", param="included")
    overage = {}
    for key, over in spec.overage.items():
        input_nano = _amount(over.input, f"overage.{key}.input")
        overage[key] = OveragePrice(
            input_nano,
            _amount(over.output, f"overage.{key}.output"),
            _amount_or(over.cached_input, input_nano, f"overage.{key}.cached_input"),
            _amount_or(over.cache_write_input, input_nano, f"overage.{key}.cache_write_input"),
        )
    bands = []
    for index, band in enumerate(spec.time_of_day):
        start = _minute(band.start, f"time_of_day.{index}.from")
        end = _minute(band.end, f"time_of_day.{index}.to")
        if start == end or start == 24 * 60:
            raise InvalidRequest(
                f"time_of_day.{index} must span some time", param=f"time_of_day.{index}"
            )
        bands.append(TimeBand(start, end, _ratio_ppm(band.ratio, f"time_of_day.{index}.ratio")))
    discount = _ratio_ppm(spec.batch_discount, "batch_discount")
    if discount > PPM:
        raise InvalidRequest("batch_discount must be from 0 to 1", param="batch_discount")
    return Plan(
        name=name,
        currency=spec.currency,
        monthly_fee_nano=_amount(spec.monthly_fee, "monthly_fee"),
        timezone=spec.timezone,
        included_tokens=dict(spec.included),
        overage=overage,
        time_bands=tuple(bands),
        batch_discount_ppm=discount,
    )


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _ratio_text(ppm: int) -> str:
    return format((Decimal(ppm) / PPM).normalize(), "f")  # "10", never "1E+1"


def plan_to_spec(plan: Plan) -> dict[str, Any]:
    """The plan as written (what ``plan_from_spec`` reads back to the same Plan)."""
    return {
        "currency": plan.currency,
        "monthly_fee": format_amount(plan.monthly_fee_nano),
        "timezone": plan.timezone,
        "included": dict(plan.included_tokens),
        "overage": {
            key: {
                "input": format_amount(over.input_nano_per_mtok),
                "output": format_amount(over.output_nano_per_mtok),
                "cached_input": format_amount(over.cached_input_nano_per_mtok),
                "cache_write_input": format_amount(over.cache_write_input_nano_per_mtok),
            }
            for key, over in plan.overage.items()
        },
        "time_of_day": [
            {
                "from": _clock(band.start_minute),
                "to": _clock(band.end_minute),
                "ratio": _ratio_text(band.ratio_ppm),
            }
            for band in plan.time_bands
        ],
        "batch_discount": _ratio_text(plan.batch_discount_ppm),
    }
