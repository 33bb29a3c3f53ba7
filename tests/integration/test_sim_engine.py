"""The sim engine behind the gateway: refusals keep their HTTP status, streams are paced."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import live_gateway
from tokenmill.store.usage import query_records

SMALL_GPU = {
    "engines": {"sim": {"kind": "sim", "time_scale": 0}},
    # Llama 3.1 8B in bf16 on a 24 GB card leaves room for about 40k tokens of KV cache.
    "deployments": {"small": {"engine": "sim", "model": "llama-3.1-8b", "gpu": "rtx-4090"}},
    "models": {"small-8b": {"deployments": ["small"], "output_tokens_max": 100_000}},
    "limits": {"output_tokens_max": 100_000},
}


class TestSimRefusals:
    @pytest.mark.parametrize("stream", [False, True])
    def test_a_request_bigger_than_the_kv_cache_is_a_400_before_any_byte(
        self, sqlite_url: str, tmp_path: Path, stream: bool
    ) -> None:
        """Prompt plus max_tokens beyond the KV cache: 400 with param max_tokens, streamed too."""
        with live_gateway(sqlite_url, SMALL_GPU, tmp_path) as gateway:
            key = gateway.new_key()[0]
            response = httpx.post(
                gateway.url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={
                    "model": "small-8b",
                    "max_tokens": 90_000,
                    "stream": stream,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            )
            assert response.status_code == 400, response.text
            assert response.json()["error"]["param"] == "max_tokens"
            with gateway.db.connect() as connection:
                (record,) = query_records(connection)
            assert record.status == "error"
            assert record.http_status == 400
            assert (record.prompt_tokens, record.completion_tokens) == (0, 0)
