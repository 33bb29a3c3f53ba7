"""``tokenmill keys limits`` and ``tokenmill accounts limits`` against a database (SQLite and
PostgreSQL): set, show (a table or JSON), clear, and refuse bad values with exit 1 and one
clear line, changing nothing. What a command changed is read back from the store and the
audit log, not from its own output alone.

Most cases run the typer app in-process (the same code the console script runs, only
faster); one runs the installed console script as a user would.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from tokenmill.access import service
from tokenmill.cli.main import app
from tokenmill.retail.rate_limits import RATE_MAX, RateLimit
from tokenmill.store import accounts as rows
from tokenmill.store.audit import AuditEntry, entries

TOKENMILL = Path(sys.executable).parent / "tokenmill"
FIELD_RANGE = f"must be a whole number from 1 to {RATE_MAX}, or null"


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


class Cli:
    """Runs ``tokenmill ...`` in-process with ``--database-url`` of ``store``."""

    def __init__(self, store: Engine, home: Path) -> None:
        self.url = url_of(store)
        self.home = home
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Result:
        return self.runner.invoke(
            app,
            [*args, "--database-url", self.url],
            env={"TOKENMILL_HOME": str(self.home), "TOKENMILL_DATABASE_URL": None},
        )


@pytest.fixture
def cli(store: Engine, tmp_path: Path) -> Cli:
    return Cli(store, tmp_path)


@pytest.fixture
def account(store: Engine) -> rows.AccountRow:
    return service.create_account(store, "acme")


@pytest.fixture
def key_id(store: Engine, account: rows.AccountRow) -> str:
    return service.create_key(store, account.id).row.id


def succeeded(result: Result) -> Any:
    """The JSON printed by a command that must have worked."""
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    return orjson.loads(result.stdout)


def refused(result: Result, *words: str) -> str:
    """A command that must have exited 1 with one 'error:' line naming ``words``."""
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    assert all(word in lines[0] for word in words), (words, lines[0])
    assert result.stdout == ""
    return lines[0]


def stored(store: Engine, entity: str, entity_id: str) -> dict[str, dict[str, int]] | None:
    """The rate limits column as the store holds it (None: no limits)."""
    with store.connect() as connection:
        row = (
            rows.account_by_id(connection, entity_id)
            if entity == "account"
            else rows.key_by_id(connection, entity_id)
        )
    assert row is not None
    return row.rate_limits


def audited(store: Engine, entity_id: str) -> list[AuditEntry]:
    """The rate-limit changes of ``entity_id``, oldest first."""
    with store.connect() as connection:
        found = entries(connection, entity_id=entity_id)
    return [entry for entry in reversed(found) if entry.action == "rate_limits"]


class TestKeysLimits:
    def test_setting_all_three_kinds_stores_them_and_prints_json(
        self, cli: Cli, store: Engine, key_id: str
    ) -> None:
        printed = succeeded(
            cli(
                "keys",
                "limits",
                key_id,
                "--rpm",
                "5",
                "--tpm",
                "1000",
                "--concurrent",
                "2",
                "--json",
            )
        )
        spec = {
            "*": {"concurrent_count_max": 2, "requests_per_minute": 5, "tokens_per_minute": 1000}
        }
        assert printed == {"id": key_id, "rate_limits": spec}
        assert stored(store, "key", key_id) == spec
        assert service.rate_limits_of(store, "key", key_id) == (
            key_id,
            {"*": RateLimit(5, 1000, 2)},
        )

    def test_a_model_limit_is_kept_beside_the_all_models_one(
        self, cli: Cli, store: Engine, key_id: str
    ) -> None:
        succeeded(cli("keys", "limits", key_id, "--rpm", "5", "--json"))
        printed = succeeded(
            cli("keys", "limits", key_id, "--model", "sim-chat", "--tpm", "300", "--json")
        )
        assert printed["rate_limits"] == {
            "*": {"requests_per_minute": 5},
            "sim-chat": {"tokens_per_minute": 300},
        }
        assert stored(store, "key", key_id) == printed["rate_limits"]

    def test_setting_a_model_again_replaces_every_kind_of_it(
        self, cli: Cli, store: Engine, key_id: str
    ) -> None:
        """Kinds left out of the command are no longer limited."""
        succeeded(cli("keys", "limits", key_id, "--rpm", "5", "--tpm", "1000", "--json"))
        printed = succeeded(cli("keys", "limits", key_id, "--concurrent", "3", "--json"))
        assert printed["rate_limits"] == {"*": {"concurrent_count_max": 3}}
        assert stored(store, "key", key_id) == {"*": {"concurrent_count_max": 3}}

    def test_showing_prints_a_table_or_json_and_changes_nothing(
        self, cli: Cli, store: Engine, key_id: str
    ) -> None:
        succeeded(cli("keys", "limits", key_id, "--rpm", "5", "--concurrent", "2", "--json"))
        succeeded(cli("keys", "limits", key_id, "--model", "sim-chat", "--tpm", "300", "--json"))
        changes = audited(store, key_id)
        table = cli("keys", "limits", key_id)
        assert table.exit_code == 0, table.output
        assert f"rate limits of {key_id}" in table.stdout
        for header in ("model", "requests/min", "tokens/min", "in flight"):
            assert header in table.stdout
        lines = table.stdout.splitlines()
        all_models = next(line for line in lines if "│ *" in line or line.strip().startswith("*"))
        assert "5" in all_models and "2" in all_models
        model_line = next(line for line in lines if "sim-chat" in line)
        assert "300" in model_line
        shown = succeeded(cli("keys", "limits", key_id, "--json"))
        assert shown == {
            "id": key_id,
            "rate_limits": {
                "*": {"concurrent_count_max": 2, "requests_per_minute": 5},
                "sim-chat": {"tokens_per_minute": 300},
            },
        }
        assert audited(store, key_id) == changes

    def test_a_key_without_limits_shows_none(self, cli: Cli, key_id: str) -> None:
        assert succeeded(cli("keys", "limits", key_id, "--json")) == {
            "id": key_id,
            "rate_limits": {},
        }

    def test_clear_removes_only_the_model_named(self, cli: Cli, store: Engine, key_id: str) -> None:
        succeeded(cli("keys", "limits", key_id, "--rpm", "5", "--json"))
        succeeded(cli("keys", "limits", key_id, "--model", "sim-chat", "--tpm", "300", "--json"))
        printed = succeeded(
            cli("keys", "limits", key_id, "--model", "sim-chat", "--clear", "--json")
        )
        assert printed["rate_limits"] == {"*": {"requests_per_minute": 5}}
        assert stored(store, "key", key_id) == {"*": {"requests_per_minute": 5}}
        printed = succeeded(cli("keys", "limits", key_id, "--clear", "--json"))
        assert printed == {"id": key_id, "rate_limits": {}}
        assert stored(store, "key", key_id) is None  # no limits: the column is empty again

    @pytest.mark.parametrize(
        ("option", "value", "field"),
        [
            ("--rpm", "0", "requests_per_minute"),
            ("--rpm", "-3", "requests_per_minute"),
            ("--tpm", "0", "tokens_per_minute"),
            ("--tpm", str(RATE_MAX + 1), "tokens_per_minute"),
            ("--concurrent", "-1", "concurrent_count_max"),
        ],
    )
    def test_a_bad_value_exits_1_with_one_clear_line_and_changes_nothing(
        self, cli: Cli, store: Engine, key_id: str, option: str, value: str, field: str
    ) -> None:
        succeeded(cli("keys", "limits", key_id, "--rpm", "5", "--json"))
        changes = audited(store, key_id)
        refused(cli("keys", "limits", key_id, option, value), field, FIELD_RANGE)
        refused(cli("keys", "limits", key_id, "--model", "sim-chat", option, value), field)
        assert stored(store, "key", key_id) == {"*": {"requests_per_minute": 5}}
        assert audited(store, key_id) == changes

    def test_a_value_that_is_not_a_number_is_a_usage_error(
        self, cli: Cli, store: Engine, key_id: str
    ) -> None:
        result = cli("keys", "limits", key_id, "--rpm", "many")
        assert result.exit_code == 2, result.output
        assert "--rpm" in result.stderr
        assert stored(store, "key", key_id) is None

    def test_an_unknown_key_exits_1(self, cli: Cli) -> None:
        refused(cli("keys", "limits", "key_0000000000000000", "--rpm", "5"), "no key")
        refused(cli("keys", "limits", "key_0000000000000000"), "no key")

    def test_each_change_is_audited_as_the_cli_user(
        self, cli: Cli, store: Engine, key_id: str
    ) -> None:
        succeeded(cli("keys", "limits", key_id, "--rpm", "5", "--json"))
        succeeded(cli("keys", "limits", key_id, "--clear", "--json"))
        changes = audited(store, key_id)
        assert [(e.entity, e.before, e.after) for e in changes] == [
            ("key", {}, {"*": {"requests_per_minute": 5}}),
            ("key", {"*": {"requests_per_minute": 5}}, {}),
        ]
        assert {e.actor for e in changes} == {f"cli:{getpass.getuser()}"[:64]}


class TestAccountsLimits:
    def test_an_account_is_found_by_name_or_id(
        self, cli: Cli, store: Engine, account: rows.AccountRow
    ) -> None:
        printed = succeeded(cli("accounts", "limits", "acme", "--rpm", "60", "--json"))
        assert printed == {"id": account.id, "rate_limits": {"*": {"requests_per_minute": 60}}}
        printed = succeeded(
            cli(
                "accounts",
                "limits",
                account.id,
                "--model",
                "sim-chat",
                "--concurrent",
                "4",
                "--json",
            )
        )
        assert printed["rate_limits"] == {
            "*": {"requests_per_minute": 60},
            "sim-chat": {"concurrent_count_max": 4},
        }
        assert stored(store, "account", account.id) == printed["rate_limits"]
        assert succeeded(cli("accounts", "limits", "acme", "--json")) == printed

    def test_an_account_limit_is_not_a_limit_of_its_keys(
        self, cli: Cli, store: Engine, account: rows.AccountRow, key_id: str
    ) -> None:
        """The account's limits are its own (its keys share them); each key's stay apart."""
        succeeded(cli("accounts", "limits", "acme", "--tpm", "5000", "--json"))
        assert succeeded(cli("keys", "limits", key_id, "--json"))["rate_limits"] == {}
        assert stored(store, "key", key_id) is None

    def test_clear_and_show(self, cli: Cli, store: Engine, account: rows.AccountRow) -> None:
        succeeded(cli("accounts", "limits", "acme", "--rpm", "60", "--json"))
        assert succeeded(cli("accounts", "limits", "acme", "--clear", "--json")) == {
            "id": account.id,
            "rate_limits": {},
        }
        assert stored(store, "account", account.id) is None
        table = cli("accounts", "limits", "acme")
        assert table.exit_code == 0, table.output
        assert f"rate limits of {account.id}" in table.stdout
        assert [(e.before, e.after) for e in audited(store, account.id)] == [
            ({}, {"*": {"requests_per_minute": 60}}),
            ({"*": {"requests_per_minute": 60}}, {}),
        ]

    def test_bad_values_and_unknown_accounts_exit_1_and_change_nothing(
        self, cli: Cli, store: Engine, account: rows.AccountRow
    ) -> None:
        succeeded(cli("accounts", "limits", "acme", "--concurrent", "2", "--json"))
        changes = audited(store, account.id)
        refused(cli("accounts", "limits", "acme", "--rpm", "0"), "requests_per_minute")
        refused(cli("accounts", "limits", "acme", "--concurrent", "0"), "concurrent_count_max")
        refused(cli("accounts", "limits", "no-such-account", "--rpm", "5"), "no account")
        refused(cli("accounts", "limits", "no-such-account"), "no account")
        assert stored(store, "account", account.id) == {"*": {"concurrent_count_max": 2}}
        assert audited(store, account.id) == changes


def test_the_console_script_sets_and_refuses_as_a_user_sees_it(
    store: Engine, account: rows.AccountRow, tmp_path: Path
) -> None:
    """Exit codes and output of the installed ``tokenmill`` command itself."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("TOKENMILL_")}
    env |= {"TOKENMILL_HOME": str(tmp_path), "TOKENMILL_DATABASE_URL": url_of(store)}

    def tokenmill(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(TOKENMILL), "accounts", "limits", "acme", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    done = tokenmill("--rpm", "5", "--tpm", "900", "--json")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["rate_limits"] == {
        "*": {"requests_per_minute": 5, "tokens_per_minute": 900}
    }
    bad = tokenmill("--tpm", "-1")
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("error: tokens_per_minute")
    assert bad.stdout == ""
    assert stored(store, "account", account.id) == {
        "*": {"requests_per_minute": 5, "tokens_per_minute": 900}
    }


class TestCliGuards:
    def test_clear_with_limits_is_refused_and_changes_nothing(
        self, cli: Cli, store: Engine, key_id: str
    ) -> None:
        succeeded(cli("keys", "limits", key_id, "--rpm", "5", "--json"))
        refused(cli("keys", "limits", key_id, "--clear", "--rpm", "7"), "--clear")
        assert stored(store, "key", key_id) == {"*": {"requests_per_minute": 5}}

    def test_a_model_the_configuration_lacks_is_set_with_a_warning(
        self, cli: Cli, store: Engine, key_id: str
    ) -> None:
        """The CLI cannot know the gateway's configuration for sure: it warns, naming the
        models it sees, and sets the limit; a known model gets no warning."""
        result = cli("keys", "limits", key_id, "--model", "llama-3.1-8bb", "--rpm", "5", "--json")
        assert result.exit_code == 0, result.stderr
        assert "warning: 'llama-3.1-8bb' is not a model" in result.stderr
        assert "llama-3.1-8b," in result.stderr
        assert stored(store, "key", key_id) == {"llama-3.1-8bb": {"requests_per_minute": 5}}
        known = cli("keys", "limits", key_id, "--model", "llama-3.1-8b", "--rpm", "5", "--json")
        assert known.exit_code == 0
        assert known.stderr == ""
