"""Routing and circuit breakers, pure."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tokenmill.fleet.breakers import Breaker
from tokenmill.fleet.routing import Candidate, FleetState, Load, choose

OWN = Candidate("own", own=True, concurrency_max=2)
CHEAP = Candidate("cheap", own=False, price_nano_per_mtok=100)
DEAR = Candidate("dear", own=False, price_nano_per_mtok=900)


class TestBreaker:
    def test_it_opens_after_the_failures_in_a_row_and_not_before(self) -> None:
        """Four failures leave it closed; the fifth opens it."""
        breaker = Breaker(failures_to_open=5, open_ms=1000)
        for _ in range(4):
            breaker.attempt(0)
            breaker.failed(0)
        assert breaker.allows(0)
        breaker.attempt(0)
        breaker.failed(0)
        assert not breaker.allows(0)
        assert not breaker.allows(999)

    def test_a_success_resets_the_count(self) -> None:
        """Failures must be consecutive: a success in between starts over."""
        breaker = Breaker(failures_to_open=2, open_ms=1000)
        breaker.failed(0)
        breaker.succeeded()
        breaker.failed(0)
        assert breaker.allows(0)

    def test_after_the_open_time_one_probe_goes_and_its_success_closes_it(self) -> None:
        """Half-open lets exactly one attempt through until it ends."""
        breaker = Breaker(failures_to_open=1, open_ms=1000)
        breaker.failed(0)
        assert breaker.allows(1000)
        breaker.attempt(1000)
        assert breaker.state == "half_open"
        assert not breaker.allows(1000)  # the probe is in flight
        breaker.succeeded()
        assert breaker.state == "closed"
        assert breaker.allows(1001)

    def test_a_failed_probe_opens_it_for_another_period(self) -> None:
        """The probe fails: open again, from the probe's time."""
        breaker = Breaker(failures_to_open=3, open_ms=1000)
        for _ in range(3):
            breaker.failed(0)
        breaker.attempt(1500)
        breaker.failed(1500)
        assert breaker.state == "open"
        assert not breaker.allows(2499)
        assert breaker.allows(2500)


def alternate(breaker: Breaker, attempt: int) -> None:
    """An attempt at time 0 that fails when ``attempt`` is odd."""
    breaker.attempt(0)
    if attempt % 2:
        breaker.failed(0)
    else:
        breaker.succeeded()


class TestFailureRatio:
    def test_failing_every_other_request_opens_it_by_the_ratio(self) -> None:
        """Never two failures in a row, yet half fail: after enough attempts the moving
        ratio reaches 0.5 and the breaker opens."""
        breaker = Breaker(failures_to_open=5, open_ms=1000, failure_ratio_max=0.5)
        opened_after = None
        for attempt in range(100):
            breaker.attempt(0)
            if attempt % 2:
                breaker.failed(0)
            else:
                breaker.succeeded()
            if breaker.state == "open":
                opened_after = attempt + 1
                break
        assert opened_after is not None
        assert opened_after >= 20  # not before RATIO_ATTEMPTS_MIN attempts

    def test_a_ratio_of_one_never_opens_it_that_way(self) -> None:
        breaker = Breaker(failures_to_open=5, open_ms=1000, failure_ratio_max=1.0)
        for attempt in range(200):
            alternate(breaker, attempt)
        assert breaker.state == "closed"

    def test_closing_again_starts_the_ratio_over(self) -> None:
        """After a probe closes it, a single failure does not reopen it by the old ratio."""
        breaker = Breaker(failures_to_open=100, open_ms=1000, failure_ratio_max=0.3)
        for attempt in range(40):
            alternate(breaker, attempt)
            if breaker.state == "open":
                break
        assert breaker.state == "open"
        breaker.attempt(1000)
        breaker.succeeded()
        breaker.attempt(1000)
        breaker.failed(1000)
        assert breaker.state == "closed"


class TestChoose:
    def test_own_first_tries_own_then_vendors_cheapest_first(self) -> None:
        """Own deployments with room come first, then vendors by price."""
        order = choose([DEAR, CHEAP, OWN], FleetState(), 0)
        assert [c.name for c in order] == ["own", "cheap", "dear"]

    def test_a_full_own_deployment_overflows_to_vendors(self) -> None:
        """At its concurrency limit an own deployment is skipped."""
        state = FleetState(loads={"own": Load(in_flight=2)})
        assert [c.name for c in choose([OWN, CHEAP], state, 0)] == ["cheap"]

    def test_an_open_breaker_is_skipped_until_its_time_is_up(self) -> None:
        """A failing vendor is left out, then offered again for a probe."""
        state = FleetState()
        breaker = state.breaker("cheap")
        breaker.failures_to_open, breaker.open_ms = 1, 1000
        breaker.failed(0)
        assert [c.name for c in choose([CHEAP, DEAR], state, 10)] == ["dear"]
        assert [c.name for c in choose([CHEAP, DEAR], state, 1000)] == ["cheap", "dear"]

    def test_cheapest_puts_own_deployments_first_as_they_cost_nothing_per_token(self) -> None:
        """Price order, own deployments at 0."""
        order = choose([DEAR, OWN, CHEAP], FleetState(), 0, "cheapest")
        assert [c.name for c in order] == ["own", "cheap", "dear"]

    def test_least_busy_orders_by_how_full_each_is(self) -> None:
        """Half-full before three-quarters-full."""
        a = Candidate("a", own=True, concurrency_max=4)
        b = Candidate("b", own=True, concurrency_max=2)
        state = FleetState(loads={"a": Load(in_flight=3), "b": Load(in_flight=1)})
        assert [c.name for c in choose([a, b], state, 0, "least-busy")] == ["b", "a"]

    def test_latency_puts_the_unmeasured_first_then_the_fastest(self) -> None:
        """An unmeasured deployment is tried first (to measure it), then by moving average."""
        a, b, c = (Candidate(n, own=True) for n in "abc")
        state = FleetState(loads={"a": Load(), "b": Load(), "c": Load()})
        state.loads["a"].observe(80.0)
        state.loads["b"].observe(20.0)
        assert [x.name for x in choose([a, b, c], state, 0, "latency")] == ["c", "b", "a"]
        state.loads["c"].observe(50.0)
        assert [x.name for x in choose([a, b, c], state, 0, "latency")] == ["b", "c", "a"]

    def test_the_moving_average_follows_new_measurements(self) -> None:
        """0.2 of each new figure: 100 then 0 gives 80."""
        load = Load()
        load.observe(100.0)
        load.observe(0.0)
        assert load.first_byte_ms_avg == 80.0

    def test_weights_pick_the_first_deployment_in_proportion(self) -> None:
        """Weights 9 and 1: draws below 0.9 lead with 'own', the rest with 'cheap'; the
        other deployments follow in policy order; a weight of 0 is never drawn."""
        weights = {"own": 9, "cheap": 1, "dear": 0}
        leaders = [
            choose([OWN, CHEAP, DEAR], FleetState(), 0, weights=weights, draw=i / 100)[0].name
            for i in range(100)
        ]
        assert leaders.count("own") == 90
        assert leaders.count("cheap") == 10
        order = choose([OWN, CHEAP, DEAR], FleetState(), 0, weights=weights, draw=0.95)
        assert [c.name for c in order] == ["cheap", "own", "dear"]

    def test_a_weighted_deployment_that_is_full_is_not_drawn(self) -> None:
        """Only usable deployments share the weights."""
        state = FleetState(loads={"own": Load(in_flight=2)})
        order = choose([OWN, CHEAP], state, 0, weights={"own": 99, "cheap": 1}, draw=0.0)
        assert [c.name for c in order] == ["cheap"]

    def test_nothing_usable_gives_an_empty_list(self) -> None:
        """Every deployment full: the gateway answers 503 instead of waiting."""
        state = FleetState(loads={"own": Load(in_flight=2)})
        assert choose([OWN], state, 0) == []


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[Candidate], FleetState, int]:
    count = draw(st.integers(min_value=1, max_value=6))
    candidates, state = [], FleetState()
    for index in range(count):
        name = f"d{index}"
        limit = draw(st.none() | st.integers(min_value=1, max_value=4))
        candidates.append(
            Candidate(
                name,
                own=draw(st.booleans()),
                price_nano_per_mtok=draw(st.integers(min_value=0, max_value=1000)),
                concurrency_max=limit,
            )
        )
        state.loads[name] = Load(
            in_flight=draw(st.integers(min_value=0, max_value=5)),
            first_byte_ms_avg=draw(st.none() | st.floats(min_value=0, max_value=1000)),
        )
        breaker = state.breaker(name)
        breaker.failures_to_open = draw(st.integers(min_value=1, max_value=3))
        breaker.open_ms = 1000
        for _ in range(draw(st.integers(min_value=0, max_value=4))):
            breaker.failed(draw(st.integers(min_value=0, max_value=2000)))
    return candidates, state, draw(st.integers(min_value=0, max_value=4000))


class TestChooseProperties:
    @given(
        fleet=fleets(),
        policy=st.sampled_from(["own-first", "cheapest", "least-busy", "latency"]),
        weights=st.none()
        | st.dictionaries(
            st.sampled_from([f"d{i}" for i in range(6)]), st.integers(min_value=0, max_value=5)
        ),
        draw=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    )
    def test_never_an_open_breaker_nor_a_full_deployment(
        self,
        fleet: tuple[list[Candidate], FleetState, int],
        policy: str,
        weights: dict[str, int] | None,
        draw: float,
    ) -> None:
        """Whatever the state, policy and weights, a chosen deployment has room and a breaker
        that allows it, and every such deployment is chosen once."""
        candidates, state, now = fleet
        chosen = choose(candidates, state, now, policy, weights, draw)
        for candidate in chosen:
            limit = candidate.concurrency_max
            assert limit is None or state.loads[candidate.name].in_flight < limit
            assert state.breaker(candidate.name).allows(now)
        usable = [
            c
            for c in candidates
            if (c.concurrency_max is None or state.loads[c.name].in_flight < c.concurrency_max)
            and state.breaker(c.name).allows(now)
        ]
        assert sorted(c.name for c in chosen) == sorted(c.name for c in usable)
