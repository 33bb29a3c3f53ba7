"""The neutral call as an OpenAI chat completions request, and chat answers back in the
neutral language (pure: no I/O; the stream's clock is passed in).

The ``openai`` engine relays chat, completions and embeddings as the client sent them. A
call of another surface (Anthropic Messages, OpenAI Responses) reaches the OpenAI-compatible
server (vLLM, SGLang, llama.cpp, Ollama, a vendor) as chat completions built from the
neutral call, never from the client's wire body, which is in another API's words. Chat
servers take back neither reasoning (it is dropped from assistant turns) nor documents, nor
images in tool results: those are refused with ``InvalidRequest`` naming the message, before
any I/O, since the client would otherwise get an answer to another question.

The way back: ``chat_answer`` reads a ``chat.completion`` body; ``ChatChunkTranslator`` reads
``chat.completion.chunk`` events one at a time, keeping the finish and the last usage (some
servers send running totals) and filling the meter as text is produced. Reasoning comes as
``reasoning_content`` (vLLM, SGLang, DeepSeek) or ``reasoning`` (newer vLLM, Ollama). A
server that ends a turn of tool calls with ``stop`` is read as ``tool_calls``: clients of
both surfaces run their tool loop on that finish. Anything malformed is an ``UpstreamError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeGuard

from tokenmill.errors import InvalidRequest, UpstreamError
from tokenmill.neutral import (
    Delta,
    DocumentPart,
    Finish,
    FinishReason,
    ImagePart,
    Message,
    NeutralCall,
    OutputFormat,
    Part,
    Reasoning,
    ReasoningDelta,
    ReasoningPart,
    Sampling,
    TextDelta,
    TextPart,
    TokenLogprob,
    ToolCallDelta,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    UsageReport,
)
from tokenmill.usage import Meter, TokenCounts, count_text_tokens, parse_usage

SURFACES_TRANSLATED = frozenset({"messages", "responses"})
JSON_SCHEMA_NAME = "answer"  # chat's json_schema needs a name; the neutral format may have none
# A reasoning budget (Anthropic's thinking) without an effort, as an effort: the budgets
# the anthropic engine gives the low and medium efforts are the bounds.
EFFORT_BY_BUDGET_TOKENS_MAX = ((2048, "low"), (8192, "medium"))
EFFORT_ABOVE_BUDGETS = "high"
FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}
TEXT_ONLY = frozenset({"content", "role", "refusal"})  # a delta that carries only text
REASONING_FIELDS = ("reasoning_content", "reasoning")  # the first non-empty one is taken

AnswerPart = TextPart | ToolCallPart | ReasoningPart
ChatMessage = dict[str, Any]


# --- the way up ---------------------------------------------------------------------------


def chat_request(
    call: NeutralCall, output_tokens_max: int | None, model: str, engine: str, *, stream: bool
) -> dict[str, Any]:
    """The chat completions request for ``call``, ``output_tokens_max`` as ``max_tokens``;
    InvalidRequest, naming the field, for what a chat server cannot be given."""
    assert output_tokens_max is None or output_tokens_max >= 1
    messages = chat_messages(call.messages)
    request: dict[str, Any] = {"model": model, "messages": messages}
    if output_tokens_max is not None:
        request["max_tokens"] = output_tokens_max
    if call.stop:
        request["stop"] = list(call.stop)
    request.update(sampling_fields(call.sampling))
    request.update(tool_fields(call, engine))
    response_format = response_format_field(call.output_format, engine)
    if response_format is not None:
        request["response_format"] = response_format
    effort = None if call.reasoning is None else reasoning_effort(call.reasoning)
    if effort is not None:
        request["reasoning_effort"] = effort
    if call.logprobs:
        request["logprobs"] = True
        if call.top_logprobs:
            request["top_logprobs"] = call.top_logprobs
    if stream:
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    assert request["messages"]
    return request


def chat_messages(messages: tuple[Message, ...]) -> list[ChatMessage]:
    """The neutral conversation as chat messages, in order: one for one, but a tool message
    becomes one chat message per result (chat answers one call per tool message)."""
    chat: list[ChatMessage] = []
    for index, message in enumerate(messages):
        if message.role == "tool":
            chat.extend(tool_result_message(index, part) for part in _results(index, message))
            continue
        if message.role == "assistant":
            entry = assistant_message(index, message.parts)
        else:
            entry = {"role": message.role, "content": _content(index, message)}
        if message.name is not None:
            entry["name"] = message.name
        chat.append(entry)
    if not chat:
        raise InvalidRequest("'messages' needs at least one message.", param="messages")
    return chat


def _refused_part(index: int, part: Part, why: str) -> InvalidRequest:
    kind = type(part).__name__.removesuffix("Part").lower()
    param = f"messages.[{index}].content"
    return InvalidRequest(f"{param}: a {kind} part is not supported here ({why}).", param=param)


def _content(index: int, message: Message) -> str | list[dict[str, Any]]:
    """A system or user message's content: text, and images for a user."""
    pieces: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            pieces.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart) and message.role == "user":
            pieces.append(image_piece(part))
        elif isinstance(part, DocumentPart):
            raise _refused_part(index, part, "this model's chat server does not read documents")
        else:
            raise _refused_part(index, part, f"a {message.role} message cannot carry it")
    return _text_or_pieces(pieces)


def _text_or_pieces(pieces: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """One text as a plain string (every chat server reads that), else the parts."""
    if not pieces:
        return ""
    if len(pieces) == 1 and pieces[0]["type"] == "text":
        text: str = pieces[0]["text"]
        return text
    return pieces


def image_piece(part: ImagePart) -> dict[str, Any]:
    image: dict[str, Any] = {"url": part.url}
    if part.detail is not None:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


def assistant_message(index: int, parts: tuple[Part, ...]) -> ChatMessage:
    """Text and tool calls; reasoning is left out (chat servers take none back)."""
    pieces: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            pieces.append({"type": "text", "text": part.text})
        elif isinstance(part, ToolCallPart):
            function = {"name": part.name, "arguments": part.arguments}
            calls.append({"id": part.id, "type": "function", "function": function})
        elif not isinstance(part, ReasoningPart):
            raise _refused_part(index, part, "an assistant message cannot carry it")
    message: ChatMessage = {"role": "assistant", "content": _text_or_pieces(pieces)}
    if calls:
        message["tool_calls"] = calls
        message["content"] = message["content"] or None
    return message


def _results(index: int, message: Message) -> list[ToolResultPart]:
    results = []
    for part in message.parts:
        if not isinstance(part, ToolResultPart):
            raise _refused_part(index, part, "a tool message carries tool results only")
        results.append(part)
    return results


def tool_result_message(index: int, part: ToolResultPart) -> ChatMessage:
    """A tool result as a ``tool`` message of text: chat tool messages take no images."""
    texts = []
    for item in part.content:
        if not isinstance(item, TextPart):
            raise _refused_part(index, item, "a chat tool result takes text only")
        texts.append(item.text)
    return {"role": "tool", "tool_call_id": part.tool_call_id, "content": "\n".join(texts)}


def _refuse(name: str, engine: str, why: str) -> InvalidRequest:
    served_by = f"the OpenAI-compatible engine '{engine}'"
    return InvalidRequest(
        f"'{name}' is not supported by this model ({served_by} {why}).", param=name
    )


def tool_fields(call: NeutralCall, engine: str) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` (only when turned off)."""
    choice = call.tool_choice
    if not call.tools:
        if choice.mode in ("required", "tool"):
            raise _refuse("tool_choice", engine, "needs a tool to call")
        return {}
    tools = []
    for tool in call.tools:
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
        if tool.description:
            function["description"] = tool.description
        if tool.strict:
            function["strict"] = True
        tools.append({"type": "function", "function": function})
    names = {tool.name for tool in call.tools}
    fields = {"tools": tools, "tool_choice": tool_choice_field(choice, names, engine)}
    if not choice.parallel and choice.mode != "none":
        fields["parallel_tool_calls"] = False
    return fields


def tool_choice_field(choice: ToolChoice, names: set[str], engine: str) -> Any:
    if choice.mode != "tool":
        return choice.mode  # "auto", "none" and "required" are chat's words too
    if choice.name not in names:
        raise _refuse("tool_choice", engine, "can only force a tool it was given")
    return {"type": "function", "function": {"name": choice.name}}


def response_format_field(output_format: OutputFormat, engine: str) -> dict[str, Any] | None:
    if output_format.kind == "text":
        return None
    if output_format.kind == "json_object":
        return {"type": "json_object"}
    if output_format.schema is None:
        raise _refuse("response_format", engine, "needs the JSON schema of the answer")
    schema = {
        "name": output_format.name or JSON_SCHEMA_NAME,
        "schema": output_format.schema,
        "strict": output_format.strict,
    }
    return {"type": "json_schema", "json_schema": schema}


def reasoning_effort(reasoning: Reasoning) -> str | None:
    """The effort asked for, or the one a budget reads as; None: the server's default."""
    if reasoning.effort is not None:
        return reasoning.effort
    budget = reasoning.budget_tokens
    if budget is None:
        return None
    for budget_max, effort in EFFORT_BY_BUDGET_TOKENS_MAX:
        if budget <= budget_max:
            return effort
    return EFFORT_ABOVE_BUDGETS


def sampling_fields(sampling: Sampling) -> dict[str, Any]:
    """temperature, top_p, seed and top_k as given (vLLM, SGLang and llama.cpp read top_k;
    a server that does not ignores it)."""
    given = {
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "seed": sampling.seed,
    }
    return {name: value for name, value in given.items() if value is not None}


# --- the way back -------------------------------------------------------------------------


def upstream_error(engine: str, what: str) -> UpstreamError:
    return UpstreamError(f"upstream {engine} sent {what}")


def finish_reason(value: Any, engine: str, tool_called: bool) -> FinishReason:
    """The neutral finish; one added later reads as stop, a stop after tool calls as
    tool_calls."""
    if not isinstance(value, str):
        raise upstream_error(engine, "a finish_reason that is not a string")
    finish = FINISH_REASONS.get(value, "stop")
    return "tool_calls" if tool_called and finish == "stop" else finish


def _first_choice(body: Any, engine: str, what: str) -> dict[str, Any] | None:
    """The first choice of a chat body (None when it has none); UpstreamError when the
    body is no chat body."""
    if not isinstance(body, dict):
        raise upstream_error(engine, f"{what} that is not a JSON object")
    error = body.get("error")
    if error is not None:
        message = error.get("message") if isinstance(error, dict) else error
        raise UpstreamError(f"upstream {engine} failed: {message}"[:600])
    choices = body.get("choices")
    if choices is None or choices == []:
        return None
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise upstream_error(engine, f"{what} whose choices are not objects")
    choice: dict[str, Any] = choices[0]
    return choice


def _string_or_none(holder: dict[str, Any], name: str, engine: str) -> str | None:
    value = holder.get(name)
    if value is not None and not isinstance(value, str):
        raise upstream_error(engine, f"a '{name}' that is not a string")
    return value


def _list_or_empty(holder: dict[str, Any], name: str, engine: str) -> list[Any]:
    value = holder.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise upstream_error(engine, f"a '{name}' that is not an array")
    return value


def _reasoning_of(holder: dict[str, Any], engine: str) -> str:
    for name in REASONING_FIELDS:
        text = _string_or_none(holder, name, engine)
        if text:
            return text
    return ""


def chat_answer(answer: dict[str, Any], engine: str) -> tuple[tuple[AnswerPart, ...], FinishReason]:
    """(parts, finish) of a ``chat.completion`` body: reasoning, text (a refusal's text when
    there is no content), tool calls; UpstreamError for anything else."""
    choice = _first_choice(answer, engine, "an answer")
    message = None if choice is None else choice.get("message")
    if choice is None or not isinstance(message, dict):
        raise upstream_error(engine, "an answer without a message")
    parts: list[AnswerPart] = []
    reasoning = _reasoning_of(message, engine)
    if reasoning:
        parts.append(ReasoningPart(reasoning))
    content = _string_or_none(message, "content", engine)
    text = content or _string_or_none(message, "refusal", engine)
    if text:
        parts.append(TextPart(text))
    calls = _list_or_empty(message, "tool_calls", engine)
    parts.extend(_tool_call(call, engine) for call in calls)
    finish = finish_reason(choice.get("finish_reason") or "stop", engine, bool(calls))
    return tuple(parts), finish


def _tool_call(call: Any, engine: str) -> ToolCallPart:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        raise upstream_error(engine, "a tool call without a function")
    call_id, name = call.get("id"), function.get("name")
    arguments = function.get("arguments")
    if not (isinstance(call_id, str) and call_id and isinstance(name, str) and name):
        raise upstream_error(engine, "a tool call without an id or a name")
    if not isinstance(arguments, str):
        raise upstream_error(engine, "a tool call whose arguments are not JSON text")
    return ToolCallPart(call_id, name, arguments)


def chat_logprobs(choice: Any, engine: str) -> tuple[TokenLogprob, ...]:
    """A choice's ``logprobs.content`` as token log probabilities (none when absent)."""
    logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if content is None:
        return ()
    if not isinstance(content, list):
        raise upstream_error(engine, "logprobs whose content is not an array")
    entries = []
    for entry in content:
        token, logprob = _token_logprob(entry, engine)
        tops = _list_or_empty(entry, "top_logprobs", engine)
        entries.append(TokenLogprob(token, logprob, tuple(_token_logprob(t, engine) for t in tops)))
    return tuple(entries)


def _token_logprob(entry: Any, engine: str) -> tuple[str, float]:
    token = entry.get("token") if isinstance(entry, dict) else None
    logprob = entry.get("logprob") if isinstance(entry, dict) else None
    if not isinstance(token, str) or not _is_number(logprob):
        raise upstream_error(engine, "a log probability without a token or a number")
    return token, float(logprob)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


class ChatChunkTranslator:
    """One chat completions stream, chunk by chunk, as neutral deltas; fills ``meter`` as
    it goes. Tool calls keep the upstream's indexes; a call's id and name come in its first
    delta (later repeats are dropped). ``end`` gives the finish, if none came, and the one
    ``UsageReport``, with the last usage reported."""

    def __init__(
        self, meter: Meter, engine: str, clock_ns: Callable[[], int], *, logprobs: bool = False
    ) -> None:
        self._meter = meter
        self._engine = engine
        self._clock_ns = clock_ns
        self._logprobs = logprobs
        self._tool_indexes: set[int] = set()
        self.finish: FinishReason | None = None
        self.counts: TokenCounts | None = None

    def deltas(self, chunk: Any) -> list[Delta]:
        fast = self._text_only(chunk)
        if fast is not None:
            return [self._metered(TextDelta(fast), fast)]
        choice = _first_choice(chunk, self._engine, "a chunk")
        usage = chunk.get("usage")
        if usage is not None:
            counts = parse_usage(usage)
            if counts is not None:
                self.counts = counts  # totals, not increments: the last one wins
                self._meter.report(counts)
        if choice is None:
            return []  # the usage chunk
        delta = choice.get("delta", {})
        if delta is None:
            delta = {}
        if not isinstance(delta, dict):
            raise upstream_error(self._engine, "a chunk whose delta is not an object")
        deltas = self._produced(delta, choice)
        finish = choice.get("finish_reason")
        if finish is not None and self.finish is None:
            self.finish = finish_reason(finish, self._engine, bool(self._tool_indexes))
            deltas.append(Finish(self.finish))
        return deltas

    def _text_only(self, chunk: Any) -> str | None:
        """The text of a chunk that carries one piece of text and nothing else (most chunks
        of a stream: read without the general path, checked as fully); None otherwise."""
        if type(chunk) is not dict or chunk.get("usage") is not None or "error" in chunk:
            return None
        choices = chunk.get("choices")
        if type(choices) is not list or len(choices) != 1 or self._logprobs:
            return None
        choice = choices[0]
        if type(choice) is not dict or choice.get("finish_reason") is not None:
            return None
        delta = choice.get("delta")
        if type(delta) is not dict or not TEXT_ONLY.issuperset(delta):
            return None
        text = delta.get("content")
        return text if type(text) is str and text else None

    def end(self) -> list[Delta]:
        deltas: list[Delta] = []
        if self.finish is None:
            self.finish = "tool_calls" if self._tool_indexes else "stop"
            deltas.append(Finish(self.finish))
        if self.counts is not None:
            deltas.append(UsageReport(self.counts))
        return deltas

    def _produced(self, delta: dict[str, Any], choice: dict[str, Any]) -> list[Delta]:
        deltas: list[Delta] = []
        reasoning = _reasoning_of(delta, self._engine)
        if reasoning:
            deltas.append(self._metered(ReasoningDelta(reasoning), reasoning))
        text = _string_or_none(delta, "content", self._engine)
        if text:
            logprobs = chat_logprobs(choice, self._engine) if self._logprobs else None
            deltas.append(self._metered(TextDelta(text, logprobs), text))
        calls = _list_or_empty(delta, "tool_calls", self._engine)
        for position, call in enumerate(calls):
            piece = self._tool_call_delta(position, call)
            if piece is not None:
                deltas.append(self._metered(piece, (piece.name or "") + piece.arguments))
        return deltas

    def _tool_call_delta(self, position: int, call: Any) -> ToolCallDelta | None:
        """A piece of a tool call; a server that numbers none is read by position."""
        engine = self._engine
        function = call.get("function") if isinstance(call, dict) else None
        index = call.get("index", position) if isinstance(call, dict) else None
        if not isinstance(function, dict) and function is not None:
            raise upstream_error(engine, "a tool call whose function is not an object")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise upstream_error(engine, "a tool call without an index")
        function = function or {}
        arguments = _string_or_none(function, "arguments", engine) or ""
        if index in self._tool_indexes:
            return ToolCallDelta(index, arguments=arguments) if arguments else None
        call_id, name = call.get("id"), _string_or_none(function, "name", engine)
        if not (isinstance(call_id, str) and call_id and name):
            raise upstream_error(engine, "a tool call that starts without an id or a name")
        self._tool_indexes.add(index)
        return ToolCallDelta(index, call_id, name, arguments)

    def _metered(self, delta: Delta, text: str) -> Delta:
        """Meter a produced delta: its words (a cut stream is billed for what was relayed)
        and, for the first, the time."""
        self._meter.completion_tokens_estimate += count_text_tokens(text)
        if self._meter.first_token_at_ns is None:
            self._meter.first_token_at_ns = self._clock_ns()
        return delta


__all__ = [
    "SURFACES_TRANSLATED",
    "ChatChunkTranslator",
    "chat_answer",
    "chat_logprobs",
    "chat_messages",
    "chat_request",
    "reasoning_effort",
    "response_format_field",
    "sampling_fields",
    "tool_fields",
]
