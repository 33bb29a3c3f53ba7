"""The one failover loop: a request tries its deployments in the router's order until one
answers, before anything reaches the client, each attempt with a meter of its own (a
failed attempt is neither recorded nor billed) and its outcome told to the router (load,
breakers, time to first byte)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tokenmill.api.fleet_router import FleetRouter, monotonic_ms
from tokenmill.engines.base import Backend, EngineCall
from tokenmill.errors import (
    RateLimited,
    TokenmillError,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)
from tokenmill.usage import Meter

# Failures of a deployment that another deployment may not share: the next one is tried, as
# long as nothing has reached the client yet.
FAILOVER = (UpstreamError, UpstreamTimeout, Unavailable, RateLimited)
CLOSED_MEANWHILE = Unavailable("every deployment of this model is failing now; retry shortly")

Opened = TypeVar("Opened")


class Attempts:
    """The attempts of one request: which backend serves it now, with which call."""

    def __init__(
        self, router: FleetRouter, backends: list[Backend], call: EngineCall, deadline_ms: int
    ) -> None:
        assert backends
        self._router = router
        self._backends = backends
        self._template = call
        self._deadline_ms = deadline_ms  # monotonic; no attempt starts after it but the first
        self._attempting = False
        self._count = 0
        self._started_ns = 0
        self.backend = backends[0]
        self.call = call

    async def first(self, open_: Callable[[Backend, EngineCall], Awaitable[Opened]]) -> Opened:
        """What the first deployment to answer answers (``open_`` of it); the last failure
        if none does. The attempt that answered stays open: ``end`` closes it."""
        failure: TokenmillError = CLOSED_MEANWHILE
        for index, backend in enumerate(self._backends):
            if not self._start(backend):
                continue
            try:
                return await open_(backend, self.call)
            except TokenmillError as error:
                self.end(error)
                failure = error
                if isinstance(error, FAILOVER) and index < len(self._backends) - 1:
                    continue
                break
        raise failure

    def _start(self, backend: Backend) -> bool:
        """Send the request to ``backend`` next, with a fresh meter; False if its breaker
        opened meanwhile or the request's failover deadline has passed."""
        if self._count and monotonic_ms() >= self._deadline_ms:
            return False
        if not self._router.attempt_started(backend):
            return False
        if self._count:  # the first attempt has the template's fresh meter
            self.call = dataclasses.replace(self._template, meter=Meter())
        self._count += 1
        self.backend = backend
        self._attempting = True
        self._started_ns = time.perf_counter_ns()
        return True

    def end(self, failure: TokenmillError | None) -> None:
        """Tell the router how the open attempt ended (once; later calls do nothing)."""
        if not self._attempting:
            return
        self._attempting = False
        first_ns = self.call.meter.first_token_at_ns
        first_byte_ms = None if first_ns is None else (first_ns - self._started_ns) / 1_000_000
        self._router.attempt_ended(self.backend, failure, first_byte_ms)
