"""Spend budgets over real HTTP on every serving surface (chat, Messages, Responses): a
budget caps what a key is charged, concurrent requests included, on SQLite and PostgreSQL.

Amounts are computed here by hand from the configured price, never by the code under test.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.test_billing import (
    BURST,
    HELLO,
    OUTPUT_HEAVY,
    assert_ledger_balanced,
    billed_gateway,
    burst,
    hold_nano,
    ledger_of,
    priced_config,
    top_up,
    units_text,
    wait_for_no_holds,
)
from tests.surface_requests import (
    OVER_BUDGET,
    PATHS,
    SURFACES,
    Surface,
    assert_complete_stream,
    assert_error,
    post,
    request_body,
)


@pytest.mark.parametrize("surface", SURFACES)
class TestBudgets:
    def test_a_key_budget_is_never_passed_by_concurrent_or_sequential_requests(
        self, database_url: str, tmp_path: Path, surface: Surface
    ) -> None:
        """A key's monthly budget of a few holds on a rich account: 60 concurrent streams
        each complete or get the surface's 429 budget_exceeded; one at a time, requests are
        served until the budget has less left than one output token costs; the ledger never
        takes more than the budget, and another key of the account is not bound by it."""
        raw = request_body(surface, HELLO, 16, stream=True)
        single = request_body(surface, HELLO, 16)
        budget = 5 * hold_nano(OUTPUT_HEAVY, raw, 16)
        funded = 100 * budget
        config = priced_config(OUTPUT_HEAVY, time_scale=BURST)
        with billed_gateway(database_url, tmp_path, config) as (live, admin):
            secret, key_id, account_id = live.new_key("acme")
            top_up(admin, account_id, funded)
            capped = admin.post(f"/keys/{key_id}/budget", json={"monthly": units_text(budget)})
            assert capped.status_code == 200, capped.text

            seen = asyncio.run(burst(live, account_id, secret, raw, 60, PATHS[surface]))
            served = refused = 0
            for response in seen.responses:
                if response.status_code == 429:
                    assert_error(surface, response, 429, like=OVER_BUDGET[surface])
                    refused += 1
                else:
                    assert_complete_stream(surface, response)
                    served += 1
            assert served and refused, (served, refused)
            wait_for_no_holds(admin, account_id)
            assert sum(t.amount_nano for t in ledger_of(live, account_id).usage) <= budget

            for _ in range(100):
                response = post(live.url, surface, secret, single)
                if response.status_code == 429:
                    break
                assert response.status_code == 200, response.text
            assert_error(surface, response, 429, like=OVER_BUDGET[surface])
            after = wait_for_no_holds(admin, account_id)
            assert (after["held_nano"], after["holds_count"]) == (0, 0)
            ledger = ledger_of(live, account_id)
            spent = sum(t.amount_nano for t in ledger.usage)
            assert 0 <= budget - spent < hold_nano(OUTPUT_HEAVY, single, 1)
            assert after["balance_nano"] == funded - spent
            assert_ledger_balanced(ledger)

            other, _, _ = live.new_key("acme")
            assert post(live.url, surface, other, single).status_code == 200
