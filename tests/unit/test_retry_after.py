"""An upstream's Retry-After: how the engine reads it (seconds, milliseconds, an HTTP date,
capped; nothing for what it cannot read) and how a deployment's breaker heeds it (open at
once until then, never shortened, closed by a passing health check only when it is up)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from multidict import CIMultiDict

from tokenmill.engines.upstream import RETRY_AFTER_S_MAX, retry_after_s
from tokenmill.fleet.breakers import Breaker


def headers(**given: str) -> CIMultiDict[str]:
    """Response headers as aiohttp gives them: case-insensitive."""
    return CIMultiDict({name.replace("_", "-"): value for name, value in given.items()})


def http_date(offset_s: int) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=offset_s), usegmt=True)


class TestRetryAfterParsing:
    def test_whole_seconds_are_read_as_they_are(self) -> None:
        assert retry_after_s(headers(retry_after="7")) == 7
        assert retry_after_s(headers(retry_after=" 12 ")) == 12
        assert retry_after_s(headers(retry_after="0")) == 0
        assert retry_after_s(CIMultiDict({"Retry-After": "3"})) == 3

    def test_milliseconds_round_up_to_whole_seconds(self) -> None:
        assert retry_after_s(headers(retry_after_ms="1")) == 1
        assert retry_after_s(headers(retry_after_ms="1000")) == 1
        assert retry_after_s(headers(retry_after_ms="1001")) == 2
        assert retry_after_s(headers(retry_after_ms="2500")) == 3
        assert retry_after_s(headers(retry_after_ms="0")) == 0

    def test_milliseconds_win_over_seconds_unless_unreadable(self) -> None:
        assert retry_after_s(headers(retry_after_ms="1500", retry_after="30")) == 2
        assert retry_after_s(headers(retry_after_ms="soon", retry_after="30")) == 30

    def test_an_http_date_in_the_future_is_the_seconds_until_then(self) -> None:
        # The date has whole seconds: 30 s from now is read as 29 to 30 s, rounded up.
        assert retry_after_s(headers(retry_after=http_date(30))) in (29, 30)
        assert retry_after_s(headers(retry_after=http_date(600))) in (599, 600)

    def test_an_http_date_in_the_past_means_now(self) -> None:
        assert retry_after_s(headers(retry_after=http_date(-120))) == 0
        assert retry_after_s(headers(retry_after="Wed, 21 Oct 2015 07:28:00 GMT")) == 0

    @pytest.mark.parametrize("value", ["soon", "-5", "1.5", "", "Wed, 99 Foo 2015", "0x10"])
    def test_garbage_is_no_retry_after(self, value: str) -> None:
        assert retry_after_s(headers(retry_after=value)) is None

    def test_no_header_is_no_retry_after(self) -> None:
        assert retry_after_s(headers()) is None
        assert retry_after_s(headers(content_type="application/json")) is None

    def test_huge_values_are_capped(self) -> None:
        assert retry_after_s(headers(retry_after="99999999999")) == RETRY_AFTER_S_MAX
        assert retry_after_s(headers(retry_after_ms="99999999999999")) == RETRY_AFTER_S_MAX
        assert retry_after_s(headers(retry_after=http_date(10 * 365 * 86400))) == (
            RETRY_AFTER_S_MAX
        )
        assert retry_after_s(headers(retry_after=str(RETRY_AFTER_S_MAX + 1))) == (RETRY_AFTER_S_MAX)

    @pytest.mark.parametrize("name", ["retry_after", "retry_after_ms"])
    def test_a_number_too_long_for_int_is_capped_too(self, name: str) -> None:
        assert retry_after_s(headers(**{name: "9" * 5000})) == RETRY_AFTER_S_MAX

    def test_a_superscript_digit_is_garbage(self) -> None:
        assert retry_after_s(headers(retry_after="²")) is None


class TestBreakerWithRetryAfter:
    def test_a_retry_after_opens_it_at_once_until_then(self) -> None:
        breaker = Breaker(failures_to_open=5, open_ms=10_000)
        breaker.failed(1_000, 3_000)
        assert breaker.state == "open"
        assert breaker.failures_count == 1  # one failure, fewer than five: the wait opened it
        assert breaker.retry_in_ms(1_000) == 3_000
        assert not breaker.allows(3_999)
        assert breaker.allows(4_000)
        assert breaker.retry_in_ms(4_000) == 0

    def test_without_a_retry_after_one_failure_does_not_open_it(self) -> None:
        breaker = Breaker(failures_to_open=5, open_ms=10_000)
        breaker.failed(1_000, 0)
        assert breaker.state == "closed"
        assert breaker.allows(1_000)

    def test_a_later_shorter_retry_after_does_not_shorten_it(self) -> None:
        breaker = Breaker(failures_to_open=5, open_ms=10_000)
        breaker.failed(0, 5_000)
        breaker.failed(1_000, 1_000)  # asks for 2_000: the first asked for 5_000
        assert not breaker.allows(4_999)
        assert breaker.retry_in_ms(1_000) == 4_000
        breaker.failed(2_000, 8_000)  # a longer one extends it
        assert not breaker.allows(9_999)
        assert breaker.allows(10_000)

    def test_a_passing_check_closes_it_only_when_the_time_is_up(self) -> None:
        breaker = Breaker(failures_to_open=5, open_ms=10_000)
        breaker.failed(0, 5_000)
        breaker.checked(4_999, healthy=True)
        assert breaker.state == "open"
        assert not breaker.allows(4_999)
        breaker.checked(5_000, healthy=True)
        assert breaker.state == "closed"
        assert breaker.failures_count == 0
        assert breaker.allows(5_000)

    def test_a_failed_check_counts_as_a_failure(self) -> None:
        breaker = Breaker(failures_to_open=3, open_ms=1_000)
        breaker.checked(0, healthy=False)
        breaker.checked(100, healthy=False)
        assert (breaker.state, breaker.failures_count) == ("closed", 2)
        breaker.checked(200, healthy=False)
        assert breaker.state == "open"
        assert breaker.retry_in_ms(200) == 1_000
        breaker.checked(1_200, healthy=False)  # still failing at its time: open again
        assert breaker.state == "open"
        assert not breaker.allows(2_199)

    def test_a_failed_check_fails_a_half_open_breaker(self) -> None:
        breaker = Breaker(failures_to_open=1, open_ms=1_000)
        breaker.failed(0)
        breaker.attempt(1_000)  # the probe
        assert breaker.state == "half_open"
        breaker.checked(1_010, healthy=False)
        assert breaker.state == "open"
        assert breaker.retry_in_ms(1_010) == 1_000

    def test_a_success_after_the_wait_closes_it(self) -> None:
        breaker = Breaker(failures_to_open=5, open_ms=10_000)
        breaker.failed(0, 2_000)
        breaker.attempt(2_000)
        assert breaker.state == "half_open"
        assert not breaker.allows(2_001)  # one probe at a time
        breaker.succeeded()
        assert breaker.state == "closed"
        assert breaker.allows(2_001)

    def test_failed_checks_do_not_shorten_an_upstreams_retry_after(self) -> None:
        breaker = Breaker(failures_to_open=2, open_ms=1_000)
        breaker.failed(0, 60_000)
        breaker.checked(100, healthy=False)
        assert breaker.state == "open"
        assert not breaker.allows(59_999)
