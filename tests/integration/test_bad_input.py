"""Bad input against the live gateway: a clear 4xx in OpenAI's error shape, and nothing
changed (no usage record, nothing sent upstream). Then fuzzing: no input gets a 500."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import strategies
from tests.assertions import assert_anthropic_error, assert_openai_error
from tests.conftest import LiveGateway, gateway_config, live_gateway
from tokenmill.access import service
from tokenmill.store.usage import query_records
from tokenmill.testing import FakeUpstreamState

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
POST_PATHS = (CHAT, COMPLETIONS, EMBEDDINGS)
MESSAGES = "/v1/messages"
RESPONSES = "/v1/responses"
ANTHROPIC_PATHS = (MESSAGES, "/v1/messages/count_tokens")
HELLO = [{"role": "user", "content": "hello there"}]
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def usage_count(live: LiveGateway) -> int:
    with live.db.connect() as connection:
        return len(query_records(connection, limit=100_000))


@dataclass
class Shared:
    """One gateway for the whole table (bad input changes nothing, so cases cannot interfere)."""

    live: LiveGateway
    upstream: FakeUpstreamState
    keys: dict[str, str]
    client: httpx.Client


def _wait_for_status(live: LiveGateway, secret: str, status: int, within_s: float = 2.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        answer = httpx.get(live.url + "/v1/models", headers={"Authorization": f"Bearer {secret}"})
        if answer.status_code == status:
            return
        assert time.monotonic() < deadline, f"still {answer.status_code}, not {status}"
        time.sleep(0.02)


def _make_keys(live: LiveGateway) -> dict[str, str]:
    """A good key and one of every kind of bad key, each already seen by the gateway."""
    keys = {"good": live.new_key("acme")[0], "unknown": "tm-" + "x" * 32}
    keys["restricted"] = live.new_key("acme", models=["sim-chat"])[0]
    keys["revoked"], revoked_id, _ = live.new_key("acme", name="gone")
    service.revoke_key(live.db, revoked_id)
    live.wait_for_key(keys["revoked"], known=False)
    keys["disabled"] = live.new_key("suspended")[0]
    service.set_account_status(live.db, "suspended", "disabled")
    _wait_for_status(live, keys["disabled"], 403)
    # Last, so that its short life is spent waiting here only once.
    expires_at_ms = time.time_ns() // 1_000_000 + 1500
    keys["expired"] = live.new_key("acme", name="short", expires_at_ms=expires_at_ms)[0]
    time.sleep(max(0.0, (expires_at_ms + 50) / 1000 - time.time()))
    return keys


@pytest.fixture(scope="module")
def shared(
    fake_upstream: tuple[str, FakeUpstreamState], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shared]:
    home = tmp_path_factory.mktemp("bad-input")
    url = f"sqlite:///{home / 'tokenmill.db'}"
    with (
        live_gateway(url, gateway_config(fake_upstream[0]), home) as live,
        httpx.Client(base_url=live.url, timeout=10) as client,
    ):
        yield Shared(live, fake_upstream[1], _make_keys(live), client)


def balance_of(live: LiveGateway, account: str = "acme") -> dict[str, Any]:
    """The account's balance as the admin API reports it (balance and holds)."""
    response = httpx.get(
        f"{live.url}/admin/v1/accounts/{account}/balance",
        headers={"Authorization": f"Bearer {live.admin_token}"},
    )
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def post_and_check_nothing_changed(
    shared: Shared, method: str, path: str, headers: dict[str, str], content: bytes
) -> httpx.Response:
    """Send one request; assert it left no usage record, sent nothing upstream and left the
    balance as it was."""
    records_before = usage_count(shared.live)
    upstream_before = len(shared.upstream.requests)
    balance_before = balance_of(shared.live)
    response = shared.client.request(method, path, headers=headers, content=content)
    assert usage_count(shared.live) == records_before
    assert len(shared.upstream.requests) == upstream_before
    assert balance_of(shared.live) == balance_before
    return response


def chat(**fields: Any) -> dict[str, Any]:
    """A chat body for the upstream model (bad input must never reach it), fields replaced."""
    return {"model": "fake", "messages": HELLO, **fields}


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": "fake", "prompt": "hello there", **fields}


def embedding(**fields: Any) -> dict[str, Any]:
    return {"model": "fake-embed", "input": "hello there", **fields}


def message(**fields: Any) -> dict[str, Any]:
    return chat(messages=[{"role": "user", "content": "hi", **fields}])


# (path, body: a dict sent as JSON or raw bytes, status, param)
BAD_BODIES = [
    pytest.param(CHAT, b'{"model": "fake", "messages": [', 400, None, id="malformed-json"),
    pytest.param(CHAT, b"", 400, None, id="empty-body"),
    pytest.param(CHAT, b'[{"model": "fake"}]', 400, None, id="json-array"),
    pytest.param(CHAT, b'"hello"', 400, None, id="json-string"),
    pytest.param(CHAT, b"\xff\xfe{}", 400, None, id="not-utf8"),
    pytest.param(CHAT, chat(model=7), 400, "model", id="model-not-a-string"),
    pytest.param(CHAT, {"messages": HELLO}, 400, "model", id="model-missing"),
    pytest.param(CHAT, chat(messages="hello"), 400, "messages", id="messages-not-a-list"),
    pytest.param(CHAT, chat(messages=[]), 400, "messages", id="messages-empty"),
    pytest.param(CHAT, chat(messages=["hello"]), 400, "messages.[0]", id="message-not-object"),
    pytest.param(
        CHAT, chat(messages=[{"content": "hi"}]), 400, "messages.[0].role", id="message-no-role"
    ),
    pytest.param(CHAT, message(role="wizard"), 400, "messages.[0].role", id="role-unknown"),
    pytest.param(CHAT, message(role=["user"]), 400, "messages.[0].role", id="role-a-list"),
    pytest.param(CHAT, message(role={"user": 1}), 400, "messages.[0].role", id="role-an-object"),
    pytest.param(CHAT, message(content=5), 400, "messages.[0].content", id="content-a-number"),
    pytest.param(
        CHAT,
        chat(messages=[{"role": "user"}]),
        400,
        "messages.[0].content",
        id="content-missing",
    ),
    pytest.param(
        CHAT,
        chat(messages=[*HELLO, {"role": "user", "content": {"text": "hi"}}]),
        400,
        "messages.[1].content",
        id="second-content-an-object",
    ),
    pytest.param(CHAT, chat(stream="yes"), 400, "stream", id="stream-yes"),
    pytest.param(
        CHAT,
        chat(stream_options={"include_usage": True}),
        400,
        "stream_options",
        id="stream-options-without-stream",
    ),
    pytest.param(
        CHAT,
        chat(stream=True, stream_options="usage"),
        400,
        "stream_options",
        id="stream-options-a-string",
    ),
    pytest.param(
        CHAT,
        chat(stream=True, stream_options={"include_usage": "yes"}),
        400,
        "stream_options.include_usage",
        id="include-usage-yes",
    ),
    pytest.param(CHAT, chat(max_tokens=0), 400, "max_tokens", id="max-tokens-0"),
    pytest.param(CHAT, chat(max_tokens=-1), 400, "max_tokens", id="max-tokens-minus-1"),
    pytest.param(CHAT, chat(max_tokens="10"), 400, "max_tokens", id="max-tokens-a-string"),
    pytest.param(CHAT, chat(max_tokens=1.5), 400, "max_tokens", id="max-tokens-1.5"),
    pytest.param(CHAT, chat(max_tokens=True), 400, "max_tokens", id="max-tokens-true"),
    pytest.param(
        CHAT, chat(max_tokens=131_073), 400, "max_tokens", id="max-tokens-over-the-context"
    ),
    pytest.param(
        CHAT,
        chat(max_completion_tokens=0),
        400,
        "max_completion_tokens",
        id="max-completion-tokens-0",
    ),
    pytest.param(CHAT, chat(n=2), 400, "n", id="n-2"),
    pytest.param(CHAT, chat(stop=["a", "b", "c", "d", "e"]), 400, "stop", id="stop-5-entries"),
    pytest.param(CHAT, chat(stop=""), 400, "stop", id="stop-empty-string"),
    pytest.param(CHAT, chat(stop=["a", ""]), 400, "stop", id="stop-an-empty-entry"),
    pytest.param(CHAT, chat(stop=5), 400, "stop", id="stop-a-number"),
    pytest.param(CHAT, chat(temperature="hot"), 400, "temperature", id="temperature-hot"),
    pytest.param(CHAT, chat(temperature=True), 400, "temperature", id="temperature-true"),
    pytest.param(CHAT, chat(top_p=[1]), 400, "top_p", id="top-p-a-list"),
    pytest.param(CHAT, chat(seed=1.5), 400, "seed", id="seed-1.5"),
    pytest.param(CHAT, chat(user=5), 400, "user", id="user-a-number"),
    pytest.param(CHAT, chat(user="u" * 257), 400, "user", id="user-too-long"),
    pytest.param(CHAT, chat(temperature=2.5), 400, "temperature", id="temperature-2.5"),
    pytest.param(CHAT, chat(temperature=-1), 400, "temperature", id="temperature-minus-1"),
    pytest.param(CHAT, chat(top_p=1.5), 400, "top_p", id="top-p-1.5"),
    pytest.param(
        CHAT, chat(presence_penalty=-2.5), 400, "presence_penalty", id="presence-penalty-minus-2.5"
    ),
    pytest.param(
        CHAT, chat(frequency_penalty=3), 400, "frequency_penalty", id="frequency-penalty-3"
    ),
    pytest.param(CHAT, chat(logit_bias={"50256": 150}), 400, "logit_bias", id="logit-bias-150"),
    pytest.param(
        CHAT, chat(logit_bias={"hello": 1}), 400, "logit_bias", id="logit-bias-a-word-key"
    ),
    pytest.param(
        CHAT,
        chat(logit_bias={str(token): 1 for token in range(301)}),
        400,
        "logit_bias",
        id="logit-bias-301-entries",
    ),
    pytest.param(
        CHAT, chat(logprobs=True, top_logprobs=21), 400, "top_logprobs", id="top-logprobs-21"
    ),
    pytest.param(
        CHAT, chat(top_logprobs=2), 400, "top_logprobs", id="top-logprobs-without-logprobs"
    ),
    pytest.param(CHAT, chat(seed=True), 400, "seed", id="seed-true"),
    pytest.param(CHAT, chat(seed=2**63), 400, "seed", id="seed-over-int64"),
    pytest.param(CHAT, chat(n=0), 400, "n", id="n-0"),
    pytest.param(CHAT, chat(n=129), 400, "n", id="n-129"),
    pytest.param(CHAT, chat(n=True), 400, "n", id="n-true"),
    pytest.param(
        CHAT, chat(metadata={"k": "v" * 513}), 400, "metadata", id="metadata-value-too-long"
    ),
    pytest.param(CHAT, chat(tools={"type": "function"}), 400, "tools", id="tools-an-object"),
    pytest.param(
        CHAT, chat(response_format="json"), 400, "response_format", id="response-format-a-string"
    ),
    pytest.param(CHAT, chat(logprobs=1), 400, "logprobs", id="chat-logprobs-1"),
    pytest.param(COMPLETIONS, completion(logprobs=6), 400, "logprobs", id="logprobs-6"),
    pytest.param(COMPLETIONS, completion(logprobs=True), 400, "logprobs", id="logprobs-true"),
    pytest.param(COMPLETIONS, completion(best_of=21), 400, "best_of", id="best-of-21"),
    pytest.param(COMPLETIONS, completion(suffix=5), 400, "suffix", id="suffix-a-number"),
    pytest.param(
        COMPLETIONS, completion(temperature=2.5), 400, "temperature", id="completion-temp-2.5"
    ),
    pytest.param(EMBEDDINGS, embedding(user="u" * 257), 400, "user", id="embedding-user-long"),
    pytest.param(COMPLETIONS, completion(prompt=5), 400, "prompt", id="prompt-a-number"),
    pytest.param(COMPLETIONS, {"model": "fake"}, 400, "prompt", id="prompt-missing"),
    pytest.param(COMPLETIONS, completion(prompt=[]), 400, "prompt", id="prompt-empty-list"),
    pytest.param(COMPLETIONS, completion(prompt=["a", "b"]), 400, "prompt", id="two-prompts"),
    pytest.param(COMPLETIONS, completion(echo=True), 400, "echo", id="echo"),
    pytest.param(COMPLETIONS, completion(best_of=2), 400, "best_of", id="best-of-2"),
    pytest.param(
        COMPLETIONS, completion(max_tokens=0), 400, "max_tokens", id="completion-max-tokens-0"
    ),
    pytest.param(EMBEDDINGS, embedding(input=[]), 400, "input", id="input-empty-list"),
    pytest.param(EMBEDDINGS, embedding(input=""), 400, "input", id="input-empty-string"),
    pytest.param(EMBEDDINGS, embedding(input=[[]]), 400, "input", id="input-empty-token-array"),
    pytest.param(EMBEDDINGS, embedding(input=None), 400, "input", id="input-missing"),
    pytest.param(EMBEDDINGS, embedding(input=["a", 1]), 400, "input", id="input-mixed"),
    pytest.param(EMBEDDINGS, embedding(input=[-1]), 400, "input", id="input-negative-token"),
    pytest.param(
        EMBEDDINGS,
        embedding(encoding_format="hex"),
        400,
        "encoding_format",
        id="encoding-format-hex",
    ),
    pytest.param(EMBEDDINGS, embedding(dimensions=0), 400, "dimensions", id="dimensions-0"),
    pytest.param(
        EMBEDDINGS, embedding(dimensions="8"), 400, "dimensions", id="dimensions-a-string"
    ),
    pytest.param(CHAT, chat(model="gpt-nope"), 404, "model", id="unknown-model-chat"),
    pytest.param(
        EMBEDDINGS, embedding(model="gpt-nope"), 404, "model", id="unknown-model-embeddings"
    ),
    pytest.param(EMBEDDINGS, embedding(model="fake"), 400, "model", id="chat-model-embeddings"),
    pytest.param(CHAT, chat(model="fake-embed"), 400, "model", id="embedding-model-chat"),
    pytest.param(
        COMPLETIONS,
        completion(model="fake-embed"),
        400,
        "model",
        id="embedding-model-completions",
    ),
]


class TestBadBodies:
    @pytest.mark.parametrize(("path", "body", "status", "param"), BAD_BODIES)
    def test_a_bad_body_gets_a_clear_error_and_changes_nothing(
        self, shared: Shared, path: str, body: dict[str, Any] | bytes, status: int, param: str
    ) -> None:
        """Each bad body gets its exact status and an OpenAI error naming the bad field."""
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        headers = {
            "Authorization": f"Bearer {shared.keys['good']}",
            "Content-Type": "application/json",
        }
        response = post_and_check_nothing_changed(shared, "POST", path, headers, content)
        error = assert_openai_error(response, status, param)
        if status == 404:
            assert error["code"] == "model_not_found"
        else:
            assert error["type"] == "invalid_request_error"

    def test_a_valid_body_on_the_same_gateway_is_metered(self, shared: Shared) -> None:
        """The control case: a good request does write a record, so the checks above can fail."""
        before = usage_count(shared.live)
        response = shared.client.post(
            CHAT,
            headers={"Authorization": f"Bearer {shared.keys['good']}"},
            json=chat(max_tokens=2),
        )
        assert response.status_code == 200, response.text
        assert usage_count(shared.live) == before + 1


def anthropic_message(**fields: Any) -> dict[str, Any]:
    return {"model": "fake", "max_tokens": 8, "messages": HELLO, **fields}


def response_request(**fields: Any) -> dict[str, Any]:
    return {"model": "fake", "input": "hello there", "max_output_tokens": 8, **fields}


WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search"}
# (body, status, Anthropic error type, a word the message must contain)
BAD_MESSAGES = [
    pytest.param(b'{"model": "fake"', 400, "invalid_request_error", "JSON", id="malformed-json"),
    pytest.param(
        {"model": "fake", "messages": HELLO}, 400, "invalid_request_error", "max_tokens",
        id="no-max-tokens",
    ),
    pytest.param(
        anthropic_message(messages=[]), 400, "invalid_request_error", "messages",
        id="no-messages",
    ),
    pytest.param(
        anthropic_message(tools=[WEB_SEARCH]), 400, "invalid_request_error", "tools",
        id="server-tool",
    ),
    pytest.param(
        anthropic_message(thinking={"type": "enabled", "budget_tokens": 10}), 400,
        "invalid_request_error", "budget_tokens", id="thinking-budget-below-1024",
    ),
    pytest.param(
        anthropic_message(temperature=1.5), 400, "invalid_request_error", "temperature",
        id="temperature-above-1",
    ),
    pytest.param(
        anthropic_message(model="no-such-model"), 404, "not_found_error", "no-such-model",
        id="unknown-model",
    ),
]  # fmt: skip
# (body, status, param)
BAD_RESPONSES = [
    pytest.param(response_request(input=[]), 400, "input", id="no-input"),
    pytest.param(
        response_request(tools=[{"type": "web_search"}]), 400, "tools.[0].type",
        id="built-in-tool",
    ),
    pytest.param(
        response_request(input=[{"type": "computer_call", "id": "x"}]), 400, "input.[0].type",
        id="unknown-item",
    ),
    pytest.param(
        response_request(previous_response_id="resp_nothing"), 400, "previous_response_id",
        id="unknown-previous-response",
    ),
    pytest.param(response_request(background=True), 400, "background", id="background"),
    pytest.param(response_request(model="no-such-model"), 404, "model", id="unknown-model"),
]  # fmt: skip


class TestBadBodiesOnEverySurface:
    @pytest.mark.parametrize(("body", "status", "kind", "word"), BAD_MESSAGES)
    def test_a_bad_messages_body_gets_anthropics_error_and_changes_nothing(
        self, shared: Shared, body: dict[str, Any] | bytes, status: int, kind: str, word: str
    ) -> None:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        headers = {"x-api-key": shared.keys["good"], "anthropic-version": "2023-06-01"}
        response = post_and_check_nothing_changed(shared, "POST", MESSAGES, headers, content)
        assert word in assert_anthropic_error(response, status, kind)

    @pytest.mark.parametrize(("body", "status", "param"), BAD_RESPONSES)
    def test_a_bad_responses_body_gets_openais_error_and_changes_nothing(
        self, shared: Shared, body: dict[str, Any], status: int, param: str
    ) -> None:
        headers = {"Authorization": f"Bearer {shared.keys['good']}"}
        content = orjson.dumps(body)
        response = post_and_check_nothing_changed(shared, "POST", RESPONSES, headers, content)
        error = assert_openai_error(response, status, param)
        if param == "previous_response_id":
            assert error["code"] == "previous_response_not_found"

    def test_a_bad_key_on_messages_gets_anthropics_401(self, shared: Shared) -> None:
        headers = {"x-api-key": shared.keys["revoked"], "anthropic-version": "2023-06-01"}
        content = orjson.dumps(anthropic_message())
        response = post_and_check_nothing_changed(shared, "POST", MESSAGES, headers, content)
        assert_anthropic_error(response, 401, "authentication_error")

    def test_a_wrong_method_on_messages_gets_anthropics_405(self, shared: Shared) -> None:
        headers = {"x-api-key": shared.keys["good"]}
        response = post_and_check_nothing_changed(shared, "GET", MESSAGES, headers, b"")
        assert_anthropic_error(response, 405, "invalid_request_error")
        assert response.headers["allow"] == "POST"

    def test_valid_bodies_on_the_same_gateway_are_metered(self, shared: Shared) -> None:
        """The control case: good Messages and Responses requests do write records."""
        before = usage_count(shared.live)
        key = shared.keys["good"]
        answered = shared.client.post(
            MESSAGES, headers={"x-api-key": key}, json=anthropic_message()
        )
        assert answered.status_code == 200, answered.text
        headers = {"Authorization": f"Bearer {key}"}
        answered = shared.client.post(RESPONSES, headers=headers, json=response_request())
        assert answered.status_code == 200, answered.text
        assert usage_count(shared.live) == before + 2


# The Authorization header; {good}, {revoked}, ... stand for the keys made by _make_keys.
BAD_AUTH = [
    pytest.param(None, 401, "missing_api_key", id="no-header"),
    pytest.param("", 401, "missing_api_key", id="empty-header"),
    pytest.param("Bearer", 401, "missing_api_key", id="bearer-without-key"),
    pytest.param("Basic dXNlcjpwYXNz", 401, "missing_api_key", id="basic-scheme"),
    pytest.param("{good}", 401, "missing_api_key", id="key-without-scheme"),
    pytest.param("Bearer {unknown}", 401, "invalid_api_key", id="unknown-key"),
    pytest.param("Bearer {good}x", 401, "invalid_api_key", id="key-with-extra-character"),
    pytest.param("Bearer {revoked}", 401, "invalid_api_key", id="revoked-key"),
    pytest.param("Bearer {expired}", 401, "expired_api_key", id="expired-key"),
    pytest.param("Bearer {disabled}", 403, "account_disabled", id="disabled-account"),
    pytest.param("Bearer {restricted}", 404, "model_not_found", id="model-not-allowed"),
]


class TestBadKeys:
    @pytest.mark.parametrize(("authorization", "status", "code"), BAD_AUTH)
    def test_a_bad_key_is_refused_before_anything_happens(
        self, shared: Shared, authorization: str | None, status: int, code: str
    ) -> None:
        """A missing, malformed, unknown, revoked, expired, disabled or restricted key."""
        headers = {"Content-Type": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization.format(**shared.keys)
        response = post_and_check_nothing_changed(
            shared, "POST", CHAT, headers, orjson.dumps(chat(max_tokens=2))
        )
        param = "model" if code == "model_not_found" else None
        assert assert_openai_error(response, status, param)["code"] == code

    def test_a_restricted_key_still_uses_its_allowed_model(self, shared: Shared) -> None:
        """The control case for the allow-list: the listed model answers."""
        response = httpx.post(
            shared.live.url + CHAT,
            headers={"Authorization": f"Bearer {shared.keys['restricted']}"},
            json={"model": "sim-chat", "messages": HELLO, "max_tokens": 2},
        )
        assert response.status_code == 200, response.text


def headers_but_request_ids(response: httpx.Response) -> dict[str, str]:
    return {
        name: value
        for name, value in response.headers.items()
        if name not in ("x-request-id", "date")
    }


class TestBadRoutes:
    @pytest.mark.parametrize(
        ("method", "path", "allow"),
        [
            pytest.param("GET", CHAT, "POST", id="get-chat"),
            pytest.param("GET", EMBEDDINGS, "POST", id="get-embeddings"),
            pytest.param("PUT", COMPLETIONS, "POST", id="put-completions"),
            pytest.param("DELETE", "/v1/models", "GET, HEAD", id="delete-models"),
            pytest.param("POST", "/v1/models", "GET, HEAD", id="post-models"),
            pytest.param("DELETE", "/v1/models/sim-chat", "GET, HEAD", id="delete-a-model"),
            pytest.param("POST", "/healthz", "GET, HEAD", id="post-healthz"),
        ],
    )
    def test_a_wrong_method_gets_405_with_allow_in_openais_shape(
        self, shared: Shared, method: str, path: str, allow: str
    ) -> None:
        """A method the path does not serve is a 405 naming the methods it does, in Allow."""
        headers = {"Authorization": f"Bearer {shared.keys['good']}"}
        response = post_and_check_nothing_changed(
            shared, method, path, headers, orjson.dumps(chat())
        )
        assert assert_openai_error(response, 405)["code"] == "method_not_allowed"
        assert response.headers["allow"] == allow
        assert method in response.json()["error"]["message"]

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            pytest.param("POST", "/v1/chat/completion", id="unknown-path-post"),
            pytest.param("GET", "/v2/models", id="unknown-path-get"),
        ],
    )
    def test_an_unknown_path_gets_404_in_openais_shape(
        self, shared: Shared, method: str, path: str
    ) -> None:
        """A path the gateway does not have is a 404, whatever the method."""
        headers = {"Authorization": f"Bearer {shared.keys['good']}"}
        response = post_and_check_nothing_changed(
            shared, method, path, headers, orjson.dumps(chat())
        )
        assert_openai_error(response, 404)


# (method, path, body maker or None, a model the restricted key may not use). Each unknown
# twin is "nope" plus the same tail: the same length, so even Content-Length must match.
HIDDEN_MODEL_ROUTES = [
    pytest.param("POST", CHAT, chat, "fake", id="chat"),
    pytest.param("POST", COMPLETIONS, completion, "fake", id="completions"),
    pytest.param("POST", EMBEDDINGS, embedding, "fake-embed", id="embeddings"),
    pytest.param("GET", "/v1/models/{model}", None, "fake", id="show-model"),
]


class TestHiddenModels:
    def _ask(
        self, shared: Shared, method: str, path: str, body_of: Any, model: str, **fields: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {shared.keys['restricted']}"}
        content = b"" if body_of is None else orjson.dumps(body_of(model=model, **fields))
        return post_and_check_nothing_changed(
            shared, method, path.format(model=model), headers, content
        )

    def _assert_same_answer(
        self, hidden: httpx.Response, unknown: httpx.Response, model: str
    ) -> None:
        """Status, headers and body alike; the body less the name each request sent."""
        assert_openai_error(hidden, 404, "model")
        assert unknown.status_code == hidden.status_code
        assert headers_but_request_ids(hidden) == headers_but_request_ids(unknown)
        twin = "nope" + model[4:]
        assert hidden.content == unknown.content.replace(twin.encode(), model.encode())

    @pytest.mark.parametrize(("method", "path", "body_of", "model"), HIDDEN_MODEL_ROUTES)
    def test_a_model_the_key_may_not_use_is_answered_as_one_that_does_not_exist(
        self, shared: Shared, method: str, path: str, body_of: Any, model: str
    ) -> None:
        """The same 404, byte for byte but the request id, as for a model that is not there."""
        hidden = self._ask(shared, method, path, body_of, model)
        unknown = self._ask(shared, method, path, body_of, "nope" + model[4:])
        assert hidden.json()["error"]["code"] == "model_not_found"
        self._assert_same_answer(hidden, unknown, model)

    @pytest.mark.parametrize(
        ("path", "body_of", "model", "fields"),
        [
            pytest.param(CHAT, chat, "fake", {"temperature": 9}, id="bad-temperature"),
            pytest.param(CHAT, chat, "fake", {"messages": []}, id="no-messages"),
            pytest.param(EMBEDDINGS, embedding, "fake", {}, id="chat-model-on-embeddings"),
        ],
    )
    def test_a_bad_field_does_not_reveal_a_model_the_key_may_not_use(
        self, shared: Shared, path: str, body_of: Any, model: str, fields: dict[str, Any]
    ) -> None:
        """A hidden model with a bad field still gets the unknown model's 404, not a 400."""
        hidden = self._ask(shared, "POST", path, body_of, model, **fields)
        unknown = self._ask(shared, "POST", path, body_of, "nope" + model[4:], **fields)
        self._assert_same_answer(hidden, unknown, model)


class TestOversizedBodies:
    @pytest.fixture
    def small(
        self, fake_upstream: tuple[str, FakeUpstreamState], tmp_path: Path
    ) -> Iterator[Shared]:
        config = gateway_config(fake_upstream[0], request_body_bytes_max=1024)
        with (
            live_gateway(f"sqlite:///{tmp_path / 'small.db'}", config, tmp_path) as live,
            httpx.Client(base_url=live.url, timeout=10) as client,
        ):
            yield Shared(live, fake_upstream[1], {"good": live.new_key()[0]}, client)

    def _body(self, size: int) -> bytes:
        body = orjson.dumps(chat(messages=[{"role": "user", "content": "x" * size}]))
        return body

    def test_a_body_over_the_limit_gets_413(self, small: Shared) -> None:
        """A Content-Length over request_body_bytes_max is refused with 413."""
        headers = {"Authorization": f"Bearer {small.keys['good']}"}
        response = post_and_check_nothing_changed(small, "POST", CHAT, headers, self._body(2000))
        assert assert_openai_error(response, 413)["code"] == "request_too_large"

    def test_a_chunked_body_over_the_limit_gets_413(self, small: Shared) -> None:
        """A body without Content-Length is counted as it arrives and refused past the limit."""
        body = self._body(3000)
        records_before = usage_count(small.live)
        upstream_before = len(small.upstream.requests)
        response = httpx.post(
            small.live.url + CHAT,
            headers={"Authorization": f"Bearer {small.keys['good']}"},
            content=iter([body[i : i + 256] for i in range(0, len(body), 256)]),
        )
        assert "content-length" not in response.request.headers
        assert assert_openai_error(response, 413)["code"] == "request_too_large"
        assert usage_count(small.live) == records_before
        assert len(small.upstream.requests) == upstream_before

    def test_a_body_just_under_the_limit_is_served(self, small: Shared) -> None:
        """The control case: the same request under the limit answers 200."""
        body = self._body(800)
        assert len(body) <= 1024
        response = httpx.post(
            small.live.url + CHAT,
            headers={"Authorization": f"Bearer {small.keys['good']}"},
            content=body,
        )
        assert response.status_code == 200, response.text


def _assert_no_server_error(client: httpx.Client, content: bytes) -> None:
    for path in (*POST_PATHS, RESPONSES):
        response = client.post(path, content=content)
        assert response.status_code != 500, (path, content[:300], response.text[:300])
        assert response.headers.get("x-request-id"), (path, response.headers)
        if response.status_code >= 300:
            assert_openai_error(response, response.status_code, response.json()["error"]["param"])
    for path in ANTHROPIC_PATHS:
        response = client.post(path, content=content)
        assert response.status_code != 500, (path, content[:300], response.text[:300])
        if response.status_code >= 300:
            assert_anthropic_error(response, response.status_code)


@pytest.fixture
def client(gateway: LiveGateway, key: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as session:
        yield session


class TestFuzzedInput:
    @FUZZ
    @given(value=strategies.json_values())
    def test_any_json_value_gets_no_500(self, client: httpx.Client, value: Any) -> None:
        """Any JSON value, posted to every endpoint, gets an answer or an OpenAI error."""
        _assert_no_server_error(client, json.dumps(value).encode())

    @FUZZ
    @given(body=strategies.request_bodies())
    def test_any_request_shaped_body_gets_no_500(
        self, client: httpx.Client, body: dict[str, Any]
    ) -> None:
        """Chat-, completion-, embedding-, Messages- and Responses-shaped bodies with fuzzed
        fields never get a 500, on any surface."""
        _assert_no_server_error(client, json.dumps(body).encode())

    @FUZZ
    @given(raw=st.binary(max_size=300))
    def test_any_bytes_get_no_500(self, client: httpx.Client, raw: bytes) -> None:
        """Arbitrary bytes as a body never get a 500."""
        _assert_no_server_error(client, raw)
