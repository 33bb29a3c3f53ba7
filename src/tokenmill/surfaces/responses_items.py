"""OpenAI Responses items, on the way in (pure): a request's ``input`` checked, read into
neutral messages when an engine asks, and normalized into the items the store keeps.

``check_items`` runs on every request (cheap type checks, and the images measured, which
the hold's prompt bound counts apart); ``read_messages`` runs only for an engine that reads
the neutral form. An assistant's turn is several items here (reasoning, a message, function
calls) and one neutral assistant message there; each ``function_call_output`` is a tool
message. ``normalize_input`` writes this request's input in the shape of the items a
response outputs (each with an ``id``), so a later ``previous_response_id`` reads the stored
context (``prior``) with the same reader. Content parts are ``responses_content``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tokenmill.errors import InvalidRequest
from tokenmill.neutral import (
    DocumentPart,
    ImagePart,
    Message,
    Part,
    ReasoningPart,
    Role,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from tokenmill.surfaces.responses_content import (
    ASSISTANT_PARTS,
    INPUT_PARTS,
    check_parts,
    images_in,
    normal_part,
    read_part,
)

MESSAGE_ROLES = ("user", "system", "developer", "assistant")
ID_CHARS_MAX = 256


@dataclass(frozen=True)
class KeptResponse:
    """What the store keeps of one response: its own input (normalized, without the prior
    context), its output items, and the whole final response object the client saw."""

    id: str
    previous_response_id: str | None
    model: str
    created_s: int
    input_items: tuple[dict[str, Any], ...]
    output_items: tuple[dict[str, Any], ...]
    response: dict[str, Any]


def item_id(prefix: str, response_id: str, place: str) -> str:
    """An item's id, derived from its response's id and its place there."""
    return f"{prefix}_{response_id.removeprefix('resp_')}_{place}"


def input_items(value: Any) -> list[Any]:
    """The request's ``input`` as a list of items (a string is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise InvalidRequest(
            "'input' must be a string or a non-empty array of input items.", param="input"
        )
    return value


# --- checked on every request -----------------------------------------------------------


def check_items(items: list[Any]) -> tuple[int, int]:
    """Check every input item; return (images in them, bytes those images take)."""
    images_count = image_bytes = 0
    for index, item in enumerate(items):
        param = f"input.[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{param} must be an object.", param=param)
        _check_id(param, item)
        kind = _kind(param, item)
        if kind == "message":
            _check_message(param, item)
        elif kind == "function_call":
            for name in ("call_id", "name", "arguments"):
                _check_text(param, item, name)
        elif kind == "function_call_output":
            _check_output(param, item)
        else:
            _check_reasoning(param, item)
        images, size = images_in(item)
        images_count += images
        image_bytes += size
    return images_count, image_bytes


def _kind(param: str, item: dict[str, Any]) -> str:
    kind = item.get("type", "message" if "role" in item else None)
    if kind in ("message", "function_call", "function_call_output", "reasoning"):
        return str(kind)
    if not isinstance(kind, str):
        raise InvalidRequest(
            f"{param} must be a message (with a 'role') or an item with a 'type'.",
            param=f"{param}.type",
        )
    hint = "; send the context with 'previous_response_id'" if kind == "item_reference" else ""
    raise InvalidRequest(
        f"{param}: items of type '{kind[:40]}' are not supported here{hint}.",
        param=f"{param}.type",
        code="unsupported_value",
    )


def _check_id(param: str, item: dict[str, Any]) -> None:
    value = item.get("id")
    if value is not None and (not isinstance(value, str) or len(value) > ID_CHARS_MAX):
        raise InvalidRequest(
            f"{param}.id must be a string of at most {ID_CHARS_MAX} characters.",
            param=f"{param}.id",
        )


def _check_text(param: str, item: dict[str, Any], name: str) -> None:
    if not isinstance(item.get(name), str):
        raise InvalidRequest(
            f"{param}.{name} is required and must be a string.", param=f"{param}.{name}"
        )


def _check_message(param: str, item: dict[str, Any]) -> None:
    role = item.get("role")
    if role not in MESSAGE_ROLES:
        raise InvalidRequest(
            f"{param}.role must be one of {', '.join(MESSAGE_ROLES)}.", param=f"{param}.role"
        )
    content = item.get("content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequest(
            f"{param}.content must be a string or an array of content parts.",
            param=f"{param}.content",
        )
    check_parts(
        f"{param}.content", content, ASSISTANT_PARTS if role == "assistant" else INPUT_PARTS
    )


def _check_output(param: str, item: dict[str, Any]) -> None:
    _check_text(param, item, "call_id")
    output = item.get("output")
    if isinstance(output, str):
        return
    if not isinstance(output, list):
        raise InvalidRequest(
            f"{param}.output must be a string or an array of content parts.",
            param=f"{param}.output",
        )
    check_parts(f"{param}.output", output, INPUT_PARTS)


def _check_reasoning(param: str, item: dict[str, Any]) -> None:
    summary = item.get("summary")
    valid = isinstance(summary, list) and all(
        isinstance(entry, dict)
        and entry.get("type") == "summary_text"
        and isinstance(entry.get("text"), str)
        for entry in summary
    )
    if not valid:
        raise InvalidRequest(
            f"{param}.summary must be an array of {{'type': 'summary_text', 'text'}} parts.",
            param=f"{param}.summary",
        )
    encrypted = item.get("encrypted_content")
    if encrypted is not None and not isinstance(encrypted, str):
        raise InvalidRequest(
            f"{param}.encrypted_content must be a string.", param=f"{param}.encrypted_content"
        )


def check_tool_outputs(items: Sequence[dict[str, Any]]) -> None:
    """Every function call of a conversation (the stored context, then this input) has an
    output after it, and every output answers a call before it: OpenAI's Responses API
    refuses either, and so do the upstreams a call left open would reach (a chat server
    wants a tool message after each call, Anthropic a tool_result after each tool_use)."""
    answered: dict[str, bool] = {}  # by call id, in the order called
    for item in items:
        kind = item.get("type")
        if kind == "function_call":
            answered[item["call_id"]] = False
        elif kind == "function_call_output":
            call_id = item["call_id"]
            if call_id not in answered:
                raise InvalidRequest(
                    f"No tool call found for function call output with call_id '{call_id[:64]}'.",
                    param="input",
                )
            answered[call_id] = True
    unanswered = [call_id for call_id, done in answered.items() if not done]
    if unanswered:
        raise InvalidRequest(
            f"No tool output found for function call '{unanswered[0][:64]}'.", param="input"
        )


# --- read when an engine asks --------------------------------------------------------------


def read_messages(instructions: str | None, items: Sequence[dict[str, Any]]) -> tuple[Message, ...]:
    """Checked items (the stored context, then this request's input) as neutral messages,
    after the instructions as a system message. An assistant's reasoning and message and
    the function calls after them are one assistant message."""
    messages = [Message("system", (TextPart(instructions),))] if instructions else []
    turn: list[Part] = []  # the assistant's turn being read
    for item in items:
        kind = item.get("type", "message")
        if kind == "function_call":
            turn.append(ToolCallPart(item["call_id"], item["name"], item["arguments"]))
        elif kind == "reasoning" or item.get("role") == "assistant":
            if any(isinstance(part, ToolCallPart) for part in turn):
                messages.append(Message("assistant", tuple(turn)))  # a new turn after calls
                turn = []
            turn.extend(_reasoning(item) if kind == "reasoning" else _content(item["content"]))
        else:
            if turn:
                messages.append(Message("assistant", tuple(turn)))
                turn = []
            messages.append(_message(item))
    if turn:
        messages.append(Message("assistant", tuple(turn)))
    return tuple(messages)


def _message(item: dict[str, Any]) -> Message:
    """A user, system or developer message, or a function call's output."""
    if item.get("type") == "function_call_output":
        result = ToolResultPart(item["call_id"], tuple(_content(item["output"])))
        return Message("tool", (result,))
    role: Role = "user" if item["role"] == "user" else "system"
    return Message(role, tuple(_content(item["content"])))


def _content(content: str | list[dict[str, Any]]) -> list[TextPart | ImagePart | DocumentPart]:
    if isinstance(content, str):
        return [TextPart(content)]
    return [read_part(part) for part in content]


def _reasoning(item: dict[str, Any]) -> list[ReasoningPart]:
    """The reasoning part of a reasoning item; none where it carries neither text nor
    encrypted content (nothing an engine could send back)."""
    text = "\n\n".join(entry["text"] for entry in item["summary"])
    signature = item.get("encrypted_content")
    return [ReasoningPart(text, signature)] if text or signature else []


# --- kept by the store ---------------------------------------------------------------------


def normalize_input(value: Any, response_id: str) -> tuple[dict[str, Any], ...]:
    """This request's checked input as stored items: each with an ``id`` (the client's, or
    one derived from the response's), messages with their content as parts and a status."""
    items = []
    for index, item in enumerate(input_items(value)):
        kind = item.get("type", "message")
        given = item.get("id")
        if kind == "message":
            stored = _normal_message(item)
        elif kind == "function_call":
            stored = {name: item[name] for name in ("call_id", "name", "arguments")}
            stored["status"] = "completed"
        elif kind == "function_call_output":
            output = item["output"]
            stored = {
                "call_id": item["call_id"],
                "output": output if isinstance(output, str) else [normal_part(p) for p in output],
                "status": "completed",
            }
        else:
            summary = [{"type": "summary_text", "text": entry["text"]} for entry in item["summary"]]
            stored = {"summary": summary, "encrypted_content": item.get("encrypted_content")}
        prefix = {"message": "msg", "function_call": "fc", "reasoning": "rs"}.get(kind, "fco")
        items.append(
            {"id": given or item_id(prefix, response_id, f"in{index}"), "type": kind} | stored
        )
    assert all(isinstance(item["id"], str) for item in items)
    return tuple(items)


def _normal_message(item: dict[str, Any]) -> dict[str, Any]:
    role = item["role"]
    content = item["content"]
    if isinstance(content, str):
        kind = "output_text" if role == "assistant" else "input_text"
        content = [{"type": kind, "text": content}]
    return {"role": role, "content": [normal_part(part) for part in content], "status": "completed"}
