"""An account's balance as the admin API shows it, for the end-to-end billing tests."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.conftest import LiveGateway


def balance_of(gateway: LiveGateway, account: str) -> dict[str, Any]:
    response = httpx.get(
        f"{gateway.url}/admin/v1/accounts/{account}/balance",
        headers={"Authorization": f"Bearer {gateway.admin_token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def settled_balance_nano(gateway: LiveGateway, account: str, within_s: float = 5.0) -> int:
    """The account's balance once no request holds funds (every charge settled)."""
    deadline = time.monotonic() + within_s
    while True:
        shown = balance_of(gateway, account)
        if shown["held_nano"] == 0 and shown["holds_count"] == 0:
            balance: int = shown["balance_nano"]
            return balance
        assert time.monotonic() < deadline, f"funds still held after {within_s} s: {shown}"
        time.sleep(0.02)
