"""Test support: a fake OpenAI-compatible upstream (the far side of a network, never our own
code) and servers run on loopback in a background thread.

The fake upstream picks its behaviour from the model name it is asked for, so one server
covers every case:

| model          | behaviour                                                          |
| -------------- | ------------------------------------------------------------------ |
| `fake`         | a normal answer; streams end with a usage chunk when asked        |
| `fake-nousage` | no usage anywhere (like llama.cpp's server in streams)            |
| `fake-running` | every stream chunk carries running usage totals                   |
| `fake-500`     | HTTP 500 with an OpenAI error body                                 |
| `fake-429`     | HTTP 429 with an OpenAI error body                                 |
| `fake-429-wait`| HTTP 429 with `Retry-After: retry_after_s`                         |
| `fake-400`     | HTTP 400 with an OpenAI error body                                 |
| `fake-hang`    | waits `hang_s` before answering anything                           |
| `fake-garbage` | a 200 with a body that is not JSON (or not SSE, for streams)      |
| `fake-cut`     | streams: half the tokens, then the connection closes, no [DONE]   |
| `fake-slow`    | streams: one token every `slow_s`                                  |
| `fake-agent`   | chat as a tool-using model would answer it, scripted by `agent`    |

Output: ``max_tokens`` (or ``max_completion_tokens``, default 16) tokens, token i is word
i of a fixed list plus a space; prompt tokens are the whitespace words of the prompt.

``fake-agent`` (chat only; see ``AgentScript``) answers in OpenAI's exact shapes, streamed
or not: with ``tools`` offered and a user turn last, a call of the named tool (or the
first) with the scripted arguments and ``finish_reason: tool_calls``; after a tool result,
or under ``tool_choice: none``, the scripted text (the scripted JSON instance under a
``response_format`` of json_schema or json_object) with ``finish_reason: stop``;
``logprobs`` when asked; usage with the scripted cached and reasoning tokens (or none at
all: ``reports_usage``); asked for a ``reasoning_effort``, the scripted ``reasoning_text``
(if any) as ``reasoning_content``, before the answer, as vLLM sends a reasoning model's. It
ignores the output cap.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

FAKE_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerThread:
    """An ASGI app served by uvicorn on 127.0.0.1 in a daemon thread (a context manager)."""

    def __init__(self, app: ASGIApp, *, port: int | None = None, **options: Any) -> None:
        """``options`` go to uvicorn's Config (the gateway's own: ``server_options``)."""
        self.port = port or free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            loop="asyncio",
            timeout_graceful_shutdown=5,
            **options,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server thread died while starting")
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start within 20 s")
            time.sleep(0.01)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)


@dataclass
class AgentScript:
    """What ``fake-agent`` answers: the arguments of its tool calls, its text, the JSON
    instance it gives for a response format, and the cached and reasoning tokens its usage
    reports (the reasoning ones are added to the visible completion tokens, the cached ones
    to the prompt's words), if it reports any."""

    tool_arguments: dict[str, Any] = field(default_factory=dict)
    tool_call_id: str = "call_fake_agent_0001"
    text: str = "It is sunny and mild in the city today."
    json_instance: Any = field(default_factory=dict)
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    reports_usage: bool = True  # False: no usage anywhere, like fake-nousage
    reasoning_text: str = ""  # shown as reasoning_content when a reasoning_effort is asked


@dataclass
class FakeUpstreamState:
    """What the fake upstream saw; tests compare it with what the gateway metered."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    hang_s: float = 30.0
    slow_s: float = 0.05
    retry_after_s: int = 2
    completed_streams: int = 0
    cancelled_streams: int = 0
    agent: AgentScript = field(default_factory=AgentScript)


def _prompt_tokens(body: dict[str, Any]) -> int:
    if "messages" in body:
        text = " ".join(
            m["content"] if isinstance(m.get("content"), str) else "" for m in body["messages"]
        )
    elif "input" in body:
        given = body["input"]
        text = given if isinstance(given, str) else " ".join(map(str, given))
    else:
        prompt = body.get("prompt", "")
        text = prompt if isinstance(prompt, str) else " ".join(prompt)
    return max(1, len(text.split()))


def _error(status: int, message: str) -> Response:
    body = {"error": {"message": message, "type": "fake_error", "param": None, "code": None}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def fake_upstream_app(state: FakeUpstreamState) -> Starlette:
    async def completions(request: Request) -> Response:
        body = orjson.loads(await request.body())
        state.requests.append(body)
        state.headers.append(dict(request.headers))
        model = body.get("model", "fake")
        if model == "fake-500":
            return _error(500, "the fake upstream failed")
        if model == "fake-429":
            return _error(429, "the fake upstream is busy")
        if model == "fake-429-wait":
            answer = _error(429, "the fake upstream is busy; come back later")
            answer.headers["retry-after"] = str(state.retry_after_s)
            return answer
        if model == "fake-400":
            return _error(400, "the fake upstream does not like this request")
        if model == "fake-hang":
            await asyncio.sleep(state.hang_s)
        if model == "fake-garbage":
            return Response(b"<html>not json", media_type="application/json")
        chat = request.url.path.endswith("/chat/completions")
        if model == "fake-agent" and chat:
            return agent_answer(state.agent, body)
        count = int(body.get("max_completion_tokens") or body.get("max_tokens") or 16)
        tokens = [FAKE_WORDS[i % len(FAKE_WORDS)] + " " for i in range(count)]
        prompt = _prompt_tokens(body)
        if body.get("stream"):
            return StreamingResponse(
                _stream(state, model, chat, tokens, prompt, body), media_type="text/event-stream"
            )
        return _answer(model, chat, tokens, prompt)

    async def embeddings(request: Request) -> Response:
        body = orjson.loads(await request.body())
        state.requests.append(body)
        given = body["input"]
        items = [given] if isinstance(given, str) else given
        data = [
            {"object": "embedding", "index": i, "embedding": [0.6, 0.8]} for i in range(len(items))
        ]
        prompt = _prompt_tokens(body)
        usage = {"prompt_tokens": prompt, "total_tokens": prompt}
        answer = {"object": "list", "data": data, "model": body["model"], "usage": usage}
        return Response(orjson.dumps(answer), media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
        ]
    )


def _answer(model: str, chat: bool, tokens: list[str], prompt: int) -> Response:
    text = "".join(tokens)
    if chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "length",
        }
    else:
        choice = {"index": 0, "text": text, "finish_reason": "length"}
    answer: dict[str, Any] = {
        "id": "fake-1",
        "object": "chat.completion" if chat else "text_completion",
        "created": 1,
        "model": model,
        "choices": [choice],
    }
    if model != "fake-nousage":
        answer["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": len(tokens),
            "total_tokens": prompt + len(tokens),
        }
    return Response(orjson.dumps(answer), media_type="application/json")


async def _stream(
    state: FakeUpstreamState,
    model: str,
    chat: bool,
    tokens: list[str],
    prompt: int,
    body: dict[str, Any],
) -> AsyncIterator[bytes]:
    def chunk(choices: list[dict[str, Any]], usage: Any = None) -> bytes:
        obj = "chat.completion.chunk" if chat else "text_completion"
        data = {
            "id": "fake-1",
            "object": obj,
            "created": 1,
            "model": model,
            "choices": choices,
            "usage": usage,
        }
        return b"data: " + orjson.dumps(data) + b"\n\n"

    def piece(text: str, finish: str | None = None) -> dict[str, Any]:
        if chat:
            return {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
        return {"index": 0, "text": text, "finish_reason": finish}

    if model == "fake-garbage":
        yield b"this is not an event stream\n\n"
        return
    try:
        if chat:
            yield chunk(
                [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
            )
        cut = len(tokens) // 2 if model == "fake-cut" else None
        for index, token in enumerate(tokens):
            if cut is not None and index == cut:
                raise ConnectionAbortedError("fake cut")
            running = None
            if model == "fake-running":
                running = {
                    "prompt_tokens": prompt,
                    "completion_tokens": index + 1,
                    "total_tokens": prompt + index + 1,
                }
            yield chunk([piece(token)], running)
            if model == "fake-slow":
                await asyncio.sleep(state.slow_s)
        yield chunk([piece("", "length")])
        options = body.get("stream_options") or {}
        if options.get("include_usage") and model != "fake-nousage":
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": len(tokens),
                "total_tokens": prompt + len(tokens),
            }
            yield chunk([], usage)
        yield b"data: [DONE]\n\n"
        state.completed_streams += 1
    except asyncio.CancelledError:
        state.cancelled_streams += 1
        raise


_AGENT_WORD = re.compile(r"\S+\s*|\s+")  # text: a word and the space after it
_AGENT_JSON_PIECE = re.compile(r"\w+|\W+")  # arguments: '{"', 'city', '":"', 'Paris', ...
_AGENT_ALTERNATIVES = ("the", "a", "it", "is", ",")


def _agent_pieces(text: str, pattern: re.Pattern[str] = _AGENT_WORD) -> list[str]:
    """``text`` in tokens (one per stream chunk); they join back to it."""
    pieces: list[str] = pattern.findall(text)
    assert "".join(pieces) == text
    return pieces


def _agent_tool(body: dict[str, Any]) -> str | None:
    """The tool this turn calls: the named one, else the first one while a user spoke last
    (or a call is required); None when the turn is text."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        name: str = choice["function"]["name"]
        return name
    messages = body.get("messages") or [{}]
    if choice != "required" and messages[-1].get("role") != "user":
        return None
    first: str = tools[0]["function"]["name"]
    return first


def _agent_text(script: AgentScript, body: dict[str, Any]) -> str:
    kind = (body.get("response_format") or {}).get("type")
    if kind in ("json_schema", "json_object"):
        return orjson.dumps(script.json_instance).decode()
    return script.text


def _agent_reasoning(script: AgentScript, body: dict[str, Any]) -> str:
    """The reasoning the agent shows: its script's, when the request asks for an effort."""
    return script.reasoning_text if body.get("reasoning_effort") else ""


def _agent_logprobs(body: dict[str, Any], pieces: list[str]) -> dict[str, Any] | None:
    """OpenAI's ``logprobs`` of ``pieces`` when asked: token i at -0.01 * (i + 1), its top
    alternatives each 1.0 below the one before."""
    if body.get("logprobs") is not True:
        return None
    top_count = body.get("top_logprobs") or 0
    content = []
    for index, piece in enumerate(pieces):
        logprob = -0.01 * (index + 1)
        tops = [(piece, logprob)]
        tops += [(t, logprob - 1.0 * (n + 1)) for n, t in enumerate(_AGENT_ALTERNATIVES)]
        content.append(
            {
                "token": piece,
                "logprob": logprob,
                "bytes": list(piece.encode()),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode())}
                    for t, lp in tops[:top_count]
                ],
            }
        )
    return {"content": content, "refusal": None}


def _agent_usage(script: AgentScript, body: dict[str, Any], pieces_count: int) -> dict[str, Any]:
    prompt = _prompt_tokens(body) + script.cached_tokens
    completion = pieces_count + script.reasoning_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": script.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": script.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def agent_answer(script: AgentScript, body: dict[str, Any]) -> Response:
    """``fake-agent``'s answer to ``body``: a tool call or text, whole or streamed."""
    tool = _agent_tool(body)
    if tool is not None:
        pieces = _agent_pieces(orjson.dumps(script.tool_arguments).decode(), _AGENT_JSON_PIECE)
    else:
        pieces = _agent_pieces(_agent_text(script, body))
    usage = _agent_usage(script, body, len(pieces))
    head = {
        "id": "chatcmpl-fake-agent",
        "object": "chat.completion",
        "created": 1,
        "model": body["model"],
        "system_fingerprint": "fp_fake_agent",
    }
    if body.get("stream"):
        events = _agent_events(script, body, head, tool, pieces, usage)
        return StreamingResponse(events, media_type="text/event-stream")
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    reasoning = _agent_reasoning(script, body)
    if reasoning:
        message["reasoning_content"] = reasoning
    if tool is None:
        message["content"] = "".join(pieces)
    else:
        function = {"name": tool, "arguments": "".join(pieces)}
        message["tool_calls"] = [
            {"id": script.tool_call_id, "type": "function", "function": function}
        ]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None if tool else _agent_logprobs(body, pieces),
        "finish_reason": "stop" if tool is None else "tool_calls",
    }
    answer = {**head, "choices": [choice], "service_tier": "default"}
    if script.reports_usage:
        answer["usage"] = usage
    return Response(orjson.dumps(answer), media_type="application/json")


async def _agent_events(
    script: AgentScript,
    body: dict[str, Any],
    head: dict[str, Any],
    tool: str | None,
    pieces: list[str],
    usage: dict[str, Any],
) -> AsyncIterator[bytes]:
    """The chunks OpenAI streams: the role (and, for a call, its id and name with empty
    arguments), one chunk per piece, the finish, then the usage chunk when asked."""
    with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    logprobs = None if tool else _agent_logprobs(body, pieces)

    def chunk(delta: dict[str, Any], finish: str | None = None, index: int = -1) -> bytes:
        lp = None
        if logprobs is not None and index >= 0:
            lp = {"content": [logprobs["content"][index]], "refusal": None}
        choice = {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}
        data: dict[str, Any] = {**head, "object": "chat.completion.chunk", "choices": [choice]}
        if with_usage:
            data["usage"] = None
        return b"data: " + orjson.dumps(data) + b"\n\n"

    first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
    if tool is not None:
        function = {"name": tool, "arguments": ""}
        call = {"index": 0, "id": script.tool_call_id, "type": "function", "function": function}
        first = {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}
    # The reasoning (if shown) comes first, in chunks of its own, as vLLM streams it.
    for number, piece in enumerate(_agent_pieces(_agent_reasoning(script, body))):
        yield chunk(
            {"role": "assistant", "reasoning_content": piece}
            if number == 0
            else {"reasoning_content": piece}
        )
    yield chunk(first)
    for index, piece in enumerate(pieces):
        if tool is None:
            yield chunk({"content": piece}, index=index)
        else:
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    yield chunk({}, "stop" if tool is None else "tool_calls")
    if with_usage and script.reports_usage:
        data = {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage}
        yield b"data: " + orjson.dumps(data) + b"\n\n"
    yield b"data: [DONE]\n\n"


# The fake Anthropic Messages API (POST /v1/messages), for the ``anthropic`` engine. Like the
# fake above it picks its behaviour from the model name:
#
# | model             | behaviour                                                          |
# | ----------------- | ------------------------------------------------------------------ |
# | `claude`          | a normal answer (non-stream or stream), cache fields zero         |
# | `claude-cached`   | as `claude`, with cache writes and reads in the usage              |
# | `claude-<status>` | that HTTP status with Anthropic's error body (429: retry-after)    |
# | `claude-hang`     | waits `hang_s` before answering anything                           |
# | `claude-garbage`  | a 200 whose body is not JSON (or, for streams, not SSE)            |
# | `claude-cut`      | streams: half the text, then the connection closes                 |
# | `claude-error`    | streams: half the text, then an `event: error` (overloaded)        |
# | `claude-badjson`  | streams: half the text, then an event whose data is not JSON       |
# | `claude-nostop`   | streams: everything but `message_stop`, then a clean end           |
# | `claude-early`    | streams: `message_start`, then an `event: error` (overloaded)      |
#
# The answer is the first FAKE_ANSWER_WORDS_COUNT words of FAKE_WORDS, each with a space,
# cut at ``max_tokens`` (stop_reason max_tokens) or before a word named in
# ``stop_sequences`` (stop_reason stop_sequence); one output token per word. Input tokens
# are the whitespace words of the system prompt and the messages.
#
# Opt-in, by what the request carries (any model; a plain request is answered as above):
# * ``tools`` and a ``tool_choice`` other than none, the last turn not a tool result: one
#   ``tool_use`` block (id ``toolu_fake_<request number>``) of the tool ``tool_choice``
#   names, else the first, its input ``tool_inputs[name]`` or else the least valid instance
#   of its ``input_schema`` (required properties only: strings "x", numbers 0, enums their
#   first value); stop_reason tool_use, one output token per JSON piece. After a tool result
#   (or under tool_choice none) the text above. A forced tool (a JSON output format) is
#   such a call too.
# * ``thinking`` enabled: a ``thinking`` block with ``thinking_text`` and
#   ``thinking_signature`` first; one more output token per word of it.
# * ``cache_write_tokens`` / ``cache_read_tokens`` set on the state: those cache counts in
#   every usage, whatever the model.
# * ``output_config.format`` of type json_schema (structured outputs), no tool called: one
#   text block, the JSON of ``json_instance`` or else the least valid instance of the
#   schema; stop_reason end_turn, one output token per JSON piece.
# Streams send Anthropic's events block by block: content_block_start (a tool_use with
# input {}, a thinking block with thinking ""), the deltas (text_delta per word,
# thinking_delta per word then one signature_delta, input_json_delta: "" then the JSON in
# pieces), content_block_stop; then message_delta (stop_reason, output usage), message_stop.

FAKE_ANSWER_WORDS_COUNT = 6
FAKE_CACHE_WRITE_TOKENS = 7
FAKE_CACHE_READ_TOKENS = 11
FAKE_THINKING_TEXT = "The user asks about the weather, so I should answer plainly."
FAKE_THINKING_SIGNATURE = "ZmFrZS10aGlua2luZy1zaWduYXR1cmU="
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_ANTHROPIC_FAILING_MIDWAY = ("claude-cut", "claude-error", "claude-badjson")
_SCHEMA_DEFAULTS: dict[str, Any] = {"string": "x", "integer": 0, "number": 0, "boolean": False}

Block = dict[str, Any]


@dataclass
class FakeAnthropicState:
    """What the fake Anthropic upstream saw, the API key it accepts, and what it scripts:
    tool inputs by tool name, the thinking it shows, cache counts (None: by model), and the
    JSON it answers an output format with."""

    api_key: str = "sk-ant-fake"
    version: str = "2023-06-01"
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    hang_s: float = 30.0
    completed_streams: int = 0
    tool_inputs: dict[str, Any] = field(default_factory=dict)
    thinking_text: str = FAKE_THINKING_TEXT
    thinking_signature: str = FAKE_THINKING_SIGNATURE
    cache_write_tokens: int | None = None
    cache_read_tokens: int | None = None
    json_instance: Any = None  # the answer to an output_config.format (None: the schema's least)


def anthropic_error(status: int, message: str, **headers: str) -> Response:
    kind = ANTHROPIC_ERROR_TYPES.get(status, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def _anthropic_refusal(state: FakeAnthropicState, request: Request) -> Response | None:
    """The error Anthropic gives for a missing key, version or content type; None if none."""
    if request.headers.get("x-api-key") != state.api_key:
        return anthropic_error(401, "invalid x-api-key")
    if request.headers.get("anthropic-version") != state.version:
        return anthropic_error(400, "anthropic-version: header is required and must be known")
    if not request.headers.get("content-type", "").startswith("application/json"):
        return anthropic_error(400, "content-type must be application/json")
    return None


def _anthropic_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(block.get("text", "") for block in content or () if isinstance(block, dict))


def _anthropic_turn(body: dict[str, Any]) -> tuple[list[str], str, str | None]:
    """(tokens, stop_reason, stop_sequence) of the fake's answer to ``body``."""
    tokens: list[str] = []
    stops = body.get("stop_sequences") or []
    for index in range(FAKE_ANSWER_WORDS_COUNT):
        word = FAKE_WORDS[index % len(FAKE_WORDS)]
        if word in stops:
            return tokens, "stop_sequence", word
        if len(tokens) == body["max_tokens"]:
            return tokens, "max_tokens", None
        tokens.append(word + " ")
    return tokens, "end_turn", None


def _anthropic_usage(
    state: FakeAnthropicState, body: dict[str, Any], model: str, output_tokens: int
) -> dict[str, Any]:
    texts = [_anthropic_text(body.get("system", ""))]
    texts.extend(_anthropic_text(message.get("content")) for message in body["messages"])
    cached = model == "claude-cached"
    written = FAKE_CACHE_WRITE_TOKENS if cached else 0
    read = FAKE_CACHE_READ_TOKENS if cached else 0
    return {
        "input_tokens": max(1, len(" ".join(texts).split())),
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": _scripted(state.cache_write_tokens, written),
        "cache_read_input_tokens": _scripted(state.cache_read_tokens, read),
    }


def _scripted(scripted: int | None, by_model: int) -> int:
    return by_model if scripted is None else scripted


def schema_instance(schema: dict[str, Any]) -> Any:
    """The least instance of a JSON schema the fake can make: an object of its required
    properties, strings "x", numbers 0, an enum's (or a const's) first value, arrays empty."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "object" if "properties" in schema else "string")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        properties = schema.get("properties") or {}
        return {
            name: schema_instance(properties.get(name, {})) for name in schema.get("required", ())
        }
    if kind == "array":
        return []
    return _SCHEMA_DEFAULTS.get(kind)


def _anthropic_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool this turn calls (see the table above); None when the turn is text."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or {"type": "auto"}
    if not tools or choice.get("type") == "none":
        return None
    last = body["messages"][-1]
    content = last.get("content") if last.get("role") == "user" else None
    if any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content or ()):
        return None
    name = choice.get("name") if choice.get("type") == "tool" else tools[0]["name"]
    named: dict[str, Any] = next((tool for tool in tools if tool["name"] == name), tools[0])
    return named


def _anthropic_answer(
    state: FakeAnthropicState, body: dict[str, Any]
) -> tuple[list[Block], str, str | None, int]:
    """(content blocks, stop_reason, stop_sequence, output tokens) of the fake's answer."""
    blocks: list[Block] = []
    output_tokens = 0
    if (body.get("thinking") or {}).get("type") == "enabled":
        text = state.thinking_text
        blocks.append({"type": "thinking", "thinking": text, "signature": state.thinking_signature})
        output_tokens += len(_agent_pieces(text))
    tool = _anthropic_tool(body)
    if tool is not None:
        name = tool["name"]
        given = state.tool_inputs.get(name)
        arguments = schema_instance(tool.get("input_schema") or {}) if given is None else given
        call_id = f"toolu_fake_{len(state.requests):04d}"
        blocks.append({"type": "tool_use", "id": call_id, "name": name, "input": arguments})
        pieces = _agent_pieces(orjson.dumps(arguments).decode(), _AGENT_JSON_PIECE)
        return blocks, "tool_use", None, output_tokens + len(pieces)
    output_format = (body.get("output_config") or {}).get("format") or {}
    if output_format.get("type") == "json_schema":
        given = state.json_instance
        instance = schema_instance(output_format.get("schema") or {}) if given is None else given
        text = orjson.dumps(instance).decode()
        blocks.append({"type": "text", "text": text})
        pieces = _agent_pieces(text, _AGENT_JSON_PIECE)
        return blocks, "end_turn", None, output_tokens + len(pieces)
    tokens, stop_reason, stop_sequence = _anthropic_turn(body)
    blocks.append({"type": "text", "text": "".join(tokens)})
    return blocks, stop_reason, stop_sequence, output_tokens + len(tokens)


def fake_anthropic_app(state: FakeAnthropicState) -> Starlette:
    async def messages(request: Request) -> Response:
        raw = await request.body()
        state.headers.append(dict(request.headers))
        refusal = _anthropic_refusal(state, request)
        if refusal is not None:
            return refusal
        body = orjson.loads(raw)
        state.requests.append(body)
        model = body.get("model", "claude")
        status = model.removeprefix("claude-")
        if status.isdigit():
            retry = {"retry-after": "7"} if status == "429" else {}
            return anthropic_error(int(status), f"the fake upstream says {status}", **retry)
        if model == "claude-hang":
            await asyncio.sleep(state.hang_s)
        if body.get("stream"):
            events = _anthropic_events(state, model, body)
            return StreamingResponse(events, media_type="text/event-stream")
        if model == "claude-garbage":
            return Response(b"<html>not json", media_type="application/json")
        content, stop_reason, stop_sequence, output_tokens = _anthropic_answer(state, body)
        answer = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": _anthropic_usage(state, body, model, output_tokens),
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: ".encode() + orjson.dumps({"type": kind, **data}) + b"\n\n"


def _block_stream(block: Block) -> tuple[Block, list[Block]]:
    """A content block as Anthropic streams it: the block it starts as, then its deltas."""
    if block["type"] == "thinking":
        pieces = _agent_pieces(block["thinking"])
        deltas = [{"type": "thinking_delta", "thinking": piece} for piece in pieces]
        signed = {"type": "signature_delta", "signature": block["signature"]}
        return {"type": "thinking", "thinking": ""}, [*deltas, signed]
    if block["type"] == "tool_use":
        pieces = ["", *_agent_pieces(orjson.dumps(block["input"]).decode(), _AGENT_JSON_PIECE)]
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]
        return {**block, "input": {}}, deltas
    pieces = _agent_pieces(block["text"])
    return {"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in pieces]


async def _anthropic_events(
    state: FakeAnthropicState, model: str, body: dict[str, Any]
) -> AsyncIterator[bytes]:
    if model == "claude-garbage":
        yield b"this is not an event stream\n\n"
        return
    content, stop_reason, stop_sequence, output_tokens = _anthropic_answer(state, body)
    message: dict[str, Any] = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": model,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _anthropic_usage(state, body, model, 1),  # Anthropic's placeholder output
    }
    yield _sse("message_start", {"message": message})
    if model == "claude-early":
        yield _sse("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
        return
    for index, block in enumerate(content):
        start, deltas = _block_stream(block)
        yield _sse("content_block_start", {"index": index, "content_block": start})
        if index == 0:
            yield _sse("ping", {})
        for number, delta in enumerate(deltas):
            midway = block["type"] == "text" and number == len(deltas) // 2
            if midway and model in _ANTHROPIC_FAILING_MIDWAY:
                await asyncio.sleep(0.05)  # the text so far reaches the gateway in reads of its own
                yield _anthropic_failure(model)
                return
            yield _sse("content_block_delta", {"index": index, "delta": delta})
        yield _sse("content_block_stop", {"index": index})
    stopped = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
    yield _sse("message_delta", {"delta": stopped, "usage": {"output_tokens": output_tokens}})
    if model == "claude-nostop":
        return
    yield _sse("message_stop", {})
    state.completed_streams += 1


def _anthropic_failure(model: str) -> bytes:
    if model == "claude-cut":
        raise ConnectionAbortedError("fake cut")
    if model == "claude-error":
        return _sse("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
    return b"event: content_block_delta\ndata: {not json\n\n"
