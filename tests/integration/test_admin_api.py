"""The admin API under /admin/v1, over real HTTP with the bearer admin token."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.assertions import assert_openai_error
from tests.conftest import LiveGateway, gateway_config, live_gateway
from tokenmill.access.keys import hash_secret
from tokenmill.store.usage import query_records

ACCOUNT_FIELDS = {
    "id",
    "name",
    "status",
    "created_at",
    "disabled_at",
    "currency",
    "credit_limit",
}
KEY_FIELDS = {
    "id",
    "account_id",
    "name",
    "prefix",
    "models",
    "created_at",
    "expires_at",
    "revoked_at",
}
USAGE_FIELDS = {
    "request_id",
    "account_id",
    "key_id",
    "model",
    "deployment",
    "engine",
    "endpoint",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "estimated",
    "status",
    "http_status",
    "error_type",
    "started_at",
    "ttft_ms",
    "duration_ms",
    "charge_nano",
    "loss_nano",
}
HELLO = [{"role": "user", "content": "hello there"}]


def admin_client(gateway: LiveGateway) -> httpx.Client:
    headers = {"Authorization": f"Bearer {gateway.admin_token}"}
    return httpx.Client(base_url=gateway.url + "/admin/v1", headers=headers, timeout=10)


@pytest.fixture
def admin(gateway: LiveGateway) -> Iterator[httpx.Client]:
    with admin_client(gateway) as client:
        yield client


@contextmanager
def read_only_gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiveGateway, httpx.Client]]:
    """A gateway shared by a class whose tests only read (or are refused, changing nothing)."""
    home = tmp_path_factory.mktemp("admin")
    url = f"sqlite:///{home / 'tokenmill.db'}"
    with live_gateway(url, gateway_config(None), home) as live, admin_client(live) as client:
        yield live, client


def create_account(admin: httpx.Client, name: str) -> dict[str, Any]:
    response = admin.post("/accounts", json={"name": name})
    assert response.status_code == 201, response.text
    account: dict[str, Any] = response.json()
    return account


def create_key(admin: httpx.Client, account: str, **fields: Any) -> dict[str, Any]:
    response = admin.post("/keys", json={"account": account, **fields})
    assert response.status_code == 201, response.text
    key: dict[str, Any] = response.json()
    return key


def models_status(gateway: LiveGateway, secret: str) -> int:
    headers = {"Authorization": f"Bearer {secret}"}
    return httpx.get(gateway.url + "/v1/models", headers=headers).status_code


class TestAccounts:
    def test_creating_an_account_answers_201_with_the_new_account(
        self, admin: httpx.Client
    ) -> None:
        """POST /accounts answers 201 with an active account and its id."""
        account = create_account(admin, "acme")
        assert set(account) == ACCOUNT_FIELDS
        assert account["id"].startswith("acct_")
        assert account["name"] == "acme"
        assert account["status"] == "active"
        assert account["disabled_at"] is None
        created = datetime.fromisoformat(account["created_at"])
        assert abs(created.timestamp() - time.time()) < 60

    def test_accounts_are_listed_and_shown_by_id_and_by_name(self, admin: httpx.Client) -> None:
        """The list holds every account; one is found by its id or its name."""
        acme = create_account(admin, "acme")
        other = create_account(admin, "other corp")
        listed = admin.get("/accounts")
        assert listed.status_code == 200
        assert {a["id"] for a in listed.json()} == {acme["id"], other["id"]}
        assert admin.get(f"/accounts/{acme['id']}").json() == acme
        assert admin.get("/accounts/other corp").json() == other

    def test_the_list_honours_its_limit(self, admin: httpx.Client) -> None:
        """?limit=1 gives one account, the oldest."""
        first = create_account(admin, "first")
        create_account(admin, "second")
        assert admin.get("/accounts", params={"limit": 1}).json() == [first]

    def test_disabling_and_enabling_an_account_flips_its_keys_at_once(
        self, gateway: LiveGateway, admin: httpx.Client
    ) -> None:
        """A disabled account's keys get 403 at once; enabled again, they work at once."""
        create_account(admin, "acme")
        secret = create_key(admin, "acme")["key"]
        disabled = admin.post("/accounts/acme/disable")
        assert disabled.status_code == 200, disabled.text
        assert disabled.json()["status"] == "disabled"
        assert disabled.json()["disabled_at"] is not None
        assert models_status(gateway, secret) == 403
        enabled = admin.post("/accounts/acme/enable")
        assert enabled.status_code == 200, enabled.text
        assert enabled.json()["status"] == "active"
        assert enabled.json()["disabled_at"] is None
        assert models_status(gateway, secret) == 200

    def test_a_duplicate_name_answers_409(self, admin: httpx.Client) -> None:
        """A second account with a taken name is a 409 in OpenAI's shape; the first stays."""
        first = create_account(admin, "acme")
        error = assert_openai_error(admin.post("/accounts", json={"name": "acme"}), 409, "name")
        assert error["code"] == "conflict"
        assert admin.get("/accounts").json() == [first]

    @pytest.mark.parametrize(
        "name",
        [
            pytest.param("", id="empty"),
            pytest.param(" acme", id="leading-space"),
            pytest.param("a/b", id="slash"),
            pytest.param("<script>", id="markup"),
            pytest.param("x" * 201, id="201-characters"),
            pytest.param(5, id="a-number"),
            pytest.param(None, id="null"),
        ],
    )
    def test_a_bad_name_answers_400_naming_the_field(self, admin: httpx.Client, name: Any) -> None:
        """A bad account name is a 400 whose param is 'name'; no account is made."""
        error = assert_openai_error(admin.post("/accounts", json={"name": name}), 400, "name")
        assert error["type"] == "invalid_request_error"
        assert admin.get("/accounts").json() == []

    def test_an_unknown_field_answers_400(self, admin: httpx.Client) -> None:
        """An account body with a field the API does not know is refused, not ignored."""
        response = admin.post("/accounts", json={"name": "acme", "balance": 10})
        assert_openai_error(response, 400, "balance")
        assert admin.get("/accounts").json() == []

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/accounts/nobody"),
            ("POST", "/accounts/nobody/disable"),
            ("POST", "/accounts/nobody/enable"),
        ],
    )
    def test_an_unknown_account_answers_404(
        self, admin: httpx.Client, method: str, path: str
    ) -> None:
        """Showing, disabling or enabling an account that does not exist is a 404."""
        error = assert_openai_error(admin.request(method, path), 404, "account")
        assert error["type"] == "not_found_error"


class TestKeys:
    def test_a_new_key_is_shown_once_and_works_at_once(
        self, gateway: LiveGateway, admin: httpx.Client
    ) -> None:
        """POST /keys answers the key itself (tm-, 128+ random bits), usable without waiting."""
        account = create_account(admin, "acme")
        made = create_key(admin, "acme", name="laptop")
        assert set(made) == KEY_FIELDS | {"key"}
        secret = made["key"]
        assert secret.startswith("tm-")
        # base64url: 6 bits a character, so 22 characters hold 128 bits
        assert len(secret) - len("tm-") >= 22
        assert made["prefix"] == secret[: len(made["prefix"])]
        assert len(made["prefix"]) < len(secret) - 16
        assert made["account_id"] == account["id"]
        assert made["name"] == "laptop"
        assert made["models"] is None
        assert made["revoked_at"] is None
        assert models_status(gateway, secret) == 200

    def test_two_keys_are_different(self, admin: httpx.Client) -> None:
        """Each key is random: two keys of one account differ."""
        create_account(admin, "acme")
        assert create_key(admin, "acme")["key"] != create_key(admin, "acme")["key"]

    def test_the_key_list_never_shows_a_key_or_its_hash(
        self, gateway: LiveGateway, admin: httpx.Client
    ) -> None:
        """GET /keys lists ids and prefixes, never the key nor its SHA-256."""
        create_account(admin, "acme")
        create_account(admin, "other")
        made = create_key(admin, "acme")
        create_key(admin, "other")
        everything = admin.get("/keys")
        assert everything.status_code == 200
        assert len(everything.json()) == 2
        listed = admin.get("/keys", params={"account": "acme"})
        assert [k["id"] for k in listed.json()] == [made["id"]]
        assert set(listed.json()[0]) == KEY_FIELDS
        for text in (everything.text, listed.text):
            assert made["key"] not in text
            assert hash_secret(made["key"]) not in text

    def test_a_revoked_key_is_refused_at_once(
        self, gateway: LiveGateway, admin: httpx.Client
    ) -> None:
        """After POST /keys/{id}/revoke the key gets 401 on its next request."""
        create_account(admin, "acme")
        made = create_key(admin, "acme")
        assert models_status(gateway, made["key"]) == 200
        revoked = admin.post(f"/keys/{made['id']}/revoke")
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["revoked_at"] is not None
        assert models_status(gateway, made["key"]) == 401
        assert admin.get("/keys").json()[0]["revoked_at"] is not None

    def test_revoking_an_unknown_key_answers_404(self, admin: httpx.Client) -> None:
        """Revoking a key id that does not exist is a 404."""
        assert_openai_error(admin.post("/keys/key_0000000000000000/revoke"), 404, "key_id")

    def test_an_allow_list_restricts_the_key(
        self, gateway: LiveGateway, admin: httpx.Client
    ) -> None:
        """A key made with models=[sim-chat] sees and uses only sim-chat."""
        create_account(admin, "acme")
        made = create_key(admin, "acme", models=["sim-chat"])
        assert made["models"] == ["sim-chat"]
        headers = {"Authorization": f"Bearer {made['key']}"}
        listed = httpx.get(gateway.url + "/v1/models", headers=headers).json()
        assert [m["id"] for m in listed["data"]] == ["sim-chat"]
        refused = httpx.post(
            gateway.url + "/v1/embeddings",
            headers=headers,
            json={"model": "sim-embed", "input": "hi"},
        )
        assert refused.status_code == 404  # as if it did not exist: the key learns nothing
        assert refused.json()["error"]["code"] == "model_not_found"

    def test_an_allow_list_with_an_unknown_model_answers_400(self, admin: httpx.Client) -> None:
        """A key for a model the gateway does not serve is refused; no key is made."""
        create_account(admin, "acme")
        response = admin.post("/keys", json={"account": "acme", "models": ["sim-chat", "gpt-9"]})
        error = assert_openai_error(response, 400, "models")
        assert "gpt-9" in error["message"]
        assert admin.get("/keys").json() == []

    @pytest.mark.parametrize(
        "expires_at",
        [
            pytest.param("2001-01-01T00:00:00Z", id="long-ago"),
            pytest.param(
                datetime.fromtimestamp(time.time() - 5, tz=UTC).isoformat(), id="seconds-ago"
            ),
        ],
    )
    def test_an_expiry_in_the_past_answers_400(self, admin: httpx.Client, expires_at: str) -> None:
        """A key that would be born expired is refused; no key is made."""
        create_account(admin, "acme")
        response = admin.post("/keys", json={"account": "acme", "expires_at": expires_at})
        assert_openai_error(response, 400, "expires_at")
        assert admin.get("/keys").json() == []

    def test_an_expiry_in_the_future_is_kept(self, admin: httpx.Client) -> None:
        """A future expires_at comes back as given (to the second)."""
        create_account(admin, "acme")
        made = create_key(admin, "acme", expires_at="2999-01-31T12:00:00Z")
        expires = datetime.fromisoformat(made["expires_at"])
        assert expires == datetime(2999, 1, 31, 12, tzinfo=UTC)

    def test_a_key_for_an_unknown_account_answers_404(self, admin: httpx.Client) -> None:
        """A key needs an existing account."""
        assert_openai_error(admin.post("/keys", json={"account": "nobody"}), 404, "account")
        assert admin.get("/keys").json() == []


class TestUsage:
    @pytest.fixture(scope="class")
    @classmethod
    def shared(
        cls, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[tuple[LiveGateway, httpx.Client]]:
        with read_only_gateway(tmp_path_factory) as pair:
            yield pair

    @pytest.fixture
    def gateway(self, shared: tuple[LiveGateway, httpx.Client]) -> LiveGateway:
        return shared[0]

    @pytest.fixture
    def admin(self, shared: tuple[LiveGateway, httpx.Client]) -> httpx.Client:
        return shared[1]

    @pytest.fixture(scope="class")
    @classmethod
    def traffic(cls, shared: tuple[LiveGateway, httpx.Client]) -> dict[str, Any]:
        """Requests by two accounts, three keys, two models, before and after ``middle``."""
        gateway, admin = shared
        create_account(admin, "acme")
        create_account(admin, "other")
        keys = {
            "a1": create_key(admin, "acme"),
            "a2": create_key(admin, "acme"),
            "o1": create_key(admin, "other"),
        }
        sent: list[tuple[str, str, str]] = []  # (request id, key name, model)

        def call(name: str, model: str) -> None:
            headers = {"Authorization": f"Bearer {keys[name]['key']}"}
            if model == "sim-embed":
                path, body = "/v1/embeddings", {"model": model, "input": "hello there"}
            else:
                path, body = "/v1/chat/completions", {"model": model, "messages": HELLO}
            answer = httpx.post(gateway.url + path, headers=headers, json=body)
            assert answer.status_code == 200, answer.text
            sent.append((answer.headers["x-request-id"], name, model))

        call("a1", "sim-chat")
        call("a2", "sim-embed")
        time.sleep(0.03)
        middle = datetime.now(tz=UTC)
        time.sleep(0.03)
        call("a1", "sim-chat")
        call("o1", "sim-chat")
        call("o1", "sim-embed")
        return {"keys": keys, "sent": sent, "middle": middle}

    def _ids(self, admin: httpx.Client, **params: Any) -> set[str]:
        response = admin.get("/usage", params=params)
        assert response.status_code == 200, response.text
        records = response.json()
        assert all(set(r) == USAGE_FIELDS for r in records), records
        ids = [r["request_id"] for r in records]
        assert len(ids) == len(set(ids))
        return set(ids)

    def test_every_request_is_listed_once(
        self, gateway: LiveGateway, admin: httpx.Client, traffic: dict[str, Any]
    ) -> None:
        """Unfiltered, the list holds exactly the requests made, as the store has them."""
        assert self._ids(admin) == {rid for rid, _, _ in traffic["sent"]}
        with gateway.db.connect() as connection:
            stored = {r.request_id: r for r in query_records(connection)}
        for record in admin.get("/usage").json():
            row = stored[record["request_id"]]
            assert record["prompt_tokens"] == row.prompt_tokens
            assert record["completion_tokens"] == row.completion_tokens
            assert record["key_id"] == row.key_id

    @pytest.mark.parametrize(
        ("params", "expected"),
        [
            pytest.param({"account": "acme"}, lambda key, model, late: key != "o1", id="account"),
            pytest.param({"key": "a1"}, lambda key, model, late: key == "a1", id="key"),
            pytest.param(
                {"model": "sim-embed"}, lambda key, model, late: model == "sim-embed", id="model"
            ),
            pytest.param({"since": "middle"}, lambda key, model, late: late, id="since"),
            pytest.param({"until": "middle"}, lambda key, model, late: not late, id="until"),
            pytest.param(
                {"account": "other", "model": "sim-chat", "since": "middle"},
                lambda key, model, late: key == "o1" and model == "sim-chat",
                id="account-model-since",
            ),
            pytest.param({"model": "sim-nothing"}, lambda key, model, late: False, id="no-match"),
        ],
    )
    def test_a_filter_returns_exactly_the_matching_records(
        self,
        admin: httpx.Client,
        traffic: dict[str, Any],
        params: dict[str, str],
        expected: Any,
    ) -> None:
        """Filters by account, key, model, since and until (and together) match exactly."""
        concrete = dict(params)
        if "key" in concrete:
            concrete["key"] = traffic["keys"][concrete["key"]]["id"]
        for bound in ("since", "until"):
            if bound in concrete:
                concrete[bound] = traffic["middle"].isoformat()
        want = {
            rid
            for index, (rid, key, model) in enumerate(traffic["sent"])
            if expected(key, model, index >= 2)
        }
        assert self._ids(admin, **concrete) == want

    def test_the_account_filter_takes_an_id_too(
        self, admin: httpx.Client, traffic: dict[str, Any]
    ) -> None:
        """?account= finds the account by id as well as by name."""
        account_id = traffic["keys"]["o1"]["account_id"]
        assert self._ids(admin, account=account_id) == self._ids(admin, account="other")
        assert len(self._ids(admin, account=account_id)) == 2

    def test_the_limit_keeps_the_newest(self, admin: httpx.Client, traffic: dict[str, Any]) -> None:
        """?limit=1 gives the newest record."""
        newest = max(admin.get("/usage").json(), key=lambda r: r["started_at"])
        limited = admin.get("/usage", params={"limit": 1}).json()
        assert len(limited) == 1
        assert limited[0]["started_at"] == newest["started_at"]

    @pytest.mark.parametrize(
        ("params", "param"),
        [
            pytest.param({"account": "nobody"}, "account", id="unknown-account"),
            pytest.param({"since": "yesterday"}, "since", id="since-not-a-time"),
            pytest.param({"until": "2026-13-01"}, "until", id="until-month-13"),
            pytest.param({"limit": 0}, "limit", id="limit-0"),
            pytest.param({"limit": "many"}, "limit", id="limit-not-a-number"),
        ],
    )
    def test_a_bad_filter_answers_4xx_naming_it(
        self, admin: httpx.Client, params: dict[str, Any], param: str
    ) -> None:
        """An unknown account is a 404, a malformed filter a 400; each names the parameter."""
        status = 404 if param == "account" else 400
        assert_openai_error(admin.get("/usage", params=params), status, param)


BAD_ADMIN_AUTH = [
    pytest.param(None, id="no-header"),
    pytest.param("Bearer", id="bearer-without-token"),
    pytest.param("Bearer tmadmin-wrong", id="wrong-token"),
    pytest.param("Basic {token}", id="basic-scheme"),
    pytest.param("{token}", id="token-without-scheme"),
    pytest.param("Bearer {token}x", id="token-with-extra-character"),
    pytest.param("Bearer {user_key}", id="a-user-api-key"),
]


class TestPrices:
    def test_a_price_takes_and_shows_a_cache_read_and_a_cache_write_price(
        self, admin: httpx.Client
    ) -> None:
        """cached_input and cache_write_input are kept apart from the input price, as text
        and as nano-units per million tokens, and listed as set."""
        body = {
            "model": "sim-chat",
            "input": "3.00",
            "output": "15",
            "cached_input": "0.30",
            "cache_write_input": "3.75",
        }
        made = admin.post("/prices", json=body)
        assert made.status_code == 201, made.text
        shown = made.json()
        assert (shown["cached_input"], shown["cache_write_input"]) == ("0.30", "3.75")
        assert shown["cached_input_nano_per_mtok"] == 300_000_000
        assert shown["cache_write_input_nano_per_mtok"] == 3_750_000_000
        listed = [p for p in admin.get("/prices").json() if p["model"] == "sim-chat"]
        assert listed == [shown]

    def test_a_price_without_a_cache_write_price_writes_at_the_input_price(
        self, admin: httpx.Client
    ) -> None:
        """No cache_write_input: a cache write pays the input price."""
        made = admin.post("/prices", json={"model": "fake", "input": "0.20"})
        assert made.status_code == 201, made.text
        assert made.json()["cache_write_input_nano_per_mtok"] == 200_000_000

    def test_a_bad_cache_write_price_answers_400_naming_it(self, admin: httpx.Client) -> None:
        """Finer than a nano-unit: 400 with param cache_write_input, and no price is added."""
        response = admin.post(
            "/prices",
            json={"model": "fake-slow", "input": "1", "cache_write_input": "0.0000000001"},
        )
        assert_openai_error(response, 400, "cache_write_input")
        assert not [p for p in admin.get("/prices").json() if p["model"] == "fake-slow"]


class TestAdminAuthentication:
    @pytest.fixture(scope="class")
    @classmethod
    def shared(
        cls, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[tuple[LiveGateway, httpx.Client, dict[str, Any]]]:
        with read_only_gateway(tmp_path_factory) as (live, admin):
            create_account(admin, "acme")
            yield live, admin, create_key(admin, "acme")

    @pytest.mark.parametrize("authorization", BAD_ADMIN_AUTH)
    def test_a_missing_or_wrong_admin_token_gets_401_and_changes_nothing(
        self, shared: tuple[LiveGateway, httpx.Client, dict[str, Any]], authorization: str | None
    ) -> None:
        """Every admin route refuses a bad token with 401; no account, key or status changes."""
        gateway, admin, made = shared
        headers = {}
        if authorization is not None:
            headers["Authorization"] = authorization.format(
                token=gateway.admin_token, user_key=made["key"]
            )
        attempts = [
            ("GET", "/accounts", None),
            ("POST", "/accounts", {"name": "intruder"}),
            ("GET", "/accounts/acme", None),
            ("POST", "/accounts/acme/disable", None),
            ("POST", "/accounts/acme/enable", None),
            ("GET", "/keys", None),
            ("POST", "/keys", {"account": "acme"}),
            ("POST", f"/keys/{made['id']}/revoke", None),
            ("GET", "/usage", None),
        ]
        accounts_before = admin.get("/accounts").json()
        keys_before = admin.get("/keys").json()
        with httpx.Client(base_url=gateway.url + "/admin/v1", headers=headers) as intruder:
            for method, path, body in attempts:
                response = intruder.request(method, path, json=body)
                error = assert_openai_error(response, 401)
                assert error["type"] == "authentication_error", (method, path)
                assert "key" not in response.json()
        assert admin.get("/accounts").json() == accounts_before
        assert admin.get("/keys").json() == keys_before
        assert models_status(gateway, made["key"]) == 200


class TestOpenAPI:
    def test_the_openapi_spec_is_served_with_every_resource(self, gateway: LiveGateway) -> None:
        """/admin/v1/openapi.json is JSON with paths for accounts, keys and usage."""
        response = httpx.get(gateway.url + "/admin/v1/openapi.json")
        assert response.status_code == 200
        spec = response.json()
        assert spec["openapi"].startswith("3.")
        for path in ("/accounts", "/keys", "/usage"):
            assert path in spec["paths"], sorted(spec["paths"])
        assert "post" in spec["paths"]["/accounts"]
        assert "post" in spec["paths"]["/keys"]
        assert "get" in spec["paths"]["/usage"]

    def test_no_route_answers_500(self, database_url: str, tmp_path: Path) -> None:
        """Every route of the spec, fed odd path parts, queries and bodies, gets a 2xx or 4xx."""
        with live_gateway(database_url, gateway_config(None), tmp_path) as live:
            headers = {"Authorization": f"Bearer {live.admin_token}"}
            with httpx.Client(base_url=live.url + "/admin/v1", headers=headers) as admin:
                create_account(admin, "acme")
                create_key(admin, "acme")
                spec = admin.get("/openapi.json").json()
                seen = sum(
                    _probe(admin, method.upper(), template, "requestBody" in operation)
                    for template, methods in spec["paths"].items()
                    for method, operation in methods.items()
                )
        assert seen > 100


ODD_PATH_PARTS = ["acme", "nobody", "%00", "..", "a" * 300, "key_0", "%F0%9F%98%80", "%25"]
ODD_QUERIES: list[dict[str, Any]] = [
    {},
    {"limit": "-1"},
    {"limit": "99999999999999999999"},
    {"since": "0"},
    {"until": "garbage"},
    {"account": "%"},
    {"key": "'"},
    {"model": "\x00"},
]
ODD_BODIES: list[bytes] = [
    b"",
    b"{}",
    b"[]",
    b'"x"',
    b"null",
    b"{not json",
    b'{"name": {"a": 1}}',
    b'{"name": "ok\\u0000name"}',
    b'{"account": "acme", "models": "sim-chat"}',
    b'{"account": "acme", "expires_at": "soon"}',
    b'{"account": "acme", "expires_at": 1e300}',
    b'{"account": "acme", "expires_at": "99999-01-01"}',
    b'{"account": "acme", "models": [1, 2]}',
    b'{"account": "\\u0000"}',
    b"\xff\xfe",
]


def _probe(admin: httpx.Client, method: str, template: str, takes_body: bool) -> int:
    """Send every odd variant of one route; assert no 5xx; the number of requests sent."""
    paths = [template]
    if "{" in template:
        start, end = template.index("{"), template.index("}")
        paths = [template[:start] + part + template[end + 1 :] for part in ODD_PATH_PARTS]
    sent = 0
    for path in paths:
        for query, body in _variants(method, takes_body):
            response = admin.request(
                method,
                path,
                params=query,
                content=body,
                headers={"Content-Type": "application/json"},
            )
            sent += 1
            context = (method, path, query, body, response.text[:200])
            assert response.status_code < 500, context
            if response.status_code >= 400:
                assert set(response.json()) == {"error"}, context
    return sent


def _variants(method: str, takes_body: bool) -> list[tuple[dict[str, Any], bytes]]:
    if method == "GET":
        return [(query, b"") for query in ODD_QUERIES]
    return [({}, body) for body in (ODD_BODIES if takes_body else [b"", b"{}"])]
