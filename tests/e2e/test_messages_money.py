"""The Anthropic Messages surface's money and refusals through the official ``anthropic`` SDK,
unchanged, against a live gateway on loopback, over each engine (the sim, a fake
OpenAI-compatible upstream, the fake Anthropic API): ``count_tokens`` (the hold's prompt
bound, free, unrecorded), ``models.list`` in Anthropic's shape, every refusal in Anthropic's
error shape with its status, raised as the SDK's typed exception and changing no balance,
the rule that a request whose output cap would have to be lowered below what it is worth
(a thinking budget, a tool call) gets 402 instead, and both ways of presenting a key.

One pair of fake upstreams and one gateway serve the module; each test has a client of an
account of its own (``messages_engines``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import LiveGateway
from tests.e2e.messages_engines import (
    ASKED,
    CACHE_WRITE_NANO_PER_TOKEN,
    ENGINE_NAMES,
    MAX_TOKENS,
    NANO,
    OUTPUT_NANO_PER_TOKEN,
    TOLD,
    TOOLS,
    Client,
    Engine,
    KeyWay,
    Upstreams,
    assert_billed,
    blocks_of,
    client_of,
    engine_named,
    fund,
    hand_priced_nano,
    messages_config,
    messages_gateway,
    sdk_of,
    started_upstreams,
    text_of,
)
from tokenmill.config import Config, parse_config
from tokenmill.retail.rating import PromptAllowance, prompt_bound_tokens
from tokenmill.surfaces.messages_request import parse_count_tokens

BODY_BYTES_MAX = 64 * 1024  # the module gateway's request_body_bytes_max
SYSTEM_TEXT = "You are a weather assistant."
# The dearest input price a hold reserves every prompt token at (PRICE's cache writes).
INPUT_MAX_NANO_PER_TOKEN = CACHE_WRITE_NANO_PER_TOKEN
THINKING_BUDGET_TOKENS = 1024
THINKING = {"type": "enabled", "budget_tokens": THINKING_BUDGET_TOKENS}
THINKING_MAX_TOKENS = 2048


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with started_upstreams() as started:
        yield started


@pytest.fixture(scope="module")
def config(upstreams: Upstreams) -> dict[str, Any]:
    return messages_config(upstreams, request_body_bytes_max=BODY_BYTES_MAX)


@pytest.fixture(scope="module")
def gateway(
    upstreams: Upstreams, config: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    home = tmp_path_factory.mktemp("messages-money")
    with messages_gateway(upstreams, home, config) as live:
        yield live


@pytest.fixture(params=ENGINE_NAMES)
def engine(request: pytest.FixtureRequest, upstreams: Upstreams) -> Engine:
    return engine_named(request.param, upstreams)


@pytest.fixture
def client(gateway: LiveGateway) -> Iterator[Client]:
    with client_of(gateway) as made:
        yield made


@pytest.fixture
def poor(gateway: LiveGateway) -> Iterator[Client]:
    """A client of an account never topped up."""
    with client_of(gateway, amount=None) as made:
        yield made


def admin_post(gateway: LiveGateway, path: str, body: dict[str, Any] | None = None) -> None:
    response = httpx.post(
        f"{gateway.url}/admin/v1/{path}",
        json=body or {},
        headers={"Authorization": f"Bearer {gateway.admin_token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def assert_anthropic_error(
    error: anthropic.APIStatusError, status: int, kind: str
) -> dict[str, Any]:
    """The refusal is Anthropic's ``{"type": "error", "error": {"type", "message"}}`` and
    nothing else, with its status, as JSON; returns the inner error."""
    assert error.status_code == status
    assert error.response.headers["content-type"].startswith("application/json")
    body = json.loads(error.response.read())
    assert body == error.body
    assert set(body) == {"type", "error"}
    assert body["type"] == "error"
    inner: dict[str, Any] = body["error"]
    assert set(inner) == {"type", "message"}
    assert (error.type, inner["type"]) == (kind, kind)
    assert isinstance(inner["message"], str) and inner["message"]
    return inner


def create(client: Client, *, stream: bool, **options: Any) -> Any:
    """One call of ``messages.create``, a stream read to its end."""
    options.setdefault("max_tokens", MAX_TOKENS)
    if stream:
        return list(client.sdk.messages.create(stream=True, **options))
    return client.sdk.messages.create(**options)


def refused(
    client: Client,
    error_type: type[anthropic.APIStatusError],
    call: Callable[[], Any],
    engine: Engine | None = None,
) -> anthropic.APIStatusError:
    """The SDK raises ``error_type`` for ``call``; the account's balance did not move, the
    key has no usage record, and nothing went up to ``engine``'s upstream."""
    before = client.balance_nano()
    sent_up = engine.received_count() if engine is not None else 0
    with pytest.raises(error_type) as caught:
        call()
    assert client.balance_nano() == before
    assert client.records() == []
    if engine is not None:
        assert engine.received_count() == sent_up
    return caught.value


class TestCountTokens:
    def test_the_count_is_the_holds_prompt_bound_and_at_least_the_prompts_tokens(
        self, engine: Engine, client: Client, config: dict[str, Any]
    ) -> None:
        """``count_tokens`` is what the hold reserves for the prompt: the body's bytes
        plus the model's template allowance for its messages and tools, as
        ``prompt_bound_tokens`` counts the parsed call; the same prompt, answered, is
        counted no more than that."""
        options: dict[str, Any] = {
            "model": engine.model,
            "system": SYSTEM_TEXT,
            "messages": ASKED,
            "tools": TOOLS,
        }
        counted = client.sdk.messages.count_tokens(**options).input_tokens
        raw = client.last_raw
        allowance = PromptAllowance()
        by_hand = (
            len(raw)
            + allowance.template_tokens
            + allowance.tokens_per_message * (len(ASKED) + 1)  # the system prompt is one
            + allowance.tokens_per_tool * len(TOOLS)
        )
        assert counted == by_hand
        settings: Config = parse_config(config)
        model = settings.models[engine.model]
        call = parse_count_tokens(
            json.loads(raw), settings.models, settings.limits, body_bytes=len(raw)
        )
        allowed = PromptAllowance(**model.prompt_allowance.model_dump())
        assert counted == prompt_bound_tokens(call.prompt, allowed, model.context_tokens)
        answered = client.sdk.messages.create(max_tokens=MAX_TOKENS, **options)
        assert 0 < client.record().prompt_tokens <= counted
        assert answered.usage.input_tokens <= counted

    def test_counting_charges_nothing_records_nothing_and_needs_no_funds(
        self, engine: Engine, client: Client, poor: Client
    ) -> None:
        """A count of a priced model moves no balance and leaves no usage record; an
        account with no funds gets its count too; nothing goes up to an upstream."""
        sent_up = engine.received_count()
        before = client.balance_nano()
        rich = client.sdk.messages.count_tokens(model=engine.model, messages=TOLD)
        broke = poor.sdk.messages.count_tokens(model=engine.model, messages=TOLD)
        assert rich.input_tokens == broke.input_tokens > 0
        assert client.balance_nano() == before
        assert client.records() == [] and poor.records() == []
        assert engine.received_count() == sent_up

    def test_a_count_of_an_unknown_model_or_with_a_bad_key_is_refused_in_anthropics_shape(
        self, client: Client, gateway: LiveGateway
    ) -> None:
        with pytest.raises(anthropic.NotFoundError) as unknown:
            client.sdk.messages.count_tokens(model="no-such-model", messages=TOLD)
        assert_anthropic_error(unknown.value, 404, "not_found_error")
        stranger = anthropic.Anthropic(base_url=gateway.url, api_key="tm-wrong", max_retries=0)
        with stranger, pytest.raises(anthropic.AuthenticationError) as caught:
            stranger.messages.count_tokens(model="sim-priced", messages=TOLD)
        assert_anthropic_error(caught.value, 401, "authentication_error")


class TestModels:
    def test_the_list_is_anthropics_page_of_the_keys_models(self, gateway: LiveGateway) -> None:
        """A key limited to two models lists those two, each Anthropic's model object
        (type, id, display name: the description or else the id, created_at), in one page
        with its first and last ids."""
        allowed = ["sim-priced", "claude-priced"]
        with client_of(gateway, models=allowed) as limited:
            listed = list(limited.sdk.models.list())
            page = limited.sdk.models.with_raw_response.list().http_response.json()
        assert [model.id for model in listed] == allowed
        assert [model.type for model in listed] == ["model", "model"]
        assert [model.display_name for model in listed] == [
            "The simulated 8B model, priced.",
            "claude-priced",
        ]
        assert all(model.created_at.tzinfo is not None for model in listed)
        assert (page["has_more"], page["first_id"], page["last_id"]) == (
            False,
            "sim-priced",
            "claude-priced",
        )
        assert [set(entry) for entry in page["data"]] == [
            {"type", "id", "display_name", "created_at"}
        ] * 2

    def test_a_key_of_every_model_lists_them_all_and_retrieves_one(
        self, client: Client, config: dict[str, Any]
    ) -> None:
        listed = [model.id for model in client.sdk.models.list()]
        assert listed == list(config["models"])
        shown = client.sdk.models.retrieve("claude-priced")
        assert (shown.type, shown.id) == ("model", "claude-priced")

    def test_a_model_the_key_may_not_use_is_not_found(self, gateway: LiveGateway) -> None:
        """Retrieving or asking a model that exists but is not the key's is 404, in
        Anthropic's shape, as for a model that does not exist."""
        with client_of(gateway, models=["sim-priced"]) as limited:
            with pytest.raises(anthropic.NotFoundError) as hidden:
                limited.sdk.models.retrieve("claude-priced")
            assert_anthropic_error(hidden.value, 404, "not_found_error")
            error = refused(
                limited,
                anthropic.NotFoundError,
                lambda: create(limited, stream=False, model="claude-priced", messages=TOLD),
            )
            assert_anthropic_error(error, 404, "not_found_error")

    def test_a_client_that_sends_no_anthropic_version_gets_openais_list(
        self, client: Client
    ) -> None:
        """The shape follows the client: without ``anthropic-version`` the same key gets
        OpenAI's list of the same models."""
        response = httpx.get(
            client.gateway.url + "/v1/models",
            headers={"x-api-key": client.secret},
            timeout=10,
        )
        assert response.status_code == 200
        shown = response.json()
        assert shown["object"] == "list"
        assert [model["id"] for model in shown["data"]] == [
            model.id for model in client.sdk.models.list()
        ]


class TestRefusals:
    @pytest.mark.parametrize("stream", [False, True])
    def test_a_bad_request_is_400_and_goes_nowhere(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """A thinking budget under Anthropic's least is invalid_request_error, raised as
        BadRequestError before anything goes up (a stream gets the status too)."""
        error = refused(
            client,
            anthropic.BadRequestError,
            lambda: create(
                client,
                stream=stream,
                model=engine.model,
                messages=TOLD,
                max_tokens=THINKING_MAX_TOKENS,
                thinking={"type": "enabled", "budget_tokens": 512},
            ),
            engine,
        )
        inner = assert_anthropic_error(error, 400, "invalid_request_error")
        assert "budget_tokens" in inner["message"]

    def test_a_tool_choice_naming_no_tool_given_is_400(
        self, engine: Engine, client: Client
    ) -> None:
        error = refused(
            client,
            anthropic.BadRequestError,
            lambda: create(
                client,
                stream=False,
                model=engine.model,
                messages=ASKED,
                tools=TOOLS,
                tool_choice={"type": "tool", "name": "get_time"},
            ),
            engine,
        )
        assert_anthropic_error(error, 400, "invalid_request_error")

    @pytest.mark.parametrize("way", ["x-api-key", "api_key", "auth_token"])
    def test_a_wrong_key_is_401_whichever_way_it_is_sent(
        self, gateway: LiveGateway, way: KeyWay
    ) -> None:
        with (
            sdk_of(gateway, "tm-not-a-key", [], [], way) as stranger,
            pytest.raises(anthropic.AuthenticationError) as caught,
        ):
            stranger.messages.create(model="sim-priced", max_tokens=16, messages=TOLD)
        assert_anthropic_error(caught.value, 401, "authentication_error")

    @pytest.mark.parametrize("stream", [False, True])
    def test_an_account_without_funds_gets_402_billing_error(
        self, engine: Engine, poor: Client, stream: bool
    ) -> None:
        """A priced model for an account never topped up: billing_error, raised as
        PaymentRequiredError, before anything goes up."""
        error = refused(
            poor,
            anthropic.PaymentRequiredError,
            lambda: create(poor, stream=stream, model=engine.model, messages=TOLD),
            engine,
        )
        assert_anthropic_error(error, 402, "billing_error")

    def test_a_disabled_account_is_403_and_is_not_charged(
        self, engine: Engine, client: Client
    ) -> None:
        admin_post(client.gateway, f"accounts/{client.account}/disable")
        error = refused(
            client,
            anthropic.PermissionDeniedError,
            lambda: create(client, stream=False, model=engine.model, messages=TOLD),
            engine,
        )
        assert_anthropic_error(error, 403, "permission_error")

    @pytest.mark.parametrize("stream", [False, True])
    def test_an_unknown_model_is_404(self, client: Client, stream: bool) -> None:
        error = refused(
            client,
            anthropic.NotFoundError,
            lambda: create(client, stream=stream, model="claude-nonesuch", messages=TOLD),
        )
        inner = assert_anthropic_error(error, 404, "not_found_error")
        assert "claude-nonesuch" in inner["message"]

    @pytest.mark.parametrize("stream", [False, True])
    def test_a_body_over_the_limit_is_413_request_too_large(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """A prompt past ``request_body_bytes_max``: request_too_large, raised as
        ContentTooLargeError, nothing read into a call, nothing sent up."""
        huge = [{"role": "user", "content": "word " * (BODY_BYTES_MAX // 5)}]
        error = refused(
            client,
            anthropic.ContentTooLargeError,
            lambda: create(client, stream=stream, model=engine.model, messages=huge),
            engine,
        )
        inner = assert_anthropic_error(error, 413, "request_too_large")
        assert str(BODY_BYTES_MAX) in inner["message"]

    def test_a_keys_rate_limit_is_429_after_the_requests_it_allows(
        self, engine: Engine, client: Client
    ) -> None:
        """With one request a minute, the first is answered and billed; the second is
        rate_limit_error, raised as RateLimitError, and neither charged nor recorded."""
        admin_post(client.gateway, f"keys/{client.key_id}/rate-limits", {"requests_per_minute": 1})
        before = client.balance_nano()
        create(client, stream=False, model=engine.model, messages=TOLD)
        (record,) = client.records()
        assert_billed(client, before, record)
        paid = client.balance_nano()
        with pytest.raises(anthropic.RateLimitError) as caught:
            create(client, stream=True, model=engine.model, messages=TOLD)
        assert_anthropic_error(caught.value, 429, "rate_limit_error")
        assert caught.value.response.headers["x-ratelimit-limit-requests"] == "1"
        assert client.records() == [record]
        assert client.balance_nano() == paid


def mode_model(name: str, stream: bool) -> str:
    """The model of a failing deployment of its own for each mode."""
    return f"{name}-{'stream' if stream else 'plain'}"


@pytest.mark.parametrize("stream", [False, True])
class TestUpstreamFailures:
    def test_an_overloaded_upstream_is_529_overloaded_error(
        self, client: Client, upstreams: Upstreams, stream: bool
    ) -> None:
        """The Anthropic upstream's 529 reaches the client as Anthropic's own status for
        it (OverloadedError, an APIStatusError), recorded as an error and charged nothing."""
        before = client.balance_nano()
        with pytest.raises(anthropic.OverloadedError) as caught:
            create(
                client, stream=stream, model=mode_model("claude-overloaded", stream), messages=TOLD
            )
        assert isinstance(caught.value, anthropic.APIStatusError)
        assert_anthropic_error(caught.value, 529, "overloaded_error")
        assert upstreams.anthropic.requests[-1]["model"] == "claude-529"
        (record,) = client.records()
        assert (record.status, record.charge_nano) == ("error", 0)
        assert client.balance_nano() == before

    def test_an_upstream_rate_limit_is_429_and_charged_nothing(
        self, client: Client, stream: bool
    ) -> None:
        before = client.balance_nano()
        with pytest.raises(anthropic.RateLimitError) as caught:
            create(client, stream=stream, model=mode_model("claude-busy", stream), messages=TOLD)
        assert_anthropic_error(caught.value, 429, "rate_limit_error")
        (record,) = client.records()
        assert (record.status, record.charge_nano) == ("error", 0)
        assert client.balance_nano() == before


def test_an_error_event_before_any_content_is_still_an_http_error(client: Client) -> None:
    """An upstream stream that fails right after message_start has sent the client
    nothing yet: the client gets an HTTP status (502, api_error) in Anthropic's shape, not a
    200 stream, and owes nothing."""
    before = client.balance_nano()
    with pytest.raises(anthropic.InternalServerError) as caught:
        create(client, stream=True, model=mode_model("claude-early", True), messages=TOLD)
    assert_anthropic_error(caught.value, 502, "api_error")
    (record,) = client.records()
    assert (record.status, record.charge_nano) == ("error", 0)
    assert client.balance_nano() == before


def test_a_stream_failing_midway_ends_in_an_error_event_and_charges_what_was_relayed(
    client: Client,
) -> None:
    """Once text has gone out the status is spent: the stream ends with an ``error`` event
    in Anthropic's shape (the SDK raises it as an APIStatusError of the 200 response), and
    the account pays for the prompt and for the text it got (the fake's words are a token
    each), at the record's charge."""
    before = client.balance_nano()
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        for event in client.sdk.messages.create(
            model="claude-midway", max_tokens=MAX_TOKENS, messages=TOLD, stream=True
        ):
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                texts.append(event.delta.text)
    assert caught.value.status_code == 200
    body = caught.value.body
    assert isinstance(body, dict) and set(body) == {"type", "error"}
    assert (body["type"], body["error"]["type"]) == ("error", "api_error")
    assert texts, "nothing was relayed before the failure"
    (record,) = client.records()
    assert record.status == "error"
    assert record.completion_tokens == len(texts)
    assert record.charge_nano == hand_priced_nano(record) > 0
    assert before - client.balance_nano() == record.charge_nano


def affording(client: Client, output_tokens: int, call: Callable[[], Any]) -> int:
    """Top the (unfunded) ``client``'s account up with exactly the hold of ``call`` with an
    output cap of ``output_tokens``: its prompt bound (measured on the body the SDK sends,
    which a first try, refused for want of funds, shows) at the dearest input price, and
    that many output tokens. Returns the prompt bound."""
    with pytest.raises(anthropic.PaymentRequiredError):
        call()
    body = json.loads(client.last_raw)
    allowance = PromptAllowance()
    bound = (
        len(client.last_raw)
        + allowance.template_tokens
        + allowance.tokens_per_message * (len(body["messages"]) + (1 if "system" in body else 0))
        + allowance.tokens_per_tool * len(body.get("tools") or ())
    )
    nano = bound * INPUT_MAX_NANO_PER_TOKEN + output_tokens * OUTPUT_NANO_PER_TOKEN
    fund(client.gateway, client.account, str(Decimal(nano) / NANO))
    assert client.balance_nano() == nano
    return bound


def assert_served_with_cap(
    client: Client, engine: Engine, raw: bytes, cap: int, before_nano: int
) -> None:
    """The request (the same bytes as the try) was served and billed exactly; the
    upstream, if any, was asked for ``cap`` output tokens; the balance stays at or above
    zero."""
    assert client.last_raw == raw
    (record,) = client.records()
    assert_billed(client, before_nano, record)
    assert record.completion_tokens <= cap
    if engine.received is not None:
        assert engine.last_received()["max_tokens"] == cap
    assert client.balance_nano() >= 0


class TestNoCapBelowWorth:
    """Funds short of a request's output cap lower the cap, but never below what the
    request is worth: a thinking budget needs a token beyond it, a call offering tools its
    whole cap (a tool call cut mid-JSON is worthless). Short of that, 402."""

    def test_thinking_with_funds_for_no_more_than_its_budget_is_402(
        self, engine: Engine, poor: Client
    ) -> None:
        def call() -> Any:
            return create(
                poor,
                stream=False,
                model=engine.model,
                messages=TOLD,
                max_tokens=THINKING_MAX_TOKENS,
                thinking=THINKING,
            )

        affording(poor, THINKING_BUDGET_TOKENS, call)
        error = refused(poor, anthropic.PaymentRequiredError, call, engine)
        assert_anthropic_error(error, 402, "billing_error")

    def test_thinking_with_funds_for_a_token_beyond_its_budget_is_served_with_that_cap(
        self, engine: Engine, poor: Client
    ) -> None:
        def call() -> Any:
            return create(
                poor,
                stream=True,
                model=engine.model,
                messages=TOLD,
                max_tokens=THINKING_MAX_TOKENS,
                thinking=THINKING,
            )

        affording(poor, THINKING_BUDGET_TOKENS + 1, call)
        raw, before = poor.last_raw, poor.balance_nano()
        call()
        assert_served_with_cap(poor, engine, raw, THINKING_BUDGET_TOKENS + 1, before)

    def test_tools_with_funds_for_fewer_than_max_tokens_is_402(
        self, engine: Engine, poor: Client
    ) -> None:
        def call() -> Any:
            return create(poor, stream=True, model=engine.model, messages=ASKED, tools=TOOLS)

        affording(poor, MAX_TOKENS - 1, call)
        error = refused(poor, anthropic.PaymentRequiredError, call, engine)
        assert_anthropic_error(error, 402, "billing_error")

    def test_tools_with_funds_for_max_tokens_are_served_with_the_whole_cap(
        self, engine: Engine, poor: Client
    ) -> None:
        def call() -> Any:
            return create(poor, stream=False, model=engine.model, messages=ASKED, tools=TOOLS)

        affording(poor, MAX_TOKENS, call)
        raw, before = poor.last_raw, poor.balance_nano()
        message = call()
        assert blocks_of(message, "tool_use")
        assert_served_with_cap(poor, engine, raw, MAX_TOKENS, before)

    @pytest.mark.parametrize("tools", [False, True])
    def test_the_same_funds_lower_a_plain_requests_cap(
        self, engine: Engine, poor: Client, tools: bool
    ) -> None:
        """Neither thinking nor a tool call (tools given under tool_choice none are not
        offered): funds for fewer tokens than max_tokens serve it with the cap lowered to
        what they pay for."""
        options: dict[str, Any] = {"tools": TOOLS, "tool_choice": {"type": "none"}} if tools else {}

        def call() -> Any:
            return create(poor, stream=False, model=engine.model, messages=ASKED, **options)

        affordable = MAX_TOKENS // 4
        affording(poor, affordable, call)
        raw, before = poor.last_raw, poor.balance_nano()
        message = call()
        assert text_of(message).strip()
        assert_served_with_cap(poor, engine, raw, affordable, before)


class TestKeys:
    @pytest.mark.parametrize(
        ("way", "header", "shown"),
        [
            ("x-api-key", "x-api-key", "{}"),
            ("api_key", "authorization", "Bearer {}"),
            ("auth_token", "authorization", "Bearer {}"),
        ],
    )
    def test_a_key_works_as_x_api_key_and_as_a_bearer_token(
        self, gateway: LiveGateway, way: KeyWay, header: str, shown: str
    ) -> None:
        """The key is accepted in ``x-api-key`` (Anthropic's documented header) and as
        ``Authorization: Bearer`` (which this SDK sends for both its ``api_key`` and its
        ``auth_token``), each alone, for answers, counts and the model list; the answer is
        recorded under that key."""
        other = ({"x-api-key", "authorization"} - {header}).pop()
        with client_of(gateway, way=way) as keyed:
            message = keyed.sdk.messages.create(model="sim-priced", max_tokens=64, messages=TOLD)
            assert text_of(message).strip()
            headers = keyed.requests[-1].headers
            assert headers[header] == shown.format(keyed.secret)
            assert other not in headers
            assert headers["anthropic-version"]
            assert keyed.record().key_id == keyed.key_id
            assert keyed.sdk.messages.count_tokens(model="sim-priced", messages=TOLD).input_tokens
            assert [model.id for model in keyed.sdk.models.list()]
