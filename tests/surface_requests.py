"""One request on each serving surface (OpenAI chat, Anthropic Messages, OpenAI Responses),
built, posted and read back the same way, so that one guarantee is one test run on each.

A body is built from a prompt, an output cap and whether to stream, as the exact bytes sent
(the hold's prompt bound is measured on them; each surface's body has one message). An
answer, whole or streamed, is read into one ``Outcome``: its status, the text produced, the
usage shown as (prompt, completion) tokens, its finish in chat's words, and whether it
ended well: ``data: [DONE]`` last for chat, ``message_stop`` for Messages,
``response.completed`` or ``response.incomplete`` for Responses. Chat and Responses answer
errors in OpenAI's shape, Messages in Anthropic's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import orjson

from tests.assertions import assert_anthropic_error, assert_openai_error

Surface = Literal["chat", "messages", "responses"]
SURFACES: tuple[Surface, ...] = ("chat", "messages", "responses")
PATHS: dict[Surface, str] = {
    "chat": "/v1/chat/completions",
    "messages": "/v1/messages",
    "responses": "/v1/responses",
}
# The field that caps the output, as each surface names it (and names it in a 400).
CAP_FIELDS: dict[Surface, str] = {
    "chat": "max_tokens",
    "messages": "max_tokens",
    "responses": "max_output_tokens",
}
# The error of a 402 as each surface words it (Anthropic's body has a type and no code).
INSUFFICIENT_FUNDS: dict[Surface, dict[str, str]] = {
    "chat": {"type": "insufficient_quota", "code": "insufficient_quota"},
    "messages": {"type": "billing_error"},
    "responses": {"type": "insufficient_quota", "code": "insufficient_quota"},
}
# The error of a spend budget's 429.
OVER_BUDGET: dict[Surface, dict[str, str]] = {
    "chat": {"type": "rate_limit_error", "code": "budget_exceeded"},
    "messages": {"type": "rate_limit_error"},
    "responses": {"type": "rate_limit_error", "code": "budget_exceeded"},
}
# Anthropic's stop reasons and Responses' ends, in chat's words.
MESSAGES_FINISHES = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
RESPONSES_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}
RESPONSES_ENDS = ("response.completed", "response.incomplete")


def request_body(
    surface: Surface,
    prompt: str,
    max_tokens: int,
    *,
    stream: bool = False,
    model: str = "sim-chat",
    **fields: Any,
) -> bytes:
    """The body bytes of one user ``prompt`` capped at ``max_tokens`` output tokens; a chat
    stream asks for its usage chunk (the other surfaces always show usage)."""
    message = {"role": "user", "content": prompt}
    body: dict[str, Any]
    if surface == "chat":
        body = {"model": model, "messages": [message], "max_tokens": max_tokens}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
    elif surface == "messages":
        body = {"model": model, "max_tokens": max_tokens, "messages": [message]}
        if stream:
            body["stream"] = True
    else:
        body = {"model": model, "input": prompt, "max_output_tokens": max_tokens}
        if stream:
            body["stream"] = True
    return orjson.dumps(body | fields)


def key_headers(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}


def post(
    base_url: str, surface: Surface, secret: str, raw: bytes, *, timeout_s: float = 30
) -> httpx.Response:
    """``raw`` POSTed to the surface's endpoint; the answer read whole."""
    return httpx.post(
        base_url + PATHS[surface], content=raw, headers=key_headers(secret), timeout=timeout_s
    )


@dataclass
class Outcome:
    """One request as its client saw it."""

    surface: Surface
    status: int
    request_id: str | None
    streamed: bool
    pieces: list[str] = field(default_factory=list)  # the text, one piece per delta
    usage: tuple[int, int] | None = None  # (prompt, completion) tokens, the last shown
    usage_count: int = 0  # how many events showed usage (one in a good stream)
    finish: str | None = None  # in chat's words: stop, length, tool_calls, content_filter
    ended: bool = False  # whole, or the stream's last event is its good end
    error: dict[str, Any] | None = None  # a refusal's, or an error event's

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def usage_tokens(surface: Surface, usage: dict[str, Any]) -> tuple[int, int]:
    """(prompt, completion) tokens of a surface's usage object; Anthropic counts the prompt
    cache's reads and writes apart from ``input_tokens``."""
    if surface == "chat":
        return usage["prompt_tokens"], usage["completion_tokens"]
    if surface == "messages":
        prompt = (
            usage["input_tokens"]
            + usage["cache_creation_input_tokens"]
            + usage["cache_read_input_tokens"]
        )
        return prompt, usage["output_tokens"]
    return usage["input_tokens"], usage["output_tokens"]


def responses_finish(response: dict[str, Any]) -> str | None:
    if response["status"] == "completed":
        return "stop"
    details = response.get("incomplete_details") or {}
    return RESPONSES_INCOMPLETE.get(details.get("reason", ""))


class StreamReader:
    """Folds a stream's lines, one at a time, into its ``Outcome``."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome

    def feed(self, line: str) -> None:
        if not line.startswith("data: "):
            return  # event: names, blank lines (the data names its type too)
        data = line.removeprefix("data: ")
        outcome = self.outcome
        if outcome.surface == "chat" and data == "[DONE]":
            outcome.ended = True
            return
        payload = orjson.loads(data)
        outcome.ended = False  # only the last event may end a stream
        if outcome.surface == "chat":
            self._chat(payload)
        elif outcome.surface == "messages":
            self._messages(payload)
        else:
            self._responses(payload)

    def _usage(self, usage: dict[str, Any]) -> None:
        self.outcome.usage = usage_tokens(self.outcome.surface, usage)
        self.outcome.usage_count += 1

    def _chat(self, chunk: dict[str, Any]) -> None:
        if "error" in chunk:
            self.outcome.error = chunk["error"]
            return
        if chunk.get("usage"):
            self._usage(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if choice["delta"].get("content"):
                self.outcome.pieces.append(choice["delta"]["content"])
            self.outcome.finish = choice["finish_reason"]

    def _messages(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "content_block_delta" and event["delta"]["type"] == "text_delta":
            if event["delta"]["text"]:
                self.outcome.pieces.append(event["delta"]["text"])
        elif kind == "message_delta":
            self._usage(event["usage"])
            self.outcome.finish = MESSAGES_FINISHES[event["delta"]["stop_reason"]]
        elif kind == "message_stop":
            self.outcome.ended = True
        elif kind == "error":
            self.outcome.error = event["error"]

    def _responses(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "response.output_text.delta" and event["delta"]:
            self.outcome.pieces.append(event["delta"])
        elif kind in RESPONSES_ENDS:
            self._usage(event["response"]["usage"])
            self.outcome.finish = responses_finish(event["response"])
            self.outcome.ended = True
        elif kind == "response.failed":
            self.outcome.error = event["response"]["error"]
        elif kind == "error":
            self.outcome.error = event


def _read_body(outcome: Outcome, body: dict[str, Any]) -> None:
    """A whole (not streamed) answer into ``outcome``."""
    surface = outcome.surface
    usage = body.get("usage")
    if surface == "chat":
        choices = body.get("choices") or []
        outcome.pieces = [c["message"]["content"] for c in choices if c["message"]["content"]]
        outcome.finish = choices[0]["finish_reason"] if choices else None
        outcome.ended = bool(choices) and isinstance(usage, dict)
    elif surface == "messages":
        blocks = body.get("content") or []
        outcome.pieces = [b["text"] for b in blocks if b["type"] == "text" and b["text"]]
        outcome.finish = MESSAGES_FINISHES.get(body.get("stop_reason") or "")
        outcome.ended = body.get("type") == "message" and isinstance(usage, dict)
    else:
        messages = [item for item in body.get("output") or [] if item["type"] == "message"]
        texts = [part["text"] for item in messages for part in item["content"]]
        outcome.pieces = [text for text in texts if text]
        outcome.finish = responses_finish(body) if "status" in body else None
        outcome.ended = body.get("status") in ("completed", "incomplete")
    if isinstance(usage, dict):
        outcome.usage = usage_tokens(surface, usage)
        outcome.usage_count = 1


def opened(surface: Surface, response: httpx.Response) -> Outcome:
    """The outcome of ``response`` as far as its status and headers tell."""
    streamed = response.headers.get("content-type", "").startswith("text/event-stream")
    return Outcome(surface, response.status_code, response.headers.get("x-request-id"), streamed)


def outcome_of(surface: Surface, response: httpx.Response) -> Outcome:
    """A response read whole (a stream to its end) as its ``Outcome``."""
    outcome = opened(surface, response)
    if outcome.streamed:
        reader = StreamReader(outcome)
        for line in response.text.splitlines():
            reader.feed(line)
        return outcome
    body = response.json()
    if response.status_code != 200:
        outcome.error = body.get("error")
    else:
        _read_body(outcome, body)
    return outcome


def read_until(surface: Surface, response: httpx.Response, pieces_count: int) -> Outcome:
    """An open stream read until ``pieces_count`` pieces of text arrived (or it ended);
    the rest is left unread."""
    outcome = opened(surface, response)
    reader = StreamReader(outcome)
    for line in response.iter_lines():
        reader.feed(line)
        if len(outcome.pieces) >= pieces_count:
            break
    return outcome


def exchange(
    http: httpx.Client,
    surface: Surface,
    secret: str,
    raw: bytes,
    on_open: Callable[[Outcome], None] | None = None,
) -> Outcome:
    """One request on ``http``, its answer read event by event. ``on_open`` gets the
    outcome so far once a stream's headers arrived; a cut raises ``httpx.TransportError``."""
    with http.stream("POST", PATHS[surface], content=raw, headers=key_headers(secret)) as answer:
        outcome = opened(surface, answer)
        if not outcome.streamed:
            answer.read()
            return outcome_of(surface, answer)
        if on_open is not None:
            on_open(outcome)
        reader = StreamReader(outcome)
        for line in answer.iter_lines():
            reader.feed(line)
        return outcome


def assert_error(
    surface: Surface,
    response: httpx.Response,
    status: int,
    param: str | None = None,
    like: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``response`` is ``status`` in the surface's error shape (OpenAI's names ``param``;
    Anthropic's names no field), with the fields of ``like``. Returns the error."""
    if surface == "messages":
        assert_anthropic_error(response, status)
        error: dict[str, Any] = response.json()["error"]
    else:
        error = assert_openai_error(response, status, param)
    assert (like or {}).items() <= error.items(), error
    return error


def assert_complete_stream(surface: Surface, response: httpx.Response) -> tuple[int, int]:
    """A 200 stream that ran to its end: no error, a finish, usage shown once, one piece of
    text per output token, and the surface's good end last. Returns its usage."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    outcome = outcome_of(surface, response)
    assert outcome.ended, response.text[-600:]
    assert outcome.error is None, outcome.error
    assert outcome.finish in ("stop", "length"), outcome.finish
    assert outcome.usage_count == 1 and outcome.usage is not None, outcome
    assert outcome.usage[1] == len(outcome.pieces), outcome
    return outcome.usage
