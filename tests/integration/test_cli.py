"""The ``tokenmill`` command line, run as a subprocess against the database of a live gateway:
what it changes reaches the running gateway within a second."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveGateway, gateway_config, live_gateway
from tokenmill.access import service
from tokenmill.access.keys import hash_secret
from tokenmill.usage import UsageRecord

TOKENMILL = Path(sys.executable).parent / "tokenmill"
HELLO = [{"role": "user", "content": "hello there"}]


def tokenmill(
    home: Path, database_url: str, *args: str, columns: int | None = 200
) -> subprocess.CompletedProcess[str]:
    """Run the console script with ``--database-url``; TOKENMILL_HOME is ``home``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TOKENMILL_") and name != "COLUMNS"
    }
    env["TOKENMILL_HOME"] = str(home)
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run(
        [str(TOKENMILL), *args, "--database-url", database_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a command that must have worked."""
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def chat_status(gateway: LiveGateway, secret: str, model: str) -> int:
    headers = {"Authorization": f"Bearer {secret}"}
    if model == "sim-embed":
        path, body = "/v1/embeddings", {"model": model, "input": "hello there"}
    else:
        path, body = "/v1/chat/completions", {"model": model, "messages": HELLO, "max_tokens": 2}
    return httpx.post(gateway.url + path, headers=headers, json=body).status_code


@pytest.fixture
def running(database_url: str, tmp_path: Path) -> Iterator[LiveGateway]:
    """A live gateway on SQLite or PostgreSQL (the CLI writes to its database meanwhile)."""
    with live_gateway(database_url, gateway_config(None), tmp_path) as live:
        yield live


@pytest.fixture
def on_sqlite(sqlite_url: str, tmp_path: Path) -> Iterator[LiveGateway]:
    """A live gateway on SQLite, for the commands not run on both databases."""
    with live_gateway(sqlite_url, gateway_config(None), tmp_path) as live:
        yield live


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


class TestCliWithRunningGateway:
    def test_an_account_and_key_made_by_the_cli_work_within_a_second_and_revoked_stop(
        self, running: LiveGateway, home: Path
    ) -> None:
        """accounts create, keys create (the key under "key", live within 1 s), keys revoke
        (401 within 1 s), all while the gateway runs."""
        url = running.database_url
        account = json.loads(
            succeeded(tokenmill(home, url, "accounts", "create", "acme", "--json"))
        )
        assert account["name"] == "acme"
        assert account["status"] == "active"
        assert account["disabled_at"] is None
        assert account["id"].startswith("acct_")
        assert service.find_account(running.db, "acme").id == account["id"]
        made = json.loads(succeeded(tokenmill(home, url, "keys", "create", "acme", "--json")))
        secret = made["key"]
        assert secret.startswith("tm-")
        assert made["account_id"] == account["id"]
        assert made["models"] is None
        assert running.wait_for_key(secret, within_s=1.0) <= 1.0
        assert chat_status(running, secret, "sim-chat") == 200
        assert chat_status(running, secret, "sim-embed") == 200
        revoked = json.loads(
            succeeded(tokenmill(home, url, "keys", "revoke", made["id"], "--json"))
        )
        assert revoked["revoked_at"] is not None
        assert running.wait_for_key(secret, known=False, within_s=1.0) <= 1.0
        assert chat_status(running, secret, "sim-chat") == 401


class TestCliKeysAndUsage:
    def test_keys_create_with_a_model_restricts_the_key(
        self, on_sqlite: LiveGateway, home: Path
    ) -> None:
        """keys create --model sim-chat makes a key that may use sim-chat and nothing else."""
        service.create_account(on_sqlite.db, "acme")
        made = json.loads(
            succeeded(
                tokenmill(
                    home,
                    on_sqlite.database_url,
                    "keys",
                    "create",
                    "acme",
                    "--model",
                    "sim-chat",
                    "--json",
                )
            )
        )
        assert made["models"] == ["sim-chat"]
        on_sqlite.wait_for_key(made["key"], within_s=1.0)
        assert chat_status(on_sqlite, made["key"], "sim-chat") == 200
        assert chat_status(on_sqlite, made["key"], "sim-embed") == 404  # as if it did not exist

    def test_usage_lists_the_records_of_the_gateway_filtered_by_model(
        self, on_sqlite: LiveGateway, home: Path
    ) -> None:
        """usage --json --model gives exactly that model's records, with every record field."""
        secret, key_id, account_id = on_sqlite.new_key("acme")
        sent: dict[str, str] = {}
        for model in ("sim-chat", "sim-embed", "sim-chat", "sim-embed", "sim-embed"):
            headers = {"Authorization": f"Bearer {secret}"}
            if model == "sim-embed":
                path, body = "/v1/embeddings", {"model": model, "input": "hi"}
            else:
                path, body = "/v1/chat/completions", {"model": model, "messages": HELLO}
            answer = httpx.post(on_sqlite.url + path, headers=headers, json=body)
            assert answer.status_code == 200, answer.text
            sent[answer.headers["x-request-id"]] = model
        output = succeeded(
            tokenmill(home, on_sqlite.database_url, "usage", "--model", "sim-embed", "--json")
        )
        records = json.loads(output)
        expected_fields = {f.name for f in fields(UsageRecord)} | {"started_at"}
        assert all(set(record) == expected_fields for record in records), records
        assert {r["request_id"] for r in records} == {
            rid for rid, model in sent.items() if model == "sim-embed"
        }
        assert all(r["account_id"] == account_id and r["key_id"] == key_id for r in records)
        assert all(r["endpoint"] == "embeddings" and r["status"] == "ok" for r in records)
        assert all(r["prompt_tokens"] >= 1 for r in records)


class TestCliAccounts:
    def test_accounts_list_and_show(self, on_sqlite: LiveGateway, home: Path) -> None:
        """list --json holds every account; show (without --json) prints a table with it."""
        url = on_sqlite.database_url
        acme = service.create_account(on_sqlite.db, "acme")
        other = service.create_account(on_sqlite.db, "other corp")
        listed = json.loads(succeeded(tokenmill(home, url, "accounts", "list", "--json")))
        assert [a["id"] for a in listed] == [acme.id, other.id]
        assert [a["name"] for a in listed] == ["acme", "other corp"]
        assert {
            "id",
            "name",
            "status",
            "created_at",
            "disabled_at",
            "currency",
            "credit_limit",
            "plan",
        } == set(listed[0])
        table = succeeded(tokenmill(home, url, "accounts", "show", "acme"))
        assert "acme" in table
        assert acme.id in table
        assert "active" in table
        assert "other corp" not in table
        assert not table.lstrip().startswith(("{", "["))


class TestCliStoresOnlyHashes:
    def test_a_new_key_is_nowhere_in_the_sqlite_file(
        self, on_sqlite: LiveGateway, home: Path
    ) -> None:
        """After keys create, the database files hold the key's hash but not the key."""
        service.create_account(on_sqlite.db, "acme")
        url = on_sqlite.database_url
        made = json.loads(succeeded(tokenmill(home, url, "keys", "create", "acme", "--json")))
        on_sqlite.wait_for_key(made["key"])
        db_file = Path(url.removeprefix("sqlite:///"))
        stored = b"".join(
            path.read_bytes()
            for path in (db_file, db_file.with_name(db_file.name + "-wal"))
            if path.exists()
        )
        assert hash_secret(made["key"]).encode() in stored
        assert made["key"].encode() not in stored
        assert made["key"][len(made["prefix"]) :].encode() not in stored


class TestCliErrors:
    @pytest.mark.parametrize(
        ("args", "words"),
        [
            pytest.param(("keys", "create", "nobody"), ("nobody",), id="unknown-account"),
            pytest.param(
                ("accounts", "create", "bad/name"), ("name", "letters"), id="bad-account-name"
            ),
        ],
    )
    def test_an_error_exits_1_with_one_clear_line(
        self, sqlite_url: str, home: Path, args: tuple[str, ...], words: tuple[str, ...]
    ) -> None:
        """A refused command exits with 1 and says why in one line on stderr, no traceback."""
        result = tokenmill(home, sqlite_url, *args, columns=None)
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: "), lines
        assert all(word in lines[0] for word in words), lines
        assert result.stdout == ""

    def test_a_bad_database_url_exits_1_with_one_clear_line(self, home: Path) -> None:
        """A database URL of an unsupported kind is one line on stderr, not a traceback."""
        result = tokenmill(home, "mysql://nobody@127.0.0.1/x", "accounts", "list", columns=None)
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert "database" in lines[0].lower()
