"""The store on SQLite and PostgreSQL: migrations, the group commit, the change sequence."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, inspect, text

from tokenmill.access import service
from tokenmill.access.follower import apply_changes, fetch_changes, load_directory, overlap_of
from tokenmill.access.keys import hash_secret
from tokenmill.errors import Conflict, NotFound, Unavailable
from tokenmill.retail.rating import Price
from tokenmill.store import accounts as rows
from tokenmill.store import prices as price_rows
from tokenmill.store.database import open_engine, write_transaction
from tokenmill.store.group_commit import GroupCommitWriter
from tokenmill.store.usage import query_records, record_by_request_id
from tokenmill.usage import UsageRecord


def record(
    index: int, *, account: str = "acct_a", model: str = "m", at_ms: int = 1000
) -> UsageRecord:
    return UsageRecord(
        request_id=f"req_{index:06d}_{secrets.token_hex(4)}",
        account_id=account,
        key_id="key_a",
        model=model,
        deployment="d",
        engine="e",
        endpoint="chat",
        prompt_tokens=index,
        completion_tokens=2 * index,
        cached_tokens=0,
        estimated=False,
        status="ok",
        http_status=200,
        error_type=None,
        started_at_ms=at_ms + index,
        ttft_ms=1,
        duration_ms=2,
    )


class TestMigrations:
    def test_opening_twice_migrates_once_and_keeps_rows(self, database_url: str) -> None:
        """A second open finds the schema at head and the rows of the first."""
        first = open_engine(database_url)
        service.create_account(first, "acme")
        first.dispose()
        second = open_engine(database_url)
        try:
            tables = set(inspect(second).get_table_names())
            assert {"accounts", "api_keys", "usage_records", "changes", "meta"} <= tables
            assert service.find_account(second, "acme").name == "acme"
        finally:
            second.dispose()

    def test_a_database_at_0005_keeps_its_prices_and_records_when_migrated(
        self, database_url: str
    ) -> None:
        """0006 gives every existing price a cache-write price equal to its input price (what
        a cache write paid until then) and every existing usage record 0 cache writes and 0
        reasoning tokens; a record with more cache reads than prompt tokens keeps as many as
        it was charged for (its prompt); the rows are otherwise as they were."""
        older = open_engine(database_url, migrate=False)
        config = AlembicConfig()
        config.set_main_option("script_location", "tokenmill.store:migrations")
        try:
            with write_transaction(older) as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "0005")
                connection.execute(
                    text(
                        "INSERT INTO prices (model, currency, effective_from_ms,"
                        " input_nano_per_mtok, output_nano_per_mtok, cached_input_nano_per_mtok,"
                        " request_fee_nano, created_at_ms)"
                        " VALUES ('m', 'USD', 0, 200000000, 800000000, 50000000, 7, 1)"
                    )
                )
                connection.execute(
                    text(
                        "INSERT INTO usage_records (request_id, account_id, key_id, model,"
                        " deployment, engine, endpoint, prompt_tokens, completion_tokens,"
                        " cached_tokens, estimated, status, http_status, started_at_ms,"
                        " duration_ms, charge_nano)"
                        " VALUES ('req_old', 'acct_a', 'key_a', 'm', 'd', 'e', 'chat', 100, 50,"
                        " 40, false, 'ok', 200, 1000, 2, 123),"
                        " ('req_over', 'acct_a', 'key_a', 'm', 'd', 'e', 'chat', 100, 50,"
                        " 500, false, 'ok', 200, 1001, 2, 45)"
                    )
                )
        finally:
            older.dispose()
        migrated = open_engine(database_url)
        try:
            with migrated.connect() as connection:
                (price,) = price_rows.all_prices(connection)
                found = record_by_request_id(connection, "req_old")
                over = record_by_request_id(connection, "req_over")
        finally:
            migrated.dispose()
        assert price == Price(
            model="m",
            currency="USD",
            effective_from_ms=0,
            input_nano_per_mtok=200_000_000,
            output_nano_per_mtok=800_000_000,
            cached_input_nano_per_mtok=50_000_000,
            request_fee_nano=7,
            cache_write_input_nano_per_mtok=200_000_000,
        )
        assert found is not None
        assert (found.prompt_tokens, found.cached_tokens, found.charge_nano) == (100, 40, 123)
        assert (found.cache_write_tokens, found.reasoning_tokens) == (0, 0)
        assert over is not None  # more reads than prompt tokens: charged as all read
        assert (over.prompt_tokens, over.cached_tokens, over.charge_nano) == (100, 100, 45)

    def test_a_record_with_cache_writes_and_reasoning_round_trips(self, store: Engine) -> None:
        """Every count of a record is kept in its own column and read back the same."""
        counted = replace(record(7), cached_tokens=2, cache_write_tokens=3, reasoning_tokens=9)

        async def scenario() -> None:
            writer = GroupCommitWriter(store, queue_count_max=10, batch_count_max=10)
            writer.start()
            await writer.submit(counted)
            await writer.close()

        asyncio.run(scenario())
        with store.connect() as connection:
            assert record_by_request_id(connection, counted.request_id) == counted


class TestGroupCommit:
    def test_every_submitted_record_is_readable_once_submit_returns(self, store: Engine) -> None:
        """submit returns only after the record is committed: another connection sees it."""

        async def scenario() -> None:
            writer = GroupCommitWriter(store, queue_count_max=1000, batch_count_max=100)
            writer.start()
            one = record(1)
            await writer.submit(one)
            with store.connect() as connection:
                assert record_by_request_id(connection, one.request_id) == one
            await writer.close()

        asyncio.run(scenario())

    def test_concurrent_submits_share_commits(self, store: Engine) -> None:
        """500 requests at once: all committed, in far fewer commits than records."""

        async def scenario() -> GroupCommitWriter:
            writer = GroupCommitWriter(store, queue_count_max=10_000, batch_count_max=1000)
            writer.start()
            await asyncio.gather(*(writer.submit(record(i)) for i in range(500)))
            await writer.close()
            return writer

        writer = asyncio.run(scenario())
        with store.connect() as connection:
            assert len(query_records(connection, limit=10_000)) == 500
        assert writer.records_count == 500
        assert writer.commits_count < 100

    def test_a_failing_store_answers_unavailable_and_the_writer_goes_on(
        self, store: Engine
    ) -> None:
        """A commit that fails raises Unavailable in its requests; the next commit works."""

        async def scenario() -> None:
            writer = GroupCommitWriter(store, queue_count_max=100, batch_count_max=10)
            writer.start()
            with store.begin() as connection:
                connection.execute(text("ALTER TABLE usage_records RENAME TO usage_hidden"))
            with pytest.raises(Unavailable):
                await writer.submit(record(1))
            with store.begin() as connection:
                connection.execute(text("ALTER TABLE usage_hidden RENAME TO usage_records"))
            await writer.submit(record(2))
            await writer.close()

        asyncio.run(scenario())
        with store.connect() as connection:
            assert [r.prompt_tokens for r in query_records(connection)] == [2]

    def test_close_commits_what_is_queued(self, store: Engine) -> None:
        """Records submitted before close are all committed by the time close returns."""

        async def scenario() -> None:
            writer = GroupCommitWriter(store, queue_count_max=1000, batch_count_max=7)
            writer.start()
            tasks = [asyncio.create_task(writer.submit(record(i))) for i in range(50)]
            await asyncio.sleep(0)
            await writer.close()
            await asyncio.gather(*tasks)

        asyncio.run(scenario())
        with store.connect() as connection:
            assert len(query_records(connection, limit=100)) == 50


class TestUsageQueries:
    def test_filters_select_exactly_the_matching_records(self, store: Engine) -> None:
        """Account, model and the half-open time window each narrow the result."""

        async def fill() -> None:
            writer = GroupCommitWriter(store, queue_count_max=100, batch_count_max=100)
            writer.start()
            for i in range(6):
                await writer.submit(
                    record(
                        i,
                        account="acct_a" if i % 2 else "acct_b",
                        model="x" if i < 3 else "y",
                        at_ms=10_000,
                    )
                )
            await writer.close()

        asyncio.run(fill())
        with store.connect() as connection:
            by_account = query_records(connection, account_id="acct_a")
            assert sorted(r.prompt_tokens for r in by_account) == [1, 3, 5]
            by_model = query_records(connection, model="y")
            assert sorted(r.prompt_tokens for r in by_model) == [3, 4, 5]
            window = query_records(connection, since_ms=10_002, until_ms=10_004)
            assert sorted(r.prompt_tokens for r in window) == [2, 3]
            newest_first = query_records(connection)
            assert [r.prompt_tokens for r in newest_first] == [5, 4, 3, 2, 1, 0]


def _key_row(account_id: str, name: str) -> rows.KeyRow:
    return rows.KeyRow(
        id=f"key_{name}",
        account_id=account_id,
        name=name,
        key_hash=hash_secret(name),
        key_prefix="tm-" + name[:7],
        models=None,
        created_at_ms=1,
        expires_at_ms=None,
        revoked_at_ms=None,
    )


class TestChangeSequence:
    def test_a_follower_sees_keys_made_revoked_and_accounts_disabled(self, store: Engine) -> None:
        """Each write appends a change; applying them keeps the directory exact."""
        directory = load_directory(store)
        account = service.create_account(store, "acme")
        made = service.create_key(store, account.id, name="k1")
        batch = fetch_changes(store, directory)
        assert batch is not None
        apply_changes(directory, batch, overlap_of(store))
        grant = directory.lookup(hash_secret(made.secret))
        assert grant is not None and grant.account_active
        service.set_account_status(store, "acme", "disabled")
        batch = fetch_changes(store, directory)
        assert batch is not None
        apply_changes(directory, batch, overlap_of(store))
        grant = directory.lookup(hash_secret(made.secret))
        assert grant is not None and not grant.account_active
        service.revoke_key(store, made.row.id)
        batch = fetch_changes(store, directory)
        assert batch is not None
        apply_changes(directory, batch, overlap_of(store))
        assert directory.lookup(hash_secret(made.secret)) is None
        assert fetch_changes(store, directory) is None

    def test_a_change_committed_out_of_sequence_order_is_still_applied(self, store: Engine) -> None:
        """PostgreSQL: seq n commits after seq n+1 was seen; the next poll still applies n."""
        if store.dialect.name == "sqlite":
            pytest.skip("SQLite serializes writers: sequence order is commit order")
        account = service.create_account(store, "acme")
        directory = load_directory(store)
        early, late = (_key_row(account.id, name) for name in ("early", "late"))
        with store.connect() as first, store.connect() as second:
            first_transaction = first.begin()
            rows.insert_key(first, early)  # takes seq n, not yet visible
            with second.begin():
                rows.insert_key(second, late)  # takes seq n+1, visible now
            batch = fetch_changes(store, directory)
            assert batch is not None
            apply_changes(directory, batch, overlap_of(store))
            assert directory.lookup(late.key_hash) is not None
            assert directory.lookup(early.key_hash) is None
            first_transaction.commit()
        batch = fetch_changes(store, directory)
        assert batch is not None
        apply_changes(directory, batch, overlap_of(store))
        assert directory.lookup(early.key_hash) is not None
        assert fetch_changes(store, directory) is None

    def test_a_fresh_directory_loads_only_live_keys(self, store: Engine) -> None:
        """Revoked keys are not loaded at start; live ones are."""
        account = service.create_account(store, "acme")
        live = service.create_key(store, account.id)
        dead = service.create_key(store, account.id)
        service.revoke_key(store, dead.row.id)
        directory = load_directory(store)
        assert directory.lookup(hash_secret(live.secret)) is not None
        assert directory.lookup(hash_secret(dead.secret)) is None
        assert len(directory) == 1


class TestAccountsService:
    def test_names_are_unique_and_lookups_say_what_is_missing(self, store: Engine) -> None:
        """A duplicate name is a Conflict; an unknown account or key is NotFound."""
        service.create_account(store, "acme")
        with pytest.raises(Conflict):
            service.create_account(store, "acme")
        with pytest.raises(NotFound):
            service.find_account(store, "nobody")
        with pytest.raises(NotFound):
            service.revoke_key(store, "key_missing")

    def test_the_first_start_happens_once(self, store: Engine) -> None:
        """first_start makes an admin token and a demo key once; later calls return None."""
        first = service.first_start(store, make_admin_token=True)
        assert first is not None and first.admin_token is not None
        assert first.demo_key.startswith("tm-")
        assert service.first_start(store, make_admin_token=True) is None
        assert hash_secret(first.admin_token) in service.admin_token_actors(store)
        keys = service.list_keys(store, "demo")
        assert [k.key_hash for k in keys] == [hash_secret(first.demo_key)]


class TestSqliteWal:
    def test_the_wal_is_checkpointed_so_it_stays_bounded(self, sqlite_url: str) -> None:
        """Thousands of one-record commits leave a WAL far smaller than their sum."""
        engine = open_engine(sqlite_url)

        async def scenario() -> None:
            writer = GroupCommitWriter(engine, queue_count_max=100, batch_count_max=1)
            writer.start()
            for i in range(3000):
                await writer.submit(record(i))
            await writer.close()

        asyncio.run(scenario())
        wal = Path(sqlite_url.removeprefix("sqlite:///") + "-wal")
        # Without checkpoints the WAL holds every commit (about 80 MB here). Checkpointed every
        # 100 commits it stays a few MB; a checkpoint that must wait for the writer lets it
        # grow for a while (11 MB seen on a busy machine), so the bound is half of unbounded.
        assert wal.stat().st_size < 40 * 1024 * 1024
        with engine.connect() as connection:
            assert len(query_records(connection, limit=5000)) == 3000
        engine.dispose()
