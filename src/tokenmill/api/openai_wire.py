"""Validating OpenAI request bodies: the wire format, checked once on the way in.

The hot path avoids pydantic: a few direct type checks over the parsed JSON are enough and
much cheaper. Unknown fields are kept (the ``openai`` engine passes them through); the
fields the gateway acts on are checked and renamed into a ``ParsedRequest``. Every field
OpenAI documents is checked against OpenAI's documented type and range (a boolean is never
a number), so what OpenAI refuses with a 400 naming the field is refused here the same way,
before an engine is called or a balance is held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tokenmill.access.keys import Grant, may_use_model, unknown_model
from tokenmill.config import Limits, ModelConfig
from tokenmill.engines.base import Endpoint
from tokenmill.errors import InvalidRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
INT_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# OpenAI's documented bounds (its API reference): part of the wire contract, not settings.
SAMPLING_RANGES = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "presence_penalty": (-2, 2),
    "frequency_penalty": (-2, 2),
}
N_MAX = 128
TOP_LOGPROBS_MAX = 20  # chat
LOGPROBS_MAX = 5  # completions
BEST_OF_MAX = 20
LOGIT_BIAS_COUNT_MAX = 300
LOGIT_BIAS_MAX = 100
TOOLS_COUNT_MAX = 128
MODALITIES_COUNT_MAX = 8
METADATA_COUNT_MAX = 16
METADATA_KEY_CHARS_MAX = 64
METADATA_VALUE_CHARS_MAX = 512
SAFETY_IDENTIFIER_CHARS_MAX = 64
USER_CHARS_MAX = 256  # OpenAI documents no bound; ours keeps what is logged and sent on small

# Chat fields checked for their type only; their values are the engine's business.
CHAT_FIELD_TYPES: tuple[tuple[str, tuple[type, ...], str], ...] = (
    ("logprobs", (bool,), "a boolean"),
    ("store", (bool,), "a boolean"),
    ("parallel_tool_calls", (bool,), "a boolean"),
    ("tool_choice", (str, dict), "a string or an object"),
    ("function_call", (str, dict), "a string or an object"),
    ("response_format", (dict,), "an object"),
    ("prediction", (dict,), "an object"),
    ("audio", (dict,), "an object"),
    ("web_search_options", (dict,), "an object"),
    ("reasoning_effort", (str,), "a string"),
    ("verbosity", (str,), "a string"),
    ("prompt_cache_key", (str,), "a string"),
)


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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _invalid_type(name: str, what: str) -> InvalidRequest:
    return InvalidRequest(f"'{name}' must be {what}.", param=name, code="invalid_type")


def _check_type(body: dict[str, Any], name: str, kinds: tuple[type, ...], what: str) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise _invalid_type(name, what)


def _check_number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not _is_number(value):
        raise _invalid_type(name, "a number")
    if not low <= value <= high:
        raise InvalidRequest(
            f"'{name}' must be between {low} and {high}; it is {value}.",
            param=name,
            code="decimal_below_min_value" if value < low else "decimal_above_max_value",
        )


def _check_integer(body: dict[str, Any], name: str, low: int, high: int) -> None:
    value = body.get(name)
    if value is None:
        return
    if not _is_int(value):
        raise _invalid_type(name, "an integer")
    if not low <= value <= high:
        raise InvalidRequest(
            f"'{name}' must be an integer from {low} to {high}; it is {value}.",
            param=name,
            code="integer_below_min_value" if value < low else "integer_above_max_value",
        )


def _check_string(body: dict[str, Any], name: str, chars_max: int) -> None:
    _check_type(body, name, (str,), "a string")
    value = body.get(name)
    if value is not None and len(value) > chars_max:
        raise InvalidRequest(
            f"'{name}' must be at most {chars_max} characters; it has {len(value)}.",
            param=name,
            code="string_above_max_length",
        )


def _model(
    body: dict[str, Any], models: dict[str, ModelConfig], grant: Grant | None
) -> tuple[str, ModelConfig]:
    """The model asked for; one the key may not use is as unknown as one that does not exist,
    and is refused first, before any other field can answer differently for it."""
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("'model' is required and must be a string.", param="model")
    model = models.get(name)
    if model is None or (grant is not None and not may_use_model(grant, name)):
        raise unknown_model(name)
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
    for name in ("include_usage", "include_obfuscation"):
        if not isinstance(options.get(name, False), bool):
            param = f"stream_options.{name}"
            raise _invalid_type(param, "a boolean")
    return stream, options.get("include_usage", False)


def _output_cap(body: dict[str, Any], model: ModelConfig, limits: Limits) -> int:
    """The smallest of the request's max tokens, the model's limit and the system's."""
    cap = min(model.output_tokens_max, limits.output_tokens_max)
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise InvalidRequest(
                f"'{name}' must be an integer of at least 1.",
                param=name,
                code="integer_below_min_value" if _is_int(value) else "invalid_type",
            )
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
    """The sampling fields chat and completions share, in OpenAI's ranges."""
    for name, (low, high) in SAMPLING_RANGES.items():
        _check_number(body, name, low, high)
    _check_integer(body, "n", 1, N_MAX)
    if body.get("n") not in (None, 1):
        raise InvalidRequest("Only n=1 is supported.", param="n", code="unsupported_value")
    _check_integer(body, "seed", INT64_MIN, INT64_MAX)
    _check_logit_bias(body.get("logit_bias"))
    _check_string(body, "user", USER_CHARS_MAX)
    _check_type(body, "service_tier", (str,), "a string")


def _check_logit_bias(bias: Any) -> None:
    if bias is None:
        return
    if not isinstance(bias, dict):
        raise _invalid_type("logit_bias", "an object mapping token ids to biases")
    if len(bias) > LOGIT_BIAS_COUNT_MAX:
        raise InvalidRequest(
            f"'logit_bias' may have at most {LOGIT_BIAS_COUNT_MAX} entries; it has {len(bias)}.",
            param="logit_bias",
            code="invalid_value",
        )
    for token, bias_value in bias.items():
        if not _is_token_id(token):
            raise InvalidRequest(
                "'logit_bias' keys must be token ids (integers as strings);"
                f" '{str(token)[:20]}' is not.",
                param="logit_bias",
                code="invalid_value",
            )
        if not _is_number(bias_value) or not -LOGIT_BIAS_MAX <= bias_value <= LOGIT_BIAS_MAX:
            raise InvalidRequest(
                f"'logit_bias' values must be numbers from -{LOGIT_BIAS_MAX} to"
                f" {LOGIT_BIAS_MAX}; the one of token {token} is not.",
                param="logit_bias",
                code="invalid_value",
            )


def _is_token_id(token: Any) -> bool:
    return (
        isinstance(token, str)
        and 0 < len(token) <= 10
        and token.isascii()
        and token.isdigit()
        and int(token) <= INT_MAX
    )


def _check_array(body: dict[str, Any], name: str, count_max: int, kind: type, what: str) -> None:
    items = body.get(name)
    if items is None:
        return
    if (
        not isinstance(items, list)
        or len(items) > count_max
        or not all(isinstance(item, kind) for item in items)
    ):
        raise InvalidRequest(
            f"'{name}' must be an array of at most {count_max} {what}.",
            param=name,
            code="invalid_value",
        )


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    valid = (
        isinstance(metadata, dict)
        and len(metadata) <= METADATA_COUNT_MAX
        and all(
            isinstance(key, str)
            and isinstance(value, str)
            and len(key) <= METADATA_KEY_CHARS_MAX
            and len(value) <= METADATA_VALUE_CHARS_MAX
            for key, value in metadata.items()
        )
    )
    if not valid:
        raise InvalidRequest(
            f"'metadata' must be an object of at most {METADATA_COUNT_MAX} entries, each a"
            f" string of at most {METADATA_VALUE_CHARS_MAX} characters under a key of at most"
            f" {METADATA_KEY_CHARS_MAX}.",
            param="metadata",
            code="invalid_value",
        )


def _chat_options(body: dict[str, Any]) -> None:
    """Chat's own fields: log probabilities, metadata, tools, and those checked for type."""
    for name, kinds, what in CHAT_FIELD_TYPES:
        _check_type(body, name, kinds, what)
    _check_integer(body, "top_logprobs", 0, TOP_LOGPROBS_MAX)
    if body.get("top_logprobs") is not None and body.get("logprobs") is not True:
        raise InvalidRequest(
            "'top_logprobs' requires 'logprobs' to be true.",
            param="top_logprobs",
            code="invalid_value",
        )
    _check_string(body, "safety_identifier", SAFETY_IDENTIFIER_CHARS_MAX)
    _check_metadata(body.get("metadata"))
    _check_array(body, "modalities", MODALITIES_COUNT_MAX, str, "strings")
    _check_array(body, "tools", TOOLS_COUNT_MAX, dict, "tool objects")
    _check_array(body, "functions", TOOLS_COUNT_MAX, dict, "function objects")
    response_format = body.get("response_format")
    if response_format is not None and not isinstance(response_format.get("type"), str):
        raise _invalid_type("response_format.type", "a string")


def _completion_options(body: dict[str, Any]) -> None:
    """The fields only /v1/completions has; those the gateway cannot serve are refused."""
    _check_integer(body, "logprobs", 0, LOGPROBS_MAX)
    _check_integer(body, "best_of", 0, BEST_OF_MAX)
    if body.get("best_of") not in (None, 1):
        raise InvalidRequest(
            "Only best_of=1 is supported.", param="best_of", code="unsupported_value"
        )
    _check_type(body, "echo", (bool,), "a boolean")
    if body.get("echo"):
        raise InvalidRequest("'echo' is not supported.", param="echo", code="unsupported_value")
    _check_type(body, "suffix", (str,), "a string")


def _check_kind(name: str, model: ModelConfig, want: str) -> None:
    if model.kind != want:
        raise InvalidRequest(
            f"The model '{name}' is an {model.kind} model; it cannot serve this endpoint.",
            param="model",
        )


def parse_chat(
    body: dict[str, Any],
    models: dict[str, ModelConfig],
    limits: Limits,
    *,
    grant: Grant | None = None,
) -> ParsedRequest:
    name, model = _model(body, models, grant)
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
    _chat_options(body)
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
        tools_count=len(body.get("tools") or ()),
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
    body: dict[str, Any],
    models: dict[str, ModelConfig],
    limits: Limits,
    *,
    grant: Grant | None = None,
) -> ParsedRequest:
    name, model = _model(body, models, grant)
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
    _completion_options(body)
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
    body: dict[str, Any],
    models: dict[str, ModelConfig],
    limits: Limits,
    *,
    grant: Grant | None = None,
) -> ParsedRequest:
    name, model = _model(body, models, grant)
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
    _check_string(body, "user", USER_CHARS_MAX)
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
