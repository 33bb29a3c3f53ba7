"""The usage spool on its own: what a gateway appends while the store is down is read back
as it was written, a torn last line is cut, and a replay books each request exactly once,
even when it is run again after a crash, or sets the spool aside when the store refuses it.

Replays run against a real store (SQLite, and PostgreSQL when TOKENMILL_TEST_PG_URL is set).
Entries are built from real usage records and the ledger's own ``usage_transfers``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from tests.conftest import gateway_config
from tokenmill.access import service
from tokenmill.api.gateway import Gateway
from tokenmill.billing import service as billing
from tokenmill.billing.audit import run_audit
from tokenmill.config import Settings, parse_config
from tokenmill.retail.funds import Settlement
from tokenmill.retail.ledger import Transfer, operator_account, usage_transfer_id, usage_transfers
from tokenmill.store.database import open_engine
from tokenmill.store.ledger import cached_balances, recomputed_balances
from tokenmill.store.spool import Entry, UsageSpool
from tokenmill.store.tables import transfers, usage_records
from tokenmill.store.usage import record_by_request_id
from tokenmill.usage import UsageRecord

NANO = 1_000_000_000
STARTED_AT_MS = 1_780_000_000_000
FUNDS_NANO = 10 * NANO


def entry(
    request_id: str,
    account_id: str,
    charge_nano: int,
    *,
    loss_nano: int = 0,
    status: str = "ok",
) -> Entry:
    """A settled request as the gateway spools it: its record and its ledger transfers."""
    record = UsageRecord(
        request_id=request_id,
        account_id=account_id,
        key_id="key_spooltest",
        model="sim-chat",
        deployment="sim-8b",
        engine="sim",
        endpoint="chat",
        prompt_tokens=11,
        completion_tokens=7,
        cached_tokens=0,
        estimated=status != "ok",
        status=status,
        http_status=200,
        error_type=None if status == "ok" else "api_error",
        started_at_ms=STARTED_AT_MS,
        ttft_ms=None if status != "ok" else 12,
        duration_ms=40,
        charge_nano=charge_nano,
        loss_nano=loss_nano,
        cost_nano=5,
        cost_basis="modeled",
    )
    moved = usage_transfers(
        request_id, account_id, "USD", Settlement(charge_nano, loss_nano), STARTED_AT_MS + 40
    )
    return record, moved


def spool_at(tmp_path: Path) -> UsageSpool:
    return UsageSpool(tmp_path / "spool" / "usage.jsonl")


@pytest.fixture
def account_id(store: Engine) -> str:
    """A customer account holding FUNDS_NANO, topped up through the ledger."""
    account = service.create_account(store, "spooled")
    billing.move_funds(
        store, account.id, FUNDS_NANO, kind="topup", idempotency_key="seed", actor="test"
    )
    return account.id


def three_requests(account_id: str) -> list[Entry]:
    """A charged request, one whose charge exceeded its hold (a loss), one free."""
    return [
        entry("req_spool_a", account_id, 25_000),
        entry("req_spool_b", account_id, 30_000, loss_nano=1_234),
        entry("req_spool_c", account_id, 0, status="error"),
    ]


def ledger_state(store: Engine) -> tuple[int, int, dict[str, int], dict[str, int]]:
    """(records, transfers, cached balances, recomputed balances) in the store now."""
    with store.connect() as connection:
        records = connection.execute(select(func.count()).select_from(usage_records)).scalar_one()
        moved = connection.execute(select(func.count()).select_from(transfers)).scalar_one()
        return (
            int(records),
            int(moved),
            cached_balances(connection),
            recomputed_balances(connection),
        )


class TestSpoolFile:
    def test_what_is_appended_is_read_back_as_it_was(self, tmp_path: Path) -> None:
        """Records (with None fields and losses) and their transfers survive the round trip
        through the file, in order, across appends."""
        spool = spool_at(tmp_path)
        assert not spool.pending
        assert spool.read() == []
        entries = three_requests("acct_roundtrip")
        assert len(entries[1][1]) == 2  # a usage and a loss transfer
        assert entries[2][1] == ()  # nothing charged, nothing moved
        spool.append(entries[:2])
        spool.append(entries[2:])
        assert spool.pending
        assert spool.read() == entries
        assert len(spool.path.read_bytes().splitlines()) == 3
        assert spool_at(tmp_path).read() == entries  # as a restarted gateway reads it

    def test_a_torn_last_line_is_cut_when_the_spool_opens(self, tmp_path: Path) -> None:
        """A crash in the middle of an append leaves part of a line; it was never
        acknowledged, so it goes, and the lines before it stay."""
        spool = spool_at(tmp_path)
        entries = three_requests("acct_torn")
        spool.append(entries[:2])
        whole = spool.path.read_bytes()
        spool.append(entries[2:])
        third = spool.path.read_bytes()[len(whole) :]
        spool.path.write_bytes(whole + third[: len(third) // 2])

        reopened = spool_at(tmp_path)
        assert reopened.path.read_bytes() == whole
        assert reopened.read() == entries[:2]
        reopened.append(entries[2:])  # the next append starts on a line of its own
        assert reopened.read() == entries

    def test_a_spool_that_is_only_a_torn_line_opens_empty(self, tmp_path: Path) -> None:
        spool = spool_at(tmp_path)
        spool.path.write_bytes(b'{"record": {"request_id": "req_')
        reopened = spool_at(tmp_path)
        assert not reopened.pending
        assert reopened.read() == []


class TestReplay:
    def test_a_replay_commits_each_request_once_and_empties_the_file(
        self, store: Engine, account_id: str, tmp_path: Path
    ) -> None:
        spool = spool_at(tmp_path)
        entries = three_requests(account_id)
        spool.append(entries)
        records_before, transfers_before, _, _ = ledger_state(store)

        assert spool.replay(store, STARTED_AT_MS + 100) == 3
        assert spool.path.read_bytes() == b""
        assert not spool.pending
        with store.connect() as connection:
            for record, _ in entries:
                assert record_by_request_id(connection, record.request_id) == record
        records, moved, cached, recomputed = ledger_state(store)
        assert (records, moved) == (records_before + 3, transfers_before + 3)
        assert cached[account_id] == FUNDS_NANO - 25_000 - 30_000
        assert cached[operator_account("loss", "USD")] == -1_234
        assert cached[operator_account("revenue", "USD")] == 25_000 + 30_000 + 1_234
        assert cached == recomputed
        assert billing.balance_of(store, account_id) == FUNDS_NANO - 55_000
        assert run_audit(store).ok, run_audit(store).breaches
        assert spool.replay(store, STARTED_AT_MS + 200) == 0  # nothing left to replay

    def test_a_replay_run_again_after_a_crash_before_the_truncate_adds_nothing(
        self, store: Engine, account_id: str, tmp_path: Path
    ) -> None:
        """The commit went through but the crash came before the file was emptied: the next
        gateway replays the same lines, and the store is as after one replay."""
        spool = spool_at(tmp_path)
        spool.append(three_requests(account_id))
        lines = spool.path.read_bytes()
        assert spool.replay(store, STARTED_AT_MS + 100) == 3
        once = ledger_state(store)

        spool.path.write_bytes(lines)
        restarted = spool_at(tmp_path)
        assert restarted.pending
        assert restarted.replay(store, STARTED_AT_MS + 300) == 0
        assert ledger_state(store) == once
        assert restarted.path.read_bytes() == b""
        report = run_audit(store)
        assert report.ok, report.breaches

    def test_a_replay_adds_only_the_requests_the_store_lacks(
        self, store: Engine, account_id: str, tmp_path: Path
    ) -> None:
        """A spool holding requests committed already and new ones books the new ones."""
        spool = spool_at(tmp_path)
        entries = three_requests(account_id)
        spool.append(entries[:2])
        lines = spool.path.read_bytes()
        assert spool.replay(store, STARTED_AT_MS + 100) == 2
        spool.path.write_bytes(lines)
        spool.append([*entries[2:], entry("req_spool_d", account_id, 7_000)])

        assert spool.replay(store, STARTED_AT_MS + 200) == 2
        records, _, cached, recomputed = ledger_state(store)
        assert records == 4
        assert billing.balance_of(store, account_id) == FUNDS_NANO - 25_000 - 30_000 - 7_000
        assert cached == recomputed
        assert run_audit(store).ok

    def test_a_spool_the_store_refuses_is_set_aside_and_nothing_of_it_is_booked(
        self, store: Engine, account_id: str, tmp_path: Path
    ) -> None:
        """An entry whose transfer id belongs to another request already booked breaks the
        primary key: the replay raises, the spool is kept as usage.jsonl.refused-<pid>, and
        the store is as before."""
        spool = spool_at(tmp_path)
        spool.append([entry("req_booked", account_id, 25_000)])
        assert spool.replay(store, STARTED_AT_MS + 100) == 1
        before = ledger_state(store)

        record, _ = entry("req_forged", account_id, 9_000)
        clash = Transfer(
            usage_transfer_id("req_booked"),  # the id of the other request's transfer
            account_id,
            operator_account("revenue", "USD"),
            9_000,
            "USD",
            "usage",
            "req_forged",
            STARTED_AT_MS + 40,
        )
        spool.append([entry("req_innocent", account_id, 1_000), (record, (clash,))])
        refused = spool.path.read_bytes()

        with pytest.raises(IntegrityError):
            spool.replay(store, STARTED_AT_MS + 200)
        aside = spool.path.with_name(f"usage.jsonl.refused-{os.getpid()}")
        assert aside.read_bytes() == refused
        assert not spool.pending
        assert ledger_state(store) == before
        with store.connect() as connection:
            assert record_by_request_id(connection, "req_forged") is None
            assert record_by_request_id(connection, "req_innocent") is None
        assert run_audit(store).ok

        spool.append([entry("req_after", account_id, 2_000)])  # the next outage starts afresh
        assert spool.replay(store, STARTED_AT_MS + 300) == 1
        assert billing.balance_of(store, account_id) == FUNDS_NANO - 25_000 - 2_000


def test_a_gateway_started_with_a_refused_spool_sets_it_aside_and_starts(
    sqlite_url: str, tmp_path: Path
) -> None:
    engine = open_engine(sqlite_url)
    try:
        account = service.create_account(engine, "refused")
        spool = UsageSpool(tmp_path / "spool" / "usage.jsonl")
        spool.append([entry("req_booked", account.id, 25_000)])
        spool.replay(engine, STARTED_AT_MS)
        record, _ = entry("req_forged", account.id, 9_000)
        clash = Transfer(
            usage_transfer_id("req_booked"),
            account.id,
            operator_account("revenue", "USD"),
            9_000,
            "USD",
            "usage",
            "req_forged",
            STARTED_AT_MS,
        )
        spool.append([(record, (clash,))])
    finally:
        engine.dispose()
    settings = Settings(
        home=tmp_path,
        database_url=sqlite_url,
        config=parse_config(gateway_config(None)),
        admin_token="tmadmin-refused-spool-test-token",
        environ={},
    )
    gateway = Gateway(settings)  # raises Unavailable today
    try:
        assert not spool.pending
        assert spool.path.with_name(f"usage.jsonl.refused-{os.getpid()}").exists()
    finally:
        asyncio.run(gateway.stop())
