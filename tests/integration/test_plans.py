"""Plans over real HTTP and the CLI: a plan seeded from the configuration and one set through
the admin API, accounts subscribed with no funds served from their included tokens, 402 once
they run out, the overage price after a top-up, the month's use kept across a restart.

Every test runs on SQLite and on PostgreSQL. Charges are computed here by hand from the
records' tokens and included tokens, never by the code under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from tests.assertions import assert_openai_error
from tests.conftest import LiveGateway, gateway_config, live_gateway
from tokenmill.access import service
from tokenmill.config import parse_config
from tokenmill.errors import ConfigurationError
from tokenmill.store.database import open_engine
from tokenmill.store.usage import record_by_request_id
from tokenmill.usage import UsageRecord

NANO = 1_000_000_000
# The price book: 1000 nano-units per input token, 2000 per output token.
PRICE = {"input": "1.00", "output": "2.00"}
# The plans' overage price is flat, 3000 nano-units a token in or out, so that a request
# whose tokens are all included holds nothing (see the book-price test for the other case).
OVERAGE_TOKEN = 3000
ALLOWANCE = 600
STARTER = {
    "currency": "USD",
    "monthly_fee": "20.00",
    "included": {"sim-chat": ALLOWANCE},
    "overage": {"sim-chat": {"input": "3.00", "output": "3.00"}},
}
# The same by the model's tier (sim-chat is of the default tier, "standard").
TIERED = {
    "included": {"tier:standard": ALLOWANCE},
    "overage": {"tier:standard": {"input": "3.00", "output": "3.00"}},
}
# The default prompt allowance: 32 tokens per request, 8 per message.
TEMPLATE_TOKENS = 32
TOKENS_PER_MESSAGE = 8
HELLO = [{"role": "user", "content": "hello there"}]
MAX_TOKENS = 16
REQUESTS_MAX = 60  # far more than ALLOWANCE can cover: a loop that never hits 402 fails


def plans_config(**plans: dict[str, Any]) -> dict[str, Any]:
    config = gateway_config(None)
    config["models"]["sim-chat"]["price"] = dict(PRICE)
    config["plans"] = {"starter": STARTER, "tiered": TIERED, **plans}
    return config


def chat_body(max_tokens: int = MAX_TOKENS) -> bytes:
    """The exact body bytes (the hold's prompt bound is measured on them)."""
    return orjson.dumps({"model": "sim-chat", "messages": HELLO, "max_tokens": max_tokens})


BODY = chat_body()
# The most prompt tokens the hold counts for BODY: its bytes plus the template allowance.
PROMPT_BOUND = len(BODY) + TEMPLATE_TOKENS + TOKENS_PER_MESSAGE


def post_chat(live: LiveGateway, secret: str, raw: bytes = BODY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    return httpx.post(live.url + "/v1/chat/completions", content=raw, headers=headers, timeout=30)


def admin_client(live: LiveGateway) -> httpx.Client:
    headers = {"Authorization": f"Bearer {live.admin_token}"}
    return httpx.Client(base_url=live.url + "/admin/v1", headers=headers, timeout=30)


def subscribe(admin: httpx.Client, account: str, plan: str | None) -> httpx.Response:
    return admin.post(f"/accounts/{account}/plan", json={"plan": plan})


def top_up(admin: httpx.Client, account: str, amount: str) -> None:
    response = admin.post(f"/accounts/{account}/transfers", json={"amount": amount})
    assert response.status_code == 200, response.text


def balance_nano(admin: httpx.Client, account: str) -> int:
    response = admin.get(f"/accounts/{account}/balance")
    assert response.status_code == 200, response.text
    return int(response.json()["balance_nano"])


def record_of(live: LiveGateway, response: httpx.Response, within_s: float = 3.0) -> UsageRecord:
    """The usage record of a served request, once the gateway has committed it."""
    request_id = response.headers["x-request-id"]
    deadline = time.monotonic() + within_s
    while True:
        with live.db.connect() as connection:
            record = record_by_request_id(connection, request_id)
        if record is not None:
            return record
        assert time.monotonic() < deadline, f"no usage record for {request_id}"
        time.sleep(0.02)


def tokens_of(record: UsageRecord) -> int:
    return record.prompt_tokens + record.completion_tokens


@contextmanager
def subscriber(
    database_url: str, home: Path, plan: str = "starter"
) -> Iterator[tuple[LiveGateway, httpx.Client, str, str]]:
    """A live gateway and an account with no funds on ``plan``: (live, admin, secret, id)."""
    with live_gateway(database_url, plans_config(), home) as live, admin_client(live) as admin:
        secret, _, account_id = live.new_key("subscriber")
        response = subscribe(admin, account_id, plan)
        assert response.status_code == 200, response.text
        assert response.json() == {"id": account_id, "plan": plan}
        yield live, admin, secret, account_id


def spend_included(live: LiveGateway, secret: str, left: int) -> tuple[int, int]:
    """Requests with no funds until a 402: each must be wholly included and charged 0.
    Returns (requests served, included tokens left)."""
    for served in range(REQUESTS_MAX):
        response = post_chat(live, secret)
        if response.status_code == 402:
            assert_openai_error(response, 402)
            # Refused only once the pool cannot cover the prompt bound and one output token.
            assert left < PROMPT_BOUND + 1, (left, PROMPT_BOUND)
            return served, left
        assert response.status_code == 200, response.text
        assert left >= PROMPT_BOUND + 1, (left, PROMPT_BOUND)
        record = record_of(live, response)
        assert record.included_tokens == tokens_of(record), record
        assert (record.charge_nano, record.loss_nano) == (0, 0), record
        left -= record.included_tokens
    raise AssertionError(f"{REQUESTS_MAX} requests on {ALLOWANCE} included tokens, no 402")


class TestIncludedTokens:
    def test_a_subscriber_without_funds_is_served_until_its_included_tokens_run_out(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """No funds: requests within the included tokens are free; then 402."""
        with subscriber(database_url, tmp_path) as (live, admin, secret, account_id):
            served, left = spend_included(live, secret, ALLOWANCE)
            assert served >= 3
            assert balance_nano(admin, account_id) == 0
            records = live.records()
            assert sum(r.included_tokens for r in records) == ALLOWANCE - left
            assert all(r.charge_nano == 0 for r in records)

    def test_after_a_top_up_the_tokens_past_the_included_ones_pay_the_overage_price(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """Included tokens spent, 1.00 topped up: the rest pays 3000 nano a token, exactly."""
        with subscriber(database_url, tmp_path) as (live, admin, secret, account_id):
            _, left = spend_included(live, secret, ALLOWANCE)
            top_up(admin, account_id, "1.00")
            charged = 0
            paid: list[UsageRecord] = []
            while not paid or paid[-1].included_tokens:
                assert len(paid) < 10, "the included tokens never ran out"
                response = post_chat(live, secret)
                assert response.status_code == 200, response.text
                record = record_of(live, response)
                assert record.included_tokens == min(left, tokens_of(record)), (left, record)
                expected = (tokens_of(record) - record.included_tokens) * OVERAGE_TOKEN
                assert record.charge_nano == expected, (record, expected)
                assert record.loss_nano == 0
                left -= record.included_tokens
                charged += record.charge_nano
                paid.append(record)
            assert left == 0
            assert paid[-1].charge_nano == tokens_of(paid[-1]) * OVERAGE_TOKEN
            assert balance_nano(admin, account_id) == NANO - charged

    @pytest.mark.parametrize("plan", ["starter", "tiered"])
    def test_a_restart_keeps_the_included_tokens_used_this_month(
        self, database_url: str, tmp_path: Path, plan: str
    ) -> None:
        """Two requests, a restart on the same database, then 402 where the pool ends."""
        with subscriber(database_url, tmp_path, plan) as (live, _, secret, _):
            for _ in range(2):
                response = post_chat(live, secret)
                assert response.status_code == 200, response.text
            used_before = sum(r.included_tokens for r in live.records())
            assert used_before > 0
        with live_gateway(database_url, plans_config(), tmp_path) as live:
            live.wait_for_key(secret)
            served, left = spend_included(live, secret, ALLOWANCE - used_before)
            assert served >= 1
            assert sum(r.included_tokens for r in live.records()) == ALLOWANCE - left

    def test_a_plan_without_overage_prices_serves_its_included_tokens(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """A plan at the price book's prices (1.00 in, 2.00 out): included tokens are free."""
        config = plans_config(book={"included": {"sim-chat": ALLOWANCE}})
        with live_gateway(database_url, config, tmp_path) as live, admin_client(live) as admin:
            secret, _, account_id = live.new_key("book")
            assert subscribe(admin, account_id, "book").status_code == 200
            response = post_chat(live, secret)
            assert response.status_code == 200, response.text
            record = record_of(live, response)
            assert (record.included_tokens, record.charge_nano) == (tokens_of(record), 0)


PRO_SPEC = {
    "timezone": "Europe/Paris",
    "included": {"tier:standard": 400},
    "overage": {"tier:standard": {"input": "3.00", "output": "3.00"}},
    "time_of_day": [{"from": "22:00", "to": "06:00", "ratio": "0.5"}],
    "batch_discount": "0.25",
}
# PRO_SPEC as the store writes it back: every field, amounts and ratios normalized.
PRO_WRITTEN = {
    "currency": "USD",
    "monthly_fee": "0.00",
    "timezone": "Europe/Paris",
    "included": {"tier:standard": 400},
    "overage": {
        "tier:standard": {
            "input": "3.00",
            "output": "3.00",
            "cached_input": "3.00",
            "cache_write_input": "3.00",
        }
    },
    "time_of_day": [{"from": "22:00", "to": "06:00", "ratio": "0.5"}],
    "batch_discount": "0.25",
}


class TestAdminApi:
    def test_a_plan_put_through_the_admin_api_is_listed_with_the_seeded_one(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """PUT /plans/pro answers the plan as stored; GET /plans lists it and 'starter'."""
        with (
            live_gateway(database_url, plans_config(), tmp_path) as live,
            admin_client(live) as admin,
        ):
            response = admin.put("/plans/pro", json=PRO_SPEC)
            assert response.status_code == 200, response.text
            assert response.json() == {"name": "pro", **PRO_WRITTEN}
            listed = admin.get("/plans")
            assert listed.status_code == 200, listed.text
            assert listed.json()["pro"] == PRO_WRITTEN
            assert listed.json()["starter"]["included"] == {"sim-chat": ALLOWANCE}
            assert listed.json()["starter"]["monthly_fee"] == "20.00"

    def test_subscribers_of_a_plan_put_through_the_api_get_its_terms_from_now_on(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """'pro' includes the standard tier: served free; replaced with none included: 402."""
        with (
            live_gateway(database_url, plans_config(), tmp_path) as live,
            admin_client(live) as admin,
        ):
            assert admin.put("/plans/pro", json=PRO_SPEC).status_code == 200
            secret, _, account_id = live.new_key("pro-customer")
            assert subscribe(admin, account_id, "pro").status_code == 200
            response = post_chat(live, secret)
            assert response.status_code == 200, response.text
            record = record_of(live, response)
            assert (record.included_tokens, record.charge_nano) == (tokens_of(record), 0)
            emptied = PRO_SPEC | {"included": {"tier:standard": 0}}
            assert admin.put("/plans/pro", json=emptied).status_code == 200
            assert_openai_error(post_chat(live, secret), 402)

    def test_subscribing_to_a_plan_in_another_currency_is_a_conflict(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """A EUR account and the USD plan 'starter': 409 naming the plan; nothing changes."""
        with (
            live_gateway(database_url, plans_config(), tmp_path) as live,
            admin_client(live) as admin,
        ):
            _, _, account_id = live.new_key("euro")
            terms = admin.post(f"/accounts/{account_id}/terms", json={"currency": "EUR"})
            assert terms.status_code == 200, terms.text
            assert_openai_error(subscribe(admin, account_id, "starter"), 409, "plan")
            assert service.find_account(live.db, account_id).plan is None

    def test_subscribing_to_an_unknown_plan_is_not_found(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """No plan 'gold': 404 naming the plan."""
        with (
            live_gateway(database_url, plans_config(), tmp_path) as live,
            admin_client(live) as admin,
        ):
            _, _, account_id = live.new_key("acme")
            assert_openai_error(subscribe(admin, account_id, "gold"), 404, "plan")
            assert service.find_account(live.db, account_id).plan is None

    def test_a_subscriber_can_go_back_to_pay_as_you_go(
        self, database_url: str, tmp_path: Path
    ) -> None:
        """plan null: the account leaves its plan; with no funds it is refused with 402."""
        with subscriber(database_url, tmp_path) as (live, admin, secret, account_id):
            response = subscribe(admin, account_id, None)
            assert response.status_code == 200, response.text
            assert response.json() == {"id": account_id, "plan": None}
            assert service.find_account(live.db, account_id).plan is None
            assert_openai_error(post_chat(live, secret), 402)

    @pytest.mark.parametrize(
        ("spec", "param"),
        [
            (
                {"time_of_day": [{"from": "25:00", "to": "06:00", "ratio": "0.5"}]},
                "time_of_day.0.from",
            ),
            ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
            ({"included": {"sim-chat": -1}}, "included"),
            ({"unlimited": True}, "unlimited"),
            pytest.param(
                {"batch_discount": "1e999999999"},
                "batch_discount",
                id="huge-ratio",
            ),
        ],
    )
    def test_a_bad_plan_is_refused_with_400_naming_the_field(
        self, sqlite_url: str, tmp_path: Path, spec: dict[str, Any], param: str
    ) -> None:
        """PUT /plans/bad with a bad field: 400 naming it; the plan is not stored."""
        with (
            live_gateway(sqlite_url, plans_config(), tmp_path) as live,
            admin_client(live) as admin,
        ):
            assert_openai_error(admin.put("/plans/bad", json=spec), 400, param)
            assert "bad" not in admin.get("/plans").json()


PLAN_YAML = """
currency: USD
monthly_fee: "9.90"
timezone: Europe/Paris
included:
  "tier:standard": 1000000
time_of_day:
  - {from: "22:00", to: "06:00", ratio: "0.5"}
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


TOKENMILL = Path(sys.executable).parent / "tokenmill"


def cli_env(home: Path) -> dict[str, str]:
    """The environment without TOKENMILL_ settings, the home set to ``home``."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("TOKENMILL_")}
    return clean | {"TOKENMILL_HOME": str(home), "COLUMNS": "200"}


def tokenmill(home: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the console script with ``--database-url``."""
    return subprocess.run(
        [str(TOKENMILL), *args, "--database-url", database_url],
        capture_output=True,
        text=True,
        env=cli_env(home),
        timeout=60,
        check=False,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON printed by a command that must have worked."""
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return orjson.loads(result.stdout)


def refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """A command that must have exited 1 with one 'error:' line naming ``words``."""
    assert result.returncode == 1, (result.args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    assert all(word in lines[0] for word in words), (words, lines[0])
    assert result.stdout == ""


class TestCli:
    def test_plans_set_stores_a_plan_and_plans_list_shows_it(
        self, database_url: str, home: Path, tmp_path: Path
    ) -> None:
        """plans set NAME --file plan.yaml; plans list --json has it as written."""
        plan_file = tmp_path / "plan.yaml"
        plan_file.write_text(PLAN_YAML, "utf-8")
        saved = succeeded(
            tokenmill(
                home, database_url, "plans", "set", "nights", "--file", str(plan_file), "--json"
            )
        )
        written = {
            "currency": "USD",
            "monthly_fee": "9.90",
            "timezone": "Europe/Paris",
            "included": {"tier:standard": 1_000_000},
            "overage": {},
            "time_of_day": [{"from": "22:00", "to": "06:00", "ratio": "0.5"}],
            "batch_discount": "0",
        }
        assert saved == {"name": "nights", **written}
        assert succeeded(tokenmill(home, database_url, "plans", "list", "--json")) == {
            "nights": written
        }
        table = tokenmill(home, database_url, "plans", "list")
        assert table.returncode == 0, table.stderr
        assert "nights" in table.stdout and "1,000,000" in table.stdout

    def test_a_bad_plan_file_is_refused_with_one_clear_line(
        self, database_url: str, home: Path, tmp_path: Path
    ) -> None:
        """A bad field, a file that is not YAML, a missing file: exit 1, nothing stored."""
        bad = tmp_path / "bad.yaml"
        bad.write_text(PLAN_YAML.replace('"22:00"', '"25:00"'), "utf-8")
        refused(
            tokenmill(home, database_url, "plans", "set", "nights", "--file", str(bad)),
            "time_of_day.0.from",
        )
        garbage = tmp_path / "garbage.yaml"
        garbage.write_text("included: [unclosed\n", "utf-8")
        result = tokenmill(home, database_url, "plans", "set", "nights", "--file", str(garbage))
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith(f"error: cannot read the plan from {garbage}")
        missing = tmp_path / "missing.yaml"
        refused(
            tokenmill(home, database_url, "plans", "set", "nights", "--file", str(missing)),
            "cannot read",
        )
        assert succeeded(tokenmill(home, database_url, "plans", "list", "--json")) == {}

    def test_accounts_subscribe_puts_an_account_on_a_plan_and_takes_it_off(
        self, database_url: str, home: Path, tmp_path: Path
    ) -> None:
        """accounts subscribe ACCOUNT nights, then none; a EUR account is refused."""
        plan_file = tmp_path / "plan.yaml"
        plan_file.write_text(PLAN_YAML, "utf-8")
        succeeded(
            tokenmill(
                home, database_url, "plans", "set", "nights", "--file", str(plan_file), "--json"
            )
        )
        engine = open_engine(database_url)
        try:
            service.create_account(engine, "acme")
            found = succeeded(
                tokenmill(home, database_url, "accounts", "subscribe", "acme", "nights", "--json")
            )
            assert found["plan"] == "nights"
            assert service.find_account(engine, "acme").plan == "nights"
            succeeded(
                tokenmill(home, database_url, "accounts", "subscribe", "acme", "none", "--json")
            )
            assert service.find_account(engine, "acme").plan is None
            succeeded(
                tokenmill(
                    home, database_url, "accounts", "terms", "acme", "--currency", "EUR", "--json"
                )
            )
            refused(
                tokenmill(home, database_url, "accounts", "subscribe", "acme", "nights"),
                "USD",
                "EUR",
            )
            assert service.find_account(engine, "acme").plan is None
        finally:
            engine.dispose()


BAD_PLANS = [
    pytest.param({"timezone": "Nowhere/City"}, id="unknown-zone"),
    pytest.param({"time_of_day": [{"from": "25:00", "to": "06:00", "ratio": "0.5"}]}, id="clock"),
    pytest.param({"included": {"sim-chat": -5}}, id="negative-included"),
    pytest.param({"unlimited": True}, id="unknown-field"),
    pytest.param(
        {"batch_discount": "1e999999999"},
        id="huge-ratio",
    ),
]


class TestConfiguration:
    @pytest.mark.parametrize("spec", BAD_PLANS)
    def test_a_bad_plan_in_the_configuration_is_refused_naming_it(
        self, spec: dict[str, Any], sqlite_url: str, tmp_path: Path
    ) -> None:
        """plans.broken wrong: ConfigurationError naming plans.broken; no gateway starts."""
        config = plans_config(broken=spec)
        with pytest.raises(ConfigurationError) as raised:
            parse_config(config)
        assert "plans.broken" in raised.value.message
        with pytest.raises(ConfigurationError), live_gateway(sqlite_url, config, tmp_path):
            pytest.fail("the gateway started with a bad plan")

    def test_tokenmill_serve_refuses_a_bad_plan_at_start(self, home: Path, tmp_path: Path) -> None:
        """tokenmill serve --config with a bad plan: exit 1, one error naming plans.broken."""
        config_file = tmp_path / "tokenmill.yaml"
        config_file.write_text(yaml.safe_dump(plans_config(broken={"timezone": "Nowhere/City"})))
        result = subprocess.run(
            [str(TOKENMILL), "serve", "--config", str(config_file), "--port", "0"],
            capture_output=True,
            text=True,
            env=cli_env(home),
            timeout=60,
            check=False,
        )
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        assert "plans.broken" in result.stderr
        assert "Nowhere/City" in result.stderr

    def test_a_configured_plan_is_seeded_once_and_never_overwritten(
        self, sqlite_url: str, tmp_path: Path
    ) -> None:
        """A plan changed through the API keeps its change across a restart."""
        with (
            live_gateway(sqlite_url, plans_config(), tmp_path) as live,
            admin_client(live) as admin,
        ):
            changed = STARTER | {"monthly_fee": "25.00"}
            assert admin.put("/plans/starter", json=changed).status_code == 200
        with (
            live_gateway(sqlite_url, plans_config(), tmp_path) as live,
            admin_client(live) as admin,
        ):
            assert admin.get("/plans").json()["starter"]["monthly_fee"] == "25.00"
