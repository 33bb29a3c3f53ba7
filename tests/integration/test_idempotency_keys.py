"""Idempotency keys on the admin API: a header and a body that disagree, or an empty key,
are refused and move nothing (they never silently mean "another key" or "no key")."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.assertions import assert_openai_error
from tests.conftest import live_gateway
from tests.integration.test_billing import admin_client, balance, priced_config
from tokenmill.store.ledger import transfers_of


class TestIdempotencyKeys:
    @pytest.mark.parametrize(
        ("header", "body"),
        [("key-a", "key-b"), ("", None), (None, ""), ("key-a", "")],
        ids=["header-and-body-differ", "empty-header", "empty-body", "empty-body-with-header"],
    )
    def test_a_conflicting_or_empty_key_is_a_400_and_moves_nothing(
        self, sqlite_url: str, tmp_path: Path, header: str | None, body: str | None
    ) -> None:
        """400 naming idempotency_key; the balance and the ledger stay as they were."""
        with (
            live_gateway(sqlite_url, priced_config(), tmp_path) as live,
            admin_client(live) as admin,
        ):
            _, _, account_id = live.new_key("acme")
            fields = {"amount": "5.00"} | ({} if body is None else {"idempotency_key": body})
            headers = {} if header is None else {"Idempotency-Key": header}
            response = admin.post(f"/accounts/{account_id}/transfers", json=fields, headers=headers)
            assert_openai_error(response, 400, "idempotency_key")
            assert balance(admin, account_id)["balance_nano"] == 0
            with live.db.connect() as connection:
                assert transfers_of(connection, account_id) == []

    def test_the_same_key_in_header_and_body_applies_once(
        self, sqlite_url: str, tmp_path: Path
    ) -> None:
        """Header and body agreeing is one key: posted twice, it credits once."""
        with (
            live_gateway(sqlite_url, priced_config(), tmp_path) as live,
            admin_client(live) as admin,
        ):
            _, _, account_id = live.new_key("acme")
            for _ in range(2):
                response = admin.post(
                    f"/accounts/{account_id}/transfers",
                    json={"amount": "5.00", "idempotency_key": "same"},
                    headers={"Idempotency-Key": "same"},
                )
                assert response.status_code == 200, response.text
            assert balance(admin, account_id)["balance_nano"] == 5_000_000_000
