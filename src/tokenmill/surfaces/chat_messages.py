"""Chat messages: checked on the way in, and read into neutral messages when an engine
asks for them (pure).

``check_message`` runs on every request (cheap type checks; it also measures the images,
which the hold's prompt bound counts apart); ``read_messages`` runs only for an engine that
does not speak chat itself. OpenAI's ``developer`` role is a system message, the older
``function`` role a tool result named by its function, and an assistant's older
``function_call`` a tool call.
"""

from __future__ import annotations

from typing import Any

from tokenmill.errors import InvalidRequest
from tokenmill.neutral import (
    ImagePart,
    Message,
    Part,
    ReasoningPart,
    Role,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from tokenmill.surfaces.openai_fields import ROLES

IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
ROLE_OF: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}


def _image_size(part: dict[str, Any]) -> int:
    """The bytes an image part takes in the body (its URL or data), counted as one image."""
    value = part.get(part["type"])
    if isinstance(value, dict):
        value = value.get("url", "")
    return len(value) if isinstance(value, str) else 0


def check_message(index: int, message: Any) -> tuple[int, int]:
    """Check one message; return (images in it, bytes those images take in the body)."""
    param = f"messages.[{index}]"
    if not isinstance(message, dict):
        raise InvalidRequest(f"{param} must be an object.", param=param)
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidRequest(
            f"{param}.role must be one of {', '.join(sorted(ROLES))}.", param=f"{param}.role"
        )
    if role == "assistant":
        _check_tool_calls(param, message)
    elif role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise InvalidRequest(
            f"{param}.tool_call_id is required in a tool message.",
            param=f"{param}.tool_call_id",
        )
    content = message.get("content")
    if content is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return 0, 0
        raise InvalidRequest(f"{param}.content is required.", param=f"{param}.content")
    if isinstance(content, str):
        return 0, 0
    if isinstance(content, list) and all(
        isinstance(part, dict) and isinstance(part.get("type"), str) for part in content
    ):
        images = [part for part in content if part["type"] in IMAGE_PARTS]
        return len(images), sum(_image_size(part) for part in images)
    raise InvalidRequest(
        f"{param}.content must be a string or an array of content parts.",
        param=f"{param}.content",
    )


def _check_tool_calls(param: str, message: dict[str, Any]) -> None:
    calls = message.get("tool_calls")
    if calls is None:
        return
    if not isinstance(calls, list):
        raise InvalidRequest(f"{param}.tool_calls must be an array.", param=f"{param}.tool_calls")
    for number, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        valid = (
            isinstance(function, dict)
            and isinstance(call.get("id"), str)
            and isinstance(function.get("name"), str)
            and isinstance(function.get("arguments"), str)
        )
        if not valid:
            raise InvalidRequest(
                f"{param}.tool_calls.[{number}] must have an 'id' and a 'function' with a"
                " 'name' and 'arguments' (a JSON string).",
                param=f"{param}.tool_calls.[{number}]",
            )


def read_messages(messages: list[dict[str, Any]]) -> tuple[Message, ...]:
    """Checked chat messages as neutral messages; InvalidRequest for a content part no
    neutral form has (audio, files), naming it."""
    return tuple(_message(index, message) for index, message in enumerate(messages))


def _message(index: int, message: dict[str, Any]) -> Message:
    role = ROLE_OF[message["role"]]
    param = f"messages.[{index}].content"
    name = message.get("name") if isinstance(message.get("name"), str) else None
    if role == "tool":
        call_id = message.get("tool_call_id") or name or ""
        content = tuple(_content(param, message.get("content"), images=True))
        texts = tuple(part for part in content if isinstance(part, (TextPart, ImagePart)))
        return Message("tool", (ToolResultPart(call_id, texts),), name)
    parts: list[Part] = []
    reasoning = message.get("reasoning_content")
    if role == "assistant" and isinstance(reasoning, str) and reasoning:
        parts.append(ReasoningPart(reasoning))
    parts.extend(_content(param, message.get("content"), images=role == "user"))
    if role == "assistant":
        parts.extend(_tool_calls(message))
    return Message(role, tuple(parts), name)


def _content(param: str, content: Any, *, images: bool) -> list[TextPart | ImagePart]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)]
    parts: list[TextPart | ImagePart] = []
    for number, part in enumerate(content):
        kind = part["type"]
        if kind in TEXT_PARTS and isinstance(part.get("text"), str):
            parts.append(TextPart(part["text"], _cache_control(part)))
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            parts.append(TextPart(part["refusal"]))
        elif kind in IMAGE_PARTS and images:
            parts.append(_image(f"{param}.[{number}]", part))
        else:
            raise InvalidRequest(
                f"{param}.[{number}]: a '{str(kind)[:40]}' part is not supported here by"
                " this model's engine.",
                param=f"{param}.[{number}].type",
                code="unsupported_value",
            )
    return parts


def _cache_control(part: dict[str, Any]) -> dict[str, Any] | None:
    value = part.get("cache_control")
    return value if isinstance(value, dict) else None


def _image(param: str, part: dict[str, Any]) -> ImagePart:
    value = part.get(part["type"])
    detail = None
    if isinstance(value, dict):
        detail = value.get("detail") if isinstance(value.get("detail"), str) else None
        value = value.get("url")
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{param} needs an image URL.", param=f"{param}.image_url")
    return ImagePart(value, detail)


def _tool_calls(message: dict[str, Any]) -> list[ToolCallPart]:
    calls = [
        ToolCallPart(call["id"], call["function"]["name"], call["function"]["arguments"])
        for call in message.get("tool_calls") or ()
    ]
    legacy = message.get("function_call")
    if isinstance(legacy, dict) and isinstance(legacy.get("name"), str):
        arguments = legacy.get("arguments")
        calls.append(
            ToolCallPart(
                legacy["name"], legacy["name"], arguments if isinstance(arguments, str) else "{}"
            )
        )
    return calls
