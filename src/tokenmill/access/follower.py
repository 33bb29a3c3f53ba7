"""Follows the store's change sequence so the in-memory key index stays current (I/O shell).

The CLI or another process writes a key or account and appends a change; each poll reads the
changes after the last one seen and reloads just those rows. A poll that fails (database
briefly locked or down) is retried at the next tick; the index keeps serving what it had.

On PostgreSQL two writers can commit out of sequence order: seq 11 visible before seq 10.
A follower that only asked for "after 11" would miss 10 for good, so it reads a window of
``SEQ_OVERLAP_COUNT`` before the highest seq it saw and skips the changes it has applied.
SQLite serializes writers, so there the window is empty.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from tokenmill.access.directory import KeyDirectory
from tokenmill.changes import ChangeCursor
from tokenmill.store import accounts as rows

log = logging.getLogger("tokenmill.access")

CHANGES_PER_POLL_MAX = 10_000
SEQ_OVERLAP_COUNT = 256


def load_directory(engine: Engine) -> KeyDirectory:
    directory = KeyDirectory()
    with engine.connect() as connection:
        seq = rows.last_change_seq(connection)
        directory.load(rows.all_accounts(connection), rows.live_keys(connection), seq)
    return directory


@dataclass(frozen=True)
class ChangeBatch:
    seqs: list[int]
    accounts: list[rows.AccountRow]
    key_ids: list[str]
    keys: list[rows.KeyRow]


def overlap_of(engine: Engine) -> int:
    return 0 if engine.dialect.name == "sqlite" else SEQ_OVERLAP_COUNT


def unapplied_changes(
    connection: Connection, cursor: ChangeCursor, overlap: int
) -> list[tuple[int, str, str]]:
    """(seq, entity, id) of the changes ``cursor`` has not applied, re-reading the overlap
    window below its seq (every follower of the change sequence reads it this way)."""
    after_seq = max(0, cursor.seq - overlap)
    return [
        change
        for change in rows.changes_after(connection, after_seq, CHANGES_PER_POLL_MAX)
        if not cursor.has_applied(change[0])
    ]


def fetch_changes(engine: Engine, directory: KeyDirectory) -> ChangeBatch | None:
    """Read the changes the directory has not applied and the rows they name (a thread)."""
    with engine.connect() as connection:
        found = unapplied_changes(connection, directory, overlap_of(engine))
        if not found:
            return None
        account_ids = sorted({ident for _, entity, ident in found if entity == "account"})
        key_ids = sorted({ident for _, entity, ident in found if entity == "key"})
        accounts = rows.accounts_by_ids(connection, account_ids) if account_ids else []
        keys = rows.keys_by_ids(connection, key_ids) if key_ids else []
    return ChangeBatch([seq for seq, _, _ in found], accounts, key_ids, keys)


def apply_changes(directory: KeyDirectory, batch: ChangeBatch, overlap: int) -> None:
    """Apply ``batch`` to the index (on the event loop, so lookups never see it half done).

    Applying is idempotent (rows are reloaded, not patched), so a batch that raced with
    another is harmless.
    """
    directory.apply_accounts(batch.accounts)
    directory.forget_keys(batch.key_ids)
    directory.apply_keys(batch.keys)
    directory.mark_applied(batch.seqs, overlap)


async def follow_changes(
    engine: Engine, directory: KeyDirectory, interval_s: float, executor: Executor
) -> None:
    """Poll forever (until cancelled), every ``interval_s`` seconds."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s)
        try:
            batch = await loop.run_in_executor(executor, fetch_changes, engine, directory)
        except SQLAlchemyError as exc:
            log.warning("change poll failed, retrying: %s", exc.__class__.__name__)
            continue
        if batch is not None:
            apply_changes(directory, batch, overlap_of(engine))
