"""What the ``sim`` engine answers, decided before the first token (pure, deterministic).

The sim stands in for a real model's API, so an agent tested against it sees what it would
see from one: offered tools (and a tool choice other than ``none``), a user turn gets a
tool call whose arguments validate against the tool's JSON schema, and after a tool result
the answer is text; with an output format, the text is a valid instance of the schema; a
reasoning effort spends counted reasoning tokens first; stop sequences stop. Every piece
is one token: the scheduler emits one per decode step, at the performance model's pace,
and the output cap cuts the answer there (``finish: length``), as it would a model's.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from typing import Literal

from tokenmill.engines import sim_json, sim_text
from tokenmill.errors import InvalidRequest
from tokenmill.neutral import FinishReason, Message, NeutralCall, TokenLogprob, Tool
from tokenmill.usage import count_text_tokens

PieceKind = Literal["reasoning", "text", "tool"]
# Reasoning tokens spent per effort (before the answer), about what small reasoning models
# spend on a short question.
REASONING_TOKENS = {"minimal": 8, "low": 32, "medium": 96, "high": 256, "xhigh": 512}
_PIECE = re.compile(r"\s*\w+|\s*[^\w\s]|\s+")
LOGPROB_ALTERNATIVES = ("the", "a", "and", "of", "to", "is", "model", "token", "answer", ",")


@dataclass(frozen=True, slots=True)
class Piece:
    """One token of the answer: reasoning, visible text, or part of a tool call's
    arguments (of the ``tool_index``-th call)."""

    kind: PieceKind
    text: str
    tool_index: int = 0


@dataclass(frozen=True)
class SimAnswer:
    pieces: list[Piece]
    finish: FinishReason
    tool_calls: tuple[tuple[str, str], ...]  # (id, name) of each call, in order
    stop_sequence: str | None = None  # the stop sequence that ended the text

    @property
    def reasoning_tokens(self) -> int:
        return sum(1 for piece in self.pieces if piece.kind == "reasoning")


def refuse_unsupported(call: NeutralCall) -> None:
    """What the sim cannot do is refused naming the field, never dropped: it speaks no
    audio and searches no web (sampling fields are accepted: any text is a sample)."""
    body = call.body
    modalities = body.get("modalities") or ()
    if body.get("audio") is not None or "audio" in modalities:
        param = "audio" if body.get("audio") is not None else "modalities"
        raise InvalidRequest(
            f"'{param}': the sim engine answers text only, not audio.",
            param=param,
            code="unsupported_value",
        )
    if body.get("web_search_options") is not None:
        raise InvalidRequest(
            "'web_search_options': the sim engine cannot search the web.",
            param="web_search_options",
            code="unsupported_value",
        )


def pieces_of(text: str) -> list[str]:
    """``text`` as tokens the way ``count_text_tokens`` counts them; they join back to it."""
    pieces = _PIECE.findall(text)
    assert "".join(pieces) == text
    return pieces


def plan_answer(call: NeutralCall, seed: int, cap: int, *, fill: bool = False) -> SimAnswer:
    """The whole answer to ``call`` within ``cap`` output tokens (``fill``: exactly ``cap``
    tokens of text, vLLM's ``ignore_eos`` for benchmarks)."""
    assert cap >= 1
    reasoning = _reasoning(call, seed, cap)
    room = cap - len(reasoning)
    if room <= 0:
        return SimAnswer(reasoning[:cap], "length", ())
    tools = _tools_to_call(call, seed)
    if tools:
        pieces, calls = _tool_pieces(call, tools, seed)
        finish: FinishReason = "tool_calls" if len(pieces) <= room else "length"
        return SimAnswer(reasoning + pieces[:room], finish, calls)
    if call.output_format.kind != "text":
        tokens = pieces_of(_json_text(call, seed))
    else:
        tokens = sim_text.answer_tokens(seed, room, fill=fill)
    kept, stop = sim_text.cut_at_stop(tokens[:room], call.stop)
    finish = "stop" if stop is not None or len(tokens) < room else "length"
    return SimAnswer(reasoning + [Piece("text", token) for token in kept], finish, (), stop)


def _reasoning(call: NeutralCall, seed: int, cap: int) -> list[Piece]:
    if call.reasoning is None:
        return []
    count = REASONING_TOKENS[call.reasoning.effort or "medium"]  # a budget alone: medium
    if call.reasoning.budget_tokens is not None:
        count = min(count, call.reasoning.budget_tokens)
    words = sim_text.answer_tokens(seed ^ 0x5EA5, min(count, cap), fill=True)
    return [Piece("reasoning", word) for word in words]


def _last_turn(messages: tuple[Message, ...]) -> str:
    for message in reversed(messages):
        if message.role != "system":
            return message.role
    return "user"


def _tools_to_call(call: NeutralCall, seed: int) -> list[tuple[int, Tool]]:
    """Which tools this turn calls: the named one, one of them when a call is required,
    and under ``auto`` one when the user spoke last (a tool result gets a text answer)."""
    if not call.tools_offered:
        return []
    choice = call.tool_choice
    if choice.mode == "tool":
        return [(index, t) for index, t in enumerate(call.tools) if t.name == choice.name]
    if choice.mode == "auto" and _last_turn(call.messages) == "tool":
        return []
    index = random.Random(seed).randrange(len(call.tools))
    return [(index, call.tools[index])]


def _tool_pieces(
    call: NeutralCall, tools: list[tuple[int, Tool]], seed: int
) -> tuple[list[Piece], tuple[tuple[str, str], ...]]:
    pieces: list[Piece] = []
    calls = []
    for number, (index, tool) in enumerate(tools):
        param = f"tools.[{index}].function.parameters"
        arguments = sim_json.instance_of(tool.parameters, seed + number, param=param)
        text = json.dumps(arguments, ensure_ascii=False)
        pieces.extend(Piece("tool", piece, number) for piece in pieces_of(text))
        calls.append((f"call_{seed + number:016x}"[:29], tool.name))
    return pieces, tuple(calls)


def _json_text(call: NeutralCall, seed: int) -> str:
    output = call.output_format
    if output.kind == "json_schema" and output.schema is not None:
        param = "response_format.json_schema.schema"
        value = sim_json.instance_of(output.schema, seed, param=param)
    else:
        words = sim_text.answer_tokens(seed, 12)
        value = {"answer": "".join(word for word in words if word.strip() != ".").strip()}
    return json.dumps(value, ensure_ascii=False)


def logprob_of(token: str, seed: int, top_count: int) -> TokenLogprob:
    """A well-formed, deterministic log probability of ``token`` (at most 0) and the
    ``top_count`` most likely tokens at its place, most likely first, the token among them."""
    rng = random.Random(seed ^ hash_text(token))
    logprob = -round(rng.random() * 1.5, 4)
    top: list[tuple[str, float]] = []
    if top_count:
        top.append((token, logprob))
        alternatives = [t for t in LOGPROB_ALTERNATIVES if t != token.strip()]
        floor = logprob
        for alternative in alternatives[: top_count - 1]:
            floor = round(floor - 0.5 - rng.random() * 2, 4)
            top.append((" " + alternative if token.startswith(" ") else alternative, floor))
    assert logprob <= 0 and not math.isnan(logprob)
    return TokenLogprob(token, logprob, tuple(top))


def hash_text(text: str) -> int:
    return sim_text.seed_of(text) & 0xFFFFFFFF


def prompt_tokens_of(call: NeutralCall, messages_tokens: int) -> int:
    """The prompt as a model counts it: the messages, and the tool definitions it reads."""
    tools = sum(
        count_text_tokens(tool.name + " " + tool.description + json.dumps(tool.parameters))
        for tool in call.tools
    )
    return messages_tokens + tools
