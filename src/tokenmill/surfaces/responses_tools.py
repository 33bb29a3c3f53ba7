"""The tools of an OpenAI Responses request (pure): the function tools offered, read into
neutral ``Tool``s, and the tool choice. A built-in tool (web search, file search, a
computer, code interpreter, image generation, MCP, a shell, custom tools) needs what
OpenAI runs itself; no engine here provides it, so it is refused with a 400 naming it.
"""

from __future__ import annotations

from typing import Any

from tokenmill.errors import InvalidRequest
from tokenmill.neutral import AUTO_TOOLS, Tool, ToolChoice
from tokenmill.surfaces.chat_request import TOOL_DESCRIPTION_CHARS_MAX, TOOL_NAME
from tokenmill.surfaces.openai_fields import invalid_type


def tools_of(entries: Any) -> tuple[Tool, ...]:
    """The function tools offered; a built-in tool is refused, naming it."""
    tools = []
    for index, entry in enumerate(entries):
        param = f"tools.[{index}]"
        kind = entry.get("type")
        if not isinstance(kind, str):
            raise InvalidRequest(f"{param}.type is required.", param=f"{param}.type")
        if kind != "function":
            raise InvalidRequest(
                f"{param}: '{kind[:40]}' is a built-in tool no engine here provides;"
                " offer function tools.",
                param=f"{param}.type",
                code="unsupported_value",
            )
        tools.append(_function(entry, param))
    names = [tool.name for tool in tools]
    if len(set(names)) != len(names):
        raise InvalidRequest("Tool names must be unique.", param="tools", code="invalid_value")
    return tuple(tools)


def _function(entry: dict[str, Any], param: str) -> Tool:
    name = entry.get("name")
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise InvalidRequest(
            f"{param}.name must be 1 to 64 letters, digits, underscores or dashes.",
            param=f"{param}.name",
        )
    description = entry.get("description")
    if description is not None and (
        not isinstance(description, str) or len(description) > TOOL_DESCRIPTION_CHARS_MAX
    ):
        raise invalid_type(
            f"{param}.description", f"a string of at most {TOOL_DESCRIPTION_CHARS_MAX} characters"
        )
    parameters = entry.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise invalid_type(f"{param}.parameters", "a JSON schema object")
    strict = entry.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise invalid_type(f"{param}.strict", "a boolean")
    schema = parameters if parameters is not None else {"type": "object", "properties": {}}
    return Tool(name, description or "", schema, bool(strict))


def tool_choice_of(body: dict[str, Any], tools: tuple[Tool, ...]) -> ToolChoice:
    parallel = body.get("parallel_tool_calls") is not False
    choice = body.get("tool_choice")
    if choice is None:
        return AUTO_TOOLS if parallel else ToolChoice(parallel=False)
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise InvalidRequest(
                "'tool_choice' must be 'none', 'auto', 'required' or a named function.",
                param="tool_choice",
                code="invalid_value",
            )
        if choice == "required" and not tools:
            raise InvalidRequest(
                "'tool_choice' is 'required' but no tools are given.", param="tool_choice"
            )
        return ToolChoice(choice, None, parallel)  # type: ignore[arg-type]
    if choice.get("type") != "function":
        raise InvalidRequest(
            "'tool_choice' may name a function tool only ({'type': 'function', 'name'}).",
            param="tool_choice.type",
            code="unsupported_value",
        )
    name = choice.get("name")
    if not isinstance(name, str) or name not in {tool.name for tool in tools}:
        raise InvalidRequest(
            "'tool_choice' must name one of the tools given.",
            param="tool_choice.name",
            code="invalid_value",
        )
    return ToolChoice("tool", name, parallel)
