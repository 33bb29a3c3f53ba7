"""The fleet at run time: which deployments a request tries (routing over in-memory load and
breakers), the bounded queue when all are full, each attempt's outcome, background health
checks. The choice itself is pure (``fleet.routing``); this is its state and its waits.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from tokenmill.config import Config, ModelConfig
from tokenmill.engines.base import Backend
from tokenmill.errors import (
    RateLimited,
    TokenmillError,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)
from tokenmill.fleet.breakers import Breaker
from tokenmill.fleet.costs import ServingCost
from tokenmill.fleet.routing import Candidate, FleetState, choose
from tokenmill.store.database import now_ms

log = logging.getLogger("tokenmill.fleet")


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class ClientGone(Exception):
    """The client disconnected while its request waited for a place: nobody to answer."""


# An attempt that failed for one of these says the deployment is failing or full.
DEPLOYMENT_FAILURES = (UpstreamError, UpstreamTimeout, Unavailable, RateLimited)


def fleet_candidates(
    config: Config, costs: Mapping[str, ServingCost]
) -> dict[str, list[Candidate]]:
    """Each model's deployments as routing sees them: a vendor's (its cost is the vendor's
    price list, ``serving_costs``) with that price per million tokens, or the operator's own."""
    found = {}
    for name, model in config.models.items():
        listed = []
        for deployment_name in model.deployments:
            cost = costs.get(deployment_name)
            vendor = cost is not None and cost.basis == "vendor"
            listed.append(
                Candidate(
                    deployment_name,
                    own=not vendor,
                    price_nano_per_mtok=(
                        cost.input_nano_per_mtok + cost.output_nano_per_mtok
                        if cost is not None and vendor
                        else 0
                    ),
                    concurrency_max=config.deployments[deployment_name].concurrency_max,
                )
            )
        found[name] = listed
    return found


class FleetRouter:
    def __init__(
        self, config: Config, backends: dict[str, Backend], costs: Mapping[str, ServingCost]
    ) -> None:
        self.limits = config.limits
        self.models: dict[str, ModelConfig] = dict(config.models)
        self.backends = backends
        self.fleet = FleetState()
        for name in config.deployments:
            self.fleet.breakers[name] = Breaker(
                self.limits.breaker_failures_count_max,
                int(self.limits.breaker_open_s * 1000),
                self.limits.breaker_failure_ratio_max,
            )
        self.candidates = fleet_candidates(config, costs)
        self._candidate = {c.name: c for listed in self.candidates.values() for c in listed}
        self._models_of: dict[str, list[str]] = {name: [] for name in config.deployments}
        for model, listed in self.candidates.items():
            for candidate in listed:
                self._models_of[candidate.name].append(model)
        self._waiters: dict[str, collections.deque[asyncio.Future[None]]] = {}
        self._queued_count = 0

    async def route(
        self, model: str, deadline_ms: int, client_gone: Callable[[], Awaitable[Any]]
    ) -> list[Backend]:
        """The deployments to try for ``model``, in order (routing policy, load, breakers).
        When every one is at its concurrency limit, wait for a place in a bounded queue until
        ``deadline_ms`` (monotonic) or ``route_queue_wait_s_max``; then 503 with Retry-After.
        ``client_gone`` returns when the client disconnects: a client that leaves while its
        request waits raises ClientGone and gives up its place in the queue."""
        queue = self._waiters.setdefault(model, collections.deque())
        if not queue:  # with others waiting, a new request waits behind them
            chosen = self._choose(model)
            if chosen:
                return chosen
            if not self._full_only(model):
                raise self._failing(model)
        if self._queued_count >= self.limits.route_queue_count_max:
            raise Unavailable(f"every deployment of '{model}' is full now", retry_after_s=1)
        until_ms = min(deadline_ms, monotonic_ms() + int(self.limits.route_queue_wait_s_max * 1000))
        gone = asyncio.ensure_future(client_gone())
        self._queued_count += 1
        try:
            return await self._wait_for_place(model, queue, until_ms, gone)
        finally:
            self._queued_count -= 1
            gone.cancel()

    async def _wait_for_place(
        self,
        model: str,
        queue: collections.deque[asyncio.Future[None]],
        until_ms: int,
        gone: asyncio.Future[Any],
    ) -> list[Backend]:
        loop = asyncio.get_running_loop()
        woken = False
        try:
            while (left_ms := until_ms - monotonic_ms()) > 0:
                waiter: asyncio.Future[None] = loop.create_future()
                if woken:  # for a place another request took first: it keeps its turn
                    queue.appendleft(waiter)
                else:
                    queue.append(waiter)
                await asyncio.wait(
                    {waiter, gone}, timeout=left_ms / 1000, return_when=asyncio.FIRST_COMPLETED
                )
                woken = waiter.done()
                if not woken:
                    queue.remove(waiter)
                    waiter.cancel()
                if gone.done():
                    raise ClientGone
                chosen = self._choose(model)
                if chosen:
                    return chosen
        except BaseException:
            if woken:
                self._wake(model)  # the place it was woken for goes to the next
            raise
        if woken:
            self._wake(model)
        raise Unavailable(
            f"every deployment of '{model}' stayed full for"
            f" {self.limits.route_queue_wait_s_max:g} s; retry shortly",
            retry_after_s=1,
        )

    @property
    def queued_count(self) -> int:
        return self._queued_count

    def fleet_candidate(self, deployment: str) -> Candidate | None:
        """The deployment as routing sees it; None if no model uses it."""
        return self._candidate.get(deployment)

    def _choose(self, model: str) -> list[Backend]:
        config = self.models[model]
        draw = random.random() if config.weights else 0.0  # a share, not a secret
        chosen = choose(
            self.candidates[model], self.fleet, now_ms(), config.routing, config.weights, draw
        )
        return [self.backends[candidate.name] for candidate in chosen]

    def _full_only(self, model: str) -> bool:
        """Whether some deployment of ``model`` is healthy but full (worth waiting for)."""
        return any(
            not self.fleet.has_room(c) and self.fleet.breaker(c.name).allows(now_ms())
            for c in self.candidates[model]
        )

    def _failing(self, model: str) -> Unavailable:
        waits = [self.fleet.breaker(c.name).retry_in_ms(now_ms()) for c in self.candidates[model]]
        return Unavailable(
            f"every deployment of '{model}' is failing now; retry shortly",
            retry_after_s=max(1, -(-min(waits, default=1000) // 1000)),
        )

    def _wake(self, model: str) -> None:
        queue = self._waiters.get(model)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def attempt_started(self, backend: Backend) -> bool:
        """Start an attempt on ``backend``, unless its breaker opened or it filled up since
        the route was chosen (other requests failed there, or took its places, meanwhile)."""
        breaker = self.fleet.breaker(backend.deployment)
        now = now_ms()
        if not breaker.allows(now) or not self.fleet.has_room(self._candidate[backend.deployment]):
            return False
        breaker.attempt(now)
        self.fleet.loads[backend.deployment].in_flight += 1  # has_room made the Load
        return True

    def attempt_ended(
        self, backend: Backend, failure: TokenmillError | None, first_byte_ms: float | None = None
    ) -> None:
        """Count the attempt's outcome: a failure of the upstream or of capacity feeds the
        deployment's breaker (an upstream's Retry-After opens it until then); a client's
        error (400) says nothing of the deployment. A freed place goes to a waiting request."""
        load = self.fleet.loads[backend.deployment]
        load.in_flight -= 1
        assert load.in_flight >= 0
        breaker = self.fleet.breaker(backend.deployment)
        if failure is None or not isinstance(failure, DEPLOYMENT_FAILURES):
            breaker.succeeded()
            if first_byte_ms is not None:
                load.observe(first_byte_ms)
        else:
            breaker.failed(now_ms(), (failure.retry_after_s or 0) * 1000)
        for model in self._models_of[backend.deployment]:
            if self._waiters.get(model):
                self._wake(model)

    async def check_health(self) -> None:
        """Check every remote deployment now and then, all at once: a failure counts like a
        failed attempt; a pass closes a breaker whose open time is up."""
        checked = {
            name: check
            for name, backend in self.backends.items()
            if (check := getattr(backend, "check_health", None)) is not None
        }
        while checked:
            await asyncio.sleep(self.limits.health_check_interval_s)
            results = await asyncio.gather(*(check() for check in checked.values()))
            for name, healthy in zip(checked, results, strict=True):
                breaker = self.fleet.breaker(name)
                was = breaker.state
                breaker.checked(now_ms(), healthy)
                if breaker.state != was:
                    log.warning(
                        "deployment %s: health check %s, breaker %s",
                        name,
                        "passed" if healthy else "failed",
                        breaker.state,
                    )
