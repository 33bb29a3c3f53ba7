"""The ``openai`` engine's translation for surfaces other than chat, pure: neutral call ->
chat completions request (messages, images, tool calls and results, tools and tool choice,
output formats, reasoning effort, sampling, the cap, streams), the requests it refuses
naming the field; a ``chat.completion`` body -> neutral parts and finish; chunks -> neutral
deltas with the meter filled as they come, and malformed chunks as upstream errors."""

from __future__ import annotations

from typing import Any

import pytest

from tokenmill.engines.chat_translate import (
    ChatChunkTranslator,
    chat_answer,
    chat_logprobs,
    chat_request,
    reasoning_effort,
)
from tokenmill.errors import InvalidRequest, UpstreamError
from tokenmill.neutral import (
    Delta,
    DocumentPart,
    Finish,
    ImagePart,
    Message,
    NeutralCall,
    OutputFormat,
    PromptSize,
    Reasoning,
    ReasoningDelta,
    ReasoningPart,
    Sampling,
    TextDelta,
    TextPart,
    TokenLogprob,
    Tool,
    ToolCallDelta,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    UsageReport,
)
from tokenmill.usage import Meter, TokenCounts, count_text_tokens

ENGINE = "vllm-local"
UPSTREAM_MODEL = "qwen3-8b"
CAP = 64
CLOCK_NS = 123_456_789
HELLO = Message("user", (TextPart("hello there"),))
WEATHER = Tool("weather", "The weather in a city.", {"type": "object", "properties": {}})
PING = Tool("ping", "", {"type": "object"}, strict=True)
PNG = "data:image/png;base64,iVBORw0KGgo="
USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}


def call_of(*messages: Message, stream: bool = False, **fields: Any) -> NeutralCall:
    """A neutral call of the messages surface with ``messages`` (HELLO when none)."""
    chosen = messages or (HELLO,)
    return NeutralCall(
        surface="messages",
        model="house",
        body={},
        stream=stream,
        include_usage=False,
        output_tokens_max=CAP,
        prompt=PromptSize(100),
        read_messages=lambda: chosen,
        **fields,
    )


def request_of(call: NeutralCall, cap: int | None = CAP, stream: bool = False) -> dict[str, Any]:
    return chat_request(call, cap, UPSTREAM_MODEL, ENGINE, stream=stream)


def refused_param(call: NeutralCall) -> str | None:
    with pytest.raises(InvalidRequest) as raised:
        request_of(call)
    return raised.value.param


class TestMessages:
    def test_a_plain_call_is_the_model_the_messages_and_the_cap(self) -> None:
        """The upstream's model name, one user message as a string, the cap as max_tokens."""
        assert request_of(call_of()) == {
            "model": UPSTREAM_MODEL,
            "messages": [{"role": "user", "content": "hello there"}],
            "max_tokens": CAP,
        }

    def test_no_cap_sends_no_max_tokens(self) -> None:
        """Without a cap the server's own default applies."""
        assert "max_tokens" not in request_of(call_of(), cap=None)

    def test_system_messages_stay_system_messages_in_their_place(self) -> None:
        """System text goes up as a chat system message, in order, with its name."""
        system = Message("system", (TextPart("be brief"),), name="rules")
        messages = request_of(call_of(system, HELLO))["messages"]
        assert messages == [
            {"role": "system", "content": "be brief", "name": "rules"},
            {"role": "user", "content": "hello there"},
        ]

    def test_user_text_and_images_are_content_parts(self) -> None:
        """Several parts go up as chat content parts; an image keeps its URL and detail."""
        user = Message("user", (TextPart("what is this?"), ImagePart(PNG, "low")))
        content = request_of(call_of(user))["messages"][0]["content"]
        assert content == [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
        ]

    def test_an_image_without_detail_sends_only_its_url(self) -> None:
        """No detail asked: none is sent."""
        user = Message("user", (ImagePart("https://example.com/a.png"),))
        content = request_of(call_of(user))["messages"][0]["content"]
        assert content == [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]

    def test_assistant_tool_calls_go_up_as_function_calls_without_reasoning(self) -> None:
        """Text and tool calls stay; reasoning is left out (chat servers take none back)."""
        assistant = Message(
            "assistant",
            (
                ReasoningPart("I should look it up.", "sig"),
                TextPart("Looking."),
                ToolCallPart("call_1", "weather", '{"city":"Paris"}'),
            ),
        )
        message = request_of(call_of(HELLO, assistant))["messages"][1]
        assert message == {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        }

    def test_an_assistant_turn_of_calls_only_has_null_content(self) -> None:
        """OpenAI's shape for a turn that only calls tools."""
        assistant = Message("assistant", (ToolCallPart("call_1", "ping", "{}"),))
        assert request_of(call_of(HELLO, assistant))["messages"][1]["content"] is None

    def test_tool_results_are_tool_messages_one_per_result(self) -> None:
        """Each result is a ``tool`` message with its call's id and its text joined."""
        results = Message(
            "tool",
            (
                ToolResultPart("call_1", (TextPart("sunny"), TextPart("21 C"))),
                ToolResultPart("call_2", (), is_error=True),
            ),
        )
        messages = request_of(call_of(HELLO, results))["messages"][1:]
        assert messages == [
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny\n21 C"},
            {"role": "tool", "tool_call_id": "call_2", "content": ""},
        ]

    def test_no_messages_is_refused(self) -> None:
        """An empty conversation cannot go up."""
        call = NeutralCall(
            surface="responses",
            model="house",
            body={},
            stream=False,
            include_usage=False,
            output_tokens_max=CAP,
            prompt=PromptSize(0),
        )
        assert refused_param(call) == "messages"


class TestRefusals:
    def test_a_document_is_refused_naming_its_message(self) -> None:
        """Chat servers here read no documents: refused before anything goes up."""
        user = Message("user", (TextPart("summarise"), DocumentPart("application/pdf", "JVBE")))
        assert refused_param(call_of(HELLO, user)) == "messages.[1].content"

    def test_an_image_in_a_tool_result_is_refused_naming_its_message(self) -> None:
        """Chat tool messages take text only."""
        results = Message("tool", (ToolResultPart("call_1", (ImagePart(PNG),)),))
        assert refused_param(call_of(HELLO, results)) == "messages.[1].content"

    def test_a_document_in_a_tool_result_is_refused(self) -> None:
        """Neither images nor documents go up in a tool result."""
        document = DocumentPart("application/pdf", url="https://example.com/a.pdf")
        results = Message("tool", (ToolResultPart("call_1", (document,)),))
        assert refused_param(call_of(HELLO, results)) == "messages.[1].content"

    @pytest.mark.parametrize(
        "message",
        [
            Message("system", (ImagePart(PNG),)),
            Message("assistant", (ImagePart(PNG),)),
            Message("user", (ToolCallPart("call_1", "ping", "{}"),)),
            Message("tool", (TextPart("loose text"),)),
        ],
        ids=["system-image", "assistant-image", "user-tool-call", "tool-text"],
    )
    def test_a_part_its_role_cannot_carry_is_refused(self, message: Message) -> None:
        """The message is named: the neutral messages are the client's, one for one."""
        assert refused_param(call_of(HELLO, message)) == "messages.[1].content"

    def test_a_required_tool_choice_without_tools_is_refused(self) -> None:
        """Nothing to call."""
        assert refused_param(call_of(tool_choice=ToolChoice("required"))) == "tool_choice"

    def test_forcing_a_tool_not_given_is_refused(self) -> None:
        """Only an offered tool can be forced."""
        call = call_of(tools=(WEATHER,), tool_choice=ToolChoice("tool", "ping"))
        assert refused_param(call) == "tool_choice"

    def test_a_json_schema_format_without_a_schema_is_refused(self) -> None:
        """json_schema needs its schema."""
        call = call_of(output_format=OutputFormat("json_schema"))
        assert refused_param(call) == "response_format"


class TestTools:
    def test_tools_are_function_tools_with_parameters_and_strict(self) -> None:
        """Descriptions only where given, strict only where asked; auto by default."""
        request = request_of(call_of(tools=(WEATHER, PING)))
        assert request["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "parameters": WEATHER.parameters,
                    "description": "The weather in a city.",
                },
            },
            {
                "type": "function",
                "function": {"name": "ping", "parameters": {"type": "object"}, "strict": True},
            },
        ]
        assert request["tool_choice"] == "auto"
        assert "parallel_tool_calls" not in request

    @pytest.mark.parametrize("mode", ["auto", "none", "required"])
    def test_tool_choice_modes_are_chats_words(self, mode: Any) -> None:
        """auto, none and required go up as they are."""
        request = request_of(call_of(tools=(WEATHER,), tool_choice=ToolChoice(mode)))
        assert request["tool_choice"] == mode

    def test_a_forced_tool_is_a_function_choice(self) -> None:
        """Mode tool names the function."""
        call = call_of(tools=(WEATHER, PING), tool_choice=ToolChoice("tool", "ping"))
        assert request_of(call)["tool_choice"] == {"type": "function", "function": {"name": "ping"}}

    def test_parallel_calls_turned_off_sends_parallel_tool_calls_false(self) -> None:
        """One call per turn when the client allows no more."""
        call = call_of(tools=(WEATHER,), tool_choice=ToolChoice(parallel=False))
        assert request_of(call)["parallel_tool_calls"] is False

    def test_no_tools_send_no_tool_fields(self) -> None:
        """tool_choice none without tools asks for nothing."""
        request = request_of(call_of(tool_choice=ToolChoice("none")))
        assert not {"tools", "tool_choice", "parallel_tool_calls"} & request.keys()


class TestFormatsReasoningSampling:
    def test_json_object_is_a_json_object_response_format(self) -> None:
        """OpenAI's JSON mode."""
        call = call_of(output_format=OutputFormat("json_object"))
        assert request_of(call)["response_format"] == {"type": "json_object"}

    def test_json_schema_carries_its_name_schema_and_strictness(self) -> None:
        """A named, strict schema goes up as it is; an unnamed one gets a name."""
        schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
        named = call_of(output_format=OutputFormat("json_schema", "point", schema, strict=True))
        assert request_of(named)["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "point", "schema": schema, "strict": True},
        }
        unnamed = call_of(output_format=OutputFormat("json_schema", schema=schema))
        assert request_of(unnamed)["response_format"]["json_schema"]["name"] == "answer"

    def test_a_text_format_sends_no_response_format(self) -> None:
        """Text is the default."""
        assert "response_format" not in request_of(call_of())

    def test_an_effort_goes_up_as_reasoning_effort(self) -> None:
        """The effort as it was asked."""
        call = call_of(reasoning=Reasoning(effort="high", budget_tokens=100))
        assert request_of(call)["reasoning_effort"] == "high"

    @pytest.mark.parametrize(
        ("budget", "effort"),
        [(1024, "low"), (2048, "low"), (2049, "medium"), (8192, "medium"), (8193, "high")],
    )
    def test_a_budget_without_effort_reads_as_an_effort(self, budget: int, effort: str) -> None:
        """Up to 2048 low, up to 8192 medium, above that high."""
        assert reasoning_effort(Reasoning(budget_tokens=budget)) == effort

    def test_reasoning_with_neither_effort_nor_budget_leaves_the_servers_default(self) -> None:
        """Nothing to send."""
        assert "reasoning_effort" not in request_of(call_of(reasoning=Reasoning()))

    def test_sampling_and_stop_go_up_by_chats_names(self) -> None:
        """temperature, top_p, top_k and seed as given; stop as a list."""
        sampling = Sampling(temperature=0.2, top_p=0.9, top_k=40, seed=7)
        request = request_of(call_of(sampling=sampling, stop=("END", "STOP")))
        assert request["temperature"] == 0.2
        assert request["top_p"] == 0.9
        assert request["top_k"] == 40
        assert request["seed"] == 7
        assert request["stop"] == ["END", "STOP"]

    def test_unset_sampling_sends_nothing(self) -> None:
        """The server's defaults apply."""
        assert not {"temperature", "top_p", "top_k", "seed", "stop"} & request_of(call_of()).keys()

    def test_a_stream_asks_for_usage(self) -> None:
        """The upstream is always asked for its usage in a stream."""
        request = request_of(call_of(stream=True), stream=True)
        assert request["stream"] is True
        assert request["stream_options"] == {"include_usage": True}

    def test_logprobs_go_up_when_asked(self) -> None:
        """logprobs and top_logprobs by chat's names."""
        request = request_of(call_of(logprobs=True, top_logprobs=2))
        assert request["logprobs"] is True
        assert request["top_logprobs"] == 2


def completion_of(message: dict[str, Any], finish: Any = "stop", **fields: Any) -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
    return {"object": "chat.completion", "choices": [choice], "usage": USAGE, **fields}


class TestAnswers:
    def test_reasoning_text_and_tool_calls_become_parts_in_order(self) -> None:
        """reasoning_content, content, then each tool call with its JSON text."""
        call = {"id": "call_1", "type": "function", "function": {"name": "ping", "arguments": "{}"}}
        answer = completion_of(
            {"content": "Let me check.", "reasoning_content": "Hmm.", "tool_calls": [call]},
            "tool_calls",
        )
        parts, finish = chat_answer(answer, ENGINE)
        assert parts == (
            ReasoningPart("Hmm."),
            TextPart("Let me check."),
            ToolCallPart("call_1", "ping", "{}"),
        )
        assert finish == "tool_calls"

    def test_reasoning_under_its_newer_name_is_read_too(self) -> None:
        """vLLM's and Ollama's ``reasoning``."""
        parts, _ = chat_answer(completion_of({"content": "Hi.", "reasoning": "Think."}), ENGINE)
        assert parts == (ReasoningPart("Think."), TextPart("Hi."))

    def test_a_refusal_is_the_answers_text(self) -> None:
        """No content but a refusal: the refusal is what the model said."""
        parts, _ = chat_answer(completion_of({"content": None, "refusal": "I can't."}), ENGINE)
        assert parts == (TextPart("I can't."),)

    @pytest.mark.parametrize(
        ("reason", "finish"),
        [
            ("stop", "stop"),
            ("length", "length"),
            ("tool_calls", "tool_calls"),
            ("function_call", "tool_calls"),
            ("content_filter", "content_filter"),
            ("abort", "stop"),
            (None, "stop"),
        ],
    )
    def test_finish_reasons_map_to_neutral_finishes(self, reason: Any, finish: str) -> None:
        """Chat's reasons as they are; an unknown or missing one reads as stop."""
        assert chat_answer(completion_of({"content": "x"}, reason), ENGINE)[1] == finish

    def test_a_stop_after_tool_calls_is_a_tool_calls_finish(self) -> None:
        """Some servers end a turn of calls with stop; clients loop on tool_calls."""
        call = {"id": "call_1", "function": {"name": "ping", "arguments": "{}"}}
        answer = completion_of({"content": None, "tool_calls": [call]}, "stop")
        assert chat_answer(answer, ENGINE)[1] == "tool_calls"

    @pytest.mark.parametrize(
        "answer",
        [
            [],
            {"choices": []},
            {"choices": "x"},
            {"choices": [{"index": 0}]},
            {"error": {"message": "boom"}},
            completion_of({"content": 7}),
            completion_of({"content": None, "tool_calls": {}}),
            completion_of({"tool_calls": [{"id": "c", "function": {"name": "ping"}}]}),
            completion_of({"tool_calls": [{"function": {"name": "ping", "arguments": "{}"}}]}),
            completion_of({"content": "x"}, 3),
        ],
    )
    def test_a_malformed_answer_is_an_upstream_error(self, answer: Any) -> None:
        """Never another exception."""
        with pytest.raises(UpstreamError):
            chat_answer(answer, ENGINE)

    def test_logprobs_are_read_with_their_top_alternatives(self) -> None:
        """OpenAI's logprobs content as token log probabilities."""
        entry = {"token": "Hi", "logprob": -0.5, "top_logprobs": [{"token": "Yo", "logprob": -2}]}
        choice = {"logprobs": {"content": [entry]}}
        assert chat_logprobs(choice, ENGINE) == (TokenLogprob("Hi", -0.5, (("Yo", -2.0),)),)
        assert chat_logprobs({"logprobs": None}, ENGINE) == ()
        with pytest.raises(UpstreamError):
            chat_logprobs({"logprobs": {"content": [{"token": "Hi"}]}}, ENGINE)


def chunk_of(delta: dict[str, Any] | None = None, finish: Any = None, **fields: Any) -> Any:
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    return {"object": "chat.completion.chunk", "choices": [choice], **fields}


def translated(*chunks: Any, logprobs: bool = False) -> tuple[list[Delta], Meter]:
    meter = Meter()
    translator = ChatChunkTranslator(meter, ENGINE, lambda: CLOCK_NS, logprobs=logprobs)
    deltas = [delta for chunk in chunks for delta in translator.deltas(chunk)]
    return [*deltas, *translator.end()], meter


class TestChunks:
    def test_a_text_stream_is_text_deltas_then_the_finish_and_the_usage(self) -> None:
        """The role chunk says nothing; usage comes once, at the end, and reaches the meter."""
        deltas, meter = translated(
            chunk_of({"role": "assistant", "content": ""}),
            chunk_of({"content": "Hello "}),
            chunk_of({"content": "world."}),
            chunk_of({}, "stop"),
            {"object": "chat.completion.chunk", "choices": [], "usage": USAGE},
        )
        counts = TokenCounts(9, 4)
        assert deltas == [
            TextDelta("Hello "),
            TextDelta("world."),
            Finish("stop"),
            UsageReport(counts),
        ]
        assert meter.reported == counts
        assert meter.first_token_at_ns == CLOCK_NS

    def test_running_usage_totals_keep_the_last_one(self) -> None:
        """Totals, not increments."""
        first = {"prompt_tokens": 9, "completion_tokens": 1}
        deltas, meter = translated(
            chunk_of({"content": "a"}, usage=first), chunk_of({"content": "b"}, usage=USAGE)
        )
        assert meter.reported == TokenCounts(9, 4)
        assert deltas[-1] == UsageReport(TokenCounts(9, 4))

    def test_reasoning_streams_as_reasoning_deltas(self) -> None:
        """reasoning_content (or reasoning) before the text."""
        deltas, _ = translated(
            chunk_of({"reasoning_content": "Think."}),
            chunk_of({"reasoning": "More."}),
            chunk_of({"content": "Hi."}, "stop"),
        )
        assert deltas == [
            ReasoningDelta("Think."),
            ReasoningDelta("More."),
            TextDelta("Hi."),
            Finish("stop"),
        ]

    def test_tool_calls_keep_their_indexes_with_the_id_and_name_first(self) -> None:
        """Arguments come in pieces; repeated ids and names are dropped."""
        start = {"index": 1, "id": "call_1", "type": "function", "function": {"name": "ping"}}
        deltas, _ = translated(
            chunk_of({"tool_calls": [{**start, "function": {"name": "ping", "arguments": ""}}]}),
            chunk_of({"tool_calls": [{"index": 1, "function": {"arguments": '{"a"'}}]}),
            chunk_of({"tool_calls": [{**start, "function": {"arguments": ":1}"}}]}),
            chunk_of({}, "tool_calls"),
        )
        assert deltas == [
            ToolCallDelta(1, "call_1", "ping", ""),
            ToolCallDelta(1, arguments='{"a"'),
            ToolCallDelta(1, arguments=":1}"),
            Finish("tool_calls"),
        ]

    def test_a_stop_after_tool_calls_finishes_as_tool_calls(self) -> None:
        """As in whole answers."""
        call = {"index": 0, "id": "call_1", "function": {"name": "ping", "arguments": "{}"}}
        deltas, _ = translated(chunk_of({"tool_calls": [call]}), chunk_of({}, "stop"))
        assert deltas[-1] == Finish("tool_calls")

    def test_a_tool_call_without_an_index_is_read_by_its_position(self) -> None:
        """Servers that number none send whole calls."""
        calls = [
            {"id": "call_1", "function": {"name": "a", "arguments": "{}"}},
            {"id": "call_2", "function": {"name": "b", "arguments": "{}"}},
        ]
        deltas, _ = translated(chunk_of({"tool_calls": calls}, "tool_calls"))
        assert deltas[:2] == [
            ToolCallDelta(0, "call_1", "a", "{}"),
            ToolCallDelta(1, "call_2", "b", "{}"),
        ]

    def test_a_stream_without_a_finish_or_usage_ends_with_stop_and_no_report(self) -> None:
        """The gateway makes the usage from the meter; the meter has estimates."""
        deltas, meter = translated(chunk_of({"content": "one two three"}))
        assert deltas == [TextDelta("one two three"), Finish("stop")]
        assert meter.reported is None
        assert meter.completion_tokens_estimate == count_text_tokens("one two three")

    def test_a_finish_comes_once(self) -> None:
        """A repeated finish_reason is not a second Finish."""
        deltas, _ = translated(chunk_of({}, "length"), chunk_of({}, "stop"))
        assert deltas == [Finish("length")]

    def test_logprobs_ride_on_text_deltas_when_asked(self) -> None:
        """Only when the call asked for them."""
        logprobs = {"content": [{"token": "Hi", "logprob": -0.1, "top_logprobs": []}]}
        chunk = {"choices": [{"index": 0, "delta": {"content": "Hi"}, "logprobs": logprobs}]}
        asked, _ = translated(chunk, logprobs=True)
        assert asked[0] == TextDelta("Hi", (TokenLogprob("Hi", -0.1),))
        not_asked, _ = translated(chunk)
        assert not_asked[0] == TextDelta("Hi")

    def test_nothing_is_metered_before_the_first_produced_text(self) -> None:
        """The role chunk is no token."""
        meter = Meter()
        translator = ChatChunkTranslator(meter, ENGINE, lambda: CLOCK_NS)
        assert translator.deltas(chunk_of({"role": "assistant", "content": ""})) == []
        assert meter.first_token_at_ns is None
        assert meter.completion_tokens_estimate == 0

    @pytest.mark.parametrize(
        "chunk",
        [
            [],
            "text",
            {"choices": {}},
            {"choices": ["x"]},
            chunk_of(delta=None) | {"choices": [{"index": 0, "delta": "x"}]},
            chunk_of({"content": 1}),
            chunk_of({"reasoning_content": ["x"]}),
            chunk_of({"tool_calls": {}}),
            chunk_of({"tool_calls": ["x"]}),
            chunk_of({"tool_calls": [{"index": "0", "id": "c", "function": {"name": "a"}}]}),
            chunk_of({"tool_calls": [{"index": 0, "function": {"name": "a"}}]}),
            chunk_of({"tool_calls": [{"index": 0, "id": "c", "function": "a"}]}),
            chunk_of({"tool_calls": [{"index": 0, "id": "c", "function": {"arguments": 1}}]}),
            chunk_of({}, 1),
            {"error": {"message": "the model crashed"}},
        ],
    )
    def test_a_malformed_chunk_is_an_upstream_error(self, chunk: Any) -> None:
        """Never another exception."""
        translator = ChatChunkTranslator(Meter(), ENGINE, lambda: CLOCK_NS)
        with pytest.raises(UpstreamError):
            translator.deltas(chunk)

    def test_an_error_chunk_carries_its_message(self) -> None:
        """A server that fails mid-stream says why."""
        translator = ChatChunkTranslator(Meter(), ENGINE, lambda: CLOCK_NS)
        with pytest.raises(UpstreamError, match="the model crashed"):
            translator.deltas({"error": {"message": "the model crashed"}})
