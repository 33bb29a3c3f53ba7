"""The legacy completions surface (``/v1/completions``): a body checked and read into a
``NeutralCall``, and neutral answers and deltas rendered as ``text_completion`` objects
(pure). One prompt per request; ``echo`` and ``best_of`` above 1 are refused."""

from __future__ import annotations

from typing import Any

import orjson

from tokenmill.config import Limits, ModelConfig
from tokenmill.errors import InvalidRequest
from tokenmill.neutral import (
    Answer,
    Completed,
    Finish,
    NeutralCall,
    PromptSize,
    Sampling,
    StreamPart,
    TextDelta,
    TextPart,
    TokenLogprob,
    UsageReport,
    WirePart,
)
from tokenmill.surfaces.chat_render import usage_json
from tokenmill.surfaces.openai_fields import (
    BEST_OF_MAX,
    LOGPROBS_MAX,
    ModelAccess,
    check_integer,
    check_kind,
    check_sampling,
    check_type,
    model_of,
    output_cap,
    stop_of,
    stream_of,
)
from tokenmill.surfaces.wire import OpenAIStreamEnds
from tokenmill.usage import TokenCounts


def _check_options(body: dict[str, Any]) -> None:
    """The fields only /v1/completions has; those the gateway cannot serve are refused."""
    check_integer(body, "logprobs", 0, LOGPROBS_MAX)
    check_integer(body, "best_of", 0, BEST_OF_MAX)
    if body.get("best_of") not in (None, 1):
        raise InvalidRequest(
            "Only best_of=1 is supported.", param="best_of", code="unsupported_value"
        )
    check_type(body, "echo", (bool,), "a boolean")
    if body.get("echo"):
        raise InvalidRequest("'echo' is not supported.", param="echo", code="unsupported_value")
    check_type(body, "suffix", (str,), "a string")


def parse_completion(
    body: dict[str, Any],
    models: dict[str, ModelConfig],
    limits: Limits,
    *,
    may_use: ModelAccess | None = None,
    body_bytes: int | None = None,
    prior: tuple[dict[str, Any], ...] = (),
) -> NeutralCall:
    name, model = model_of(body, models, may_use)
    check_kind(name, model, "chat")
    prompt: Any = body.get("prompt")
    valid = isinstance(prompt, str) or (
        isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt)
    )
    if not valid:
        raise InvalidRequest(
            "'prompt' must be a string or a non-empty array of strings.", param="prompt"
        )
    if isinstance(prompt, list) and len(prompt) != 1:
        raise InvalidRequest("Only one prompt per request is supported.", param="prompt")
    check_sampling(body)
    _check_options(body)
    stream, include_usage = stream_of(body)
    logprobs = body.get("logprobs")
    return NeutralCall(
        surface="completions",
        model=name,
        body=body,
        stream=stream,
        include_usage=include_usage,
        output_tokens_max=output_cap(body, model, limits),
        prompt=PromptSize(body_bytes if body_bytes is not None else len(orjson.dumps(body))),
        stop=stop_of(body, limits),
        sampling=Sampling(body.get("temperature"), body.get("top_p"), None, body.get("seed")),
        logprobs=logprobs is not None,
        top_logprobs=logprobs or 0,
        batch=body.get("service_tier") == "flex",
        prompt_text=prompt if isinstance(prompt, str) else prompt[0],
    )


def _logprobs(entries: tuple[TokenLogprob, ...] | None, offset: int) -> dict[str, Any] | None:
    """The legacy shape: parallel lists, with each token's offset in the answer text."""
    if entries is None:
        return None
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.token)
    return {
        "tokens": [entry.token for entry in entries],
        "token_logprobs": [entry.logprob for entry in entries],
        "top_logprobs": [dict(entry.top) for entry in entries],
        "text_offset": offsets,
    }


class CompletionRenderer(OpenAIStreamEnds):
    def __init__(self, call: NeutralCall, request_id: str, created_s: int) -> None:
        model = call.model
        self._head = {
            "id": f"cmpl-{request_id}",
            "object": "text_completion",
            "created": created_s,
            "model": model,
        }
        self._offset = 0

    def body(self, completed: Completed) -> bytes:
        """A non-streamed answer's body: the engine's bytes as they are, or rendered."""
        if isinstance(completed, bytes):
            return completed
        assert isinstance(completed, Answer)
        return self.answer(completed)

    def answer(self, answer: Answer) -> bytes:
        text = "".join(part.text for part in answer.parts if isinstance(part, TextPart))
        choice = {
            "index": 0,
            "text": text,
            "logprobs": _logprobs(answer.logprobs, 0),
            "finish_reason": answer.finish,
        }
        body = dict(self._head)
        if answer.fingerprint is not None:
            body["system_fingerprint"] = answer.fingerprint
        return orjson.dumps(body | {"choices": [choice], "usage": _usage(answer.counts)})

    def parts(self, parts: list[StreamPart]) -> list[WirePart]:
        if parts and type(parts[0]) is WirePart:
            return parts  # type: ignore[return-value]  # an engine's batch is all one kind
        chunks = []
        for part in parts:
            if isinstance(part, WirePart):
                chunks.append(part)
            elif isinstance(part, UsageReport):
                chunks.append(self.usage(part.counts))
            elif isinstance(part, TextDelta):
                chunks.append(self._chunk(part.text, None, _logprobs(part.logprobs, self._offset)))
                self._offset += len(part.text)
            elif isinstance(part, Finish):
                chunks.append(self._chunk("", part.reason, None))
        return chunks

    def usage(self, counts: TokenCounts) -> WirePart:
        return WirePart(orjson.dumps(self._head | {"choices": [], "usage": _usage(counts)}), True)

    def _chunk(self, text: str, finish: str | None, logprobs: Any) -> WirePart:
        choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}
        return WirePart(orjson.dumps(self._head | {"choices": [choice]}))


def _usage(counts: TokenCounts) -> dict[str, Any]:
    usage = usage_json(counts)
    del usage["prompt_tokens_details"]  # the legacy endpoint has no prompt caching
    return usage
