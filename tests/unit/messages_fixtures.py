"""What the Messages surface tests share: the models offered, the one-line conversation,
and a parse of a /v1/messages body with fields set or (as ``...``) left out."""

from __future__ import annotations

from typing import Any

from tokenmill.config import Limits, ModelConfig
from tokenmill.surfaces.messages_request import parse_messages

MODELS = {
    "claude": ModelConfig(deployments=["d"], context_tokens=200_000, output_tokens_max=8192),
    "embed": ModelConfig(kind="embedding", deployments=["d"]),
}
HELLO = [{"role": "user", "content": "hi"}]


def parse(**fields: Any) -> Any:
    body = {"model": "claude", "max_tokens": 1024, "messages": HELLO, **fields}
    return parse_messages({k: v for k, v in body.items() if v is not ...}, MODELS, Limits())
