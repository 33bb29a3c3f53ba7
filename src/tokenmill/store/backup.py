"""Backups of the store: an online copy of the SQLite file while a gateway writes to it, a
restore that keeps what it replaces, and ``pg_dump`` for PostgreSQL.

SQLite's online backup API copies pages in steps; a step that finds the source changed by
another connection starts the copy over, so under a steady writer a stepped copy never
ends. The copy therefore holds one read transaction from its first page to its last: in WAL
mode a snapshot of what was committed when it began, while the gateway's commits go on
(readers do not block writers). Each step reports progress. What waits are the gateway's
WAL checkpoints, which cannot pass the snapshot: so the copy goes as fast as the disk can.

A backup is one SQLite file (rollback journal, no ``-wal`` beside it), private to its owner
(0600), written under a temporary name and renamed into place whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import make_url

from tokenmill.errors import Conflict, InvalidRequest, NotFound, Unavailable
from tokenmill.store.database import SQLITE_BUSY_TIMEOUT_MS, normalize_url, now_ms

SQLITE_HEADER = b"SQLite format 3\x00"
STEP_PAGES_COUNT = 1024  # pages per backup step: 4 MiB of 4 KiB pages, a few ms each
# Tables every tokenmill database has had since its first migration; the rest the schema
# revision tells (and migrating an older backup adds).
TOKENMILL_TABLES = ("alembic_version", "meta", "accounts", "api_keys", "usage_records")
INTEGRITY_SHOWN_MAX = 3  # integrity problems named in a refusal; the rest are counted
PG_DUMP_TIMEOUT_S = 6 * 3600  # the longest pg_dump waited for
SIDE_SUFFIXES = ("-wal", "-shm", "-journal")  # files SQLite keeps beside a database
GATEWAY_LOCK_SUFFIX = ".gateway-lock"  # the serving gateway's flock, as ownership.py names it

# Drop tokenmill's tables before recreating them (the dump's source or an empty database
# alike), in one transaction that leaves the database as it was if anything fails.
PG_RESTORE_OPTIONS = (
    "--clean",
    "--if-exists",
    "--no-owner",
    "--single-transaction",
    "--exit-on-error",
)
PG_BASE_OPTIONS = (
    "--format=tar",
    "--gzip",
    "--wal-method=stream",
    "--checkpoint=fast",
    "--progress",
)

Progress = Callable[[int, int], None]  # (pages copied, pages in all)


@dataclass(frozen=True)
class BackupMade:
    path: Path
    size_bytes: int
    pages_count: int  # 0 for a pg_dump archive
    snapshot_at_ms: int  # the copy holds what was committed at this instant
    finished_at_ms: int


@dataclass(frozen=True)
class Restored:
    path: Path  # the database restored into
    schema_revision: str  # of the backup, before any migration
    kept_path: Path | None  # the database it replaced, set aside; None if there was none


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for PostgreSQL."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        raise InvalidRequest("an in-memory SQLite database has nothing to back up or restore")
    return Path(parsed.database)


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    """A connection that never creates a database where there is none (``mode`` ro or rw)."""
    uri = f"{path.resolve().as_uri()}?mode={mode}"
    return sqlite3.connect(
        uri, uri=True, isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000
    )


def known_revisions() -> set[str]:
    config = AlembicConfig()
    config.set_main_option("script_location", "tokenmill.store:migrations")
    return {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}


def schema_revision(connection: sqlite3.Connection, path: Path) -> str:
    """The migration ``path`` is at; refused unless it is a tokenmill database we know."""
    tables = {
        name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    missing = [table for table in TOKENMILL_TABLES if table not in tables]
    if missing:
        raise InvalidRequest(
            f"{path} is an SQLite database but not tokenmill's: it has no"
            f" {', '.join(missing)} table"
        )
    rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    if len(rows) != 1:
        raise InvalidRequest(f"{path} has {len(rows)} schema revisions, not one")
    revision = str(rows[0][0])
    if revision not in known_revisions():
        raise InvalidRequest(
            f"{path} is at schema revision {revision!r}, which this tokenmill does not know"
            " (made by a newer version?): upgrade tokenmill, then restore it"
        )
    return revision


def _private_partial(target: Path) -> Path:
    """An empty file beside ``target``, readable by its owner only, to write the copy into."""
    if not target.parent.is_dir():
        raise NotFound(f"there is no folder {target.parent} to write {target.name} into")
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    return Path(name)  # mkstemp makes it 0600, whatever the umask


def _fsync(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _publish(partial: Path, target: Path, *, force: bool) -> None:
    """Move the finished copy to ``target``: replacing it only with ``force``."""
    _fsync(partial)
    if force:
        os.replace(partial, target)
    else:
        try:
            os.link(partial, target)  # fails if target exists, even if made just now
        except FileExistsError as exc:
            raise _exists(target) from exc
        partial.unlink()
    _fsync(target.parent)


def _exists(target: Path) -> Conflict:
    return Conflict(f"{target} exists: choose another file, or pass --force to replace it")


def _check_target(target: Path, source: Path | None, *, force: bool) -> None:
    if target.is_dir():
        raise InvalidRequest(f"{target} is a folder: name the backup file to write")
    if target.exists() and not force:
        raise _exists(target)
    if source is not None and target.exists() and target.resolve() == source.resolve():
        raise InvalidRequest(f"{target} is the database itself: back it up to another file")


def backup_sqlite(
    url: str,
    target: Path,
    *,
    force: bool = False,
    on_progress: Progress | None = None,
    step_pages_count: int = STEP_PAGES_COUNT,
) -> BackupMade:
    """Copy the SQLite database of ``url`` to ``target`` while others write to it."""
    assert step_pages_count > 0
    source = sqlite_file(url)
    assert source is not None, "backup_sqlite needs a SQLite URL"
    if not source.is_file():
        raise NotFound(f"there is no database at {source}")
    _check_target(target, source, force=force)
    partial = _private_partial(target)
    try:
        made = _copy(source, partial, on_progress, step_pages_count)
        _publish(partial, target, force=force)
    finally:
        partial.unlink(missing_ok=True)
    return BackupMade(target, target.stat().st_size, *made)


def _copy(
    source: Path, partial: Path, on_progress: Progress | None, step_pages_count: int
) -> tuple[int, int, int]:
    """(pages copied, snapshot instant, finish instant) of one consistent copy."""
    pages = [0]

    def progress(_status: int, remaining: int, total: int) -> None:
        pages[0] = total
        if on_progress is not None:
            on_progress(total - remaining, total)

    try:
        with (
            contextlib.closing(_connect(source, "rw")) as reader,
            contextlib.closing(sqlite3.connect(partial, isolation_level=None)) as copy,
        ):
            reader.execute("BEGIN")  # one snapshot for every step (see the docstring)
            schema_revision(reader, source)  # the first read: the snapshot starts here
            snapshot_at_ms = now_ms()
            reader.backup(copy, pages=step_pages_count, progress=progress)
            reader.execute("COMMIT")
            finished_at_ms = now_ms()
            copy.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
            _check_integrity(copy, source)
    except sqlite3.DatabaseError as exc:
        raise Unavailable(f"cannot copy {source}: {exc}") from exc
    assert pages[0] > 0
    return pages[0], snapshot_at_ms, finished_at_ms


def _check_integrity(connection: sqlite3.Connection, path: Path) -> None:
    problems = [row[0] for row in connection.execute("PRAGMA integrity_check")]
    if problems != ["ok"]:
        raise InvalidRequest(
            f"{path} fails SQLite's integrity check ({len(problems)} problems):"
            f" {'; '.join(problems[:INTEGRITY_SHOWN_MAX])}"
        )


def check_backup(path: Path) -> str:
    """The schema revision of the backup at ``path``; refused unless it is a whole, sound
    tokenmill SQLite database."""
    if not path.is_file():
        raise NotFound(f"there is no backup file at {path}")
    with path.open("rb") as handle:
        if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise InvalidRequest(f"{path} is not an SQLite database")
    try:
        with contextlib.closing(_connect(path, "ro")) as connection:
            _check_integrity(connection, path)
            return schema_revision(connection, path)
    except sqlite3.DatabaseError as exc:
        raise InvalidRequest(f"{path} is not a readable SQLite database: {exc}") from exc


@contextlib.contextmanager
def _owned(database: Path) -> Iterator[None]:
    """Hold the lock a serving gateway holds on ``database`` (store/ownership.py): refused
    while a gateway serves it, and no gateway starts on it meanwhile. Only the file lock:
    the owner's epoch in the database is the next gateway's to take."""
    path = Path(f"{database}{GATEWAY_LOCK_SUFFIX}")
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise Conflict(
                f"a running tokenmill gateway owns {database} (it holds {path}): stop it,"
                " then restore"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} (tokenmill restore)\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def restore_sqlite(backup: Path, url: str, *, now_ms: int) -> Restored:
    """Put the backup at ``backup`` in place of the SQLite database of ``url``; the database
    it replaces is renamed aside (``<name>.replaced-<UTC instant>``), never deleted."""
    target = sqlite_file(url)
    assert target is not None, "restore_sqlite needs a SQLite URL"
    if target.exists() and backup.resolve() == target.resolve():
        raise InvalidRequest(f"{backup} is the database itself")
    revision = check_backup(backup)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # a new home is private
    with _owned(target):
        staged = _private_partial(target)
        try:
            _stage(backup, staged)
            kept = _set_aside(target, staged, now_ms) if target.exists() else None
            os.replace(staged, target)
        finally:
            staged.unlink(missing_ok=True)
        _fsync(target.parent)
    assert not Path(f"{target}-wal").exists(), "no WAL of another database beside it"
    return Restored(target, revision, kept)


def _take_mode_and_owner(staged: Path, replaced: Path) -> None:
    """The restored file keeps the access of the one it replaces: a gateway running as
    another user than the restore's can still open it."""
    status = replaced.stat()
    os.chmod(staged, status.st_mode & 0o777)
    with contextlib.suppress(PermissionError):  # only root may give a file away
        os.chown(staged, status.st_uid, status.st_gid)


def _stage(backup: Path, staged: Path) -> None:
    """Copy the backup into ``staged`` through SQLite (a -wal beside the backup counts)."""
    with (
        contextlib.closing(_connect(backup, "ro")) as reader,
        contextlib.closing(sqlite3.connect(staged, isolation_level=None)) as copy,
    ):
        reader.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")
    _fsync(staged)


def _set_aside(database: Path, staged: Path, now_ms: int) -> Path:
    """Rename ``database`` (and the files SQLite keeps beside it) out of the way, ``staged``
    taking its access first."""
    instant = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    aside = database.with_name(
        f"{database.name}.replaced-{instant:%Y%m%dT%H%M%S}{now_ms % 1000:03d}Z"
    )
    if any(Path(f"{aside}{suffix}").exists() for suffix in ("", *SIDE_SUFFIXES)):
        raise Conflict(f"{aside} exists already: try again")
    _fold_wal(database)
    _take_mode_and_owner(staged, database)
    # The side files first: a -wal left beside the restored file would be replayed into it.
    for suffix in (*SIDE_SUFFIXES, ""):
        side = Path(f"{database}{suffix}")
        if side.exists():
            os.rename(side, f"{aside}{suffix}")
    return aside


def _fold_wal(database: Path) -> None:
    """Checkpoint the WAL into the file, so the set-aside copy stands alone."""
    try:
        with contextlib.closing(_connect(database, "rw")) as connection:
            busy = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    except sqlite3.DatabaseError:
        return  # not a sound database (which may be why it is replaced): moved as it is
    if busy:
        raise Conflict(f"another process reads or writes {database}: stop it, then restore")


def libpq(url: str) -> tuple[str, dict[str, str]]:
    """(URL for libpq tools without its password, environment carrying the password)."""
    parsed = make_url(normalize_url(url)).set(drivername="postgresql")
    password = parsed.password
    shown = parsed._replace(password=None).render_as_string(hide_password=False)
    return shown, ({} if password is None else {"PGPASSWORD": str(password)})


def pg_dump_command(url: str, target: Path) -> list[str]:
    return ["pg_dump", "--format=custom", "--file", str(target), libpq(url)[0]]


def pg_restore_command(url: str, archive: Path) -> list[str]:
    return ["pg_restore", *PG_RESTORE_OPTIONS, "--dbname", libpq(url)[0], str(archive)]


def fence_command(url: str) -> list[str]:
    """After a restore: add one to the owner's epoch, so a gateway left running from before
    it (with the balances and holds of before in memory) can commit nothing more."""
    return ["psql", libpq(url)[0], "-c", "UPDATE gateway_owner SET epoch = epoch + 1"]


def pg_basebackup_command(url: str, folder: Path) -> list[str]:
    return ["pg_basebackup", "--dbname", libpq(url)[0], "--pgdata", str(folder), *PG_BASE_OPTIONS]


def backup_postgres(url: str, target: Path, *, force: bool = False) -> BackupMade:
    """``pg_dump --format=custom`` of the database of ``url`` into ``target`` (0600): one
    snapshot, taken without blocking the gateway's writes."""
    if shutil.which("pg_dump") is None:
        raise Unavailable("pg_dump is not installed here")
    _check_target(target, None, force=force)
    partial = _private_partial(target)
    try:
        snapshot_at_ms = now_ms()
        _run_pg_dump(url, partial)
        finished_at_ms = now_ms()
        _publish(partial, target, force=force)
    finally:
        partial.unlink(missing_ok=True)
    return BackupMade(target, target.stat().st_size, 0, snapshot_at_ms, finished_at_ms)


def _run_pg_dump(url: str, partial: Path) -> None:
    environment = dict(os.environ) | libpq(url)[1]
    try:
        done = subprocess.run(
            pg_dump_command(url, partial),
            env=environment,
            capture_output=True,
            text=True,
            timeout=PG_DUMP_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"pg_dump did not finish within {PG_DUMP_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()[-1:] or ["no message"]
        raise Unavailable(f"pg_dump failed (exit {done.returncode}): {detail[0]}")
