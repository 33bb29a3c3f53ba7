"""Refusals of the OpenAI Responses surface through the official openai SDK against a live
gateway, over each engine, streamed and not: each error comes in OpenAI's shape and the
SDK raises it as its typed exception (built-in tools and bad input items 400 naming the
field, an unknown model 404, a bad key 401, no funds 402, and a request offering tools
with funds for fewer tokens than its ``max_output_tokens`` 402 where one without tools
gets a lowered cap); none of them reaches an upstream, charges, records or stores anything.
Then the end of a stored response's life: past ``Limits.responses_retention_s`` it reads
as deleted.

One pair of fake upstreams and one gateway serve the module (its stored responses kept
for RETENTION_S only); each test has a client of an account of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import LiveGateway
from tests.e2e.responses_engines import (
    ENGINE_NAMES,
    QUESTION,
    TELL_ME,
    WEATHER_TOOL,
    Client,
    Engine,
    Upstreams,
    answer,
    assert_billed,
    client_of,
    engine_named,
    function_calls,
    responses_gateway,
    started_upstreams,
    trace_of,
)

RETENTION_S = 2.0
BUILT_IN_TOOLS: list[dict[str, Any]] = [
    {"type": "web_search"},
    {"type": "web_search_preview"},
    {"type": "file_search", "vector_store_ids": ["vs_1"]},
    {"type": "code_interpreter", "container": {"type": "auto"}},
    {
        "type": "computer_use_preview",
        "display_width": 1024,
        "display_height": 768,
        "environment": "browser",
    },
    {"type": "image_generation"},
    {"type": "mcp", "server_label": "deepwiki", "server_url": "https://mcp.deepwiki.com/mcp"},
    {"type": "local_shell"},
]
BAD_INPUTS: list[tuple[Any, str]] = [
    ([], "input"),
    ([{"type": "item_reference", "id": "msg_1"}], "input.[0].type"),
    ([{"role": "tool", "content": "21 degrees"}], "input.[0].role"),
    (
        [{"role": "user", "content": QUESTION}, {"type": "function_call_output", "output": "x"}],
        "input.[1].call_id",
    ),
    (
        [{"type": "function_call", "call_id": "call_1", "name": "get_weather"}],
        "input.[0].arguments",
    ),
    (
        [{"role": "user", "content": [{"type": "input_image", "image_url": "ftp://host/a.png"}]}],
        "input.[0].content.[0].image_url",
    ),
    (
        [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}],
        "input.[0].content.[0].file_id",
    ),
    (
        [{"role": "assistant", "content": [{"type": "input_text", "text": "Hi."}]}],
        "input.[0].content.[0].type",
    ),
    ([{"type": "reasoning", "summary": "not a list"}], "input.[0].summary"),
    ([{"type": "function_call_output", "call_id": "call_1", "output": "x"}], "input"),
    ([{"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}], "input"),
]
SMALL_TOP_UP = "0.002"  # 2,000,000 nano: a short prompt and about 750 output tokens
CAP_TOKENS = 2_000  # more than SMALL_TOP_UP pays for, within the models' cap


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with started_upstreams() as started:
        yield started


@pytest.fixture(scope="module")
def gateway(
    upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    home = tmp_path_factory.mktemp("responses-errors")
    with responses_gateway(upstreams, home, responses_retention_s=RETENTION_S) as live:
        yield live


@pytest.fixture(params=ENGINE_NAMES)
def engine(request: pytest.FixtureRequest, upstreams: Upstreams) -> Engine:
    return engine_named(request.param, upstreams)


@pytest.fixture
def client(gateway: LiveGateway) -> Iterator[Client]:
    with client_of(gateway) as made:
        yield made


@pytest.fixture(scope="module")
def refused_client(gateway: LiveGateway) -> Iterator[Client]:
    """One funded client for every request refused before an engine: each refusal checks
    that its account still has no record, no stored response and its whole top-up."""
    with client_of(gateway) as made:
        yield made


def refused(
    client: Client, engine: Engine, kind: type[openai.APIStatusError], stream: bool, **options: Any
) -> openai.APIStatusError:
    """The typed error the SDK raises for ``options`` (streamed or not), in OpenAI's shape,
    after which nothing went up, was charged, recorded or stored."""
    before = trace_of(client)
    sent = engine.received_count()
    options.setdefault("model", engine.model)
    with pytest.raises(kind) as caught:
        if stream:
            list(client.sdk.responses.create(stream=True, **options))
        else:
            client.sdk.responses.create(**options)
    error = caught.value
    assert isinstance(error.body, dict)
    assert set(error.body) == {"message", "type", "param", "code"}
    assert error.message and isinstance(error.type, str) and error.type
    assert error.response.headers["x-request-id"]
    assert engine.received_count() == sent
    assert trace_of(client) == before
    return error


class TestBadRequests:
    @pytest.mark.parametrize("tool", BUILT_IN_TOOLS, ids=lambda tool: tool["type"])
    def test_a_built_in_tool_is_a_400_naming_its_type(
        self, engine: Engine, refused_client: Client, tool: dict[str, Any]
    ) -> None:
        """A built-in tool after a function tool is refused naming ``tools.[1].type``."""
        error = refused(
            refused_client,
            engine,
            openai.BadRequestError,
            False,
            input=QUESTION,
            tools=[WEATHER_TOOL, tool],
        )
        assert (error.param, error.code, error.type) == (
            "tools.[1].type",
            "unsupported_value",
            "invalid_request_error",
        )
        assert tool["type"] in error.message

    def test_a_built_in_tool_is_refused_before_a_stream_opens(
        self, engine: Engine, refused_client: Client
    ) -> None:
        """Streamed, each built-in tool is the same 400, not an event in a stream."""
        for tool in BUILT_IN_TOOLS:
            error = refused(
                refused_client, engine, openai.BadRequestError, True, input=QUESTION, tools=[tool]
            )
            assert error.param == "tools.[0].type", tool

    @pytest.mark.parametrize(("given", "param"), BAD_INPUTS, ids=lambda value: str(value)[:40])
    def test_a_bad_input_item_is_a_400_naming_it(
        self, engine: Engine, refused_client: Client, given: Any, param: str
    ) -> None:
        """Each malformed or unsupported input item is refused naming its field."""
        error = refused(refused_client, engine, openai.BadRequestError, False, input=given)
        assert error.param == param

    def test_a_bad_input_item_is_refused_before_a_stream_opens(
        self, engine: Engine, refused_client: Client
    ) -> None:
        """Streamed, each bad input item is the same 400, not an event in a stream."""
        for given, param in BAD_INPUTS:
            error = refused(refused_client, engine, openai.BadRequestError, True, input=given)
            assert error.param == param, given

    @pytest.mark.parametrize("stream", [False, True])
    def test_a_previous_response_that_never_was_is_a_400(
        self, engine: Engine, refused_client: Client, stream: bool
    ) -> None:
        """An id no response ever had is previous_response_not_found, naming the field."""
        error = refused(
            refused_client,
            engine,
            openai.BadRequestError,
            stream,
            input=TELL_ME,
            previous_response_id="resp_never_made_0001",
        )
        assert (error.param, error.code) == ("previous_response_id", "previous_response_not_found")

    @pytest.mark.parametrize("stream", [False, True])
    def test_a_continuation_leaving_a_call_without_its_output_is_a_400(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """Continuing a turn of calls without a function_call_output for each is refused
        naming ``input`` (as OpenAI refuses it), and nothing goes up."""
        first = client.sdk.responses.create(
            model=engine.model, input=QUESTION, tools=[WEATHER_TOOL]
        )
        (call,) = function_calls(first)
        error = refused(
            client,
            engine,
            openai.BadRequestError,
            stream,
            input="Never mind that.",
            previous_response_id=first.id,
            tools=[WEATHER_TOOL],
        )
        assert error.param == "input"
        assert call.call_id in error.message

    @pytest.mark.parametrize("stream", [False, True])
    def test_an_unknown_model_is_a_404_naming_the_model(
        self, engine: Engine, refused_client: Client, stream: bool
    ) -> None:
        """A model the gateway does not serve is model_not_found, naming the model."""
        error = refused(
            refused_client,
            engine,
            openai.NotFoundError,
            stream,
            model="no-such-model",
            input=TELL_ME,
        )
        assert (error.param, error.code) == ("model", "model_not_found")


class TestKeys:
    @pytest.mark.parametrize("stream", [False, True])
    def test_a_bad_key_is_a_401_on_create(self, gateway: LiveGateway, stream: bool) -> None:
        """A key the gateway does not know is invalid_api_key, streamed or not."""
        with (
            openai.OpenAI(
                base_url=gateway.url + "/v1", api_key="sk-not-a-key", max_retries=0, timeout=10
            ) as stranger,
            pytest.raises(openai.AuthenticationError) as caught,
        ):
            stranger.responses.create(model="sim-priced", input=TELL_ME, stream=stream)
        assert caught.value.status_code == 401
        assert caught.value.code == "invalid_api_key"

    def test_a_bad_key_is_a_401_on_retrieve_input_items_and_delete(
        self, client: Client, gateway: LiveGateway
    ) -> None:
        """The stored-response routes check the key before anything: a real id with a bad
        key is a 401, and the response is still there."""
        made = client.sdk.responses.create(model="sim-priced", input=TELL_ME)
        with openai.OpenAI(
            base_url=gateway.url + "/v1", api_key="sk-not-a-key", max_retries=0, timeout=10
        ) as stranger:
            with pytest.raises(openai.AuthenticationError):
                stranger.responses.retrieve(made.id)
            with pytest.raises(openai.AuthenticationError):
                stranger.responses.input_items.list(made.id)
            with pytest.raises(openai.AuthenticationError):
                stranger.responses.delete(made.id)
        assert client.sdk.responses.retrieve(made.id) == made


class TestFunds:
    @pytest.mark.parametrize("stream", [False, True])
    def test_an_account_without_funds_gets_a_402(
        self, engine: Engine, gateway: LiveGateway, stream: bool
    ) -> None:
        """An account never topped up is refused a priced model: insufficient_quota."""
        with client_of(gateway, amount=None) as poor:
            error = refused(poor, engine, openai.APIStatusError, stream, input=TELL_ME)
        assert (error.status_code, error.code) == (402, "insufficient_quota")

    @pytest.mark.parametrize("stream", [False, True])
    def test_tools_with_funds_for_fewer_tokens_than_the_cap_are_a_402_not_a_lower_cap(
        self, engine: Engine, gateway: LiveGateway, stream: bool
    ) -> None:
        """With funds for fewer output tokens than ``max_output_tokens``, a request that
        offers tools is refused (a call cut short is worthless), while the same request
        without tools is answered with the cap lowered to what the funds pay for."""
        with client_of(gateway, amount=SMALL_TOP_UP) as client:
            options = {"input": QUESTION, "max_output_tokens": CAP_TOKENS}
            error = refused(
                client, engine, openai.APIStatusError, stream, tools=[WEATHER_TOOL], **options
            )
            assert error.status_code == 402
            before = client.balance_nano()
            lowered = answer(client, stream=stream, model=engine.model, **options)
            assert lowered.status == "completed"
            if engine.received is not None:
                assert 0 < engine.last_received()["max_tokens"] < CAP_TOKENS
            assert_billed(client, before, client.record())

    def test_input_items_with_a_bad_limit_are_a_400(self, client: Client) -> None:
        """A limit below 1 is refused naming ``limit``."""
        made = client.sdk.responses.create(model="sim-priced", input=TELL_ME)
        with pytest.raises(openai.BadRequestError) as caught:
            client.sdk.responses.input_items.list(made.id, limit=0)
        assert caught.value.param == "limit"


class TestRetention:
    def test_a_response_past_its_retention_reads_as_deleted(self, client: Client) -> None:
        """Within ``responses_retention_s`` a response is read and continued; past it,
        retrieve and input_items are the 404 of a deleted one and a continuation the 400
        of a missing one."""
        started = time.monotonic()
        made = client.sdk.responses.create(model="sim-priced", input=TELL_ME)
        assert client.sdk.responses.retrieve(made.id) == made
        assert time.monotonic() - started < RETENTION_S, "too slow to see it stored"
        time.sleep(max(0.0, RETENTION_S + 0.2 - (time.monotonic() - started)))
        with pytest.raises(openai.NotFoundError) as read:
            client.sdk.responses.retrieve(made.id)
        assert read.value.code == "response_not_found"
        with pytest.raises(openai.NotFoundError):
            client.sdk.responses.input_items.list(made.id)
        with pytest.raises(openai.BadRequestError) as continued:
            client.sdk.responses.create(
                model="sim-priced", input=TELL_ME, previous_response_id=made.id
            )
        assert continued.value.code == "previous_response_not_found"


class TestEngineRefusals:
    def test_a_cap_below_anthropics_least_thinking_budget_is_a_400_naming_max_output_tokens(
        self, upstreams: Upstreams, client: Client
    ) -> None:
        """Reasoning on the anthropic engine needs a cap above Anthropic's least thinking
        budget; a smaller ``max_output_tokens`` is refused naming that field, the one the
        client sent, before anything goes up or is charged (the refused request is
        recorded as an error, at no charge)."""
        engine = engine_named("anthropic", upstreams)
        before, sent = client.balance_nano(), engine.received_count()
        with pytest.raises(openai.BadRequestError) as caught:
            client.sdk.responses.create(
                model=engine.model,
                input=TELL_ME,
                reasoning={"effort": "low"},
                max_output_tokens=500,
            )
        assert engine.received_count() == sent
        assert client.balance_nano() == before
        assert client.stored_count() == 0
        assert [record.charge_nano for record in client.records()] == [0]
        assert caught.value.param == "max_output_tokens"
        assert "max_output_tokens" in caught.value.message
