"""The Anthropic Messages surface, on the way in: a ``/v1/messages`` body (or a
``/v1/messages/count_tokens`` one) checked and read into a ``NeutralCall`` (pure).

What every engine acts on (the output cap, tools and the tool choice, extended thinking,
sampling, stop sequences, a JSON output format) is read into neutral fields here, at once;
the conversation is checked here too, block by block (``messages_blocks``), but read into
neutral messages only when an engine asks, since an Anthropic engine relays the body as it
came. Unknown top-level fields are kept for that relay; what no engine here can do (server
tools, MCP servers, containers) is refused naming the field.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenmill.config import Limits, ModelConfig
from tokenmill.errors import InvalidRequest
from tokenmill.neutral import (
    AUTO_TOOLS,
    TEXT_OUTPUT,
    NeutralCall,
    OutputFormat,
    PromptSize,
    Reasoning,
    Sampling,
    Tool,
    ToolChoice,
    ToolChoiceMode,
)
from tokenmill.surfaces.chat_request import TOOL_NAME
from tokenmill.surfaces.messages_blocks import check_message, check_system, read_messages
from tokenmill.surfaces.openai_fields import (
    INT_MAX,
    TOOLS_COUNT_MAX,
    ModelAccess,
    cap_value,
    check_array,
    check_integer,
    check_kind,
    check_number,
    check_type,
    invalid_type,
    is_int,
    model_of,
)

# Anthropic's documented bounds (its API reference): part of the wire contract.
SAMPLING_RANGES = {"temperature": (0, 1), "top_p": (0, 1)}
THINKING_BUDGET_TOKENS_MIN = 1024
USER_ID_CHARS_MAX = 256
# Ours (Anthropic documents none): what an engine is sent and a stream is scanned for.
STOP_SEQUENCES_COUNT_MAX = 16
STOP_SEQUENCE_CHARS_MAX = 256
# Agents' tool descriptions run long (a coding agent's reach 10k characters); the body's
# bound is the real one.
TOOL_DESCRIPTION_CHARS_MAX = 64 * 1024
TOOL_CHOICE_MODES: dict[str, ToolChoiceMode] = {
    "auto": "auto",
    "any": "required",
    "tool": "tool",
    "none": "none",
}
UNSUPPORTED_FIELDS = {
    "mcp_servers": "no engine here connects to MCP servers",
    "container": "no engine here runs containers",
}


def parse_messages(
    body: dict[str, Any],
    models: dict[str, ModelConfig],
    limits: Limits,
    *,
    may_use: ModelAccess | None = None,
    body_bytes: int | None = None,
    prior: tuple[dict[str, Any], ...] = (),
) -> NeutralCall:
    """The neutral call of a Messages body; ``body_bytes`` is the size of the body as sent
    (the prompt bound's measure), estimated from the JSON when not given."""
    name, model = model_of(body, models, may_use)
    check_kind(name, model, "chat")
    max_tokens = _max_tokens(body, model)
    cap = min(max_tokens, model.output_tokens_max, limits.output_tokens_max)
    check_type(body, "stream", (bool,), "a boolean")
    call = _call(body, name, limits, body_bytes, max_tokens, cap, bool(body.get("stream")))
    assert call.output_tokens_max is not None and call.output_tokens_max <= max_tokens
    return call


def parse_count_tokens(
    body: dict[str, Any],
    models: dict[str, ModelConfig],
    limits: Limits,
    *,
    may_use: ModelAccess | None = None,
    body_bytes: int | None = None,
    prior: tuple[dict[str, Any], ...] = (),
) -> NeutralCall:
    """The neutral call of a ``count_tokens`` body: a Messages body with no answer asked
    for (``max_tokens`` and ``stream`` are not read). ``prior`` makes it a ``Parser``; it
    is never given."""
    name, model = model_of(body, models, may_use)
    check_kind(name, model, "chat")
    call = _call(body, name, limits, body_bytes, None, None, False)
    assert call.output_tokens_max is None
    return call


def _call(
    body: dict[str, Any],
    name: str,
    limits: Limits,
    body_bytes: int | None,
    max_tokens: int | None,
    cap: int | None,
    stream: bool,
) -> NeutralCall:
    _refuse_unsupported(body)
    system = body.get("system")
    check_system(system)
    messages = _messages(body, limits)
    images_count = image_bytes = 0
    for index, message in enumerate(messages):
        images, size = check_message(index, message)
        images_count += images
        image_bytes += size
    tools = _tools(body)
    sampling = _sampling(body)
    _check_metadata(body.get("metadata"))
    check_type(body, "service_tier", (str,), "a string")
    size = body_bytes if body_bytes is not None else len(orjson.dumps(body))
    return NeutralCall(
        surface="messages",
        model=name,
        body=body,
        stream=stream,
        include_usage=False,  # Anthropic's usage is in message_start and message_delta
        output_tokens_max=cap,
        prompt=PromptSize(
            size - image_bytes, len(messages) + (1 if system else 0), len(tools), images_count
        ),
        stop=_stop_sequences(body.get("stop_sequences")),
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        output_format=_output_format(body.get("output_config")),
        reasoning=_thinking(body.get("thinking"), max_tokens, cap),
        sampling=sampling,
        read_messages=lambda: read_messages(system, messages),
    )


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for name, why in UNSUPPORTED_FIELDS.items():
        if body.get(name) is not None:
            raise InvalidRequest(
                f"'{name}' is not supported: {why}.", param=name, code="unsupported_value"
            )


def _max_tokens(body: dict[str, Any], model: ModelConfig) -> int:
    value = cap_value(body, "max_tokens", model, required=True)
    assert value is not None
    return value


def _messages(body: dict[str, Any], limits: Limits) -> list[Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    if len(messages) > limits.messages_count_max:
        raise InvalidRequest(
            f"'messages' has more than {limits.messages_count_max} entries.", param="messages"
        )
    return messages


def _tools(body: dict[str, Any]) -> tuple[Tool, ...]:
    """The client's own tools; a server tool (any other ``type``) is refused by name."""
    check_array(body, "tools", TOOLS_COUNT_MAX, dict, "tool objects")
    tools = [
        _tool(f"tools.[{index}]", entry) for index, entry in enumerate(body.get("tools") or ())
    ]
    names = [tool.name for tool in tools]
    if len(set(names)) != len(names):
        raise InvalidRequest("Tool names must be unique.", param="tools", code="invalid_value")
    return tuple(tools)


def _tool(param: str, entry: dict[str, Any]) -> Tool:
    kind = entry.get("type")
    if kind not in (None, "custom"):
        if not isinstance(kind, str):
            raise invalid_type(f"{param}.type", "'custom' or absent")
        raise InvalidRequest(
            f"{param}: no engine here provides the server tool '{kind[:64]}'; only custom"
            " tools (with an 'input_schema') are supported.",
            param=f"{param}.type",
            code="unsupported_value",
        )
    name = entry.get("name")
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise InvalidRequest(
            f"{param}.name must be 1 to 64 letters, digits, underscores or dashes.",
            param=f"{param}.name",
        )
    description = entry.get("description", "")
    if not isinstance(description, str) or len(description) > TOOL_DESCRIPTION_CHARS_MAX:
        raise invalid_type(
            f"{param}.description", f"a string of at most {TOOL_DESCRIPTION_CHARS_MAX} characters"
        )
    schema = entry.get("input_schema")
    if not isinstance(schema, dict):
        raise invalid_type(f"{param}.input_schema", "a JSON schema object")
    cache_control = entry.get("cache_control")
    if cache_control is not None and not isinstance(cache_control, dict):
        raise invalid_type(f"{param}.cache_control", "an object")
    strict = entry.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise invalid_type(f"{param}.strict", "a boolean")
    return Tool(name, description, schema, strict is True)


def _tool_choice(choice: Any, tools: tuple[Tool, ...]) -> ToolChoice:
    if choice is None:
        return AUTO_TOOLS
    kind = choice.get("type") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or not isinstance(kind, str) or kind not in TOOL_CHOICE_MODES:
        raise InvalidRequest(
            "'tool_choice' must be an object of type auto, any, tool or none.",
            param="tool_choice.type" if isinstance(choice, dict) else "tool_choice",
            code="invalid_value",
        )
    disable = choice.get("disable_parallel_tool_use")
    if disable is not None and not isinstance(disable, bool):
        raise invalid_type("tool_choice.disable_parallel_tool_use", "a boolean")
    name = choice.get("name")
    if kind == "tool" and (not isinstance(name, str) or name not in {t.name for t in tools}):
        raise InvalidRequest(
            "'tool_choice.name' must name one of the tools given.",
            param="tool_choice.name",
            code="invalid_value",
        )
    if kind == "any" and not tools:
        raise InvalidRequest("'tool_choice' is 'any' but no tools are given.", param="tool_choice")
    return ToolChoice(
        TOOL_CHOICE_MODES[kind], name if kind == "tool" else None, disable is not True
    )


def _output_format(config: Any) -> OutputFormat:
    """``output_config.format``: a JSON schema the answer's text is an instance of
    (Anthropic's structured outputs, strict by nature). Read here so that every engine keeps
    it: an engine that is not Anthropic's would otherwise answer free text to a client
    that parses JSON. ``effort`` is a hint an Anthropic upstream gets relayed."""
    if config is None:
        return TEXT_OUTPUT
    if not isinstance(config, dict):
        raise invalid_type("output_config", "an object")
    effort = config.get("effort")
    if effort is not None and not isinstance(effort, str):
        raise invalid_type("output_config.effort", "a string")
    spec = config.get("format")
    if spec is None:
        return TEXT_OUTPUT
    if not isinstance(spec, dict) or spec.get("type") != "json_schema":
        raise InvalidRequest(
            "'output_config.format' must be an object of type json_schema.",
            param="output_config.format.type" if isinstance(spec, dict) else "output_config.format",
            code="invalid_value",
        )
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise invalid_type("output_config.format.schema", "a JSON schema object")
    return OutputFormat("json_schema", schema=schema, strict=True)


def _stop_sequences(stops: Any) -> tuple[str, ...]:
    if stops is None:
        return ()
    if (
        not isinstance(stops, list)
        or len(stops) > STOP_SEQUENCES_COUNT_MAX
        or not all(isinstance(s, str) and 0 < len(s) <= STOP_SEQUENCE_CHARS_MAX for s in stops)
    ):
        raise InvalidRequest(
            f"'stop_sequences' must be an array of at most {STOP_SEQUENCES_COUNT_MAX}"
            f" non-empty strings of at most {STOP_SEQUENCE_CHARS_MAX} characters each.",
            param="stop_sequences",
        )
    return tuple(stops)


def _sampling(body: dict[str, Any]) -> Sampling:
    for name, (low, high) in SAMPLING_RANGES.items():
        check_number(body, name, low, high)
    check_integer(body, "top_k", 0, INT_MAX)
    return Sampling(body.get("temperature"), body.get("top_p"), body.get("top_k"))


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict) or not set(metadata) <= {"user_id"}:
        raise InvalidRequest(
            "'metadata' must be an object with 'user_id' only.",
            param="metadata",
            code="invalid_value",
        )
    user_id = metadata.get("user_id")
    if user_id is not None and (not isinstance(user_id, str) or len(user_id) > USER_ID_CHARS_MAX):
        raise invalid_type(
            "metadata.user_id", f"a string of at most {USER_ID_CHARS_MAX} characters"
        )


def _thinking(thinking: Any, max_tokens: int | None, cap: int | None) -> Reasoning | None:
    """Extended thinking: a budget of at least 1024 tokens, below ``max_tokens`` (thinking is
    part of the output) and so below the cap it is held for; ``adaptive`` leaves the budget
    to the model (and the engine)."""
    if thinking is None:
        return None
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled":
        return None
    if kind == "adaptive":
        return Reasoning()
    if kind != "enabled" or not isinstance(thinking, dict):
        raise InvalidRequest(
            "'thinking' must be an object of type enabled, adaptive or disabled.",
            param="thinking.type" if isinstance(thinking, dict) else "thinking",
            code="invalid_value",
        )
    budget: Any = thinking.get("budget_tokens")
    if not is_int(budget) or budget < THINKING_BUDGET_TOKENS_MIN:
        raise InvalidRequest(
            "'thinking.budget_tokens' must be an integer of at least"
            f" {THINKING_BUDGET_TOKENS_MIN}.",
            param="thinking.budget_tokens",
        )
    if max_tokens is not None and budget >= max_tokens:
        raise InvalidRequest(
            f"'thinking.budget_tokens' ({budget}) must be less than 'max_tokens' ({max_tokens}).",
            param="thinking.budget_tokens",
        )
    if cap is not None and budget >= cap:
        raise InvalidRequest(
            f"'thinking.budget_tokens' ({budget}) must be less than this model's output cap"
            f" of {cap} tokens.",
            param="thinking.budget_tokens",
        )
    return Reasoning(budget_tokens=budget)


__all__ = [
    "STOP_SEQUENCES_COUNT_MAX",
    "STOP_SEQUENCE_CHARS_MAX",
    "parse_count_tokens",
    "parse_messages",
]
