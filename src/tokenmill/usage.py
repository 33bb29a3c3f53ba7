"""Metering, pure: a request's token counts (the engine's reported usage, or a local
count) and the usage record the store keeps of it.

Shared by the engines (which report usage), the request path (which makes the record) and
the store (which commits it). Every authenticated, valid request, successful or failed,
leaves one ``UsageRecord``; ``estimated`` says the counts are the local count.

Pure: no I/O. An OpenAI-style stream may carry ``"usage": null`` in ordinary chunks and some
servers send running totals, so the last non-null usage wins (never a sum). When an engine
gives no usage (a stream cut, cancelled, or a server that never sends it) the relayed text is
counted locally and the record is marked estimated.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)
# Per message: role and separators of a typical chat template, counted like OpenAI's guide.
CHAT_TOKENS_PER_MESSAGE = 4
CHAT_TOKENS_PER_REPLY = 3


def count_text_tokens(text: str) -> int:
    """A local token count: words and punctuation marks (about one BPE token each)."""
    return len(_WORD.findall(text))


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def _tool_calls_text(message: dict[str, Any]) -> str:
    """The tool calls an assistant message sends back: the model reads them again."""
    texts: list[str] = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            texts.extend(str(function.get(name) or "") for name in ("name", "arguments"))
    return " ".join(texts)


def count_chat_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    total = CHAT_TOKENS_PER_REPLY
    for message in messages:
        total += CHAT_TOKENS_PER_MESSAGE + count_text_tokens(_content_text(message.get("content")))
        name = message.get("name")
        if isinstance(name, str):
            total += count_text_tokens(name)
        if message.get("tool_calls"):
            total += count_text_tokens(_tool_calls_text(message))
    return total


def count_prompt_tokens(prompt: str | list[str]) -> int:
    if isinstance(prompt, str):
        return max(1, count_text_tokens(prompt))
    return sum(max(1, count_text_tokens(p)) for p in prompt)


@dataclass(frozen=True)
class TokenCounts:
    """A request's tokens. ``prompt_tokens`` is the whole prompt: cache reads
    (``cached_tokens``) and cache writes (``cache_write_tokens``) are parts of it, counted
    once. ``reasoning_tokens`` are part of ``completion_tokens``, shown apart."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        assert self.cached_tokens + self.cache_write_tokens <= self.prompt_tokens
        assert self.reasoning_tokens <= self.completion_tokens


def parse_usage(usage: Any) -> TokenCounts | None:
    """OpenAI ``usage`` object -> counts; None when absent or malformed."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens", 0)
    if not _is_count(prompt) or not _is_count(completion):
        return None
    cached = _detail(usage, "prompt_tokens_details", "cached_tokens")
    reasoning = _detail(usage, "completion_tokens_details", "reasoning_tokens")
    return TokenCounts(prompt, completion, min(cached, prompt), 0, min(reasoning, completion))


def _detail(usage: dict[str, Any], group: str, name: str) -> int:
    details = usage.get(group)
    value = details.get(name, 0) if isinstance(details, dict) else 0
    return value if _is_count(value) else 0


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


@dataclass
class Meter:
    """What one request used, filled in while it runs.

    ``reported`` is the engine's last non-null usage; ``*_estimate`` are local counts used
    only when no usage was reported. Counting a long prompt costs time, so an engine may
    give ``prompt_counter`` instead: it runs only when the estimate is needed.
    """

    prompt_tokens_estimate: int = 0
    completion_tokens_estimate: int = 0
    reported: TokenCounts | None = None
    first_token_at_ns: int | None = None
    prompt_counter: Callable[[], int] | None = None

    def report(self, counts: TokenCounts) -> None:
        self.reported = counts  # the last one wins: running totals are not summed

    def counts(self) -> tuple[TokenCounts, bool]:
        """(counts, estimated)."""
        if self.reported is not None:
            return self.reported, False
        if self.prompt_counter is not None:
            self.prompt_tokens_estimate = self.prompt_counter()
            self.prompt_counter = None
        estimate = TokenCounts(self.prompt_tokens_estimate, self.completion_tokens_estimate)
        return estimate, True


def embedding_inputs(inputs: Any) -> list[Any]:
    """The items of an embeddings ``input``: one string, strings, one or many token arrays."""
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], int):
        return [inputs]
    return list(inputs) if isinstance(inputs, list) else []


def count_embedding_tokens(inputs: Any) -> int:
    return sum(
        count_prompt_tokens(item) if isinstance(item, str) else len(item)
        for item in embedding_inputs(inputs)
    )


@dataclass(frozen=True)
class UsageRecord:
    """One request, as the store keeps it."""

    request_id: str
    account_id: str
    key_id: str
    model: str
    deployment: str
    engine: str
    endpoint: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    estimated: bool
    status: str  # ok | error | cancelled
    http_status: int
    error_type: str | None
    started_at_ms: int
    ttft_ms: int | None
    duration_ms: int
    charge_nano: int = 0  # what the account was charged, in its currency
    loss_nano: int = 0  # what the charge exceeded the hold by: the operator's loss
    included_tokens: int = 0  # tokens the account's plan covered (not charged)
    cost_nano: int = 0  # what serving it cost the operator (vendor price or own GPUs' time)
    cost_basis: str | None = None  # vendor | modeled | measured; None: no cost known
    cache_write_tokens: int = 0  # prompt tokens written to the prompt cache (of prompt_tokens)
    reasoning_tokens: int = 0  # output tokens spent reasoning (of completion_tokens)

    def __post_init__(self) -> None:
        assert self.status in ("ok", "error", "cancelled")
        assert min(self.prompt_tokens, self.completion_tokens, self.cached_tokens) >= 0
        assert self.cached_tokens + self.cache_write_tokens <= self.prompt_tokens
        assert 0 <= self.reasoning_tokens <= self.completion_tokens
        assert self.duration_ms >= 0
        assert self.charge_nano >= 0
        assert self.loss_nano >= 0
        assert self.cost_nano >= 0
