"""Shared fixtures: databases (SQLite file, private PostgreSQL database), the fake upstream,
and a live gateway served by uvicorn on loopback."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import Engine

from tokenmill.access import service
from tokenmill.api.app import create_app
from tokenmill.api.http_protocol import server_options
from tokenmill.config import Settings, parse_config
from tokenmill.errors import NotFound
from tokenmill.store.database import open_engine
from tokenmill.store.usage import query_records, record_by_request_id
from tokenmill.testing import FakeUpstreamState, ServerThread, fake_upstream_app
from tokenmill.usage import UsageRecord

PG_URL_ENV = "TOKENMILL_TEST_PG_URL"
FAKE_BEHAVIOURS = (
    "fake",
    "fake-nousage",
    "fake-running",
    "fake-500",
    "fake-429",
    "fake-400",
    "fake-hang",
    "fake-garbage",
    "fake-cut",
    "fake-slow",
)


@contextmanager
def private_pg_database() -> Iterator[str]:
    """A PostgreSQL database of its own (random name), dropped afterwards."""
    admin_url = os.environ.get(PG_URL_ENV)
    if not admin_url:
        pytest.skip(f"{PG_URL_ENV} is not set: no PostgreSQL for this run")
    name = "tm_test_" + secrets.token_hex(6)
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tokenmill.db'}"
    else:
        with private_pg_database() as url:
            yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tokenmill.db'}"


@pytest.fixture
def store(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[tuple[str, FakeUpstreamState]]:
    state = FakeUpstreamState(hang_s=5.0)
    with ServerThread(fake_upstream_app(state)) as server:
        yield server.url + "/v1", state


def gateway_config(
    upstream_url: str | None, *, time_scale: float = 0.0, read_timeout_s: float = 2.0, **limits: Any
) -> dict[str, Any]:
    """A configuration: sim models plus, with an upstream, one model per fake behaviour."""
    config: dict[str, Any] = {
        "engines": {"sim": {"kind": "sim", "time_scale": time_scale}},
        "deployments": {
            "sim-8b": {
                "engine": "sim",
                "model": "llama-3.1-8b",
                "gpu": "h100-sxm",
                "precision": "fp8",
            },
            "sim-embed": {
                "engine": "sim",
                "model": "llama-3.1-8b",
                "gpu": "l40s",
                "embedding_dimensions": 16,
            },
        },
        "models": {
            "sim-chat": {"deployments": ["sim-8b"], "output_tokens_max": 512},
            "sim-embed": {"kind": "embedding", "deployments": ["sim-embed"]},
        },
        "limits": limits,
    }
    if upstream_url is not None:
        config["engines"]["up"] = {
            "kind": "openai",
            "base_url": upstream_url,
            "timeout_s_read": read_timeout_s,
            "timeout_s_connect": 2,
        }
        for behaviour in FAKE_BEHAVIOURS:
            config["deployments"][f"dep-{behaviour}"] = {"engine": "up", "model": behaviour}
            config["models"][behaviour] = {"deployments": [f"dep-{behaviour}"]}
        config["deployments"]["dep-fake-embed"] = {"engine": "up", "model": "fake-embed"}
        config["models"]["fake-embed"] = {"kind": "embedding", "deployments": ["dep-fake-embed"]}
    return config


@dataclass
class LiveGateway:
    url: str
    database_url: str
    admin_token: str
    db: Engine

    def new_key(self, account: str = "acme", **options: Any) -> tuple[str, str, str]:
        """(key secret, key id, account id); the account is made if it does not exist."""
        try:
            row = service.find_account(self.db, account)
        except NotFound:
            row = service.create_account(self.db, account)
        made = service.create_key(self.db, row.id, **options)
        self.wait_for_key(made.secret)
        return made.secret, made.row.id, row.id

    def record(self, request_id: str) -> UsageRecord:
        """The usage record of ``request_id``; it must exist."""
        with self.db.connect() as connection:
            found = record_by_request_id(connection, request_id)
        assert found is not None, f"no usage record for {request_id}"
        return found

    def records(self, key_id: str | None = None) -> list[UsageRecord]:
        with self.db.connect() as connection:
            return query_records(connection, key_id=key_id)

    def wait_for_key(self, secret: str, *, known: bool = True, within_s: float = 2.0) -> float:
        """Seconds until the gateway accepts (or, known=False, refuses) ``secret``."""
        started = time.monotonic()
        while True:
            status = httpx.get(
                self.url + "/v1/models", headers={"Authorization": f"Bearer {secret}"}
            ).status_code
            if (status == 200) == known:
                return time.monotonic() - started
            if time.monotonic() - started > within_s:
                raise AssertionError(f"the gateway still answers {status} after {within_s} s")
            time.sleep(0.02)


@contextmanager
def live_gateway(database_url: str, config: dict[str, Any], home: Path) -> Iterator[LiveGateway]:
    admin = "tmadmin-" + secrets.token_urlsafe(24)
    settings = Settings(
        home=home,
        database_url=database_url,
        config=parse_config(config),
        admin_token=admin,
        environ={},
    )
    app = create_app(settings)
    db = open_engine(database_url, migrate=False)
    try:
        with ServerThread(app, **server_options(settings.config.limits)) as server:
            gateway = LiveGateway(server.url, database_url, admin, db)
            yield gateway
    finally:
        db.dispose()


@pytest.fixture
def gateway(
    sqlite_url: str, fake_upstream: tuple[str, FakeUpstreamState], tmp_path: Path
) -> Iterator[LiveGateway]:
    """A live gateway on SQLite with the sim models and every fake upstream behaviour."""
    with live_gateway(sqlite_url, gateway_config(fake_upstream[0]), tmp_path) as live:
        yield live


@pytest.fixture
def key(gateway: LiveGateway) -> str:
    return gateway.new_key()[0]


@pytest.fixture(scope="session")
def plan_gateway(
    tmp_path_factory: pytest.TempPathFactory, fake_upstream: tuple[str, FakeUpstreamState]
) -> Iterator[LiveGateway]:
    """One live gateway for the plan endpoints' tests (they keep no state)."""
    home = tmp_path_factory.mktemp("plan-api")
    url = f"sqlite:///{home / 'tokenmill.db'}"
    with live_gateway(url, gateway_config(fake_upstream[0]), home) as live:
        yield live


def post_plan(
    live: LiveGateway, path: str, body: dict[str, Any], token: str | None = None
) -> httpx.Response:
    """``POST /admin/v1/plan/<path>`` as the admin, or with ``token``."""
    return httpx.post(
        f"{live.url}/admin/v1/plan/{path}",
        json=body,
        headers={"Authorization": f"Bearer {token or live.admin_token}"},
        timeout=10,
    )
