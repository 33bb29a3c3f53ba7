"""``tokenmill backup`` and ``tokenmill restore`` as a subprocess: a private, self-contained
copy that never overwrites a file unasked; a restore that refuses a live database and a
file that is not a sound tokenmill database, keeps what it replaces, and audits the ledger.
On PostgreSQL: pg_dump, and the pg_restore command it names, bring a database back."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import text

from tests.conftest import LiveGateway, gateway_config, live_gateway, private_pg_database
from tokenmill.access import service
from tokenmill.billing.audit import run_audit
from tokenmill.billing.service import move_funds
from tokenmill.store.backup import fence_command, libpq, pg_restore_command
from tokenmill.store.database import open_engine, write_transaction
from tokenmill.store.ownership import GatewayLock

TOKENMILL = str(Path(sys.executable).with_name("tokenmill"))
NANO = 1_000_000_000


def tokenmill(
    *args: str, umask: int = 0o022, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The console script, with no TOKENMILL_ variable from the test's environment (and
    ``path`` as its PATH, if given)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("TOKENMILL_")}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [TOKENMILL, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        umask=umask,
    )


def failed(result: subprocess.CompletedProcess[str], says: str) -> None:
    """The command exited 1 with one clear line (no traceback) that says ``says``."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert says in result.stderr, result.stderr


def business(url: str, account: str, topup_nano: int) -> None:
    """A database at ``url`` with ``account``, topped up ``topup_nano``."""
    engine = open_engine(url)
    try:
        made = service.create_account(engine, account)
        move_funds(engine, made.id, topup_nano, kind="topup", idempotency_key=account, actor="test")
    finally:
        engine.dispose()


def account_names(url: str) -> set[str]:
    engine = open_engine(url, migrate=False)
    try:
        with engine.connect() as connection:
            return {row[0] for row in connection.execute(text("SELECT name FROM accounts"))}
    finally:
        engine.dispose()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home whose database holds account 'old' with 5.00."""
    folder = tmp_path / "home"
    business(f"sqlite:///{folder / 'tokenmill.db'}", "old", 5 * NANO)
    return folder


@pytest.fixture
def backup(tmp_path: Path) -> Path:
    """A backup of another home, whose database holds account 'new' with 7.00."""
    source = tmp_path / "source"
    business(f"sqlite:///{source / 'tokenmill.db'}", "new", 7 * NANO)
    path = tmp_path / "new.backup"
    done = tokenmill("backup", str(path), "--home", str(source))
    assert done.returncode == 0, done.stderr
    return path


class TestBackup:
    def test_a_backup_is_one_self_contained_file_private_to_its_owner(
        self, home: Path, tmp_path: Path
    ) -> None:
        """Even under umask 000 the file is 0600; it is a rollback-journal database with no
        -wal beside it, holding the home's accounts."""
        path = tmp_path / "b.db"
        done = tokenmill("backup", str(path), "--home", str(home), "--json", umask=0)
        assert done.returncode == 0, done.stderr
        assert orjson.loads(done.stdout)["size_bytes"] == path.stat().st_size
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.read_bytes()[18:20] == b"\x01\x01", "not in WAL mode"
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("b.db")) == ["b.db"]
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            assert connection.execute("SELECT name FROM accounts").fetchall() == [("old",)]

    def test_an_existing_file_is_replaced_only_with_force(self, home: Path, tmp_path: Path) -> None:
        """Without --force the file stays as it was and the command exits 1; with it, the
        file becomes the backup."""
        path = tmp_path / "b.db"
        path.write_text("an older backup\n")
        failed(tokenmill("backup", str(path), "--home", str(home)), "--force")
        assert path.read_text() == "an older backup\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["b.db", "home"], "no leftovers"
        done = tokenmill("backup", str(path), "--home", str(home), "--force")
        assert done.returncode == 0, done.stderr
        assert path.read_bytes().startswith(b"SQLite format 3\x00")
        assert path.stat().st_mode & 0o777 == 0o600

    def test_a_home_without_a_database_is_refused_and_left_without_one(
        self, tmp_path: Path
    ) -> None:
        """Backing up an empty home says there is no database, and makes none."""
        empty = tmp_path / "empty"
        empty.mkdir()
        failed(tokenmill("backup", str(tmp_path / "b.db"), "--home", str(empty)), "no database")
        assert list(empty.iterdir()) == []
        assert not (tmp_path / "b.db").exists()

    def test_on_postgres_without_pg_dump_it_names_the_commands_to_run(self, tmp_path: Path) -> None:
        """With no pg_dump on the PATH, backup exits 1 printing the pg_dump and pg_restore
        commands for the database, without its password, and writes nothing."""
        url = "postgresql://tm:s3cret@db.example:5432/tokenmill"
        archive = tmp_path / "t.dump"
        result = tokenmill("backup", str(archive), "--database-url", url, path=str(tmp_path))
        failed(result, f"pg_dump --format=custom --file {archive} postgresql://tm@db.example")
        assert "pg_restore --clean" in result.stderr
        assert "s3cret" not in result.stderr and "PGPASSWORD" in result.stderr
        assert list(tmp_path.iterdir()) == []


@pytest.fixture
def serving_home(home: Path) -> Iterator[LiveGateway]:
    """A live gateway on the home's database."""
    with live_gateway(f"sqlite:///{home / 'tokenmill.db'}", gateway_config(None), home) as live:
        yield live


def corrupt(path: Path) -> None:
    """Every page but the first overwritten with garbage."""
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.seek(4096)
        handle.write(b"\xa5" * (size - 4096))


def newer_schema(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999_future'")


def foreign(path: Path) -> None:
    path.unlink()
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")


def text_file(path: Path) -> None:
    path.write_text("SELECT 'not a database';\n")


class TestRestore:
    def test_a_database_a_running_gateway_owns_is_not_replaced(
        self, serving_home: LiveGateway, home: Path, backup: Path
    ) -> None:
        """While a gateway serves the home's database, restore exits 1 and changes nothing:
        no file is set aside and the gateway's accounts stay."""
        failed(tokenmill("restore", str(backup), "--home", str(home)), "running tokenmill gateway")
        assert not [p for p in home.iterdir() if ".replaced-" in p.name]
        assert account_names(serving_home.database_url) == {"old"}
        service.create_account(serving_home.db, "after")  # the database still works

    @pytest.mark.parametrize(
        ("spoil", "says"),
        [
            (text_file, "is not an SQLite database"),
            (foreign, "not tokenmill's"),
            (corrupt, "new.backup"),
            (newer_schema, "upgrade tokenmill"),
        ],
    )
    def test_a_file_that_is_not_a_sound_tokenmill_database_is_refused(
        self, home: Path, backup: Path, spoil: Callable[[Path], None], says: str
    ) -> None:
        """A text file, another program's SQLite file, a corrupted backup and one of a newer
        schema are each refused with a reason; the home's database stays in place."""
        spoil(backup)
        failed(tokenmill("restore", str(backup), "--home", str(home)), says)
        assert not [p for p in home.iterdir() if ".replaced-" in p.name]
        assert account_names(f"sqlite:///{home / 'tokenmill.db'}") == {"old"}

    def test_the_replaced_database_is_kept_aside_and_the_restored_one_audited(
        self, home: Path, backup: Path
    ) -> None:
        """The backup's accounts replace the home's, which stay whole in a file beside it;
        the restored file keeps the replaced one's mode; the audit passes and says so."""
        (home / "tokenmill.db").chmod(0o640)
        done = tokenmill("restore", str(backup), "--home", str(home), "--json")
        assert done.returncode == 0, (done.stdout, done.stderr)
        shown = orjson.loads(done.stdout)
        assert shown["audit"]["ok"] is True and shown["audit"]["transfers_count"] == 1
        kept = Path(shown["kept_path"])
        assert kept.parent == home and kept.name.startswith("tokenmill.db.replaced-")
        assert account_names(f"sqlite:///{home / 'tokenmill.db'}") == {"new"}
        assert account_names(f"sqlite:///{kept}") == {"old"}
        assert (home / "tokenmill.db").stat().st_mode & 0o777 == 0o640
        with sqlite3.connect(kept) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

    def test_a_restored_ledger_that_breaks_an_invariant_exits_1(
        self, tmp_path: Path, backup: Path
    ) -> None:
        """A backup whose transfer was edited behind the ledger's back restores, but the
        audit names the breach and the command exits 1."""
        with sqlite3.connect(backup) as connection:
            connection.execute("UPDATE transfers SET amount_nano = amount_nano + 1")
        done = tokenmill("restore", str(backup), "--home", str(tmp_path / "fresh"))
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert "BREACH" in done.stdout and "FAILED" in done.stdout
        restored = tmp_path / "fresh" / "tokenmill.db"
        assert restored.stat().st_mode & 0o777 == 0o600, "private where nothing was replaced"

    def test_a_backup_of_an_older_schema_is_migrated_once_restored(self, tmp_path: Path) -> None:
        """A database at migration 0003 restores, and is at this version's newest schema
        afterwards."""
        older = tmp_path / "older.db"
        engine = open_engine(f"sqlite:///{older}", migrate=False)
        config = AlembicConfig()
        config.set_main_option("script_location", "tokenmill.store:migrations")
        try:
            with write_transaction(engine) as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "0003")
        finally:
            engine.dispose()
        done = tokenmill("restore", str(older), "--home", str(tmp_path / "fresh"), "--json")
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert orjson.loads(done.stdout)["schema_revision"] == "0003"
        head = ScriptDirectory.from_config(config).get_current_head()
        with sqlite3.connect(tmp_path / "fresh" / "tokenmill.db") as connection:
            assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [
                (head,)
            ]


@pytest.fixture
def pg_url() -> Iterator[str]:
    with private_pg_database() as url:
        yield url


@pytest.mark.postgres
class TestPostgres:
    def test_pg_dump_and_the_named_pg_restore_bring_the_database_back(
        self, pg_url: str, tmp_path: Path
    ) -> None:
        """tokenmill backup runs pg_dump into a 0600 archive; the pg_restore command it names
        takes the database back to it (a later top-up is gone), and the audit passes."""
        business(pg_url, "acme", 5 * NANO)
        owner_engine = open_engine(pg_url)
        GatewayLock(owner_engine).release()  # an owner before the dump: epoch 1
        owner_engine.dispose()
        archive = tmp_path / "tokenmill.dump"
        done = tokenmill("backup", str(archive), "--database-url", pg_url, umask=0)
        assert done.returncode == 0, done.stderr
        assert archive.read_bytes().startswith(b"PGDMP")
        assert archive.stat().st_mode & 0o777 == 0o600
        command = pg_restore_command(pg_url, archive)
        assert " ".join(command) in done.stdout
        engine = open_engine(pg_url)
        try:
            account = service.find_account(engine, "acme")
            move_funds(engine, account.id, NANO, kind="grant", idempotency_key="later", actor="t")
        finally:
            engine.dispose()
        for printed in (command, fence_command(pg_url)):  # as an operator would run them
            ran = subprocess.run(
                printed,
                capture_output=True,
                text=True,
                env=dict(os.environ) | libpq(pg_url)[1],
                timeout=60,
                check=False,
            )
            assert ran.returncode == 0, ran.stderr
        engine = open_engine(pg_url)
        try:
            with engine.connect() as connection:
                ids = {row[0] for row in connection.execute(text("SELECT id FROM transfers"))}
                epoch = connection.execute(text("SELECT epoch FROM gateway_owner")).scalar()
            report = run_audit(engine)
        finally:
            engine.dispose()
        assert ids == {"idem:acme"}
        assert epoch == 2  # a gateway left running at epoch 1 is fenced
        assert report.ok, report.breaches

    def test_restore_on_postgres_names_pg_restore_and_changes_nothing(
        self, pg_url: str, tmp_path: Path
    ) -> None:
        """tokenmill restore does not replace a PostgreSQL database: it exits 1 naming
        pg_restore for this database, and the database keeps its accounts."""
        business(pg_url, "acme", 5 * NANO)
        archive = tmp_path / "tokenmill.dump"
        result = tokenmill("restore", str(archive), "--database-url", pg_url)
        failed(result, " ".join(pg_restore_command(pg_url, archive)))
        assert "pg_dump --format=custom" in result.stderr
        assert account_names(pg_url) == {"acme"}
