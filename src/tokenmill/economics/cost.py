"""The cost of a pool of own GPUs: per hour, per million tokens, per request (pure).

A pool is ``gpu_count`` GPUs of one kind on one cost basis: **owned** (bought, depreciated
straight-line to a residual value) or **rented** (a price per GPU-hour). Money is ``int``
nano-units; ratios and other figures are kept exact (``Decimal`` in, ``Fraction`` inside),
never float. A year is 8,760 hours (365 days) and a month 730 hours (that year / 12).

Cost per hour, one line each, every line rounded up to a whole nano-unit once:

* capital (owned)  = gpu_count * purchase * (1 - residual_ratio) / (depreciation_years * 8760)
* network (owned)  = capital * network_storage_ratio (the cluster's network and storage,
                     bought with the GPUs and written off with them; default 0)
* rent (rented)    = gpu_count * rent_nano_per_gpu_hour (exact)
* energy           = gpu_count * power_w_per_gpu * (1 + node_overhead_ratio) * pue
                     * utilization_power_ratio / 1000 * energy_nano_per_kwh
* hosting          = hosting_nano_per_month / 730      (space, network; the whole pool)
* operations       = operations_nano_per_month / 730   (staff, support; the whole pool)
* total            = the sum of the rounded lines

A rented pool still has an energy line: set ``energy_nano_per_kwh`` to 0 where the rent
includes power (cloud GPUs), keep it where the operator pays the power (bare racks).

Cost per million tokens, from the pool's cost per hour ``C`` (nano), its throughput while
prefilling ``P`` (prompt tokens/s) and while decoding ``D`` (output tokens/s), and the share
of the hour it serves ``u`` (``utilization_ratio``): each phase pays for the GPU time it uses,
and idle time is spread over what is served:

* input_nano_per_mtok  = ceil(C * 1e6 / (3600 * P * u))
* output_nano_per_mtok = ceil(C * 1e6 / (3600 * D * u))
* request cost         = ceil((prompt * input + completion * output) / 1e6)

Throughputs must be of the same GPUs that ``C`` pays for: a pool of 8 GPUs running 1-GPU
replicas has 8 times one replica's throughput. Float throughputs (the performance model's)
are read as their shortest decimal (``repr``), so 0.3 means 3/10; that reading keeps order, so
more throughput never costs more. ``modeled_throughput`` derives ``P`` and ``D`` from the
performance model when nothing was measured; ``TokenCosts.basis`` says which it was.

Not modelled yet: cooling and electrical capex (beyond what hosting covers), financing cost
(interest on the purchase), taxes, spare GPUs and failures, and a lower cost for cached
prompt tokens.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Literal, get_args

from tokenmill.economics import perf
from tokenmill.errors import InvalidRequest
from tokenmill.money import AMOUNT_NANO_MAX, TOKENS_PER_PRICE, div_ceil

HOURS_PER_YEAR = 8_760  # a 365-day year
HOURS_PER_MONTH = 730  # that year / 12
SECONDS_PER_HOUR = 3_600
WATTS_PER_KILOWATT = 1_000

GPU_COUNT_MAX = 10_000_000  # far past any one pool
POWER_W_PER_GPU_MAX = 100_000
DEPRECIATION_YEARS_MAX = 100
NODE_OVERHEAD_RATIO_MAX = 10
PUE_MAX = 5
TOKENS_MAX = 10**12  # tokens of one request, or of one call to the perf model
THROUGHPUT_TOKENS_PER_S_MAX = 10**12
CONCURRENCY_MAX = 1_000_000
_NUMBER_TEXT_CHARS_MAX = 40
# Plain ASCII decimals only, as money.parse_amount reads amounts: no "1e3", no "1_000".
_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")

Basis = Literal["modeled", "measured"]
CostBasis = Literal["owned", "rented"]
ExactNumber = Decimal | str | int  # a ratio or count of years, as text, Decimal or int
Throughput = float | int | Decimal | Fraction | str


def _number_kind_error(value: object, param: str) -> InvalidRequest:
    example = "decimal text such as '0.3', or a Decimal"
    return InvalidRequest(f"{param} must be {example}, got {value!r}", param=param)


def _decimal(value: object, param: str, *, allow_float: bool = False) -> Decimal:
    """``value`` as an exact, finite Decimal; floats only where ``allow_float`` (by repr)."""
    if isinstance(value, bool):
        raise _number_kind_error(value, param)
    if isinstance(value, float) and allow_float and math.isfinite(value):
        return Decimal(repr(value))
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal) and value.is_finite():
        return value
    if isinstance(value, str):
        text = value.strip()
        if len(text) <= _NUMBER_TEXT_CHARS_MAX and _PLAIN_DECIMAL.fullmatch(text):
            return Decimal(text)
    raise _number_kind_error(value, param)


def _check_range(
    value: Decimal | Fraction, param: str, *, minimum: int, maximum: int, ends: str = "[]"
) -> None:
    """Refuse ``value`` outside the interval; ``ends`` is "[]", "(]", "[)" or "()"."""
    assert ends in ("[]", "(]", "[)", "()")
    too_low = value <= minimum if ends[0] == "(" else value < minimum
    too_high = value >= maximum if ends[1] == ")" else value > maximum
    if too_low or too_high:
        message = f"{param} must be in {ends[0]}{minimum}, {maximum}{ends[1]}, got {value}"
        raise InvalidRequest(message, param=param)


def _check_money(value: object, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        message = f"{param} must be an int of nano-units (parse text with money.parse_amount)"
        raise InvalidRequest(f"{message}, got {value!r}", param=param)
    if not 0 <= value <= AMOUNT_NANO_MAX:
        message = f"{param} must be in [0, {AMOUNT_NANO_MAX}] nano-units, got {value}"
        raise InvalidRequest(message, param=param)
    return value


def _check_count(value: object, param: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        message = f"{param} must be an integer in [{minimum}, {maximum}], got {value!r}"
        raise InvalidRequest(message, param=param)
    return value


def _fraction(value: object) -> Fraction:
    """A field that ``__post_init__`` made a Decimal, as a Fraction (exact)."""
    assert isinstance(value, Decimal)
    return Fraction(value)


def _ceil(value: Fraction) -> int:
    """A non-negative exact amount rounded up to a whole nano-unit."""
    assert value >= 0
    return div_ceil(value.numerator, value.denominator)


@dataclass(frozen=True, kw_only=True)
class PoolCost:
    """What a pool of own GPUs costs to keep: hardware on one cost basis, power, site, staff.

    Give EITHER ``purchase_nano_per_gpu`` with ``depreciation_years`` (and optionally
    ``residual_ratio``, the share of the price left at the end; default 0) for owned GPUs, OR
    ``rent_nano_per_gpu_hour`` for rented ones. Ratios and years come as decimal text, Decimal
    or int and are kept as Decimal; ``power_w_per_gpu`` may also be a float (the catalog's).
    """

    gpu_count: int
    power_w_per_gpu: ExactNumber | float  # GPU board power at peak
    node_overhead_ratio: ExactNumber  # CPU, network, fans on top of GPU power
    pue: ExactNumber  # facility power / IT power, >= 1
    energy_nano_per_kwh: int
    utilization_power_ratio: ExactNumber  # average draw as a share of peak, (0, 1]
    hosting_nano_per_month: int  # space, network: the whole pool
    operations_nano_per_month: int  # staff, support: the whole pool
    purchase_nano_per_gpu: int | None = None
    depreciation_years: ExactNumber | None = None
    residual_ratio: ExactNumber | None = None
    rent_nano_per_gpu_hour: int | None = None
    network_storage_ratio: ExactNumber = 0  # owned: network and storage capex / GPU capex

    def __post_init__(self) -> None:
        _check_count(self.gpu_count, "gpu_count", minimum=1, maximum=GPU_COUNT_MAX)
        self._set_exact("power_w_per_gpu", 0, POWER_W_PER_GPU_MAX, "(]", allow_float=True)
        self._set_exact("node_overhead_ratio", 0, NODE_OVERHEAD_RATIO_MAX, "[]")
        self._set_exact("pue", 1, PUE_MAX, "[]")
        self._set_exact("utilization_power_ratio", 0, 1, "(]")
        self._set_exact("network_storage_ratio", 0, NODE_OVERHEAD_RATIO_MAX, "[]")
        _check_money(self.energy_nano_per_kwh, "energy_nano_per_kwh")
        _check_money(self.hosting_nano_per_month, "hosting_nano_per_month")
        _check_money(self.operations_nano_per_month, "operations_nano_per_month")
        self._check_basis()

    def _set_exact(
        self, name: str, minimum: int, maximum: int, ends: str, *, allow_float: bool = False
    ) -> None:
        """Parse field ``name`` to a Decimal in the range ``ends`` gives ("(]": open below)."""
        value = _decimal(getattr(self, name), name, allow_float=allow_float)
        _check_range(value, name, minimum=minimum, maximum=maximum, ends=ends)
        object.__setattr__(self, name, value)

    def _check_basis(self) -> None:
        owned_given = (self.purchase_nano_per_gpu, self.depreciation_years, self.residual_ratio)
        is_owned = any(value is not None for value in owned_given)
        is_rented = self.rent_nano_per_gpu_hour is not None
        if is_owned and is_rented:
            message = "give an owned basis (purchase_nano_per_gpu) or a rented one, not both"
            raise InvalidRequest(message, param="rent_nano_per_gpu_hour")
        if is_rented:
            _check_money(self.rent_nano_per_gpu_hour, "rent_nano_per_gpu_hour")
            return
        if self.purchase_nano_per_gpu is None:
            message = (
                "give purchase_nano_per_gpu with depreciation_years (owned GPUs) "
                "or rent_nano_per_gpu_hour (rented GPUs)"
            )
            raise InvalidRequest(message, param="purchase_nano_per_gpu")
        _check_money(self.purchase_nano_per_gpu, "purchase_nano_per_gpu")
        if self.depreciation_years is None:
            message = "owned GPUs need depreciation_years"
            raise InvalidRequest(message, param="depreciation_years")
        self._set_exact("depreciation_years", 0, DEPRECIATION_YEARS_MAX, "(]")
        if self.residual_ratio is None:
            object.__setattr__(self, "residual_ratio", Decimal(0))
        self._set_exact("residual_ratio", 0, 1, "[)")

    @property
    def basis(self) -> CostBasis:
        """``"owned"`` or ``"rented"``: which cost basis the pool was given."""
        return "rented" if self.rent_nano_per_gpu_hour is not None else "owned"


@dataclass(frozen=True, kw_only=True)
class CostBreakdown:
    """A cost over ``period_s`` seconds, line by line, in nano-units; ``total_nano`` sums them."""

    capital_nano: int  # depreciation of owned GPUs; 0 when rented
    rent_nano: int  # rent of rented GPUs; 0 when owned
    energy_nano: int
    hosting_nano: int
    operations_nano: int
    network_nano: int = 0  # network and storage capex of owned GPUs
    period_s: int = SECONDS_PER_HOUR
    total_nano: int = field(init=False)

    def __post_init__(self) -> None:
        lines = (
            self.capital_nano,
            self.rent_nano,
            self.energy_nano,
            self.hosting_nano,
            self.operations_nano,
            self.network_nano,
        )
        assert all(isinstance(line, int) and line >= 0 for line in lines)
        assert self.period_s > 0
        object.__setattr__(self, "total_nano", sum(lines))


def _capital_nano_per_hour(pool: PoolCost) -> int:
    if pool.purchase_nano_per_gpu is None:
        return 0
    kept_ratio = 1 - _fraction(pool.residual_ratio)
    hours = _fraction(pool.depreciation_years) * HOURS_PER_YEAR
    return _ceil(pool.gpu_count * pool.purchase_nano_per_gpu * kept_ratio / hours)


def _network_nano_per_hour(pool: PoolCost) -> int:
    if pool.purchase_nano_per_gpu is None:
        return 0
    kept_ratio = 1 - _fraction(pool.residual_ratio)
    hours = _fraction(pool.depreciation_years) * HOURS_PER_YEAR
    network_ratio = _fraction(pool.network_storage_ratio)
    return _ceil(pool.gpu_count * pool.purchase_nano_per_gpu * network_ratio * kept_ratio / hours)


def _energy_nano_per_hour(pool: PoolCost) -> int:
    kilowatts = (
        pool.gpu_count
        * _fraction(pool.power_w_per_gpu)
        * (1 + _fraction(pool.node_overhead_ratio))
        * _fraction(pool.pue)
        * _fraction(pool.utilization_power_ratio)
        / WATTS_PER_KILOWATT
    )
    return _ceil(kilowatts * pool.energy_nano_per_kwh)


def pool_cost_per_hour(pool: PoolCost) -> CostBreakdown:
    """The pool's cost for one hour, line by line, each line rounded up once.

    Years are 8,760 hours (365 days) and months 730 hours (a 365-day year / 12).
    """
    rent_nano = pool.gpu_count * (pool.rent_nano_per_gpu_hour or 0)
    breakdown = CostBreakdown(
        capital_nano=_capital_nano_per_hour(pool),
        rent_nano=rent_nano,
        energy_nano=_energy_nano_per_hour(pool),
        hosting_nano=div_ceil(pool.hosting_nano_per_month, HOURS_PER_MONTH),
        operations_nano=div_ceil(pool.operations_nano_per_month, HOURS_PER_MONTH),
        network_nano=_network_nano_per_hour(pool),
    )
    assert breakdown.capital_nano == 0 or breakdown.rent_nano == 0
    return breakdown


@dataclass(frozen=True, kw_only=True)
class TokenCosts:
    """What a million prompt tokens and a million output tokens cost the operator (nano).

    ``basis`` says where the throughput behind them came from: ``"modeled"`` (the
    performance model) or ``"measured"`` (a benchmark or the pool's own counters).
    """

    input_nano_per_mtok: int
    output_nano_per_mtok: int
    basis: Basis

    def __post_init__(self) -> None:
        _check_money(self.input_nano_per_mtok, "input_nano_per_mtok")
        _check_money(self.output_nano_per_mtok, "output_nano_per_mtok")
        if self.basis not in get_args(Basis):
            message = f"basis must be 'modeled' or 'measured', got {self.basis!r}"
            raise InvalidRequest(message, param="basis")


def _throughput(value: object, param: str) -> Fraction:
    """Tokens per second as an exact Fraction; a float is read as its shortest decimal."""
    if isinstance(value, Fraction):
        exact = value
    else:
        exact = Fraction(_decimal(value, param, allow_float=True))
    _check_range(exact, param, minimum=0, maximum=THROUGHPUT_TOKENS_PER_S_MAX, ends="(]")
    return exact


def _utilization(value: object) -> Fraction:
    param = "utilization_ratio"
    exact = value if isinstance(value, Fraction) else Fraction(_decimal(value, param))
    _check_range(exact, param, minimum=0, maximum=1, ends="(]")
    return exact


def _cost_per_mtok(nano_per_served_s: Fraction, tokens_per_s: Fraction, param: str) -> int:
    """Nano-units of a million tokens served at ``tokens_per_s``, rounded up once."""
    result = _ceil(nano_per_served_s * TOKENS_PER_PRICE / tokens_per_s)
    if result > AMOUNT_NANO_MAX:
        message = f"{param} is too low: a million tokens would cost over {AMOUNT_NANO_MAX} nano"
        raise InvalidRequest(message, param=param)
    return result


def token_costs(
    cost_per_hour_nano: int,
    prefill_tokens_per_s: Throughput,
    output_tokens_per_s: Throughput,
    utilization_ratio: ExactNumber | Fraction,
    *,
    basis: Basis,
) -> TokenCosts:
    """Cost of a million prompt and of a million output tokens on GPUs costing this per hour.

    A second of prefill serves ``prefill_tokens_per_s`` prompt tokens and a second of decode
    ``output_tokens_per_s`` output tokens, each paying for its GPU time; the idle share of
    the hour is spread over what is served by dividing by ``utilization_ratio`` (0, 1].
    Both throughputs must be of the GPUs that ``cost_per_hour_nano`` pays for.
    """
    _check_money(cost_per_hour_nano, "cost_per_hour_nano")
    prefill = _throughput(prefill_tokens_per_s, "prefill_tokens_per_s")
    decode = _throughput(output_tokens_per_s, "output_tokens_per_s")
    utilization = _utilization(utilization_ratio)
    nano_per_served_s = Fraction(cost_per_hour_nano, SECONDS_PER_HOUR) / utilization
    costs = TokenCosts(
        input_nano_per_mtok=_cost_per_mtok(nano_per_served_s, prefill, "prefill_tokens_per_s"),
        output_nano_per_mtok=_cost_per_mtok(nano_per_served_s, decode, "output_tokens_per_s"),
        basis=basis,
    )
    assert costs.input_nano_per_mtok >= 0
    return costs


def request_cost_nano(
    costs: TokenCosts, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
) -> int:
    """The operator's cost of one request, exact and rounded up once to a whole nano-unit.

    ``cached_tokens`` (the prompt tokens served from a prefix cache, part of
    ``prompt_tokens``) cost like any prompt token in this version: a cache hit skips most of
    its prefill, but what it saves is not measured yet, so the cost errs high, never low.
    """
    _check_count(prompt_tokens, "prompt_tokens", minimum=0, maximum=TOKENS_MAX)
    _check_count(completion_tokens, "completion_tokens", minimum=0, maximum=TOKENS_MAX)
    _check_count(cached_tokens, "cached_tokens", minimum=0, maximum=prompt_tokens)
    micro_nano = (
        prompt_tokens * costs.input_nano_per_mtok + completion_tokens * costs.output_nano_per_mtok
    )
    result = div_ceil(micro_nano, TOKENS_PER_PRICE)
    assert result >= 0
    return result


def modeled_throughput(
    setup: perf.Setup, prompt_tokens: int, output_tokens: int, concurrency: int
) -> tuple[float, float]:
    """(prefill prompt tokens/s, decode output tokens/s) of one replica, from the perf model.

    Requests of ``prompt_tokens`` in and ``output_tokens`` out run ``concurrency`` at a time,
    fewer if the KV cache or the scheduler holds fewer (``perf.operating_point``). Prefill
    is what a prompt adds to a busy replica's time (``perf.prefill_busy_s``), decode the
    batch's rate at the middle of the answer. The figures are for the ``setup.gpu_count``
    GPUs of one replica.
    """
    _check_count(prompt_tokens, "prompt_tokens", minimum=1, maximum=TOKENS_MAX)
    _check_count(output_tokens, "output_tokens", minimum=1, maximum=TOKENS_MAX)
    _check_count(concurrency, "concurrency", minimum=1, maximum=CONCURRENCY_MAX)
    if not perf.fits(setup):
        message = f"{setup.model.id} does not fit on {setup.gpu_count} x {setup.gpu.id}"
        raise InvalidRequest(message, param="gpu_count")
    if perf.batch_max(setup, prompt_tokens + output_tokens) == 0:
        message = f"a request of {prompt_tokens + output_tokens} tokens does not fit in KV memory"
        raise InvalidRequest(message, param="prompt_tokens")
    point = perf.operating_point(setup, prompt_tokens, output_tokens, concurrency)
    assert point.prefill_tokens_per_s > 0
    assert point.decode_tokens_per_s > 0
    return point.prefill_tokens_per_s, point.decode_tokens_per_s
