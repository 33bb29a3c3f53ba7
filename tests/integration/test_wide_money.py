"""A live gateway whose accounts hold more than 2**63 nano-units (issue: the ledger
overflowed 64 bits): top-ups, balances on every surface, a priced request and a restart all
stay exact, and the audit passes."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import live_gateway
from tests.integration.test_billing import (
    PRICE,
    admin_client,
    balance,
    chat_body,
    cost_nano,
    post_chat,
    priced_config,
    top_up,
    usage_of,
)
from tokenmill.billing.audit import run_audit
from tokenmill.money import AMOUNT_NANO_MAX, format_amount

INT64_MAX = 2**63 - 1
TOP_UPS_COUNT = 20  # 2e19 nano-units: past 2**63 and 2**64 (1.8e19)


class TestPast64Bits:
    def test_balances_past_2_63_are_exact_before_and_after_a_restart(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """Twenty top-ups of a billion units: the admin balance, the customer's dashboard and
        the audit agree to the nano-unit; a priced request settles; a restart keeps it all."""
        config = priced_config()
        with live_gateway(database_url, config, tmp_path) as live, admin_client(live) as admin:
            secret, _, account_id = live.new_key("whale")
            for index in range(TOP_UPS_COUNT):
                top_up(admin, account_id, AMOUNT_NANO_MAX, idempotency_key=f"whale-{index}")
            funded = TOP_UPS_COUNT * AMOUNT_NANO_MAX
            assert funded > INT64_MAX
            assert balance(admin, account_id)["balance_nano"] == funded
            response = post_chat(live, secret, chat_body(16))
            assert response.status_code == 200, response.text
            spent = cost_nano(PRICE, *usage_of(response))
            after = funded - spent
            assert balance(admin, account_id)["balance_nano"] == after
        with live_gateway(database_url, config, tmp_path) as live, admin_client(live) as admin:
            shown = balance(admin, account_id)
            assert (shown["balance_nano"], shown["balance"]) == (after, format_amount(after))
            dashboard = httpx.get(
                live.url + "/v1/dashboard/balance",
                headers={"Authorization": f"Bearer {secret}"},
                timeout=10,
            )
            assert dashboard.status_code == 200, dashboard.text
            assert dashboard.json()["balance_nano"] == after
            report = run_audit(live.db)
        assert report.ok, report.breaches
