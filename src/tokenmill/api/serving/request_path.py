"""The hot path, one script for every surface, in DESIGN order: auth -> parse -> route ->
hold and rate -> call the engine (failing over before the first byte) -> relay -> settle ->
commit the usage record with its transfers -> finish the response.

Plain ASGI, no framework objects: this is the code every token goes through. Nothing before
the engine call touches the database (keys, balances, holds and prices are in memory), and
the usage record and its ledger transfers are committed together (group commit) before the
last byte: the body of a non-streamed answer, or ``data: [DONE]`` of a stream. A request
is routed before its funds are held, so one that waits for a place holds nothing meanwhile.
The surface (``tokenmill.surfaces``) is the only part that knows the wire format.

The one exception to "no database before the engine call": a request that continues a
stored conversation (OpenAI Responses' ``previous_response_id``) reads its earlier turns
from the store before it is parsed, since they count in its prompt and its hold. A surface
that keeps its responses (``SurfaceAdapter.keeper``) has each stored with its usage record,
in one commit, before the last byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from dataclasses import dataclass
from typing import Any

from tokenmill.access.keys import Grant, may_use_model
from tokenmill.api.error_json import (
    SSE_TYPE,
    Receive,
    Scope,
    Send,
    headers_for,
    send_bytes,
    send_error,
)
from tokenmill.api.fleet_router import ClientGone, monotonic_ms
from tokenmill.api.serving.attempts import Attempts
from tokenmill.api.serving.collaborators import Collaborators
from tokenmill.api.serving.intake import authenticate, disconnected, read_body
from tokenmill.api.serving.relay import Batches, DisconnectWatcher, close_batches, relay
from tokenmill.engines.base import Backend, EngineCall
from tokenmill.errors import MethodNotAllowed, RateLimited, TokenmillError, Unavailable
from tokenmill.neutral import NeutralCall, StreamPart
from tokenmill.retail.charging import Charge, ChargeTerms, open_charge
from tokenmill.retail.rate_limits import Admission, quota_headers
from tokenmill.retail.rating import prompt_bound_tokens
from tokenmill.retail.settlement import Ending, Served, Settled, settle_request
from tokenmill.store.responses import StoredResponse
from tokenmill.surfaces import SurfaceAdapter, decode_json

STORE_DOWN = Unavailable(
    "The gateway cannot record usage right now (its store is unavailable); new requests are"
    " refused until it is back. Retry shortly.",
    retry_after_s=1,
)
OK = Ending("ok", 200)


class Refused(Exception):
    """A refusal that carries headers: a rate limit's ``x-ratelimit-*``, a 405's ``Allow``."""

    def __init__(self, error: TokenmillError, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(error.message)
        self.error = error
        self.headers = headers


@dataclass(frozen=True)
class Admitted:
    """A request past auth, parse, route, hold and rate: ready to call an engine."""

    request_id: str
    started_ns: int  # perf counter
    started_at_ms: int  # Unix
    grant: Grant
    call: NeutralCall
    backends: list[Backend]
    deadline_ms: int  # monotonic: no failover after it
    charge: Charge
    admission: Admission | None


class SurfaceEndpoint:
    """The ASGI app of one surface's endpoint."""

    def __init__(self, parts: Collaborators, surface: SurfaceAdapter) -> None:
        self.parts = parts
        self.surface = surface

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts = self.parts
        request_id = parts.request_ids()
        started = (time.perf_counter_ns(), time.time_ns() // 1_000_000)
        try:
            admitted = await self._admit(scope, receive, request_id, started)
        except ClientGone:
            parts.metrics.refused.labels(self.surface.name, "499").inc()
            return
        except (TokenmillError, Refused) as refusal:
            error, headers = (
                (refusal.error, refusal.headers) if isinstance(refusal, Refused) else (refusal, [])
            )
            parts.metrics.refused.labels(self.surface.name, str(error.http_status)).inc()
            wire = self.surface.wire
            status = wire.status(error)
            body = wire.error_body(error)
            await send_error(send, error, request_id, *headers, body=body, status=status)
            return
        run = Run(parts, self.surface, admitted)
        parts.metrics.in_flight.inc()
        try:
            if admitted.call.stream:
                await run.stream(send, receive)
            else:
                await run.complete(send)
        finally:
            parts.metrics.in_flight.dec()
            run.close()

    async def _admit(
        self, scope: Scope, receive: Receive, request_id: str, started: tuple[int, int]
    ) -> Admitted:
        parts = self.parts
        if scope["method"] != "POST":
            refused = MethodNotAllowed(scope["method"], scope["path"], ("POST",))
            raise Refused(refused, [refused.allow_header])
        grant = authenticate(parts.directory, scope)
        raw = await read_body(scope, receive, parts.limits.request_body_bytes_max)
        body = decode_json(raw)
        prior: tuple[dict[str, Any], ...] = ()
        previous = body.get("previous_response_id") if self.surface.keeper else None
        if isinstance(previous, str) and previous:  # the parser refuses any other value
            prior = await parts.responses.context(grant.account_id, previous)
        call = self.surface.parse(
            body,
            parts.models,  # type: ignore[arg-type]
            parts.limits,
            may_use=functools.partial(may_use_model, grant),
            body_bytes=len(raw),
            prior=prior,
        )
        if parts.writer.store_down:
            raise STORE_DOWN
        deadline_ms = monotonic_ms() + int(parts.limits.failover_deadline_s * 1000)
        backends = await parts.router.route(call.model, deadline_ms, lambda: disconnected(receive))
        terms = self._terms(request_id, started[1], grant, call)
        charge = open_charge(parts.funds, parts.prices, terms, parts.plans)
        admission = self._rate(grant, terms, charge)
        return Admitted(request_id, *started, grant, call, backends, deadline_ms, charge, admission)

    def _rate(self, grant: Grant, terms: ChargeTerms, charge: Charge) -> Admission | None:
        """Charge the request's rate-limit scopes (its key's and account's), all or none;
        tokens per minute reserve its bound: the prompt bound plus the output cap."""
        scopes = grant.rate_scopes(terms.model)
        if not scopes:
            return None
        limiter = self.parts.rate_limiter
        prompt = prompt_bound_tokens(terms.prompt, terms.allowance, terms.context_tokens)
        try:
            return limiter.admit(scopes, prompt + (charge.output_cap or 0), monotonic_ms())
        except RateLimited as error:
            if charge.hold is not None:
                self.parts.funds.release(charge.hold)
            raise Refused(error, quota_headers(*limiter.quotas(scopes, monotonic_ms()))) from None

    def _terms(self, request_id: str, now_ms: int, grant: Grant, call: NeutralCall) -> ChargeTerms:
        parts = self.parts
        model = parts.models[call.model]
        if parts.funds.holds_count >= parts.limits.holds_count_max:
            raise Unavailable("too many requests in flight; retry shortly")
        return ChargeTerms(
            request_id=request_id,
            account_id=grant.account_id,
            model=call.model,
            prompt=call.prompt,
            allowance=parts.allowances[call.model],
            context_tokens=model.context_tokens,
            output_cap=call.output_tokens_max,
            started_at_ms=now_ms,
            hold_expires_at_ms=now_ms + int(parts.limits.hold_ttl_s * 1000),
            key_id=grant.key_id,
            tier=model.tier,
            batch=call.batch,
            output_cap_min=call.output_tokens_min,
            cap_param=call.cap_param,
        )


class Run:
    """One admitted request: calls the engine, relays, settles, commits."""

    def __init__(self, parts: Collaborators, surface: SurfaceAdapter, admitted: Admitted) -> None:
        self.parts = parts
        self.admitted = admitted
        engine_call = EngineCall(
            admitted.request_id, admitted.call, admitted.charge.output_cap, int(time.time())
        )
        self.attempts = Attempts(parts.router, admitted.backends, engine_call, admitted.deadline_ms)
        self.renderer = surface.renderer(admitted.call, admitted.request_id, engine_call.created_s)
        self.wire = surface.wire
        self.surface = surface
        self.request_id = admitted.request_id
        admission = admitted.admission
        self.rate_headers = (
            quota_headers(admission.requests, admission.tokens) if admission is not None else []
        )
        self.tokens_used = 0  # counted once the request is recorded

    async def complete(self, send: Send) -> None:
        try:
            completed = await self.attempts.first(lambda backend, call: backend.complete(call))
        except TokenmillError as failure:
            await self._commit_quietly(self._settle(_ended_by(failure)))
            await self._send_error(send, failure)
            return
        self.attempts.end(None)
        body = self.renderer.body(completed)
        try:
            await self._commit(self._settle(OK), self._kept())
        except Unavailable as error:
            await self._send_error(send, error)
            return
        await send_bytes(send, 200, body, self.request_id, *self._engine_headers())

    async def stream(self, send: Send, receive: Receive) -> None:
        watcher = DisconnectWatcher(receive)
        try:
            opened = await self._open(send, watcher)
            if opened is None:
                return
            batches, first = opened
            headers = headers_for(self.request_id, SSE_TYPE, (b"cache-control", b"no-cache"))
            headers.extend(self._engine_headers())
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            show_usage = self.admitted.call.include_usage
            status, failure, shown = await relay(
                first, batches, self.renderer, self.wire.frame, show_usage, send, watcher
            )
        finally:
            watcher.stop()
        if status == "ok" and show_usage and not shown:  # an engine that sent no usage
            counts, _ = self.attempts.call.meter.counts()
            usage = self.wire.frame(self.renderer.usage(counts))
            await send({"type": "http.response.body", "body": usage, "more_body": True})
        self.attempts.end(failure if status == "error" else None)
        settled = self._settle(Ending(status, 200) if failure is None else _ended_by(failure))
        try:
            await self._commit(settled, self._kept() if status == "ok" else None)
        except Unavailable as commit_error:
            failure = failure or commit_error
            status = "error" if status == "ok" else status
        tail = b""
        if failure is not None and status != "cancelled":
            tail = self.renderer.fail(failure)
        elif status == "ok":
            tail = self.renderer.end(self.attempts.call.meter.counts()[0])
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _open(
        self, send: Send, watcher: DisconnectWatcher
    ) -> tuple[Batches, list[StreamPart] | None] | None:
        """Open the stream on the first deployment that answers; None if none did (the
        client got the error) or the client left first (it got nothing and owes nothing)."""

        async def open_stream(
            backend: Backend, call: EngineCall
        ) -> tuple[Batches, list[StreamPart] | None]:
            batches = backend.stream(call).__aiter__()
            try:
                watcher.arm()
                return batches, await anext(batches, None)
            except BaseException:
                await close_batches(batches)
                raise
            finally:
                watcher.disarm()

        try:
            return await self.attempts.first(open_stream)
        except asyncio.CancelledError:
            if not watcher.take_cancel():
                raise
            self.attempts.end(None)
            await self._commit_quietly(self._settle(Ending("cancelled", 499), delivered=False))
        except TokenmillError as failure:
            await self._commit_quietly(self._settle(_ended_by(failure)))
            await self._send_error(send, failure)
        return None

    async def _send_error(self, send: Send, error: TokenmillError) -> None:
        wire = self.wire
        await send_error(
            send, error, self.request_id, body=wire.error_body(error), status=wire.status(error)
        )

    def _engine_headers(self) -> list[tuple[bytes, bytes]]:
        backend = self.attempts.backend
        headers = [(b"x-tokenmill-deployment", backend.deployment.encode())]
        if backend.simulated:
            headers.append((b"x-tokenmill-simulated", b"true"))
        return headers + self.rate_headers

    def _settle(self, ending: Ending, *, delivered: bool = True) -> Settled:
        """Settle the hold for what was produced; the record and its transfers. Not
        ``delivered``: the client got no byte, so nothing is charged."""
        parts, admitted = self.parts, self.admitted
        meter = self.attempts.call.meter
        counts, estimated = meter.counts()
        backend = self.attempts.backend
        first_ns = meter.first_token_at_ns
        served = Served(
            request_id=self.request_id,
            account_id=admitted.grant.account_id,
            key_id=admitted.grant.key_id,
            model=admitted.call.model,
            deployment=backend.deployment,
            engine=backend.engine,
            surface=admitted.call.surface,
            started_at_ms=admitted.started_at_ms,
            duration_ms=(time.perf_counter_ns() - admitted.started_ns) // 1_000_000,
            ttft_ms=None if first_ns is None else (first_ns - admitted.started_ns) // 1_000_000,
            counts=counts,
            estimated=estimated,
            produced=delivered and (meter.reported is not None or first_ns is not None),
        )
        cost = parts.serving_costs.get(backend.deployment)
        settled = settle_request(parts.funds, admitted.charge, served, ending, cost)
        record = settled.record
        parts.metrics.of(record.model, record.endpoint, record.status).observe(record)
        self.tokens_used = record.prompt_tokens + record.completion_tokens
        self.finish_limits()  # the place is free before the client has the last byte
        if settled.lost:
            parts.report_loss(record, admitted.charge)
        return settled

    async def _commit(self, settled: Settled, kept: StoredResponse | None = None) -> None:
        """Commit the record with its transfers (and the response the surface keeps, if
        any); if that fails, the charge is undone in memory too (the client gets an error,
        not the whole answer, and owes nothing)."""
        record = settled.record
        try:
            await self.parts.writer.submit(record, settled.transfers, kept)
        except Unavailable:
            self.parts.funds.add(record.account_id, record.charge_nano)
            raise
        if kept is not None:
            self.parts.responses.kept(kept.account_id, kept.created_at_ms)

    async def _commit_quietly(self, settled: Settled) -> None:
        """Commit the record of a failed request; the client gets the original error."""
        # A failed commit is logged by the writer; the client needs the request's own error.
        with contextlib.suppress(Unavailable):
            await self._commit(settled)

    def _kept(self) -> StoredResponse | None:
        """The response to store with the usage record, where the surface keeps them
        (OpenAI Responses, unless the request said ``store: false``): committed together,
        before the client has its last byte, so it can be read back at once."""
        keeper = self.surface.keeper
        kept = (
            None if keeper is None else keeper(self.renderer, self.attempts.call.meter.counts()[0])
        )
        if kept is None:
            return None
        admitted = self.admitted
        return StoredResponse(
            id=kept.id,
            account_id=admitted.grant.account_id,
            previous_response_id=kept.previous_response_id,
            model=kept.model,
            created_at_ms=admitted.started_at_ms,
            expires_at_ms=self.parts.responses.expiry_ms(admitted.started_at_ms),
            input_items=kept.input_items,
            response=kept.response,
        )

    def finish_limits(self) -> None:
        """Give back the request's rate-limit place and the tokens it reserved but did not
        use (once)."""
        admission = self.admitted.admission
        if admission is not None and not admission.finished:
            self.parts.rate_limiter.finish(admission, self.tokens_used, monotonic_ms())

    def close(self) -> None:
        """After the response, however it ended: nothing stays open."""
        self.attempts.end(None)
        self.finish_limits()  # done already, unless the request ended unexpectedly
        hold = self.admitted.charge.hold
        if hold is not None and hold.open:
            # Only an unexpected exit (a bug, a cancelled task) leaves the hold open.
            self.parts.funds.release(hold)


def _ended_by(failure: TokenmillError) -> Ending:
    return Ending("error", failure.http_status, failure.type)
