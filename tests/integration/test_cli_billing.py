"""The money commands of ``tokenmill`` (top-ups, adjustments, terms, prices, transfers,
audit) run as subprocesses against a database, with no gateway and with one running.

Amounts are checked to the nano-unit against values written out here by hand; what the
commands changed is read back from the store, not from the command's own output alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from sqlalchemy import Engine, text

from tests.conftest import LiveGateway, gateway_config, live_gateway, private_pg_database
from tokenmill.access import service
from tokenmill.billing import service as billing
from tokenmill.billing.audit import run_audit
from tokenmill.store.database import open_engine
from tokenmill.store.ledger import transfers_of
from tokenmill.store.prices import all_prices

TOKENMILL = Path(sys.executable).parent / "tokenmill"
NANO = 1_000_000_000
# Per million tokens: 1000 nano-units per input token, 2000 per output token.
PRICE = {"input": "1.00", "output": "2.00"}
TEMPLATE_TOKENS = 32  # the default prompt allowance: per request ...
TOKENS_PER_MESSAGE = 8  # ... and per message


def cli_env(home: Path) -> dict[str, str]:
    """The environment without TOKENMILL_ settings, the home set to ``home``."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("TOKENMILL_")}
    return clean | {"TOKENMILL_HOME": str(home), "COLUMNS": "200"}


def tokenmill(home: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the console script with ``--database-url`` (before a ``--``, if any)."""
    split = args.index("--") if "--" in args else len(args)
    argv = [*args[:split], "--database-url", database_url, *args[split:]]
    return subprocess.run(
        [str(TOKENMILL), *argv],
        capture_output=True,
        text=True,
        env=cli_env(home),
        timeout=60,
        check=False,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON printed by a command that must have worked."""
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return orjson.loads(result.stdout)


def refused(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """A command that must have exited 1 with one 'error:' line naming ``words``."""
    assert result.returncode == 1, (result.args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    assert all(word in lines[0] for word in words), (words, lines[0])
    assert result.stdout == ""
    return lines[0]


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def balance(engine: Engine, account_id: str) -> int:
    return billing.balance_of(engine, account_id)


def transfer_ids(engine: Engine, account_id: str) -> list[str]:
    with engine.connect() as connection:
        return [t.id for t in transfers_of(connection, account_id)]


def seed(engine: Engine, account_id: str, amount_nano: int, key: str, kind: str = "topup") -> None:
    billing.move_funds(
        engine, account_id, amount_nano, kind=kind, idempotency_key=key, actor="test"
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Engine]:
    engine = open_engine(sqlite_url)
    yield engine
    engine.dispose()


def priced_config(time_scale: float = 0.0) -> dict[str, Any]:
    config = gateway_config(None, time_scale=time_scale)
    config["models"]["sim-chat"]["price"] = dict(PRICE)
    return config


class TestTopup:
    def test_a_topup_adds_exactly_its_amount_once_per_idempotency_key(
        self, store: Engine, home: Path
    ) -> None:
        """12.50 adds 12_500_000_000 nano; the same key again is a replay that moves nothing;
        the same key for 13 is refused with one error line and changes nothing."""
        account = service.create_account(store, "acme")
        url = url_of(store)
        args = ("accounts", "topup", "acme", "12.50", "--idempotency-key", "K", "--json")
        first = succeeded(tokenmill(home, url, *args))
        assert first["amount_nano"] == 12_500_000_000
        assert (first["kind"], first["replayed"], first["balance"]) == ("topup", False, "12.50")
        assert (first["debit_account"], first["credit_account"]) == ("cash:USD", account.id)
        assert balance(store, account.id) == 12_500_000_000

        again = succeeded(tokenmill(home, url, *args))
        assert again["replayed"] is True
        assert again["id"] == first["id"]
        assert again["balance"] == "12.50"
        assert balance(store, account.id) == 12_500_000_000

        other = ("accounts", "topup", "acme", "13", "--idempotency-key", "K", "--json")
        refused(tokenmill(home, url, *other), "idempotency key", "12.50")
        assert balance(store, account.id) == 12_500_000_000
        assert transfer_ids(store, account.id) == [first["id"]]

        shown = succeeded(tokenmill(home, url, "accounts", "show", "acme", "--json"))
        assert shown["funds_source"] == "store"
        assert (shown["balance_nano"], shown["held_nano"], shown["available_nano"]) == (
            12_500_000_000,
            0,
            12_500_000_000,
        )

    @pytest.mark.parametrize(
        ("amount", "words"),
        [
            pytest.param("12.5.0", ("amount", "12.5.0"), id="two-points"),
            pytest.param("1e3", ("amount", "plain decimal"), id="exponent"),
            pytest.param("-5", ("amount", "negative"), id="negative"),
            pytest.param("0.0000000001", ("amount", "9 decimals"), id="below-a-nano-unit"),
        ],
    )
    def test_a_bad_amount_is_refused_with_one_line_and_changes_nothing(
        self, sqlite_store: Engine, home: Path, amount: str, words: tuple[str, ...]
    ) -> None:
        """Malformed, exponent, negative or sub-nano amounts exit 1 naming the amount."""
        account = service.create_account(sqlite_store, "acme")
        seed(sqlite_store, account.id, 5 * NANO, "before")
        result = tokenmill(
            home, url_of(sqlite_store), "accounts", "topup", "acme", "--json", "--", amount
        )
        refused(result, *words)
        assert balance(sqlite_store, account.id) == 5 * NANO
        assert transfer_ids(sqlite_store, account.id) == ["idem:before"]


class TestAdjustAndTerms:
    def test_an_adjustment_lowers_the_balance_but_never_below_the_floor(
        self, sqlite_store: Engine, home: Path
    ) -> None:
        """adjust -3.00 on 5.00 leaves 2.00; -2.01 more is refused, naming the floor."""
        account = service.create_account(sqlite_store, "acme")
        seed(sqlite_store, account.id, 5 * NANO, "before")
        url = url_of(sqlite_store)
        lowered = succeeded(
            tokenmill(home, url, "accounts", "adjust", "acme", "--json", "--", "-3.00")
        )
        assert (lowered["kind"], lowered["amount_nano"]) == ("adjustment", 3 * NANO)
        assert (lowered["debit_account"], lowered["credit_account"]) == (
            account.id,
            "adjustments:USD",
        )
        assert balance(sqlite_store, account.id) == 2 * NANO
        refused(tokenmill(home, url, "accounts", "adjust", "acme", "--", "-2.01"), "floor", "-0.01")
        assert balance(sqlite_store, account.id) == 2 * NANO
        assert len(transfer_ids(sqlite_store, account.id)) == 2

    def test_a_credit_limit_lets_the_balance_down_to_minus_the_limit_and_no_further(
        self, store: Engine, home: Path
    ) -> None:
        """terms --credit-limit 10: adjust -10.01 is refused, -10 works, available is 0."""
        account = service.create_account(store, "acme")
        url = url_of(store)
        terms = succeeded(
            tokenmill(home, url, "accounts", "terms", "acme", "--credit-limit", "10", "--json")
        )
        assert terms["credit_limit"] == "10.00"
        refused(tokenmill(home, url, "accounts", "adjust", "acme", "--", "-10.01"), "floor")
        assert balance(store, account.id) == 0
        succeeded(tokenmill(home, url, "accounts", "adjust", "acme", "--json", "--", "-10"))
        shown = succeeded(tokenmill(home, url, "accounts", "show", "acme", "--json"))
        assert (shown["balance_nano"], shown["held_nano"], shown["available_nano"]) == (
            -10 * NANO,
            0,
            0,
        )
        assert (shown["credit_limit_nano"], shown["funds_source"]) == (10 * NANO, "store")

    def test_a_negative_adjustment_works_as_the_docs_write_it(
        self, sqlite_store: Engine, home: Path
    ) -> None:
        """`tokenmill accounts adjust ACCOUNT -3.00` (no `--`) lowers the balance by 3.00."""
        account = service.create_account(sqlite_store, "acme")
        seed(sqlite_store, account.id, 5 * NANO, "before")
        result = tokenmill(home, url_of(sqlite_store), "accounts", "adjust", "acme", "-3.00")
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert balance(sqlite_store, account.id) == 2 * NANO


class TestPricesAndTransfers:
    def test_prices_set_stores_the_exact_nano_units_and_prices_list_shows_them(
        self, sqlite_store: Engine, home: Path
    ) -> None:
        """prices set --input 0.57 --output 1.10 stores 570000000 and 1100000000 per Mtok."""
        url = url_of(sqlite_store)
        made = succeeded(
            tokenmill(
                home, url, "prices", "set", "sim-chat", "--input", "0.57", "--output", "1.10",
                "--json",
            )
        )  # fmt: skip
        expected = {
            "model": "sim-chat",
            "currency": "USD",
            "input_nano_per_mtok": 570_000_000,
            "output_nano_per_mtok": 1_100_000_000,
            "cached_input_nano_per_mtok": 570_000_000,
            "cache_write_input_nano_per_mtok": 570_000_000,
            "request_fee_nano": 0,
        }
        assert {name: made[name] for name in expected} == expected
        with sqlite_store.connect() as connection:
            stored = all_prices(connection)
        assert [
            (p.model, p.input_nano_per_mtok, p.output_nano_per_mtok, p.effective_from_ms)
            for p in stored
        ] == [("sim-chat", 570_000_000, 1_100_000_000, made["effective_from_ms"])]
        listed = succeeded(tokenmill(home, url, "prices", "list", "--json"))
        assert listed == [made]

    def test_prices_set_takes_a_cache_read_and_a_cache_write_price(
        self, sqlite_store: Engine, home: Path
    ) -> None:
        """--cached-input 0.30 --cache-write-input 3.75 store their own prices per Mtok, and
        prices list shows both apart from the input price."""
        url = url_of(sqlite_store)
        made = succeeded(
            tokenmill(
                home, url, "prices", "set", "claude", "--input", "3.00", "--output", "15",
                "--cached-input", "0.30", "--cache-write-input", "3.75", "--json",
            )
        )  # fmt: skip
        assert (made["cached_input_nano_per_mtok"], made["cache_write_input_nano_per_mtok"]) == (
            300_000_000,
            3_750_000_000,
        )
        with sqlite_store.connect() as connection:
            (stored,) = all_prices(connection)
        assert stored.cache_write_input_nano_per_mtok == 3_750_000_000
        table = tokenmill(home, url, "prices", "list")
        assert table.returncode == 0, (table.stdout, table.stderr)
        assert "cache write" in table.stdout and "3.75" in table.stdout

    def test_prices_set_refuses_a_cache_write_price_finer_than_a_nano_unit(
        self, sqlite_store: Engine, home: Path
    ) -> None:
        """A bad --cache-write-input exits 1 naming it, and stores no price."""
        result = tokenmill(
            home, url_of(sqlite_store), "prices", "set", "claude", "--input", "3",
            "--cache-write-input", "0.0000000001",
        )  # fmt: skip
        refused(result, "cache_write_input", "9 decimals")
        with sqlite_store.connect() as connection:
            assert all_prices(connection) == []

    def test_prices_set_refuses_a_price_finer_than_a_nano_unit(
        self, sqlite_store: Engine, home: Path
    ) -> None:
        """--input with ten decimals exits 1 naming the option, and stores no price."""
        result = tokenmill(
            home, url_of(sqlite_store), "prices", "set", "sim-chat", "--input", "0.0000000001"
        )
        refused(result, "input", "9 decimals")
        with sqlite_store.connect() as connection:
            assert all_prices(connection) == []

    def test_transfers_lists_every_movement_of_the_account_oldest_first(
        self, sqlite_store: Engine, home: Path
    ) -> None:
        """A top-up, a grant and an adjustment, each with its kind, sides and amount."""
        account = service.create_account(sqlite_store, "acme")
        other = service.create_account(sqlite_store, "other")
        for account_id, amount, key, kind in (
            (account.id, 12_500_000_000, "pay-1", "topup"),
            (other.id, 7 * NANO, "not-mine", "topup"),
            (account.id, 1, "gift", "grant"),
            (account.id, -250_000_000, "fix", "adjustment"),
        ):
            seed(sqlite_store, account_id, amount, key, kind)
            time.sleep(0.002)  # each in its own millisecond: the order is by time
        listed = succeeded(
            tokenmill(home, url_of(sqlite_store), "accounts", "transfers", "acme", "--json")
        )
        assert [
            (t["id"], t["kind"], t["debit_account"], t["credit_account"], t["amount_nano"])
            for t in listed
        ] == [
            ("idem:pay-1", "topup", "cash:USD", account.id, 12_500_000_000),
            ("idem:gift", "grant", "grants:USD", account.id, 1),
            ("idem:fix", "adjustment", account.id, "adjustments:USD", 250_000_000),
        ]
        assert [t["amount"] for t in listed] == ["12.50", "0.000000001", "0.25"]
        assert [t["created_at"] for t in listed] == sorted(t["created_at"] for t in listed)


class TestAudit:
    def test_audit_passes_a_clean_ledger_and_fails_naming_a_corrupted_balance(
        self, store: Engine, home: Path
    ) -> None:
        """audit exits 0 with ok true; after one nano-unit is added to a cached balance
        behind the ledger's back it exits 1 and names the account and invariant I7."""
        account = service.create_account(store, "acme")
        seed(store, account.id, 12_500_000_000, "pay-1")
        seed(store, account.id, -NANO, "fix", kind="adjustment")
        url = url_of(store)
        clean = succeeded(tokenmill(home, url, "audit", "--json"))
        assert (clean["ok"], clean["breaches"]) == (True, [])
        assert clean["transfers_count"] == 2
        with store.begin() as connection:
            connection.execute(
                text(
                    "UPDATE ledger_balances SET balance_nano_low = balance_nano_low + 1"
                    " WHERE account_id = :account"
                ),
                {"account": account.id},
            )
        broken = tokenmill(home, url, "audit")
        assert broken.returncode == 1, (broken.stdout, broken.stderr)
        assert "Traceback" not in broken.stderr
        breaches = [line for line in broken.stdout.splitlines() if line.startswith("BREACH")]
        assert breaches == [
            f"BREACH I7 {account.id}: cached balance 11500000001 != 11500000000 from transfers"
        ]
        assert broken.stdout.rstrip().endswith("FAILED")


def gateway_funds(live: LiveGateway) -> dict[str, Any]:
    """The account acme's funds as the running gateway has them (admin API)."""
    response = httpx.get(
        f"{live.url}/admin/v1/accounts/acme/balance",
        headers={"Authorization": f"Bearer {live.admin_token}"},
    )
    assert response.status_code == 200, response.text
    funds: dict[str, Any] = response.json()
    return funds


class TestConcurrentAdjustments:
    def test_two_concurrent_adjustments_never_take_a_postgres_balance_below_its_floor(
        self, home: Path
    ) -> None:
        """Two `accounts adjust -- -10` at once on a fresh account with a 10.00 credit limit:
        one is applied and one refused, the balance is -10.00, the audit passes.

        To make them overlap every time, a third connection holds the audit log locked
        until both commands wait inside their transactions; then it lets them go.
        """
        with private_pg_database() as url:
            engine = open_engine(url)
            try:
                account = service.create_account(engine, "acme")
                billing.set_terms(
                    engine, "acme", currency=None, credit_limit_nano=10 * NANO, actor="test"
                )
                database = url.rsplit("/", 1)[1]
                with psycopg.connect(url) as blocker:
                    blocker.execute("LOCK TABLE audit_log IN EXCLUSIVE MODE")
                    commands = [
                        subprocess.Popen(
                            [
                                str(TOKENMILL),
                                "accounts",
                                "adjust",
                                "acme",
                                "--idempotency-key",
                                f"debit-{i}",
                                "--database-url",
                                url,
                                "--",
                                "-10",
                            ],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            text=True,
                            env=cli_env(home),
                        )
                        for i in range(2)
                    ]
                    try:
                        deadline = time.monotonic() + 30
                        with psycopg.connect(url, autocommit=True) as watcher:
                            while lock_waiters(watcher, database) < 2:
                                assert all(c.poll() is None for c in commands), [
                                    c.communicate() for c in commands
                                ]
                                assert time.monotonic() < deadline, "they never overlapped"
                                time.sleep(0.05)
                        blocker.rollback()
                        outputs = [command.communicate(timeout=60) for command in commands]
                    finally:
                        for command in commands:
                            if command.poll() is None:
                                command.kill()
                                command.wait(timeout=10)
                codes = sorted(command.returncode for command in commands)
                assert balance(engine, account.id) == -10 * NANO, outputs
                assert codes == [0, 1], outputs
                assert run_audit(engine).ok
            finally:
                engine.dispose()


def lock_waiters(connection: psycopg.Connection[Any], database: str) -> int:
    """How many sessions of ``database`` wait for a lock now."""
    row = connection.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
        (database,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def key_headers(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}


class TestWithRunningGateway:
    def test_a_cli_topup_is_spendable_in_the_running_gateway(
        self, database_url: str, tmp_path: Path, home: Path
    ) -> None:
        """An account without funds gets 402; after `accounts topup` the same request is
        served (polled with a deadline) and charged against the new funds."""
        with live_gateway(database_url, priced_config(), tmp_path) as live:
            secret, _key_id, account_id = live.new_key("acme")
            body = {"model": "sim-chat", "messages": [{"role": "user", "content": "hi"}]}
            body["max_tokens"] = 8

            def chat() -> httpx.Response:
                return httpx.post(
                    live.url + "/v1/chat/completions", json=body, headers=key_headers(secret)
                )

            before = chat()
            assert before.status_code == 402, before.text
            assert before.json()["error"]["code"] == "insufficient_quota"
            args = ("accounts", "topup", "acme", "1.00", "--idempotency-key", "pay", "--json")
            succeeded(tokenmill(home, database_url, *args))
            deadline = time.monotonic() + 5
            while (answer := chat()).status_code == 402:
                assert time.monotonic() < deadline, "the top-up never became spendable"
                time.sleep(0.05)
            assert answer.status_code == 200, answer.text
            record = live.record(answer.headers["x-request-id"])
            usage = answer.json()["usage"]
            charge = usage["prompt_tokens"] * 1_000 + usage["completion_tokens"] * 2_000
            assert record.charge_nano == charge > 0
            assert balance(live.db, account_id) == NANO - charge

    def test_accounts_show_reads_the_hold_of_a_stream_in_flight_from_the_gateway(
        self, sqlite_url: str, tmp_path: Path, home: Path
    ) -> None:
        """show --url --admin-token: funds_source 'gateway'; while a slow stream runs
        held_nano is exactly its hold (prompt bound x input + max_tokens x output) and
        available is balance - held; without the token the store answers, with no hold."""
        with live_gateway(sqlite_url, priced_config(time_scale=3.0), tmp_path) as live:
            secret, _key_id, account_id = live.new_key("acme")
            seed(live.db, account_id, NANO, "pay")
            deadline = time.monotonic() + 5
            while gateway_funds(live)["balance_nano"] != NANO:
                assert time.monotonic() < deadline, "the gateway never saw the top-up"
                time.sleep(0.05)
            show = ("accounts", "show", "acme", "--json")
            ask = ("--url", live.url, "--admin-token", live.admin_token)
            idle = succeeded(tokenmill(home, sqlite_url, *show, *ask))
            assert idle["funds_source"] == "gateway"
            assert (idle["balance_nano"], idle["held_nano"], idle["available_nano"]) == (
                NANO,
                0,
                NANO,
            )

            max_tokens = 500  # about 10 s at this time scale: in flight while the CLI runs
            raw = orjson.dumps(
                {
                    "model": "sim-chat",
                    "stream": True,
                    "max_tokens": max_tokens,
                    "ignore_eos": True,  # the sim's text may end well before max_tokens
                    "messages": [{"role": "user", "content": "a long answer, slowly"}],
                }
            )
            hold = (len(raw) + TEMPLATE_TOKENS + TOKENS_PER_MESSAGE) * 1_000 + max_tokens * 2_000
            with httpx.stream(
                "POST",
                live.url + "/v1/chat/completions",
                content=raw,
                headers=key_headers(secret),
                timeout=30,
            ) as response:
                assert response.status_code == 200
                lines = response.iter_lines()
                assert next(lines).startswith("data: ")
                held = succeeded(tokenmill(home, sqlite_url, *show, *ask))
                stored = succeeded(tokenmill(home, sqlite_url, *show))
            assert held["funds_source"] == "gateway"
            assert held["held_nano"] == hold
            assert held["available_nano"] == held["balance_nano"] - hold
            assert (stored["funds_source"], stored["held_nano"]) == ("store", 0)

            deadline = time.monotonic() + 5
            while gateway_funds(live)["holds_count"]:
                assert time.monotonic() < deadline, "the cut stream's hold was never released"
                time.sleep(0.05)

    def test_an_adjustment_during_a_stream_never_leaves_the_balance_below_its_floor(
        self, sqlite_url: str, tmp_path: Path, home: Path
    ) -> None:
        """adjust takes the whole balance while a stream holds part of it: either it is
        refused, or the stream's settle still leaves the balance at or above the floor (0);
        the audit passes."""
        with live_gateway(sqlite_url, priced_config(time_scale=3.0), tmp_path) as live:
            secret, _key_id, account_id = live.new_key("acme")
            seed(live.db, account_id, 2_000_000, "pay")
            deadline = time.monotonic() + 5
            while gateway_funds(live)["balance_nano"] != 2_000_000:
                assert time.monotonic() < deadline, "the gateway never saw the top-up"
                time.sleep(0.05)
            body = {
                "model": "sim-chat",
                "stream": True,
                "max_tokens": 500,
                "ignore_eos": True,  # in flight for the whole adjustment
                "messages": [{"role": "user", "content": "a long answer, slowly"}],
            }
            with httpx.stream(
                "POST",
                live.url + "/v1/chat/completions",
                json=body,
                headers=key_headers(secret),
                timeout=30,
            ) as response:
                assert response.status_code == 200
                lines = response.iter_lines()
                assert next(lines).startswith("data: ")
                assert gateway_funds(live)["held_nano"] > 0
                adjusted = tokenmill(home, sqlite_url, "accounts", "adjust", "acme", "--", "-0.002")
                request_id = response.headers["x-request-id"]
            deadline = time.monotonic() + 5
            while gateway_funds(live)["holds_count"]:
                assert time.monotonic() < deadline, "the cut stream's hold was never released"
                time.sleep(0.05)
            assert adjusted.returncode in (0, 1), (adjusted.stdout, adjusted.stderr)
            assert live.record(request_id).charge_nano > 0
            assert balance(live.db, account_id) >= 0, (adjusted.stdout, adjusted.stderr)
            audit = tokenmill(home, sqlite_url, "audit")
            assert audit.returncode == 0, audit.stdout
