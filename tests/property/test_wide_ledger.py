"""The ledger past 64 bits: balances and sums stay exact however large they grow.

Every running total of the ledger (a house account summing every customer's top-ups, a
customer's balance after many top-ups, a report's revenue) can pass 2**63 nano-units while
each movement stays below ``AMOUNT_NANO_MAX``. These drive real stores, SQLite files and a
private PostgreSQL database, far past 2**63 and check them against Python's exact integers.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from tests.conftest import private_pg_database
from tokenmill.access import service
from tokenmill.billing import service as billing
from tokenmill.billing.audit import run_audit
from tokenmill.billing.statements import build_statement
from tokenmill.errors import InvalidRequest
from tokenmill.money import AMOUNT_NANO_MAX, BALANCE_NANO_MAX
from tokenmill.retail.ledger import Transfer, balance_deltas
from tokenmill.store.database import open_engine, write_transaction
from tokenmill.store.ledger import cached_balances, post_transfers, recomputed_balances
from tokenmill.store.wide_sums import joined_balance, joined_sum, split_balance

INT64_MAX = 2**63 - 1
ACCOUNTS = ("acct_a", "acct_b", "cash:VND", "revenue:VND")
_ids = itertools.count()

amounts = st.one_of(
    st.just(AMOUNT_NANO_MAX),
    st.integers(min_value=AMOUNT_NANO_MAX - 2**40, max_value=AMOUNT_NANO_MAX),
    st.integers(min_value=1, max_value=AMOUNT_NANO_MAX),
)
movements = st.tuples(st.sampled_from(ACCOUNTS), st.sampled_from(ACCOUNTS), amounts).filter(
    lambda m: m[0] != m[1]
)
batches = st.lists(st.lists(movements, min_size=1, max_size=8), min_size=1, max_size=12)


def transfers_of_batch(batch: list[tuple[str, str, int]]) -> list[Transfer]:
    return [
        Transfer(f"t{next(_ids)}", debit, credit, amount, "VND", "adjustment", None, 1_000)
        for debit, credit, amount in batch
    ]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def ledger_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = open_engine(f"sqlite:///{tmp_path_factory.mktemp('wide') / 'ledger.db'}")
        yield engine
        engine.dispose()
    else:
        with private_pg_database() as url:
            engine = open_engine(url)
            yield engine
            engine.dispose()


class TestSplitBalance:
    @given(st.integers(min_value=-(10**36), max_value=10**36))
    def test_a_split_balance_joins_back_to_itself(self, value: int) -> None:
        """high * 10**18 + low is the value, with 0 <= low < 10**18."""
        high, low = split_balance(value)
        assert 0 <= low < 10**18
        assert joined_balance(high, low) == value

    @given(st.integers(min_value=-(2**62), max_value=2**62))
    def test_a_wide_sum_of_one_value_is_that_value(self, value: int) -> None:
        """Its two parts (value >> 20, value & (2**20 - 1)) join back exactly, negative too."""
        assert joined_sum(value >> 20, value & (2**20 - 1)) == value


class TestWideLedger:
    @settings(
        max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(batches)
    def test_cached_and_recomputed_balances_stay_exact_past_64_bits(
        self, ledger_store: Engine, drawn: list[list[tuple[str, str, int]]]
    ) -> None:
        """Batches of movements of up to 1e18 each, committed as the group commit does: every
        cached balance and every recomputed one equals Python's exact sum."""
        before = recomputed_balances_of(ledger_store)
        expected = dict(before)
        for batch in drawn:
            posted = transfers_of_batch(batch)
            with write_transaction(ledger_store) as connection:
                post_transfers(connection, posted, 1_000)
            for account, delta in balance_deltas(posted).items():
                expected[account] = expected.get(account, 0) + delta
        with ledger_store.connect() as connection:
            cached = cached_balances(connection)
            recomputed = recomputed_balances(connection)
        for account in ACCOUNTS:
            assert cached.get(account, 0) == expected.get(account, 0)
            assert recomputed.get(account, 0) == expected.get(account, 0)
        assert sum(recomputed.values()) == 0
        report = run_audit(ledger_store)
        assert report.ok, report.breaches

    def test_a_house_account_past_2_63_keeps_every_nano_unit(self, ledger_store: Engine) -> None:
        """Twenty top-ups of 1e18 + 7 into one house account: -2e19 - 140, exactly, both ways."""
        house = f"cash:V{next(_ids)}"
        posted = [
            Transfer(
                f"big{next(_ids)}", house, "acct_b", AMOUNT_NANO_MAX + 7, "VND", "topup", None, 1
            )
            for _ in range(20)
        ]
        for transfer in posted:
            with write_transaction(ledger_store) as connection:
                post_transfers(connection, [transfer], 1_000)
        with ledger_store.connect() as connection:
            cached = cached_balances(connection)[house]
            recomputed = recomputed_balances(connection)[house]
        assert cached == recomputed == -20 * (AMOUNT_NANO_MAX + 7)
        assert abs(cached) > INT64_MAX


def recomputed_balances_of(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return recomputed_balances(connection)


class TestAccountsPastInt64:
    def test_top_ups_past_2_63_keep_the_audit_exact_and_the_statement_whole(
        self, tmp_path: Path
    ) -> None:
        """Twelve top-ups of 1e9 VND: the account holds 1.2e19 nano-units, the house cash
        account -1.2e19; the audit passes and the statement's closing balance is exact."""
        engine = open_engine(f"sqlite:///{tmp_path / 'vnd.db'}")
        try:
            account = service.create_account(engine, "saigon")
            billing.set_terms(engine, account.id, currency="VND", credit_limit_nano=None, actor="t")
            for index in range(12):
                billing.move_funds(
                    engine,
                    account.id,
                    AMOUNT_NANO_MAX,
                    kind="topup",
                    idempotency_key=f"vnd-{index}",
                    actor="t",
                )
            report = run_audit(engine)
            now = time.time_ns() // 1_000_000
            statement = build_statement(engine, account.id, now - 86_400_000, now + 86_400_000)
        finally:
            engine.dispose()
        assert report.ok, report.breaches
        assert (
            billing.balance_of(open_engine(f"sqlite:///{tmp_path / 'vnd.db'}"), account.id)
            == 12 * AMOUNT_NANO_MAX
        )
        assert statement.closing_nano == 12 * AMOUNT_NANO_MAX


class TestBalanceRange:
    def test_a_top_up_past_the_balance_range_is_refused_and_stores_nothing(
        self, tmp_path: Path
    ) -> None:
        """The house cash account 1 nano-unit short of -1e36: one more top-up would take it
        past the range a balance is kept in: 400 naming the amount, no transfer, balances
        as they were."""
        engine = open_engine(f"sqlite:///{tmp_path / 'edge.db'}")
        try:
            account = service.create_account(engine, "edge")
            high, low = split_balance(-BALANCE_NANO_MAX + 1)
            with write_transaction(engine) as connection:
                connection.execute(
                    text(
                        "INSERT INTO ledger_balances (account_id, currency, balance_nano_high,"
                        " balance_nano_low, updated_at_ms) VALUES ('cash:USD', 'USD', :h, :l, 0)"
                    ),
                    {"h": high, "l": low},
                )
            with pytest.raises(InvalidRequest) as refused:
                billing.move_funds(
                    engine, account.id, 5, kind="topup", idempotency_key="edge", actor="t"
                )
            assert refused.value.param == "amount"
            with engine.connect() as connection:
                assert cached_balances(connection)["cash:USD"] == -BALANCE_NANO_MAX + 1
                assert recomputed_balances(connection) == {}
        finally:
            engine.dispose()
