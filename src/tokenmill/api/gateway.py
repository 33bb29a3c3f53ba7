"""The gateway's runtime state, built once from the settings and passed down (no globals)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import secrets
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tokenmill.access import service
from tokenmill.access.directory import KeyDirectory
from tokenmill.access.follower import (
    apply_changes,
    fetch_changes,
    follow_changes,
    load_directory,
    overlap_of,
)
from tokenmill.access.keys import hash_secret
from tokenmill.api.fleet_costs import serving_costs
from tokenmill.api.metrics import GatewayMetrics
from tokenmill.api.request_path import RequestIds, monotonic_ms
from tokenmill.billing import service as billing
from tokenmill.billing.follower import MoneyState, follow_money, load_money, sync_money
from tokenmill.billing.seeding import configured_prices
from tokenmill.config import (
    AnthropicEngineConfig,
    Config,
    ModelConfig,
    Settings,
    SimEngineConfig,
)
from tokenmill.engines.anthropic import AnthropicBackend, AnthropicSession
from tokenmill.engines.base import Backend
from tokenmill.engines.openai_compat import OpenAIBackend, UpstreamSession
from tokenmill.engines.sim import SimBackend
from tokenmill.errors import (
    ConfigurationError,
    InsufficientFunds,
    RateLimited,
    TokenmillError,
    Unavailable,
    Unprocessable,
    UpstreamError,
    UpstreamTimeout,
)
from tokenmill.fleet.breakers import Breaker
from tokenmill.fleet.routing import Candidate, FleetState, Load, choose
from tokenmill.money import format_amount
from tokenmill.retail.charging import Charge
from tokenmill.retail.funds import Hold
from tokenmill.retail.rate_limits import LocalRateLimiter, RateLimiter
from tokenmill.retail.rating import PromptAllowance
from tokenmill.retail.statements import DAY_MS
from tokenmill.store import accounts as account_rows
from tokenmill.store.database import now_ms, open_engine, write_transaction
from tokenmill.store.group_commit import GroupCommitWriter
from tokenmill.store.ownership import GatewayLock
from tokenmill.store.spool import UsageSpool
from tokenmill.usage import UsageRecord

log = logging.getLogger("tokenmill.gateway")


def build_backends(
    config: Config, environ: dict[str, str]
) -> tuple[dict[str, Backend], dict[str, UpstreamSession | AnthropicSession]]:
    """One backend per deployment; one pooled session per ``openai`` or ``anthropic``
    engine, with the API key read from the environment variable the engine names."""
    upstreams: dict[str, UpstreamSession | AnthropicSession] = {}
    for name, engine in config.engines.items():
        if isinstance(engine, SimEngineConfig):
            continue
        api_key = None
        if engine.api_key_env:
            api_key = environ.get(engine.api_key_env)
            if not api_key:
                raise ConfigurationError(
                    f"engines.{name}.api_key_env: the environment variable"
                    f" {engine.api_key_env} is not set",
                    param=f"engines.{name}.api_key_env",
                )
        if isinstance(engine, AnthropicEngineConfig):
            upstreams[name] = AnthropicSession(name, engine, config.limits, api_key)
        else:
            upstreams[name] = UpstreamSession(name, engine, config.limits, api_key)
    backends: dict[str, Backend] = {}
    for name, deployment in config.deployments.items():
        engine = config.engines[deployment.engine]
        if isinstance(engine, SimEngineConfig):
            backends[name] = SimBackend(
                name,
                deployment.engine,
                deployment,
                time_scale=engine.time_scale,
                queue_count_max=config.limits.sim_queue_count_max,
            )
            continue
        upstream = upstreams[deployment.engine]
        if isinstance(upstream, AnthropicSession):
            backends[name] = AnthropicBackend(name, deployment, upstream)
        else:
            backends[name] = OpenAIBackend(name, deployment, upstream)
    return backends, upstreams


# An attempt that failed for one of these says the deployment is failing or full.
DEPLOYMENT_FAILURES = (UpstreamError, UpstreamTimeout, Unavailable, RateLimited)


def fleet_candidates(config: Config) -> dict[str, list[Candidate]]:
    """Each model's deployments as routing sees them: own, or a vendor's with its price."""
    found = {}
    for name, model in config.models.items():
        listed = []
        for deployment_name in model.deployments:
            deployment = config.deployments[deployment_name]
            engine = config.engines[deployment.engine]
            cost = None  # a vendor is an engine with a price for the model; others are ours
            if not isinstance(engine, SimEngineConfig):
                cost = engine.prices.get(deployment.model)
            listed.append(
                Candidate(
                    deployment_name,
                    own=cost is None,
                    price_nano_per_mtok=0 if cost is None else cost.input + cost.output,
                    concurrency_max=deployment.concurrency_max,
                )
            )
        found[name] = listed
    return found


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = settings.config
        self.limits = settings.config.limits
        self.models: dict[str, ModelConfig] = dict(settings.config.models)
        self.allowances = {
            name: PromptAllowance(**model.prompt_allowance.model_dump())
            for name, model in self.models.items()
        }
        self.fleet = FleetState()
        self.rate_limiter: RateLimiter = LocalRateLimiter()
        for name in settings.config.deployments:
            self.fleet.breakers[name] = Breaker(
                self.limits.breaker_failures_count_max, int(self.limits.breaker_open_s * 1000)
            )
        self.candidates = fleet_candidates(settings.config)
        self.serving_costs = serving_costs(settings.config)
        self._candidate = {c.name: c for listed in self.candidates.values() for c in listed}
        self._models_of: dict[str, list[str]] = {name: [] for name in settings.config.deployments}
        for model, listed in self.candidates.items():
            for candidate in listed:
                self._models_of[candidate.name].append(model)
        self._waiters: dict[str, collections.deque[asyncio.Future[None]]] = {}
        self._queued_count = 0
        self.metrics = GatewayMetrics()
        self.request_ids = RequestIds()
        self.backends, self._upstreams = build_backends(settings.config, settings.environ)
        self.db: Engine = open_engine(
            settings.database_url, sqlite_synchronous=settings.config.store.sqlite_synchronous
        )
        try:
            self._lock = GatewayLock(self.db)
        except Unavailable:
            self.db.dispose()
            raise
        self.spool = UsageSpool(settings.home / "spool" / "usage.jsonl")
        if self.spool.pending:  # requests served while the store was down, before a stop
            try:
                self.spool.replay(self.db, now_ms())
            except SQLAlchemyError as exc:
                self._lock.release()
                self.db.dispose()
                raise Unavailable(
                    f"cannot replay the usage spool {self.spool.path} into the store:"
                    f" {exc.__class__.__name__}"
                ) from exc
        billing.seed_prices(self.db, configured_prices(settings.config))
        billing.seed_plans(self.db, settings.config.plans)
        self.directory: KeyDirectory = load_directory(self.db)
        self.money: MoneyState = load_money(
            self.db, {name: model.tier for name, model in self.models.items()}
        )
        unpriced = sorted(name for name in self.models if not self.money.prices.priced(name))
        if unpriced:
            log.warning("models without a price are served free: %s", ", ".join(unpriced))
        self.admin_actors = (
            {hash_secret(settings.admin_token): "admin:env"}
            if settings.admin_token
            else service.admin_token_actors(self.db)
        )
        self.writer = GroupCommitWriter(
            self.db,
            queue_count_max=self.limits.commit_queue_count_max,
            batch_count_max=self.limits.commit_batch_count_max,
            sqlite_synchronous=settings.config.store.sqlite_synchronous,
            spool=self.spool,
        )
        self.io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tokenmill-io")
        self._tasks: list[asyncio.Task[None]] = []

    async def route(self, model: str, deadline_ms: int) -> list[Backend]:
        """The deployments to try for ``model``, in order (routing policy, load, breakers).
        When every one is at its concurrency limit, wait for a place in a bounded queue until
        ``deadline_ms`` (monotonic) or ``route_queue_wait_s_max``; then 503 with Retry-After."""
        queue = self._waiters.setdefault(model, collections.deque())
        chosen = [] if queue else self._choose(model)
        if chosen:
            return chosen
        if not self._full_only(model):
            raise self._failing(model)
        if self._queued_count >= self.limits.route_queue_count_max:
            raise Unavailable(f"every deployment of '{model}' is full now", retry_after_s=1)
        until_ms = min(deadline_ms, monotonic_ms() + int(self.limits.route_queue_wait_s_max * 1000))
        loop = asyncio.get_running_loop()
        self._queued_count += 1
        try:
            while (left_ms := until_ms - monotonic_ms()) > 0:
                waiter: asyncio.Future[None] = loop.create_future()
                queue.append(waiter)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter, left_ms / 1000)
                if waiter in queue:
                    queue.remove(waiter)
                chosen = self._choose(model)
                if chosen:
                    return chosen
        finally:
            self._queued_count -= 1
            if not chosen:
                self._wake(model)  # a place it may have been woken for goes to the next
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
        if not breaker.allows(now_ms()) or not self.fleet.has_room(
            self._candidate[backend.deployment]
        ):
            return False
        breaker.attempt(now_ms())
        self.fleet.loads.setdefault(backend.deployment, Load()).in_flight += 1
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
            load.observe(first_byte_ms, failed=False)
        else:
            breaker.failed(now_ms(), (failure.retry_after_s or 0) * 1000)
            load.observe(None, failed=True)
        for model in self._models_of[backend.deployment]:
            if self._waiters.get(model):
                self._wake(model)

    def simulated(self, model: str) -> bool:
        return all(self.backends[name].simulated for name in self.models[model].deployments)

    def observe(self, record: UsageRecord) -> None:
        self.metrics.of(record.model, record.endpoint, record.status).observe(record)

    def report_loss(self, record: UsageRecord, charge: Charge) -> None:
        """A charge above its hold: the customer paid the hold, the operator the rest."""
        assert charge.price is not None and charge.hold is not None
        log.warning(
            "request %s cost %s %s more than its hold (%d prompt tokens counted upstream);"
            " booked to loss:%s",
            record.request_id,
            format_amount(record.loss_nano),
            charge.price.currency,
            record.prompt_tokens,
            charge.price.currency,
        )
        self.metrics.loss_nano.labels(charge.price.currency).inc(record.loss_nano)

    def url(self) -> str:
        host = self.settings.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.settings.port}"

    def _publish(self, url: str | None) -> None:
        """Tell the CLI where this gateway answers (None: it stopped), so ``accounts show``
        can show holds in flight."""
        try:
            with write_transaction(self.db) as connection:
                account_rows.replace_meta_value(connection, account_rows.GATEWAY_URL_META, url)
        except SQLAlchemyError as exc:
            log.warning("could not publish the gateway's address: %s", exc.__class__.__name__)

    def reserve_debit(self, account_id: str, amount_nano: int) -> Hold:
        """Hold ``amount_nano`` of an account's available funds for an admin debit, or refuse
        (422) if requests in flight and the floor leave less than that."""
        try:
            return self.money.funds.place(
                f"debit:{secrets.token_hex(8)}",
                account_id,
                amount_nano,
                now_ms() + int(self.limits.hold_ttl_s * 1000),
            )
        except (InsufficientFunds, KeyError) as exc:
            funds = self.money.funds.funds(account_id)
            available = format_amount(max(0, funds.available_nano if funds else 0))
            raise Unprocessable(
                f"the debit of {format_amount(amount_nano)} is more than the {available}"
                " available now (the balance less its floor and what requests in flight hold)",
                param="amount",
            ) from exc

    async def start(self) -> None:
        self._publish(self.url())
        self.writer.start()
        interval_s = self.limits.change_poll_interval_ms / 1000
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(
                follow_changes(self.db, self.directory, interval_s, self.io), name="follower"
            ),
            loop.create_task(
                follow_money(self.db, self.money, interval_s, self.io), name="money-follower"
            ),
            loop.create_task(self._expire_holds(), name="hold-expiry"),
        ]
        if self.limits.health_check_interval_s > 0:
            self._tasks.append(loop.create_task(self._check_health(), name="health-checks"))

    async def _expire_holds(self) -> None:
        """Release holds past their deadline, once a second, and report each one; drop
        spend counters of past budget periods when the UTC day turns."""
        day = now_ms() // DAY_MS
        while True:
            await asyncio.sleep(1.0)
            if now_ms() // DAY_MS != day:
                day = now_ms() // DAY_MS
                self.money.funds.budgets.forget_before(now_ms())
            for hold in self.money.funds.expire(now_ms()):
                log.warning(
                    "hold of request %s expired after %.0f s; released %d nano-units",
                    hold.request_id,
                    self.limits.hold_ttl_s,
                    hold.amount_nano,
                )
                self.metrics.holds_expired.inc()

    async def _check_health(self) -> None:
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

    async def sync_directory(self) -> None:
        """Apply the store's new changes now (after a write made by this process)."""
        loop = asyncio.get_running_loop()
        batch = await loop.run_in_executor(self.io, fetch_changes, self.db, self.directory)
        if batch is not None:
            apply_changes(self.directory, batch, overlap_of(self.db))
        await sync_money(self.db, self.money, self.io)

    async def stop(self) -> None:
        """Flush the usage writer, stop the engines, close the store."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.writer.close()
        for backend in self.backends.values():
            await backend.aclose()
        for upstream in self._upstreams.values():
            await upstream.aclose()
        self.io.shutdown(wait=True)
        self._publish(None)
        self._lock.release()
        self.db.dispose()
        log.info(
            "stopped: %d usage records in %d commits",
            self.writer.records_count,
            self.writer.commits_count,
        )
