"""kill -9 of a gateway whose store is down and whose spool holds settled streams: a new
gateway on the same home and database replays the spool once, the audit passes, and each
answered stream is billed exactly once at its hand-computed price.

The store is a private PostgreSQL (initdb in a temporary folder, its own port) stopped while
the streams run; the gateways are ``tokenmill serve`` child processes. Prices: 1.00 and 2.00
per million input and output tokens, 1000 and 2000 nano-units a token.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from sqlalchemy import select

from tests.conftest import gateway_config
from tests.fault.conftest import PrivatePostgres
from tests.fault.test_billed_once import TOKENMILL, cli_env
from tokenmill.billing import service as billing
from tokenmill.store.database import open_engine
from tokenmill.store.tables import transfers, usage_records
from tokenmill.testing import free_port

NANO = 1_000_000_000
FUNDS_NANO = 10 * NANO
INPUT_NANO_PER_TOKEN = 1_000
OUTPUT_NANO_PER_TOKEN = 2_000
STREAMS_COUNT = 4
STREAM_TOKENS = 80  # about 1.5 s a stream at the sim's time scale 3


def slow_priced_config() -> dict[str, Any]:
    config = gateway_config(None, time_scale=3.0)
    config["models"]["sim-chat"]["price"] = {"input": "1.00", "output": "2.00"}
    return config


class Served:
    def __init__(self, process: subprocess.Popen[bytes], url: str, demo_key: str) -> None:
        self.process = process
        self.url = url
        self.demo_key = demo_key


@contextmanager
def serve(home: Path, database_url: str, port: int, admin_token: str) -> Iterator[Served]:
    """``tokenmill serve`` as a child process; killed if still running at the end. The demo
    key is the one printed on the database's first start ("" after that)."""
    home.mkdir(parents=True, exist_ok=True)
    config_path = home / "config.yaml"
    config_path.write_text(yaml.safe_dump(slow_priced_config()))
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
        printed = log_path.read_bytes()[offset:].decode()
        keys = re.findall(r"tm-[A-Za-z0-9_-]{20,}", printed)
        yield Served(process, url, keys[0] if keys else "")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        log.close()


def balance_shown(served: Served, admin_token: str, account: str) -> int:
    answer = httpx.get(
        f"{served.url}/admin/v1/accounts/{account}/balance",
        headers={"Authorization": f"Bearer {admin_token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    balance: int = answer.json()["balance_nano"]
    return balance


class Stream(threading.Thread):
    """One stream read to its end: its request id, the usage it was shown, [DONE] or not."""

    def __init__(self, url: str, secret: str) -> None:
        super().__init__(daemon=True)
        self.url, self.secret = url, secret
        self.started = threading.Event()
        self.request_id = ""
        self.usage: dict[str, int] | None = None
        self.done = False
        self.error: BaseException | None = None

    def run(self) -> None:
        body = {
            "model": "sim-chat",
            "stream": True,
            "max_tokens": STREAM_TOKENS,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "a long story, please"}],
        }
        try:
            with httpx.stream(
                "POST",
                self.url + "/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {self.secret}"},
                timeout=30,
            ) as response:
                assert response.status_code == 200, response.read()
                self.request_id = response.headers["x-request-id"]
                for line in response.iter_lines():
                    self.started.set()
                    if line == "data: [DONE]":
                        self.done = True
                    elif line.startswith("data: ") and '"usage"' in line:
                        self.usage = orjson.loads(line[6:]).get("usage") or self.usage
        except BaseException as exc:  # reported by the test thread
            self.error = exc
        finally:
            self.started.set()

    @property
    def price_nano(self) -> int:
        assert self.usage is not None
        return (
            self.usage["prompt_tokens"] * INPUT_NANO_PER_TOKEN
            + self.usage["completion_tokens"] * OUTPUT_NANO_PER_TOKEN
        )


def booked(database_url: str, request_ids: list[str]) -> dict[str, tuple[list[int], list[Any]]]:
    """Per request: the charges of its usage records, and its transfers (id, kind, amount)."""
    engine = open_engine(database_url, migrate=False)
    try:
        with engine.connect() as connection:
            found = {}
            for rid in request_ids:
                charges = connection.execute(
                    select(usage_records.c.charge_nano).where(usage_records.c.request_id == rid)
                ).scalars()
                moved = connection.execute(
                    select(transfers.c.id, transfers.c.kind, transfers.c.amount_nano).where(
                        transfers.c.reference == rid
                    )
                )
                found[rid] = (list(charges), [tuple(row) for row in moved])
            return found
    finally:
        engine.dispose()


def audit(home: Path, database_url: str, admin_token: str) -> dict[str, Any]:
    done = subprocess.run(
        [TOKENMILL, "audit", "--json", "--home", str(home), "--database-url", database_url],
        capture_output=True,
        text=True,
        env=cli_env(admin_token),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    report: dict[str, Any] = orjson.loads(done.stdout)
    return report


def test_a_gateway_killed_during_an_outage_has_its_spool_replayed_once_by_the_next(
    postgres: PrivatePostgres, tmp_path: Path
) -> None:
    """Streams under way when PostgreSQL stops end normally and are spooled; the gateway is
    killed -9 with the store still down. With the store back, a new gateway replays the
    spool before serving; a crash before the spool was emptied (the file put back) books
    nothing twice; the audit passes and each stream is billed exactly once."""
    home = tmp_path / "home"
    spool = home / "spool" / "usage.jsonl"
    port = free_port()
    admin_token = "tmadmin-" + secrets.token_urlsafe(24)

    with serve(home, postgres.url, port, admin_token) as served:
        assert served.demo_key, (home / "serve.log").read_text()
        granted = balance_shown(served, admin_token, "demo")  # the demo account's grant
        engine = open_engine(postgres.url, migrate=False)
        try:
            billing.move_funds(
                engine, "demo", FUNDS_NANO, kind="topup", idempotency_key="seed", actor="test"
            )
        finally:
            engine.dispose()
        deadline = time.monotonic() + 10
        while balance_shown(served, admin_token, "demo") != granted + FUNDS_NANO:
            assert time.monotonic() < deadline, "the gateway never saw the top-up"
            time.sleep(0.05)

        streams = [Stream(served.url, served.demo_key) for _ in range(STREAMS_COUNT)]
        for stream in streams:
            stream.start()
        for stream in streams:
            assert stream.started.wait(10)
        postgres.stop()
        for stream in streams:
            stream.join(30)
        assert [s.error for s in streams] == [None] * STREAMS_COUNT
        assert all(s.done and s.usage for s in streams)  # every client got its whole answer
        lines = spool.read_bytes()
        spooled = [orjson.loads(line)["record"]["request_id"] for line in lines.splitlines()]
        assert sorted(spooled) == sorted(s.request_id for s in streams)
        refused = httpx.post(
            served.url + "/v1/chat/completions",
            json={"model": "sim-chat", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {served.demo_key}"},
            timeout=10,
        )
        assert refused.status_code == 503, refused.text
        os.kill(served.process.pid, signal.SIGKILL)
        served.process.wait(timeout=10)

    assert spool.read_bytes() == lines  # the kill lost nothing acknowledged
    postgres.start()
    request_ids = [s.request_id for s in streams]
    expected = {s.request_id: s.price_nano for s in streams}
    assert all(price > 0 for price in expected.values())

    with serve(home, postgres.url, port, admin_token) as served:
        assert spool.read_bytes() == b""  # replayed before the gateway served
        once = booked(postgres.url, request_ids)
        shown_once = balance_shown(served, admin_token, "demo")
        served.process.kill()  # a crash after the replay's commit, before the truncate:
        served.process.wait(timeout=10)
    spool.write_bytes(lines)  # the next gateway finds the same lines again

    with serve(home, postgres.url, port, admin_token) as served:
        assert spool.read_bytes() == b""
        assert balance_shown(served, admin_token, "demo") == shown_once
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=30) == 0

    assert booked(postgres.url, request_ids) == once
    for rid, price in expected.items():
        assert once[rid] == ([price], [(f"usage:{rid}", "usage", price)]), rid
    assert shown_once == granted + FUNDS_NANO - sum(expected.values())
    report = audit(home, postgres.url, admin_token)
    assert report["ok"] is True, report
    assert report["breaches"] == []
    assert report["records_count"] == STREAMS_COUNT  # the refused request left none
