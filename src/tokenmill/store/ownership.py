"""One gateway per database: the process that serves holds a lock the OS or PostgreSQL
drops when it dies (even by ``kill -9``), so a second gateway is refused clearly and a
restarted one is not.

Holds live in the serving process's memory; two processes placing holds on the same
accounts could together spend more than the funds, so until funds are leased across
processes (a later step), a second gateway must not start on the same database.
SQLite: an exclusive ``flock`` on a file beside the database. PostgreSQL: a session-level
advisory lock on a connection kept open for the gateway's life.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO, Any

import psycopg
from sqlalchemy import Engine

from tokenmill.errors import Unavailable

ADVISORY_LOCK_ID = 0x746F6B656E6D696C  # "tokenmil"


def _refused(where: str) -> Unavailable:
    return Unavailable(
        f"another tokenmill gateway serves this database ({where}); one gateway per"
        " database for now: stop the other one, or give this one its own database"
    )


class GatewayLock:
    def __init__(self, engine: Engine) -> None:
        self._file: IO[str] | None = None
        self._connection: psycopg.Connection[Any] | None = None
        if engine.dialect.name == "sqlite":
            database = engine.url.database
            assert database
            self._lock_file(Path(database + ".gateway-lock"))
        else:
            self._lock_postgres(engine)

    def _lock_file(self, path: Path) -> None:
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "unknown process"
            handle.close()
            raise _refused(f"{holder} holds {path}") from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._file = handle

    def _lock_postgres(self, engine: Engine) -> None:
        conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        connection = psycopg.connect(conninfo, autocommit=True, connect_timeout=5)
        row = connection.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_ID,)).fetchone()
        if not row or not row[0]:
            connection.close()
            raise _refused("it holds the PostgreSQL advisory lock")
        self._connection = connection

    def release(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def gateway_running(engine: Engine) -> bool:
    """Whether a gateway holds this database now (probed with a shared lock, let go at once)."""
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        assert database
        path = Path(database + ".gateway-lock")
        if not path.exists():
            return False
        with path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False
    conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as connection:
        row = connection.execute(
            "SELECT pg_try_advisory_lock_shared(%s)", (ADVISORY_LOCK_ID,)
        ).fetchone()
        if row and row[0]:
            connection.execute("SELECT pg_advisory_unlock_shared(%s)", (ADVISORY_LOCK_ID,))
            return False
    return True
