"""Opening a database: SQLite (WAL) or PostgreSQL, migrated to the newest schema on open."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError

from tokenmill.errors import ConfigurationError, Unavailable

SQLITE_BUSY_TIMEOUT_MS = 10_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` use psycopg 3; SQLite stays as it is."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def open_engine(url: str, *, sqlite_synchronous: str = "NORMAL", migrate: bool = True) -> Engine:
    """An engine for ``url``, with the schema migrated to head unless ``migrate`` is False."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = _sqlite_engine(url, sqlite_synchronous)
    elif url.startswith("postgresql+psycopg://"):
        engine = create_engine(url, pool_size=8, max_overflow=4, pool_pre_ping=True)
    else:
        raise ConfigurationError(
            "database URL must start with sqlite:/// or postgresql://", param="database_url"
        )
    if migrate:
        try:
            migrate_to_head(engine)
        except SQLAlchemyError as exc:
            engine.dispose()
            raise Unavailable(f"cannot open the database: {exc.__class__.__name__}") from exc
    return engine


def make_private_file(path: Path) -> None:
    """Create ``path`` (and any missing folders above it) private to its owner: folders 0700,
    the file 0600. The whole business, ledger included, is in this file; SQLite gives its
    WAL and shared-memory files the database file's permissions."""
    missing = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir(mode=0o700, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _sqlite_engine(url: str, synchronous: str) -> Engine:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if path and path != ":memory:":
        make_private_file(Path(path))
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL: readers never block the writer; NORMAL survives a killed process, FULL
        # survives power loss too. Python's sqlite3 must not open transactions on its own.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # Writers BEGIN IMMEDIATE: they take the write lock at BEGIN and queue on
        # busy_timeout, instead of failing with "database is locked" when a read lock
        # cannot be upgraded. Readers BEGIN DEFERRED and never block the writer (WAL).
        immediate = connection.get_execution_options().get("tokenmill_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: on SQLite it holds the write lock from its start."""
    with (
        engine.connect().execution_options(tokenmill_write=True) as connection,
        connection.begin(),
    ):
        yield connection


def migrate_to_head(engine: Engine) -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", "tokenmill.store:migrations")
    with write_transaction(engine) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
