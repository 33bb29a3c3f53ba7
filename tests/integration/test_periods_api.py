"""Closing a period over the admin API, the customer's dashboard and the ``tokenmill`` CLI:
the close report and its idempotence, 400s for periods not over or not months, invoices
listed and shown (JSON and HTML), credit notes, a key that sees only its own invoices, and
the CLI that closes a period on a stopped store but goes through a running gateway.

March 2026 is seeded into the store before the gateway starts (usage records and their
transfers written directly, subscriptions moved back into March), using the helpers of
test_periods. Expected figures come from what was seeded, never from the code under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import Engine

from tests.assertions import assert_openai_error
from tests.conftest import LiveGateway, gateway_config, live_gateway
from tests.integration.test_periods import (
    FEE,
    NANO,
    PERIOD,
    SINCE,
    account,
    balance,
    charge,
    plan_fee_transfers,
    starter_plan,
    subscribe,
)
from tokenmill.billing import periods
from tokenmill.billing.audit import run_audit
from tokenmill.store.database import open_engine

TOKENMILL = Path(sys.executable).parent / "tokenmill"
DAY_MS = 86_400_000
ALPHA_USAGE = (2 * NANO, 1_000_000_001)  # alpha's two March requests
BETA_USAGE = 3 * NANO + 7
GAMMA_TOPUP = 50 * NANO


@dataclass(frozen=True)
class Seeded:
    """March as seeded: account ids by name and what each invoice must total."""

    ids: dict[str, str]

    @property
    def alpha_total(self) -> int:
        return sum(ALPHA_USAGE) + FEE

    @property
    def beta_total(self) -> int:
        return BETA_USAGE


def seed(database_url: str) -> Seeded:
    """alpha: postpaid, on the plan, two requests in March; beta: postpaid, one request, no
    plan; gamma: prepaid with 50.00, on the plan, no requests."""
    engine = open_engine(database_url)
    try:
        starter_plan(engine)
        alpha = account(engine, "alpha", credit_limit_nano=100 * NANO)
        beta = account(engine, "beta", credit_limit_nano=100 * NANO)
        gamma = account(engine, "gamma", balance_nano=GAMMA_TOPUP)
        subscribe(engine, alpha.id)
        subscribe(engine, gamma.id)
        for i, amount in enumerate(ALPHA_USAGE):
            charge(engine, alpha.id, f"alpha-{i}", "sim-chat", amount, SINCE + (i + 1) * DAY_MS)
        charge(engine, beta.id, "beta-0", "sim-chat", BETA_USAGE, SINCE + 2 * DAY_MS)
    finally:
        engine.dispose()
    return Seeded({"alpha": alpha.id, "beta": beta.id, "gamma": gamma.id})


def admin_client(live: LiveGateway) -> httpx.Client:
    headers = {"Authorization": f"Bearer {live.admin_token}"}
    return httpx.Client(base_url=live.url + "/admin/v1", headers=headers, timeout=30)


@dataclass
class World:
    live: LiveGateway
    admin: httpx.Client
    seeded: Seeded

    def close(self, period: Any = PERIOD) -> httpx.Response:
        return self.admin.post("/billing/close-period", json={"period": period})

    def closed(self) -> dict[str, Any]:
        response = self.close()
        assert response.status_code == 200, response.text
        report: dict[str, Any] = response.json()
        return report

    def invoice_of(self, name: str) -> dict[str, Any]:
        response = self.admin.get("/invoices", params={"account": name})
        assert response.status_code == 200, response.text
        (found,) = response.json()
        assert isinstance(found, dict)
        return found


@pytest.fixture
def world(sqlite_url: str, tmp_path: Path) -> Iterator[World]:
    seeded = seed(sqlite_url)
    with (
        live_gateway(sqlite_url, gateway_config(None), tmp_path) as live,
        admin_client(live) as admin,
    ):
        yield World(live, admin, seeded)


def current_period() -> str:
    today = datetime.now(UTC)
    return f"{today.year:04d}-{today.month:02d}"


# ---------------------------------------------------------------------------- close-period


class TestClosePeriodOverHttp:
    def test_closing_a_past_month_answers_the_report_and_again_books_nothing(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """The report names both fees and both invoices; the second close answers them as
        issued already, and the ledger holds one fee per subscriber (SQLite, PostgreSQL)."""
        seeded = seed(database_url)
        ids = seeded.ids
        with (
            live_gateway(database_url, gateway_config(None), tmp_path) as live,
            admin_client(live) as admin,
        ):
            world = World(live, admin, seeded)
            report = world.closed()

            assert report["period"] == PERIOD
            fees = sorted((f["account_id"], f["paid_nano"], f["loss_nano"]) for f in report["fees"])
            assert fees == sorted([(ids["alpha"], FEE, 0), (ids["gamma"], FEE, 0)])
            assert report["lapsed"] == []
            assert sorted(report["invoices_issued"]) == ["INV-000001", "INV-000002"]
            assert report["invoices_existing"] == []
            assert world.invoice_of("alpha")["total_nano"] == seeded.alpha_total
            assert world.invoice_of("beta")["total_nano"] == seeded.beta_total

            again = world.closed()

            assert again["fees"] == [] and again["invoices_issued"] == []
            assert sorted(again["invoices_existing"]) == ["INV-000001", "INV-000002"]
            assert len(plan_fee_transfers(live.db)) == 2
            assert balance(live.db, ids["gamma"]) == GAMMA_TOPUP - FEE
            wait_for_balance(admin, "gamma", GAMMA_TOPUP - FEE)
            assert run_audit(live.db).ok

    def test_a_period_not_over_is_a_400_in_openai_shape_and_books_nothing(
        self, world: World
    ) -> None:
        """The current month: 400 naming 'period'; no fee, no invoice."""
        error = assert_openai_error(world.close(current_period()), 400, "period")
        assert "5 minutes" in error["message"]
        assert plan_fee_transfers(world.live.db) == []
        assert world.admin.get("/invoices").json() == []

    @pytest.mark.parametrize(
        "period",
        [
            "2026-13",
            "26-03",
            "2026-3",
            "March",
            "2026-03-01",
            pytest.param(""),
        ],
    )
    def test_text_that_is_not_a_month_is_a_400_naming_the_period(
        self, world: World, period: str
    ) -> None:
        """A bad period: 400 in OpenAI's shape, param 'period'."""
        assert_openai_error(world.close(period), 400, "period")
        assert plan_fee_transfers(world.live.db) == []

    @pytest.mark.parametrize("period", [202603, ["2026-03"], {"m": 3}])
    def test_a_period_that_is_not_text_is_a_400_naming_the_period(
        self, world: World, period: Any
    ) -> None:
        """A number, a list or an object: 400 naming 'period', never a 500."""
        assert_openai_error(world.close(period), 400, "period")

    def test_march_with_a_trailing_newline_is_refused_after_march_was_closed(
        self, world: World
    ) -> None:
        """ "2026-03\\n" is no month: 400, and no fee is booked a second time."""
        world.closed()
        response = world.close("2026-03\n")
        assert len(plan_fee_transfers(world.live.db)) == 2
        assert_openai_error(response, 400, "period")


def wait_for_balance(admin: httpx.Client, name: str, expected: int, within_s: float = 5) -> None:
    """The running gateway's balance of ``name`` reaches ``expected`` (its follower)."""
    deadline = time.monotonic() + within_s
    while True:
        found = admin.get(f"/accounts/{name}/balance").json()
        if found["balance_nano"] == expected and found["holds_count"] == 0:
            return
        assert time.monotonic() < deadline, (found, expected)
        time.sleep(0.05)


# ---------------------------------------------------------------------------- invoices


class TestInvoicesOverHttp:
    def test_invoices_are_listed_oldest_first_and_filtered_by_account(self, world: World) -> None:
        """GET /invoices lists both; ?account= gives only that account's."""
        world.closed()
        listed = world.admin.get("/invoices").json()
        assert [i["number"] for i in listed] == ["INV-000001", "INV-000002"]
        by_account = {i["account_id"]: i for i in listed}
        ids = world.seeded.ids
        assert set(by_account) == {ids["alpha"], ids["beta"]}
        assert by_account[ids["alpha"]]["total_nano"] == world.seeded.alpha_total
        assert by_account[ids["beta"]]["due_nano"] == world.seeded.beta_total
        assert world.invoice_of("beta")["account_id"] == ids["beta"]
        assert world.admin.get("/invoices", params={"account": "gamma"}).json() == []
        assert_openai_error(
            world.admin.get("/invoices", params={"account": "nobody"}), 404, "account"
        )

    def test_one_invoice_is_shown_as_json_and_as_a_printable_page(self, world: World) -> None:
        """GET /invoices/{n} is the listed invoice; ?format=html is text/html naming it."""
        world.closed()
        alpha = world.invoice_of("alpha")

        shown = world.admin.get(f"/invoices/{alpha['number']}")
        assert shown.status_code == 200, shown.text
        assert shown.json() == alpha
        page = world.admin.get(f"/invoices/{alpha['number']}", params={"format": "html"})
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        assert f"Invoice {alpha['number']}" in page.text
        assert "alpha" in page.text
        assert "20.00" in page.text  # the plan fee line

    @pytest.mark.parametrize("number", ["INV-999999", "INV-000001x", "nope"])
    def test_an_unknown_invoice_is_a_404_in_openai_shape(self, world: World, number: str) -> None:
        """No such invoice: 404, error shape."""
        world.closed()
        assert_openai_error(world.admin.get(f"/invoices/{number}"), 404, "invoice")

    @pytest.mark.parametrize("number", ["INV%00", "%00", "I" * 300])
    def test_a_nul_or_overlong_invoice_number_is_a_400_or_404_never_a_500(
        self, world: World, number: str
    ) -> None:
        """Text a database cannot look up is refused in OpenAI's shape."""
        world.closed()
        for path in (f"/invoices/{number}", f"/invoices/{number}?format=html"):
            response = world.admin.get(path)
            assert response.status_code in (400, 404), response.text
            assert_openai_error(response, response.status_code, response.json()["error"]["param"])
        credit = world.admin.post(
            f"/invoices/{number}/credit-notes", json={"amount": "1.00", "reason": "r"}
        )
        assert credit.status_code in (400, 404), credit.text

    def test_an_unknown_format_is_a_400(self, world: World) -> None:
        """format=pdf: 400 naming 'format'."""
        world.closed()
        assert_openai_error(world.admin.get("/invoices/INV-000001?format=pdf"), 400, "format")


class TestCreditNotesOverHttp:
    def test_a_credit_note_refunds_the_account_and_the_invoice_shows_it_credited(
        self, world: World
    ) -> None:
        """201 with CN-000001 and its refund; the invoice is the same, 4.00 credited."""
        world.closed()
        alpha = world.invoice_of("alpha")
        before = balance(world.live.db, world.seeded.ids["alpha"])

        response = world.admin.post(
            f"/invoices/{alpha['number']}/credit-notes", json={"amount": "4.00", "reason": "outage"}
        )

        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["number"], body["invoice"]) == ("CN-000001", alpha["number"])
        assert body["transfer"]["id"] == "credit_note:CN-000001"
        assert body["transfer"]["kind"] == "refund"
        assert body["transfer"]["amount_nano"] == 4 * NANO
        assert body["transfer"]["credit_account"] == world.seeded.ids["alpha"]
        assert balance(world.live.db, world.seeded.ids["alpha"]) == before + 4 * NANO
        after = world.invoice_of("alpha")
        assert after["lines"] == alpha["lines"] and after["total_nano"] == alpha["total_nano"]
        assert after["credited_nano"] == 4 * NANO
        assert after["due_nano"] == alpha["total_nano"] - 4 * NANO

    def test_over_crediting_is_a_422_in_openai_shape_and_changes_nothing(
        self, world: World
    ) -> None:
        """More than the invoice's total: 422 naming 'amount'; no note, no refund."""
        world.closed()
        beta = world.invoice_of("beta")
        before = balance(world.live.db, world.seeded.ids["beta"])
        too_much = f"{(BETA_USAGE + 1) / NANO:.9f}"

        response = world.admin.post(
            f"/invoices/{beta['number']}/credit-notes", json={"amount": too_much, "reason": "x"}
        )

        error = assert_openai_error(response, 422, "amount")
        assert "left to credit" in error["message"]
        assert balance(world.live.db, world.seeded.ids["beta"]) == before
        assert world.invoice_of("beta")["credited_nano"] == 0
        exact = f"{BETA_USAGE / NANO:.9f}"
        ok = world.admin.post(
            f"/invoices/{beta['number']}/credit-notes", json={"amount": exact, "reason": "all"}
        )
        assert ok.status_code == 201, ok.text
        assert world.invoice_of("beta")["due_nano"] == 0

    @pytest.mark.parametrize(
        ("body", "param"),
        [
            ({"amount": "abc", "reason": "r"}, "amount"),
            ({"amount": "0", "reason": "r"}, "amount"),
            ({"amount": "1.00", "reason": ""}, "reason"),
            ({"amount": "1.00"}, "reason"),
        ],
    )
    def test_a_bad_credit_note_is_a_400(
        self, world: World, body: dict[str, Any], param: str
    ) -> None:
        """A bad amount or no reason: 400 naming the field."""
        world.closed()
        assert_openai_error(
            world.admin.post("/invoices/INV-000001/credit-notes", json=body), 400, param
        )

    def test_crediting_an_unknown_invoice_is_a_404(self, world: World) -> None:
        """No such invoice: 404 naming 'invoice'."""
        response = world.admin.post(
            "/invoices/INV-000042/credit-notes", json={"amount": "1.00", "reason": "r"}
        )
        assert_openai_error(response, 404, "invoice")


# ---------------------------------------------------------------------------- the dashboard


class TestDashboardInvoices:
    def test_a_key_sees_only_its_own_accounts_invoices(self, world: World) -> None:
        """alpha's key lists alpha's invoice only, beta's beta's; gamma (prepaid) none."""
        world.closed()
        alpha = world.invoice_of("alpha")
        beta = world.invoice_of("beta")
        seen = {}
        for name in ("alpha", "beta", "gamma"):
            secret, _, _ = world.live.new_key(name)
            response = httpx.get(
                world.live.url + "/v1/dashboard/invoices",
                headers={"Authorization": f"Bearer {secret}"},
                # An account asked for in the request is never taken: the key decides.
                params={"account": world.seeded.ids["beta"]},
            )
            assert response.status_code == 200, response.text
            seen[name] = response.json()
        assert seen["alpha"] == [alpha]
        assert seen["beta"] == [beta]
        assert seen["gamma"] == []

    def test_no_key_or_a_bad_key_is_a_401(self, world: World) -> None:
        """The dashboard needs a valid key."""
        world.closed()
        url = world.live.url + "/v1/dashboard/invoices"
        assert_openai_error(httpx.get(url), 401)
        bad = httpx.get(url, headers={"Authorization": "Bearer tm-not-a-key"})
        assert_openai_error(bad, 401)


# ---------------------------------------------------------------------------- the CLI


def tokenmill(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("TOKENMILL_")}
    return subprocess.run(
        [str(TOKENMILL), *args],
        capture_output=True,
        text=True,
        env=env | {"TOKENMILL_HOME": str(home), "COLUMNS": "200"},
        timeout=60,
        check=False,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return orjson.loads(result.stdout)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


def store_of(url: str) -> Engine:
    return open_engine(url, migrate=False)


class TestCli:
    def test_close_period_without_a_gateway_closes_it_once_and_credit_issues_a_note(
        self, sqlite_url: str, home: Path
    ) -> None:
        """close-period --json books the fees and issues the invoices; again, nothing more;
        `invoices credit` then refunds 1.00 with CN-000001."""
        seeded = seed(sqlite_url)
        args = ("billing", "close-period", "--period", PERIOD, "--database-url", sqlite_url)

        first = succeeded(tokenmill(home, *args, "--json"))
        again = succeeded(tokenmill(home, *args, "--json"))

        assert len(first["fees"]) == 2
        assert sorted(first["invoices_issued"]) == ["INV-000001", "INV-000002"]
        assert again["fees"] == [] and again["invoices_issued"] == []
        assert sorted(again["invoices_existing"]) == ["INV-000001", "INV-000002"]
        engine = store_of(sqlite_url)
        try:
            assert len(plan_fee_transfers(engine)) == 2
            invoice, _ = periods.find_invoice(engine, "INV-000001")
            assert invoice.account_id in (seeded.ids["alpha"], seeded.ids["beta"])
            before = balance(engine, invoice.account_id)
            note = succeeded(
                tokenmill(
                    home,
                    "invoices",
                    "credit",
                    "INV-000001",
                    "1.00",
                    "--reason",
                    "r",
                    "--database-url",
                    sqlite_url,
                    "--json",
                )
            )
            assert note["number"] == "CN-000001"
            assert note["transfer_id"] == "credit_note:CN-000001"
            assert balance(engine, invoice.account_id) == before + NANO
            assert periods.find_invoice(engine, "INV-000001") == (invoice, NANO)
            assert run_audit(engine).ok
        finally:
            engine.dispose()

    def test_close_period_must_go_through_a_running_gateway(
        self, sqlite_url: str, home: Path, tmp_path: Path
    ) -> None:
        """With a gateway serving the database and no --url/--admin-token: exit 1 with one
        clear error and nothing booked; with them, the gateway closes it."""
        seed(sqlite_url)
        args = ("billing", "close-period", "--period", PERIOD, "--database-url", sqlite_url)
        with live_gateway(sqlite_url, gateway_config(None), tmp_path) as live:
            refused = tokenmill(home, *args)

            assert refused.returncode == 1, (refused.stdout, refused.stderr)
            assert "Traceback" not in refused.stderr
            lines = [line for line in refused.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("error: "), refused.stderr
            assert "gateway" in lines[0] and "--admin-token" in lines[0]
            assert plan_fee_transfers(live.db) == []

            report = succeeded(
                tokenmill(
                    home, *args, "--url", live.url, "--admin-token", live.admin_token, "--json"
                )
            )

            assert report["period"] == PERIOD
            assert len(report["fees"]) == 2
            assert sorted(report["invoices_issued"]) == ["INV-000001", "INV-000002"]
            assert len(plan_fee_transfers(live.db)) == 2
