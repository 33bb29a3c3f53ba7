"""The neutral call as an Anthropic Messages request (pure: no I/O, no clock).

The ``anthropic`` engine serves surfaces that speak another API (OpenAI chat today), so the
request is built from the neutral call, never from the client's wire body: system messages
become ``system`` blocks, consecutive turns of one role are merged (Anthropic wants them to
alternate), tool results become user turns of ``tool_result`` blocks, signed reasoning goes
back as ``thinking`` blocks, and a JSON output format becomes one forced tool whose input
is the answer (Anthropic has no response_format). Anything that cannot be carried is refused
with ``InvalidRequest`` naming the field, before any I/O: the client would otherwise get an
answer other than the one it asked for.

Extended thinking: ``reasoning`` becomes ``thinking.budget_tokens``, from the budget asked
for or from the effort (``THINKING_BUDGET_TOKENS_BY_EFFORT``: minimal at Anthropic's least,
each step above at least twice the one below, medium and high at the 8k and 16k of
Anthropic's examples), clamped to Anthropic's bounds (at least 1024, below ``max_tokens``).
Anthropic refuses thinking beside a forced tool, a temperature other than 1, top_k, or a
top_p below 0.95; those are refused here, by name.

The conversation's blocks (images, tool calls and results, reasoning) are translated in
``anthropic_blocks``; the answer and the stream go back in ``anthropic_answers``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tokenmill.engines.anthropic_blocks import conversation
from tokenmill.errors import InvalidRequest
from tokenmill.neutral import (
    NeutralCall,
    OutputFormat,
    Reasoning,
    Sampling,
    ToolChoice,
)

SURFACES_SERVED = frozenset({"chat", "messages", "responses"})  # not completions, embeddings
TEMPERATURE_MAX = 1.0  # Anthropic's range is 0..1, OpenAI's 0..2
THINKING_TEMPERATURE = 1.0  # the only temperature Anthropic allows beside thinking
THINKING_TOP_P_MIN = 0.95
THINKING_BUDGET_TOKENS_MIN = 1024  # Anthropic's least budget
THINKING_BUDGET_TOKENS_BY_EFFORT = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 32768,  # OpenAI's newest effort, which the chat surface accepts
}
THINKING_EFFORT_DEFAULT = "medium"  # reasoning asked for with neither effort nor budget
JSON_TOOL_NAME = "json_answer"  # the forced tool of a JSON output format without a name
JSON_TOOL_DESCRIPTION = "Give your whole answer as this tool's input."
USER_ID_CHARS_MAX = 256  # Anthropic's metadata.user_id bound
TOOL_CHOICE_TYPES = {"auto": "auto", "none": "none", "required": "any", "tool": "tool"}
# OpenAI chat fields Anthropic has no equivalent for, each with the one value that asks for
# nothing (what an SDK may send by default); any other value is refused naming the field.
UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "n": lambda value: value == 1,
    "logit_bias": lambda value: value == {},
    "presence_penalty": lambda value: value == 0,
    "frequency_penalty": lambda value: value == 0,
    "modalities": lambda value: value == ["text"],
    "audio": lambda value: False,
    "prediction": lambda value: False,
    "web_search_options": lambda value: False,
    "verbosity": lambda value: value == "medium",
}


def messages_request(
    call: NeutralCall, output_tokens_max: int | None, model: str, engine: str
) -> dict[str, Any]:
    """The Anthropic Messages request for ``call`` with ``output_tokens_max`` as
    ``max_tokens``; InvalidRequest, naming the field, for what has no Anthropic equivalent."""
    _refuse_surface(call, engine)
    assert output_tokens_max is not None  # the gateway caps every chat call
    assert output_tokens_max >= 1
    _refuse_unsupported(call, engine)
    system, turns = conversation(call.messages)
    request: dict[str, Any] = {"model": model, "max_tokens": output_tokens_max, "messages": turns}
    if system:
        request["system"] = system
    if call.stop:
        request["stop_sequences"] = list(call.stop)
    request.update(sampling_fields(call.sampling, engine))
    request.update(tool_fields(call, engine))
    if call.reasoning is not None:
        _refuse_beside_thinking(call)
        request["thinking"] = thinking_field(call.reasoning, output_tokens_max, call.cap_param)
    user_id = _user_id(call.body)
    if user_id is not None:
        request["metadata"] = {"user_id": user_id}
    if call.stream:
        request["stream"] = True
    assert request["messages"]
    return request


def _refuse_surface(call: NeutralCall, engine: str) -> None:
    if call.surface not in SURFACES_SERVED:
        raise InvalidRequest(
            f"The model '{call.model}' is served by the Anthropic engine '{engine}',"
            f" which answers conversations (chat, Messages, Responses), not {call.surface}.",
            param="model",
        )


def _refuse(name: str, engine: str, why: str = "has no equivalent") -> InvalidRequest:
    return InvalidRequest(
        f"'{name}' is not supported by this model (the Anthropic engine '{engine}' {why}).",
        param=name,
    )


def _refuse_unsupported(call: NeutralCall, engine: str) -> None:
    """The chat body's fields with no Anthropic equivalent, and logprobs."""
    body = call.body
    for name, asks_nothing in UNSUPPORTED.items():
        value = body.get(name)
        if value is not None and not asks_nothing(value):
            raise _refuse(name, engine)
    if call.logprobs:
        raise _refuse("logprobs", engine)
    if call.top_logprobs:
        raise _refuse("top_logprobs", engine)


def sampling_fields(sampling: Sampling, engine: str) -> dict[str, Any]:
    """temperature (0..1 here), top_p and top_k as given; a seed has no equivalent and is
    only a hint (OpenAI's is best effort too), so it stays behind."""
    fields: dict[str, Any] = {}
    temperature = sampling.temperature
    if temperature is not None:
        if not 0 <= temperature <= TEMPERATURE_MAX:
            raise InvalidRequest(
                f"'temperature' must be from 0 to {TEMPERATURE_MAX:g} for this model (the"
                f" Anthropic engine '{engine}').",
                param="temperature",
            )
        fields["temperature"] = temperature
    if sampling.top_p is not None:
        fields["top_p"] = sampling.top_p
    if sampling.top_k is not None:
        fields["top_k"] = sampling.top_k
    return fields


def json_tool_name(output_format: OutputFormat) -> str | None:
    """The forced tool that carries a JSON answer; None for a text answer."""
    if output_format.kind == "text":
        return None
    return output_format.name or JSON_TOOL_NAME


def tool_fields(call: NeutralCall, engine: str) -> dict[str, Any]:
    """``tools`` and ``tool_choice``: the client's tools, or the one forced tool of a JSON
    output format (the two at once cannot be told apart in the answer: refused)."""
    name = json_tool_name(call.output_format)
    if name is not None:
        if call.tools:
            raise _refuse("response_format", engine, "cannot combine it with tools")
        schema = _json_schema(call.output_format, engine)
        forced = {"name": name, "description": JSON_TOOL_DESCRIPTION, "input_schema": schema}
        return {"tools": [forced], "tool_choice": {"type": "tool", "name": name}}
    choice = call.tool_choice
    if not call.tools:
        if choice.mode in ("required", "tool"):
            raise _refuse("tool_choice", engine, "needs a tool to call")
        return {}
    names = {tool.name for tool in call.tools}
    tools = []
    for tool in call.tools:
        block: dict[str, Any] = {"name": tool.name, "input_schema": tool.parameters}
        if tool.description:
            block["description"] = tool.description
        tools.append(block)
    return {"tools": tools, "tool_choice": tool_choice_field(choice, names, engine)}


def _json_schema(output_format: OutputFormat, engine: str) -> dict[str, Any]:
    """The forced tool's input schema: Anthropic's tool input is always an object."""
    if output_format.kind == "json_object":
        return {"type": "object"}
    schema = output_format.schema
    if schema is None or schema.get("type") != "object":
        raise _refuse("response_format", engine, "answers JSON objects only")
    return schema


def tool_choice_field(choice: ToolChoice, names: set[str], engine: str) -> dict[str, Any]:
    """auto / none / required (Anthropic's any) / one named tool; one call per turn when
    parallel calls are not allowed."""
    field: dict[str, Any] = {"type": TOOL_CHOICE_TYPES[choice.mode]}
    if choice.mode == "tool":
        if choice.name not in names:
            raise _refuse("tool_choice", engine, "can only force a tool it was given")
        field["name"] = choice.name
    if not choice.parallel and choice.mode != "none":
        field["disable_parallel_tool_use"] = True
    return field


def thinking_field(
    reasoning: Reasoning, output_tokens_max: int, cap_param: str = "max_tokens"
) -> dict[str, Any]:
    """Extended thinking with a budget of at least 1024 tokens and below ``max_tokens``
    (thinking is part of the output); a cap that leaves no room for 1024 is refused: the
    hold was computed for that cap, so it cannot be raised here."""
    if output_tokens_max <= THINKING_BUDGET_TOKENS_MIN:
        raise InvalidRequest(
            f"'{cap_param}' must be above {THINKING_BUDGET_TOKENS_MIN} for reasoning on this"
            f" model (Anthropic's least thinking budget is {THINKING_BUDGET_TOKENS_MIN}"
            " tokens, part of the output).",
            param=cap_param,
        )
    wanted = reasoning.budget_tokens
    if wanted is None:
        effort = reasoning.effort or THINKING_EFFORT_DEFAULT
        default = THINKING_BUDGET_TOKENS_BY_EFFORT[THINKING_EFFORT_DEFAULT]
        wanted = THINKING_BUDGET_TOKENS_BY_EFFORT.get(effort, default)
    budget = min(max(wanted, THINKING_BUDGET_TOKENS_MIN), output_tokens_max - 1)
    assert THINKING_BUDGET_TOKENS_MIN <= budget < output_tokens_max
    return {"type": "enabled", "budget_tokens": budget}


def _refuse_beside_thinking(call: NeutralCall) -> None:
    """What Anthropic refuses when thinking is on, named before it goes up."""
    sampling = call.sampling
    conflicts = (
        ("response_format", call.output_format.kind != "text"),
        ("tool_choice", call.tools_offered and call.tool_choice.mode in ("required", "tool")),
        ("temperature", sampling.temperature not in (None, THINKING_TEMPERATURE)),
        ("top_p", sampling.top_p is not None and sampling.top_p < THINKING_TOP_P_MIN),
        ("top_k", sampling.top_k is not None),
    )
    for name, conflicting in conflicts:
        if conflicting:
            raise InvalidRequest(
                f"'{name}' cannot be combined with reasoning on this model (Anthropic's"
                " extended thinking refuses it).",
                param=name,
            )


def _user_id(body: dict[str, Any]) -> str | None:
    """OpenAI's opaque end-user id, as Anthropic's (both are for abuse detection)."""
    for name in ("safety_identifier", "user"):
        value = body.get(name)
        if isinstance(value, str) and 0 < len(value) <= USER_ID_CHARS_MAX:
            return value
    return None


__all__ = [
    "JSON_TOOL_NAME",
    "THINKING_BUDGET_TOKENS_BY_EFFORT",
    "UNSUPPORTED",
    "json_tool_name",
    "messages_request",
    "sampling_fields",
    "thinking_field",
    "tool_choice_field",
    "tool_fields",
]
