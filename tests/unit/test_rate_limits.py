"""Rate limits, the pure core: token buckets in exact integers, all-or-nothing admission
over several scopes, requests in flight, tokens given back or owed, the limits' validation
and the ``x-ratelimit-*`` headers.

Every expected number is worked out here by hand from the definitions (a bucket of
``per_minute`` units refills ``per_minute`` units a minute), never by the code under test.
"""

from __future__ import annotations

from typing import Any

import pytest

from tokenmill.errors import InvalidRequest, RateLimited
from tokenmill.retail.rate_limits import (
    MINUTE_MS,
    RATE_MAX,
    Bucket,
    LocalRateLimiter,
    Quota,
    RateLimit,
    Scope,
    limits_from_spec,
    limits_to_spec,
    quota_headers,
    reset_text,
    scopes_for,
)


def full(per_minute: int, at_ms: int = 0) -> Bucket:
    return Bucket(per_minute, per_minute * MINUTE_MS, at_ms)


def scope(name: str, **limits: int) -> Scope:
    return Scope(name, RateLimit(**limits))


def refused(
    limiter: LocalRateLimiter, scopes: list[Scope], tokens: int, now_ms: int
) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        limiter.admit(scopes, tokens, now_ms)
    return caught.value


def snapshot(limiter: LocalRateLimiter) -> dict[str, tuple[Any, ...]]:
    """Every scope's levels, clocks and requests in flight."""
    found = {}
    for name, state in limiter.states.items():
        buckets = tuple(
            None if b is None else (b.per_minute, b.level, b.updated_at_ms)
            for b in (state.requests, state.tokens)
        )
        found[name] = (*buckets, state.in_flight)
    return found


class TestBucket:
    def test_a_refill_adds_per_minute_units_a_minute_exactly_in_integers(self) -> None:
        """7 a minute: the first unit is back after 60000/7 ms rounded up, not before."""
        bucket = Bucket(7, 0, 0)
        bucket.refill(8571)  # 8571 * 7 = 59997 < 60000
        assert (bucket.level, bucket.remaining()) == (59_997, 0)
        bucket.refill(8572)  # 8572 * 7 = 60004
        assert (bucket.level, bucket.remaining()) == (60_004, 1)
        bucket.refill(60_000)
        assert bucket.level == 7 * MINUTE_MS

    def test_many_small_refills_add_up_to_one_large_one(self) -> None:
        """No rounding is lost however often the bucket is refilled."""
        stepped, once = Bucket(13, 0, 0), Bucket(13, 0, 0)
        for now_ms in range(1, 4_001):
            stepped.refill(now_ms)
        once.refill(4_000)
        assert stepped.level == once.level == 13 * 4_000

    def test_a_refill_stops_at_the_capacity(self) -> None:
        bucket = Bucket(5, 5 * MINUTE_MS - 1, 0)
        bucket.refill(10 * MINUTE_MS)
        assert bucket.level == 5 * MINUTE_MS
        assert bucket.remaining() == 5
        assert bucket.updated_at_ms == 10 * MINUTE_MS

    def test_a_clock_that_goes_back_changes_nothing(self) -> None:
        bucket = Bucket(5, 0, 1_000)
        bucket.refill(500)
        assert (bucket.level, bucket.updated_at_ms) == (0, 1_000)
        bucket.refill(1_100)  # counted from 1000, not 500
        assert bucket.level == 500

    def test_a_bucket_in_debt_refills_from_below_zero(self) -> None:
        bucket = Bucket(60, -2 * MINUTE_MS, 0)
        assert bucket.remaining() == 0
        bucket.refill(2_000)  # 60 a minute: 2 units in 2 s
        assert bucket.level == 0
        bucket.refill(3_000)
        assert bucket.remaining() == 1

    def test_wait_ms_rounds_up_to_the_first_millisecond_the_units_fit(self) -> None:
        """wait_ms(n) after now, n units fit; one millisecond earlier they do not."""
        for per_minute, units in ((7, 1), (7, 3), (600, 1), (1, 1), (13, 13), (999_999, 5)):
            bucket = Bucket(per_minute, 0, 0)
            wait = bucket.wait_ms(units)
            assert wait == -(-units * MINUTE_MS // per_minute)
            early = Bucket(per_minute, 0, 0)
            early.refill(wait - 1)
            assert early.wait_ms(units) > 0
            assert early.remaining() < units
            bucket.refill(wait)
            assert bucket.wait_ms(units) == 0
            assert bucket.remaining() >= units

    def test_wait_ms_is_zero_when_the_units_fit_now(self) -> None:
        assert full(3).wait_ms(3) == 0
        assert full(3).wait_ms(0) == 0
        assert Bucket(3, MINUTE_MS, 0).wait_ms(1) == 0
        assert Bucket(3, MINUTE_MS - 1, 0).wait_ms(1) == 1  # 1 short, 3 a minute: 1 ms

    def test_full_in_ms_is_the_wait_for_a_whole_bucket(self) -> None:
        assert full(10).full_in_ms() == 0
        assert Bucket(10, 0, 0).full_in_ms() == MINUTE_MS
        assert Bucket(10, 4 * MINUTE_MS, 0).full_in_ms() == 36_000
        assert Bucket(10, -10 * MINUTE_MS, 0).full_in_ms() == 2 * MINUTE_MS

    def test_shrinking_never_leaves_more_than_the_new_capacity(self) -> None:
        bucket = full(100)
        bucket.resize(10)
        assert bucket.per_minute == 10
        assert bucket.level <= 10 * MINUTE_MS
        assert bucket.remaining() <= 10

    def test_resizing_keeps_a_debt(self) -> None:
        """A bucket owing units still owes them at any size."""
        bucket = Bucket(100, -5 * MINUTE_MS, 0)
        bucket.resize(10)
        assert bucket.level == -5 * MINUTE_MS
        bucket.resize(1_000)
        assert bucket.level == -5 * MINUTE_MS

    def test_resizing_an_exhausted_bucket_keeps_it_exhausted_when_it_shrinks(self) -> None:
        bucket = Bucket(100, 0, 0)
        bucket.resize(10)
        assert bucket.level == 0

    def test_raising_a_limit_keeps_what_was_used(self) -> None:
        """10 a minute with 3 used, raised to 100: 3 used, 97 left."""
        bucket = Bucket(10, 7 * MINUTE_MS, 0)
        bucket.resize(100)
        assert bucket.remaining() == 97

    def test_lowering_a_limit_keeps_what_was_used_within_the_new_size(self) -> None:
        """100 a minute with 5 used, lowered to 10: 5 used, 5 left."""
        bucket = Bucket(100, 95 * MINUTE_MS, 0)
        bucket.resize(10)
        assert bucket.remaining() == 5


class TestAdmit:
    def test_requests_per_minute_admit_a_full_bucket_then_refuse(self) -> None:
        limiter = LocalRateLimiter()
        scopes = [scope("key:k:*", requests_per_minute=3)]
        for left in (2, 1, 0):
            admission = limiter.admit(scopes, 0, 0)
            assert admission.requests == Quota(3, left, (3 - left) * 20_000)
            assert admission.tokens is None
        error = refused(limiter, scopes, 0, 0)
        assert error.code == "rate_limit_exceeded"
        assert error.http_status == 429
        assert "key:k:*" in error.message

    def test_a_refusal_on_the_second_scope_charges_nothing_on_the_first(self) -> None:
        """All or nothing: the key had room, the account did not; the key is not charged."""
        limiter = LocalRateLimiter()
        key = scope("key:k:*", requests_per_minute=5, tokens_per_minute=1_000)
        account = scope("account:a:*", requests_per_minute=1, tokens_per_minute=1_000)
        limiter.admit([key, account], 100, 0)
        before = snapshot(limiter)
        refused(limiter, [key, account], 100, 0)
        assert snapshot(limiter) == before
        requests, tokens = limiter.quotas([key], 0)
        assert requests is not None and tokens is not None
        assert (requests.remaining, tokens.remaining) == (4, 900)
        assert limiter.states["key:k:*"].in_flight == 1

    def test_a_token_refusal_on_the_second_scope_charges_nothing_on_the_first(self) -> None:
        limiter = LocalRateLimiter()
        key = scope("key:k:*", tokens_per_minute=1_000, concurrent_count_max=5)
        model = scope("key:k:llama", tokens_per_minute=150)
        limiter.admit([key, model], 100, 0)
        before = snapshot(limiter)
        error = refused(limiter, [key, model], 100, 0)
        assert error.code == "rate_limit_exceeded"
        assert "key:k:llama" in error.message
        assert snapshot(limiter) == before

    def test_a_concurrency_refusal_on_the_second_scope_charges_nothing_on_the_first(
        self,
    ) -> None:
        limiter = LocalRateLimiter()
        key = scope("key:k:*", requests_per_minute=10)
        account = scope("account:a:*", concurrent_count_max=1)
        limiter.admit([key, account], 0, 0)
        before = snapshot(limiter)
        refused(limiter, [key, account], 0, 0)
        assert snapshot(limiter) == before

    def test_requests_in_flight_are_capped_and_a_finish_frees_a_place(self) -> None:
        limiter = LocalRateLimiter()
        scopes = [scope("account:a:*", concurrent_count_max=2)]
        first = limiter.admit(scopes, 0, 0)
        limiter.admit(scopes, 0, 0)
        error = refused(limiter, scopes, 0, 0)
        assert error.retry_after_s == 1
        assert "2 requests in flight" in error.message
        refused(limiter, scopes, 0, 10 * MINUTE_MS)  # time alone frees no place
        limiter.finish(first, 0, 10 * MINUTE_MS)
        limiter.admit(scopes, 0, 10 * MINUTE_MS)
        refused(limiter, scopes, 0, 10 * MINUTE_MS)

    def test_a_request_larger_than_the_whole_minute_is_too_large_with_no_retry(self) -> None:
        """Waiting cannot help, so no Retry-After; nothing is charged."""
        limiter = LocalRateLimiter()
        scopes = [scope("key:k:*", requests_per_minute=5, tokens_per_minute=100)]
        error = refused(limiter, scopes, 101, 0)
        assert error.code == "request_too_large"
        assert error.retry_after_s is None
        assert error.http_status == 429
        assert "101" in error.message and "100" in error.message
        requests, tokens = limiter.quotas(scopes, 0)
        assert requests == Quota(5, 5, 0)
        assert tokens == Quota(100, 100, 0)
        assert limiter.states["key:k:*"].in_flight == 0
        admission = limiter.admit(scopes, 100, 0)  # exactly the minute's worth fits
        assert admission.tokens == Quota(100, 0, MINUTE_MS)

    def test_too_large_stays_too_large_after_any_wait(self) -> None:
        limiter = LocalRateLimiter()
        scopes = [scope("key:k:*", tokens_per_minute=100)]
        for now_ms in (0, MINUTE_MS, 100 * MINUTE_MS):
            assert refused(limiter, scopes, 101, now_ms).code == "request_too_large"

    def test_retry_after_is_the_wait_in_whole_seconds_rounded_up(self) -> None:
        """7 a minute, all used: the next one fits in 8572 ms, so Retry-After is 9 s."""
        limiter = LocalRateLimiter()
        scopes = [scope("key:k:*", requests_per_minute=7)]
        for _ in range(7):
            limiter.admit(scopes, 0, 1_000)
        assert refused(limiter, scopes, 0, 1_000).retry_after_s == 9
        assert refused(limiter, scopes, 0, 1_000 + 8_571).retry_after_s == 1
        limiter.admit(scopes, 0, 1_000 + 8_572)

    def test_retry_after_is_at_least_one_second(self) -> None:
        """600 a minute: the next one fits in 100 ms, but Retry-After says 1."""
        limiter = LocalRateLimiter()
        scopes = [scope("key:k:*", requests_per_minute=600)]
        for _ in range(600):
            limiter.admit(scopes, 0, 0)
        assert refused(limiter, scopes, 0, 0).retry_after_s == 1
        assert refused(limiter, scopes, 0, 99).retry_after_s == 1
        limiter.admit(scopes, 0, 100)

    def test_retry_after_for_tokens_is_the_wait_for_the_whole_reservation(self) -> None:
        """60 tokens a minute, 50 used: 30 more fit once 20 came back, in 20 s."""
        limiter = LocalRateLimiter()
        scopes = [scope("key:k:*", tokens_per_minute=60)]
        limiter.admit(scopes, 50, 0)
        error = refused(limiter, scopes, 30, 0)
        assert error.retry_after_s == 20
        assert "60 tokens per minute" in error.message
        assert "30" in error.message
        refused(limiter, scopes, 30, 19_999)
        limiter.admit(scopes, 30, 20_000)

    def test_the_tightest_scope_decides_the_retry_after(self) -> None:
        """The refusing scope's wait is told, not another scope's."""
        limiter = LocalRateLimiter()
        roomy = scope("key:k:*", requests_per_minute=100)
        tight = scope("account:a:*", requests_per_minute=2)
        limiter.admit([roomy, tight], 0, 0)
        limiter.admit([roomy, tight], 0, 0)
        assert refused(limiter, [roomy, tight], 0, 0).retry_after_s == 30

    def test_finish_gives_back_what_was_reserved_and_not_used(self) -> None:
        limiter = LocalRateLimiter()
        scopes = [
            scope("key:k:*", tokens_per_minute=1_000),
            scope("account:a:*", tokens_per_minute=600),
        ]
        admission = limiter.admit(scopes, 400, 0)
        assert admission.tokens == Quota(600, 200, 40_000)
        limiter.finish(admission, 150, 0)
        assert admission.finished
        assert limiter.states["key:k:*"].tokens is not None
        assert limiter.states["key:k:*"].tokens.remaining() == 850
        assert limiter.states["account:a:*"].tokens is not None
        assert limiter.states["account:a:*"].tokens.remaining() == 450
        assert limiter.states["key:k:*"].in_flight == 0

    def test_finish_refills_first_and_never_fills_past_the_capacity(self) -> None:
        limiter = LocalRateLimiter()
        scopes = [scope("key:k:*", tokens_per_minute=600)]
        admission = limiter.admit(scopes, 500, 0)
        limiter.finish(admission, 0, 30_000)  # 300 came back with time, 500 given back
        _, tokens = limiter.quotas(scopes, 30_000)
        assert tokens == Quota(600, 600, 0)

    def test_using_more_than_reserved_leaves_a_debt_that_later_requests_wait_out(
        self,
    ) -> None:
        """1000 a minute: reserve 400, use 1400: the bucket owes 400; 100 more need 500
        back, which takes 30 s."""
        limiter = LocalRateLimiter()
        scopes = [scope("key:k:*", tokens_per_minute=1_000)]
        admission = limiter.admit(scopes, 400, 0)
        limiter.finish(admission, 1_400, 0)
        bucket = limiter.states["key:k:*"].tokens
        assert bucket is not None
        assert bucket.level == -400 * MINUTE_MS
        assert bucket.remaining() == 0
        _, tokens = limiter.quotas(scopes, 0)
        assert tokens == Quota(1_000, 0, 84_000)
        assert refused(limiter, scopes, 100, 0).retry_after_s == 30
        refused(limiter, scopes, 100, 29_999)
        limiter.admit(scopes, 100, 30_000)

    def test_a_debt_delays_even_a_request_that_reserves_nothing(self) -> None:
        limiter = LocalRateLimiter()
        scopes = [scope("key:k:*", tokens_per_minute=60)]
        limiter.finish(limiter.admit(scopes, 10, 0), 70, 0)  # owes 10: 10 s
        assert refused(limiter, scopes, 0, 0).retry_after_s == 10
        limiter.admit(scopes, 0, 10_000)

    def test_finishing_twice_is_a_bug(self) -> None:
        limiter = LocalRateLimiter()
        admission = limiter.admit([scope("key:k:*", concurrent_count_max=1)], 0, 0)
        limiter.finish(admission, 0, 0)
        with pytest.raises(AssertionError):
            limiter.finish(admission, 0, 0)
        assert limiter.states["key:k:*"].in_flight == 0

    def test_quotas_charge_nothing(self) -> None:
        limiter = LocalRateLimiter()
        scopes = [scope("key:k:*", requests_per_minute=2, tokens_per_minute=10)]
        for _ in range(5):
            assert limiter.quotas(scopes, 0) == (Quota(2, 2, 0), Quota(10, 10, 0))
        limiter.admit(scopes, 10, 0)
        limiter.admit(scopes, 0, 0)

    def test_no_scopes_admit_anything(self) -> None:
        limiter = LocalRateLimiter()
        admission = limiter.admit([], 10**9, 0)
        assert (admission.requests, admission.tokens) == (None, None)
        limiter.finish(admission, 10**9, 0)

    def test_a_changed_limit_applies_to_the_next_request(self) -> None:
        limiter = LocalRateLimiter()
        for _ in range(10):
            limiter.admit([scope("key:k:*", requests_per_minute=10)], 0, 0)
        lowered = [scope("key:k:*", requests_per_minute=1)]
        refused(limiter, lowered, 0, 0)
        requests, _ = limiter.quotas(lowered, 0)
        assert requests is not None and requests.limit == 1

    def test_the_headers_tell_the_scope_with_the_fewest_left(self) -> None:
        limiter = LocalRateLimiter()
        key = scope("key:k:*", requests_per_minute=10, tokens_per_minute=50)
        account = scope("account:a:*", requests_per_minute=3, tokens_per_minute=1_000)
        admission = limiter.admit([key, account], 20, 0)
        assert admission.requests == Quota(3, 2, 20_000)
        assert admission.tokens == Quota(50, 30, 24_000)

    def test_a_tie_in_units_left_tells_the_scope_soonest_full(self) -> None:
        """5 left of 10 (full in 30 s) and 5 left of 100 (full in 57 s): the first."""
        limiter = LocalRateLimiter()
        small = scope("key:k:*", requests_per_minute=10)
        large = scope("account:a:*", requests_per_minute=100)
        for _ in range(5):
            limiter.admit([small], 0, 0)
        for _ in range(95):
            limiter.admit([large], 0, 0)
        requests, _ = limiter.quotas([large, small], 0)
        assert requests == Quota(10, 5, 30_000)


class TestScopes:
    def test_a_request_touches_the_all_models_scope_and_its_own_model(self) -> None:
        limits = {
            "*": RateLimit(requests_per_minute=5),
            "llama": RateLimit(tokens_per_minute=10),
            "mistral": RateLimit(concurrent_count_max=1),
        }
        names = [s.name for s in scopes_for("key:k_1", limits, "llama")]
        assert names == ["key:k_1:*", "key:k_1:llama"]
        assert [s.name for s in scopes_for("account:a", limits, "qwen")] == ["account:a:*"]
        assert list(scopes_for("key:k_1", {}, "llama")) == []
        only_model = {"llama": RateLimit(requests_per_minute=1)}
        assert [s.limit for s in scopes_for("key:k", only_model, "llama")] == [
            RateLimit(requests_per_minute=1)
        ]


class TestLimitsFromSpec:
    def test_a_spec_reads_into_limits_and_back(self) -> None:
        spec = {
            "sim-chat": {"tokens_per_minute": 300},
            "*": {"requests_per_minute": 5, "concurrent_count_max": 2},
        }
        limits = limits_from_spec(spec)
        assert limits == {
            "*": RateLimit(requests_per_minute=5, concurrent_count_max=2),
            "sim-chat": RateLimit(tokens_per_minute=300),
        }
        assert limits_to_spec(limits) == spec
        assert list(limits_to_spec(limits)) == ["*", "sim-chat"]

    def test_empty_entries_are_dropped(self) -> None:
        assert limits_from_spec({}) == {}
        assert limits_from_spec({"*": {}}) == {}
        assert limits_from_spec({"*": {"requests_per_minute": None}}) == {}

    def test_the_bounds_themselves_are_valid(self) -> None:
        limit = RateLimit(1, RATE_MAX, 1)
        assert limit.to_spec() == {
            "requests_per_minute": 1,
            "tokens_per_minute": RATE_MAX,
            "concurrent_count_max": 1,
        }

    @pytest.mark.parametrize(
        "field", ["requests_per_minute", "tokens_per_minute", "concurrent_count_max"]
    )
    @pytest.mark.parametrize("value", [0, -1, -(10**15), RATE_MAX + 1, True, False, 1.0, 1.5, "5"])
    def test_a_bad_value_is_refused_naming_its_field(self, field: str, value: object) -> None:
        with pytest.raises(InvalidRequest) as caught:
            limits_from_spec({"*": {field: value}})
        assert caught.value.param == field
        assert caught.value.http_status == 400
        assert field in caught.value.message
        with pytest.raises(InvalidRequest):
            RateLimit(**{field: value})  # type: ignore[arg-type]

    @pytest.mark.parametrize("spec", [None, [], ["*"], "*", 5, 1.5, True, b"{}"])
    def test_a_spec_that_is_not_an_object_is_refused(self, spec: object) -> None:
        with pytest.raises(InvalidRequest) as caught:
            limits_from_spec(spec)
        assert caught.value.param == "rate_limits"
        with pytest.raises(InvalidRequest) as named:
            limits_from_spec(spec, param="body")
        assert named.value.param == "body"

    @pytest.mark.parametrize(
        "spec",
        [
            {"*": None},
            {"*": 5},
            {"*": [("requests_per_minute", 5)]},
            {"*": {"requests_per_hour": 5}},
            {"*": {"requests_per_minute": 5, "rpm": 5}},
            {"": {"requests_per_minute": 5}},
            {"m" * 201: {"requests_per_minute": 5}},
            {5: {"requests_per_minute": 5}},
            {None: {"requests_per_minute": 5}},
        ],
    )
    def test_a_bad_entry_is_refused(self, spec: dict[Any, Any]) -> None:
        with pytest.raises(InvalidRequest) as caught:
            limits_from_spec(spec, param="limits")
        assert caught.value.param == "limits"

    def test_one_bad_entry_refuses_the_whole_spec(self) -> None:
        with pytest.raises(InvalidRequest):
            limits_from_spec({"*": {"requests_per_minute": 5}, "m": {"tokens_per_minute": 0}})

    def test_a_model_name_of_200_characters_is_valid(self) -> None:
        assert limits_from_spec({"m" * 200: {"requests_per_minute": 1}}) == {
            "m" * 200: RateLimit(requests_per_minute=1)
        }

    def test_empty_and_to_spec_leave_out_missing_kinds(self) -> None:
        assert RateLimit().empty
        assert RateLimit().to_spec() == {}
        assert not RateLimit(concurrent_count_max=3).empty
        assert RateLimit(concurrent_count_max=3).to_spec() == {"concurrent_count_max": 3}


class TestHeaders:
    def test_no_limited_kind_sends_no_header(self) -> None:
        assert quota_headers(None, None) == []

    def test_each_limited_kind_sends_limit_remaining_and_reset(self) -> None:
        assert quota_headers(Quota(3, 2, 250), None) == [
            (b"x-ratelimit-limit-requests", b"3"),
            (b"x-ratelimit-remaining-requests", b"2"),
            (b"x-ratelimit-reset-requests", b"250ms"),
        ]
        assert quota_headers(Quota(3, 0, 20_000), Quota(1_000, 400, 36_000)) == [
            (b"x-ratelimit-limit-requests", b"3"),
            (b"x-ratelimit-remaining-requests", b"0"),
            (b"x-ratelimit-reset-requests", b"20s"),
            (b"x-ratelimit-limit-tokens", b"1000"),
            (b"x-ratelimit-remaining-tokens", b"400"),
            (b"x-ratelimit-reset-tokens", b"36s"),
        ]
        assert quota_headers(None, Quota(10, 10, 0)) == [
            (b"x-ratelimit-limit-tokens", b"10"),
            (b"x-ratelimit-remaining-tokens", b"10"),
            (b"x-ratelimit-reset-tokens", b"0ms"),
        ]

    @pytest.mark.parametrize(
        ("ms", "text"),
        [
            (0, "0ms"),
            (1, "1ms"),
            (250, "250ms"),
            (999, "999ms"),
            (1_000, "1s"),
            (1_001, "2s"),
            (6_000, "6s"),
            (5_001, "6s"),
            (59_000, "59s"),
            (59_001, "1m0s"),
            (60_000, "1m0s"),
            (60_001, "1m1s"),
            (90_000, "1m30s"),
            (89_001, "1m30s"),
            (125_000, "2m5s"),
        ],
    )
    def test_reset_text_writes_durations_as_openai_does(self, ms: int, text: str) -> None:
        assert reset_text(ms) == text

    def test_reset_text_of_a_negative_duration_is_a_bug(self) -> None:
        with pytest.raises(AssertionError):
            reset_text(-1)
