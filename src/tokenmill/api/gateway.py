"""The gateway's runtime state, built once from the settings and passed down (no globals)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

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
from tokenmill.api.fleet_router import FleetRouter
from tokenmill.api.metrics import GatewayMetrics
from tokenmill.api.serving.collaborators import Collaborators
from tokenmill.api.serving.request_ids import RequestIds
from tokenmill.api.serving.stored_responses import ResponseStore
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
from tokenmill.engines.openai_compat import OpenAIBackend
from tokenmill.engines.sim import SimBackend
from tokenmill.engines.upstream import UpstreamSession
from tokenmill.errors import (
    ConfigurationError,
    InsufficientFunds,
    Unavailable,
    Unprocessable,
)
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
        self.rate_limiter: RateLimiter = LocalRateLimiter()
        self.serving_costs = serving_costs(settings.config)
        self.metrics = GatewayMetrics()
        self.request_ids = RequestIds()
        self.backends, self._upstreams = build_backends(settings.config, settings.environ)
        self.router = FleetRouter(settings.config, self.backends, self.serving_costs)
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
            except IntegrityError:
                pass  # refused by a constraint: the spool set it aside and logged it
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
            owner=self._lock,
        )
        self.io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tokenmill-io")
        self._tasks: list[asyncio.Task[None]] = []
        self.serving = Collaborators(
            limits=self.limits,
            models=self.models,
            allowances=self.allowances,
            directory=self.directory,
            funds=self.money.funds,
            prices=self.money.prices,
            plans=self.money.plans,
            rate_limiter=self.rate_limiter,
            router=self.router,
            writer=self.writer,
            metrics=self.metrics,
            serving_costs=self.serving_costs,
            request_ids=self.request_ids,
            report_loss=self.report_loss,
            responses=ResponseStore(self.db, self.io, self.limits),
        )

    def simulated(self, model: str) -> bool:
        return all(self.backends[name].simulated for name in self.models[model].deployments)

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
        if self._lock.can_be_lost:
            self._tasks.append(
                loop.create_task(self._watch_ownership(interval_s), name="ownership")
            )
        if self.limits.health_check_interval_s > 0:
            self._tasks.append(loop.create_task(self.router.check_health(), name="health-checks"))

    async def _watch_ownership(self, interval_s: float) -> None:
        """Check the owner lock's connection at every change poll: a lost lock stops priced
        requests at once, not at the next commit (which the fence would refuse anyway)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval_s)
            if self.writer.store_down:
                continue
            if not await loop.run_in_executor(self.io, self._lock.alive):
                self.writer.ownership_lost()

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
