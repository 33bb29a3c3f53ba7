"""What the Responses surface tests share: the models offered, a function tool, an image
data URL, and a parse of a /v1/responses body with fields set."""

from __future__ import annotations

from typing import Any

from tokenmill.config import Limits, ModelConfig
from tokenmill.neutral import NeutralCall
from tokenmill.surfaces.responses_request import parse_responses

MODELS = {
    "chat": ModelConfig(deployments=["d"], context_tokens=4096, output_tokens_max=1000),
    "embed": ModelConfig(kind="embedding", deployments=["d"]),
}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}
PNG = "data:image/png;base64," + "A" * 400


def parse(limits: Limits | None = None, prior: Any = (), **fields: Any) -> NeutralCall:
    body = {"model": "chat", "input": "hi", **fields}
    return parse_responses(body, MODELS, limits or Limits(), prior=prior)
