"""LocalRateLimiter under any sequence of admissions, finishes and time steps, checked
against a plain model of token buckets in exact fractions and against the bounds a token
bucket promises: no window admits more than the capacity plus the refill over the window
(plus, for tokens, what finished requests gave back), requests in flight never pass their
maximum, levels never pass the capacity, and a refusal charges no scope at all."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tokenmill.errors import RateLimited
from tokenmill.retail.rate_limits import (
    MINUTE_MS,
    Admission,
    LocalRateLimiter,
    RateLimit,
    Scope,
)

KEY = "key:k_1:*"
ACCOUNT = "account:a_1:*"
MODEL = "key:k_1:llama"  # touched only by requests for that model

optional_rates = st.none() | st.integers(min_value=1, max_value=6)
optional_tokens = st.none() | st.integers(min_value=20, max_value=200)
optional_concurrent = st.none() | st.integers(min_value=1, max_value=3)
rate_limits = st.builds(
    RateLimit,
    requests_per_minute=optional_rates,
    tokens_per_minute=optional_tokens,
    concurrent_count_max=optional_concurrent,
)
reservations = st.integers(min_value=0, max_value=250)
# Mostly within a second or two (buckets barely refill), sometimes past a whole minute.
steps_ms = st.integers(min_value=0, max_value=3_000) | st.integers(
    min_value=3_000, max_value=90_000
)


@dataclass
class ModelScope:
    """One scope as the model sees it: levels in units (exact fractions)."""

    limit: RateLimit
    requests: Fraction | None
    tokens: Fraction | None
    updated_at_ms: int = 0
    in_flight: int = 0
    admitted: list[tuple[int, int, int]] = field(default_factory=list)  # (event, at_ms, tokens)
    given_back: list[tuple[int, int]] = field(default_factory=list)  # (event, reserved - used)

    def refill(self, now_ms: int) -> None:
        elapsed = max(0, now_ms - self.updated_at_ms)
        rpm, tpm = self.limit.requests_per_minute, self.limit.tokens_per_minute
        if self.requests is not None and rpm is not None:
            self.requests = min(Fraction(rpm), self.requests + Fraction(elapsed * rpm, MINUTE_MS))
        if self.tokens is not None and tpm is not None:
            self.tokens = min(Fraction(tpm), self.tokens + Fraction(elapsed * tpm, MINUTE_MS))
        self.updated_at_ms = max(self.updated_at_ms, now_ms)

    def refusal(self, tokens: int) -> tuple[str, int | None] | None:
        """Why this scope refuses a request (code, ms to wait), or None if it has room."""
        limit = self.limit
        if limit.concurrent_count_max is not None and self.in_flight >= limit.concurrent_count_max:
            return "rate_limit_exceeded", 1_000
        if self.requests is not None and self.requests < 1:
            assert limit.requests_per_minute is not None
            return "rate_limit_exceeded", wait_ms(1 - self.requests, limit.requests_per_minute)
        if self.tokens is not None:
            assert limit.tokens_per_minute is not None
            if tokens > limit.tokens_per_minute:
                return "request_too_large", None
            if self.tokens < tokens:
                return "rate_limit_exceeded", wait_ms(tokens - self.tokens, limit.tokens_per_minute)
        return None


def wait_ms(short_units: Fraction, per_minute: int) -> int:
    return math.ceil(short_units * MINUTE_MS / per_minute)


class RateLimitMachine(RuleBasedStateMachine):
    """A key, its account and one of the key's per-model limits, under any traffic."""

    def __init__(self) -> None:
        super().__init__()
        self.limiter = LocalRateLimiter()
        self.now_ms = 1_000
        self.events = 0
        self.model: dict[str, ModelScope] = {}
        self.scopes: dict[str, Scope] = {}
        self.open: list[tuple[Admission, tuple[str, ...], int]] = []  # (admission, names, tokens)

    @initialize(key=rate_limits, account=rate_limits, per_model=rate_limits)
    def set_limits(self, key: RateLimit, account: RateLimit, per_model: RateLimit) -> None:
        for name, limit in ((KEY, key), (ACCOUNT, account), (MODEL, per_model)):
            self.scopes[name] = Scope(name, limit)
            self.model[name] = ModelScope(
                limit,
                None if limit.requests_per_minute is None else Fraction(limit.requests_per_minute),
                None if limit.tokens_per_minute is None else Fraction(limit.tokens_per_minute),
                self.now_ms,
            )

    def _levels(self) -> dict[str, tuple[int | None, int | None, int]]:
        """Every scope's exact levels and requests in flight, refilled to now (a refill is
        the same in one step or many, so looking changes nothing)."""
        self.limiter.quotas(list(self.scopes.values()), self.now_ms)
        found = {}
        for name, state in self.limiter.states.items():
            found[name] = (
                None if state.requests is None else state.requests.level,
                None if state.tokens is None else state.tokens.level,
                state.in_flight,
            )
        return found

    @rule(step_ms=steps_ms)
    def wait(self, step_ms: int) -> None:
        self.now_ms += step_ms

    @rule(for_the_model=st.booleans(), tokens=reservations)
    def admit(self, for_the_model: bool, tokens: int) -> None:
        names = (KEY, ACCOUNT, MODEL) if for_the_model else (KEY, ACCOUNT)
        scopes = [self.scopes[name] for name in names]
        self.events += 1
        for name in names:
            self.model[name].refill(self.now_ms)
        expected = next(
            (why for why in (self.model[name].refusal(tokens) for name in names) if why), None
        )
        before = self._levels()
        try:
            admission = self.limiter.admit(scopes, tokens, self.now_ms)
        except RateLimited as error:
            assert expected is not None, "refused, but every scope had room"
            code, wait = expected
            assert error.code == code
            assert error.retry_after_s == (None if wait is None else max(1, -(-wait // 1000)))
            assert self._levels() == before, "a refusal charged a scope"
            return
        assert expected is None, f"admitted, but the model refuses: {expected}"
        for name in names:
            scope = self.model[name]
            if scope.requests is not None:
                scope.requests -= 1
            if scope.tokens is not None:
                scope.tokens -= tokens
            scope.in_flight += 1
            scope.admitted.append((self.events, self.now_ms, tokens))
        self.open.append((admission, names, tokens))

    @precondition(lambda self: self.open)
    @rule(pick=st.integers(min_value=0, max_value=10**6), used=st.integers(0, 400))
    def finish(self, pick: int, used: int) -> None:
        """A request ends having used any number of tokens, even more than it reserved."""
        admission, names, reserved = self.open.pop(pick % len(self.open))
        self.events += 1
        self.limiter.finish(admission, used, self.now_ms)
        for name in names:
            scope = self.model[name]
            scope.in_flight -= 1
            if scope.tokens is not None:
                scope.refill(self.now_ms)
                scope.tokens = min(
                    Fraction(scope.limit.tokens_per_minute or 0), scope.tokens + reserved - used
                )
                scope.given_back.append((self.events, reserved - used))

    @invariant()
    def the_limiter_agrees_with_the_model(self) -> None:
        for name, (requests, tokens, in_flight) in self._levels().items():
            scope = self.model[name]
            scope.refill(self.now_ms)
            assert requests == (None if scope.requests is None else scope.requests * MINUTE_MS)
            assert tokens == (None if scope.tokens is None else scope.tokens * MINUTE_MS)
            assert in_flight == scope.in_flight

    @invariant()
    def levels_never_pass_the_capacity(self) -> None:
        self._levels()
        for state in self.limiter.states.values():
            for bucket in (state.requests, state.tokens):
                if bucket is not None:
                    assert bucket.level <= bucket.per_minute * MINUTE_MS
                    assert 0 <= bucket.remaining() <= bucket.per_minute

    @invariant()
    def requests_in_flight_never_pass_the_maximum(self) -> None:
        for name, scope in self.scopes.items():
            state = self.limiter.states.get(name)
            in_flight = 0 if state is None else state.in_flight
            assert in_flight == sum(name in names for _, names, _ in self.open)
            if scope.limit.concurrent_count_max is not None:
                assert in_flight <= scope.limit.concurrent_count_max

    @invariant()
    def no_window_admits_more_than_the_bucket_allows(self) -> None:
        """Between any two admissions of a scope: what they took <= a full bucket + the
        refill over the window (+ tokens given back in between), all times MINUTE_MS."""
        for scope in self.model.values():
            rpm, tpm = scope.limit.requests_per_minute, scope.limit.tokens_per_minute
            admitted = scope.admitted
            for i, (first_event, first_ms, _) in enumerate(admitted):
                for j in range(i, len(admitted)):
                    last_event, last_ms, _ = admitted[j]
                    window_ms = last_ms - first_ms
                    if rpm is not None:
                        count = j - i + 1
                        assert count * MINUTE_MS <= rpm * MINUTE_MS + window_ms * rpm
                    if tpm is not None:
                        taken = sum(tokens for _, _, tokens in admitted[i : j + 1])
                        back = sum(
                            amount
                            for event, amount in scope.given_back
                            if first_event < event < last_event
                        )
                        assert taken * MINUTE_MS <= (tpm + back) * MINUTE_MS + window_ms * tpm


RateLimitMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestRateLimitMachine = RateLimitMachine.TestCase


@given(
    per_minute=st.integers(min_value=1, max_value=120),
    steps=st.lists(st.integers(min_value=0, max_value=5_000), min_size=1, max_size=300),
)
@settings(max_examples=200, deadline=None)
def test_a_request_is_refused_exactly_when_one_more_would_overfill_a_window(
    per_minute: int, steps: list[int]
) -> None:
    """One scope, a request at each step: every window from an admission to now holds at
    most a full bucket plus its refill, and a request is refused only if admitting it
    would break that in some window.

    With ``a_i = i * MINUTE_MS - t_i * per_minute`` for the i-th admission, ``n`` of them
    so far and the request at ``now``: a window from the i-th admission to now breaks the
    bound when ``(n - i + 1) * MINUTE_MS > per_minute * (MINUTE_MS + now - t_i)``, that
    is ``(n + 1) * MINUTE_MS - now * per_minute - a_i > per_minute * MINUTE_MS``; the
    worst window is the one with the smallest ``a_i`` so far.
    """
    limiter = LocalRateLimiter()
    scopes = [Scope("key:k:*", RateLimit(requests_per_minute=per_minute))]
    now_ms, admitted_count, smallest = 0, 0, None
    for step_ms in steps:
        now_ms += step_ms
        candidate = admitted_count * MINUTE_MS - now_ms * per_minute  # a_i if admitted
        worst = candidate if smallest is None else min(smallest, candidate)
        overfills = (admitted_count + 1) * MINUTE_MS - now_ms * per_minute - worst > (
            per_minute * MINUTE_MS
        )
        try:
            limiter.admit(scopes, 0, now_ms)
        except RateLimited as error:
            assert overfills, "refused, though no window would be overfilled"
            assert error.retry_after_s is not None and error.retry_after_s >= 1
            continue
        assert not overfills, "admitted, though a window holds more than the bucket allows"
        smallest = worst
        admitted_count += 1


@pytest.mark.parametrize("per_minute", [1, 7, 60, 1_000])
def test_an_idle_minute_refills_a_whole_bucket(per_minute: int) -> None:
    """After a burst, a minute of quiet lets a whole minute's quota through again."""
    limiter = LocalRateLimiter()
    scopes = [Scope("key:k:*", RateLimit(requests_per_minute=per_minute))]
    for start_ms in (0, MINUTE_MS, 2 * MINUTE_MS + 17):
        for _ in range(per_minute):
            limiter.admit(scopes, 0, start_ms)
        with pytest.raises(RateLimited):
            limiter.admit(scopes, 0, start_ms)
