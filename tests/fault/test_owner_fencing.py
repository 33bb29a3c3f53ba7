"""One owner per database stays one owner when PostgreSQL drops the owner's lock
(``pg_terminate_backend`` of its connection): a deposed gateway's commits are refused by the
fencing token, it answers 503 with Retry-After instead of serving, and two gateways never
both spend; a gateway whose lock dropped with nobody taking its place takes it back."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import Engine

from tests.conftest import live_gateway, private_pg_database
from tests.integration.test_billing import (
    admin_client,
    chat_body,
    post_chat,
    priced_config,
    top_up,
)
from tokenmill.billing.audit import run_audit
from tokenmill.billing.service import move_funds
from tokenmill.errors import Unavailable
from tokenmill.store.group_commit import WRITER_APPLICATION_NAME
from tokenmill.store.ownership import (
    LOCK_APPLICATION_NAME,
    GatewayLock,
    gateway_running,
    owned_meanwhile,
)

pytestmark = pytest.mark.postgres
FUNDS_NANO = 10**12


def terminate_backends(database_url: str, application_name: str) -> int:
    """Kill the backends of ``application_name``; returns how many were killed."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            (application_name,),
        ).fetchall()
    return len(rows)


def terminate_owner_lock(database_url: str) -> int:
    """Kill the backend that holds the owner's advisory lock; returns how many were killed."""
    return terminate_backends(database_url, LOCK_APPLICATION_NAME)


def wait_for_status(live_url: str, secret: str, status: int, within_s: float) -> httpx.Response:
    deadline = time.monotonic() + within_s
    while True:
        response = post_chat_at(live_url, secret)
        if response.status_code == status:
            return response
        assert time.monotonic() < deadline, f"still {response.status_code}: {response.text}"
        time.sleep(0.05)


def post_chat_at(url: str, secret: str) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions",
        content=chat_body(8),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        timeout=30,
    )


class TestFencing:
    def test_a_deposed_gateway_never_commits_and_never_serves_again(self, tmp_path: Path) -> None:
        """A's lock is killed and B takes the database: A's next commit is refused (its
        request is kept in A's spool, not in B's ledger), A then answers 503 with
        Retry-After, also after B stops; B serves; the audit finds no breach."""
        with private_pg_database() as url:
            with live_gateway(url, priced_config(), tmp_path / "a") as a, admin_client(a) as admin:
                secret, _, account_id = a.new_key("acme")
                top_up(admin, account_id, FUNDS_NANO)
                a.wait_for_key(secret)
                time.sleep(0.3)  # the top-up reaches A's balances
                assert post_chat(a, secret, chat_body(8)).status_code == 200
                assert terminate_owner_lock(url) == 1
                # Another owner takes the database at once, as a second gateway starting does.
                usurper = GatewayLock(a.db)
                fenced = post_chat(a, secret, chat_body(8))
                refused = wait_for_status(a.url, secret, 503, within_s=5)
                assert refused.headers.get("retry-after")
                usurper.release()
                with live_gateway(url, priced_config(), tmp_path / "b") as b:
                    assert post_chat(a, secret, chat_body(8)).status_code == 503
                    assert post_chat(b, secret, chat_body(8)).status_code == 200
                    with b.db.connect() as connection:
                        ids = {
                            row[0]
                            for row in connection.exec_driver_sql(
                                "SELECT request_id FROM usage_records"
                            )
                        }
                    if fenced.status_code == 200:
                        assert fenced.headers["x-request-id"] not in ids
                time.sleep(2.5)  # B is gone: A may retry, and must still refuse
                assert post_chat(a, secret, chat_body(8)).status_code == 503
                report = run_audit(a.db)
            assert report.ok, report.breaches

    def test_a_lock_dropped_under_load_is_taken_back_and_every_answer_billed_once(
        self, tmp_path: Path
    ) -> None:
        """The lock's connection killed while 4 clients send requests: requests get 200 or
        503 (never two owners), the gateway serves again within seconds, and every 200 is
        in the ledger exactly once."""
        with private_pg_database() as url:
            with live_gateway(url, priced_config(), tmp_path) as live, admin_client(live) as admin:
                secret, _, account_id = live.new_key("acme")
                top_up(admin, account_id, FUNDS_NANO)
                time.sleep(0.3)
                stop_at = time.monotonic() + 4.0

                def client() -> list[httpx.Response]:
                    answers = []
                    while time.monotonic() < stop_at:
                        answers.append(post_chat_at(live.url, secret))
                    return answers

                with ThreadPoolExecutor(4) as pool:
                    futures = [pool.submit(client) for _ in range(4)]
                    time.sleep(0.8)
                    assert terminate_owner_lock(url) == 1
                    answers = [answer for future in futures for answer in future.result()]
                statuses = {answer.status_code for answer in answers}
                assert statuses <= {200, 503}, statuses
                wait_for_status(live.url, secret, 200, within_s=5)
                time.sleep(0.5)
                served = [a.headers["x-request-id"] for a in answers if a.status_code == 200]
                with live.db.connect() as connection:
                    charged = {
                        row[0]: row[1]
                        for row in connection.exec_driver_sql(
                            "SELECT reference, count(*) FROM transfers WHERE kind = 'usage'"
                            " GROUP BY reference"
                        )
                    }
                assert all(charged.get(request_id) == 1 for request_id in served)
                report = run_audit(live.db)
            assert report.ok, report.breaches


def debit_without_the_gateway(engine: Engine, account_id: str) -> None:
    """What ``tokenmill accounts adjust ACCOUNT -1.00`` does when no gateway holds the lock."""
    if gateway_running(engine):  # as the CLI would, it goes through the gateway instead
        raise Unavailable("the gateway holds its lock again")
    with owned_meanwhile(engine):
        move_funds(
            engine,
            account_id,
            -(10**9),
            kind="adjustment",
            idempotency_key="cli-debit",
            actor="cli:test",
        )


class TestMoneyWithoutAGateway:
    def test_a_debit_made_in_the_lock_drop_window_fences_the_gateway(self, tmp_path: Path) -> None:
        """The lock drops; before the gateway takes it back, a debit is made without it (as
        the CLI does when no gateway holds the lock): the debit owns the database meanwhile,
        so the gateway, whose holds the store never saw, refuses to serve instead of racing
        it; the audit is clean."""
        with private_pg_database() as url:
            config = priced_config(change_poll_interval_ms=1000)
            with live_gateway(url, config, tmp_path) as live, admin_client(live) as admin:
                secret, _, account_id = live.new_key("acme")
                top_up(admin, account_id, FUNDS_NANO)
                time.sleep(0.3)
                assert post_chat(live, secret, chat_body(8)).status_code == 200
                for _ in range(3):  # the gateway may take its lock back first: try again
                    assert terminate_owner_lock(url) == 1
                    try:
                        debit_without_the_gateway(live.db, account_id)
                        break
                    except Unavailable:
                        wait_for_status(live.url, secret, 200, within_s=5)
                else:
                    raise AssertionError("the gateway always took its lock back first")
                refused = wait_for_status(live.url, secret, 503, within_s=5)
                assert refused.headers.get("retry-after")
                time.sleep(1.5)  # its retries find another owner came: it stays fenced
                assert post_chat(live, secret, chat_body(8)).status_code == 503
                report = run_audit(live.db)
            assert report.ok, report.breaches


class TestDeadConnection:
    def test_a_commit_on_a_dead_connection_is_retried_not_refused(self, tmp_path: Path) -> None:
        """The usage writer's connection killed between two commits (the database stays up):
        the next commit retries on a new connection, so no request gets 503 and every one
        is billed once."""
        with private_pg_database() as url:
            with live_gateway(url, priced_config(), tmp_path) as live, admin_client(live) as admin:
                secret, _, account_id = live.new_key("acme")
                top_up(admin, account_id, FUNDS_NANO)
                time.sleep(0.3)
                answers = [post_chat(live, secret, chat_body(8)) for _ in range(3)]
                for _ in range(3):
                    assert terminate_backends(url, WRITER_APPLICATION_NAME) == 1
                    answers += [post_chat(live, secret, chat_body(8)) for _ in range(3)]
                assert [answer.status_code for answer in answers] == [200] * len(answers)
                with live.db.connect() as connection:
                    charged = connection.exec_driver_sql(
                        "SELECT count(*) FROM transfers WHERE kind = 'usage'"
                    ).scalar()
                assert charged == len(answers)
                report = run_audit(live.db)
            assert report.ok, report.breaches
