"""Stored responses in the store, on SQLite and PostgreSQL: scoped to their account, gone
once expired or deleted, a conversation read back oldest first in one query, pruned to a
count per account."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Engine, text

from tokenmill.errors import Unavailable
from tokenmill.store.database import write_transaction
from tokenmill.store.group_commit import GroupCommitWriter
from tokenmill.store.responses import (
    StoredResponse,
    chain_items,
    delete_response,
    insert_response,
    prune,
    response_by_id,
)
from tokenmill.store.usage import record_by_request_id
from tokenmill.usage import UsageRecord


def row(
    response_id: str, previous: str | None = None, *, account: str = "acct_a", at: int = 1000
) -> StoredResponse:
    return StoredResponse(
        id=response_id,
        account_id=account,
        previous_response_id=previous,
        model="m",
        created_at_ms=at,
        expires_at_ms=at + 10_000,
        input_items=({"type": "message", "role": "user", "content": f"in {response_id}"},),
        response={
            "id": response_id,
            "status": "completed",
            "output": [{"type": "message", "role": "assistant", "content": f"out {response_id}"}],
        },
    )


def save(store: Engine, *rows: StoredResponse) -> None:
    with write_transaction(store) as connection:
        for one in rows:
            insert_response(connection, one)


class TestStoredResponses:
    def test_a_response_is_read_back_by_its_account_only_and_not_once_expired(
        self, store: Engine
    ) -> None:
        save(store, row("resp_1"))
        with store.connect() as connection:
            found = response_by_id(connection, "acct_a", "resp_1", 2000)
            assert found is not None and found.response["status"] == "completed"
            assert found.response["output"][0]["content"] == "out resp_1"
            assert found.input_items[0]["content"] == "in resp_1"
            assert response_by_id(connection, "acct_b", "resp_1", 2000) is None
            assert response_by_id(connection, "acct_a", "resp_1", 11_000) is None

    def test_delete_is_scoped_to_the_account(self, store: Engine) -> None:
        save(store, row("resp_1"))
        with write_transaction(store) as connection:
            assert not delete_response(connection, "acct_b", "resp_1", 2000)
            assert delete_response(connection, "acct_a", "resp_1", 2000)
            assert not delete_response(connection, "acct_a", "resp_1", 2000)

    def test_a_conversation_is_read_oldest_first_and_stops_at_another_account(
        self, store: Engine
    ) -> None:
        """resp_3 -> resp_2 -> resp_1: inputs and outputs in order; a chain that points at
        another tenant's response does not read it."""
        save(store, row("resp_1"), row("resp_2", "resp_1"), row("resp_3", "resp_2"))
        save(store, row("resp_x", account="acct_b"), row("resp_4", "resp_x"))
        with store.connect() as connection:
            found = chain_items(connection, "acct_a", "resp_3", 2000, 100)
            assert found is not None
            texts, cut = found
            assert not cut
            contents = [t.split('"content":"')[1].split('"')[0] for pair in texts for t in pair]
            assert contents == [
                "in resp_1",
                "out resp_1",
                "in resp_2",
                "out resp_2",
                "in resp_3",
                "out resp_3",
            ]
            assert chain_items(connection, "acct_b", "resp_3", 2000, 100) is None
            only_own = chain_items(connection, "acct_a", "resp_4", 2000, 100)
            assert only_own is not None and len(only_own[0]) == 1  # resp_4 alone

    def test_a_chain_longer_than_the_bound_says_it_was_cut(self, store: Engine) -> None:
        save(store, row("resp_1"), row("resp_2", "resp_1"), row("resp_3", "resp_2"))
        with store.connect() as connection:
            found = chain_items(connection, "acct_a", "resp_3", 2000, 1)
            assert found is not None
            texts, cut = found
            assert cut and len(texts) == 2  # resp_2 and resp_3

    def test_prune_drops_the_expired_and_the_oldest_beyond_the_count(self, store: Engine) -> None:
        save(store, *(row(f"resp_{i}", at=1000 + i) for i in range(5)))
        save(store, row("resp_old", at=0), row("resp_b", account="acct_b", at=1000))
        with write_transaction(store) as connection:
            deleted = prune(connection, 10_000, "acct_a", 3)
        assert deleted == 3  # resp_old expired, resp_0 and resp_1 over the count
        with store.connect() as connection:
            kept = [
                f"resp_{i}"
                for i in range(5)
                if response_by_id(connection, "acct_a", f"resp_{i}", 10_001) is not None
            ]
            assert kept == ["resp_2", "resp_3", "resp_4"]
            assert response_by_id(connection, "acct_b", "resp_b", 10_001) is not None


class TestStoredWithTheirUsage:
    def test_the_group_commit_stores_a_response_with_its_usage_record_or_neither(
        self, store: Engine
    ) -> None:
        """A response handed to the writer with its usage record is readable once submit
        returns; when the commit fails, neither the record nor the response is there."""

        async def scenario() -> None:
            writer = GroupCommitWriter(store, queue_count_max=100, batch_count_max=10)
            writer.start()
            await writer.submit(usage_record("req_1"), (), row("resp_1"))
            with store.begin() as connection:
                connection.execute(text("ALTER TABLE usage_records RENAME TO usage_hidden"))
            with pytest.raises(Unavailable):
                await writer.submit(usage_record("req_2"), (), row("resp_2"))
            with store.begin() as connection:
                connection.execute(text("ALTER TABLE usage_hidden RENAME TO usage_records"))
            await writer.close()

        asyncio.run(scenario())
        with store.connect() as connection:
            assert response_by_id(connection, "acct_a", "resp_1", 2000) is not None
            assert record_by_request_id(connection, "req_1") is not None
            assert response_by_id(connection, "acct_a", "resp_2", 2000) is None
            assert record_by_request_id(connection, "req_2") is None


def usage_record(request_id: str) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        account_id="acct_a",
        key_id="key_a",
        model="m",
        deployment="d",
        engine="sim",
        endpoint="responses",
        prompt_tokens=3,
        completion_tokens=2,
        cached_tokens=0,
        estimated=False,
        status="ok",
        http_status=200,
        error_type=None,
        started_at_ms=1000,
        ttft_ms=1,
        duration_ms=2,
    )
