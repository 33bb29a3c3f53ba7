"""One gateway per database: the process that serves holds a lock the OS or PostgreSQL
drops when it dies (even by ``kill -9``), so a second gateway is refused clearly and a
restarted one is not.

Holds live in the serving process's memory; two processes placing holds on the same
accounts could together spend more than the funds, so until funds are leased across
processes (a later step), a second gateway must not start on the same database.
SQLite: an exclusive ``flock`` on a file beside the database. PostgreSQL: a session-level
advisory lock on a connection kept open for the gateway's life.

A lock alone fails open: PostgreSQL drops it with its connection (a network blip, a
restart, ``pg_terminate_backend``) and nothing tells the holder, so a second gateway could
start and both would serve. Ownership therefore also carries a **fencing token**: the
``epoch`` of the ``gateway_owner`` row, which each new owner adds one to. Every group commit
reads it inside its own transaction (``FENCE_SQL``; ``FOR SHARE`` on PostgreSQL, so a new
owner's increment waits for a commit in progress) and fails when it is not its own: a
deposed owner stops at its first commit. The gateway also checks its lock's connection at
every change poll and stops taking priced requests at once when it is gone; it takes the
database back only if nobody owned it meanwhile (the epoch is still its own), since its
balances and holds in memory would otherwise be stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psycopg
from sqlalchemy import Engine, text

from tokenmill.errors import Unavailable
from tokenmill.store.database import write_transaction

log = logging.getLogger("tokenmill.store")

ADVISORY_LOCK_ID = 0x746F6B656E6D696C  # "tokenmil"
LOCK_APPLICATION_NAME = "tokenmill-owner-lock"  # the lock's connection, as PostgreSQL lists it
SHARED_APPLICATION_NAME = "tokenmill-money-lock"  # a shared holder's (owned_meanwhile)
OWNER_ROW = "gateway"


def fence_sql(dialect: str, placeholder: str) -> str:
    """The epoch the database says owns it, read inside a commit's transaction."""
    lock = " FOR SHARE" if dialect == "postgresql" else ""
    return f"SELECT epoch FROM gateway_owner WHERE name = {placeholder}{lock}"


class Deposed(Unavailable):
    """Another gateway took the database: this one's commits are refused."""


def check_fence(found: Any, epoch: int) -> None:
    """Raise Deposed unless the epoch ``found`` in the database is ``epoch``."""
    found_epoch = None if found is None else int(found[0])
    if found_epoch != epoch:
        raise Deposed(
            f"this gateway (epoch {epoch}) no longer owns the database (epoch {found_epoch})"
        )


def _refused(where: str) -> Unavailable:
    return Unavailable(
        f"another tokenmill gateway serves this database ({where}); one gateway per"
        " database for now: stop the other one, or give this one its own database"
    )


class GatewayLock:
    def __init__(self, engine: Engine, *, shared: bool = False) -> None:
        """Take the database; ``shared``: alongside other shared holders (money operations
        made without a gateway), never alongside a gateway."""
        self._engine = engine
        self._shared = shared
        self._file: IO[str] | None = None
        self._connection: psycopg.Connection[Any] | None = None
        self.deposed_for_good = False
        self._checking = threading.Lock()  # alive and ensure_owner run on worker threads
        if engine.dialect.name == "sqlite":
            database = engine.url.database
            assert database
            self._lock_file(Path(database + ".gateway-lock"))
        else:
            self._lock_postgres(engine)
        try:
            self.epoch = self._take_epoch(expected=None)
        except BaseException:
            self.release()
            raise
        assert self.epoch >= 1

    def _take_epoch(self, *, expected: int | None) -> int:
        """Add one to the owner's epoch and return it; with ``expected``, only if the epoch
        is still that (nobody owned the database meanwhile), else 0."""
        holder = f"{socket.gethostname()} pid {os.getpid()}"[:200]
        now = time.time_ns() // 1_000_000
        with write_transaction(self._engine) as connection:
            connection.execute(
                text(
                    "INSERT INTO gateway_owner (name, epoch, holder, taken_at_ms)"
                    " VALUES (:name, 0, :holder, :now) ON CONFLICT (name) DO NOTHING"
                ),
                {"name": OWNER_ROW, "holder": holder, "now": now},
            )
            condition = "" if expected is None else " AND epoch = :expected"
            row = connection.execute(
                text(
                    "UPDATE gateway_owner SET epoch = epoch + 1, holder = :holder,"
                    f" taken_at_ms = :now WHERE name = :name{condition} RETURNING epoch"
                ),
                {"name": OWNER_ROW, "holder": holder, "now": now, "expected": expected},
            ).first()
        return 0 if row is None else int(row[0])

    @property
    def can_be_lost(self) -> bool:
        """PostgreSQL drops the lock with its connection; a file lock lasts as long as the
        process (``alive`` need not be polled)."""
        return self._file is None

    def alive(self) -> bool:
        """Whether the lock is still held (PostgreSQL: its connection still answers)."""
        with self._checking:
            return self._alive()

    def _alive(self) -> bool:
        if self._file is not None:
            return True
        connection = self._connection
        if connection is None or connection.closed:
            return False
        try:
            connection.execute("SELECT 1")
        except psycopg.Error:
            with contextlib.suppress(psycopg.Error):
                connection.close()
            self._connection = None
            return False
        return True

    def ensure_owner(self) -> bool:
        """Whether this gateway owns the database now, taking the lock again if it was lost
        and nobody owned the database meanwhile (on a worker thread)."""
        with self._checking:
            return self._ensure_owner()

    def _ensure_owner(self) -> bool:
        if self.deposed_for_good:
            return False
        if self._alive():
            with self._engine.connect() as connection:
                found = connection.execute(
                    text("SELECT epoch FROM gateway_owner WHERE name = :name"), {"name": OWNER_ROW}
                ).first()
            if found is not None and int(found[0]) == self.epoch:
                return True
            self._give_up(found)
            return False
        try:
            self._lock_postgres(self._engine)
        except (Unavailable, psycopg.Error) as exc:
            log.warning("the database's owner lock is not ours yet: %s", exc)
            return False
        epoch = self._take_epoch(expected=self.epoch)
        if not epoch:
            self._give_up(None)
            return False
        log.warning("took the database's owner lock again (epoch %d -> %d)", self.epoch, epoch)
        self.epoch = epoch
        return True

    def _give_up(self, found: Any) -> None:
        """Another gateway owned the database meanwhile: balances and holds in this one's
        memory are stale, so it never serves priced requests again (restart it)."""
        self.deposed_for_good = True
        log.error(
            "another gateway owned this database after this one (epoch %d, now %s): refusing"
            " priced requests until this gateway is restarted",
            self.epoch,
            "unknown" if found is None else int(found[0]),
        )
        self.release()

    def _lock_file(self, path: Path) -> None:
        handle = path.open("a+")
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if self._shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "unknown process"
            handle.close()
            raise _refused(f"{holder} holds {path}") from exc
        if not self._shared:  # the file names the gateway that holds it
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
        self._file = handle

    def _lock_postgres(self, engine: Engine) -> None:
        conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        name = SHARED_APPLICATION_NAME if self._shared else LOCK_APPLICATION_NAME
        connection = psycopg.connect(
            conninfo, autocommit=True, connect_timeout=5, application_name=name
        )
        take = "pg_try_advisory_lock_shared" if self._shared else "pg_try_advisory_lock"
        row = connection.execute(f"SELECT {take}(%s)", (ADVISORY_LOCK_ID,)).fetchone()
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


@contextlib.contextmanager
def owned_meanwhile(engine: Engine) -> Iterator[None]:
    """Own the database while a money operation runs without a gateway (the CLI's debits and
    period closes): ``gateway_running`` says no gateway holds the lock, but one may have lost
    it a moment ago and still serve from memory. Taking the ownership adds one to the epoch,
    so that gateway's next commit is refused; one that starts meanwhile is refused (503)
    until the operation is done. Such operations share the database with one another (the
    ledger's row locks order them), never with a gateway."""
    lock = GatewayLock(engine, shared=True)
    try:
        yield
    finally:
        lock.release()


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
