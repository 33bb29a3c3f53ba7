"""The neutral conversation as Anthropic's ``system`` and ``messages`` (pure).

Anthropic differs from the neutral form in ways that change the shape, not only the
names: one ``system`` outside the turns; user and assistant turns that must alternate; tool
results that are user content, first in their turn; tool calls whose input is a JSON object
rather than JSON text; images as base64 or URL sources; reasoning that can be sent back only
with Anthropic's signature. Empty texts are left out (Anthropic refuses empty text blocks).
A part that cannot be carried is refused naming its message, ``messages.[i]...``: the neutral
messages are the client's, one for one, so the index is the client's too.
"""

from __future__ import annotations

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

IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
URL_CHARS_SHOWN_MAX = 40  # of a refused image URL in the message (a data: URL is long)

Block = dict[str, Any]


def conversation(messages: tuple[Message, ...]) -> tuple[list[Block], list[Block]]:
    """(system blocks, turns): system messages in order as ``system``; user, assistant and
    tool messages as alternating turns, consecutive ones of one role merged, a tool
    message being user content."""
    system: list[Block] = []
    turns: list[Block] = []
    for index, message in enumerate(messages):
        if message.role == "system":
            system.extend(system_blocks(index, message.parts))
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = turn_blocks(index, message)
        if not blocks:
            continue  # an empty message says nothing, and Anthropic refuses empty turns
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise InvalidRequest(
            "'messages' needs at least one user, assistant or tool message with content.",
            param="messages",
        )
    for turn in turns:
        # Anthropic wants a turn's tool results before its text (a stable sort keeps order).
        turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return system, turns


def system_blocks(index: int, parts: tuple[Part, ...]) -> list[Block]:
    blocks = []
    for part in parts:
        if not isinstance(part, TextPart):
            raise _refused_part(index, "content", part, "a system message takes text only")
        if part.text:
            blocks.append(text_block(part))
    return blocks


def turn_blocks(index: int, message: Message) -> list[Block]:
    """A user, assistant or tool message's parts as Anthropic content blocks."""
    blocks = []
    for part in message.parts:
        block = _block(index, message.role, part)
        if block is not None:
            blocks.append(block)
    return blocks


def _block(index: int, role: str, part: Part) -> Block | None:
    """One part as a block of a ``role`` message; None for a part that says nothing to
    Anthropic (empty text, unsigned reasoning); refused where the role cannot have it."""
    if isinstance(part, TextPart) and role in ("user", "assistant"):
        return text_block(part) if part.text else None
    if isinstance(part, ImagePart) and role == "user":
        return image_block(part, f"messages.[{index}].content")
    if isinstance(part, DocumentPart) and role == "user":
        return document_block(part)
    if isinstance(part, ToolCallPart) and role == "assistant":
        return tool_use_block(index, part)
    if isinstance(part, ReasoningPart) and role == "assistant":
        return thinking_block(part)
    if isinstance(part, ToolResultPart) and role == "tool":
        return tool_result_block(index, part)
    raise _refused_part(index, "content", part, f"a {role} message cannot carry it")


def _refused_part(index: int, name: str, part: Part, why: str) -> InvalidRequest:
    kind = type(part).__name__.removesuffix("Part").lower()
    return InvalidRequest(
        f"messages.[{index}].{name}: a {kind} part is not supported here ({why}).",
        param=f"messages.[{index}].{name}",
    )


def text_block(part: TextPart) -> Block:
    block: Block = {"type": "text", "text": part.text}
    if part.cache_control is not None:
        block["cache_control"] = part.cache_control
    return block


def image_block(part: ImagePart, param: str) -> Block:
    """A base64 source for a ``data:`` URL, a URL source for http(s); nothing else."""
    url = part.url
    scheme = url[: url.find(":") + 1].lower()
    if scheme == "data:":
        head, comma, data = url[5:].partition(",")
        media_type, *options = head.split(";")
        if not comma or not data or options[-1:] != ["base64"]:
            raise InvalidRequest(f"{param}: an image data URL must be base64.", param=param)
        if media_type.lower() not in IMAGE_MEDIA_TYPES:
            raise InvalidRequest(
                f"{param}: the image type '{media_type[:40]}' is not supported by this model"
                f" (only {', '.join(sorted(IMAGE_MEDIA_TYPES))}).",
                param=param,
            )
        source = {"type": "base64", "media_type": media_type.lower(), "data": data}
        return {"type": "image", "source": source}
    if scheme in ("http:", "https:"):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest(
        f"{param}: the image URL '{url[:URL_CHARS_SHOWN_MAX]}' is not http(s) or data:.",
        param=param,
    )


def document_block(part: DocumentPart) -> Block:
    """A base64 or URL document source (Anthropic reads PDFs and plain text)."""
    if part.data is not None:
        source = {"type": "base64", "media_type": part.media_type, "data": part.data}
    else:
        source = {"type": "url", "url": part.url or ""}
    block: Block = {"type": "document", "source": source}
    if part.title is not None:
        block["title"] = part.title
    if part.cache_control is not None:
        block["cache_control"] = part.cache_control
    return block


def tool_use_block(index: int, part: ToolCallPart) -> Block:
    """An assistant's tool call; its arguments must be a JSON object (empty reads as {})."""
    param = f"messages.[{index}].tool_calls"
    text = part.arguments.strip()
    try:
        arguments = orjson.loads(text) if text else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"{param}: the arguments of the call '{part.id[:64]}' are not valid JSON.",
            param=param,
        ) from exc
    if not isinstance(arguments, dict):
        raise InvalidRequest(
            f"{param}: the arguments of the call '{part.id[:64]}' are not a JSON object.",
            param=param,
        )
    return {"type": "tool_use", "id": part.id, "name": part.name, "input": arguments}


def tool_result_block(index: int, part: ToolResultPart) -> Block:
    content = []
    for item in part.content:
        if isinstance(item, ImagePart):
            content.append(image_block(item, f"messages.[{index}].content"))
        elif isinstance(item, DocumentPart):
            content.append(document_block(item))
        elif item.text:
            content.append(text_block(item))
    block: Block = {"type": "tool_result", "tool_use_id": part.tool_call_id}
    if content:
        block["content"] = content
    if part.is_error:
        block["is_error"] = True
    return block


def thinking_block(part: ReasoningPart) -> Block | None:
    """Signed reasoning goes back as it came; unsigned reasoning (another model's, or text
    a client wrote) cannot be, and is left out: Anthropic would refuse it."""
    if part.signature is None:
        return None
    if part.redacted:
        return {"type": "redacted_thinking", "data": part.signature}
    return {"type": "thinking", "thinking": part.text, "signature": part.signature}


__all__ = [
    "IMAGE_MEDIA_TYPES",
    "conversation",
    "document_block",
    "image_block",
    "system_blocks",
    "text_block",
    "thinking_block",
    "tool_result_block",
    "tool_use_block",
    "turn_blocks",
]
