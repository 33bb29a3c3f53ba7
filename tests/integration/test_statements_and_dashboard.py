"""Statements, the revenue report and the customer's dashboard on a live gateway, over SQLite
and PostgreSQL: figures that agree with the ledger and the usage records, errors in OpenAI's
shape, and a key that only ever sees its own account (DESIGN guarantee 5).

Two accounts, alpha and beta, are topped up and make a few priced requests once per database
(a module fixture); no test makes a billed request after that, so each reads the same state.
Expected figures come from the usage records and the admin balance, never from the code under
test.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.assertions import assert_openai_error
from tests.conftest import LiveGateway, gateway_config, live_gateway, private_pg_database
from tokenmill.usage import UsageRecord

NANO = 1_000_000_000
DAY_MS = 86_400_000
TOKENMILL = Path(sys.executable).parent / "tokenmill"
HELLO = [{"role": "user", "content": "hello there"}]
# Different amounts and request counts, so that alpha's figures can never pass for beta's.
ALPHA_TOPUP_NANO = 10 * NANO
BETA_TOPUP_NANO = 7 * NANO + 500_000_000
ALPHA_CHATS = (5, 8, 12)  # max_tokens of each chat request
BETA_CHATS = (3, 20)
# Before any activity: the gateway and its database did not exist in 2020.
EARLY = {"since": "2020-01-01", "until": "2020-02-01"}
# An instant whose Unix seconds as a float, times 1000, fall just short of its whole ms
# (1094626611501 ms becomes 1094626611500.9999): a float conversion loses a millisecond.
ODD_MS_INSTANT = "2004-09-08T06:56:51.501Z"


@dataclass
class Tenant:
    name: str
    secret: str
    key_id: str
    account_id: str
    topup: dict[str, Any]
    records: list[UsageRecord]

    @property
    def charged_nano(self) -> int:
        return sum(r.charge_nano for r in self.records)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


@dataclass
class World:
    live: LiveGateway
    home: Path
    admin: httpx.Client
    alpha: Tenant
    beta: Tenant
    period: dict[str, str]  # since and until around today, as ISO dates

    def statement(self, account: str, **params: str) -> dict[str, Any]:
        response = self.admin.get(f"/accounts/{account}/statement", params=self.period | params)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def balance(self, account: str) -> dict[str, Any]:
        response = self.admin.get(f"/accounts/{account}/balance")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def dashboard(self, path: str, tenant: Tenant, **params: str) -> httpx.Response:
        return httpx.get(
            f"{self.live.url}/v1/dashboard/{path}", headers=tenant.headers, params=params
        )


def chat(live: LiveGateway, secret: str, max_tokens: int) -> str:
    """A priced chat request that must succeed; its request id."""
    response = httpx.post(
        live.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": "sim-chat", "messages": HELLO, "max_tokens": max_tokens},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


def embed(live: LiveGateway, secret: str) -> str:
    """An unpriced (free) embeddings request; its request id."""
    response = httpx.post(
        live.url + "/v1/embeddings",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": "sim-embed", "input": "hello there"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


def settled_records(
    live: LiveGateway, account_id: str, request_ids: list[str], within_s: float = 5.0
) -> list[UsageRecord]:
    """The usage records of ``request_ids``, once every one is written."""
    deadline = time.monotonic() + within_s
    while True:
        found = [r for r in live.records() if r.account_id == account_id]
        if {r.request_id for r in found} >= set(request_ids):
            assert {r.request_id for r in found} == set(request_ids), found
            return found
        assert time.monotonic() < deadline, f"records missing after {within_s} s: {found}"
        time.sleep(0.02)


def settled_balance(world_admin: httpx.Client, tenant: Tenant, within_s: float = 5.0) -> None:
    """Wait until the gateway's balance shows every charge and no hold is left."""
    expected = tenant.topup["amount_nano"] - tenant.charged_nano
    deadline = time.monotonic() + within_s
    while True:
        found = world_admin.get(f"/accounts/{tenant.name}/balance").json()
        if found["holds_count"] == 0 and found["balance_nano"] == expected:
            return
        assert time.monotonic() < deadline, (found, expected)
        time.sleep(0.02)


def make_tenant(
    live: LiveGateway, admin: httpx.Client, name: str, topup_nano: int, chats: tuple[int, ...]
) -> tuple[Tenant, list[str]]:
    """An account with a key and a top-up, after ``chats``; the tenant and its request ids."""
    secret, key_id, account_id = live.new_key(name)
    amount = f"{topup_nano // NANO}.{topup_nano % NANO:09d}"
    response = admin.post(f"/accounts/{name}/transfers", json={"amount": amount})
    assert response.status_code == 200, response.text
    topup = response.json()
    assert topup["amount_nano"] == topup_nano
    request_ids = [chat(live, secret, max_tokens) for max_tokens in chats]
    return Tenant(name, secret, key_id, account_id, topup, records=[]), request_ids


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    home = tmp_path_factory.mktemp(f"statements-{request.param}")
    config = gateway_config(None)
    config["models"]["sim-chat"]["price"] = {"input": "1.00", "output": "2.00"}
    with _database(request.param, home) as url, live_gateway(url, config, home) as live:
        admin = httpx.Client(
            base_url=live.url + "/admin/v1",
            headers={"Authorization": f"Bearer {live.admin_token}"},
            timeout=30,
        )
        alpha, alpha_ids = make_tenant(live, admin, "alpha", ALPHA_TOPUP_NANO, ALPHA_CHATS)
        alpha_ids.append(embed(live, alpha.secret))  # free: a record, but no charge
        beta, beta_ids = make_tenant(live, admin, "beta", BETA_TOPUP_NANO, BETA_CHATS)
        for tenant, ids in ((alpha, alpha_ids), (beta, beta_ids)):
            tenant.records = settled_records(live, tenant.account_id, ids)
            settled_balance(admin, tenant)
        assert alpha.charged_nano > 0 and beta.charged_nano > 0
        assert alpha.charged_nano != beta.charged_nano
        today = datetime.now(UTC).date()
        period = {
            "since": (today - timedelta(days=1)).isoformat(),
            "until": (today + timedelta(days=2)).isoformat(),
        }
        try:
            yield World(live, home, admin, alpha, beta, period)
        finally:
            admin.close()


def _database(kind: str, home: Path) -> AbstractContextManager[str]:
    if kind == "sqlite":
        return nullcontext(f"sqlite:///{home / 'tokenmill.db'}")
    return private_pg_database()


def tokenmill(world: World, *args: str) -> str:
    """Run the console script against the gateway's database; its stdout (it must work)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("TOKENMILL_")}
    env["TOKENMILL_HOME"] = str(world.home / "cli-home")
    result = subprocess.run(
        [str(TOKENMILL), *args, "--database-url", world.live.database_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def utc_day(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%d")


def iso_ms(text: str) -> int:
    """ISO 8601 with a Z -> Unix ms, exactly (integer arithmetic on the parsed instant)."""
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def revenue_by_group(records: list[UsageRecord]) -> dict[tuple[str, str, str], int]:
    """(day, model, account) -> charge + loss, from the records themselves."""
    groups: dict[tuple[str, str, str], int] = defaultdict(int)
    for r in records:
        groups[(utc_day(r.started_at_ms), r.model, r.account_id)] += r.charge_nano + r.loss_nano
    return dict(groups)


class TestAdminStatement:
    def test_the_closing_balance_is_the_account_balance(self, world: World) -> None:
        """Once requests are settled, the statement closes at the balance the gateway holds."""
        for tenant in (world.alpha, world.beta):
            found = world.statement(tenant.name)
            balance = world.balance(tenant.name)
            assert found["account_id"] == tenant.account_id
            assert found["closing_balance_nano"] == balance["balance_nano"]
            assert (
                found["closing_balance_nano"] == tenant.topup["amount_nano"] - tenant.charged_nano
            )

    def test_usage_lines_sum_to_minus_the_charges_of_the_records(self, world: World) -> None:
        """Usage lines are debits: their amounts add up to minus what the records charged."""
        for tenant in (world.alpha, world.beta):
            found = world.statement(tenant.name)
            assert found["usage"], found
            assert sum(u["amount_nano"] for u in found["usage"]) == -tenant.charged_nano
            assert found["usage_total_nano"] == -tenant.charged_nano
            assert all(u["amount_nano"] < 0 for u in found["usage"])
            charged = [r for r in tenant.records if r.charge_nano > 0]
            assert sum(u["requests"] for u in found["usage"]) == len(charged)
            assert sum(u["prompt_tokens"] for u in found["usage"]) == sum(
                r.prompt_tokens for r in charged
            )
            assert sum(u["completion_tokens"] for u in found["usage"]) == sum(
                r.completion_tokens for r in charged
            )
            assert {u["model"] for u in found["usage"]} == {"sim-chat"}

    def test_the_movements_list_the_top_up(self, world: World) -> None:
        """The top-up is one movement, with its transfer id, kind and signed amount."""
        for tenant in (world.alpha, world.beta):
            found = world.statement(tenant.name)
            assert [
                (m["transfer_id"], m["kind"], m["amount_nano"]) for m in found["movements"]
            ] == [(tenant.topup["id"], "topup", tenant.topup["amount_nano"])]
            lines = sum(m["amount_nano"] for m in found["movements"]) + sum(
                u["amount_nano"] for u in found["usage"]
            )
            assert found["opening_balance_nano"] == 0
            assert found["closing_balance_nano"] == found["opening_balance_nano"] + lines

    def test_a_period_before_any_activity_is_empty(self, world: World) -> None:
        found = world.statement("alpha", **EARLY)
        assert found["opening_balance_nano"] == 0
        assert found["closing_balance_nano"] == 0
        assert found["movements"] == []
        assert found["usage"] == []
        assert found["since"] == "2020-01-01T00:00:00Z"
        assert found["until"] == "2020-02-01T00:00:00Z"

    def test_a_period_after_all_activity_opens_and_closes_at_the_balance(
        self, world: World
    ) -> None:
        """Tomorrow and after: nothing happened yet, so opening == closing == today's balance."""
        today = datetime.now(UTC).date()
        later = {
            "since": (today + timedelta(days=2)).isoformat(),
            "until": (today + timedelta(days=3)).isoformat(),
        }
        found = world.statement("beta", **later)
        expected = world.beta.topup["amount_nano"] - world.beta.charged_nano
        assert found["opening_balance_nano"] == expected
        assert found["closing_balance_nano"] == expected
        assert found["movements"] == [] and found["usage"] == []

    def test_an_account_is_found_by_id_as_by_name(self, world: World) -> None:
        assert world.statement(world.alpha.account_id) == world.statement("alpha")

    def test_csv_is_served_as_text_csv_and_closes_at_the_balance(self, world: World) -> None:
        response = world.admin.get(
            "/accounts/alpha/statement", params=world.period | {"format": "csv"}
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(response.text)))
        expected = world.statement("alpha")
        assert rows[0][:2] == ["date", "line"]
        assert rows[1][1:] == ["opening balance", *[""] * 7, expected["opening_balance"]]
        assert rows[-1][1:] == ["closing balance", *[""] * 7, expected["closing_balance"]]
        assert [row[1] for row in rows[2:-1]].count("topup") == 1

    def test_html_is_served_as_text_html_and_shows_both_balances(self, world: World) -> None:
        response = world.admin.get(
            "/accounts/beta/statement", params=world.period | {"format": "html"}
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/html")
        expected = world.statement("beta")
        assert response.text.lstrip().lower().startswith("<!doctype html>")
        assert f"<td class=n>{expected['closing_balance']}</td>" in response.text
        assert f"<td class=n>{expected['opening_balance']}</td>" in response.text
        assert world.beta.account_id in response.text

    def test_an_unknown_format_is_refused(self, world: World) -> None:
        response = world.admin.get("/accounts/alpha/statement", params={"format": "xml"})
        assert_openai_error(response, 400, "format")

    def test_since_after_until_is_refused(self, world: World) -> None:
        response = world.admin.get(
            "/accounts/alpha/statement", params={"since": "2026-03-01", "until": "2026-02-01"}
        )
        assert_openai_error(response, 400, "until")

    def test_a_period_of_nothing_is_refused(self, world: World) -> None:
        """since == until covers no instant."""
        response = world.admin.get(
            "/accounts/alpha/statement", params={"since": "2026-02-01", "until": "2026-02-01"}
        )
        assert_openai_error(response, 400, "until")

    def test_a_since_that_is_no_date_is_refused(self, world: World) -> None:
        response = world.admin.get("/accounts/alpha/statement", params={"since": "yesterday"})
        assert_openai_error(response, 400, "since")

    def test_a_since_with_milliseconds_is_kept_to_the_millisecond(self, world: World) -> None:
        """The statement starts at the instant asked for, not 1 ms before it."""
        found = world.statement("alpha", since=ODD_MS_INSTANT, until="2004-09-09")
        assert found["since"] == ODD_MS_INSTANT.replace("Z", "000Z")

    def test_an_unknown_account_is_not_found(self, world: World) -> None:
        response = world.admin.get("/accounts/nobody/statement")
        assert_openai_error(response, 404, "account")

    def test_the_statement_needs_the_admin_token(self, world: World) -> None:
        """A customer's key is no admin token."""
        response = httpx.get(
            world.live.url + "/admin/v1/accounts/alpha/statement", headers=world.alpha.headers
        )
        assert_openai_error(response, 401)


class TestMovements:
    def test_every_kind_of_movement_is_listed_in_order_with_its_sign(self, world: World) -> None:
        """A top-up, a grant, a negative adjustment and a refund, each a line of its own:
        credits positive, the debit negative, and the closing balance their sum."""
        world.live.new_key("gamma")
        posted = []
        for amount, kind in (("5", "topup"), ("2", "grant"), ("-1.25", "adjustment")):
            body = {"amount": amount, "kind": kind, "reference": f"<{kind}>"}
            response = world.admin.post("/accounts/gamma/transfers", json=body)
            assert response.status_code == 200, response.text
            posted.append(response.json())
        response = world.admin.post(
            "/accounts/gamma/transfers", json={"amount": "0.5", "kind": "refund"}
        )
        assert response.status_code == 200, response.text
        posted.append(response.json())
        gamma = world.balance("gamma")["account_id"]
        signed = [
            (
                t["id"],
                t["kind"],
                t["amount_nano"] if t["credit_account"] == gamma else -t["amount_nano"],
            )
            for t in posted
        ]
        assert [amount for _, _, amount in signed] == [
            5 * NANO,
            2 * NANO,
            -1_250_000_000,
            500_000_000,
        ]
        found = world.statement("gamma")
        assert [(m["transfer_id"], m["kind"], m["amount_nano"]) for m in found["movements"]] == (
            signed
        )
        assert [m["reference"] for m in found["movements"]] == [
            "<topup>",
            "<grant>",
            "<adjustment>",
            None,
        ]
        assert found["usage"] == []
        assert found["closing_balance_nano"] == 6_250_000_000
        assert found["closing_balance"] == "6.25"
        page = world.admin.get(
            "/accounts/gamma/statement", params=world.period | {"format": "html"}
        )
        assert "<adjustment>" not in page.text and "&lt;adjustment&gt;" in page.text

    def test_a_period_from_the_middle_opens_at_what_came_before(self, world: World) -> None:
        """Since the third movement's instant: the first two are the opening balance."""
        world.live.new_key("delta")
        posted = []
        for amount in ("1", "2", "4", "8"):
            response = world.admin.post("/accounts/delta/transfers", json={"amount": amount})
            assert response.status_code == 200, response.text
            posted.append(response.json())
        since = posted[2]["created_at"]
        since_ms = iso_ms(since)
        found = world.statement("delta", since=since)
        before = [t for t in posted if iso_ms(t["created_at"]) < since_ms]
        within = [t for t in posted if iso_ms(t["created_at"]) >= since_ms]
        assert found["opening_balance_nano"] == sum(t["amount_nano"] for t in before)
        assert [m["transfer_id"] for m in found["movements"]] == [t["id"] for t in within]
        assert found["closing_balance_nano"] == 15 * NANO


class TestDashboardIsolation:
    """A key sees its own account only; nothing in the request can point it elsewhere."""

    TRICKS: tuple[dict[str, str], ...] = (
        {},
        {"account": "beta"},
        {"account_id": "{beta}"},
        {"account": "{beta}", "account_id": "{beta}", "key_id": "{beta_key}"},
    )

    def tricks(self, world: World) -> list[dict[str, str]]:
        names = {"beta": world.beta.account_id, "beta_key": world.beta.key_id}
        return [{k: v.format(**names) for k, v in trick.items()} for trick in self.TRICKS]

    def test_balance_shows_the_keys_own_account(self, world: World) -> None:
        for tenant, other in ((world.alpha, world.beta), (world.beta, world.alpha)):
            expected = world.balance(tenant.name)
            assert expected["balance_nano"] != world.balance(other.name)["balance_nano"]
            for trick in self.tricks(world) if tenant is world.alpha else [{}]:
                response = world.dashboard("balance", tenant, **trick)
                assert response.status_code == 200, response.text
                found = response.json()
                assert found["account_id"] == tenant.account_id, trick
                assert found["balance_nano"] == expected["balance_nano"], trick
                assert found["held_nano"] == 0

    def test_usage_shows_the_keys_own_usage(self, world: World) -> None:
        for trick in self.tricks(world):
            response = world.dashboard("usage", world.alpha, **(world.period | trick))
            assert response.status_code == 200, response.text
            found = response.json()
            assert found["account_id"] == world.alpha.account_id, trick
            assert found["usage_total_nano"] == -world.alpha.charged_nano, trick
            assert found["usage"] == world.statement("alpha")["usage"], trick
            assert found["usage_total_nano"] != -world.beta.charged_nano

    def test_statement_shows_the_keys_own_account(self, world: World) -> None:
        expected = world.statement("alpha")
        for trick in self.tricks(world):
            response = world.dashboard("statement", world.alpha, **(world.period | trick))
            assert response.status_code == 200, response.text
            assert response.json() == expected, trick

    def test_another_key_sees_its_own_figures(self, world: World) -> None:
        """beta's key, with alpha named in the query, still sees beta."""
        response = world.dashboard("statement", world.beta, **(world.period | {"account": "alpha"}))
        assert response.status_code == 200, response.text
        assert response.json() == world.statement("beta")
        assert response.json()["account_id"] == world.beta.account_id

    def test_the_x_api_key_header_also_identifies_the_account(self, world: World) -> None:
        response = httpx.get(
            world.live.url + "/v1/dashboard/balance", headers={"x-api-key": world.beta.secret}
        )
        assert response.status_code == 200, response.text
        assert response.json()["account_id"] == world.beta.account_id

    def test_headers_naming_another_account_change_nothing(self, world: World) -> None:
        headers = world.alpha.headers | {
            "OpenAI-Organization": world.beta.account_id,
            "OpenAI-Project": world.beta.account_id,
            "X-Account": "beta",
        }
        response = httpx.get(world.live.url + "/v1/dashboard/balance", headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["account_id"] == world.alpha.account_id

    @pytest.mark.parametrize("path", ["balance", "usage", "statement"])
    def test_no_key_is_refused(self, world: World, path: str) -> None:
        response = httpx.get(f"{world.live.url}/v1/dashboard/{path}", params={"account": "beta"})
        error = assert_openai_error(response, 401)
        assert error["code"] == "missing_api_key"

    @pytest.mark.parametrize("path", ["balance", "usage", "statement"])
    def test_a_wrong_key_is_refused(self, world: World, path: str) -> None:
        for secret in ("tm-not-a-key", world.alpha.secret + "x", world.live.admin_token):
            response = httpx.get(
                f"{world.live.url}/v1/dashboard/{path}",
                headers={"Authorization": f"Bearer {secret}"},
                params={"account": "alpha"},
            )
            assert_openai_error(response, 401)

    def test_a_revoked_key_is_refused(self, world: World) -> None:
        """Revoked, a key that showed the balance a moment ago gets 401."""
        secret, key_id, account_id = world.live.new_key("alpha")
        assert account_id == world.alpha.account_id
        headers = {"Authorization": f"Bearer {secret}"}
        before = httpx.get(world.live.url + "/v1/dashboard/balance", headers=headers)
        assert before.status_code == 200, before.text
        response = world.admin.post(f"/keys/{key_id}/revoke")
        assert response.status_code == 200, response.text
        world.live.wait_for_key(secret, known=False, within_s=5.0)
        for path in ("balance", "usage", "statement"):
            after = httpx.get(f"{world.live.url}/v1/dashboard/{path}", headers=headers)
            assert_openai_error(after, 401)
        # alpha's other key is untouched.
        assert world.dashboard("balance", world.alpha).status_code == 200


class TestDashboardStatement:
    def test_csv_and_html_formats(self, world: World) -> None:
        expected = world.statement("alpha")
        as_csv = world.dashboard("statement", world.alpha, **(world.period | {"format": "csv"}))
        assert as_csv.status_code == 200, as_csv.text
        assert as_csv.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(as_csv.text)))
        assert rows[-1][1:] == ["closing balance", *[""] * 7, expected["closing_balance"]]
        as_html = world.dashboard("statement", world.alpha, **(world.period | {"format": "html"}))
        assert as_html.status_code == 200, as_html.text
        assert as_html.headers["content-type"].startswith("text/html")
        assert f"<td class=n>{expected['closing_balance']}</td>" in as_html.text
        assert world.beta.account_id not in as_html.text

    def test_the_default_period_is_the_current_utc_month(self, world: World) -> None:
        def month_start() -> str:
            return datetime.now(UTC).strftime("%Y-%m-01T00:00:00Z")

        before = month_start()
        response = world.dashboard("statement", world.alpha)
        after = month_start()
        assert response.status_code == 200, response.text
        assert response.json()["since"] in (before, after)

    def test_an_unknown_format_is_refused(self, world: World) -> None:
        response = world.dashboard("statement", world.alpha, format="xml")
        assert_openai_error(response, 400, "format")

    @pytest.mark.parametrize("path", ["usage", "statement"])
    def test_since_after_until_is_refused(self, world: World, path: str) -> None:
        response = world.dashboard(path, world.alpha, since="2026-03-01", until="2026-02-01")
        assert_openai_error(response, 400, "until")

    @pytest.mark.parametrize("path", ["usage", "statement"])
    def test_a_since_that_is_no_date_is_refused(self, world: World, path: str) -> None:
        response = world.dashboard(path, world.alpha, since="last tuesday")
        assert_openai_error(response, 400, "since")

    def test_a_since_with_milliseconds_is_kept_to_the_millisecond(self, world: World) -> None:
        response = world.dashboard(
            "statement", world.alpha, since=ODD_MS_INSTANT, until="2004-09-09"
        )
        assert response.status_code == 200, response.text
        assert response.json()["since"] == ODD_MS_INSTANT.replace("Z", "000Z")

    def test_a_period_before_any_activity_is_empty(self, world: World) -> None:
        response = world.dashboard("statement", world.beta, **EARLY)
        assert response.status_code == 200, response.text
        found = response.json()
        assert found["opening_balance_nano"] == found["closing_balance_nano"] == 0
        assert found["movements"] == [] and found["usage"] == []


class TestRevenueReport:
    def all_records(self, world: World) -> list[UsageRecord]:
        return world.alpha.records + world.beta.records

    def test_rows_sum_per_day_model_and_account_to_the_records(self, world: World) -> None:
        """Each (day, model, account) row's revenue is the charge plus loss of its records."""
        response = world.admin.get("/reports/revenue", params=world.period)
        assert response.status_code == 200, response.text
        rows = response.json()
        keys = [(row["day"], row["model"], row["account_id"]) for row in rows]
        assert len(keys) == len(set(keys)), keys
        assert {k: row["revenue_nano"] for k, row in zip(keys, rows, strict=True)} == (
            revenue_by_group(self.all_records(world))
        )
        records = self.all_records(world)
        assert sum(row["revenue_nano"] for row in rows) == sum(
            r.charge_nano + r.loss_nano for r in records
        )
        assert sum(row["requests"] for row in rows) == len(records)
        # the sim deployments here run on no pool: their cost is unknown, so 0
        assert sum(row["cost_nano"] for row in rows) == sum(r.cost_nano for r in records) == 0
        assert all(
            row["margin_nano"] == row["revenue_nano"] - row["loss_nano"] - row["cost_nano"]
            for row in rows
        )

    def test_the_account_filter_keeps_one_account(self, world: World) -> None:
        response = world.admin.get("/reports/revenue", params=world.period | {"account": "beta"})
        assert response.status_code == 200, response.text
        rows = response.json()
        assert rows and {row["account_id"] for row in rows} == {world.beta.account_id}
        assert sum(row["revenue_nano"] for row in rows) == world.beta.charged_nano

    def test_a_period_before_any_activity_has_no_rows(self, world: World) -> None:
        response = world.admin.get("/reports/revenue", params=EARLY)
        assert response.status_code == 200, response.text
        assert response.json() == []

    def test_since_after_until_is_refused(self, world: World) -> None:
        response = world.admin.get(
            "/reports/revenue", params={"since": "2026-03-01", "until": "2026-02-01"}
        )
        assert_openai_error(response, 400, "until")

    def test_the_cli_prints_the_same_rows_as_json(self, world: World) -> None:
        """``tokenmill report revenue --json`` agrees with the admin API and the records."""
        out = tokenmill(
            world,
            "report",
            "revenue",
            "--json",
            "--since",
            world.period["since"],
            "--until",
            world.period["until"],
        )
        rows = json.loads(out)
        assert rows == world.admin.get("/reports/revenue", params=world.period).json()
        assert sum(row["revenue_nano"] for row in rows) == sum(
            r.charge_nano + r.loss_nano for r in self.all_records(world)
        )


class TestCliStatement:
    def test_the_csv_statement_matches_the_api(self, world: World) -> None:
        """``tokenmill accounts statement alpha --format csv`` prints the API's statement."""
        out = tokenmill(
            world,
            "accounts",
            "statement",
            "alpha",
            "--format",
            "csv",
            "--since",
            world.period["since"],
            "--until",
            world.period["until"],
        )
        rows = list(csv.reader(io.StringIO(out)))
        expected = world.statement("alpha")
        assert rows[-1][1] == "closing balance"
        assert rows[-1][-1] == expected["closing_balance"]
        assert int(world.balance("alpha")["balance_nano"]) == expected["closing_balance_nano"]
        api = world.admin.get("/accounts/alpha/statement", params=world.period | {"format": "csv"})
        assert out == api.text

    def test_a_since_with_milliseconds_is_kept_to_the_millisecond(self, world: World) -> None:
        out = tokenmill(
            world,
            "accounts",
            "statement",
            "alpha",
            "--since",
            ODD_MS_INSTANT,
            "--until",
            "2004-09-09",
        )
        assert json.loads(out)["since"] == ODD_MS_INSTANT.replace("Z", "000Z")
