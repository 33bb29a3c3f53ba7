"""Prompt caching and reasoning in the store, on SQLite and PostgreSQL: a usage record with
cache reads, cache writes and reasoning tokens round-trips through the group commit and the
usage spool, and its statement, invoice, revenue and margin report show those tokens apart
(never added to the prompt and completion again); a cache-write price round-trips through
the price book, and a price seeded from the configuration carries it.

The request path is not involved: records and their usage transfers are written straight to
the store, as the gateway commits them. Expected figures are written out here by hand.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from tokenmill.access import service
from tokenmill.billing import periods
from tokenmill.billing import service as billing
from tokenmill.billing.margins import margin_csv, margin_json, margin_report
from tokenmill.billing.seeding import configured_prices
from tokenmill.billing.statements import build_statement, revenue_json, revenue_report
from tokenmill.config import parse_config
from tokenmill.retail.invoices import invoice_json
from tokenmill.retail.ledger import Transfer
from tokenmill.retail.rating import Price
from tokenmill.retail.statements import statement_csv, statement_json
from tokenmill.store import ledger as ledger_rows
from tokenmill.store.database import write_transaction
from tokenmill.store.group_commit import GroupCommitWriter
from tokenmill.store.spool import UsageSpool
from tokenmill.store.usage import insert_sql, record_by_request_id, record_row
from tokenmill.usage import UsageRecord

NANO = 1_000_000_000
ACTOR = "test"
# March 2026, a month that is over (invoices are issued for months that are over).
SINCE = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp()) * 1000
UNTIL = int(datetime(2026, 4, 1, tzinfo=UTC).timestamp()) * 1000
AT = SINCE + 86_400_000 + 3_600_000  # 2026-03-02T01:00:00Z


def cached_record(account_id: str, *, charge_nano: int = 7_000, at_ms: int = AT) -> UsageRecord:
    """1000 prompt tokens (600 read from a cache, 300 written to it), 200 completion tokens
    (150 of them reasoning)."""
    return UsageRecord(
        request_id=f"req_{secrets.token_hex(6)}",
        account_id=account_id,
        key_id="key_test",
        model="claude",
        deployment="d",
        engine="e",
        endpoint="chat",
        prompt_tokens=1000,
        completion_tokens=200,
        cached_tokens=600,
        cache_write_tokens=300,
        reasoning_tokens=150,
        estimated=False,
        status="ok",
        http_status=200,
        error_type=None,
        started_at_ms=at_ms,
        ttft_ms=5,
        duration_ms=10,
        charge_nano=charge_nano,
        cost_nano=2_000,
        cost_basis="vendor",
    )


def usage_transfer(record: UsageRecord) -> Transfer:
    return Transfer(
        f"usage:{record.request_id}",
        record.account_id,
        "revenue:USD",
        record.charge_nano,
        "USD",
        "usage",
        record.request_id,
        record.started_at_ms + record.duration_ms,
    )


def commit(engine: Engine, record: UsageRecord) -> None:
    """The record and its usage transfer, as the gateway commits them."""
    with write_transaction(engine) as connection:
        mark = "?" if connection.dialect.name == "sqlite" else "%s"
        connection.exec_driver_sql(insert_sql(mark), record_row(record))
        ledger_rows.post_transfers(connection, [usage_transfer(record)], record.started_at_ms)


def stored(engine: Engine, request_id: str) -> UsageRecord | None:
    with engine.connect() as connection:
        return record_by_request_id(connection, request_id)


class TestUsageRecords:
    def test_the_group_commit_keeps_cache_writes_and_reasoning_tokens(self, store: Engine) -> None:
        """What the writer commits reads back the same, every count in its own column."""
        record = cached_record("acct_a")

        async def scenario() -> None:
            writer = GroupCommitWriter(store, queue_count_max=10, batch_count_max=10)
            writer.start()
            await writer.submit(record, (usage_transfer(record),))
            await writer.close()

        asyncio.run(scenario())
        found = stored(store, record.request_id)
        assert found == record
        assert found is not None
        assert (found.cached_tokens, found.cache_write_tokens, found.reasoning_tokens) == (
            600,
            300,
            150,
        )

    def test_a_spooled_record_replays_with_its_cache_writes_and_reasoning_tokens(
        self, store: Engine, tmp_path: Path
    ) -> None:
        """The spool's JSON lines carry the new counts through a replay."""
        record = cached_record("acct_a")
        spool = UsageSpool(tmp_path / "usage.spool")
        spool.append([(record, (usage_transfer(record),))])
        assert spool.replay(store, AT) == 1
        assert stored(store, record.request_id) == record

    def test_a_spool_line_written_before_the_new_counts_replays_them_as_zero(
        self, store: Engine, tmp_path: Path
    ) -> None:
        """A spool left by an older gateway has no cache-write or reasoning counts: 0."""
        record = cached_record("acct_a")
        path = tmp_path / "usage.spool"
        line = (
            b'{"record":{"request_id":"%s","account_id":"acct_a","key_id":"k","model":"m",'
            b'"deployment":"d","engine":"e","endpoint":"chat","prompt_tokens":10,'
            b'"completion_tokens":5,"cached_tokens":4,"estimated":false,"status":"ok",'
            b'"http_status":200,"error_type":null,"started_at_ms":1000,"ttft_ms":1,'
            b'"duration_ms":2},"transfers":[]}\n' % record.request_id.encode()
        )
        path.write_bytes(line)
        assert UsageSpool(path).replay(store, AT) == 1
        found = stored(store, record.request_id)
        assert found is not None
        assert (found.cached_tokens, found.cache_write_tokens, found.reasoning_tokens) == (4, 0, 0)


class TestStatementsAndReports:
    def test_a_statement_shows_cache_and_reasoning_tokens_apart(self, store: Engine) -> None:
        """Two such requests on one day: 2000 prompt tokens of which 1200 read and 600
        written, 400 completion tokens of which 300 reasoning; the charge is the ledger's."""
        acct = service.create_account(store, "cachy")
        billing.move_funds(store, acct.id, NANO, kind="topup", idempotency_key=None, actor=ACTOR)
        for _ in range(2):
            commit(store, cached_record(acct.id))
        statement = build_statement(store, acct.id, SINCE, UNTIL)
        (line,) = statement_json(statement)["usage"]
        assert line == {
            "day": "2026-03-02",
            "model": "claude",
            "requests": 2,
            "prompt_tokens": 2000,
            "completion_tokens": 400,
            "cached_tokens": 1200,
            "cache_write_tokens": 600,
            "reasoning_tokens": 300,
            "amount": "-0.000014",
            "amount_nano": -14_000,
        }
        usage_row = statement_csv(statement).splitlines()[2]
        assert usage_row == "2026-03-02,usage,claude,2,2000,400,1200,600,300,-0.000014"

    def test_the_margin_and_revenue_reports_show_cache_and_reasoning_tokens_apart(
        self, store: Engine
    ) -> None:
        """By model: the token columns and their parts, with revenue, cost and margin."""
        acct = service.create_account(store, "margins")
        for _ in range(3):
            commit(store, cached_record(acct.id))
        (row,) = margin_report(store, SINCE, UNTIL, ["model"], account_id=acct.id)
        shown = margin_json(row)
        assert {name: shown[name] for name in TOKENS} == {
            "prompt_tokens": 3000,
            "completion_tokens": 600,
            "cached_tokens": 1800,
            "cache_write_tokens": 900,
            "reasoning_tokens": 450,
        }
        assert (shown["revenue_nano"], shown["cost_nano"], shown["margin_nano"]) == (
            21_000,
            6_000,
            15_000,
        )
        header, values = margin_csv([row], ["model"]).splitlines()
        assert header.split(",")[:9] == [
            "model",
            "currency",
            "requests",
            "uncosted_requests",
            *TOKENS,
        ]
        assert values.startswith("claude,USD,3,0,3000,600,1800,900,450,")
        (revenue,) = revenue_report(store, SINCE, UNTIL, account_id=acct.id)
        assert {name: revenue_json(revenue)[name] for name in TOKENS} == {
            name: shown[name] for name in TOKENS
        }

    def test_an_invoice_line_shows_cache_and_reasoning_tokens_apart(self, store: Engine) -> None:
        """A postpaid account's March invoice: 1200 tokens a request, of which 600 cache
        read, 300 cache write and 150 reasoning, summed over its two requests."""
        acct = service.create_account(store, "invoiced")
        billing.set_terms(store, acct.id, currency=None, credit_limit_nano=NANO, actor=ACTOR)
        for _ in range(2):
            commit(store, cached_record(acct.id))
        invoice, issued = periods.issue_invoice(
            store, service.find_account(store, acct.id), "2026-03"
        )
        assert issued and invoice is not None
        (line,) = invoice_json(invoice)["lines"]
        assert (line["tokens"], line["amount_nano"]) == (2400, 14_000)
        parts = (line["cached_tokens"], line["cache_write_tokens"], line["reasoning_tokens"])
        assert parts == (1200, 600, 300)


TOKENS = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


class TestPrices:
    def test_a_cache_write_price_round_trips_through_the_price_book(self, store: Engine) -> None:
        """Set with its own cache-write price, read back with it, in the audit log too."""
        price = Price(
            "claude",
            "USD",
            0,
            3 * NANO,
            15 * NANO,
            3 * NANO // 10,
            cache_write_input_nano_per_mtok=15 * NANO // 4,
        )
        billing.set_price(store, price, actor=ACTOR)
        (found,) = billing.list_prices(store)
        assert found == price
        assert billing.price_json(found)["cache_write_input_nano_per_mtok"] == 3_750_000_000

    def test_a_configured_price_seeds_its_cache_write_price_or_the_input_price(
        self, store: Engine
    ) -> None:
        """models.<m>.price.cache_write_input is seeded; without one, the input price is."""
        config = parse_config(
            {
                "models": {
                    "written": {
                        "deployments": ["d"],
                        "price": {
                            "input": "3.00",
                            "cached_input": "0.30",
                            "cache_write_input": "3.75",
                        },
                    },
                    "plain": {"deployments": ["d"], "price": {"input": "0.20"}},
                },
                "engines": {"s": {"kind": "sim"}},
                "deployments": {"d": {"engine": "s", "model": "m", "gpu": "h100-sxm"}},
            }
        )
        billing.seed_prices(store, configured_prices(config))
        found = {p.model: p for p in billing.list_prices(store)}
        assert found["written"].cache_write_input_nano_per_mtok == 3_750_000_000
        assert found["written"].cached_input_nano_per_mtok == 300_000_000
        assert found["plain"].cache_write_input_nano_per_mtok == 200_000_000
