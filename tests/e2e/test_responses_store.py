"""Stored OpenAI Responses through the official openai SDK against a live gateway, over
each engine, streamed and not: ``previous_response_id`` puts the stored conversation in the
prompt (the upstream receives the first turn; the input tokens and the hold grow by it),
including a tool loop continued with the call outputs only; ``retrieve`` gives back what
the client got, ``input_items`` a request's own input, ``delete`` ends both and any
continuation; a response belongs to its account (another tenant's id reads as absent) and
``store: false`` keeps nothing. Then the answers that depend on the request's options:
a json_schema text format, and reasoning effort.

One pair of fake upstreams and one gateway serve the module; each test has a client of an
account of its own (``responses_engines``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import LiveGateway
from tests.e2e.balances import balance_of
from tests.e2e.responses_engines import (
    AGENT_TEXT,
    ENGINE_NAMES,
    INPUT_NANO_PER_TOKEN,
    REPORT,
    REPORT_FORMAT,
    REPORT_SCHEMA,
    TELL_ME,
    TOOL_OUTPUT,
    WEATHER_TOOL,
    Client,
    Engine,
    Upstreams,
    answer,
    assert_billed,
    assert_changed_nothing,
    assert_upstream_got_the_loop,
    assert_usage_is_the_record,
    assert_valid_calls,
    call_outputs,
    client_of,
    engine_named,
    function_calls,
    output_of,
    responses_gateway,
    started_upstreams,
    stored_flag,
    texts_received,
)
from tokenmill.testing import FAKE_THINKING_SIGNATURE, FAKE_THINKING_TEXT

FOLLOW_UP = "And how does it bill the reasoning tokens of an answer?"
QUESTION_ITEMS: Any = [
    {"role": "developer", "content": "Answer in one sentence."},
    {"role": "user", "content": [{"type": "input_text", "text": TELL_ME}]},
]


class Report(BaseModel):
    city: str
    temperature_c: float
    conditions: Literal["sunny", "cloudy", "rain"]


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with started_upstreams() as started:
        yield started


@pytest.fixture(scope="module")
def gateway(
    upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    with responses_gateway(upstreams, tmp_path_factory.mktemp("responses-store")) as live:
        yield live


@pytest.fixture(params=ENGINE_NAMES)
def engine(request: pytest.FixtureRequest, upstreams: Upstreams) -> Engine:
    return engine_named(request.param, upstreams)


@pytest.fixture
def client(gateway: LiveGateway) -> Iterator[Client]:
    with client_of(gateway) as made:
        yield made


def visible_output_tokens(response: Any) -> int:
    usage = response.usage
    return int(usage.output_tokens - usage.output_tokens_details.reasoning_tokens)


def assert_not_found(caught: pytest.ExceptionInfo[openai.NotFoundError]) -> None:
    error = caught.value
    assert error.status_code == 404
    assert (error.code, error.param, error.type) == (
        "response_not_found",
        "response_id",
        "not_found_error",
    )


def assert_no_previous(caught: pytest.ExceptionInfo[openai.BadRequestError]) -> None:
    error = caught.value
    assert error.status_code == 400
    assert (error.code, error.param) == ("previous_response_not_found", "previous_response_id")


@pytest.mark.parametrize("stream", [False, True])
class TestContinuation:
    def test_a_continued_request_carries_the_first_turn_in_its_prompt(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """The second turn's prompt holds the first's question and answer: its input
        tokens pass the first's prompt and answer together and the same question asked
        alone, and the upstream received the three turns in order."""
        first = answer(client, stream=stream, model=engine.model, input=TELL_ME)
        alone = answer(client, stream=False, model=engine.model, input=FOLLOW_UP, store=False)
        second = answer(
            client,
            stream=stream,
            model=engine.model,
            input=FOLLOW_UP,
            previous_response_id=first.id,
        )
        assert second.previous_response_id == first.id
        assert second.status == "completed"
        assert first.usage and second.usage and alone.usage
        grown = first.usage.input_tokens + visible_output_tokens(first)
        assert second.usage.input_tokens > grown
        assert second.usage.input_tokens > alone.usage.input_tokens
        assert_usage_is_the_record(second.usage, client.record())
        if engine.received is not None:
            turns = [TELL_ME, first.output_text, FOLLOW_UP]
            assert texts_received(engine.last_received()) == turns
        if engine.name == "openai":
            assert first.output_text == AGENT_TEXT

    def test_a_tool_loop_continues_with_the_call_outputs_only(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """After a turn of calls, ``previous_response_id`` and a function_call_output
        for each call get the text answer; the upstream received the question, the calls
        and their outputs; the turn's own input items are the outputs only."""
        first = answer(
            client, stream=stream, model=engine.model, input=TELL_ME, tools=[WEATHER_TOOL]
        )
        calls = assert_valid_calls(first)
        outputs = call_outputs(first)
        second = answer(
            client,
            stream=stream,
            model=engine.model,
            input=outputs,
            previous_response_id=first.id,
            tools=[WEATHER_TOOL],
        )
        assert second.status == "completed"
        assert function_calls(second) == []
        assert second.output_text.strip()
        assert_upstream_got_the_loop(engine, calls)
        if engine.received is not None:
            assert texts_received(engine.last_received())[0] == TELL_ME
        items: list[Any] = client.sdk.responses.input_items.list(second.id).data
        assert [(item.type, item.call_id, item.output) for item in items] == [
            ("function_call_output", output["call_id"], TOOL_OUTPUT) for output in outputs
        ]

    def test_a_continued_request_can_continue_again(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """A third turn reaches back through the second to the first: its prompt grows
        past the second's prompt and answer."""
        first = answer(client, stream=stream, model=engine.model, input=TELL_ME)
        second = answer(
            client,
            stream=stream,
            model=engine.model,
            input=FOLLOW_UP,
            previous_response_id=first.id,
        )
        third = answer(
            client,
            stream=stream,
            model=engine.model,
            input="Thanks.",
            previous_response_id=second.id,
        )
        assert second.usage and third.usage
        grown = second.usage.input_tokens + visible_output_tokens(second)
        assert third.usage.input_tokens > grown
        if engine.received is not None:
            turns = [TELL_ME, first.output_text, FOLLOW_UP, second.output_text, "Thanks."]
            assert texts_received(engine.last_received()) == turns


@pytest.mark.parametrize("engine_name", ["openai", "anthropic"])
def test_instructions_are_not_carried_to_a_continuation(
    upstreams: Upstreams, client: Client, engine_name: str
) -> None:
    """As in OpenAI's API, a response's instructions are its own: the first turn's system
    text goes up with it and not with the turn that continues it."""
    engine = engine_named(engine_name, upstreams)
    rules = "Answer as a weather forecaster."
    first = client.sdk.responses.create(model=engine.model, instructions=rules, input=TELL_ME)
    assert rules in system_texts(engine.last_received())
    client.sdk.responses.create(model=engine.model, input=FOLLOW_UP, previous_response_id=first.id)
    assert system_texts(engine.last_received()) == []
    assert texts_received(engine.last_received()) == [TELL_ME, first.output_text, FOLLOW_UP]


def system_texts(body: dict[str, Any]) -> list[str]:
    """The system texts of a chat request's messages or of Anthropic's ``system``."""
    chat = [m["content"] for m in body["messages"] if m["role"] in ("system", "developer")]
    system = body.get("system") or []
    blocks = [system] if isinstance(system, str) else [block["text"] for block in system]
    return chat + blocks


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_thinking_goes_back_signed_in_a_continued_tool_loop(
    upstreams: Upstreams, client: Client, stream: bool
) -> None:
    """A reasoning turn of calls keeps the thinking's signature as the reasoning item's
    encrypted content, and its continuation sends the thinking block back, signed, before
    the tool_use and then the tool_result (Anthropic refuses a tool loop without it)."""
    engine = engine_named("anthropic", upstreams)
    options: dict[str, Any] = {
        "model": engine.model,
        "tools": [WEATHER_TOOL],
        "reasoning": {"effort": "low"},
        "max_output_tokens": 3_000,  # above the low effort's thinking budget
    }
    first = answer(client, stream=stream, input=TELL_ME, **options)
    reasoning, call = output_of(first)
    assert (reasoning.type, call.type) == ("reasoning", "function_call")
    assert reasoning.summary[0].text == FAKE_THINKING_TEXT
    assert reasoning.encrypted_content == FAKE_THINKING_SIGNATURE
    answer(
        client, stream=stream, input=call_outputs(first), previous_response_id=first.id, **options
    )
    turns = engine.last_received()["messages"]
    assert [turn["role"] for turn in turns] == ["user", "assistant", "user"]
    thinking, tool_use = turns[1]["content"]
    assert thinking == {
        "type": "thinking",
        "thinking": FAKE_THINKING_TEXT,
        "signature": FAKE_THINKING_SIGNATURE,
    }
    assert (tool_use["type"], tool_use["id"]) == ("tool_use", call.call_id)
    assert turns[2]["content"][0]["tool_use_id"] == call.call_id


def held_while_streaming(client: Client, **options: Any) -> int:
    """The funds a slow stream holds once it has begun (it is closed then, early)."""
    stream = client.sdk.responses.create(stream=True, model="slow-priced", **options)
    with stream:
        assert next(iter(stream)).type == "response.created"
        held: int = balance_of(client.gateway, client.account)["held_nano"]
    return held


class TestTheHoldOfAContinuation:
    def test_the_stored_conversation_counts_in_the_hold(self, client: Client) -> None:
        """A continuation holds, beyond what the same request holds alone, at least a
        token's price for each byte of the stored first turn's input."""
        long_text = "tokens " * 1_000
        first = client.sdk.responses.create(
            model="sim-priced", input=long_text, max_output_tokens=16
        )
        options = {"input": "Thanks.", "max_output_tokens": 200}
        alone = held_while_streaming(client, **options)
        continued = held_while_streaming(client, previous_response_id=first.id, **options)
        assert alone > 0
        assert continued - alone >= len(long_text) * INPUT_NANO_PER_TOKEN


@pytest.mark.parametrize("stream", [False, True])
class TestRetrieve:
    def test_retrieve_gives_the_response_the_client_got(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """The stored response equals the one the client got, whole or as the last event."""
        got = answer(client, stream=stream, model=engine.model, input=TELL_ME)
        assert stored_flag(got) is True
        assert client.sdk.responses.retrieve(got.id) == got

    def test_retrieve_gives_an_incomplete_response_as_it_was(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """A response cut at its cap is stored incomplete, as the client got it."""
        got = answer(
            client, stream=stream, model=engine.capped_model, input=TELL_ME, max_output_tokens=4
        )
        assert got.status == "incomplete"
        assert client.sdk.responses.retrieve(got.id) == got

    def test_retrieve_gives_a_turn_of_calls_as_it_was(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """A response of function calls is stored with its calls."""
        got = answer(client, stream=stream, model=engine.model, input=TELL_ME, tools=[WEATHER_TOOL])
        assert function_calls(got)
        assert client.sdk.responses.retrieve(got.id) == got


class TestInputItems:
    def test_input_items_are_the_requests_own_items_newest_first(
        self, engine: Engine, client: Client
    ) -> None:
        """A response's input items are its request's input, newest first by default and
        oldest first when asked, each with an id; a continuation lists only its own."""
        first = client.sdk.responses.create(model=engine.model, input=QUESTION_ITEMS)
        second = client.sdk.responses.create(
            model=engine.model, input=FOLLOW_UP, previous_response_id=first.id
        )
        oldest_first: list[Any] = client.sdk.responses.input_items.list(first.id, order="asc").data
        said = [(item.role, item.content[0].text) for item in oldest_first]
        assert said == [("developer", "Answer in one sentence."), ("user", TELL_ME)]
        newest_first = client.sdk.responses.input_items.list(first.id).data
        assert [item.id for item in newest_first] == [item.id for item in reversed(oldest_first)]
        assert all(item.id for item in oldest_first)
        assert len({item.id for item in oldest_first}) == len(oldest_first)
        own: Any
        (own,) = client.sdk.responses.input_items.list(second.id).data
        assert (own.type, own.role, own.content[0].text) == ("message", "user", FOLLOW_UP)

    def test_input_items_come_in_pages_the_sdk_follows(self, client: Client) -> None:
        """With a limit of one the first page says there is more, and the SDK's
        iteration follows ``after`` through every item in order."""
        texts = [f"Item number {number}." for number in range(5)]
        made = client.sdk.responses.create(
            model="sim-priced", input=[{"role": "user", "content": text} for text in texts]
        )
        page = client.sdk.responses.input_items.list(made.id, limit=1, order="asc")
        assert len(page.data) == 1 and page.has_more
        every: list[Any] = list(page)
        assert [item.content[0].text for item in every] == texts


class TestDelete:
    def test_delete_makes_the_response_404_and_its_continuation_a_400(
        self, engine: Engine, client: Client
    ) -> None:
        """Once deleted, a response cannot be read, listed, deleted again or continued;
        the refused continuation charges and records nothing."""
        made = client.sdk.responses.create(model=engine.model, input=TELL_ME)
        raw = client.sdk.responses.with_raw_response.delete(made.id)
        assert raw.http_request.method == "DELETE"
        assert json.loads(raw.content) == {
            "id": made.id,
            "object": "response.deleted",
            "deleted": True,
        }
        with pytest.raises(openai.NotFoundError) as read:
            client.sdk.responses.retrieve(made.id)
        assert_not_found(read)
        with pytest.raises(openai.NotFoundError) as listed:
            client.sdk.responses.input_items.list(made.id)
        assert_not_found(listed)
        with pytest.raises(openai.NotFoundError) as again:
            client.sdk.responses.delete(made.id)
        assert_not_found(again)
        before, records = client.balance_nano(), client.records()
        sent = engine.received_count()
        with pytest.raises(openai.BadRequestError) as continued:
            client.sdk.responses.create(
                model=engine.model, input=FOLLOW_UP, previous_response_id=made.id
            )
        assert_no_previous(continued)
        assert (client.balance_nano(), client.records()) == (before, records)
        assert engine.received_count() == sent
        assert client.stored_count() == 0


class TestTenancy:
    def test_another_accounts_key_finds_nothing_and_cannot_continue(
        self, engine: Engine, client: Client, gateway: LiveGateway
    ) -> None:
        """Another tenant gets the 404 of a missing id on retrieve, input_items and
        delete, and the 400 of a missing previous response; it is charged nothing, and
        the owner still reads its response."""
        made = client.sdk.responses.create(model=engine.model, input=TELL_ME)
        with client_of(gateway) as stranger:
            before = stranger.balance_nano()
            with pytest.raises(openai.NotFoundError) as read:
                stranger.sdk.responses.retrieve(made.id)
            assert_not_found(read)
            with pytest.raises(openai.NotFoundError) as listed:
                stranger.sdk.responses.input_items.list(made.id)
            assert_not_found(listed)
            with pytest.raises(openai.NotFoundError) as deleted:
                stranger.sdk.responses.delete(made.id)
            assert_not_found(deleted)
            with pytest.raises(openai.BadRequestError) as continued:
                stranger.sdk.responses.create(
                    model=engine.model, input=FOLLOW_UP, previous_response_id=made.id
                )
            assert_no_previous(continued)
            assert_changed_nothing(stranger, before)
        assert client.sdk.responses.retrieve(made.id) == made

    def test_another_key_of_the_same_account_reads_and_continues_it(
        self, client: Client, gateway: LiveGateway
    ) -> None:
        """A response belongs to the account, not the key: its other key reads it and
        continues it."""
        made = client.sdk.responses.create(model="sim-priced", input=TELL_ME)
        with client_of(gateway, account=client.account, amount=None) as colleague:
            assert colleague.sdk.responses.retrieve(made.id) == made
            later = colleague.sdk.responses.create(
                model="sim-priced", input=FOLLOW_UP, previous_response_id=made.id
            )
        assert later.previous_response_id == made.id


@pytest.mark.parametrize("stream", [False, True])
class TestStoreFalse:
    def test_a_response_not_stored_cannot_be_read_or_continued(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """``store: false`` is answered and billed but kept nowhere: retrieve is a 404 and
        a continuation a 400."""
        before = client.balance_nano()
        got = answer(client, stream=stream, model=engine.model, input=TELL_ME, store=False)
        assert stored_flag(got) is False
        assert got.status == "completed"
        assert_billed(client, before, client.record())
        assert client.stored_count() == 0
        with pytest.raises(openai.NotFoundError) as read:
            client.sdk.responses.retrieve(got.id)
        assert_not_found(read)
        with pytest.raises(openai.BadRequestError) as continued:
            client.sdk.responses.create(
                model=engine.model, input=FOLLOW_UP, previous_response_id=got.id
            )
        assert_no_previous(continued)


@pytest.mark.parametrize("stream", [False, True])
class TestStructuredOutput:
    def test_a_json_schema_format_answers_json_that_validates(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """A strict json_schema text format gets text that is an instance of the schema
        (the scripted one from the fakes), and reaches the upstream as its API says it."""
        got = answer(client, stream=stream, model=engine.model, input=TELL_ME, text=REPORT_FORMAT)
        instance = json.loads(got.output_text)
        jsonschema.Draft202012Validator(REPORT_SCHEMA).validate(instance)
        assert got.text is not None and got.text.format is not None
        assert got.text.format.type == "json_schema"
        if engine.received is not None:
            assert instance == REPORT
        if engine.name == "openai":
            sent = engine.last_received()["response_format"]
            assert sent["json_schema"]["schema"] == REPORT_SCHEMA
        elif engine.name == "anthropic":
            assert engine.last_received()["tool_choice"] == {"type": "tool", "name": "report"}

    def test_the_sdk_parse_helper_gives_a_parsed_instance(
        self, engine: Engine, client: Client, stream: bool
    ) -> None:
        """``responses.parse`` (or ``responses.stream``) with a pydantic model gives an
        instance of it."""
        if stream:
            with client.sdk.responses.stream(
                model=engine.model, input=TELL_ME, text_format=Report
            ) as events:
                parsed = events.get_final_response().output_parsed
        else:
            made = client.sdk.responses.parse(model=engine.model, input=TELL_ME, text_format=Report)
            parsed = made.output_parsed
        assert isinstance(parsed, Report)
        if engine.received is not None:
            assert parsed.model_dump() == REPORT


class TestReasoning:
    @pytest.mark.parametrize("stream", [False, True])
    def test_a_reasoning_effort_on_the_sim_counts_reasoning_tokens(
        self, client: Client, stream: bool
    ) -> None:
        """The sim reasons first: a reasoning item with its summary, then the message;
        the reasoning tokens are part of the output tokens, the record's, billed once."""
        before = client.balance_nano()
        got = answer(
            client, stream=stream, model="sim-priced", input=TELL_ME, reasoning={"effort": "low"}
        )
        items = output_of(got)
        assert [item.type for item in items] == ["reasoning", "message"]
        assert items[0].summary[0].text
        assert got.usage is not None
        reasoning = got.usage.output_tokens_details.reasoning_tokens
        assert 0 < reasoning < got.usage.output_tokens
        record = client.record()
        assert_usage_is_the_record(got.usage, record)
        assert_billed(client, before, record)

    def test_a_higher_effort_spends_more_reasoning_tokens_and_none_spends_none(
        self, client: Client
    ) -> None:
        """On the sim, high reasons longer than low, and no effort not at all."""
        spent = {}
        for effort in ("low", "high", None):
            options: dict[str, Any] = {} if effort is None else {"reasoning": {"effort": effort}}
            got = client.sdk.responses.create(model="sim-priced", input=TELL_ME, **options)
            assert got.usage is not None
            spent[effort] = got.usage.output_tokens_details.reasoning_tokens
        assert spent["high"] > spent["low"] > spent[None] == 0

    def test_a_reasoning_effort_goes_up_to_each_upstream(
        self, upstreams: Upstreams, client: Client
    ) -> None:
        """The fake OpenAI agent gets it as ``reasoning_effort`` and its reasoning tokens
        come back; the fake Anthropic API gets thinking, and its thinking comes back as a
        reasoning item."""
        openai_engine = engine_named("openai", upstreams)
        got = client.sdk.responses.create(
            model=openai_engine.model, input=TELL_ME, reasoning={"effort": "low"}
        )
        assert openai_engine.last_received()["reasoning_effort"] == "low"
        assert got.usage is not None and got.usage.output_tokens_details.reasoning_tokens > 0
        anthropic_engine = engine_named("anthropic", upstreams)
        thought = client.sdk.responses.create(
            model=anthropic_engine.model, input=TELL_ME, reasoning={"effort": "low"}
        )
        assert anthropic_engine.last_received()["thinking"]["type"] == "enabled"
        (reasoning,) = [item for item in thought.output if item.type == "reasoning"]
        assert reasoning.summary[0].text == FAKE_THINKING_TEXT
        assert thought.usage is not None
        assert thought.usage.output_tokens_details.reasoning_tokens > 0
        assert_usage_is_the_record(thought.usage, client.record())
