"""The OpenAI Responses surface, on the way in: a ``/v1/responses`` body checked and read
into a ``NeutralCall`` (pure).

What every engine acts on (function tools, the tool choice, the text format, reasoning,
log probabilities, sampling, the output cap) is read into neutral fields at once; the input
items are checked at once and read into neutral messages only when an engine asks
(``responses_items``). A continued response (``previous_response_id``) comes with its
stored context as ``prior``, resolved by the gateway: it goes between the instructions and
this input, and counts in the prompt's size. What needs a state or a tool kept by OpenAI
(background runs, conversations, stored prompts, built-in tools, uploaded files) is refused
with a 400 naming the field.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenmill.config import Limits, ModelConfig
from tokenmill.errors import InvalidRequest
from tokenmill.neutral import (
    TEXT_OUTPUT,
    NeutralCall,
    OutputFormat,
    PromptSize,
    Reasoning,
    Sampling,
)
from tokenmill.surfaces.chat_request import REASONING_EFFORTS, TOOL_NAME
from tokenmill.surfaces.openai_fields import (
    SAFETY_IDENTIFIER_CHARS_MAX,
    SAMPLING_RANGES,
    TOOLS_COUNT_MAX,
    TOP_LOGPROBS_MAX,
    USER_CHARS_MAX,
    ModelAccess,
    check_array,
    check_integer,
    check_kind,
    check_metadata,
    check_number,
    check_string,
    check_type,
    invalid_type,
    model_of,
    output_cap,
)
from tokenmill.surfaces.responses_content import images_in
from tokenmill.surfaces.responses_items import (
    ID_CHARS_MAX,
    check_items,
    check_tool_outputs,
    input_items,
    read_messages,
)
from tokenmill.surfaces.responses_tools import tool_choice_of, tools_of

INCLUDABLE = (
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
    "message.input_image.image_url",
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
)
INCLUDE_COUNT_MAX = 16
PROMPT_CACHE_KEY_CHARS_MAX = 256  # OpenAI documents no bound; ours keeps it small
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")
TRUNCATIONS = ("auto", "disabled")
VERBOSITIES = ("low", "medium", "high")
SUMMARIES = ("auto", "concise", "detailed")
TEXT_FORMATS = ("text", "json_object", "json_schema")
UNSUPPORTED = {  # fields that need what OpenAI keeps and this gateway does not
    "background": "background responses are not supported here; stream instead",
    "conversation": "conversations are not kept here; use 'previous_response_id'",
    "prompt": "stored prompt templates are not kept here; send 'instructions' and 'input'",
}
FIELD_TYPES: tuple[tuple[str, tuple[type, ...], str], ...] = (
    ("instructions", (str,), "a string"),
    ("store", (bool,), "a boolean"),
    ("stream", (bool,), "a boolean"),
    ("parallel_tool_calls", (bool,), "a boolean"),
    ("tool_choice", (str, dict), "a string or an object"),
    ("text", (dict,), "an object"),
    ("reasoning", (dict,), "an object"),
    ("stream_options", (dict,), "an object"),
)


def parse_responses(
    body: dict[str, Any],
    models: dict[str, ModelConfig],
    limits: Limits,
    *,
    may_use: ModelAccess | None = None,
    body_bytes: int | None = None,
    prior: tuple[dict[str, Any], ...] = (),
) -> NeutralCall:
    """The neutral call of a Responses body; ``prior``: the stored items of the response it
    continues (checked when stored), read before this input."""
    name, model = model_of(body, models, may_use)
    check_kind(name, model, "chat")
    _refuse_unsupported(body)
    items = input_items(body.get("input"))
    if len(items) > limits.messages_count_max:
        raise InvalidRequest(
            f"'input' has more than {limits.messages_count_max} items.", param="input"
        )
    images_count, image_bytes = check_items(items)
    _check_options(body)
    tools = tools_of(body.get("tools") or ())
    logprobs = "message.output_text.logprobs" in (body.get("include") or ())
    instructions = body.get("instructions")
    context = (*prior, *items)
    check_tool_outputs(context)
    return NeutralCall(
        surface="responses",
        model=name,
        body=body,
        stream=body.get("stream") is True,
        include_usage=False,  # usage travels in response.completed
        output_tokens_max=_output_cap(body, model, limits),
        cap_param="max_output_tokens",
        prompt=_prompt_size(body, body_bytes, prior, len(items), (images_count, image_bytes)),
        tools=tools,
        tool_choice=tool_choice_of(body, tools),
        output_format=_output_format(body.get("text")),
        reasoning=_reasoning(body.get("reasoning")),
        sampling=Sampling(body.get("temperature"), body.get("top_p")),
        logprobs=logprobs,
        top_logprobs=body.get("top_logprobs") or 0,
        batch=body.get("service_tier") == "flex",
        read_messages=lambda: read_messages(instructions, context),
    )


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for name, why in UNSUPPORTED.items():
        if body.get(name) not in (None, False):
            raise InvalidRequest(f"'{name}': {why}.", param=name, code="unsupported_value")


def _prompt_size(
    body: dict[str, Any],
    body_bytes: int | None,
    prior: tuple[dict[str, Any], ...],
    items_count: int,
    images: tuple[int, int],
) -> PromptSize:
    """The body's bytes and the stored context's, images left out (counted apart); each
    item (and the instructions) counted as a message."""
    measured = body_bytes if body_bytes is not None else len(orjson.dumps(body))
    prior_images = [images_in(item) for item in prior]
    prior_bytes = len(orjson.dumps(prior)) if prior else 0
    images_count = images[0] + sum(count for count, _ in prior_images)
    image_bytes = images[1] + sum(size for _, size in prior_images)
    tools_count = len(body.get("tools") or ())
    return PromptSize(
        max(measured + prior_bytes - image_bytes, 0),
        items_count + len(prior) + (1 if body.get("instructions") else 0),
        tools_count,
        images_count,
    )


def _check_options(body: dict[str, Any]) -> None:
    """The fields checked for their type, range or known values."""
    for name, kinds, what in FIELD_TYPES:
        check_type(body, name, kinds, what)
    for name in ("temperature", "top_p"):
        low, high = SAMPLING_RANGES[name]
        check_number(body, name, low, high)
    check_integer(body, "top_logprobs", 0, TOP_LOGPROBS_MAX)
    check_string(body, "user", USER_CHARS_MAX)
    check_string(body, "safety_identifier", SAFETY_IDENTIFIER_CHARS_MAX)
    check_string(body, "prompt_cache_key", PROMPT_CACHE_KEY_CHARS_MAX)
    check_string(body, "previous_response_id", ID_CHARS_MAX)
    if body.get("previous_response_id") == "":
        raise InvalidRequest(
            "'previous_response_id' must name a response.", param="previous_response_id"
        )
    check_metadata(body.get("metadata"))
    check_array(body, "tools", TOOLS_COUNT_MAX, dict, "tool objects")
    check_array(body, "include", INCLUDE_COUNT_MAX, str, "strings")
    for value in body.get("include") or ():
        if value not in INCLUDABLE:
            raise InvalidRequest(
                f"'include' has '{value[:60]}'; it may have " + ", ".join(INCLUDABLE) + ".",
                param="include",
                code="invalid_value",
            )
    _check_word(body, "service_tier", SERVICE_TIERS)
    _check_word(body, "truncation", TRUNCATIONS)
    options = body.get("stream_options")
    if options is not None and body.get("stream") is not True:
        raise InvalidRequest(
            "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
        )
    if options is not None and not isinstance(options.get("include_obfuscation", False), bool):
        raise invalid_type("stream_options.include_obfuscation", "a boolean")


def _check_word(body: dict[str, Any], name: str, words: tuple[str, ...]) -> None:
    value = body.get(name)
    if value is not None and value not in words:
        raise InvalidRequest(
            f"'{name}' must be one of {', '.join(words)}.", param=name, code="invalid_value"
        )


def _output_cap(body: dict[str, Any], model: ModelConfig, limits: Limits) -> int:
    """The smallest of the request's ``max_output_tokens``, the model's and the system's."""
    return output_cap(body, model, limits, ("max_output_tokens",))


def _output_format(text: dict[str, Any] | None) -> OutputFormat:
    if text is None:
        return TEXT_OUTPUT
    verbosity = text.get("verbosity")
    if verbosity is not None and verbosity not in VERBOSITIES:
        raise InvalidRequest(
            "'text.verbosity' must be one of " + ", ".join(VERBOSITIES) + ".",
            param="text.verbosity",
            code="invalid_value",
        )
    spec = text.get("format")
    if spec is None:
        return TEXT_OUTPUT
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in TEXT_FORMATS:
        raise InvalidRequest(
            "'text.format.type' must be one of " + ", ".join(TEXT_FORMATS) + ".",
            param="text.format.type",
            code="invalid_value",
        )
    if kind != "json_schema":
        return TEXT_OUTPUT if kind == "text" else OutputFormat("json_object")
    name = spec.get("name")
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise InvalidRequest(
            "'text.format.name' must be 1 to 64 letters, digits, underscores or dashes.",
            param="text.format.name",
        )
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise invalid_type("text.format.schema", "a JSON schema object")
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise invalid_type("text.format.strict", "a boolean")
    description = spec.get("description")
    if description is not None and not isinstance(description, str):
        raise invalid_type("text.format.description", "a string")
    return OutputFormat("json_schema", name, schema, bool(strict))


def _reasoning(reasoning: dict[str, Any] | None) -> Reasoning | None:
    if reasoning is None:
        return None
    for name in ("summary", "generate_summary"):
        value = reasoning.get(name)
        if value is not None and value not in SUMMARIES:
            raise InvalidRequest(
                f"'reasoning.{name}' must be one of " + ", ".join(SUMMARIES) + ".",
                param=f"reasoning.{name}",
                code="invalid_value",
            )
    effort = reasoning.get("effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise InvalidRequest(
            "'reasoning.effort' must be one of " + ", ".join(REASONING_EFFORTS) + ".",
            param="reasoning.effort",
            code="invalid_value",
        )
    if effort is None or effort == "none":
        return None
    return Reasoning(effort)
