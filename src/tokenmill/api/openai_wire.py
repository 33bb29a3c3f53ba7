"""Validating OpenAI request bodies: the wire format, checked once on the way in.

The hot path avoids pydantic: a few direct type checks over the parsed JSON are enough and
much cheaper. Unknown fields are kept (the ``openai`` engine passes them through); the
fields the gateway acts on are checked and renamed into a ``ParsedRequest``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tokenmill.config import Limits, ModelConfig
from tokenmill.engines.base import Endpoint
from tokenmill.errors import InvalidRequest, NotFound

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class ParsedRequest:
    endpoint: Endpoint
    model: str
    body: dict[str, Any]
    stream: bool
    include_usage: bool
    output_tokens_max: int | None
    stop: tuple[str, ...]
    # What the prompt bound of the hold is made of (the body's bytes less image payloads).
    messages_count: int = 0
    tools_count: int = 0
    images_count: int = 0
    image_bytes: int = 0
    batch: bool = False  # service_tier "flex": may wait, so a plan's batch discount applies


def decode_json(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_type(body: dict[str, Any], name: str, kinds: tuple[type, ...], what: str) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise InvalidRequest(f"'{name}' must be {what}.", param=name)


def _model(body: dict[str, Any], models: dict[str, ModelConfig]) -> tuple[str, ModelConfig]:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("'model' is required and must be a string.", param="model")
    model = models.get(name)
    if model is None:
        raise NotFound(
            f"The model '{name[:200]}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    return name, model


def _stream(body: dict[str, Any]) -> tuple[bool, bool]:
    _check_type(body, "stream", (bool,), "a boolean")
    stream = bool(body.get("stream"))
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
    if not stream:
        raise InvalidRequest(
            "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
        )
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise InvalidRequest(
            "'stream_options.include_usage' must be a boolean.",
            param="stream_options.include_usage",
        )
    return stream, include


def _output_cap(body: dict[str, Any], model: ModelConfig, limits: Limits) -> int:
    """The smallest of the request's max tokens, the model's limit and the system's."""
    cap = min(model.output_tokens_max, limits.output_tokens_max)
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise InvalidRequest(f"'{name}' must be an integer of at least 1.", param=name)
        if value > model.context_tokens:
            raise InvalidRequest(
                f"'{name}' is {value}, more than the model's context of"
                f" {model.context_tokens} tokens.",
                param=name,
            )
        cap = min(cap, value)
    assert cap >= 1
    return cap


def _stop(body: dict[str, Any], limits: Limits) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(stops, list)
        or len(stops) > limits.stop_count_max
        or not all(isinstance(s, str) and s for s in stops)
    ):
        raise InvalidRequest(
            f"'stop' must be a non-empty string or a list of at most {limits.stop_count_max}"
            " non-empty strings.",
            param="stop",
        )
    return tuple(stops)


def _common(body: dict[str, Any]) -> None:
    n = body.get("n")
    if n is not None and (not _is_int(n) or n != 1):
        raise InvalidRequest("Only n=1 is supported.", param="n")
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        _check_type(body, name, (int, float), "a number")
    _check_type(body, "seed", (int,), "an integer")
    _check_type(body, "user", (str,), "a string")
    _check_type(body, "service_tier", (str,), "a string")


def _check_kind(name: str, model: ModelConfig, want: str) -> None:
    if model.kind != want:
        raise InvalidRequest(
            f"The model '{name}' is an {model.kind} model; it cannot serve this endpoint.",
            param="model",
        )


def parse_chat(
    body: dict[str, Any], models: dict[str, ModelConfig], limits: Limits
) -> ParsedRequest:
    name, model = _model(body, models)
    _check_kind(name, model, "chat")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    if len(messages) > limits.messages_count_max:
        raise InvalidRequest(
            f"'messages' has more than {limits.messages_count_max} entries.", param="messages"
        )
    images_count = image_bytes = 0
    for index, message in enumerate(messages):
        images, size = _check_message(index, message)
        images_count += images
        image_bytes += size
    _common(body)
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array.", param="tools")
    stream, include_usage = _stream(body)
    cap = _output_cap(body, model, limits)
    return ParsedRequest(
        "chat",
        name,
        body,
        stream,
        include_usage,
        cap,
        _stop(body, limits),
        messages_count=len(messages),
        tools_count=len(tools or ()),
        images_count=images_count,
        image_bytes=image_bytes,
        batch=body.get("service_tier") == "flex",
    )


IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})


def _image_size(part: dict[str, Any]) -> int:
    """The bytes an image part takes in the body (its URL or data), counted as one image."""
    value = part.get(part["type"])
    if isinstance(value, dict):
        value = value.get("url", "")
    return len(value) if isinstance(value, str) else 0


def _check_message(index: int, message: Any) -> tuple[int, int]:
    """Check one message; return (images in it, bytes those images take in the body)."""
    param = f"messages.[{index}]"
    if not isinstance(message, dict):
        raise InvalidRequest(f"{param} must be an object.", param=param)
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidRequest(
            f"{param}.role must be one of {', '.join(sorted(ROLES))}.", param=f"{param}.role"
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


def parse_completion(
    body: dict[str, Any], models: dict[str, ModelConfig], limits: Limits
) -> ParsedRequest:
    name, model = _model(body, models)
    _check_kind(name, model, "chat")
    prompt = body.get("prompt")
    valid = isinstance(prompt, str) or (
        isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt)
    )
    if not valid:
        raise InvalidRequest(
            "'prompt' must be a string or a non-empty array of strings.", param="prompt"
        )
    if isinstance(prompt, list) and len(prompt) != 1:
        raise InvalidRequest("Only one prompt per request is supported.", param="prompt")
    _common(body)
    _check_type(body, "echo", (bool,), "a boolean")
    if body.get("echo"):
        raise InvalidRequest("'echo' is not supported.", param="echo")
    if body.get("best_of") not in (None, 1):
        raise InvalidRequest("Only best_of=1 is supported.", param="best_of")
    stream, include_usage = _stream(body)
    cap = _output_cap(body, model, limits)
    return ParsedRequest(
        "completions",
        name,
        body,
        stream,
        include_usage,
        cap,
        _stop(body, limits),
        batch=body.get("service_tier") == "flex",
    )


def parse_embedding(
    body: dict[str, Any], models: dict[str, ModelConfig], limits: Limits
) -> ParsedRequest:
    name, model = _model(body, models)
    _check_kind(name, model, "embedding")
    inputs = body.get("input")
    items = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(items, list) or not items or not _embedding_items_valid(items):
        raise InvalidRequest(
            "'input' must be a non-empty string, an array of non-empty strings, or an array"
            " of token arrays.",
            param="input",
        )
    if _is_int(items[0]):
        items = [items]  # one token array
    if len(items) > limits.embedding_inputs_count_max:
        raise InvalidRequest(
            f"'input' has more than {limits.embedding_inputs_count_max} entries.", param="input"
        )
    encoding = body.get("encoding_format")
    if encoding not in (None, "float", "base64"):
        raise InvalidRequest(
            "'encoding_format' must be 'float' or 'base64'.", param="encoding_format"
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and (not _is_int(dimensions) or not 1 <= dimensions <= 65536):
        raise InvalidRequest("'dimensions' must be an integer from 1 to 65536.", param="dimensions")
    _check_type(body, "user", (str,), "a string")
    return ParsedRequest("embeddings", name, body, False, False, None, ())


def _embedding_items_valid(items: list[Any]) -> bool:
    if all(isinstance(i, str) and i for i in items):
        return True
    if all(_is_int(i) and 0 <= i <= INT_MAX for i in items):
        return True
    return all(
        isinstance(i, list) and i and all(_is_int(t) and 0 <= t <= INT_MAX for t in i)
        for i in items
    )


PARSERS = {"chat": parse_chat, "completions": parse_completion, "embeddings": parse_embedding}
