"""The gateway's runtime state, built once from the settings and passed down (no globals)."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine

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
from tokenmill.api.metrics import GatewayMetrics
from tokenmill.api.request_path import RequestIds
from tokenmill.config import Config, ModelConfig, OpenAIEngineConfig, Settings
from tokenmill.engines.base import Backend
from tokenmill.engines.openai_compat import OpenAIBackend, UpstreamSession
from tokenmill.engines.sim import SimBackend
from tokenmill.errors import ConfigurationError, Unavailable
from tokenmill.store.database import open_engine
from tokenmill.store.group_commit import GroupCommitWriter
from tokenmill.usage import UsageRecord

log = logging.getLogger("tokenmill.gateway")


def build_backends(
    config: Config, environ: dict[str, str]
) -> tuple[dict[str, Backend], dict[str, UpstreamSession]]:
    """One backend per deployment; one pooled session per ``openai`` engine."""
    upstreams: dict[str, UpstreamSession] = {}
    for name, engine in config.engines.items():
        if isinstance(engine, OpenAIEngineConfig):
            api_key = None
            if engine.api_key_env:
                api_key = environ.get(engine.api_key_env)
                if not api_key:
                    raise ConfigurationError(
                        f"engines.{name}.api_key_env: the environment variable"
                        f" {engine.api_key_env} is not set",
                        param=f"engines.{name}.api_key_env",
                    )
            upstreams[name] = UpstreamSession(name, engine, config.limits, api_key)
    backends: dict[str, Backend] = {}
    for name, deployment in config.deployments.items():
        engine = config.engines[deployment.engine]
        if isinstance(engine, OpenAIEngineConfig):
            backends[name] = OpenAIBackend(name, deployment, upstreams[deployment.engine])
        else:
            backends[name] = SimBackend(
                name,
                deployment.engine,
                deployment,
                time_scale=engine.time_scale,
                queue_count_max=config.limits.sim_queue_count_max,
            )
    return backends, upstreams


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = settings.config
        self.limits = settings.config.limits
        self.models: dict[str, ModelConfig] = dict(settings.config.models)
        self.metrics = GatewayMetrics()
        self.request_ids = RequestIds()
        self.backends, self._upstreams = build_backends(settings.config, settings.environ)
        self.db: Engine = open_engine(
            settings.database_url, sqlite_synchronous=settings.config.store.sqlite_synchronous
        )
        self.directory: KeyDirectory = load_directory(self.db)
        self.admin_hashes = frozenset(
            [hash_secret(settings.admin_token)]
            if settings.admin_token
            else service.admin_token_hashes(self.db)
        )
        self.writer = GroupCommitWriter(
            self.db,
            queue_count_max=self.limits.commit_queue_count_max,
            batch_count_max=self.limits.commit_batch_count_max,
            sqlite_synchronous=settings.config.store.sqlite_synchronous,
        )
        self.io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tokenmill-io")
        self._follower: asyncio.Task[None] | None = None

    def route(self, model: str) -> Backend:
        """The deployment that serves ``model``: the first listed (routing comes later)."""
        deployments = self.models[model].deployments
        backend = self.backends.get(deployments[0])
        if backend is None:
            raise Unavailable(f"no deployment serves '{model}' now")
        return backend

    def simulated(self, model: str) -> bool:
        return all(self.backends[name].simulated for name in self.models[model].deployments)

    def observe(self, record: UsageRecord) -> None:
        self.metrics.of(record.model, record.endpoint, record.status).observe(record)

    async def start(self) -> None:
        self.writer.start()
        interval_s = self.limits.change_poll_interval_ms / 1000
        self._follower = asyncio.get_running_loop().create_task(
            follow_changes(self.db, self.directory, interval_s, self.io), name="follower"
        )

    async def sync_directory(self) -> None:
        """Apply the store's new changes now (after a write made by this process)."""
        loop = asyncio.get_running_loop()
        batch = await loop.run_in_executor(self.io, fetch_changes, self.db, self.directory)
        if batch is not None:
            apply_changes(self.directory, batch, overlap_of(self.db))

    async def stop(self) -> None:
        """Flush the usage writer, stop the engines, close the store."""
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
        await self.writer.close()
        for backend in self.backends.values():
            await backend.aclose()
        for upstream in self._upstreams.values():
            await upstream.aclose()
        self.io.shutdown(wait=True)
        self.db.dispose()
        log.info(
            "stopped: %d usage records in %d commits",
            self.writer.records_count,
            self.writer.commits_count,
        )
