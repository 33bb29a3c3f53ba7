"""The chat completions surface, on the way in: a ``/v1/chat/completions`` body checked
and read into a ``NeutralCall`` (pure).

What every engine acts on (tools, the tool choice, the output format, reasoning, log
probabilities, sampling, stop sequences, the output cap) is read into neutral fields here,
at once; the conversation itself is read into neutral messages only when an engine asks
(``chat_messages.read_messages``), since a relayed request never needs it. Both are checked
here, so a malformed tool call or tool message is a 400 before any funds are held.
"""

from __future__ import annotations

import re
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
)
from tokenmill.surfaces.chat_messages import check_message, read_messages
from tokenmill.surfaces.openai_fields import (
    CHAT_FIELD_TYPES,
    METADATA_COUNT_MAX,
    MODALITIES_COUNT_MAX,
    SAFETY_IDENTIFIER_CHARS_MAX,
    TOOLS_COUNT_MAX,
    TOP_LOGPROBS_MAX,
    ModelAccess,
    check_array,
    check_integer,
    check_kind,
    check_metadata,
    check_sampling,
    check_string,
    check_type,
    invalid_type,
    model_of,
    output_cap,
    stop_of,
    stream_of,
)

TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
TOOL_DESCRIPTION_CHARS_MAX = 8192
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
assert METADATA_COUNT_MAX > 0


def parse_chat(
    body: dict[str, Any],
    models: dict[str, ModelConfig],
    limits: Limits,
    *,
    may_use: ModelAccess | None = None,
    body_bytes: int | None = None,
    prior: tuple[dict[str, Any], ...] = (),
) -> NeutralCall:
    """The neutral call of a chat body; ``body_bytes`` is the size of the body as sent
    (the prompt bound's measure), estimated from the JSON when not given."""
    name, model = model_of(body, models, may_use)
    check_kind(name, model, "chat")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    if len(messages) > limits.messages_count_max:
        raise InvalidRequest(
            f"'messages' has more than {limits.messages_count_max} entries.", param="messages"
        )
    images_count = image_bytes = 0
    for index, message in enumerate(messages):
        images, size = check_message(index, message)
        images_count += images
        image_bytes += size
    check_sampling(body)
    _check_options(body)
    stream, include_usage = stream_of(body)
    tools = _tools(body)
    return NeutralCall(
        surface="chat",
        model=name,
        body=body,
        stream=stream,
        include_usage=include_usage,
        output_tokens_max=output_cap(body, model, limits),
        cap_param="max_completion_tokens" if "max_completion_tokens" in body else "max_tokens",
        prompt=PromptSize(
            (body_bytes if body_bytes is not None else _json_bytes(body)) - image_bytes,
            len(messages),
            len(tools),
            images_count,
        ),
        stop=stop_of(body, limits),
        tools=tools,
        tool_choice=_tool_choice(body, tools),
        output_format=_output_format(body.get("response_format")),
        reasoning=_reasoning(body.get("reasoning_effort")),
        sampling=Sampling(body.get("temperature"), body.get("top_p"), None, body.get("seed")),
        logprobs=body.get("logprobs") is True,
        top_logprobs=body.get("top_logprobs") or 0,
        batch=body.get("service_tier") == "flex",
        read_messages=lambda: read_messages(messages),
    )


def _json_bytes(body: dict[str, Any]) -> int:
    """The body's size as JSON, where no size was measured (tests, internal callers)."""
    return len(orjson.dumps(body))


def _check_options(body: dict[str, Any]) -> None:
    """Chat's own fields: log probabilities, metadata, modalities, and those checked for
    their type only."""
    for name, kinds, what in CHAT_FIELD_TYPES:
        check_type(body, name, kinds, what)
    check_integer(body, "top_logprobs", 0, TOP_LOGPROBS_MAX)
    if body.get("top_logprobs") is not None and body.get("logprobs") is not True:
        raise InvalidRequest(
            "'top_logprobs' requires 'logprobs' to be true.",
            param="top_logprobs",
            code="invalid_value",
        )
    check_string(body, "safety_identifier", SAFETY_IDENTIFIER_CHARS_MAX)
    check_metadata(body.get("metadata"))
    check_array(body, "modalities", MODALITIES_COUNT_MAX, str, "strings")
    check_array(body, "tools", TOOLS_COUNT_MAX, dict, "tool objects")
    check_array(body, "functions", TOOLS_COUNT_MAX, dict, "function objects")


def _tools(body: dict[str, Any]) -> tuple[Tool, ...]:
    """The function tools offered (``tools``, or the older ``functions``)."""
    if body.get("tools") is not None and body.get("functions") is not None:
        raise InvalidRequest("Send 'tools' or the older 'functions', not both.", param="functions")
    tools = []
    for index, entry in enumerate(body.get("tools") or ()):
        param = f"tools.[{index}]"
        if entry.get("type") != "function" or not isinstance(entry.get("function"), dict):
            raise InvalidRequest(
                f"{param}: only tools of type 'function' with a 'function' object are supported.",
                param=f"{param}.type",
                code="unsupported_value",
            )
        tools.append(_function(entry["function"], f"{param}.function"))
    for index, entry in enumerate(body.get("functions") or ()):
        tools.append(_function(entry, f"functions.[{index}]"))
    names = [tool.name for tool in tools]
    if len(set(names)) != len(names):
        raise InvalidRequest("Tool names must be unique.", param="tools", code="invalid_value")
    return tuple(tools)


def _function(function: dict[str, Any], param: str) -> Tool:
    name = function.get("name")
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise InvalidRequest(
            f"{param}.name must be 1 to 64 letters, digits, underscores or dashes.",
            param=f"{param}.name",
        )
    description = function.get("description", "")
    if not isinstance(description, str) or len(description) > TOOL_DESCRIPTION_CHARS_MAX:
        raise invalid_type(
            f"{param}.description", f"a string of at most {TOOL_DESCRIPTION_CHARS_MAX} characters"
        )
    parameters = function.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict):
        raise invalid_type(f"{param}.parameters", "a JSON schema object")
    strict = function.get("strict", False)
    if not isinstance(strict, bool) and strict is not None:
        raise invalid_type(f"{param}.strict", "a boolean")
    return Tool(name, description, parameters, bool(strict))


def _tool_choice(body: dict[str, Any], tools: tuple[Tool, ...]) -> ToolChoice:
    parallel = body.get("parallel_tool_calls") is not False
    choice = body.get("tool_choice", body.get("function_call"))
    param = "tool_choice" if "tool_choice" in body else "function_call"
    if choice is None:
        return AUTO_TOOLS if parallel else ToolChoice(parallel=False)
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise InvalidRequest(
                f"'{param}' must be 'none', 'auto', 'required' or a named function.",
                param=param,
                code="invalid_value",
            )
        if choice == "required" and not tools:
            raise InvalidRequest(f"'{param}' is 'required' but no tools are given.", param=param)
        return ToolChoice(choice, None, parallel)  # type: ignore[arg-type]
    named = choice.get("function") if choice.get("type", "function") == "function" else None
    name = named.get("name") if isinstance(named, dict) else choice.get("name")
    if not isinstance(name, str) or name not in {tool.name for tool in tools}:
        raise InvalidRequest(
            f"'{param}' must name one of the tools given.", param=param, code="invalid_value"
        )
    return ToolChoice("tool", name, parallel)


def _output_format(response_format: dict[str, Any] | None) -> OutputFormat:
    if response_format is None:
        return TEXT_OUTPUT
    kind = response_format.get("type")
    if kind not in RESPONSE_FORMATS:
        raise InvalidRequest(
            "'response_format.type' must be one of " + ", ".join(RESPONSE_FORMATS) + ".",
            param="response_format.type",
            code="invalid_value",
        )
    if kind != "json_schema":
        return TEXT_OUTPUT if kind == "text" else OutputFormat("json_object")
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise invalid_type("response_format.json_schema", "an object")
    name = spec.get("name")
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise InvalidRequest(
            "'response_format.json_schema.name' must be 1 to 64 letters, digits,"
            " underscores or dashes.",
            param="response_format.json_schema.name",
        )
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise invalid_type("response_format.json_schema.schema", "a JSON schema object")
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise invalid_type("response_format.json_schema.strict", "a boolean")
    return OutputFormat("json_schema", name, schema, bool(strict))


def _reasoning(effort: str | None) -> Reasoning | None:
    if effort is None or effort == "none":
        return None
    if effort not in REASONING_EFFORTS:
        raise InvalidRequest(
            "'reasoning_effort' must be one of " + ", ".join(REASONING_EFFORTS) + ".",
            param="reasoning_effort",
            code="invalid_value",
        )
    return Reasoning(effort)  # type: ignore[arg-type]
