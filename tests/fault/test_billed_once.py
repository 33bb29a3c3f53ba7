"""Billed exactly once across kill -9: every answer a client received in full has one usage
record and one usage transfer of exactly its price, and the ledger still balances after the
gateway is killed under load and restarted on the same database (SQLite and PostgreSQL).
The load mixes every serving surface (chat, Messages, Responses), streamed and not, and the
kill cuts a stream of each.

Charges are computed here by hand from the configured price (1.00 per million input tokens,
2.00 per million output tokens: 1000 and 2000 nano-units a token) and the usage the client
was shown, never by the code under test.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from sqlalchemy import text

from tests.conftest import gateway_config
from tests.fault.conftest import ClientThreads
from tests.surface_requests import (
    PATHS,
    SURFACES,
    Outcome,
    StreamReader,
    Surface,
    exchange,
    key_headers,
    opened,
    request_body,
)
from tokenmill.store.database import open_engine
from tokenmill.store.ledger import cached_balances
from tokenmill.testing import free_port

TOKENMILL = str(Path(sys.executable).with_name("tokenmill"))
NANO = 1_000_000_000
TOPUP_NANO = 100 * NANO  # the seed top-up, before the load
MID_LOAD_TOPUP_NANO = NANO  # another, from the CLI while the load runs
INPUT_NANO_PER_TOKEN = 1_000  # "1.00" per million tokens
OUTPUT_NANO_PER_TOKEN = 2_000  # "2.00" per million tokens
CLIENTS_COUNT = 8
RECEIVED_BEFORE_KILL = 150  # answers received in full on each surface before the kill
PROMPT = "bill me exactly once, please"


def priced_config() -> dict[str, Any]:
    """The sim models, chat priced; sim time slowed so a stream lasts some tens of ms. A
    second sim, slower, serves 'sim-slow' at the same price: a stream of it lasts seconds."""
    config = gateway_config(None, time_scale=0.5)
    price = {"input": "1.00", "output": "2.00"}
    config["models"]["sim-chat"]["price"] = dict(price)
    config["engines"]["sim-slow"] = {"kind": "sim", "time_scale": 16.0}
    config["deployments"]["sim-slow-8b"] = config["deployments"]["sim-8b"] | {"engine": "sim-slow"}
    config["models"]["sim-slow"] = {"deployments": ["sim-slow-8b"], "price": dict(price)}
    return config


def price_nano(prompt_tokens: int, completion_tokens: int) -> int:
    """What these tokens cost at the configured price (whole nano-units, no rounding due)."""
    return prompt_tokens * INPUT_NANO_PER_TOKEN + completion_tokens * OUTPUT_NANO_PER_TOKEN


def cli_env(admin_token: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("TOKENMILL_")}
    env["TOKENMILL_ADMIN_TOKEN"] = admin_token
    return env


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    url: str
    admin_token: str
    demo_key: str = ""  # printed on the database's first start only

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.url}/admin/v1{path}",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=10,
            **kwargs,
        )

    def balance(self, account: str) -> dict[str, Any]:
        response = self.admin("GET", f"/accounts/{account}/balance")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@contextmanager
def serve(
    home: Path,
    database_url: str,
    port: int,
    admin_token: str,
    config: dict[str, Any] | None = None,
) -> Iterator[Gateway]:
    """``tokenmill serve`` as a child process on ``database_url`` (with ``config``, else the
    priced one); killed if still running."""
    home.mkdir(parents=True, exist_ok=True)
    config_path = home / "config.yaml"
    config_path.write_text(yaml.safe_dump(config or priced_config()))
    log_path = home / "serve.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    log = open(log_path, "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            TOKENMILL,
            "serve",
            "--port",
            str(port),
            "--home",
            str(home),
            "--config",
            str(config_path),
            "--database-url",
            database_url,
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=cli_env(admin_token),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.1)
        keys = re.findall(r"tm-[A-Za-z0-9_-]{20,}", log_path.read_bytes()[offset:].decode())
        yield Gateway(process, url, admin_token, keys[0] if keys else "")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        log.close()


def received_in_full(outcome: Outcome) -> bool:
    """A 200 read to its good end ([DONE], message_stop, response.completed) with usage."""
    return outcome.status == 200 and outcome.ended and outcome.usage is not None


class Load(ClientThreads):
    """Clients that send requests, each on a surface drawn at random, streamed and not,
    until told to stop."""

    clients_count = CLIENTS_COUNT

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key
        self.outcomes: list[Outcome] = []
        self.cut: list[Outcome] = []  # streams whose body was cut
        self.mid_stream: set[int] = set()  # clients reading a stream's body now
        super().__init__()

    def received_count(self, surface: Surface) -> int:
        with self._lock:
            return sum(o.surface == surface and received_in_full(o) for o in self.outcomes)

    def _client(self, index: int) -> None:
        rng = random.Random(index)
        with httpx.Client(base_url=self.url, timeout=15) as http:
            while not self.stop.is_set():
                surface = rng.choice(SURFACES)
                raw = request_body(surface, PROMPT, rng.randint(4, 24), stream=rng.random() < 0.5)
                started: list[Outcome] = []

                def on_body(outcome: Outcome, started: list[Outcome] = started) -> None:
                    started.append(outcome)
                    with self._lock:
                        self.mid_stream.add(index)

                try:
                    outcome = exchange(http, surface, self.key, raw, on_body)
                except httpx.TransportError:
                    with self._lock:
                        self.cut.extend(started)
                        self.mid_stream.discard(index)
                    return  # the gateway is gone
                with self._lock:
                    self.outcomes.append(outcome)
                    self.mid_stream.discard(index)


class SlowStream(threading.Thread):
    """One stream of 'sim-slow' on ``surface``, read in a thread until it ends or is cut:
    ``showing`` is set once its first text arrived (or it failed)."""

    def __init__(self, url: str, key: str, surface: Surface) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.surface = url, key, surface
        self.showing = threading.Event()
        self.outcome: Outcome | None = None
        self.cut = False  # the body was cut (the gateway went away)
        self.error: BaseException | None = None  # for the test thread to report

    def run(self) -> None:
        raw = request_body(self.surface, PROMPT, 64, stream=True, model="sim-slow")
        try:
            with httpx.stream(
                "POST",
                self.url + PATHS[self.surface],
                content=raw,
                headers=key_headers(self.key),
                timeout=30,
            ) as response:
                self.outcome = outcome = opened(self.surface, response)
                reader = StreamReader(outcome)
                for line in response.iter_lines():
                    reader.feed(line)
                    if outcome.pieces:
                        self.showing.set()
        except httpx.TransportError:
            self.cut = True
        except BaseException as exc:  # reported by the test thread
            self.error = exc
        finally:
            self.showing.set()


def kill_under_load(
    gateway: Gateway, database_url: str, home: Path, key: str
) -> tuple[list[Outcome], list[Outcome], list[SlowStream]]:
    """Load every surface (with a CLI top-up meanwhile) until each has answers received in
    full; open a slow stream on each; once all show text and a load client is mid-stream,
    kill -9. Returns the load's outcomes, its streams cut, and the slow streams."""
    with Load(gateway.url, key) as load:
        # A top-up from the CLI while the gateway commits under load.
        topup(gateway, database_url, home, "1.00", "mid-load")
        deadline = time.monotonic() + 60
        while min(load.received_count(surface) for surface in SURFACES) < RECEIVED_BEFORE_KILL:
            counts = {surface: load.received_count(surface) for surface in SURFACES}
            assert time.monotonic() < deadline, f"only {counts} answers before the deadline"
            time.sleep(0.005)
        slow = [SlowStream(gateway.url, key, surface) for surface in SURFACES]
        for stream in slow:
            stream.start()
        for stream in slow:
            assert stream.showing.wait(timeout=30), f"no text on {stream.surface} in 30 s"
            assert stream.error is None and not stream.cut, (stream.surface, stream.error)
        while not load.mid_stream:
            assert time.monotonic() < deadline, "no load client is mid-stream"
            time.sleep(0.005)
        os.kill(gateway.process.pid, signal.SIGKILL)
        gateway.process.wait(timeout=10)
    for stream in slow:
        stream.join(timeout=30)
        assert not stream.is_alive(), f"the slow {stream.surface} stream hangs"
    return list(load.outcomes), list(load.cut), slow


def topup(gateway: Gateway, database_url: str, home: Path, amount: str, key: str) -> None:
    """`tokenmill accounts topup acme AMOUNT --idempotency-key KEY`, which must work."""
    done = subprocess.run(
        [
            TOKENMILL,
            "accounts",
            "topup",
            "acme",
            amount,
            "--idempotency-key",
            key,
            "--json",
            "--home",
            str(home),
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
        env=cli_env(gateway.admin_token),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert orjson.loads(done.stdout)["replayed"] is False


def start_account(gateway: Gateway, database_url: str, home: Path) -> str:
    """Account 'acme' with a key and 100.00 topped up by the CLI; returns the key once the
    gateway has the funds."""
    made = gateway.admin("POST", "/accounts", json={"name": "acme"})
    assert made.status_code == 201, made.text
    key = gateway.admin("POST", "/keys", json={"account": "acme"})
    assert key.status_code == 201, key.text
    topup(gateway, database_url, home, "100", "seed")
    deadline = time.monotonic() + 10
    while gateway.balance("acme")["balance_nano"] != TOPUP_NANO:
        assert time.monotonic() < deadline, "the gateway never saw the top-up"
        time.sleep(0.05)
    secret: str = key.json()["key"]
    return secret


def ledger_rows(database_url: str) -> tuple[list[Any], list[Any], dict[str, int]]:
    """(usage records, transfers, cached balances) as the store has them."""
    engine = open_engine(database_url, migrate=False)
    try:
        with engine.connect() as connection:
            records = list(
                connection.execute(
                    text(
                        "SELECT request_id, account_id, endpoint, status, prompt_tokens,"
                        " completion_tokens, cached_tokens, charge_nano, loss_nano"
                        " FROM usage_records"
                    )
                )
            )
            transfers = list(
                connection.execute(
                    text(
                        "SELECT id, kind, debit_account, credit_account, amount_nano, reference"
                        " FROM transfers"
                    )
                )
            )
            balances = cached_balances(connection)
    finally:
        engine.dispose()
    return records, transfers, balances


class TestBilledOnceAcrossKill:
    def test_every_answer_received_in_full_is_billed_exactly_once_after_a_kill_9(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """Load, kill -9 mid-stream, restart, more load: each full answer has one record and
        one usage transfer of its exact price, the balance is the top-ups less them, the audit
        passes and no hold survives."""
        home = tmp_path / "home"
        port = free_port()
        admin_token = "tmadmin-" + secrets.token_urlsafe(24)

        with serve(home, database_url, port, admin_token) as gateway:
            key = start_account(gateway, database_url, home)
            account_id = gateway.admin("GET", "/accounts/acme").json()["id"]
            before_kill, cut, slow = kill_under_load(gateway, database_url, home, key)
        assert cut, "the kill cut no stream in flight"
        for stream in slow:  # a stream of each surface was cut mid-way
            assert stream.error is None, (stream.surface, stream.error)
            assert stream.outcome is not None and stream.outcome.pieces, stream.surface
            assert stream.cut and not stream.outcome.ended, stream.outcome

        with serve(home, database_url, port, admin_token) as gateway:
            _, _, balances = ledger_rows(database_url)
            restarted = gateway.balance("acme")
            assert (restarted["held_nano"], restarted["holds_count"]) == (0, 0)
            assert restarted["balance_nano"] == balances[account_id]
            with httpx.Client(base_url=gateway.url, timeout=15) as http:
                after = [
                    exchange(http, surface, key, request_body(surface, PROMPT, 8, stream=stream))
                    for surface in SURFACES
                    for stream in (False, True)
                ]
            assert all(received_in_full(outcome) for outcome in after), after
            settled = gateway.balance("acme")
            assert settled["balance_nano"] > TOPUP_NANO, "the mid-load top-up is missing"
            assert (settled["held_nano"], settled["holds_count"]) == (0, 0)
            gateway.process.send_signal(signal.SIGTERM)
            assert gateway.process.wait(timeout=30) == 0

        received = [outcome for outcome in before_kill + after if received_in_full(outcome)]
        assert len(received) >= len(SURFACES) * RECEIVED_BEFORE_KILL + len(after)
        for surface in SURFACES:
            streamed = [o.streamed for o in received if o.surface == surface]
            assert any(streamed) and not all(streamed), surface
        records, transfers, balances = ledger_rows(database_url)

        transfer_ids = [row.id for row in transfers]
        assert len(transfer_ids) == len(set(transfer_ids)), "a transfer id appears twice"
        record_ids = [row.request_id for row in records]
        assert len(record_ids) == len(set(record_ids)), "a request has two usage records"
        record_of = {row.request_id: row for row in records}
        usage_of: dict[str, list[Any]] = {}
        for row in transfers:
            if row.kind == "usage":
                usage_of.setdefault(row.reference, []).append(row)

        for outcome in received:
            rid = outcome.request_id
            assert rid is not None and rid in record_of, f"no usage record for {rid}"
            record = record_of[rid]
            assert outcome.usage is not None
            shown = outcome.usage
            assert (record.prompt_tokens, record.completion_tokens) == shown, rid
            assert (record.status, record.endpoint) == ("ok", outcome.surface), rid
            expected = price_nano(*shown)
            assert expected > 0
            assert (record.charge_nano, record.loss_nano) == (expected, 0), rid
            charged = usage_of.get(rid, [])
            assert [(t.id, t.amount_nano) for t in charged] == [(f"usage:{rid}", expected)], rid
            assert (charged[0].debit_account, charged[0].credit_account) == (
                account_id,
                "revenue:USD",
            )

        # Requests cut by the kill may be recorded or not; each one recorded is charged for
        # exactly the tokens it records, and has a transfer only if it was charged.
        for record in records:
            if record.account_id != account_id:
                continue
            # The cached input price is the input price here.
            expected = price_nano(record.prompt_tokens, record.completion_tokens)
            assert record.charge_nano + record.loss_nano == expected, record
            amounts = [t.amount_nano for t in usage_of.get(record.request_id, [])]
            assert amounts == ([record.charge_nano] if record.charge_nano else []), record
        assert set(usage_of) <= set(record_of), "a usage transfer has no usage record"

        spent = sum(
            t.amount_nano for t in transfers if t.debit_account == account_id and t.kind == "usage"
        )
        assert spent == sum(r.charge_nano for r in records if r.account_id == account_id)
        assert balances[account_id] == TOPUP_NANO + MID_LOAD_TOPUP_NANO - spent
        assert settled["balance_nano"] == balances[account_id]
        recomputed = sum(
            t.amount_nano if t.credit_account == account_id else -t.amount_nano
            for t in transfers
            if account_id in (t.debit_account, t.credit_account)
        )
        assert recomputed == balances[account_id]

        audit = subprocess.run(
            [TOKENMILL, "audit", "--json", "--home", str(home), "--database-url", database_url],
            capture_output=True,
            text=True,
            env=cli_env(admin_token),
            timeout=60,
            check=False,
        )
        assert audit.returncode == 0, (audit.stdout, audit.stderr)
        report = orjson.loads(audit.stdout)
        assert report["ok"] is True, report
        assert report["breaches"] == []
        assert report["records_count"] == len(records)
        assert report["transfers_count"] == len(transfers)
