"""The output of an OpenAI Responses request (pure): its output items (reasoning, an
assistant message, function calls), its usage, and the fields of the response object that
echo what was asked. Both a whole answer's body and a stream's events are made of these.
"""

from __future__ import annotations

from itertools import groupby
from typing import Any

from tokenmill.neutral import Answer, NeutralCall, ReasoningPart, TextPart, ToolCallPart
from tokenmill.surfaces.chat_render import logprob_json
from tokenmill.surfaces.responses_items import item_id
from tokenmill.usage import TokenCounts

INCOMPLETE_REASONS: dict[str, str] = {
    "length": "max_output_tokens",
    "content_filter": "content_filter",
}
ITEM_PREFIXES = {"message": "msg", "function_call": "fc", "reasoning": "rs"}


def usage_json(counts: TokenCounts) -> dict[str, Any]:
    return {
        "input_tokens": counts.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": counts.cached_tokens,
            "cache_write_tokens": counts.cache_write_tokens,
        },
        "output_tokens": counts.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": counts.reasoning_tokens},
        "total_tokens": counts.prompt_tokens + counts.completion_tokens,
    }


def message_item(
    item: str, text: str, logprobs: list[dict[str, Any]], status: str
) -> dict[str, Any]:
    content = {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}
    return {
        "type": "message",
        "id": item,
        "role": "assistant",
        "status": status,
        "content": [content],
    }


def function_call_item(
    item: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def reasoning_item(item: str, text: str, signature: str | None) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": text}] if text else []
    return {"type": "reasoning", "id": item, "summary": summary, "encrypted_content": signature}


def answer_items(answer: Answer, response_id: str) -> list[dict[str, Any]]:
    """A whole answer's output items: consecutive texts are one message (with the answer's
    log probabilities), each tool call and each reasoning part an item of its own; the last
    item of an answer cut short is incomplete. Redacted reasoning is left out (unreadable,
    and nothing a client may send back here)."""
    items: list[dict[str, Any]] = []
    logprobs = [logprob_json(entry) for entry in answer.logprobs or ()]
    for kind, group in groupby(answer.parts, key=type):
        parts = list(group)
        if kind is TextPart:
            text = "".join(part.text for part in parts)  # type: ignore[union-attr]
            items.append(
                message_item(_place("msg", response_id, items), text, logprobs, "completed")
            )
            logprobs = []
        for part in parts:
            if isinstance(part, ToolCallPart):
                place = _place("fc", response_id, items)
                items.append(
                    function_call_item(place, part.id, part.name, part.arguments, "completed")
                )
            elif isinstance(part, ReasoningPart) and not part.redacted:
                items.append(
                    reasoning_item(_place("rs", response_id, items), part.text, part.signature)
                )
    if answer.finish in INCOMPLETE_REASONS and items and "status" in items[-1]:
        items[-1]["status"] = "incomplete"
    return items


def _place(prefix: str, response_id: str, items: list[dict[str, Any]]) -> str:
    return item_id(prefix, response_id, str(len(items)))


def echo_of(call: NeutralCall) -> dict[str, Any]:
    """The fields of a response that say what was asked (as it was asked, or its default)."""
    body = call.body
    text = body.get("text") or {}
    reasoning = body.get("reasoning") or {}
    return {
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": call.model,
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": body.get("store") is not False,
        "temperature": body.get("temperature"),
        "text": {
            "format": text.get("format") or {"type": "text"},
            "verbosity": text.get("verbosity"),
        },
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "top_logprobs": body.get("top_logprobs") or 0,
        "truncation": body.get("truncation") or "disabled",
        "service_tier": body.get("service_tier") or "default",
        "background": False,
        "user": body.get("user"),
        "safety_identifier": body.get("safety_identifier"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "metadata": body.get("metadata") or {},
    }
