"""Anthropic content blocks: checked on the way in, and read into neutral messages when an
engine asks for them (pure).

``check_system`` and ``check_message`` run on every request: cheap type checks of every
block, deep enough that reading them later cannot fail, and the images measured (the hold's
prompt bound counts them apart). ``read_messages`` runs only for an engine that does not
speak Anthropic itself. The shapes differ from the neutral form in three places: a user
turn's ``tool_result`` blocks are neutral tool messages (one each, in order, before the
rest of the turn), an image's base64 source is a ``data:`` URL, and a plain-text document
is text. A server tool's block (web search, code execution, ...) is refused: no engine here
runs server tools, so none could have produced it or could read it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from tokenmill.errors import InvalidRequest
from tokenmill.neutral import (
    DocumentPart,
    ImagePart,
    Message,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from tokenmill.surfaces.openai_fields import invalid_type

IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
PDF_MEDIA_TYPE = "application/pdf"
TEXT_MEDIA_TYPE = "text/plain"
# A document's source types, each with the media type it must name (None: names none).
DOCUMENT_MEDIA_TYPES: dict[str, str | None] = {
    "base64": PDF_MEDIA_TYPE,
    "url": None,
    "text": TEXT_MEDIA_TYPE,
    "content": None,
}
SERVER_TOOL_BLOCKS = frozenset(
    {
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
        "container_upload",
        "mcp_tool_use",
        "mcp_tool_result",
    }
)
ASSISTANT_BLOCKS = frozenset({"tool_use", "thinking", "redacted_thinking"})
USER_BLOCKS = frozenset({"tool_result", "image", "document"})
ROLES = ("user", "assistant")
KIND_CHARS_SHOWN_MAX = 40  # of a refused block type, in the message

Block = dict[str, Any]
Measure = tuple[int, int]  # (images, bytes those images take in the body)
SourcePart = TextPart | ImagePart | DocumentPart


def _refuse(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{param} {why}", param=param)


def _require_string(block: Block, name: str, param: str, *, empty: bool = True) -> str:
    value = block.get(name)
    if not isinstance(value, str) or (not empty and not value):
        raise invalid_type(f"{param}.{name}", "a string" if empty else "a non-empty string")
    return value


def _check_optional(block: Block, name: str, kind: type, what: str, param: str) -> None:
    value = block.get(name)
    if value is not None and not isinstance(value, kind):  # kind is never int: no bool slips in
        raise invalid_type(f"{param}.{name}", what)


def _check_cache_control(block: Block, param: str) -> None:
    value = block.get("cache_control")
    if value is None:
        return
    if not isinstance(value, dict) or value.get("type") != "ephemeral":
        raise invalid_type(f"{param}.cache_control", "an object of type 'ephemeral'")


def check_system(system: Any) -> None:
    """``system``: a string, or an array of text blocks."""
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise invalid_type("system", "a string or an array of text blocks")
    for index, block in enumerate(system):
        param = f"system.[{index}]"
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _refuse(param, "must be a text block.")
        _check_text(param, block)


def check_message(index: int, message: Any) -> Measure:
    """Check one message; return (images in it, bytes those images take in the body)."""
    param = f"messages.[{index}]"
    if not isinstance(message, dict):
        raise _refuse(param, "must be an object.")
    role = message.get("role")
    if role not in ROLES:
        raise _refuse(f"{param}.role", "must be 'user' or 'assistant'.")
    content = message.get("content")
    if isinstance(content, str):
        return 0, 0
    if not isinstance(content, list):
        raise invalid_type(f"{param}.content", "a string or an array of content blocks")
    return _total(
        _check_block(f"{param}.content.[{number}]", block, role)
        for number, block in enumerate(content)
    )


def _total(measures: Iterable[Measure]) -> Measure:
    images = size = 0
    for block_images, block_size in measures:
        images += block_images
        size += block_size
    return images, size


def _check_block(param: str, block: Any, role: str) -> Measure:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise _refuse(param, "must be a content block: an object with a 'type'.")
    kind = block["type"]
    shown = kind[:KIND_CHARS_SHOWN_MAX]
    if kind in SERVER_TOOL_BLOCKS:
        raise InvalidRequest(
            f"{param}: a '{shown}' block belongs to a server tool; no engine here runs"
            " server tools.",
            param=f"{param}.type",
            code="unsupported_value",
        )
    check = BLOCK_CHECKS.get(kind)
    if check is None:
        raise InvalidRequest(
            f"{param}: a '{shown}' block is not supported here.",
            param=f"{param}.type",
            code="unsupported_value",
        )
    if kind in ASSISTANT_BLOCKS and role != "assistant":
        raise _refuse(f"{param}.type", f"'{kind}' may only be in an assistant turn.")
    if kind in USER_BLOCKS and role != "user":
        raise _refuse(f"{param}.type", f"'{kind}' may only be in a user turn.")
    _check_cache_control(block, param)
    return check(param, block)


def _check_text(param: str, block: Block) -> Measure:
    _require_string(block, "text", param)
    _check_cache_control(block, param)
    _check_optional(block, "citations", list, "an array", param)
    return 0, 0


def _check_image(param: str, block: Block) -> Measure:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    where = f"{param}.source"
    if kind == "base64" and isinstance(source, dict):
        if source.get("media_type") not in IMAGE_MEDIA_TYPES:
            raise _refuse(
                f"{where}.media_type", "must be one of " + ", ".join(IMAGE_MEDIA_TYPES) + "."
            )
        return 1, len(_require_string(source, "data", where, empty=False))
    if kind == "url" and isinstance(source, dict):
        return 1, len(_require_string(source, "url", where, empty=False))
    raise _refuse(where, "must be a base64 source or a url source.")


def _check_document(param: str, block: Block) -> Measure:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    where = f"{param}.source"
    for name in ("title", "context"):
        _check_optional(block, name, str, "a string", param)
    _check_optional(block, "citations", dict, "an object", param)
    if (
        not isinstance(source, dict)
        or not isinstance(kind, str)
        or kind not in DOCUMENT_MEDIA_TYPES
    ):
        raise _refuse(where, "must be a base64, url, text or content source.")
    media_type = DOCUMENT_MEDIA_TYPES[kind]
    if media_type is not None and source.get("media_type") != media_type:
        raise _refuse(f"{where}.media_type", f"must be '{media_type}' for a {kind} source.")
    if kind == "url":
        _require_string(source, "url", where, empty=False)
    elif kind != "content":
        _require_string(source, "data", where, empty=kind == "text")
    elif not isinstance(source.get("content"), str):
        _check_content_source(f"{where}.content", source.get("content"))
    return 0, 0


def _check_content_source(param: str, content: Any) -> None:
    if not isinstance(content, list):
        raise invalid_type(param, "a string or an array of text blocks")
    for number, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _refuse(f"{param}.[{number}]", "must be a text block.")
        _check_text(f"{param}.[{number}]", block)


def _check_tool_use(param: str, block: Block) -> Measure:
    _require_string(block, "id", param, empty=False)
    _require_string(block, "name", param, empty=False)
    if not isinstance(block.get("input"), dict):
        raise invalid_type(f"{param}.input", "an object")
    return 0, 0


def _check_tool_result(param: str, block: Block) -> Measure:
    _require_string(block, "tool_use_id", param, empty=False)
    _check_optional(block, "is_error", bool, "a boolean", param)
    content = block.get("content")
    if content is None or isinstance(content, str):
        return 0, 0
    if not isinstance(content, list):
        raise invalid_type(f"{param}.content", "a string or an array of content blocks")
    return _total(
        _check_result_item(f"{param}.content.[{number}]", item)
        for number, item in enumerate(content)
    )


def _check_result_item(param: str, item: Any) -> Measure:
    kind = item.get("type") if isinstance(item, dict) else None
    if not isinstance(kind, str) or kind not in RESULT_CHECKS:
        raise _refuse(param, "must be a text, image or document block.")
    _check_cache_control(item, param)
    return RESULT_CHECKS[kind](param, item)


def _check_thinking(param: str, block: Block) -> Measure:
    _require_string(block, "thinking", param)
    _require_string(block, "signature", param)
    return 0, 0


def _check_redacted_thinking(param: str, block: Block) -> Measure:
    _require_string(block, "data", param)
    return 0, 0


RESULT_CHECKS: dict[str, Callable[[str, Block], Measure]] = {
    "text": _check_text,
    "image": _check_image,
    "document": _check_document,
}
BLOCK_CHECKS: dict[str, Callable[[str, Block], Measure]] = {
    **RESULT_CHECKS,
    "tool_use": _check_tool_use,
    "tool_result": _check_tool_result,
    "thinking": _check_thinking,
    "redacted_thinking": _check_redacted_thinking,
}


# --- read (checked blocks only) ----------------------------------------------------------


def read_messages(system: Any, messages: list[dict[str, Any]]) -> tuple[Message, ...]:
    """Checked ``system`` and messages as neutral messages: the system first (if any), then
    each turn, a user turn's tool results as tool messages ahead of the rest of it."""
    read: list[Message] = []
    if system:
        read.append(Message("system", tuple(_system_parts(system))))
    for message in messages:
        read.extend(_turn(message))
    return tuple(read)


def _system_parts(system: str | list[Block]) -> list[TextPart]:
    if isinstance(system, str):
        return [TextPart(system)]
    return [TextPart(block["text"], block.get("cache_control")) for block in system]


def _turn(message: dict[str, Any]) -> list[Message]:
    role = message["role"]
    content = message["content"]
    if isinstance(content, str):
        return [Message(role, (TextPart(content),))]
    results: list[Message] = []
    parts: list[Part] = []
    for block in content:
        if block["type"] == "tool_result":
            results.append(Message("tool", (_tool_result(block),)))
        else:
            parts.extend(_parts(block))
    if parts or not results:
        results.append(Message(role, tuple(parts)))
    return results


def _parts(block: Block) -> list[Part]:
    kind = block["type"]
    if kind == "tool_use":
        return [ToolCallPart(block["id"], block["name"], orjson.dumps(block["input"]).decode())]
    if kind == "thinking":
        return [ReasoningPart(block["thinking"], block["signature"])]
    if kind == "redacted_thinking":
        return [ReasoningPart("", block["data"], redacted=True)]
    return list(_source_parts(block))


def _source_parts(block: Block) -> list[SourcePart]:
    """A text, image or document block (what a tool result may hold too)."""
    kind = block["type"]
    cache_control = block.get("cache_control")
    if kind == "text":
        return [TextPart(block["text"], cache_control)]
    source = block["source"]
    if kind == "image":
        if source["type"] == "url":
            return [ImagePart(source["url"])]
        return [ImagePart(f"data:{source['media_type']};base64,{source['data']}")]
    assert kind == "document"
    title = block.get("title")
    if source["type"] == "base64":
        return [
            DocumentPart(
                PDF_MEDIA_TYPE, data=source["data"], title=title, cache_control=cache_control
            )
        ]
    if source["type"] == "url":
        return [
            DocumentPart(
                PDF_MEDIA_TYPE, url=source["url"], title=title, cache_control=cache_control
            )
        ]
    if source["type"] == "text":
        return [TextPart(source["data"], cache_control)]
    inner = source["content"]
    texts = [TextPart(inner)] if isinstance(inner, str) else _inner_texts(inner)
    if texts and cache_control is not None:
        texts[-1] = dataclasses.replace(texts[-1], cache_control=cache_control)
    return list(texts)


def _inner_texts(blocks: list[Block]) -> list[TextPart]:
    return [TextPart(block["text"], block.get("cache_control")) for block in blocks]


def _tool_result(block: Block) -> ToolResultPart:
    content = block.get("content")
    if content is None:
        parts: list[SourcePart] = []
    elif isinstance(content, str):
        parts = [TextPart(content)]
    else:
        parts = [part for item in content for part in _source_parts(item)]
    return ToolResultPart(block["tool_use_id"], tuple(parts), block.get("is_error") is True)


__all__ = ["check_message", "check_system", "read_messages"]
