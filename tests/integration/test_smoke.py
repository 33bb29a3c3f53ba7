"""The shortest path through the gateway: a key, a chat, a usage record."""

from __future__ import annotations

import httpx
from openai import OpenAI

from tests.conftest import LiveGateway
from tokenmill.store.usage import query_records


class TestSmoke:
    def test_a_chat_through_the_sim_engine_leaves_one_usage_record(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """A non-streamed chat answers and its usage record is in the store when it returns."""
        client = OpenAI(base_url=gateway.url + "/v1", api_key=key)
        answer = client.chat.completions.create(
            model="sim-chat", messages=[{"role": "user", "content": "hi there"}], max_tokens=5
        )
        assert answer.usage is not None
        with gateway.db.connect() as connection:
            records = query_records(connection)
        assert len(records) == 1
        assert records[0].completion_tokens == answer.usage.completion_tokens
        assert records[0].prompt_tokens == answer.usage.prompt_tokens
        assert not records[0].estimated

    def test_the_fake_upstream_streams_through_the_openai_engine(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """A stream from the fake upstream ends with [DONE]."""
        with httpx.stream(
            "POST",
            gateway.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": "fake",
                "stream": True,
                "max_tokens": 4,
                "messages": [{"role": "user", "content": "a b c"}],
            },
        ) as response:
            text = response.read().decode()
        assert response.status_code == 200, text
        assert text.rstrip().endswith("data: [DONE]")
        assert "alpha" in text
