"""The usage spool: where settled requests wait while the store is down.

When a group commit fails because the store is unreachable, the gateway does not take back
answers it already gave: each request's usage record and ledger transfers are appended to
a local file (one JSON line per request, flushed and fsynced before the request finishes)
and replayed into the store when it is back. Replay is idempotent: a request whose usage
record is in the store already (its record and transfers were committed together) is
skipped, so a replay cut short by a crash and run again still books each request exactly
once. The file is emptied only after everything in it is committed.

A line is acknowledged only once its fsync returned; a crash in the middle of an append
leaves a torn last line, which was never acknowledged and is cut off when the spool opens.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import orjson
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from tokenmill.retail.ledger import Transfer
from tokenmill.store.database import write_transaction
from tokenmill.store.ledger import (
    balance_rows,
    balance_upsert_sql,
    transfer_insert_sql,
    transfer_row,
)
from tokenmill.store.tables import usage_records
from tokenmill.store.usage import insert_sql, record_row
from tokenmill.usage import UsageRecord

log = logging.getLogger("tokenmill.store")

Entry = tuple[UsageRecord, tuple[Transfer, ...]]
REPLAY_CHUNK_COUNT = 500  # requests per replay transaction


def _private(path: str, flags: int) -> int:
    """Open the spool private to its owner (0600): it holds the usage of every account."""
    return os.open(path, flags, 0o600)


class UsageSpool:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._cut_torn_tail()

    def _cut_torn_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep != len(data):
            log.warning("usage spool: cut a torn last line (%d bytes)", len(data) - keep)
            os.truncate(self.path, keep)

    @property
    def pending(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def append(self, entries: Sequence[Entry]) -> None:
        """Add ``entries`` durably: returns only after the bytes are on disk."""
        assert entries
        lines = b"".join(
            orjson.dumps({"record": asdict(record), "transfers": [asdict(t) for t in transfers]})
            + b"\n"
            for record, transfers in entries
        )
        created = not self.path.exists()
        with open(self.path, "ab", opener=_private) as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
        if created:  # the new file's name must survive a crash too
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def read(self) -> list[Entry]:
        if not self.path.exists():
            return []
        entries = []
        for line in self.path.read_bytes().splitlines():
            if line.strip():
                entry = orjson.loads(line)
                entries.append(
                    (
                        UsageRecord(**entry["record"]),
                        tuple(Transfer(**t) for t in entry["transfers"]),
                    )
                )
        return entries

    def replay(self, engine: Engine, now_ms: int) -> int:
        """Commit every spooled request the store lacks; then empty the spool. Returns how
        many were added. Raises the store's error if it is still down (nothing is lost)."""
        entries = self.read()
        added = 0
        for start in range(0, len(entries), REPLAY_CHUNK_COUNT):
            chunk = entries[start : start + REPLAY_CHUNK_COUNT]
            try:
                added += _commit_missing(engine, chunk, now_ms)
            except IntegrityError:
                self._set_aside()
                raise
        self._clear()
        if entries:
            log.warning(
                "usage spool replayed: %d requests added, %d were in the store already",
                added,
                len(entries) - added,
            )
        return added

    def _clear(self) -> None:
        if self.path.exists():
            with open(self.path, "r+b") as handle:
                handle.truncate(0)
                handle.flush()
                os.fsync(handle.fileno())

    def _set_aside(self) -> None:
        """A spool the store refuses (not a connection failure: a constraint) would block
        every replay; keep it beside, for the operator, and go on."""
        aside = self.path.with_name(f"{self.path.name}.refused-{os.getpid()}")
        os.replace(self.path, aside)
        log.error("usage spool refused by the store; kept as %s for inspection", aside)


def _commit_missing(engine: Engine, chunk: Sequence[Entry], now_ms: int) -> int:
    ids = [record.request_id for record, _ in chunk]
    with write_transaction(engine) as connection:
        found = set(
            connection.execute(
                select(usage_records.c.request_id).where(usage_records.c.request_id.in_(ids))
            ).scalars()
        )
        missing = [(r, t) for r, t in chunk if r.request_id not in found]
        if not missing:
            return 0
        mark = "?" if connection.dialect.name == "sqlite" else "%s"
        for record, _ in missing:
            connection.exec_driver_sql(insert_sql(mark), record_row(record))
        moved = [transfer for _, transfers in missing for transfer in transfers]
        for transfer in moved:
            connection.exec_driver_sql(transfer_insert_sql(mark), transfer_row(transfer))
        for row in balance_rows(moved, now_ms):
            connection.exec_driver_sql(balance_upsert_sql(mark), row)
    return len(missing)
