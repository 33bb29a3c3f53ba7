"""The ``openai`` engine serving surfaces other than chat (Anthropic Messages, OpenAI
Responses) against the fake OpenAI upstream over real HTTP on loopback: the neutral call goes
up as chat completions, the answer comes back as neutral parts or deltas with the meter
filled, tool calls make the round trip, upstream failures are mapped, and a chat call still
passes through byte for byte.

The backend is built as the gateway builds it (an ``UpstreamSession`` per upstream), on a
fresh event loop per test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tokenmill.config import DeploymentConfig, Limits, OpenAIEngineConfig
from tokenmill.engines.base import Completed, EngineCall, StreamPart
from tokenmill.engines.openai_compat import OpenAIBackend
from tokenmill.engines.upstream import UpstreamSession
from tokenmill.errors import InvalidRequest, RateLimited, TokenmillError, UpstreamError
from tokenmill.neutral import (
    Answer,
    DocumentPart,
    Finish,
    Message,
    NeutralCall,
    PromptSize,
    ReasoningPart,
    Surface,
    TextDelta,
    TextPart,
    Tool,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    UsageReport,
    WirePart,
    prompt_tokens_estimate,
)
from tokenmill.testing import FAKE_WORDS, AgentScript, FakeUpstreamState
from tokenmill.usage import Meter, TokenCounts, count_text_tokens

Upstream = tuple[str, FakeUpstreamState]
SURFACES = ("messages", "responses")
CAP = 4
QUESTION = Message("user", (TextPart("one two three"),))
PROMPT_WORDS = 3  # the fake's prompt count: the whitespace words of the messages
ANSWER = "".join(word + " " for word in FAKE_WORDS[:CAP])
WEATHER = Tool(
    "weather",
    "The weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TOOL_ARGUMENTS = {"city": "Paris"}
REASONING_TOKENS = 2


def call_of(
    *messages: Message,
    surface: Surface = "messages",
    stream: bool = False,
    body: dict[str, Any] | None = None,
    **fields: Any,
) -> NeutralCall:
    chosen = messages or (QUESTION,)
    return NeutralCall(
        surface=surface,
        model="house",
        body=body or {},
        stream=stream,
        include_usage=False,
        output_tokens_max=CAP,
        prompt=PromptSize(100, messages_count=len(chosen)),
        read_messages=lambda: chosen,
        **fields,
    )


def engine_call(call: NeutralCall, cap: int | None = CAP) -> EngineCall:
    return EngineCall(request_id="req-1", call=call, output_tokens_max=cap, created_s=1)


def backend_of(url: str, model: str) -> tuple[OpenAIBackend, UpstreamSession]:
    """A backend of the upstream's ``model``, as the gateway builds one."""
    engine = OpenAIEngineConfig(kind="openai", base_url=url, timeout_s_read=2, timeout_s_connect=2)
    upstream = UpstreamSession("up", engine, Limits(), None)
    deployment = DeploymentConfig(engine="up", model=model)
    return OpenAIBackend(f"dep-{model}", deployment, upstream), upstream


def completed(upstream: Upstream, model: str, call: EngineCall) -> Completed:
    async def scenario() -> Completed:
        backend, session = backend_of(upstream[0], model)
        try:
            return await backend.complete(call)
        finally:
            await session.aclose()

    return asyncio.run(scenario())


def answered(upstream: Upstream, model: str, call: EngineCall) -> Answer:
    answer = completed(upstream, model, call)
    assert isinstance(answer, Answer)
    return answer


def streamed(upstream: Upstream, model: str, call: EngineCall) -> list[list[StreamPart]]:
    """The batches of a stream (a failure raises; what came before it is in the meter)."""

    async def scenario() -> list[list[StreamPart]]:
        backend, session = backend_of(upstream[0], model)
        try:
            return [batch async for batch in backend.stream(call)]
        finally:
            await session.aclose()

    return asyncio.run(scenario())


def flat(batches: list[list[StreamPart]]) -> list[StreamPart]:
    return [part for batch in batches for part in batch]


def text_of(parts: list[StreamPart]) -> str:
    return "".join(part.text for part in parts if isinstance(part, TextDelta))


@pytest.fixture
def agent(fake_upstream: Upstream) -> Iterator[AgentScript]:
    """``fake-agent``'s script for one test, the shared one put back after."""
    state = fake_upstream[1]
    before = state.agent
    state.agent = AgentScript(tool_arguments=TOOL_ARGUMENTS, reasoning_tokens=REASONING_TOKENS)
    yield state.agent
    state.agent = before


@pytest.mark.parametrize("surface", SURFACES)
class TestPlainAnswers:
    def test_a_whole_answer_is_neutral_text_with_the_upstream_usage(
        self, fake_upstream: Upstream, surface: Surface
    ) -> None:
        """Text, finish and counts reach the answer; the usage reaches the meter."""
        call = engine_call(call_of(surface=surface))
        answer = answered(fake_upstream, "fake", call)
        counts = TokenCounts(PROMPT_WORDS, CAP)
        assert answer.parts == (TextPart(ANSWER),)
        assert answer.finish == "length"
        assert answer.counts == counts
        assert answer.stop_sequence is None
        assert call.meter.reported == counts
        assert call.meter.first_token_at_ns is not None

    def test_a_stream_is_text_deltas_then_the_finish_and_the_usage(
        self, fake_upstream: Upstream, surface: Surface
    ) -> None:
        """Deltas in batches, the finish, then one usage report with the upstream's counts."""
        call = engine_call(call_of(surface=surface, stream=True))
        parts = flat(streamed(fake_upstream, "fake", call))
        counts = TokenCounts(PROMPT_WORDS, CAP)
        assert text_of(parts) == ANSWER
        assert [p for p in parts if not isinstance(p, TextDelta)] == [
            Finish("length"),
            UsageReport(counts),
        ]
        assert call.meter.reported == counts
        assert call.meter.first_token_at_ns is not None

    def test_an_answer_without_usage_is_estimated_locally(
        self, fake_upstream: Upstream, surface: Surface
    ) -> None:
        """The prompt from the neutral call, the output from the text produced."""
        neutral = call_of(surface=surface)
        call = engine_call(neutral)
        answer = answered(fake_upstream, "fake-nousage", call)
        assert call.meter.reported is None
        assert answer.counts == TokenCounts(
            prompt_tokens_estimate(neutral), count_text_tokens(ANSWER)
        )

    def test_a_stream_without_usage_has_no_report_and_is_estimated(
        self, fake_upstream: Upstream, surface: Surface
    ) -> None:
        """The gateway makes the usage chunk from the meter's estimates."""
        neutral = call_of(surface=surface, stream=True)
        call = engine_call(neutral)
        parts = flat(streamed(fake_upstream, "fake-nousage", call))
        assert not any(isinstance(part, UsageReport) for part in parts)
        counts, estimated = call.meter.counts()
        assert estimated
        assert counts == TokenCounts(prompt_tokens_estimate(neutral), count_text_tokens(ANSWER))


class TestWhatGoesUp:
    def test_the_upstream_gets_a_chat_request_built_from_the_neutral_call(
        self, fake_upstream: Upstream
    ) -> None:
        """Its own model name, chat messages, the cap, the usage asked for; never the
        client's wire body, which is in another API's words."""
        state = fake_upstream[1]
        system = Message("system", (TextPart("be brief"),))
        neutral = call_of(system, QUESTION, stream=True, body={"system": "be brief"})
        streamed(fake_upstream, "fake", engine_call(neutral))
        assert state.requests[-1] == {
            "model": "fake",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "one two three"},
            ],
            "max_tokens": CAP,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    def test_the_cap_sent_is_the_attempts_not_the_requests(self, fake_upstream: Upstream) -> None:
        """The output cap the funds allow goes up, and the answer obeys it."""
        answer = answered(fake_upstream, "fake", engine_call(call_of(), cap=2))
        assert fake_upstream[1].requests[-1]["max_tokens"] == 2
        assert answer.counts.completion_tokens == 2

    def test_a_refused_call_never_reaches_the_upstream(self, fake_upstream: Upstream) -> None:
        """A document cannot go up: InvalidRequest naming it, before any I/O."""
        state = fake_upstream[1]
        before = len(state.requests)
        document = Message("user", (DocumentPart("application/pdf", "JVBERi0="),))
        for stream in (False, True):
            call = engine_call(call_of(document, stream=stream))
            with pytest.raises(InvalidRequest) as raised:
                if stream:
                    streamed(fake_upstream, "fake", call)
                else:
                    completed(fake_upstream, "fake", call)
            assert raised.value.param == "messages.[0].content"
        assert len(state.requests) == before


@pytest.mark.parametrize("surface", SURFACES)
class TestToolCalls:
    def test_a_whole_answer_calls_the_tool_with_the_scripted_arguments(
        self, fake_upstream: Upstream, agent: AgentScript, surface: Surface
    ) -> None:
        """The call, its id and JSON arguments, finish tool_calls, the reasoning tokens
        reported by the upstream."""
        call = engine_call(call_of(surface=surface, tools=(WEATHER,)))
        answer = answered(fake_upstream, "fake-agent", call)
        arguments = orjson.dumps(TOOL_ARGUMENTS).decode()
        assert answer.parts == (ToolCallPart(agent.tool_call_id, "weather", arguments),)
        assert answer.finish == "tool_calls"
        assert answer.counts.reasoning_tokens == REASONING_TOKENS
        sent = fake_upstream[1].requests[-1]
        assert sent["tools"][0]["function"]["name"] == "weather"
        assert sent["tool_choice"] == "auto"

    def test_a_streamed_call_comes_with_its_id_and_name_first_then_its_arguments(
        self, fake_upstream: Upstream, agent: AgentScript, surface: Surface
    ) -> None:
        """Index 0 as the upstream numbers it; the pieces join to the arguments."""
        call = engine_call(call_of(surface=surface, tools=(WEATHER,), stream=True))
        parts = flat(streamed(fake_upstream, "fake-agent", call))
        pieces = [part for part in parts if isinstance(part, ToolCallDelta)]
        assert pieces[0] == ToolCallDelta(0, agent.tool_call_id, "weather", "")
        assert all(piece.index == 0 and piece.id is None for piece in pieces[1:])
        assert "".join(p.arguments for p in pieces) == orjson.dumps(TOOL_ARGUMENTS).decode()
        assert Finish("tool_calls") in parts
        assert isinstance(parts[-1], UsageReport)
        assert call.meter.reported == parts[-1].counts

    def test_after_the_tool_result_the_answer_is_text(
        self, fake_upstream: Upstream, agent: AgentScript, surface: Surface
    ) -> None:
        """The second turn: the call goes back as a function call (its reasoning left
        out), the result as a tool message; the model answers in text."""
        arguments = orjson.dumps(TOOL_ARGUMENTS).decode()
        assistant = Message(
            "assistant",
            (ReasoningPart("I should look.", "sig"), ToolCallPart("call_9", "weather", arguments)),
        )
        result = Message("tool", (ToolResultPart("call_9", (TextPart("sunny"),)),))
        call = engine_call(call_of(QUESTION, assistant, result, surface=surface, tools=(WEATHER,)))
        answer = answered(fake_upstream, "fake-agent", call)
        assert answer.parts == (TextPart(agent.text),)
        assert answer.finish == "stop"
        sent = fake_upstream[1].requests[-1]["messages"]
        assert sent[1] == {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "weather", "arguments": arguments},
                }
            ],
        }
        assert sent[2] == {"role": "tool", "tool_call_id": "call_9", "content": "sunny"}


class TestUpstreamErrors:
    @pytest.mark.parametrize(
        ("model", "error", "message"),
        [
            ("fake-500", UpstreamError, "the fake upstream failed"),
            ("fake-429", RateLimited, "the fake upstream is busy"),
            ("fake-400", InvalidRequest, "does not like this request"),
            ("fake-garbage", UpstreamError, "upstream up"),
        ],
    )
    @pytest.mark.parametrize("stream", [False, True])
    def test_an_upstream_failure_is_mapped_to_our_error(
        self,
        fake_upstream: Upstream,
        model: str,
        error: type[TokenmillError],
        message: str,
        stream: bool,
    ) -> None:
        """Statuses as for chat; a body that is no JSON (or no event stream) is a 502."""
        call = engine_call(call_of(surface="responses", stream=stream))
        with pytest.raises(error, match=message):
            if stream:
                streamed(fake_upstream, model, call)
            else:
                completed(fake_upstream, model, call)

    def test_a_stream_cut_before_done_fails_after_what_was_relayed(
        self, fake_upstream: Upstream
    ) -> None:
        """An upstream error, and the meter counts what came before the cut."""
        call = engine_call(call_of(stream=True), cap=8)
        with pytest.raises(UpstreamError):
            streamed(fake_upstream, "fake-cut", call)
        meter: Meter = call.meter
        assert meter.reported is None
        assert meter.completion_tokens_estimate > 0
        assert meter.first_token_at_ns is not None


def chat_call(stream: bool) -> EngineCall:
    """A chat call as the chat surface makes one: the client's body beside the neutral form."""
    body = {
        "model": "house",
        "messages": [{"role": "user", "content": "one two three"}],
        "max_tokens": 3,
        "unknown_field": {"kept": True},
        "stream": stream,
    }
    call = NeutralCall(
        surface="chat",
        model="house",
        body=body,
        stream=stream,
        include_usage=False,
        output_tokens_max=3,
        prompt=PromptSize(100),
    )
    return engine_call(call, cap=3)


class TestChatPassesThrough:
    def test_a_chat_answer_is_the_upstreams_bytes(self, fake_upstream: Upstream) -> None:
        """Not parsed into parts: the body as the upstream sent it, unknown fields up."""
        raw = completed(fake_upstream, "fake", chat_call(stream=False))
        sent = fake_upstream[1].requests[-1]
        assert sent["unknown_field"] == {"kept": True}
        direct = httpx.post(fake_upstream[0] + "/chat/completions", json=sent, timeout=5)
        assert raw == direct.content

    def test_a_chat_stream_is_the_upstreams_events_as_wire_parts(
        self, fake_upstream: Upstream
    ) -> None:
        """Each event's payload as it came, [DONE] left to the gateway."""
        parts = flat(streamed(fake_upstream, "fake", chat_call(stream=True)))
        sent = fake_upstream[1].requests[-1]
        assert sent["stream_options"] == {"include_usage": True}
        direct = httpx.post(fake_upstream[0] + "/chat/completions", json=sent, timeout=5)
        payloads = [line[6:] for line in direct.content.split(b"\n") if line.startswith(b"data: ")]
        assert all(isinstance(part, WirePart) for part in parts)
        assert [part.payload for part in parts if isinstance(part, WirePart)] == payloads[:-1]
        assert payloads[-1] == b"[DONE]"
