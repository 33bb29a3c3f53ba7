"""The ``openai`` engine against the fake upstream: what goes up, what comes back, what is
metered, and how every upstream failure reaches the client.

Most tests share one gateway (a gateway per test would double the run time) and each gets a
key of its own, so "the records of this request" are the records of its key.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.assertions import assert_openai_error
from tests.conftest import LiveGateway, gateway_config, live_gateway
from tokenmill.store.usage import record_by_request_id
from tokenmill.testing import FakeUpstreamState, free_port
from tokenmill.usage import UsageRecord

Upstream = tuple[str, FakeUpstreamState]
MESSAGES = [{"role": "user", "content": "one two three"}]
CAPPED_OUTPUT_TOKENS_MAX = 5


def post(
    gateway: LiveGateway, key: str, body: dict[str, Any], path: str = "/chat/completions"
) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1" + path,
        headers={"Authorization": f"Bearer {key}"},
        json=body,
        timeout=15,
    )


def chat(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, **fields}


def stream_events(
    gateway: LiveGateway, key: str, body: dict[str, Any], path: str = "/chat/completions"
) -> tuple[httpx.Response, list[str]]:
    """The response and its SSE ``data:`` payloads, in order (``[DONE]`` included)."""
    with httpx.stream(
        "POST",
        gateway.url + "/v1" + path,
        headers={"Authorization": f"Bearer {key}"},
        json={**body, "stream": True},
        timeout=15,
    ) as response:
        text = response.read().decode()
    payloads = [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]
    return response, payloads


def chunks_of(payloads: list[str]) -> list[dict[str, Any]]:
    return [orjson.loads(p) for p in payloads if p != "[DONE]"]


def content_of(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    choice = choices[0]
    if "delta" in choice:
        return choice["delta"].get("content") or ""
    return choice.get("text") or ""


def record_of(gateway: LiveGateway, response: httpx.Response) -> UsageRecord:
    return gateway.record(response.headers["x-request-id"])


def records_of(gateway: LiveGateway, key_id: str | None = None) -> list[UsageRecord]:
    return gateway.records(key_id)


def assert_one_error_record(gateway: LiveGateway, response: httpx.Response, status: int) -> None:
    """Exactly one record for the request's (fresh) key: status error, its status, no tokens."""
    record = record_of(gateway, response)
    assert records_of(gateway, record.key_id) == [record]
    assert record.status == "error"
    assert record.http_status == status
    assert record.prompt_tokens == 0
    assert record.completion_tokens == 0
    assert record.error_type == response.json()["error"]["type"]


@pytest.fixture(scope="module")
def gateway(
    fake_upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    """A live gateway with the sim models and every fake behaviour, shared by the module."""
    home = tmp_path_factory.mktemp("engine")
    url = f"sqlite:///{home / 'tokenmill.db'}"
    with live_gateway(url, gateway_config(fake_upstream[0]), home) as live:
        yield live


@pytest.fixture
def key(gateway: LiveGateway) -> str:
    """A fresh key for each test."""
    return gateway.new_key()[0]


@pytest.fixture
def capped_gateway(
    sqlite_url: str, fake_upstream: Upstream, tmp_path: Path
) -> Iterator[LiveGateway]:
    """A gateway whose public model ``house`` is the upstream's ``fake``, capped at 5 tokens."""
    config = gateway_config(fake_upstream[0])
    config["models"]["house"] = {
        "deployments": ["dep-fake"],
        "output_tokens_max": CAPPED_OUTPUT_TOKENS_MAX,
    }
    with live_gateway(sqlite_url, config, tmp_path) as live:
        yield live


class TestWhatTheUpstreamReceives:
    def test_the_upstream_gets_its_own_model_name_not_the_public_one(
        self, capped_gateway: LiveGateway, fake_upstream: Upstream
    ) -> None:
        """A request for the public model ``house`` reaches the upstream as ``fake``."""
        state = fake_upstream[1]
        key = capped_gateway.new_key()[0]
        before = len(state.requests)
        response = post(capped_gateway, key, chat("house", max_tokens=2))
        assert response.status_code == 200, response.text
        assert len(state.requests) == before + 1
        assert state.requests[-1]["model"] == "fake"
        assert record_of(capped_gateway, response).model == "house"

    def test_the_upstream_gets_the_gateway_output_cap_over_a_larger_request(
        self, capped_gateway: LiveGateway, fake_upstream: Upstream
    ) -> None:
        """max_tokens above the model's limit goes up as the limit, and the answer obeys it."""
        state = fake_upstream[1]
        key = capped_gateway.new_key()[0]
        response = post(capped_gateway, key, chat("house", max_tokens=50))
        assert response.status_code == 200, response.text
        assert state.requests[-1]["max_tokens"] == CAPPED_OUTPUT_TOKENS_MAX
        assert response.json()["usage"]["completion_tokens"] == CAPPED_OUTPUT_TOKENS_MAX
        assert record_of(capped_gateway, response).completion_tokens == CAPPED_OUTPUT_TOKENS_MAX

    def test_the_upstream_gets_the_output_cap_when_the_client_names_none(
        self, capped_gateway: LiveGateway, fake_upstream: Upstream
    ) -> None:
        """A request without max_tokens goes up with max_tokens set to the model's limit."""
        state = fake_upstream[1]
        key = capped_gateway.new_key()[0]
        response = post(capped_gateway, key, chat("house"))
        assert response.status_code == 200, response.text
        assert state.requests[-1]["max_tokens"] == CAPPED_OUTPUT_TOKENS_MAX

    def test_max_completion_tokens_goes_up_under_its_own_name(
        self, gateway: LiveGateway, key: str, fake_upstream: Upstream
    ) -> None:
        """A client's max_completion_tokens is sent as such, without adding max_tokens."""
        state = fake_upstream[1]
        response = post(gateway, key, chat("fake", max_completion_tokens=3))
        assert response.status_code == 200, response.text
        sent = state.requests[-1]
        assert sent["max_completion_tokens"] == 3
        assert "max_tokens" not in sent
        assert response.json()["usage"]["completion_tokens"] == 3

    def test_unknown_fields_pass_through_unchanged(
        self, gateway: LiveGateway, key: str, fake_upstream: Upstream
    ) -> None:
        """tools, response_format, logprobs and made-up fields reach the upstream as sent."""
        state = fake_upstream[1]
        extra = {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "lookup",
                        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
                    },
                }
            ],
            "tool_choice": "auto",
            "response_format": {"type": "json_object"},
            "logprobs": True,
            "top_logprobs": 2,
            "temperature": 0.25,
            "seed": 7,
            "x_custom": {"nested": [1, "two", None, 3.5], "flag": False},
        }
        response = post(gateway, key, chat("fake", max_tokens=2, **extra))
        assert response.status_code == 200, response.text
        sent = state.requests[-1]
        for name, value in extra.items():
            assert sent[name] == value, name
        assert sent["messages"] == MESSAGES
        assert "stream_options" not in sent

    def test_a_stream_asks_the_upstream_for_usage_even_when_the_client_did_not(
        self, gateway: LiveGateway, key: str, fake_upstream: Upstream
    ) -> None:
        """The upstream is always asked for include_usage, so the gateway can meter."""
        state = fake_upstream[1]
        response, _ = stream_events(gateway, key, chat("fake", max_tokens=2))
        assert response.status_code == 200
        sent = state.requests[-1]
        assert sent["stream"] is True
        assert sent["stream_options"] == {"include_usage": True}

    def test_other_stream_options_pass_through_beside_include_usage(
        self, gateway: LiveGateway, key: str, fake_upstream: Upstream
    ) -> None:
        """include_usage false becomes true; the client's other stream options are kept."""
        state = fake_upstream[1]
        options = {"include_usage": False, "x_option": "kept"}
        response, _ = stream_events(
            gateway, key, chat("fake", max_tokens=2, stream_options=options)
        )
        assert response.status_code == 200
        assert state.requests[-1]["stream_options"] == {"include_usage": True, "x_option": "kept"}

    def test_embeddings_go_up_and_come_back_with_the_upstream_usage(
        self, gateway: LiveGateway, key: str, fake_upstream: Upstream
    ) -> None:
        """An embeddings request reaches /embeddings; the record has the upstream's count."""
        state = fake_upstream[1]
        body = {"model": "fake-embed", "input": ["a b c", "d e"], "x_custom": 1}
        response = post(gateway, key, body, "/embeddings")
        assert response.status_code == 200, response.text
        assert state.requests[-1] == body
        answer = response.json()
        assert [item["embedding"] for item in answer["data"]] == [[0.6, 0.8], [0.6, 0.8]]
        record = record_of(gateway, response)
        assert record.endpoint == "embeddings"
        assert record.prompt_tokens == answer["usage"]["prompt_tokens"] == 5
        assert not record.estimated


class TestUsageChunks:
    def test_the_usage_only_chunk_is_hidden_from_a_client_that_did_not_ask(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """Without include_usage no chunk has usage or empty choices; the record is exact."""
        response, payloads = stream_events(gateway, key, chat("fake", max_tokens=4))
        assert response.status_code == 200
        assert payloads[-1] == "[DONE]"
        chunks = chunks_of(payloads)
        assert all(chunk.get("usage") is None for chunk in chunks)
        assert all(chunk["choices"] for chunk in chunks)
        assert "".join(map(content_of, chunks)) == "alpha bravo charlie delta "
        record = record_of(gateway, response)
        assert record.completion_tokens == 4
        assert not record.estimated

    def test_the_usage_only_chunk_is_shown_to_a_client_that_asked(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """With include_usage the last chunk before [DONE] is the upstream's usage."""
        body = chat("fake", max_tokens=4, stream_options={"include_usage": True})
        response, payloads = stream_events(gateway, key, body)
        assert payloads[-1] == "[DONE]"
        chunks = chunks_of(payloads)
        with_usage = [chunk for chunk in chunks if chunk.get("usage")]
        assert len(with_usage) == 1
        assert with_usage[0] is chunks[-1]
        assert chunks[-1]["choices"] == []
        usage = chunks[-1]["usage"]
        record = record_of(gateway, response)
        assert usage["completion_tokens"] == record.completion_tokens == 4
        assert usage["prompt_tokens"] == record.prompt_tokens == 3
        assert not record.estimated

    def test_completions_streams_get_the_same_usage_handling(
        self, gateway: LiveGateway, key: str, fake_upstream: Upstream
    ) -> None:
        """A legacy completion stream goes to /completions and shows usage when asked."""
        state = fake_upstream[1]
        body = {"model": "fake", "prompt": "a b", "max_tokens": 3}
        body["stream_options"] = {"include_usage": True}
        response, payloads = stream_events(gateway, key, body, "/completions")
        assert response.status_code == 200
        assert state.requests[-1]["prompt"] == "a b"
        chunks = chunks_of(payloads)
        assert "".join(map(content_of, chunks)) == "alpha bravo charlie "
        assert chunks[-1]["usage"]["completion_tokens"] == 3
        assert record_of(gateway, response).endpoint == "completions"

    def test_running_totals_are_recorded_as_the_last_total_not_the_sum(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """With usage in every chunk (running totals), the record keeps the last one."""
        response, payloads = stream_events(gateway, key, chat("fake-running", max_tokens=6))
        assert response.status_code == 200
        assert payloads[-1] == "[DONE]"
        running = [c["usage"]["completion_tokens"] for c in chunks_of(payloads) if c.get("usage")]
        assert running == [1, 2, 3, 4, 5, 6]
        record = record_of(gateway, response)
        assert record.completion_tokens == 6
        assert not record.estimated

    def test_a_stream_without_upstream_usage_gets_a_usage_chunk_made_by_the_gateway(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """From an upstream that sends no usage, a client that asked still gets a usage chunk."""
        body = chat("fake-nousage", max_tokens=5, stream_options={"include_usage": True})
        response, payloads = stream_events(gateway, key, body)
        assert response.status_code == 200
        assert payloads[-1] == "[DONE]"
        chunks = chunks_of(payloads)
        content_chunks = [chunk for chunk in chunks if content_of(chunk)]
        assert len(content_chunks) == 5
        last = chunks[-1]
        assert last["choices"] == []
        assert last["model"] == "fake-nousage"
        record = record_of(gateway, response)
        assert record.estimated
        assert record.completion_tokens == len(content_chunks)
        assert last["usage"]["completion_tokens"] == record.completion_tokens
        assert last["usage"]["prompt_tokens"] == record.prompt_tokens > 0

    def test_a_stream_without_upstream_usage_shows_none_to_a_client_that_did_not_ask(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """No usage is synthesized for a client that did not ask; the record is estimated."""
        response, payloads = stream_events(gateway, key, chat("fake-nousage", max_tokens=3))
        assert payloads[-1] == "[DONE]"
        assert all(chunk.get("usage") is None for chunk in chunks_of(payloads))
        record = record_of(gateway, response)
        assert record.estimated
        assert record.completion_tokens == 3

    def test_a_non_streamed_answer_without_usage_is_estimated(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """A non-streamed answer with no usage is counted locally and marked estimated."""
        response = post(gateway, key, chat("fake-nousage", max_tokens=4))
        assert response.status_code == 200, response.text
        assert "usage" not in response.json()
        record = record_of(gateway, response)
        assert record.estimated
        assert record.status == "ok"
        assert record.completion_tokens == 4
        assert record.prompt_tokens > 0


UPSTREAM_FAILURES = [
    ("fake-500", 502),
    ("fake-429", 429),
    ("fake-400", 400),
    ("fake-garbage", 502),
]


class TestUpstreamErrors:
    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    @pytest.mark.parametrize(("model", "status"), UPSTREAM_FAILURES)
    def test_an_upstream_failure_becomes_an_openai_error_and_one_error_record(
        self, gateway: LiveGateway, key: str, model: str, status: int, stream: bool
    ) -> None:
        """Each upstream failure maps to its status in OpenAI's shape, with one error record."""
        if stream:
            with httpx.stream(
                "POST",
                gateway.url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json=chat(model, max_tokens=4, stream=True),
                timeout=15,
            ) as response:
                response.read()
        else:
            response = post(gateway, key, chat(model, max_tokens=4))
        assert response.status_code != 500
        assert_openai_error(response, status)
        assert_one_error_record(gateway, response, status)

    def test_an_upstream_error_message_reaches_the_client(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """The upstream's own error message is kept in the mapped error."""
        response = post(gateway, key, chat("fake-400", max_tokens=4))
        error = assert_openai_error(response, 400)
        assert "does not like this request" in error["message"]
        assert error["type"] == "invalid_request_error"

    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_a_hung_upstream_is_504_after_the_read_timeout(
        self, gateway: LiveGateway, key: str, stream: bool
    ) -> None:
        """A hung upstream is 504 after about the 2 s read timeout (not its 5 s), one record."""
        started = time.monotonic()
        response = post(gateway, key, chat("fake-hang", max_tokens=4, stream=stream))
        elapsed_s = time.monotonic() - started
        error = assert_openai_error(response, 504)
        assert error["type"] == "timeout_error"
        assert 1.5 < elapsed_s < 4.5
        assert_one_error_record(gateway, response, 504)

    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
    def test_an_unreachable_upstream_is_503(
        self, sqlite_url: str, tmp_path: Path, stream: bool
    ) -> None:
        """An upstream with nothing listening is 503 with one error record."""
        config = gateway_config(f"http://127.0.0.1:{free_port()}/v1")
        with live_gateway(sqlite_url, config, tmp_path) as gateway:
            key = gateway.new_key()[0]
            response = post(gateway, key, chat("fake", max_tokens=4, stream=stream))
            error = assert_openai_error(response, 503)
            assert error["type"] == "service_unavailable"
            assert_one_error_record(gateway, response, 503)


class TestMidStreamFailures:
    def test_a_stream_cut_mid_way_ends_with_an_error_event_and_no_done(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """A cut upstream: 200, the tokens before the cut, an error event, no [DONE]."""
        response, payloads = stream_events(gateway, key, chat("fake-cut", max_tokens=8))
        assert response.status_code == 200
        assert "[DONE]" not in payloads
        *relayed, last = [orjson.loads(p) for p in payloads]
        assert "".join(map(content_of, relayed)) == "alpha bravo charlie delta "
        assert set(last) == {"error"}
        assert set(last["error"]) == {"message", "type", "param", "code"}
        assert last["error"]["type"] == "upstream_error"
        record = record_of(gateway, response)
        assert record.status == "error"
        assert record.http_status == 502
        assert record.estimated
        assert record.completion_tokens == 4

    def test_a_client_that_disconnects_leaves_a_cancelled_record(
        self, gateway: LiveGateway, key: str, fake_upstream: Upstream
    ) -> None:
        """Closing a slow stream early cancels the upstream call and records status cancelled."""
        state = fake_upstream[1]
        cancelled_before = state.cancelled_streams
        asked = 60
        with httpx.stream(
            "POST",
            gateway.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json=chat("fake-slow", max_tokens=asked, stream=True),
            timeout=15,
        ) as response:
            assert response.status_code == 200
            request_id = response.headers["x-request-id"]
            lines = response.iter_lines()
            seen = [line for _, line in zip(range(6), lines, strict=False)]
            assert any("alpha" in line for line in seen)
        deadline = time.monotonic() + 2.0
        record = None
        while time.monotonic() < deadline:
            with gateway.db.connect() as connection:
                record = record_by_request_id(connection, request_id)
            if record is not None and state.cancelled_streams > cancelled_before:
                break
            time.sleep(0.05)
        assert record is not None, "no record within 2 s of the disconnect"
        assert record.status == "cancelled"
        assert 0 < record.completion_tokens < asked
        assert record.estimated
        assert state.cancelled_streams == cancelled_before + 1


class TestRefusedRequests:
    @pytest.mark.parametrize(
        ("headers", "body", "status", "param"),
        [
            ({"Authorization": "Bearer tm-not-a-key"}, chat("fake"), 401, None),
            ({}, chat("fake"), 401, None),
            (None, {**chat("fake"), "n": 2}, 400, "n"),
            (None, {"model": "fake", "messages": []}, 400, "messages"),
            (None, {"model": "fake", "messages": MESSAGES, "stream": "yes"}, 400, "stream"),
            (None, {"model": "fake-nope", "messages": MESSAGES}, 404, "model"),
        ],
        ids=["bad-key", "no-key", "n-2", "no-messages", "bad-stream", "unknown-model"],
    )
    def test_a_refused_request_never_reaches_the_upstream(
        self,
        gateway: LiveGateway,
        fake_upstream: Upstream,
        headers: dict[str, str] | None,
        body: dict[str, Any],
        status: int,
        param: str | None,
    ) -> None:
        """A request the gateway refuses is not sent upstream and leaves no record."""
        state = fake_upstream[1]
        secret, key_id, _ = gateway.new_key()
        before = len(state.requests)
        records_before = len(records_of(gateway))
        response = httpx.post(
            gateway.url + "/v1/chat/completions",
            headers=headers if headers is not None else {"Authorization": f"Bearer {secret}"},
            json=body,
        )
        assert_openai_error(response, status, param)
        assert len(state.requests) == before
        assert records_of(gateway, key_id) == []
        assert len(records_of(gateway)) == records_before

    def test_invalid_json_never_reaches_the_upstream(
        self, gateway: LiveGateway, key: str, fake_upstream: Upstream
    ) -> None:
        """A body that is not JSON is a 400 in OpenAI's shape, not sent upstream."""
        state = fake_upstream[1]
        before = len(state.requests)
        response = httpx.post(
            gateway.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            content=b'{"model": "fake", "messages": [',
        )
        assert_openai_error(response, 400)
        assert len(state.requests) == before

    def test_a_model_outside_the_allow_list_never_reaches_the_upstream(
        self, gateway: LiveGateway, fake_upstream: Upstream
    ) -> None:
        """A key limited to sim-chat gets the unknown model's 404 for fake, before any upstream
        call."""
        state = fake_upstream[1]
        secret = gateway.new_key(models=["sim-chat"])[0]
        before = len(state.requests)
        response = post(gateway, secret, chat("fake", max_tokens=2))
        error = assert_openai_error(response, 404, "model")
        assert error["code"] == "model_not_found"
        assert len(state.requests) == before
