"""The store going away under load: a private PostgreSQL (initdb in a temporary folder, its
own port) is stopped while streams are under way and started again.

What must hold: streams already under way finish and their settles go to the local spool;
new requests get a clean 503 with Retry-After (never a 401 for a valid key); when the
database is back the gateway replays the spool exactly once and serves again by itself;
the ledger then balances and every answer is billed once at its hand-computed price. A
gateway stopped with a pending spool replays it when it starts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from tests.conftest import LiveGateway, gateway_config, live_gateway
from tests.fault.conftest import PrivatePostgres, Stream
from tokenmill.billing import service as billing
from tokenmill.billing.audit import run_audit
from tokenmill.store.database import open_engine
from tokenmill.store.tables import transfers, usage_records

NANO = 1_000_000_000
INPUT_NANO_PER_TOKEN = 1_000  # "1.00" per million tokens
OUTPUT_NANO_PER_TOKEN = 2_000  # "2.00" per million tokens
STREAMS_COUNT = 6
STREAM_TOKENS = 120  # about 2.5 s a stream at the sim's time scale 3


def outage_config() -> dict[str, Any]:
    config = gateway_config(None, time_scale=3.0)
    config["models"]["sim-chat"]["price"] = {"input": "1.00", "output": "2.00"}
    return config


def admin(live: LiveGateway) -> dict[str, str]:
    return {"Authorization": f"Bearer {live.admin_token}"}


def funded_key(live: LiveGateway) -> tuple[str, str]:
    secret, _, account_id = live.new_key("outage")
    billing.move_funds(
        live.db, account_id, 10 * NANO, kind="topup", idempotency_key="seed", actor="test"
    )
    deadline = time.monotonic() + 5
    while True:
        answer = httpx.get(
            f"{live.url}/admin/v1/accounts/{account_id}/balance", headers=admin(live)
        )
        if answer.json().get("balance_nano") == 10 * NANO:
            return secret, account_id
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.05)


def chat(live: LiveGateway, secret: str, max_tokens: int = 4) -> httpx.Response:
    return httpx.post(
        live.url + "/v1/chat/completions",
        json={
            "model": "sim-chat",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens,
        },
        headers={"Authorization": f"Bearer {secret}"},
        timeout=20,
    )


def wait_for(predicate: Any, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_streams_under_way_are_spooled_and_replayed_once_new_requests_get_503(
    postgres: PrivatePostgres, tmp_path: Path
) -> None:
    spool = tmp_path / "spool" / "usage.jsonl"
    with live_gateway(postgres.url, outage_config(), tmp_path) as live:
        secret, account_id = funded_key(live)
        streams = [Stream(live.url, secret, STREAM_TOKENS) for _ in range(STREAMS_COUNT)]
        for stream in streams:
            stream.start()
        for stream in streams:
            assert stream.started.wait(10)
        postgres.stop()
        for stream in streams:
            stream.join(60)
        assert all(s.error is None for s in streams), [s.error for s in streams]
        assert all(s.done and s.usage for s in streams)  # every client got its whole answer

        refused = chat(live, secret)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["type"] == "service_unavailable"
        assert refused.headers["retry-after"] == "1"
        assert chat(live, "tm-not-a-key").status_code == 401
        listing = httpx.get(f"{live.url}/admin/v1/accounts", headers=admin(live), timeout=20)
        assert listing.status_code == 503, listing.text  # the admin API too: never a 500
        assert listing.json()["error"]["type"] == "service_unavailable"
        assert len(spool.read_bytes().splitlines()) == STREAMS_COUNT

        postgres.start()
        wait_for(lambda: chat(live, secret).status_code == 200, 20, "the gateway never came back")
        assert spool.read_bytes() == b""

        with live.db.connect() as connection:
            for stream in streams:
                assert stream.usage is not None
                charge = (
                    stream.usage["prompt_tokens"] * INPUT_NANO_PER_TOKEN
                    + stream.usage["completion_tokens"] * OUTPUT_NANO_PER_TOKEN
                )
                found = (
                    connection.execute(
                        select(usage_records.c.charge_nano).where(
                            usage_records.c.request_id == stream.request_id
                        )
                    )
                    .scalars()
                    .all()
                )
                assert found == [charge]
                moved = connection.execute(
                    select(func.count(), func.sum(transfers.c.amount_nano)).where(
                        transfers.c.reference == stream.request_id
                    )
                ).one()
                assert moved == (1, charge)
        report = run_audit(live.db)
        assert not report.breaches, report.breaches
        shown = httpx.get(f"{live.url}/admin/v1/accounts/{account_id}/balance", headers=admin(live))
        assert shown.json()["balance_nano"] == billing.balance_of(live.db, account_id)


def test_a_gateway_started_with_a_pending_spool_replays_it_first(
    postgres: PrivatePostgres, tmp_path: Path
) -> None:
    """A spool left by a gateway stopped during an outage is committed when the next one
    starts, before it loads balances, and not again on a second start."""
    with live_gateway(postgres.url, outage_config(), tmp_path) as live:
        secret, _ = funded_key(live)
        stream = Stream(live.url, secret, STREAM_TOKENS)
        stream.start()
        assert stream.started.wait(10)
        postgres.stop()
        stream.join(60)
        assert stream.done and stream.usage
        assert chat(live, secret).status_code == 503
        # the gateway stops here, during the outage, with the spool pending
    assert len((tmp_path / "spool" / "usage.jsonl").read_bytes().splitlines()) == 1
    postgres.start()
    for _ in range(2):
        with live_gateway(postgres.url, outage_config(), tmp_path) as live:
            assert (tmp_path / "spool" / "usage.jsonl").read_bytes() == b""
            engine = open_engine(postgres.url, migrate=False)
            try:
                with engine.connect() as connection:
                    count = connection.execute(
                        select(func.count()).where(usage_records.c.request_id == stream.request_id)
                    ).scalar_one()
                assert count == 1
                assert not run_audit(engine).breaches
            finally:
                engine.dispose()
