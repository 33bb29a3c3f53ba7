"""The checks OpenAI's surfaces share (chat, completions, embeddings): the wire format,
checked once on the way in (pure).

The hot path avoids pydantic: a few direct type checks over the parsed JSON are enough and
much cheaper. Unknown fields are kept (the ``openai`` engine passes them through); the
fields the gateway acts on are checked and renamed into a ``NeutralCall``. Every field
OpenAI documents is checked against OpenAI's documented type and range (a boolean is never
a number), so what OpenAI refuses with a 400 naming the field is refused here the same way,
before an engine is called or a balance is held.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from tokenmill.config import Limits, ModelConfig
from tokenmill.errors import InvalidRequest, unknown_model

ModelAccess = Callable[[str], bool]  # whether the caller's key may use a model

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


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def invalid_type(name: str, what: str) -> InvalidRequest:
    return InvalidRequest(f"'{name}' must be {what}.", param=name, code="invalid_type")


def check_type(body: dict[str, Any], name: str, kinds: tuple[type, ...], what: str) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise invalid_type(name, what)


def check_number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not is_number(value):
        raise invalid_type(name, "a number")
    if not low <= value <= high:
        raise InvalidRequest(
            f"'{name}' must be between {low} and {high}; it is {value}.",
            param=name,
            code="decimal_below_min_value" if value < low else "decimal_above_max_value",
        )


def check_integer(body: dict[str, Any], name: str, low: int, high: int) -> None:
    value = body.get(name)
    if value is None:
        return
    if not is_int(value):
        raise invalid_type(name, "an integer")
    if not low <= value <= high:
        raise InvalidRequest(
            f"'{name}' must be an integer from {low} to {high}; it is {value}.",
            param=name,
            code="integer_below_min_value" if value < low else "integer_above_max_value",
        )


def check_string(body: dict[str, Any], name: str, chars_max: int) -> None:
    check_type(body, name, (str,), "a string")
    value = body.get(name)
    if value is not None and len(value) > chars_max:
        raise InvalidRequest(
            f"'{name}' must be at most {chars_max} characters; it has {len(value)}.",
            param=name,
            code="string_above_max_length",
        )


def model_of(
    body: dict[str, Any], models: dict[str, ModelConfig], may_use: ModelAccess | None
) -> tuple[str, ModelConfig]:
    """The model asked for; one the key may not use is as unknown as one that does not exist,
    and is refused first, before any other field can answer differently for it."""
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("'model' is required and must be a string.", param="model")
    model = models.get(name)
    if model is None or (may_use is not None and not may_use(name)):
        raise unknown_model(name)
    return name, model


def stream_of(body: dict[str, Any]) -> tuple[bool, bool]:
    check_type(body, "stream", (bool,), "a boolean")
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
            raise invalid_type(param, "a boolean")
    return stream, options.get("include_usage", False)


def output_cap(
    body: dict[str, Any],
    model: ModelConfig,
    limits: Limits,
    names: tuple[str, ...] = ("max_completion_tokens", "max_tokens"),
) -> int:
    """The smallest of the request's caps (the fields ``names``), the model's limit and the
    system's."""
    cap = min(model.output_tokens_max, limits.output_tokens_max)
    for name in names:
        value = cap_value(body, name, model)
        if value is not None:
            cap = min(cap, value)
    assert cap >= 1
    return cap


def cap_value(
    body: dict[str, Any], name: str, model: ModelConfig, *, required: bool = False
) -> int | None:
    """The output cap in the field ``name``: an integer of at least 1 within the model's
    context; None when absent (and not ``required``). Every surface's cap is read here."""
    value: Any = body.get(name)
    if value is None and not required:
        return None
    if not is_int(value) or value < 1:
        must = "is required and must be" if required else "must be"
        raise InvalidRequest(
            f"'{name}' {must} an integer of at least 1.",
            param=name,
            code="integer_below_min_value" if is_int(value) else "invalid_type",
        )
    if value > model.context_tokens:
        raise InvalidRequest(
            f"'{name}' is {value}, more than the model's context of {model.context_tokens} tokens.",
            param=name,
        )
    return int(value)


def stop_of(body: dict[str, Any], limits: Limits) -> tuple[str, ...]:
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


def check_sampling(body: dict[str, Any]) -> None:
    """The sampling fields chat and completions share, in OpenAI's ranges."""
    for name, (low, high) in SAMPLING_RANGES.items():
        check_number(body, name, low, high)
    check_integer(body, "n", 1, N_MAX)
    if body.get("n") not in (None, 1):
        raise InvalidRequest("Only n=1 is supported.", param="n", code="unsupported_value")
    check_integer(body, "seed", INT64_MIN, INT64_MAX)
    check_logit_bias(body.get("logit_bias"))
    check_string(body, "user", USER_CHARS_MAX)
    check_type(body, "service_tier", (str,), "a string")


def check_logit_bias(bias: Any) -> None:
    if bias is None:
        return
    if not isinstance(bias, dict):
        raise invalid_type("logit_bias", "an object mapping token ids to biases")
    if len(bias) > LOGIT_BIAS_COUNT_MAX:
        raise InvalidRequest(
            f"'logit_bias' may have at most {LOGIT_BIAS_COUNT_MAX} entries; it has {len(bias)}.",
            param="logit_bias",
            code="invalid_value",
        )
    for token, bias_value in bias.items():
        if not is_token_id(token):
            raise InvalidRequest(
                "'logit_bias' keys must be token ids (integers as strings);"
                f" '{str(token)[:20]}' is not.",
                param="logit_bias",
                code="invalid_value",
            )
        if not is_number(bias_value) or not -LOGIT_BIAS_MAX <= bias_value <= LOGIT_BIAS_MAX:
            raise InvalidRequest(
                f"'logit_bias' values must be numbers from -{LOGIT_BIAS_MAX} to"
                f" {LOGIT_BIAS_MAX}; the one of token {token} is not.",
                param="logit_bias",
                code="invalid_value",
            )


def is_token_id(token: Any) -> bool:
    return (
        isinstance(token, str)
        and 0 < len(token) <= 10
        and token.isascii()
        and token.isdigit()
        and int(token) <= INT_MAX
    )


def check_array(body: dict[str, Any], name: str, count_max: int, kind: type, what: str) -> None:
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


def check_metadata(metadata: Any) -> None:
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


def check_kind(name: str, model: ModelConfig, want: str) -> None:
    if model.kind != want:
        raise InvalidRequest(
            f"The model '{name}' is an {model.kind} model; it cannot serve this endpoint.",
            param="model",
        )
