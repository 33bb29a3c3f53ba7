"""Settling one request (tokenmill.retail.settlement): what it produced becomes its usage
record and its ledger transfers, in one pure step."""

from __future__ import annotations

import dataclasses

from tests.unit.test_charging import ACCOUNT, PRICE, account, book_with, terms
from tokenmill.fleet.costs import ServingCost
from tokenmill.retail.charging import Charge, open_charge
from tokenmill.retail.funds import FundsBook
from tokenmill.retail.ledger import operator_account
from tokenmill.retail.rating import PriceBook, charge_nano
from tokenmill.retail.settlement import Ending, Served, settle_request
from tokenmill.usage import TokenCounts

COUNTS = TokenCounts(600, 40, cached_tokens=100, cache_write_tokens=200, reasoning_tokens=10)
SERVED = Served(
    request_id="req_1",
    account_id=ACCOUNT,
    key_id="key_1",
    model="m",
    deployment="d",
    engine="e",
    surface="chat",
    started_at_ms=10_000,
    duration_ms=250,
    ttft_ms=30,
    counts=COUNTS,
    estimated=False,
    produced=True,
)
OK = Ending("ok", 200)
VENDOR = ServingCost("vendor", "USD", 100_000_000, 400_000_000, 10_000_000)


def opened(balance_nano: int = 10**9) -> tuple[FundsBook, Charge]:
    funds = book_with(balance_nano)
    return funds, open_charge(funds, PriceBook([PRICE]), terms())


class TestSettleRequest:
    def test_a_produced_answer_is_charged_once_and_posted_to_revenue(self) -> None:
        """The record's charge is the rated counts; one usage transfer carries it."""
        funds, charge = opened()
        settled = settle_request(funds, charge, SERVED, OK, None)
        expected = charge_nano(PRICE, COUNTS)
        assert settled.record.charge_nano == expected
        (transfer,) = settled.transfers
        assert (transfer.debit_account, transfer.credit_account) == (
            ACCOUNT,
            operator_account("revenue", "USD"),
        )
        assert transfer.amount_nano == expected
        assert transfer.created_at_ms == SERVED.started_at_ms + SERVED.duration_ms
        assert account(funds).held_nano == 0

    def test_the_record_keeps_every_kind_of_token_apart(self) -> None:
        """Cache reads, cache writes and reasoning tokens reach the record as counted."""
        funds, charge = opened()
        record = settle_request(funds, charge, SERVED, OK, None).record
        assert (record.cached_tokens, record.cache_write_tokens, record.reasoning_tokens) == (
            100,
            200,
            10,
        )
        assert (record.prompt_tokens, record.completion_tokens) == (600, 40)

    def test_nothing_produced_costs_nothing_and_releases_the_hold(self) -> None:
        """A request that produced nothing has a record of zero tokens and no transfer."""
        funds, charge = opened()
        served = dataclasses.replace(SERVED, produced=False, estimated=True)
        settled = settle_request(funds, charge, served, Ending("cancelled", 499), VENDOR)
        assert settled.transfers == ()
        assert settled.record.prompt_tokens == settled.record.charge_nano == 0
        assert settled.record.cost_nano == 0
        assert not settled.record.estimated
        assert account(funds).held_nano == 0

    def test_the_cost_of_serving_is_recorded_with_its_basis(self) -> None:
        """A vendor's price gives the request's cost, as the fleet computes it."""
        funds, charge = opened()
        record = settle_request(funds, charge, SERVED, OK, VENDOR).record
        assert record.cost_nano == VENDOR.cost_nano(COUNTS)
        assert record.cost_basis == "vendor"

    def test_counts_past_the_hold_book_the_excess_as_a_loss(self) -> None:
        """More prompt tokens than the bound: the customer pays the hold, loss the rest."""
        funds, charge = opened()
        assert charge.hold is not None
        served = dataclasses.replace(SERVED, counts=TokenCounts(5_000_000, 4096))
        settled = settle_request(funds, charge, served, OK, None)
        assert settled.lost
        assert settled.record.charge_nano == charge.hold.amount_nano
        debits = {transfer.debit_account for transfer in settled.transfers}
        assert debits == {ACCOUNT, operator_account("loss", "USD")}
        total = sum(transfer.amount_nano for transfer in settled.transfers)
        assert total == settled.record.charge_nano + settled.record.loss_nano
