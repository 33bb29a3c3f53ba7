"""kill -9 of a gateway whose store is down and whose spool holds settled streams: a new
gateway on the same home and database replays the spool once, the audit passes, and each
answered stream is billed exactly once at its hand-computed price.

The store is a private PostgreSQL (initdb in a temporary folder, its own port) stopped while
the streams run; the gateways are ``tokenmill serve`` child processes. Prices: 1.00 and 2.00
per million input and output tokens, 1000 and 2000 nano-units a token.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import select

from tests.conftest import gateway_config
from tests.fault.conftest import PrivatePostgres, Stream
from tests.fault.test_billed_once import TOKENMILL, cli_env, serve
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


def price_nano(stream: Stream) -> int:
    assert stream.usage is not None
    return (
        stream.usage["prompt_tokens"] * INPUT_NANO_PER_TOKEN
        + stream.usage["completion_tokens"] * OUTPUT_NANO_PER_TOKEN
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

    with serve(home, postgres.url, port, admin_token, slow_priced_config()) as served:
        assert served.demo_key, (home / "serve.log").read_text()
        granted = served.balance("demo")["balance_nano"]  # the demo account's grant
        engine = open_engine(postgres.url, migrate=False)
        try:
            billing.move_funds(
                engine, "demo", FUNDS_NANO, kind="topup", idempotency_key="seed", actor="test"
            )
        finally:
            engine.dispose()
        deadline = time.monotonic() + 10
        while served.balance("demo")["balance_nano"] != granted + FUNDS_NANO:
            assert time.monotonic() < deadline, "the gateway never saw the top-up"
            time.sleep(0.05)

        streams = [Stream(served.url, served.demo_key, STREAM_TOKENS) for _ in range(STREAMS_COUNT)]
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
    expected = {s.request_id: price_nano(s) for s in streams}
    assert all(price > 0 for price in expected.values())

    with serve(home, postgres.url, port, admin_token, slow_priced_config()) as served:
        assert spool.read_bytes() == b""  # replayed before the gateway served
        once = booked(postgres.url, request_ids)
        shown_once = served.balance("demo")["balance_nano"]
        served.process.kill()  # a crash after the replay's commit, before the truncate:
        served.process.wait(timeout=10)
    spool.write_bytes(lines)  # the next gateway finds the same lines again

    with serve(home, postgres.url, port, admin_token, slow_priced_config()) as served:
        assert spool.read_bytes() == b""
        assert served.balance("demo")["balance_nano"] == shown_once
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
