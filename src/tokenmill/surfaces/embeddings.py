"""The embeddings surface (``/v1/embeddings``): a body checked and read into a
``NeutralCall``, and an ``EmbeddingsAnswer`` rendered as OpenAI's list of embeddings, as
floats or as base64 of little-endian float32 (pure)."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson

from tokenmill.config import Limits, ModelConfig
from tokenmill.errors import InvalidRequest
from tokenmill.neutral import (
    Completed,
    EmbeddingsAnswer,
    NeutralCall,
    PromptSize,
    StreamPart,
    WirePart,
)
from tokenmill.surfaces.openai_fields import (
    INT_MAX,
    USER_CHARS_MAX,
    ModelAccess,
    check_kind,
    check_string,
    is_int,
    model_of,
)
from tokenmill.surfaces.wire import OpenAIStreamEnds
from tokenmill.usage import TokenCounts

DIMENSIONS_MAX = 65536


def parse_embedding(
    body: dict[str, Any],
    models: dict[str, ModelConfig],
    limits: Limits,
    *,
    may_use: ModelAccess | None = None,
    body_bytes: int | None = None,
    prior: tuple[dict[str, Any], ...] = (),
) -> NeutralCall:
    name, model = model_of(body, models, may_use)
    check_kind(name, model, "embedding")
    inputs = body.get("input")
    items = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(items, list) or not items or not _items_valid(items):
        raise InvalidRequest(
            "'input' must be a non-empty string, an array of non-empty strings, or an array"
            " of token arrays.",
            param="input",
        )
    if is_int(items[0]):
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
    if dimensions is not None and (not is_int(dimensions) or not 1 <= dimensions <= DIMENSIONS_MAX):
        raise InvalidRequest(
            f"'dimensions' must be an integer from 1 to {DIMENSIONS_MAX}.", param="dimensions"
        )
    check_string(body, "user", USER_CHARS_MAX)
    return NeutralCall(
        surface="embeddings",
        model=name,
        body=body,
        stream=False,
        include_usage=False,
        output_tokens_max=None,
        prompt=PromptSize(body_bytes if body_bytes is not None else len(orjson.dumps(body))),
        inputs=tuple(item if isinstance(item, str) else tuple(item) for item in items),
    )


def _items_valid(items: list[Any]) -> bool:
    if all(isinstance(i, str) and i for i in items):
        return True
    if all(is_int(i) and 0 <= i <= INT_MAX for i in items):
        return True
    return all(
        isinstance(i, list) and i and all(is_int(t) and 0 <= t <= INT_MAX for t in i) for i in items
    )


def pack_float32(values: tuple[float, ...]) -> bytes:
    """Little-endian float32, the layout of OpenAI's ``encoding_format: base64``."""
    return struct.pack(f"<{len(values)}f", *values)


def render_embeddings(answer: EmbeddingsAnswer, model: str, *, as_base64: bool) -> bytes:
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": base64.b64encode(pack_float32(vector)).decode()
            if as_base64
            else list(vector),
        }
        for index, vector in enumerate(answer.vectors)
    ]
    prompt_tokens = answer.counts.prompt_tokens
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
    )


class EmbeddingsRenderer(OpenAIStreamEnds):
    """Embeddings have no stream; the renderer only makes the body."""

    def __init__(self, call: NeutralCall, request_id: str, created_s: int) -> None:
        self._model = call.model
        self._as_base64 = call.body.get("encoding_format") == "base64"

    def body(self, completed: Completed) -> bytes:
        if isinstance(completed, bytes):
            return completed
        assert isinstance(completed, EmbeddingsAnswer)
        return render_embeddings(completed, self._model, as_base64=self._as_base64)

    def parts(self, parts: list[StreamPart]) -> list[WirePart]:
        raise AssertionError("embeddings are never streamed")

    def usage(self, counts: TokenCounts) -> WirePart:
        raise AssertionError("embeddings are never streamed")
