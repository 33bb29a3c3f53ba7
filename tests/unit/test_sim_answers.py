"""What the sim answers, decided before its first token: tool calls that validate against
their schemas, text after a tool result, JSON of the output format, reasoning first, the
cap and stop sequences (pure, no I/O)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from tokenmill.config import Limits, ModelConfig
from tokenmill.engines.sim_answers import logprob_of, pieces_of, plan_answer, refuse_unsupported
from tokenmill.errors import InvalidRequest
from tokenmill.neutral import NeutralCall
from tokenmill.surfaces.chat_request import parse_chat
from tokenmill.usage import count_text_tokens

MODELS = {"chat": ModelConfig(deployments=["d"])}
CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"type": "string", "enum": ["c", "f"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": CITY}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]
USER = {"role": "user", "content": "weather in Oslo?"}
CALLED = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    ],
}
RESULT = {"role": "tool", "tool_call_id": "c1", "content": "4 C"}


def call_of(messages: list[dict[str, Any]] | None = None, **fields: Any) -> NeutralCall:
    body = {"model": "chat", "messages": messages or [USER], **fields}
    return parse_chat(body, MODELS, Limits())


def arguments(answer: Any, index: int = 0) -> Any:
    text = "".join(p.text for p in answer.pieces if p.kind == "tool" and p.tool_index == index)
    return json.loads(text)


class TestToolCalls:
    @pytest.mark.parametrize("seed", range(20))
    def test_a_user_turn_with_tools_gets_a_call_that_validates(self, seed: int) -> None:
        """Under auto, a user turn gets one tool call whose arguments fit its schema."""
        answer = plan_answer(call_of(tools=TOOLS), seed, 512)
        assert answer.finish == "tool_calls"
        ((call_id, name),) = answer.tool_calls
        assert call_id.startswith("call_")
        schema = CITY if name == "get_weather" else {"type": "object"}
        jsonschema.validate(arguments(answer), schema)

    def test_after_a_tool_result_the_answer_is_text(self) -> None:
        """The second turn of the loop answers in text, finish stop."""
        answer = plan_answer(call_of([USER, CALLED, RESULT], tools=TOOLS), 7, 512)
        assert answer.tool_calls == ()
        assert answer.finish == "stop"
        assert {piece.kind for piece in answer.pieces} == {"text"}

    def test_required_calls_a_tool_even_after_a_result(self) -> None:
        """tool_choice required always calls."""
        call = call_of([USER, CALLED, RESULT], tools=TOOLS, tool_choice="required")
        assert plan_answer(call, 7, 512).finish == "tool_calls"

    def test_a_named_tool_is_the_one_called(self) -> None:
        """A named function choice calls that function."""
        choice = {"type": "function", "function": {"name": "get_time"}}
        answer = plan_answer(call_of(tools=TOOLS, tool_choice=choice), 3, 512)
        assert [name for _, name in answer.tool_calls] == ["get_time"]

    def test_none_answers_text_though_tools_are_given(self) -> None:
        """tool_choice none: no call."""
        answer = plan_answer(call_of(tools=TOOLS, tool_choice="none"), 3, 512)
        assert answer.tool_calls == () and answer.finish in ("stop", "length")

    def test_the_cap_cuts_a_call_and_says_length(self) -> None:
        """Arguments longer than the cap are cut there, as a model's would be."""
        answer = plan_answer(call_of(tools=TOOLS[:1]), 3, 2)
        assert len(answer.pieces) == 2
        assert answer.finish == "length"

    def test_a_schema_the_sim_cannot_meet_is_a_400_naming_it(self) -> None:
        """An unsatisfiable parameters schema is refused, naming the tool's place."""
        impossible = {
            "type": "object",
            "properties": {"a": {"type": "integer", "minimum": 5, "maximum": 1}},
            "required": ["a"],
        }
        tools = [{"type": "function", "function": {"name": "f", "parameters": impossible}}]
        with pytest.raises(InvalidRequest) as caught:
            plan_answer(call_of(tools=tools), 1, 64)
        assert caught.value.param == "tools.[0].function.parameters"


class TestStructuredOutput:
    @pytest.mark.parametrize("seed", range(10))
    def test_a_json_schema_answer_is_a_valid_instance(self, seed: int) -> None:
        """The text of the answer parses and validates against the schema."""
        spec = {"name": "weather", "schema": CITY, "strict": True}
        call = call_of(response_format={"type": "json_schema", "json_schema": spec})
        answer = plan_answer(call, seed, 512)
        text = "".join(piece.text for piece in answer.pieces)
        jsonschema.validate(json.loads(text), CITY)
        assert answer.finish == "stop"

    def test_json_object_is_an_object(self) -> None:
        """json_object gives a JSON object."""
        answer = plan_answer(call_of(response_format={"type": "json_object"}), 2, 512)
        assert isinstance(json.loads("".join(p.text for p in answer.pieces)), dict)


class TestReasoningAndStops:
    def test_reasoning_comes_first_and_counts_toward_the_cap(self) -> None:
        """high effort spends 256 reasoning tokens, then the answer, all within the cap."""
        answer = plan_answer(call_of(reasoning_effort="high"), 5, 300)
        kinds = [piece.kind for piece in answer.pieces]
        assert kinds[:256] == ["reasoning"] * 256
        assert answer.reasoning_tokens == 256
        assert len(answer.pieces) <= 300

    def test_a_cap_below_the_reasoning_leaves_no_answer(self) -> None:
        """A cap the reasoning fills ends with length and no text."""
        answer = plan_answer(call_of(reasoning_effort="medium"), 5, 10)
        assert answer.finish == "length"
        assert {piece.kind for piece in answer.pieces} == {"reasoning"}

    def test_a_stop_sequence_cuts_the_text(self) -> None:
        """The text ends before the stop sequence."""
        full = "".join(p.text for p in plan_answer(call_of(), 9, 512).pieces)
        stop = full.split()[3]
        answer = plan_answer(call_of(stop=[stop]), 9, 512)
        assert stop not in "".join(piece.text for piece in answer.pieces)
        assert answer.finish == "stop"

    def test_audio_and_web_search_are_refused_naming_the_field(self) -> None:
        """What the sim cannot do is a 400, never dropped."""
        for fields, param in (
            ({"modalities": ["text", "audio"]}, "modalities"),
            ({"web_search_options": {}}, "web_search_options"),
        ):
            with pytest.raises(InvalidRequest) as caught:
                refuse_unsupported(call_of(**fields))
            assert caught.value.param == param


class TestPiecesAndLogprobs:
    @pytest.mark.parametrize("text", ['{"a": [1, 2.5, "x y"]}', "Hello, world.", "  spaced  "])
    def test_pieces_join_back_and_count_as_the_meter_counts(self, text: str) -> None:
        """Each piece is one token of count_text_tokens, and they join to the text."""
        pieces = pieces_of(text)
        assert "".join(pieces) == text
        assert sum(count_text_tokens(piece) for piece in pieces) == count_text_tokens(text)

    def test_a_logprob_is_well_formed_and_deterministic(self) -> None:
        """At most 0, the token first among its top ones, sorted, the same every time."""
        entry = logprob_of(" model", 42, 5)
        assert entry == logprob_of(" model", 42, 5)
        assert entry.logprob <= 0
        assert entry.top[0] == (" model", entry.logprob)
        values = [value for _, value in entry.top]
        assert values == sorted(values, reverse=True) and len(values) == 5
