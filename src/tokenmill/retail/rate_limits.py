"""Rate limits, pure: requests per minute, tokens per minute and requests in flight.

A limit is set on a key or an account, for every model (``"*"``) or for one model. The
request touches each scope that applies to it (the key's and the account's, each for all
models and for its own model) and is admitted only if every scope has room: then each is
charged, else none is (all or nothing). Requests and tokens per minute are token buckets
that refill continuously, so a full minute's quota is also the largest burst. Tokens per
minute reserve the request's bound up front (prompt bound + output cap) and give back the
unused part when it ends; a request that used more than it reserved leaves the bucket in
debt, which later requests wait out.

Levels are kept exact in integers: a bucket of ``per_minute`` units holds
``level * MINUTE_MS`` and gains ``per_minute`` for each millisecond. ``RateLimiter`` is the
one small interface the request path sees, so a shared store (Redis) can back it later for
several gateway processes; ``LocalRateLimiter`` keeps the buckets in this process's memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tokenmill.errors import InvalidRequest, RateLimited

MINUTE_MS = 60_000
ALL_MODELS = "*"
RATE_MAX = 10**12  # per minute; far beyond any real quota, keeps the integers small
FIELDS = ("requests_per_minute", "tokens_per_minute", "concurrent_count_max")


@dataclass(frozen=True)
class RateLimit:
    """One scope's limits; None: no limit of that kind."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_count_max: int | None = None

    def __post_init__(self) -> None:
        for name in FIELDS:
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= RATE_MAX
            ):
                raise InvalidRequest(
                    f"{name} must be a whole number from 1 to {RATE_MAX}, or null", param=name
                )

    @property
    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in FIELDS)

    def to_spec(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in FIELDS if getattr(self, name) is not None}


def limits_from_spec(spec: object, *, param: str = "rate_limits") -> dict[str, RateLimit]:
    """``{"*" | model: {field: int}}`` as stored or sent -> validated limits (empty dropped)."""
    if not isinstance(spec, Mapping):
        raise InvalidRequest("rate limits must be an object of model -> limits", param=param)
    found = {}
    for model, entry in spec.items():
        if not isinstance(model, str) or not 1 <= len(model) <= 200:
            raise InvalidRequest("a model name must be 1 to 200 characters", param=param)
        if not isinstance(entry, Mapping) or set(entry) - set(FIELDS):
            raise InvalidRequest(
                f"the limits of '{model}' take only {', '.join(FIELDS)}", param=param
            )
        limit = RateLimit(**{name: entry.get(name) for name in FIELDS})
        if not limit.empty:
            found[model] = limit
    return found


def limits_to_spec(limits: Mapping[str, RateLimit]) -> dict[str, dict[str, int]]:
    return {model: limit.to_spec() for model, limit in sorted(limits.items())}


@dataclass(frozen=True)
class Scope:
    """A bucket's name (``key:k_1:*``, ``account:a_1:llama``) and its limits."""

    name: str
    limit: RateLimit


def scopes_for(owner: str, limits: Mapping[str, RateLimit], model: str) -> Iterator[Scope]:
    """The scopes of ``owner`` (``key:<id>`` or ``account:<id>``) that a request for
    ``model`` touches."""
    for applies in (ALL_MODELS, model):
        limit = limits.get(applies)
        if limit is not None:
            yield Scope(f"{owner}:{applies}", limit)


@dataclass(slots=True)
class Bucket:
    """A token bucket of ``per_minute`` units; ``level`` is in units times ``MINUTE_MS``."""

    per_minute: int
    level: int
    updated_at_ms: int

    def refill(self, now_ms: int) -> None:
        full = self.per_minute * MINUTE_MS
        if now_ms > self.updated_at_ms and self.level < full:
            self.level = min(full, self.level + (now_ms - self.updated_at_ms) * self.per_minute)
        self.updated_at_ms = max(self.updated_at_ms, now_ms)

    def remaining(self) -> int:
        return max(0, self.level // MINUTE_MS)

    def wait_ms(self, units: int) -> int:
        """Milliseconds until ``units`` fit (after a refill); 0 if they fit now."""
        short = units * MINUTE_MS - self.level
        return 0 if short <= 0 else -(-short // self.per_minute)

    def full_in_ms(self) -> int:
        return self.wait_ms(self.per_minute)

    def resize(self, per_minute: int) -> None:
        """A changed limit keeps what was used: raised, the new room is there at once;
        lowered, what was used counts against the new size, down to empty (a debt owed
        already stays owed; lowering makes none)."""
        if self.level >= 0:
            used = self.per_minute * MINUTE_MS - self.level
            self.level = max(0, per_minute * MINUTE_MS - used)
        self.per_minute = per_minute
        assert self.level <= per_minute * MINUTE_MS


@dataclass(frozen=True, slots=True)
class Quota:
    """What the ``x-ratelimit-*`` headers tell: of the tightest scope, per kind."""

    limit: int
    remaining: int
    reset_ms: int


@dataclass
class Admission:
    """An admitted request's charges, handed back to ``finish``."""

    scopes: tuple[Scope, ...]
    tokens_reserved: int
    requests: Quota | None = None
    tokens: Quota | None = None
    finished: bool = False


class RateLimiter(Protocol):
    def admit(self, scopes: Sequence[Scope], tokens: int, now_ms: int) -> Admission:
        """Charge every scope, or raise RateLimited (with ``retry_after_s``) and charge none."""
        ...

    def finish(self, admission: Admission, tokens_used: int, now_ms: int) -> None:
        """The request ended: free its place, give back the tokens it did not use."""
        ...

    def quotas(self, scopes: Sequence[Scope], now_ms: int) -> tuple[Quota | None, Quota | None]:
        """The tightest requests and tokens quotas of ``scopes`` now, charging nothing."""
        ...


@dataclass(slots=True)
class _State:
    requests: Bucket | None = None
    tokens: Bucket | None = None
    in_flight: int = 0


@dataclass
class LocalRateLimiter:
    """Buckets in this process's memory, one set per scope name (bounded by the keys and
    accounts that exist, times the models configured)."""

    states: dict[str, _State] = field(default_factory=dict)

    def admit(self, scopes: Sequence[Scope], tokens: int, now_ms: int) -> Admission:
        assert tokens >= 0
        states = [self._state(scope, now_ms) for scope in scopes]
        for scope, state in zip(scopes, states, strict=True):
            _check(scope, state, tokens)
        for state in states:
            if state.requests is not None:
                state.requests.level -= MINUTE_MS
            if state.tokens is not None:
                state.tokens.level -= tokens * MINUTE_MS
            state.in_flight += 1
        admission = Admission(tuple(scopes), tokens)
        admission.requests = _tightest([s.requests for s in states])
        admission.tokens = _tightest([s.tokens for s in states])
        return admission

    def finish(self, admission: Admission, tokens_used: int, now_ms: int) -> None:
        assert not admission.finished
        admission.finished = True
        for scope in admission.scopes:
            state = self.states.get(scope.name)
            if state is None:  # pragma: no cover - states are never dropped while in flight
                continue
            state.in_flight -= 1
            assert state.in_flight >= 0
            if state.tokens is not None:
                state.tokens.refill(now_ms)
                state.tokens.level += (admission.tokens_reserved - tokens_used) * MINUTE_MS
                state.tokens.level = min(state.tokens.level, state.tokens.per_minute * MINUTE_MS)

    def quotas(self, scopes: Sequence[Scope], now_ms: int) -> tuple[Quota | None, Quota | None]:
        states = [self._state(scope, now_ms) for scope in scopes]
        return _tightest([s.requests for s in states]), _tightest([s.tokens for s in states])

    def _state(self, scope: Scope, now_ms: int) -> _State:
        state = self.states.setdefault(scope.name, _State())
        limit = scope.limit
        state.requests = _bucket(state.requests, limit.requests_per_minute, now_ms)
        state.tokens = _bucket(state.tokens, limit.tokens_per_minute, now_ms)
        return state


def _bucket(bucket: Bucket | None, per_minute: int | None, now_ms: int) -> Bucket | None:
    if per_minute is None:
        return None
    if bucket is None:
        return Bucket(per_minute, per_minute * MINUTE_MS, now_ms)
    bucket.refill(now_ms)
    if bucket.per_minute != per_minute:
        bucket.resize(per_minute)
    return bucket


def _check(scope: Scope, state: _State, tokens: int) -> None:
    limit = scope.limit
    if limit.concurrent_count_max is not None and state.in_flight >= limit.concurrent_count_max:
        raise _refused(
            f"Rate limit reached for {scope.name}: {limit.concurrent_count_max} requests in"
            " flight at most. Retry when one ends.",
            wait_ms=1000,
        )
    if state.requests is not None and state.requests.wait_ms(1):
        raise _refused(
            f"Rate limit reached for {scope.name}: {limit.requests_per_minute} requests per"
            " minute.",
            wait_ms=state.requests.wait_ms(1),
        )
    if state.tokens is not None:
        if tokens > state.tokens.per_minute:
            raise RateLimited(
                f"Request too large for {scope.name}: it may use up to {tokens} tokens (its"
                f" prompt bound plus its output cap) and the limit is"
                f" {limit.tokens_per_minute} tokens per minute. Send a shorter prompt or a"
                " lower output cap (max_tokens, max_output_tokens).",
                code="request_too_large",
            )
        if state.tokens.wait_ms(tokens):
            raise _refused(
                f"Rate limit reached for {scope.name}: {limit.tokens_per_minute} tokens per"
                f" minute; this request reserves {tokens}.",
                wait_ms=state.tokens.wait_ms(tokens),
            )


def _refused(message: str, *, wait_ms: int) -> RateLimited:
    return RateLimited(message, retry_after_s=max(1, -(-wait_ms // 1000)))


def _tightest(buckets: Sequence[Bucket | None]) -> Quota | None:
    """The quota with the fewest units left (ties: the soonest full), for the headers."""
    best: Bucket | None = None
    best_remaining = 0
    for bucket in buckets:
        if bucket is None:
            continue
        remaining = bucket.remaining()
        if (
            best is None
            or remaining < best_remaining
            or (remaining == best_remaining and bucket.full_in_ms() < best.full_in_ms())
        ):
            best, best_remaining = bucket, remaining
    return None if best is None else Quota(best.per_minute, best_remaining, best.full_in_ms())


_HEADER_NAMES = {
    kind: tuple(f"x-ratelimit-{field}-{kind}".encode() for field in ("limit", "remaining", "reset"))
    for kind in ("requests", "tokens")
}


def quota_headers(requests: Quota | None, tokens: Quota | None) -> list[tuple[bytes, bytes]]:
    """``x-ratelimit-*`` headers as OpenAI sends them, for the kinds that are limited."""
    headers = []
    for kind, quota in (("requests", requests), ("tokens", tokens)):
        if quota is not None:
            limit, remaining, reset = _HEADER_NAMES[kind]
            headers += [
                (limit, str(quota.limit).encode()),
                (remaining, str(quota.remaining).encode()),
                (reset, reset_text(quota.reset_ms).encode()),
            ]
    return headers


def reset_text(ms: int) -> str:
    """A duration as OpenAI writes it in ``x-ratelimit-reset-*``: ``1m30s``, ``250ms``, ``6s``."""
    assert ms >= 0
    if ms < 1000:
        return f"{ms}ms"
    minutes, seconds = divmod(-(-ms // 1000), 60)
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"
