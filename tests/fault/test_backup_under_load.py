"""A backup taken while the gateway serves and commits: restored into a fresh home it holds
every request answered before the backup began and every transfer made before it, and a
ledger that passes the audit; the copy is one snapshot, not torn by the commits it overlaps.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text

from tests.conftest import LiveGateway, gateway_config, live_gateway
from tests.fault.conftest import ClientThreads
from tokenmill.billing.audit import run_audit
from tokenmill.billing.service import move_funds
from tokenmill.store.backup import backup_sqlite, restore_sqlite
from tokenmill.store.database import open_engine

TOKENMILL = str(Path(sys.executable).with_name("tokenmill"))
NANO = 1_000_000_000
CLIENTS_COUNT = 4
FILLER_BYTES = 32 * 2**20  # makes the copy take many steps of 1024 pages
ANSWERED_BEFORE_COUNT = 40  # answers received in full before the backup begins
ANSWERED_DURING_COUNT = 20  # answers received while the copy is held at its first step


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Answer:
    request_id: str
    sent_at_ms: int
    answered_at_ms: int
    latency_ms: int


class Load(ClientThreads):
    """Clients sending priced chat requests (streamed and not) until told to stop."""

    clients_count = CLIENTS_COUNT

    def __init__(self, url: str, secret: str) -> None:
        self.url, self.secret = url, secret
        self.answers: list[Answer] = []
        self.failures: list[str] = []
        super().__init__()

    def answered(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)

    def wait_for(self, count: int, within_s: float = 60.0) -> None:
        deadline = time.monotonic() + within_s
        while len(self.answered()) < count:
            assert not self.failures, self.failures[:3]
            assert time.monotonic() < deadline, f"fewer than {count} answers in {within_s} s"
            time.sleep(0.01)

    def _client(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            turn = 0
            while not self.stop.is_set():
                turn += 1
                started = time.monotonic()
                sent_at_ms = now_ms()
                request_id = self._chat(http, stream=(index + turn) % 2 == 0)
                if request_id is not None:
                    latency_ms = int((time.monotonic() - started) * 1000)
                    with self._lock:
                        self.answers.append(Answer(request_id, sent_at_ms, now_ms(), latency_ms))

    def _chat(self, http: httpx.Client, *, stream: bool) -> str | None:
        """The request id of a full answer; None (and a failure noted) for anything else."""
        body: dict[str, Any] = {
            "model": "sim-chat",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "back me up"}],
            "stream": stream,
        }
        headers = {"Authorization": f"Bearer {self.secret}"}
        with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
            lines = [line for line in response.iter_lines() if line]
        if response.status_code != 200:
            self.failures.append(f"{response.status_code}: {lines[:1]}")
            return None
        complete = lines[-1] == "data: [DONE]" if stream else bool(orjson.loads(lines[0])["usage"])
        if not complete:
            self.failures.append(f"an incomplete answer: {lines[-1:]}")
            return None
        return response.headers["x-request-id"]


def rows(url: str) -> tuple[dict[str, int], dict[str, int]]:
    """({request id: charge}, {transfer id: amount}) as the database at ``url`` has them."""
    engine = open_engine(url, migrate=False)
    try:
        with engine.connect() as connection:
            records = connection.execute(text("SELECT request_id, charge_nano FROM usage_records"))
            charges = {row[0]: int(row[1]) for row in records}
            transfers = connection.execute(text("SELECT id, amount_nano FROM transfers"))
            amounts = {row[0]: int(row[1]) for row in transfers}
    finally:
        engine.dispose()
    return charges, amounts


def make_filler(url: str) -> None:
    """A migrated database with a table of random bytes, so that the file is big."""
    open_engine(url).dispose()
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE filler (bytes BLOB NOT NULL)")
        connection.execute(f"INSERT INTO filler VALUES (randomblob({FILLER_BYTES}))")


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[tuple[LiveGateway, Path]]:
    """A live gateway (priced sim-chat) on the SQLite file of its home, and that home."""
    home = tmp_path / "live"
    home.mkdir()
    url = f"sqlite:///{home / 'tokenmill.db'}"
    make_filler(url)
    config = gateway_config(None)
    config["models"]["sim-chat"]["price"] = {"input": "1.00", "output": "2.00"}
    with live_gateway(url, config, home) as live:
        yield live, home


def funded_key(live: LiveGateway) -> tuple[str, str]:
    """(secret, account id) of a key of account acme, topped up 100.00, that the gateway
    serves."""
    secret, _key_id, account_id = live.new_key("acme")
    move_funds(live.db, account_id, 100 * NANO, kind="topup", idempotency_key="seed", actor="test")
    deadline = time.monotonic() + 10
    while True:
        status = httpx.post(
            live.url + "/v1/chat/completions",
            json={
                "model": "sim-chat",
                "max_tokens": 1,
                "messages": [{"role": "user", "content": "hi"}],
            },
            headers={"Authorization": f"Bearer {secret}"},
        ).status_code
        if status == 200:
            return secret, account_id
        assert time.monotonic() < deadline, f"the gateway still answers {status}"
        time.sleep(0.05)


def tokenmill(*args: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("TOKENMILL_")}
    return subprocess.run(
        [TOKENMILL, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


class TestBackupUnderLoad:
    def test_a_backup_under_load_restores_every_request_answered_before_it(
        self, serving: tuple[LiveGateway, Path], tmp_path: Path
    ) -> None:
        """tokenmill backup while clients are served, then tokenmill restore into a fresh
        home: every answer and transfer from before the backup is there, the audit passes,
        and what the backup holds is what the live database holds."""
        live, home = serving
        secret, account_id = funded_key(live)
        with Load(live.url, secret) as load:
            load.wait_for(ANSWERED_BEFORE_COUNT)
            move_funds(live.db, account_id, NANO, kind="grant", idempotency_key="mid", actor="t")
            answered_before = {answer.request_id for answer in load.answered()}
            transfers_before = rows(live.database_url)[1]
            backup = tmp_path / "backup.db"
            done = tokenmill("backup", str(backup), "--home", str(home), "--json")
            assert done.returncode == 0, done.stderr
            made = orjson.loads(done.stdout)
            load.wait_for(len(load.answered()) + ANSWERED_DURING_COUNT)
        assert not load.failures, load.failures[:3]
        fresh = tmp_path / "fresh"
        restored = tokenmill("restore", str(backup), "--home", str(fresh))
        assert restored.returncode == 0, (restored.stdout, restored.stderr)
        assert "ok: every invariant holds" in restored.stdout
        records, transfers = rows(f"sqlite:///{fresh / 'tokenmill.db'}")
        assert answered_before <= set(records), answered_before - set(records)
        for request_id in answered_before:
            if records[request_id] > 0:
                assert transfers[f"usage:{request_id}"] == records[request_id], request_id
        assert transfers_before.items() <= transfers.items()
        live_records, live_transfers = rows(live.database_url)
        assert records.items() <= live_records.items(), "the backup holds what was committed"
        assert transfers.items() <= live_transfers.items()
        during = [a for a in load.answered() if a.answered_at_ms >= made["snapshot_at_ms"]]
        sys.stderr.write(
            f"backup of {made['size_bytes'] / 2**20:.1f} MiB took"
            f" {made['finished_at_ms'] - made['snapshot_at_ms']} ms;"
            f" {len(during)} answers after its snapshot, the slowest in"
            f" {max(a.latency_ms for a in during)} ms\n"
        )

    def test_the_copy_is_one_snapshot_while_requests_commit_during_it(
        self, serving: tuple[LiveGateway, Path], tmp_path: Path
    ) -> None:
        """Held at its first step while more requests commit, the copy still holds exactly
        its snapshot: no request sent after the copy began is in it, every one answered
        before is, and its ledger passes the audit."""
        live, _home = serving
        secret, _account_id = funded_key(live)
        steps: list[tuple[int, int]] = []
        began: list[tuple[int, int]] = []  # (instant, answers so far) at the first step

        with Load(live.url, secret) as load:

            def hold_the_first_step(pages_done: int, pages_total: int) -> None:
                if not steps:
                    began.append((now_ms(), len(load.answered())))
                    load.wait_for(began[0][1] + ANSWERED_DURING_COUNT)
                steps.append((pages_done, pages_total))

            load.wait_for(ANSWERED_BEFORE_COUNT)
            answered_before = {answer.request_id for answer in load.answered()}
            backup = tmp_path / "backup.db"
            backup_sqlite(live.database_url, backup, on_progress=hold_the_first_step)
        assert not load.failures, load.failures[:3]
        assert len(steps) > 1 and steps[-1][0] == steps[-1][1], steps[-3:]
        assert [done for done, _ in steps] == sorted(done for done, _ in steps), "no restart"
        restored_url = f"sqlite:///{tmp_path / 'restored' / 'tokenmill.db'}"
        restore_sqlite(backup, restored_url, now_ms=now_ms())
        records, _transfers = rows(restored_url)
        sent_later = {a.request_id for a in load.answered() if a.sent_at_ms > began[0][0]}
        assert len(sent_later) >= ANSWERED_DURING_COUNT // 2, "requests committed meanwhile"
        assert answered_before <= set(records)
        assert not sent_later & set(records), "a commit after the snapshot is in the copy"
        engine = open_engine(restored_url)
        try:
            report = run_audit(engine)
        finally:
            engine.dispose()
        assert report.ok, report.breaches
        assert report.records_count == len(records)
