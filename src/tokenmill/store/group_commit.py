"""The group commit: one writer task commits whatever is waiting, as soon as it can.

Requests hand their usage record and its ledger transfers to ``submit`` and wait for them
to be durable: both go in the same transaction, so a request is billed exactly when it is
recorded. The writer
takes everything queued (up to ``batch_count_max``) and commits it in one transaction;
whatever arrives meanwhile waits for the next commit. There is no timer: an idle gateway
pays one commit of latency, a busy one shares each commit among many.

The writer runs on the event loop, with no thread: a thread hand-off per commit costs more
than the commit, and the two threads fight over the GIL. SQLite commits inline (a WAL
append, a fraction of a millisecond) with the lock taken non-blocking, retried with short
sleeps while another process (the CLI) holds it; PostgreSQL goes through psycopg's
asynchronous connection. Either way prepared statements, rows as tuples, ``executemany``:
the usage records, the transfers, and one balance update per ledger account the batch
moves (a hot account's many requests cost one row update per commit).

A gateway's writer is fenced (``owner``, store/ownership.py): each commit reads the owner's
epoch inside its transaction and fails with ``Deposed`` when another gateway took the
database; like a store outage, the batch then goes to the spool and no request is taken,
and the spool is replayed only once this gateway owns the database again.

When a commit fails because the store is down, the batch goes to the usage spool
(``store/spool.py``) instead and its requests finish normally; from then on commits go to
the spool, and the gateway refuses new requests (``store_down``), until a replay of the
spool into the store succeeds (tried every ``RECOVERY_INTERVAL_S``). Only the writer task
appends to and replays the spool, so the two never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from typing import Any, Protocol

import psycopg
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from tokenmill.errors import Unavailable
from tokenmill.retail.ledger import Transfer
from tokenmill.store.ledger import (
    balance_rows,
    balance_upsert_sql,
    transfer_insert_sql,
    transfer_row,
)
from tokenmill.store.ownership import Deposed, check_fence, fence_sql
from tokenmill.store.responses import StoredResponse, response_insert_sql, response_row
from tokenmill.store.spool import UsageSpool
from tokenmill.store.usage import insert_sql, record_row
from tokenmill.usage import UsageRecord

log = logging.getLogger("tokenmill.store")

# A usage record, its transfers, what the request kept beside it (a stored response), and
# the future its request waits on.
_Item = tuple[UsageRecord, tuple[Transfer, ...], StoredResponse | None, "asyncio.Future[None]"]
_Rows = list[tuple[Any, ...]]
LOCK_WAIT_S_MAX = 10.0  # how long a commit waits for SQLite's write lock held by another process
# A WAL checkpoint after this many commits or records, whichever comes first: each commit
# appends the pages it touched (about 26 KB for one record and its indexes), so both bound
# the WAL to a few MB.
CHECKPOINT_COMMITS_COUNT = 100
CHECKPOINT_RECORDS_COUNT = 2000
# The longest a RESTART checkpoint waits for readers, holding the write lock (commits wait).
CHECKPOINT_WAIT_S_MAX = 0.2
LOCK_PAUSE_S_MAX = 0.005  # the longest sleep between two tries for a lock held elsewhere
WRITER_APPLICATION_NAME = "tokenmill-usage-writer"  # its connection, as PostgreSQL lists it
RECOVERY_INTERVAL_S = 1.0  # while the store is down, how often a replay of the spool is tried


class _Batch:
    """The rows of one commit: usage records, transfers, balance updates, stored responses."""

    __slots__ = ("balances", "records", "responses", "transfers")

    def __init__(self, items: list[_Item]) -> None:
        self.records: _Rows = [record_row(record) for record, _, _, _ in items]
        moved = [transfer for _, transfers, _, _ in items for transfer in transfers]
        self.responses: _Rows = [response_row(kept) for _, _, kept, _ in items if kept]
        self.transfers: _Rows = [transfer_row(transfer) for transfer in moved]
        self.balances: _Rows = list(balance_rows(moved, time.time_ns() // 1_000_000))


class _Writer(Protocol):
    async def write(self, batch: _Batch) -> None: ...

    async def close(self) -> None: ...


class Owner(Protocol):
    """The fencing token of the gateway that owns the database (store/ownership.py)."""

    epoch: int

    def ensure_owner(self) -> bool: ...


class GroupCommitWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        queue_count_max: int,
        batch_count_max: int,
        sqlite_synchronous: str = "NORMAL",
        spool: UsageSpool | None = None,
        owner: Owner | None = None,
    ) -> None:
        assert batch_count_max >= 1
        self._engine = engine
        self._spool = spool
        self._owner = owner
        self.store_down = False  # commits go to the spool until a replay succeeds
        self._recovery_due_at = 0.0
        # None wakes the writer waiting for work (a lost lock: it must start recovering).
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue(maxsize=queue_count_max)
        self._batch_count_max = batch_count_max
        self._task: asyncio.Task[None] | None = None
        self._writer: _Writer = (
            _SqliteWriter(engine, sqlite_synchronous, owner)
            if engine.dialect.name == "sqlite"
            else _PostgresWriter(engine, owner)
        )
        self.commits_count = 0
        self.records_count = 0
        self.spooled_count = 0

    def start(self) -> None:
        assert self._task is None
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    async def submit(
        self,
        record: UsageRecord,
        transfers: tuple[Transfer, ...] = (),
        kept: StoredResponse | None = None,
    ) -> None:
        """Return once ``record``, ``transfers`` and ``kept`` are committed (together);
        raise Unavailable if the commit failed. A batch that goes to the spool keeps its
        records and transfers only: a response served while the store is down is not
        stored."""
        if self._task is None or self._task.done():
            raise Unavailable("the usage writer is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((record, transfers, kept, future))
        # A cancelled caller (client gone) must not cancel the commit: shield the wait, and
        # let the outcome be collected (the writer logs a failure) rather than left unread.
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_collect)
            raise

    def ownership_lost(self) -> None:
        """The owner's lock is gone: take no request and commit nothing until this gateway
        owns the database again (``_recover`` asks ``owner.ensure_owner``)."""
        if not self.store_down:
            log.error("the database's owner lock was lost; refusing requests until retaken")
            self.store_down = True
            self._recovery_due_at = time.monotonic()
            with contextlib.suppress(asyncio.QueueFull):  # a full queue wakes it anyway
                self._queue.put_nowait(None)

    async def close(self) -> None:
        """Commit everything queued, then stop the writer."""
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._writer.close()

    async def _run(self) -> None:
        while True:
            if self.store_down and time.monotonic() >= self._recovery_due_at:
                await self._recover()
            if not self.store_down:
                first = await self._queue.get()
            else:
                try:
                    first = await asyncio.wait_for(self._queue.get(), RECOVERY_INTERVAL_S)
                except TimeoutError:
                    continue
            if first is None:
                self._queue.task_done()
                continue
            batch = [first]
            while len(batch) < self._batch_count_max and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    self._queue.task_done()
                else:
                    batch.append(item)
            if self.store_down:
                self._spool_batch(batch, None)
                continue
            rows = _Batch(batch)
            try:
                await self._writer.write(rows)
            except Unavailable as error:
                log.error(
                    "usage commit of %d records failed: %s",
                    len(rows.records),
                    error.__cause__ or error,
                )
                if self._spool is None:
                    self._settle(batch, error)
                else:
                    self.store_down = True
                    self._recovery_due_at = time.monotonic() + RECOVERY_INTERVAL_S
                    self._spool_batch(batch, error)
            else:
                self.commits_count += 1
                self.records_count += len(rows.records)
                self._settle(batch, None)

    def _spool_batch(self, batch: list[_Item], error: Unavailable | None) -> None:
        """The store is down: keep the batch in the spool (the requests are done and owe
        what they were charged); if even that fails, they fail."""
        assert self._spool is not None
        try:
            self._spool.append([(record, transfers) for record, transfers, _, _ in batch])
        except OSError as exc:
            log.error("usage spool append failed: %s", exc)
            self._settle(batch, error or _unavailable(exc))
            return
        self.spooled_count += len(batch)
        self._settle(batch, None)

    async def _recover(self) -> None:
        """Replay the spool into the store; the store is back when that works (and, for a
        fenced writer, when this gateway owns the database again)."""
        assert self._spool is not None
        self._recovery_due_at = time.monotonic() + RECOVERY_INTERVAL_S
        loop = asyncio.get_running_loop()
        if self._owner is not None:
            try:
                owned = await loop.run_in_executor(None, self._owner.ensure_owner)
            except SQLAlchemyError as exc:
                log.warning("the store is still down (%s); retrying", exc.__class__.__name__)
                return
            if not owned:
                return
        try:
            await loop.run_in_executor(
                None, self._spool.replay, self._engine, time.time_ns() // 1_000_000
            )
        except IntegrityError as exc:
            log.error("usage spool set aside, the store refused it: %s", exc.__class__.__name__)
        except SQLAlchemyError as exc:
            log.warning("the store is still down (%s); retrying", exc.__class__.__name__)
            return
        self.store_down = False
        log.warning("the store is back; usage commits resume")

    def _settle(self, batch: list[_Item], error: Exception | None) -> None:
        for _, _, _, future in batch:
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
            self._queue.task_done()


def _collect(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _unavailable(exc: BaseException) -> Unavailable:
    error = Unavailable("could not record usage; the store is unavailable")
    error.__cause__ = exc
    return error


class _SqliteWriter:
    """Inline SQLite commits on a connection of its own, never blocking on the lock."""

    def __init__(self, engine: Engine, synchronous: str, owner: Owner | None) -> None:
        assert synchronous in ("NORMAL", "FULL")
        self._owner = owner
        database = engine.url.database
        assert database, "the group commit needs an SQLite file"
        self._path = database
        self._synchronous = synchronous
        self._sql = (insert_sql("?"), transfer_insert_sql("?"), balance_upsert_sql("?"))
        self._responses_sql = response_insert_sql("?")
        self._connection: sqlite3.Connection | None = None
        self._records_since_checkpoint = 0
        self._commits_since_checkpoint = 0
        self._checkpointing: asyncio.Future[bool] | None = None
        self._busy_count = 0  # checkpoints in a row that found the WAL busy

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={self._synchronous}")
        connection.execute("PRAGMA busy_timeout=0")  # a held lock is retried below, not waited
        # Checkpoints copy the WAL back into the database: tens of milliseconds that must not
        # stall the event loop, so they run on a thread of their own (see _checkpoint).
        connection.execute("PRAGMA wal_autocheckpoint=0")
        return connection

    async def write(self, batch: _Batch) -> None:
        await self._write(batch)
        self._records_since_checkpoint += len(batch.records)
        self._commits_since_checkpoint += 1
        due = (
            self._records_since_checkpoint >= CHECKPOINT_RECORDS_COUNT
            or self._commits_since_checkpoint >= CHECKPOINT_COMMITS_COUNT
        )
        last = self._checkpointing
        running = last is not None and not last.done()
        if not due or running:
            return
        self._records_since_checkpoint = self._commits_since_checkpoint = 0
        if last is not None and not last.result():
            self._busy_count += 1
        elif last is not None:
            self._busy_count = 0
        loop = asyncio.get_running_loop()
        if self._busy_count >= 2:
            # Busy even with commits paused: a reader holds an old snapshot (a backup, a long
            # report), which RESTART would wait on while holding the write lock. Copy what
            # can be copied without blocking until it is gone.
            self._checkpointing = loop.run_in_executor(None, self._checkpoint, "PASSIVE")
            return
        self._checkpointing = loop.run_in_executor(None, self._checkpoint, "RESTART")
        if self._busy_count == 1:
            # The last one lost the race with our own commits (busy): this one runs with the
            # commits paused, so the WAL stays bounded however steady the stream of commits.
            await self._checkpointing

    def _checkpoint(self, mode: str) -> bool:
        """Copy the WAL into the database, and with RESTART start it over (on a worker
        thread); True when nothing was left busy.

        RESTART holds the write lock while it copies, so the WAL starts over instead of
        growing under a steady stream of commits; meanwhile the writer finds the lock taken
        and retries with short sleeps (``_write``), so the event loop never waits on it. Its
        wait for readers is bounded by ``CHECKPOINT_WAIT_S_MAX``; PASSIVE never waits.
        """
        assert mode in ("RESTART", "PASSIVE")
        wait_s = CHECKPOINT_WAIT_S_MAX if mode == "RESTART" else 0.0
        try:
            with contextlib.closing(sqlite3.connect(self._path, timeout=wait_s)) as connection:
                busy, log_pages, copied_pages = connection.execute(
                    f"PRAGMA wal_checkpoint({mode})"
                ).fetchone()
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint failed, retried with commits paused: %s", exc)
            return False
        return not busy and (mode == "RESTART" or log_pages == copied_pages)

    async def _write(self, batch: _Batch) -> None:
        deadline = time.monotonic() + LOCK_WAIT_S_MAX
        pause_s = 0.001
        while True:
            try:
                self._write_now(batch)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    self._discard()
                    raise _unavailable(exc) from exc
                if time.monotonic() > deadline:
                    raise _unavailable(exc) from exc
            except sqlite3.Error as exc:
                self._discard()
                raise _unavailable(exc) from exc
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, LOCK_PAUSE_S_MAX)

    def _write_now(self, batch: _Batch) -> None:
        if self._connection is None:
            self._connection = self._connect()
        connection = self._connection
        records_sql, transfers_sql, balances_sql = self._sql
        connection.execute("BEGIN IMMEDIATE")
        try:
            if self._owner is not None:
                found = connection.execute(fence_sql("sqlite", "?"), ("gateway",)).fetchone()
                check_fence(found, self._owner.epoch)
            connection.executemany(records_sql, batch.records)
            if batch.transfers:
                connection.executemany(transfers_sql, batch.transfers)
                connection.executemany(balances_sql, batch.balances)
            if batch.responses:
                connection.executemany(self._responses_sql, batch.responses)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def _discard(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    async def close(self) -> None:
        if self._checkpointing is not None:
            await self._checkpointing
        self._discard()


class _PostgresWriter:
    """Commits through psycopg's asynchronous connection, on the event loop."""

    def __init__(self, engine: Engine, owner: Owner | None) -> None:
        self._owner = owner
        url = engine.url.set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._sql = (insert_sql("%s"), transfer_insert_sql("%s"), balance_upsert_sql("%s"))
        self._connection: psycopg.AsyncConnection[Any] | None = None

    async def write(self, batch: _Batch) -> None:
        """Commit ``batch``; a connection found dead is not an outage: one more try on a
        fresh connection first (a commit lost with its connection is refused the second
        time by the records' primary key, and the spool then keeps it)."""
        for attempt in range(2):
            try:
                await self._write_once(batch)
                return
            except Deposed:
                await self.close()
                raise
            except psycopg.OperationalError as exc:
                await self.close()
                if attempt == 1:
                    raise _unavailable(exc) from exc
                log.warning("usage commit found its connection dead; retrying on a new one")
            except psycopg.Error as exc:
                await self.close()
                raise _unavailable(exc) from exc

    async def _write_once(self, batch: _Batch) -> None:
        records_sql, transfers_sql, balances_sql = self._sql
        if self._connection is None or self._connection.closed:
            self._connection = await psycopg.AsyncConnection.connect(
                self._conninfo, connect_timeout=5, application_name=WRITER_APPLICATION_NAME
            )
        async with self._connection.transaction(), self._connection.cursor() as cursor:
            if self._owner is not None:
                await cursor.execute(fence_sql("postgresql", "%s"), ("gateway",))
                check_fence(await cursor.fetchone(), self._owner.epoch)
            await cursor.executemany(records_sql, batch.records)
            if batch.transfers:
                await cursor.executemany(transfers_sql, batch.transfers)
                await cursor.executemany(balances_sql, batch.balances)
            if batch.responses:
                await cursor.executemany(response_insert_sql("%s"), batch.responses)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.closed:
            await connection.close()
