"""The neutral call and the neutral stream of parts: the one language between surfaces and
engines (pure, ground floor, beside ``usage``).

A surface (OpenAI chat, completions, embeddings and Responses; Anthropic Messages)
parses its wire request into one ``NeutralCall`` and renders what the engine
answers back into its own shape. The call keeps the client's original ``body`` beside the
neutral form: an engine that speaks the surface's own API sends the body upstream with
unknown fields intact and answers wire bytes (``WirePart``, relayed as they are); any other
engine reads the neutral form and answers neutral parts, which the surface renders.

The neutral form of the conversation is built only when an engine asks for it
(``NeutralCall.messages``): a relayed chat request never pays for it.

    NeutralCall -- messages: Message(role, parts: TextPart | ImagePart | DocumentPart
                                          | ToolCallPart | ToolResultPart | ReasoningPart)
                   tools: Tool, tool_choice: ToolChoice, output_format: OutputFormat,
                   reasoning: Reasoning | None, sampling: Sampling, logprobs, stop, caps
    Answer      -- parts (text, tool calls, reasoning), finish, counts, logprobs
    stream      -- TextDelta | ReasoningDelta | ToolCallDelta | Finish | UsageReport,
                   or WirePart (bytes already in the surface's shape)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import orjson

from tokenmill.usage import (
    CHAT_TOKENS_PER_MESSAGE,
    CHAT_TOKENS_PER_REPLY,
    TokenCounts,
    count_text_tokens,
)

Surface = Literal["chat", "completions", "embeddings", "messages", "responses"]
Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]
ToolChoiceMode = Literal["auto", "none", "required", "tool"]
OutputKind = Literal["text", "json_object", "json_schema"]
ReasoningEffort = Literal["minimal", "low", "medium", "high", "xhigh"]


# --- the conversation ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str
    cache_control: dict[str, Any] | None = None  # a prompt-caching breakpoint (Anthropic's)


@dataclass(frozen=True, slots=True)
class ImagePart:
    url: str  # http(s) or a data: URL with base64 bytes
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class DocumentPart:
    """A document given whole (Anthropic's ``document`` block, OpenAI's ``input_file``): its
    bytes base64-encoded in ``data`` or at ``url``. A plain-text document is a ``TextPart``."""

    media_type: str  # "application/pdf", ...
    data: str | None = None  # base64
    url: str | None = None
    title: str | None = None
    cache_control: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ToolCallPart:
    """An assistant's call of a tool; ``arguments`` is the JSON text as the model wrote it."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolResultPart:
    tool_call_id: str
    content: tuple[TextPart | ImagePart | DocumentPart, ...]
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class ReasoningPart:
    """A model's reasoning (Anthropic's thinking); ``signature`` lets it be sent back."""

    text: str
    signature: str | None = None
    redacted: bool = False


Part = TextPart | ImagePart | DocumentPart | ToolCallPart | ToolResultPart | ReasoningPart


@dataclass(frozen=True, slots=True)
class Message:
    role: Role  # OpenAI's "developer" is "system" here
    parts: tuple[Part, ...]
    name: str | None = None


# --- what the client asked for -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # a JSON schema of the arguments object
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: ToolChoiceMode = "auto"
    name: str | None = None  # mode "tool": the one tool to call
    parallel: bool = True  # several calls in one turn allowed


@dataclass(frozen=True, slots=True)
class OutputFormat:
    kind: OutputKind = "text"
    name: str | None = None
    schema: dict[str, Any] | None = None  # kind "json_schema"
    strict: bool = False


TEXT_OUTPUT = OutputFormat()
AUTO_TOOLS = ToolChoice()


@dataclass(frozen=True, slots=True)
class Reasoning:
    effort: ReasoningEffort | None = None
    budget_tokens: int | None = None  # a cap on reasoning tokens (Anthropic's thinking)


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None


NO_SAMPLING = Sampling()


@dataclass(frozen=True, slots=True)
class PromptSize:
    """What the hold's prompt bound is made of, measured on the request body."""

    text_bytes: int  # an upper bound of the prompt's text in UTF-8 bytes (images left out)
    messages_count: int = 0
    tools_count: int = 0
    images_count: int = 0


def _no_messages() -> tuple[Message, ...]:
    return ()


@dataclass(frozen=True)
class NeutralCall:
    """One request in no surface's words. ``body`` is the client's validated JSON as sent;
    ``messages`` is read from it on first use."""

    surface: Surface
    model: str
    body: dict[str, Any]
    stream: bool
    include_usage: bool  # the client asked to see usage in the stream
    output_tokens_max: int | None  # the request's cap, within the model's; None: no output
    prompt: PromptSize
    stop: tuple[str, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = AUTO_TOOLS
    output_format: OutputFormat = TEXT_OUTPUT
    reasoning: Reasoning | None = None
    sampling: Sampling = NO_SAMPLING
    logprobs: bool = False
    top_logprobs: int = 0
    batch: bool = False  # may wait (OpenAI's service_tier "flex"): a plan's batch discount
    cap_param: str = "max_tokens"  # the field the surface reads the cap from, for errors
    prompt_text: str | None = None  # completions: the prompt
    inputs: tuple[str | tuple[int, ...], ...] = ()  # embeddings: the items
    read_messages: Callable[[], tuple[Message, ...]] = field(
        default=_no_messages, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        assert self.output_tokens_max is None or self.output_tokens_max >= 1
        assert self.top_logprobs >= 0

    @cached_property
    def messages(self) -> tuple[Message, ...]:
        return self.read_messages()

    @property
    def tools_offered(self) -> bool:
        """Whether the model may call a tool in this turn."""
        return bool(self.tools) and self.tool_choice.mode != "none"

    @property
    def output_tokens_min(self) -> int:
        """The least output cap this call stays valid and useful with, should the funds
        pay for less than it asked: a thinking budget needs a token beyond it (Anthropic
        refuses ``budget_tokens`` at or above ``max_tokens``), and a tool call cut
        mid-JSON is worthless to an agent, so a call offering tools is not lowered."""
        cap = self.output_tokens_max
        if cap is None:
            return 1
        if self.tools_offered:
            return cap
        budget = self.reasoning.budget_tokens if self.reasoning is not None else None
        return min(cap, budget + 1) if budget is not None else 1


# --- what the engine answers -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()  # the most likely tokens at this place


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole (non-streamed) answer, for the surface to render."""

    parts: tuple[TextPart | ToolCallPart | ReasoningPart, ...]
    finish: FinishReason
    counts: TokenCounts
    logprobs: tuple[TokenLogprob, ...] | None = None  # None: not asked for
    fingerprint: str | None = None
    stop_sequence: str | None = None  # finish "stop" on one of the call's stop sequences


@dataclass(frozen=True, slots=True)
class EmbeddingsAnswer:
    vectors: tuple[tuple[float, ...], ...]
    counts: TokenCounts


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str
    signature: str | None = None
    redacted: bool = False  # ``text`` is the engine's opaque data, not readable reasoning


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of the ``index``-th tool call: its id and name come first, then its
    arguments in pieces of JSON text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason
    stop_sequence: str | None = None  # the stop sequence that ended the answer, if known


@dataclass(frozen=True, slots=True)
class UsageReport:
    counts: TokenCounts


@dataclass(frozen=True, slots=True)
class WirePart:
    """One event already in the surface's shape (an SSE payload, the bytes after
    ``data: ``), relayed as it is; ``usage_only`` marks a ``choices: []`` usage chunk."""

    payload: bytes
    usage_only: bool = False


Completed = bytes | Answer | EmbeddingsAnswer  # what a non-streamed engine call answers
Delta = TextDelta | ReasoningDelta | ToolCallDelta | Finish | UsageReport
StreamPart = Delta | WirePart


def prompt_tokens_estimate(call: NeutralCall) -> int:
    """A local count of a call's prompt from its neutral form (texts, tool calls and
    results, tool definitions), for engines that do not get the surface's wire body and
    upstreams that report no usage; images and documents are left out as in
    ``PromptSize``."""
    total = CHAT_TOKENS_PER_REPLY
    for message in call.messages:
        total += CHAT_TOKENS_PER_MESSAGE
        total += sum(count_text_tokens(text) for text in _texts_of(message.parts))
    for tool in call.tools:
        schema = orjson.dumps(tool.parameters).decode()
        total += count_text_tokens(f"{tool.name} {tool.description} {schema}")
    return total


def _texts_of(parts: tuple[Part, ...]) -> list[str]:
    texts = []
    for part in parts:
        if isinstance(part, TextPart | ReasoningPart):
            texts.append(part.text)
        elif isinstance(part, ToolCallPart):
            texts.extend((part.name, part.arguments))
        elif isinstance(part, ToolResultPart):
            texts.extend(item.text for item in part.content if isinstance(item, TextPart))
    return texts


def completion_tokens_estimate(parts: tuple[TextPart | ToolCallPart | ReasoningPart, ...]) -> int:
    """A local count of an answer's output, for when the upstream reports no usage."""
    total = 0
    for part in parts:
        if isinstance(part, ToolCallPart):
            total += count_text_tokens(part.name) + count_text_tokens(part.arguments)
        else:
            total += count_text_tokens(part.text)
    return total
