"""The OpenAI Responses surface, its answers: neutral answers and deltas rendered as
response objects and typed events, and what the store keeps (pure, no I/O; the official
SDK reads the rendered bytes through a mock transport)."""

from __future__ import annotations

import importlib
from typing import Any

import openai
import orjson
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from tests.unit.responses_fixtures import PNG, WEATHER, parse
from tokenmill.errors import TokenmillError, UpstreamError
from tokenmill.neutral import (
    Answer,
    Finish,
    Message,
    NeutralCall,
    ReasoningDelta,
    ReasoningPart,
    TextDelta,
    TextPart,
    TokenLogprob,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    UsageReport,
    WirePart,
)
from tokenmill.surfaces.responses_render import (
    RESPONSES_WIRE,
    ResponsesRenderer,
    keep_response,
)
from tokenmill.usage import TokenCounts

COUNTS = TokenCounts(20, 9, cached_tokens=4, reasoning_tokens=2)
EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)


def events_of(raw: bytes) -> list[dict[str, Any]]:
    """The events of framed stream bytes, each checked: its event line names its type."""
    events = []
    for frame in raw.decode().split("\n\n"):
        if not frame:
            continue
        head, data = frame.split("\n")
        event = orjson.loads(data.removeprefix("data: "))
        assert head == f"event: {event['type']}"
        events.append(event)
    return events


def stream(call: NeutralCall, batches: list[list[Any]], counts: TokenCounts = COUNTS) -> bytes:
    renderer = ResponsesRenderer(call, "req_abc", 1700000000)
    raw = b"".join(
        RESPONSES_WIRE.frame(part) for batch in batches for part in renderer.parts(batch)
    )
    return raw + renderer.end(counts)


TOOL_TURN: list[list[Any]] = [
    [ReasoningDelta("Think"), ReasoningDelta(" more", signature="sig")],
    [TextDelta("Let me "), TextDelta("look.")],
    [ToolCallDelta(0, "call_1", "get_weather", '{"city":'), ToolCallDelta(0, arguments='"Oslo"}')],
    [ToolCallDelta(1, "call_2", "get_weather", '{"city":"Bergen"}')],
    [Finish("tool_calls"), UsageReport(COUNTS)],
]


def answer_call(**fields: Any) -> NeutralCall:
    return parse(tools=[WEATHER], **fields)


def rendered(answer: Answer, **fields: Any) -> dict[str, Any]:
    body = ResponsesRenderer(answer_call(**fields), "req_abc", 1700000000).body(answer)
    response: dict[str, Any] = orjson.loads(body)
    Response.model_validate(response)
    return response


class TestBody:
    def test_a_text_answer_is_a_completed_response(self) -> None:
        """The envelope, one assistant message and the usage in OpenAI's names."""
        response = rendered(Answer((TextPart("Hel"), TextPart("lo")), "stop", COUNTS))
        assert response["id"] == "resp_abc"
        assert response["object"] == "response"
        assert response["created_at"] == 1700000000
        assert response["status"] == "completed"
        assert response["error"] is None
        assert response["incomplete_details"] is None
        assert response["model"] == "chat"
        assert response["output"] == [
            {
                "type": "message",
                "id": "msg_abc_0",
                "role": "assistant",
                "status": "completed",
                "content": [
                    {"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}
                ],
            }
        ]
        assert response["usage"] == {
            "input_tokens": 20,
            "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
            "output_tokens": 9,
            "output_tokens_details": {"reasoning_tokens": 2},
            "total_tokens": 29,
        }

    def test_reasoning_and_tool_calls_are_items_of_their_own(self) -> None:
        """Each reasoning part and tool call is an output item with an id from its place."""
        parts = (
            ReasoningPart("thought", "sig"),
            ReasoningPart("", None, redacted=True),
            TextPart("calling"),
            ToolCallPart("call_1", "get_weather", '{"city":"Oslo"}'),
            ToolCallPart("call_2", "get_weather", "{}"),
        )
        output = rendered(Answer(parts, "tool_calls", COUNTS))["output"]
        assert [item["id"] for item in output] == ["rs_abc_0", "msg_abc_1", "fc_abc_2", "fc_abc_3"]
        assert output[0] == {
            "type": "reasoning",
            "id": "rs_abc_0",
            "summary": [{"type": "summary_text", "text": "thought"}],
            "encrypted_content": "sig",
        }
        assert output[2] == {
            "type": "function_call",
            "id": "fc_abc_2",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Oslo"}',
            "status": "completed",
        }

    def test_an_answer_cut_at_the_cap_is_incomplete(self) -> None:
        """Finish length: status incomplete for the response and its last item."""
        response = rendered(Answer((TextPart("abc"),), "length", COUNTS), max_output_tokens=3)
        assert response["status"] == "incomplete"
        assert response["incomplete_details"] == {"reason": "max_output_tokens"}
        assert response["output"][0]["status"] == "incomplete"
        assert response["max_output_tokens"] == 3

    def test_log_probabilities_go_with_the_text(self) -> None:
        """An answer's log probabilities are the message's output_text logprobs."""
        logprobs = (TokenLogprob("Hi", -0.5, (("Hi", -0.5), ("Yo", -1.0))),)
        answer = Answer((TextPart("Hi"),), "stop", COUNTS, logprobs=logprobs)
        (entry,) = rendered(answer)["output"][0]["content"][0]["logprobs"]
        assert (entry["token"], entry["logprob"], entry["bytes"]) == ("Hi", -0.5, [72, 105])
        assert [top["token"] for top in entry["top_logprobs"]] == ["Hi", "Yo"]

    def test_the_request_is_echoed(self) -> None:
        """instructions, tools as given, the choice, sampling, store and metadata."""
        response = rendered(
            Answer((TextPart("x"),), "stop", COUNTS),
            instructions="sys",
            tool_choice="required",
            temperature=0.2,
            store=False,
            metadata={"k": "v"},
            previous_response_id="resp_0",
            reasoning={"effort": "low"},
            text={"format": {"type": "json_object"}},
        )
        assert response["instructions"] == "sys"
        assert response["tools"] == [WEATHER]
        assert response["tool_choice"] == "required"
        assert response["temperature"] == 0.2
        assert response["store"] is False
        assert response["metadata"] == {"k": "v"}
        assert response["previous_response_id"] == "resp_0"
        assert response["reasoning"] == {"effort": "low", "summary": None}
        assert response["text"]["format"] == {"type": "json_object"}
        assert response["parallel_tool_calls"] is True

    def test_wire_bytes_are_not_an_answer_here(self) -> None:
        """No engine answers Responses bytes; getting them is a bug, not a relay."""
        renderer = ResponsesRenderer(parse(), "req_abc", 0)
        with pytest.raises(TypeError):
            renderer.body(b"{}")


class TestStream:
    def test_a_turn_streams_every_event_in_order_numbered_from_zero(self) -> None:
        """Reasoning, a message and two calls: added, deltas, done for each, then completed."""
        events = events_of(stream(answer_call(stream=True), TOOL_TURN))
        assert [event["sequence_number"] for event in events] == list(range(len(events)))
        assert [event["type"].removeprefix("response.") for event in events] == [
            "created", "in_progress",
            "output_item.added", "reasoning_summary_part.added",
            "reasoning_summary_text.delta", "reasoning_summary_text.delta",
            "reasoning_summary_text.done", "reasoning_summary_part.done", "output_item.done",
            "output_item.added", "content_part.added",
            "output_text.delta", "output_text.delta",
            "output_text.done", "content_part.done", "output_item.done",
            "output_item.added", "function_call_arguments.delta", "function_call_arguments.delta",
            "function_call_arguments.done", "output_item.done",
            "output_item.added", "function_call_arguments.delta",
            "function_call_arguments.done", "output_item.done",
            "completed",
        ]  # fmt: skip
        for event in events:
            assert EVENTS.validate_python(event).type == event["type"]

    def test_the_opening_response_is_in_progress_and_empty(self) -> None:
        """response.created and in_progress carry no output and no usage yet."""
        created, in_progress, *_ = events_of(stream(answer_call(stream=True), TOOL_TURN))
        for event in (created, in_progress):
            assert event["response"]["status"] == "in_progress"
            assert event["response"]["output"] == []
            assert event["response"]["usage"] is None

    def test_items_carry_their_pieces_and_the_whole_on_done(self) -> None:
        """Deltas name their item and place; done events carry the whole text and item."""
        events = events_of(stream(answer_call(stream=True), TOOL_TURN))
        by_type: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            by_type.setdefault(event["type"], []).append(event)
        delta = by_type["response.output_text.delta"][0]
        assert (delta["item_id"], delta["output_index"], delta["content_index"]) == (
            "msg_abc_1",
            1,
            0,
        )
        assert delta["delta"] == "Let me "
        assert by_type["response.output_text.done"][0]["text"] == "Let me look."
        assert by_type["response.reasoning_summary_text.done"][0]["text"] == "Think more"
        arguments = by_type["response.function_call_arguments.done"]
        assert [event["arguments"] for event in arguments] == [
            '{"city":"Oslo"}',
            '{"city":"Bergen"}',
        ]
        added = by_type["response.output_item.added"][2]["item"]
        assert (added["status"], added["arguments"], added["call_id"]) == (
            "in_progress",
            "",
            "call_1",
        )
        done = [event["item"] for event in by_type["response.output_item.done"]]
        assert done[0]["encrypted_content"] == "sig"
        assert [item["status"] for item in done[1:]] == ["completed"] * 3

    def test_the_last_event_carries_the_whole_output_and_usage(self) -> None:
        """response.completed has every item done and the committed counts."""
        *_, completed = events_of(stream(answer_call(stream=True), TOOL_TURN))
        done = [e["item"] for e in events_of(stream(answer_call(stream=True), TOOL_TURN))
                if e["type"] == "response.output_item.done"]  # fmt: skip
        response = completed["response"]
        assert response["status"] == "completed"
        assert response["output"] == done
        assert response["usage"]["total_tokens"] == 29
        Response.model_validate(response)

    def test_a_stream_cut_at_the_cap_ends_incomplete(self) -> None:
        """Finish length: response.incomplete, its reason, the open item incomplete."""
        batches: list[list[Any]] = [[TextDelta("abc")], [Finish("length")]]
        *_, item_done, last = events_of(stream(answer_call(stream=True), batches))
        assert item_done["item"]["status"] == "incomplete"
        assert last["type"] == "response.incomplete"
        assert last["response"]["status"] == "incomplete"
        assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}

    def test_an_empty_stream_still_opens_and_completes(self) -> None:
        """end() with no parts writes created, in_progress and completed."""
        events = events_of(stream(answer_call(stream=True), []))
        assert [event["type"] for event in events] == [
            "response.created",
            "response.in_progress",
            "response.completed",
        ]
        assert events[-1]["response"]["output"] == []

    def test_an_error_mid_stream_is_response_failed_in_sequence(self) -> None:
        """fail() continues the count, with the error and what was written so far."""
        renderer = ResponsesRenderer(answer_call(stream=True), "req_abc", 0)
        written = renderer.parts([TextDelta("partial")])
        events = events_of(renderer.fail(UpstreamError("the upstream broke")))
        (failed,) = events
        assert failed["type"] == "response.failed"
        assert failed["sequence_number"] == len(events_of(b"".join(p.payload for p in written)))
        assert failed["response"]["status"] == "failed"
        assert failed["response"]["error"] == {
            "code": "bad_gateway",
            "message": "the upstream broke",
        }
        assert failed["response"]["output"][0]["content"][0]["text"] == "partial"

    def test_an_error_before_any_part_opens_the_stream_first(self) -> None:
        """A failure before the first part still begins with response.created."""
        renderer = ResponsesRenderer(answer_call(stream=True), "req_abc", 0)
        error = TokenmillError("boom")
        events = events_of(renderer.fail(error))
        assert [event["type"] for event in events] == [
            "response.created",
            "response.in_progress",
            "response.failed",
        ]
        assert events[-1]["response"]["error"]["code"] == "server_error"

    def test_usage_is_never_a_usage_only_part(self) -> None:
        """usage() sends nothing of its own; the counts travel in response.completed."""
        part = ResponsesRenderer(parse(), "req_abc", 0).usage(COUNTS)
        assert isinstance(part, WirePart)
        assert not part.usage_only
        assert RESPONSES_WIRE.frame(part) == b""

    def test_log_probabilities_stream_with_the_text(self) -> None:
        """A delta's log probabilities are on its event and in the whole text."""
        logprob = TokenLogprob("a", -0.1)
        events = events_of(stream(answer_call(stream=True), [[TextDelta("a", (logprob,))]]))
        delta = next(e for e in events if e["type"] == "response.output_text.delta")
        assert delta["logprobs"][0]["token"] == "a"
        content = events[-1]["response"]["output"][0]["content"][0]
        assert content["logprobs"][0]["logprob"] == -0.1

    def test_wire_parts_pass_as_they_are(self) -> None:
        """An engine's own events are relayed untouched."""
        part = WirePart(b"event: x\ndata: {}\n\n")
        assert ResponsesRenderer(parse(), "req_abc", 0).parts([part]) == [part]


class TestKept:
    def test_the_store_keeps_the_body_the_client_saw(self) -> None:
        """kept() after a body: that response, its output and the normalized input."""
        items = [
            {"role": "developer", "content": "rules"},
            {"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                         {"type": "input_image", "image_url": PNG}]},
            {"role": "assistant", "content": "before"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}",
             "id": "fc_x"},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            {"type": "reasoning", "id": "rs_x", "status": "completed",
             "summary": [{"type": "summary_text", "text": "s"}]},
        ]  # fmt: skip
        call = parse(input=items, previous_response_id="resp_0")
        renderer = ResponsesRenderer(call, "req_abc", 7)
        body = renderer.body(Answer((TextPart("done"),), "stop", COUNTS))
        kept = renderer.kept(COUNTS)
        assert kept.response == orjson.loads(body)
        assert (kept.id, kept.previous_response_id, kept.model, kept.created_s) == (
            "resp_abc", "resp_0", "chat", 7,
        )  # fmt: skip
        assert kept.output_items == tuple(kept.response["output"])
        assert kept.input_items == (
            {"id": "msg_abc_in0", "type": "message", "role": "developer", "status": "completed",
             "content": [{"type": "input_text", "text": "rules"}]},
            {"id": "msg_abc_in1", "type": "message", "role": "user", "status": "completed",
             "content": [{"type": "input_text", "text": "hi"},
                         {"type": "input_image", "image_url": PNG, "detail": "auto"}]},
            {"id": "msg_abc_in2", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "before", "annotations": []}]},
            {"id": "fc_x", "type": "function_call", "call_id": "c1", "name": "f",
             "arguments": "{}", "status": "completed"},
            {"id": "fco_abc_in4", "type": "function_call_output", "call_id": "c1",
             "output": "ok", "status": "completed"},
            {"id": "rs_x", "type": "reasoning",
             "summary": [{"type": "summary_text", "text": "s"}], "encrypted_content": None},
        )  # fmt: skip

    def test_the_store_keeps_the_last_event_of_a_stream(self) -> None:
        """kept() after end(): the response of response.completed."""
        renderer = ResponsesRenderer(answer_call(stream=True), "req_abc", 0)
        for batch in TOOL_TURN:
            renderer.parts(batch)
        *_, completed = events_of(renderer.end(COUNTS))
        kept = renderer.kept(COUNTS)
        assert kept.response == completed["response"]
        assert [item["type"] for item in kept.output_items] == [
            "reasoning", "message", "function_call", "function_call",
        ]  # fmt: skip
        assert kept.input_items[0]["content"] == [{"type": "input_text", "text": "hi"}]

    def test_a_response_asked_not_to_be_stored_is_not_kept(self) -> None:
        """store: false keeps nothing; by default the response is kept."""
        answer = Answer((TextPart("x"),), "stop", COUNTS)
        kept, skipped = (
            ResponsesRenderer(parse(store=store), "req_abc", 0) for store in (True, False)
        )
        for renderer in (kept, skipped):
            renderer.body(answer)
        assert keep_response(kept, COUNTS) is not None
        assert keep_response(skipped, COUNTS) is None

    def test_kept_items_read_back_as_the_same_conversation(self) -> None:
        """A kept turn given as prior reads as the messages it was, then the new input."""
        renderer = ResponsesRenderer(answer_call(), "req_abc", 0)
        parts = (ReasoningPart("why", "sig"), ToolCallPart("c1", "get_weather", "{}"))
        renderer.body(Answer(parts, "tool_calls", COUNTS))
        kept = renderer.kept(COUNTS)
        follow_up = [{"type": "function_call_output", "call_id": "c1", "output": "4 C"}]
        prior = kept.input_items + kept.output_items
        call = parse(input=follow_up, prior=prior, instructions="sys")
        assert call.messages == (
            Message("system", (TextPart("sys"),)),
            Message("user", (TextPart("hi"),)),
            Message(
                "assistant", (ReasoningPart("why", "sig"), ToolCallPart("c1", "get_weather", "{}"))
            ),
            Message("tool", (ToolResultPart("c1", (TextPart("4 C"),)),)),
        )


def sdk_client(payload: bytes, content_type: str) -> openai.OpenAI:
    """The official client, answered by ``payload`` instead of a network."""
    # The HTTP library the installed SDK is built on: httpx, or httpx2 from openai 3.x.
    http: Any = importlib.import_module(
        openai.DefaultHttpxClient.__mro__[1].__module__.split(".")[0]
    )

    def answer(request: Any) -> Any:
        assert request.url.path == "/v1/responses"
        return http.Response(200, content=payload, headers={"content-type": content_type})

    return openai.OpenAI(
        base_url="http://tokenmill.test/v1",
        api_key="x",
        max_retries=0,
        http_client=http.Client(transport=http.MockTransport(answer)),
    )


class TestOfficialClient:
    def test_the_sdk_reads_a_body(self) -> None:
        """responses.create parses the body: output_text, calls and usage."""
        parts = (TextPart("Hello"), ToolCallPart("call_1", "get_weather", '{"city":"Oslo"}'))
        body = ResponsesRenderer(answer_call(), "req_abc", 0).body(
            Answer(parts, "tool_calls", COUNTS)
        )
        client = sdk_client(body, "application/json")
        response = client.responses.create(model="chat", input="hi")
        assert response.id == "resp_abc"
        assert response.output_text == "Hello"
        assert response.output[1].type == "function_call"
        assert response.usage is not None
        assert (response.usage.input_tokens, response.usage.output_tokens) == (20, 9)
        assert response.usage.input_tokens_details.cached_tokens == 4

    def test_the_sdk_reads_the_stream_events(self) -> None:
        """create(stream=True) yields every event, typed, in sequence."""
        raw = stream(answer_call(stream=True), TOOL_TURN)
        client = sdk_client(raw, "text/event-stream")
        events = list(client.responses.create(model="chat", input="hi", stream=True))
        assert [event.sequence_number for event in events] == list(range(len(events)))
        assert events[0].type == "response.created"
        assert events[-1].type == "response.completed"

    def test_the_sdk_stream_helper_builds_the_final_response(self) -> None:
        """responses.stream accumulates text deltas and its final response has everything."""
        raw = stream(answer_call(stream=True), TOOL_TURN)
        client = sdk_client(raw, "text/event-stream")
        tools: Any = [WEATHER]  # a plain dict where the SDK types a TypedDict
        with client.responses.stream(model="chat", input="hi", tools=tools) as events:
            texts = [e.delta for e in events if e.type == "response.output_text.delta"]
            final = events.get_final_response()
        assert "".join(texts) == "Let me look."
        assert final.output_text == "Let me look."
        calls = [item for item in final.output if item.type == "function_call"]
        assert [(call.call_id, call.arguments) for call in calls] == [
            ("call_1", '{"city":"Oslo"}'),
            ("call_2", '{"city":"Bergen"}'),
        ]
        assert final.usage is not None
        assert final.usage.total_tokens == 29
        assert final.usage.output_tokens_details.reasoning_tokens == 2
