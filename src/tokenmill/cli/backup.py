"""``tokenmill backup`` and ``tokenmill restore``: the business in one file, copied while the
gateway runs, and put back (the ledger audited) while it does not."""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from tokenmill.billing.audit import run_audit
from tokenmill.cli import common
from tokenmill.cli.audit import audit
from tokenmill.cli.common import (
    DatabaseOption,
    FormatOption,
    HomeOption,
    JsonOption,
    iso,
    output_format,
    print_json,
    run,
)
from tokenmill.config import resolve_home
from tokenmill.errors import Unprocessable
from tokenmill.store import backup as backups
from tokenmill.store.backup import BackupMade
from tokenmill.store.database import now_ms

FileArgument = Annotated[Path, typer.Argument(help="The backup file.", dir_okay=False)]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")]
POSTGRES_TOOLS = "on PostgreSQL use its own tools:"


def backup(
    file: FileArgument,
    force: ForceOption = False,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Copy the database to FILE while the gateway runs and writes: a consistent snapshot of
    the committed transactions (SQLite's online backup API), private to its owner (0600).
    On PostgreSQL it runs pg_dump --format=custom, or says what to run."""
    as_json = output_format(output, as_json) == "json"
    url = common.database_url(home, database_url)
    if backups.sqlite_file(url) is None:
        if shutil.which("pg_dump") is None:
            run(lambda: _refuse(f"pg_dump is not installed here; {POSTGRES_TOOLS}", url, file))
        made = run(lambda: backups.backup_postgres(url, file, force=force))
        _show(
            made, as_json, f"restore it with: {shlex.join(backups.pg_restore_command(url, file))}"
        )
        return
    with _progress() as on_progress:
        made = run(lambda: backups.backup_sqlite(url, file, force=force, on_progress=on_progress))
    _show(made, as_json, f"restore it with: tokenmill restore {file} (with the gateway stopped)")


@contextmanager
def _progress() -> Iterator[backups.Progress]:
    """A progress bar on stderr, where stderr is a terminal."""
    console = Console(stderr=True)
    columns = (TextColumn("backup"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with Progress(
        *columns, console=console, transient=True, disable=not console.is_terminal
    ) as bar:
        task = bar.add_task("backup", total=None)

        def update(pages_done: int, pages_total: int) -> None:
            bar.update(task, completed=pages_done, total=pages_total)

        yield update


def _show(made: BackupMade, as_json: bool, hint: str) -> None:
    took_s = (made.finished_at_ms - made.snapshot_at_ms) / 1000
    if as_json:
        print_json(
            {
                "path": str(made.path),
                "size_bytes": made.size_bytes,
                "pages_count": made.pages_count,
                "snapshot_at": iso(made.snapshot_at_ms),
                "snapshot_at_ms": made.snapshot_at_ms,
                "finished_at_ms": made.finished_at_ms,
            }
        )
        return
    typer.echo(
        f"backed up to {made.path}: {made.size_bytes / 2**20:.1f} MiB in {took_s:.2f} s,"
        f" everything committed by {iso(made.snapshot_at_ms)}"
    )
    typer.echo(hint)


def restore(
    file: FileArgument,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Put a backup made by tokenmill backup in place of the home's database, keep the
    replaced database beside it (renamed, never deleted), then audit the restored ledger:
    exits 1 on a breach. Refused while a gateway serves the database."""
    as_json = output_format(output, as_json) == "json"
    url = common.database_url(home, database_url)
    if backups.sqlite_file(url) is None:
        run(
            lambda: _refuse(f"tokenmill restore replaces SQLite files; {POSTGRES_TOOLS}", url, file)
        )
    restored = run(lambda: backups.restore_sqlite(file, url, now_ms=now_ms()))
    spool = resolve_home(home, dict(os.environ)) / "spool" / "usage.jsonl"
    if spool.is_file() and spool.stat().st_size > 0:
        typer.echo(
            f"note: {spool} holds requests served while the store was down; the next"
            " tokenmill serve books them into the restored database",
            err=True,
        )
    if not as_json:
        typer.echo(f"restored {file} (schema {restored.schema_revision}) into {restored.path}")
        if restored.kept_path is not None:
            typer.echo(f"the database it replaced is kept at {restored.kept_path}")
        audit(home=home, database_url=url)  # prints the audit as tokenmill audit does
        return
    with common.store(home, url) as engine:  # migrated to this version's schema on open
        report = run(lambda: run_audit(engine))
    print_json(
        {
            "path": str(restored.path),
            "schema_revision": restored.schema_revision,
            "kept_path": None if restored.kept_path is None else str(restored.kept_path),
            "audit": {
                "ok": report.ok,
                "transfers_count": report.transfers_count,
                "records_count": report.records_count,
                "accounts_count": report.accounts_count,
                "breaches": [breach.__dict__ for breach in report.breaches],
            },
        }
    )
    if not report.ok:
        raise typer.Exit(1)


def postgres_advice(url: str, file: Path) -> str:
    """What to run instead of tokenmill's own backup and restore on PostgreSQL."""
    base = backups.pg_basebackup_command(url, Path("backup-folder"))
    lines = [
        f"  back up:  {shlex.join(backups.pg_dump_command(url, file))}",
        f"  restore:  {shlex.join(backups.pg_restore_command(url, file))}",
        f"            {shlex.join(backups.fence_command(url))}",
        "            (stop every gateway first; the second command fences any left running;"
        " then check it: tokenmill audit)",
        "  or the whole server, for point-in-time recovery (needs REPLICATION):",
        f"            {shlex.join(base)}",
    ]
    if backups.libpq(url)[1]:
        lines.append("  (the password is not shown: pass it in PGPASSWORD or ~/.pgpass)")
    return "\n".join(lines)


def _refuse(why: str, url: str, file: Path) -> None:
    raise Unprocessable(f"{why}\n{postgres_advice(url, file)}")
