"""The official openai SDK, sync and async, against a live gateway on the sim engine.

One gateway serves the whole module (starting one per test would double the run time):
each test finds its usage records by request id or by a key of its own.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import LiveGateway, gateway_config, live_gateway
from tokenmill.usage import UsageRecord

PROMPT: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Tell me about the gateway."}
]
EMBED_DIMENSIONS = 16


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """A live gateway with the sim models only, shared by the module's tests."""
    home = tmp_path_factory.mktemp("sdk")
    with live_gateway(f"sqlite:///{home / 'tokenmill.db'}", gateway_config(None), home) as live:
        yield live


@pytest.fixture(scope="module")
def key(gateway: LiveGateway) -> str:
    return gateway.new_key()[0]


def sdk(gateway: LiveGateway, key: str) -> OpenAI:
    return OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=10)


def async_sdk(gateway: LiveGateway, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=10)


def record_of(gateway: LiveGateway, request_id: str) -> UsageRecord:
    return gateway.record(request_id)


def records_of(gateway: LiveGateway, key_id: str | None = None) -> list[UsageRecord]:
    return gateway.records(key_id)


def chat_text(client: OpenAI, **options: Any) -> tuple[str, str | None]:
    """(text, finish_reason) of one non-streamed sim-chat answer."""
    answer = client.chat.completions.create(model="sim-chat", messages=PROMPT, **options)
    assert len(answer.choices) == 1
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content is not None
    return choice.message.content, choice.finish_reason


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vector))


class TestChat:
    def test_the_same_prompt_twice_gives_the_same_text(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """The sim engine is deterministic: one prompt, one answer, every time."""
        client = sdk(gateway, key)
        first, _ = chat_text(client, max_tokens=30)
        second, _ = chat_text(client, max_tokens=30)
        assert first
        assert first == second

    def test_an_answer_that_reaches_max_tokens_finishes_with_length(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """An answer cut by max_tokens has exactly that many tokens and finish_reason length."""
        answer = sdk(gateway, key).chat.completions.create(
            model="sim-chat", messages=PROMPT, max_tokens=7
        )
        assert answer.choices[0].finish_reason == "length"
        assert answer.usage is not None
        assert answer.usage.completion_tokens == 7
        assert answer.usage.total_tokens == answer.usage.prompt_tokens + 7
        assert answer.object == "chat.completion"
        assert answer.model == "sim-chat"

    def test_max_completion_tokens_caps_the_answer_like_max_tokens(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """max_completion_tokens caps the answer and gives the same text as max_tokens."""
        client = sdk(gateway, key)
        answer = client.chat.completions.create(
            model="sim-chat", messages=PROMPT, max_completion_tokens=5
        )
        assert answer.usage is not None
        assert answer.usage.completion_tokens == 5
        assert answer.choices[0].finish_reason == "length"
        assert answer.choices[0].message.content == chat_text(client, max_tokens=5)[0]

    def test_a_stop_sequence_cuts_the_text_before_it(self, gateway: LiveGateway, key: str) -> None:
        """The text ends just before the stop sequence and finish_reason is stop."""
        client = sdk(gateway, key)
        full, _ = chat_text(client, max_tokens=20)
        stop = " " + full.split(" ")[5]
        expected = full[: full.find(stop)]
        assert expected and len(expected) < len(full)
        text, finish = chat_text(client, max_tokens=20, stop=stop)
        assert text == expected
        assert finish == "stop"

    def test_the_usage_of_an_answer_equals_its_usage_record(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """The usage the client is billed by is the usage the store keeps."""
        raw = sdk(gateway, key).chat.completions.with_raw_response.create(
            model="sim-chat", messages=PROMPT, max_tokens=9
        )
        answer = raw.parse()
        record = record_of(gateway, raw.headers["x-request-id"])
        assert answer.usage is not None
        assert record.completion_tokens == answer.usage.completion_tokens == 9
        assert record.prompt_tokens == answer.usage.prompt_tokens
        assert record.status == "ok"
        assert record.http_status == 200
        assert record.model == "sim-chat"
        assert record.endpoint == "chat"


class TestChatStream:
    def test_a_streamed_answer_has_the_text_of_the_non_streamed_one(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """Joining the deltas gives the non-streamed text; the last choice says length."""
        client = sdk(gateway, key)
        expected, _ = chat_text(client, max_tokens=12)
        stream = client.chat.completions.create(
            model="sim-chat", messages=PROMPT, max_tokens=12, stream=True
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == expected
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert finishes[-1] == "length"
        assert all(finish is None for finish in finishes[:-1])
        assert all(c.object == "chat.completion.chunk" for c in chunks)

    def test_a_streamed_answer_stops_at_the_stop_sequence(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """A stream with a stop sequence ends before it with finish_reason stop."""
        client = sdk(gateway, key)
        full, _ = chat_text(client, max_tokens=20)
        stop = " " + full.split(" ")[4]
        stream = client.chat.completions.create(
            model="sim-chat", messages=PROMPT, max_tokens=20, stop=[stop], stream=True
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == full[: full.find(stop)]
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"

    def test_include_usage_adds_a_last_chunk_whose_usage_equals_the_record(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """With include_usage the last chunk has no choices and the record's counts."""
        stream = sdk(gateway, key).chat.completions.create(
            model="sim-chat",
            messages=PROMPT,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        last = chunks[-1]
        assert last.choices == []
        assert last.usage is not None
        assert all(c.usage is None for c in chunks[:-1])
        record = record_of(gateway, stream.response.headers["x-request-id"])
        assert record.completion_tokens == last.usage.completion_tokens == 6
        assert record.prompt_tokens == last.usage.prompt_tokens
        assert last.usage.total_tokens == record.prompt_tokens + record.completion_tokens
        assert not record.estimated
        assert record.status == "ok"

    def test_without_include_usage_no_chunk_carries_usage(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """A client that did not ask for usage never sees a usage chunk, yet is metered."""
        stream = sdk(gateway, key).chat.completions.create(
            model="sim-chat", messages=PROMPT, max_tokens=6, stream=True
        )
        chunks = list(stream)
        assert chunks
        assert all(c.usage is None for c in chunks)
        assert all(c.choices for c in chunks)
        record = record_of(gateway, stream.response.headers["x-request-id"])
        assert record.completion_tokens == 6
        assert record.status == "ok"


class TestAsyncClient:
    def test_the_async_client_gets_the_answer_of_the_sync_client(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """AsyncOpenAI and OpenAI get the same deterministic text."""
        expected, _ = chat_text(sdk(gateway, key), max_tokens=10)

        async def ask() -> str | None:
            async with async_sdk(gateway, key) as client:
                answer = await client.chat.completions.create(
                    model="sim-chat", messages=PROMPT, max_tokens=10
                )
                return answer.choices[0].message.content

        assert asyncio.run(ask()) == expected

    def test_the_async_client_streams_with_a_usage_chunk(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """An async stream joins to the sync text and ends with the record's usage."""
        expected, _ = chat_text(sdk(gateway, key), max_tokens=8)

        async def stream() -> tuple[str, Any, str]:
            async with async_sdk(gateway, key) as client:
                chunks = await client.chat.completions.create(
                    model="sim-chat",
                    messages=PROMPT,
                    max_tokens=8,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                parts = [chunk async for chunk in chunks]
                text = "".join(c.choices[0].delta.content or "" for c in parts if c.choices)
                return text, parts[-1].usage, chunks.response.headers["x-request-id"]

        text, usage, request_id = asyncio.run(stream())
        assert text == expected
        assert usage is not None
        record = record_of(gateway, request_id)
        assert usage.completion_tokens == record.completion_tokens == 8
        assert usage.prompt_tokens == record.prompt_tokens

    def test_the_async_client_raises_the_sdk_error_types(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """Errors reach an async client as the SDK's own exception classes."""

        async def fail() -> list[type[Exception]]:
            caught: list[type[Exception]] = []
            async with async_sdk(gateway, key) as client:
                for model, n in (("no-such-model", 1), ("sim-chat", 2)):
                    try:
                        await client.chat.completions.create(
                            model=model, messages=PROMPT, max_tokens=3, n=n
                        )
                    except openai.APIStatusError as error:
                        caught.append(type(error))
            async with async_sdk(gateway, "tm-not-a-key") as client:
                try:
                    await client.models.list()
                except openai.APIStatusError as error:
                    caught.append(type(error))
            return caught

        assert asyncio.run(fail()) == [
            openai.NotFoundError,
            openai.BadRequestError,
            openai.AuthenticationError,
        ]


class TestCompletions:
    def test_a_completion_answers_with_text_and_usage(self, gateway: LiveGateway, key: str) -> None:
        """A legacy completion answers text_completion with usage equal to its record."""
        raw = sdk(gateway, key).completions.with_raw_response.create(
            model="sim-chat", prompt="Once upon a time", max_tokens=8
        )
        answer = raw.parse()
        assert answer.object == "text_completion"
        assert answer.choices[0].text
        assert answer.choices[0].finish_reason == "length"
        assert answer.usage is not None
        record = record_of(gateway, raw.headers["x-request-id"])
        assert record.endpoint == "completions"
        assert record.completion_tokens == answer.usage.completion_tokens == 8
        assert record.prompt_tokens == answer.usage.prompt_tokens

    def test_a_streamed_completion_has_the_text_of_the_non_streamed_one(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """Joining a completion stream gives the non-streamed text, then a usage chunk."""
        client = sdk(gateway, key)
        expected = client.completions.create(
            model="sim-chat", prompt="Once upon a time", max_tokens=8
        )
        stream = client.completions.create(
            model="sim-chat",
            prompt="Once upon a time",
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        assert text == expected.choices[0].text
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 8


class TestEmbeddings:
    def test_the_sdk_default_base64_decodes_to_unit_vectors_of_the_configured_size(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """The SDK asks for base64 by default; the vectors decode to 16 floats of length 1."""
        raw = sdk(gateway, key).embeddings.with_raw_response.create(
            model="sim-embed", input=["first text", "second text"]
        )
        wire = raw.http_response.json()
        assert all(isinstance(item["embedding"], str) for item in wire["data"])
        answer = raw.parse()
        assert [item.index for item in answer.data] == [0, 1]
        for item in answer.data:
            assert len(item.embedding) == EMBED_DIMENSIONS
            assert norm(item.embedding) == pytest.approx(1.0, abs=1e-5)
        assert answer.data[0].embedding != answer.data[1].embedding
        assert answer.usage.prompt_tokens == 4

    def test_float_embeddings_equal_the_base64_ones(self, gateway: LiveGateway, key: str) -> None:
        """encoding_format float gives the same unit vector as base64, up to float32."""
        client = sdk(gateway, key)
        floats = client.embeddings.create(
            model="sim-embed", input="same text", encoding_format="float"
        )
        packed = client.embeddings.create(model="sim-embed", input="same text")
        vector = floats.data[0].embedding
        assert len(vector) == EMBED_DIMENSIONS
        assert norm(vector) == pytest.approx(1.0, abs=1e-9)
        assert packed.data[0].embedding == pytest.approx(vector, abs=1e-6)

    def test_the_same_input_gives_the_same_vector(self, gateway: LiveGateway, key: str) -> None:
        """Embeddings are deterministic: one input, one vector, on every call."""
        client = sdk(gateway, key)
        first = client.embeddings.create(model="sim-embed", input="x", encoding_format="float")
        second = client.embeddings.create(model="sim-embed", input="x", encoding_format="float")
        other = client.embeddings.create(model="sim-embed", input="y", encoding_format="float")
        assert first.data[0].embedding == second.data[0].embedding
        assert first.data[0].embedding != other.data[0].embedding


class TestModels:
    def test_the_list_shows_every_configured_model(self, gateway: LiveGateway, key: str) -> None:
        """A key without an allow-list sees every model of the configuration."""
        ids = {model.id for model in sdk(gateway, key).models.list()}
        assert ids == {"sim-chat", "sim-embed"}

    def test_a_key_limited_to_one_model_sees_only_that_model(self, gateway: LiveGateway) -> None:
        """A key made with models=[sim-chat] lists and retrieves sim-chat alone."""
        secret, _, _ = gateway.new_key(models=["sim-chat"])
        client = sdk(gateway, secret)
        assert [model.id for model in client.models.list()] == ["sim-chat"]
        assert client.models.retrieve("sim-chat").id == "sim-chat"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("sim-embed")

    def test_retrieve_of_an_unknown_model_raises_not_found(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """Retrieving a model that does not exist is a 404 NotFoundError."""
        with pytest.raises(openai.NotFoundError) as caught:
            sdk(gateway, key).models.retrieve("no-such-model")
        assert caught.value.status_code == 404


class TestErrors:
    def test_a_bad_key_raises_authentication_error(self, gateway: LiveGateway) -> None:
        """A key the gateway does not know is a 401 AuthenticationError and leaves no record."""
        before = len(records_of(gateway))
        with pytest.raises(openai.AuthenticationError) as caught:
            chat_text(sdk(gateway, "tm-not-a-real-key"), max_tokens=3)
        assert caught.value.status_code == 401
        assert len(records_of(gateway)) == before

    def test_an_unknown_model_raises_not_found(self, gateway: LiveGateway, key: str) -> None:
        """A chat with a model that does not exist is a 404 NotFoundError naming the param."""
        with pytest.raises(openai.NotFoundError) as caught:
            sdk(gateway, key).chat.completions.create(
                model="no-such-model", messages=PROMPT, max_tokens=3
            )
        assert caught.value.param == "model"
        assert caught.value.code == "model_not_found"

    def test_n_of_two_raises_bad_request(self, gateway: LiveGateway) -> None:
        """Only n=1 is served: n=2 is a 400 BadRequestError on param n and leaves no record."""
        secret, key_id, _ = gateway.new_key()
        with pytest.raises(openai.BadRequestError) as caught:
            chat_text(sdk(gateway, secret), max_tokens=3, n=2)
        assert caught.value.param == "n"
        assert records_of(gateway, key_id) == []

    def test_a_model_outside_the_allow_list_raises_not_found(self, gateway: LiveGateway) -> None:
        """A key limited to sim-embed may not chat with sim-chat: the unknown model's 404
        NotFoundError, which does not tell the key that sim-chat exists."""
        secret, _, _ = gateway.new_key(models=["sim-embed"])
        with pytest.raises(openai.NotFoundError) as caught:
            chat_text(sdk(gateway, secret), max_tokens=3)
        assert caught.value.status_code == 404
        assert caught.value.code == "model_not_found"

    def test_a_body_over_the_limit_raises_status_413(self, sqlite_url: str, tmp_path: Path) -> None:
        """A request body larger than request_body_bytes_max is an APIStatusError 413."""
        config = gateway_config(None, request_body_bytes_max=2048)
        with live_gateway(sqlite_url, config, tmp_path) as small:
            secret, _, _ = small.new_key()
            client = sdk(small, secret)
            with pytest.raises(openai.APIStatusError) as caught:
                client.chat.completions.create(
                    model="sim-chat",
                    messages=[{"role": "user", "content": "word " * 1000}],
                    max_tokens=3,
                )
            assert caught.value.status_code == 413
            assert caught.value.code == "request_too_large"
            assert caught.value.response.headers["x-request-id"].startswith("req_")
            text, _ = chat_text(client, max_tokens=3)
            assert text


class TestRequestId:
    def test_every_answer_carries_the_request_id_of_its_record(self, gateway: LiveGateway) -> None:
        """x-request-id is unique per answer and names the answer's usage record."""
        secret, key_id, _ = gateway.new_key()
        client = sdk(gateway, secret)
        ids = []
        for _ in range(3):
            raw = client.chat.completions.with_raw_response.create(
                model="sim-chat", messages=PROMPT, max_tokens=2
            )
            ids.append(raw.headers["x-request-id"])
            assert record_of(gateway, ids[-1]).request_id == ids[-1]
            assert raw.parse().id.endswith(ids[-1])
        assert len(set(ids)) == 3
        assert {record.request_id for record in records_of(gateway, key_id)} == set(ids)

    def test_a_stream_and_an_error_carry_a_request_id_too(
        self, gateway: LiveGateway, key: str
    ) -> None:
        """Streams carry x-request-id (their record's); refused requests carry one as well."""
        client = sdk(gateway, key)
        stream = client.chat.completions.create(
            model="sim-chat", messages=PROMPT, max_tokens=2, stream=True
        )
        list(stream)
        request_id = stream.response.headers["x-request-id"]
        assert record_of(gateway, request_id).request_id == request_id
        with pytest.raises(openai.BadRequestError) as caught:
            chat_text(client, max_tokens=3, n=2)
        refused_id = caught.value.response.headers["x-request-id"]
        assert refused_id.startswith("req_")
        assert refused_id != request_id
