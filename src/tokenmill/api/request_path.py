"""The hot path, in DESIGN order: auth -> parse and validate -> rate and hold -> route ->
call the engine -> relay -> settle -> commit the usage record and its transfers -> finish
the response.

Plain ASGI, no framework objects: this is the code every token goes through. Nothing before
the engine call touches the database (keys, balances, holds and prices are in memory), and
the usage record and its ledger transfers are committed together (group commit) before the
last byte: the body of a non-streamed answer, or ``data: [DONE]`` of a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import secrets
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from tokenmill.access.keys import Grant, check_grant, hash_secret
from tokenmill.api.error_json import (
    SSE_DONE,
    SSE_TYPE,
    Receive,
    Scope,
    Send,
    error_body,
    headers_for,
    send_bytes,
    send_error,
    sse_event,
)
from tokenmill.api.fleet_router import ClientGone, monotonic_ms
from tokenmill.api.openai_wire import PARSERS, ParsedRequest, decode_json
from tokenmill.engines.base import Backend, Endpoint, EngineCall, StreamPart
from tokenmill.errors import (
    AuthenticationFailed,
    InvalidRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimited,
    TokenmillError,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)
from tokenmill.retail.charging import Charge, ChargeTerms, close_charge, open_charge
from tokenmill.retail.ledger import Transfer, usage_transfers
from tokenmill.retail.rate_limits import Admission, quota_headers
from tokenmill.retail.rating import PromptSize, prompt_bound_tokens
from tokenmill.usage import Meter, UsageRecord

if TYPE_CHECKING:
    from tokenmill.api.gateway import Gateway

MISSING_KEY = "You didn't provide an API key. Send it in the Authorization header: 'Bearer tm-...'."


class RequestIds:
    """Unique request ids, cheaply: a random prefix per gateway and a counter."""

    def __init__(self) -> None:
        self._prefix = "req_" + secrets.token_hex(8)
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):010x}"


def authenticate(gateway: Gateway, scope: Scope) -> Grant:
    token = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, rest = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                token = rest.strip()
            break
        if name == b"x-api-key":
            token = value.decode("latin-1").strip()
    if not token:
        raise AuthenticationFailed(MISSING_KEY, code="missing_api_key")
    grant = gateway.directory.lookup(hash_secret(token))
    if grant is None:
        raise AuthenticationFailed("Incorrect API key provided.")
    check_grant(grant, time.time_ns() // 1_000_000)
    return grant


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest("The client closed the connection before sending the body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class OpenAIEndpoint:
    """The ASGI app of one OpenAI endpoint (chat, completions, embeddings)."""

    def __init__(self, gateway: Gateway, endpoint: Endpoint) -> None:
        self.gateway = gateway
        self.endpoint = endpoint
        self.parse = PARSERS[endpoint]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        request_id = gateway.request_ids()
        started_ns = time.perf_counter_ns()
        started_at_ms = time.time_ns() // 1_000_000
        try:
            if scope["method"] != "POST":
                refused = MethodNotAllowed(scope["method"], scope["path"], ("POST",))
                raise _Refused(refused, [refused.allow_header])
            grant = authenticate(gateway, scope)
            raw = await read_body(scope, receive, gateway.limits.request_body_bytes_max)
            parsed = self.parse(decode_json(raw), gateway.models, gateway.limits, grant=grant)
            if gateway.writer.store_down:
                raise STORE_DOWN
            deadline_ms = monotonic_ms() + int(gateway.limits.failover_deadline_s * 1000)
            backends = await gateway.router.route(
                parsed.model, deadline_ms, lambda: _disconnected(receive)
            )
            terms = self._terms(request_id, started_at_ms, grant, parsed, raw)
            charge = open_charge(
                gateway.money.funds, gateway.money.prices, terms, gateway.money.plans
            )
            admission = self._admit(grant, terms, charge)
        except ClientGone:
            gateway.metrics.refused.labels(self.endpoint, "499").inc()
            return
        except (TokenmillError, _Refused) as refusal:
            error, headers = (
                (refusal.error, refusal.headers) if isinstance(refusal, _Refused) else (refusal, [])
            )
            gateway.metrics.refused.labels(self.endpoint, str(error.http_status)).inc()
            await send_error(send, error, request_id, *headers)
            return
        call = EngineCall(
            request_id=request_id,
            endpoint=self.endpoint,
            public_model=parsed.model,
            body=parsed.body,
            stream=parsed.stream,
            output_tokens_max=charge.output_cap,
            stop=parsed.stop,
            created_s=int(time.time()),
        )
        run = _Run(gateway, grant, parsed, backends, call, (started_ns, started_at_ms), charge)
        run.deadline_ms = deadline_ms
        if admission is not None:
            run.admission = admission
            run.rate_headers = quota_headers(admission.requests, admission.tokens)
        gateway.metrics.in_flight.inc()
        try:
            if parsed.stream:
                await run.stream(send, receive)
            else:
                await run.complete(send)
        finally:
            gateway.metrics.in_flight.dec()
            run.end_attempt(None)
            run.finish_limits()  # done already, unless the request ended unexpectedly
            if charge.hold is not None and charge.hold.open:
                # Only an unexpected exit (a bug, a cancelled task) leaves the hold open.
                gateway.money.funds.release(charge.hold)

    def _admit(self, grant: Grant, terms: ChargeTerms, charge: Charge) -> Admission | None:
        """Charge the request's rate-limit scopes (its key's and account's), all or none;
        tokens per minute reserve its bound: the prompt bound plus the output cap."""
        scopes = grant.rate_scopes(terms.model)
        if not scopes:
            return None
        limiter = self.gateway.rate_limiter
        prompt = prompt_bound_tokens(terms.prompt, terms.allowance, terms.context_tokens)
        try:
            return limiter.admit(scopes, prompt + (charge.output_cap or 0), monotonic_ms())
        except RateLimited as error:
            if charge.hold is not None:
                self.gateway.money.funds.release(charge.hold)
            raise _Refused(error, quota_headers(*limiter.quotas(scopes, monotonic_ms()))) from None

    def _terms(
        self, request_id: str, now_ms: int, grant: Grant, parsed: ParsedRequest, raw: bytes
    ) -> ChargeTerms:
        gateway = self.gateway
        model = gateway.models[parsed.model]
        if gateway.money.funds.holds_count >= gateway.limits.holds_count_max:
            raise Unavailable("too many requests in flight; retry shortly")
        return ChargeTerms(
            request_id=request_id,
            account_id=grant.account_id,
            model=parsed.model,
            prompt=PromptSize(
                len(raw) - parsed.image_bytes,
                parsed.messages_count,
                parsed.tools_count,
                parsed.images_count,
            ),
            allowance=gateway.allowances[parsed.model],
            context_tokens=model.context_tokens,
            output_cap=parsed.output_tokens_max,
            started_at_ms=now_ms,
            hold_expires_at_ms=now_ms + int(gateway.limits.hold_ttl_s * 1000),
            key_id=grant.key_id,
            tier=model.tier,
            batch=parsed.batch,
        )


class _Refused(Exception):
    """A refusal that carries headers: a rate limit's ``x-ratelimit-*``, a 405's ``Allow``."""

    def __init__(self, error: TokenmillError, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(error.message)
        self.error = error
        self.headers = headers


async def _disconnected(receive: Receive) -> None:
    """Return when the client disconnects (the body has been read: nothing else comes)."""
    while (await receive())["type"] != "http.disconnect":
        pass


# Failures of a deployment that another deployment may not share: the next one is tried, as
# long as nothing has reached the client yet.
FAILOVER = (UpstreamError, UpstreamTimeout, Unavailable, RateLimited)
STORE_DOWN = Unavailable(
    "The gateway cannot record usage right now (its store is unavailable); new requests are"
    " refused until it is back. Retry shortly.",
    retry_after_s=1,
)
CLOSED_MEANWHILE = Unavailable("every deployment of this model is failing now; retry shortly")


class _Run:
    """One admitted request: calls the engine (failing over before the first byte), relays,
    meters, commits."""

    def __init__(
        self,
        gateway: Gateway,
        grant: Grant,
        parsed: ParsedRequest,
        backends: list[Backend],
        call: EngineCall,
        started: tuple[int, int],
        charge: Charge,
    ) -> None:
        assert backends
        self.gateway = gateway
        self.grant = grant
        self.parsed = parsed
        self.backends = backends
        self.backend = backends[0]
        self._attempting = False
        self._attempts_count = 0
        self._attempt_started_ns = 0
        self._template = call
        self.call = call
        self.started_ns, self.started_at_ms = started  # (perf counter ns, Unix ms)
        self.charge = charge
        self.request_id = call.request_id
        self.rate_headers: list[tuple[bytes, bytes]] = []
        self.tokens_used = 0  # counted once the request is recorded
        self.admission: Admission | None = None
        self.deadline_ms = 2**62  # monotonic; no attempt starts after it but the first

    def start_attempt(self, backend: Backend) -> bool:
        """Send the request to ``backend`` next, with a meter of its own (a failed attempt
        is neither recorded nor billed); False if its breaker opened meanwhile."""
        if self._attempts_count and monotonic_ms() >= self.deadline_ms:
            return False  # no failover past the request's deadline
        if not self.gateway.router.attempt_started(backend):
            return False
        if self._attempts_count:  # the first attempt has the template's fresh meter
            self.call = dataclasses.replace(self._template, meter=Meter())
        self._attempts_count += 1
        self.backend = backend
        self._attempting = True
        self._attempt_started_ns = time.perf_counter_ns()
        return True

    def end_attempt(self, failure: TokenmillError | None) -> None:
        if self._attempting:
            self._attempting = False
            first_ns = self.call.meter.first_token_at_ns
            first_byte_ms = (
                None if first_ns is None else (first_ns - self._attempt_started_ns) / 1_000_000
            )
            self.gateway.router.attempt_ended(self.backend, failure, first_byte_ms)

    def finish_limits(self) -> None:
        """Give back the request's rate-limit place and the tokens it reserved but did not
        use (once)."""
        admission = self.admission
        if admission is not None and not admission.finished:
            self.gateway.rate_limiter.finish(admission, self.tokens_used, monotonic_ms())

    def _may_fail_over(self, error: TokenmillError, index: int) -> bool:
        return isinstance(error, FAILOVER) and index < len(self.backends) - 1

    async def complete(self, send: Send) -> None:
        failure: TokenmillError = CLOSED_MEANWHILE
        body: bytes | None = None
        for index, backend in enumerate(self.backends):
            if not self.start_attempt(backend):
                continue
            try:
                body = await backend.complete(self.call)
            except TokenmillError as error:
                self.end_attempt(error)
                failure = error
                if self._may_fail_over(error, index):
                    continue
                break
            self.end_attempt(None)
            break
        if body is None:
            await self._commit_quietly(*self._record("error", failure.http_status, failure.type))
            await send_error(send, failure, self.request_id)
            return
        try:
            await self._commit(*self._record("ok", 200, None))
        except Unavailable as error:
            await send_error(send, error, self.request_id)
            return
        await send_bytes(send, 200, body, self.request_id, *self._engine_headers())

    async def _first_parts(
        self, send: Send, watcher: _DisconnectWatcher
    ) -> tuple[AsyncIterator[list[StreamPart]], list[StreamPart] | None] | None:
        """Open the stream on the first deployment that answers; None if none did (the
        client got the error) or the client left first (it got nothing and owes nothing)."""
        failure: TokenmillError = CLOSED_MEANWHILE
        for index, backend in enumerate(self.backends):
            if not self.start_attempt(backend):
                continue
            parts = backend.stream(self.call).__aiter__()
            try:
                watcher.arm()
                first: list[StreamPart] | None = await parts.__anext__()
            except StopAsyncIteration:
                first = None
            except asyncio.CancelledError:
                if not watcher.take_cancel():
                    raise
                await _close(parts)
                self.end_attempt(None)
                await self._commit_quietly(*self._record("cancelled", 499, None, delivered=False))
                return None
            except TokenmillError as error:
                await _close(parts)
                self.end_attempt(error)
                failure = error
                if self._may_fail_over(error, index):
                    continue
                break
            finally:
                watcher.disarm()
            return parts, first
        await self._commit_quietly(*self._record("error", failure.http_status, failure.type))
        await send_error(send, failure, self.request_id)
        return None

    async def stream(self, send: Send, receive: Receive) -> None:
        watcher = _DisconnectWatcher(receive)
        try:
            opened = await self._first_parts(send, watcher)
            if opened is None:
                return
            parts, first = opened
            headers = headers_for(self.request_id, SSE_TYPE, (b"cache-control", b"no-cache"))
            headers.extend(self._engine_headers())
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            status, failure = await self._relay(first, parts, send, watcher)
        finally:
            watcher.stop()
        self.end_attempt(failure if status == "error" else None)
        record, transfers = self._record(
            status,
            200 if failure is None else failure.http_status,
            None if failure is None else failure.type,
        )
        try:
            await self._commit(record, transfers)
        except Unavailable as commit_error:
            failure = failure or commit_error
            status = "error" if status == "ok" else status
        tail = b""
        if failure is not None and status != "cancelled":
            tail = sse_event(error_body(failure))
        elif status == "ok":
            tail = SSE_DONE
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _relay(
        self,
        first: list[StreamPart] | None,
        parts: AsyncIterator[list[StreamPart]],
        send: Send,
        watcher: _DisconnectWatcher,
    ) -> tuple[str, TokenmillError | None]:
        """Send every batch; return (status, error) once the stream ends, fails or is cut."""
        show_usage = self.parsed.include_usage
        usage_shown = False
        try:
            watcher.arm()
            batch = first
            while batch is not None:
                shown = [p for p in batch if show_usage or not p.usage_only]
                if shown:
                    usage_shown = usage_shown or any(p.usage_only for p in shown)
                    body = b"".join([b"data: " + p.payload + b"\n\n" for p in shown])
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                batch = await anext(parts, None)
            if show_usage and not usage_shown:
                await send(
                    {"type": "http.response.body", "body": self._usage_event(), "more_body": True}
                )
            return "ok", None
        except TokenmillError as error:
            return "error", error
        except asyncio.CancelledError:
            if not watcher.take_cancel():
                raise
            return "cancelled", None
        finally:
            watcher.disarm()
            await _close(parts)

    def _usage_event(self) -> bytes:
        """A usage chunk made here, for an engine that sent none (llama.cpp, a cut stream)."""
        counts, _ = self.call.meter.counts()
        usage = {
            "prompt_tokens": counts.prompt_tokens,
            "completion_tokens": counts.completion_tokens,
            "total_tokens": counts.prompt_tokens + counts.completion_tokens,
        }
        chat = self.call.endpoint == "chat"
        chunk: dict[str, Any] = {
            "id": ("chatcmpl-" if chat else "cmpl-") + self.request_id,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": self.call.created_s,
            "model": self.call.public_model,
            "choices": [],
            "usage": usage,
        }
        return sse_event(orjson.dumps(chunk))

    def _engine_headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"x-tokenmill-deployment", self.backend.deployment.encode())]
        if self.backend.simulated:
            headers.append((b"x-tokenmill-simulated", b"true"))
        return headers + self.rate_headers

    def _record(
        self, status: str, http_status: int, error_type: str | None, *, delivered: bool = True
    ) -> tuple[UsageRecord, tuple[Transfer, ...]]:
        """The request's usage record and ledger transfers; settles its hold. Not
        ``delivered``: the client got no byte, so nothing is charged."""
        meter = self.call.meter
        counts, estimated = meter.counts()
        produced = delivered and (meter.reported is not None or meter.first_token_at_ns is not None)
        settlement = close_charge(
            self.gateway.money.funds, self.charge, counts if produced else None
        )
        serving = self.gateway.serving_costs.get(self.backend.deployment)
        cost_nano = 0
        if serving is not None and produced:
            cost_nano = serving.cost_nano(counts)
        now_ns = time.perf_counter_ns()
        ttft_ms = None
        if meter.first_token_at_ns is not None:
            ttft_ms = (meter.first_token_at_ns - self.started_ns) // 1_000_000
        record = UsageRecord(
            request_id=self.request_id,
            account_id=self.grant.account_id,
            key_id=self.grant.key_id,
            model=self.parsed.model,
            deployment=self.backend.deployment,
            engine=self.backend.engine,
            endpoint=self.call.endpoint,
            prompt_tokens=counts.prompt_tokens if produced else 0,
            completion_tokens=counts.completion_tokens if produced else 0,
            cached_tokens=counts.cached_tokens if produced else 0,
            estimated=estimated and produced,
            status=status,
            http_status=http_status,
            error_type=error_type,
            started_at_ms=self.started_at_ms,
            ttft_ms=ttft_ms,
            duration_ms=(now_ns - self.started_ns) // 1_000_000,
            charge_nano=settlement.charged_nano,
            loss_nano=settlement.loss_nano,
            included_tokens=settlement.included_tokens,
            cost_nano=cost_nano,
            cost_basis=serving.basis if serving is not None else None,
        )
        self.gateway.observe(record)
        self.tokens_used = record.prompt_tokens + record.completion_tokens
        self.finish_limits()  # the place is free before the client has the last byte
        if not settlement.total_nano:
            return record, ()
        assert self.charge.price is not None
        if settlement.loss_nano:
            self.gateway.report_loss(record, self.charge)
        transfers = usage_transfers(
            self.request_id,
            self.grant.account_id,
            self.charge.price.currency,
            settlement,
            self.started_at_ms + record.duration_ms,
        )
        return record, transfers

    async def _commit(self, record: UsageRecord, transfers: tuple[Transfer, ...]) -> None:
        """Commit the record with its transfers; if that fails, the charge is undone in
        memory too (the client gets an error, not the whole answer, and owes nothing)."""
        try:
            await self.gateway.writer.submit(record, transfers)
        except Unavailable:
            self.gateway.money.funds.add(record.account_id, record.charge_nano)
            raise

    async def _commit_quietly(self, record: UsageRecord, transfers: tuple[Transfer, ...]) -> None:
        """Commit the record of a failed request; the client gets the original error."""
        # A failed commit is logged by the writer; the client needs the request's own error.
        with contextlib.suppress(Unavailable):
            await self._commit(record, transfers)


async def _close(parts: AsyncIterator[list[StreamPart]]) -> None:
    close = getattr(parts, "aclose", None)
    if close is not None:
        await close()


class _DisconnectWatcher:
    """Cancels the request's task when the client goes away, so the engine call stops too;
    only while armed (waiting on the engine or relaying), never in the middle of a commit."""

    def __init__(self, receive: Receive) -> None:
        self.client_gone = False
        self._armed = False
        self._cancelled = False
        self._stopped = False
        self._task = asyncio.current_task()
        self._future = asyncio.ensure_future(_disconnected(receive))
        self._future.add_done_callback(self._on_disconnect)

    def _on_disconnect(self, future: asyncio.Future[None]) -> None:
        if self._stopped or future.cancelled() or future.exception() is not None:
            return
        self.client_gone = True
        if self._armed:
            self._cancel()

    def _cancel(self) -> None:
        if self._task is not None and not self._cancelled:
            self._cancelled = True
            self._task.cancel()

    def arm(self) -> None:
        self._armed = True
        if self.client_gone:
            self._cancel()  # gone already: the next wait is cut at once

    def disarm(self) -> None:
        self._armed = False

    def take_cancel(self) -> bool:
        """Whether a CancelledError came from this watcher; if so it is absorbed (the task
        goes on to record what the client got)."""
        if not self._cancelled:
            return False
        self._cancelled = False
        if self._task is not None:
            self._task.uncancel()
        return True

    def stop(self) -> None:
        self._stopped = True
        self._armed = False
        self._future.cancel()
