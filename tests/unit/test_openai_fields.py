"""Validating OpenAI request bodies (the chat, completions and embeddings surfaces): pure,
no I/O."""

from __future__ import annotations

import copy
import functools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import optional_token_limits
from tokenmill.access.keys import Grant, may_use_model, unknown_model
from tokenmill.config import Limits, ModelConfig
from tokenmill.errors import InvalidRequest, NotFound
from tokenmill.surfaces.chat_request import parse_chat
from tokenmill.surfaces.completions import parse_completion
from tokenmill.surfaces.embeddings import parse_embedding
from tokenmill.surfaces.openai_fields import LOGIT_BIAS_COUNT_MAX, decode_json

HELLO = [{"role": "user", "content": "hello"}]
CONTEXT = 4096


def models(output_tokens_max: int = 512, context_tokens: int = CONTEXT) -> dict[str, ModelConfig]:
    return {
        "chat": ModelConfig(
            deployments=["d"], output_tokens_max=output_tokens_max, context_tokens=context_tokens
        ),
        "embed": ModelConfig(kind="embedding", deployments=["e"]),
    }


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": HELLO, **fields}


def cap_of(body: dict[str, Any], model_max: int = 512, limits_max: int = 32768) -> int | None:
    limits = Limits(output_tokens_max=limits_max)
    return parse_chat(body, models(model_max), limits).output_tokens_max


class TestOutputCap:
    @given(
        max_tokens=optional_token_limits(CONTEXT),
        max_completion_tokens=optional_token_limits(CONTEXT),
        model_max=st.integers(min_value=1, max_value=10_000),
        limits_max=st.integers(min_value=1, max_value=10_000),
    )
    def test_the_cap_is_the_smallest_of_every_limit_given(
        self,
        max_tokens: int | None,
        max_completion_tokens: int | None,
        model_max: int,
        limits_max: int,
    ) -> None:
        """The cap is min(max_tokens, max_completion_tokens, the model's, the system's)."""
        body = chat()
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if max_completion_tokens is not None:
            body["max_completion_tokens"] = max_completion_tokens
        given_values = [v for v in (max_tokens, max_completion_tokens) if v is not None]
        expected = min([model_max, limits_max, *given_values])
        assert cap_of(body, model_max, limits_max) == expected

    def test_the_request_wins_when_it_asks_for_fewest(self) -> None:
        """max_tokens 7 under a model limit of 512 and a system limit of 1000 gives 7."""
        assert cap_of(chat(max_tokens=7), 512, 1000) == 7

    def test_the_model_wins_when_its_limit_is_smallest(self) -> None:
        """max_tokens 300 on a model limited to 100 gives 100."""
        assert cap_of(chat(max_tokens=300), 100, 1000) == 100

    def test_the_system_limit_wins_when_it_is_smallest(self) -> None:
        """max_tokens 300 under Limits.output_tokens_max 50 gives 50."""
        assert cap_of(chat(max_tokens=300), 512, 50) == 50

    def test_without_a_request_limit_the_cap_is_the_smaller_configured_one(self) -> None:
        """No max_tokens: the model's or the system's limit, whichever is smaller."""
        assert cap_of(chat(), 512, 1000) == 512
        assert cap_of(chat(), 512, 20) == 20

    def test_max_completion_tokens_and_max_tokens_together_give_the_smaller(self) -> None:
        """Both fields count; neither one overrides the other."""
        assert cap_of(chat(max_tokens=9, max_completion_tokens=30)) == 9
        assert cap_of(chat(max_tokens=30, max_completion_tokens=9)) == 9

    def test_a_completion_is_capped_the_same_way(self) -> None:
        """/v1/completions uses the same rule."""
        body = {"model": "chat", "prompt": "hi", "max_tokens": 300}
        parsed = parse_completion(body, models(100), Limits(output_tokens_max=1000))
        assert parsed.output_tokens_max == 100

    def test_an_embedding_has_no_cap(self) -> None:
        """Embeddings produce no tokens: no output cap."""
        parsed = parse_embedding({"model": "embed", "input": "hi"}, models(), Limits())
        assert parsed.output_tokens_max is None

    def test_a_request_up_to_the_context_is_accepted_and_capped(self) -> None:
        """max_tokens equal to the context is valid (then capped by the limits)."""
        assert cap_of(chat(max_tokens=CONTEXT)) == 512

    @pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens"])
    @pytest.mark.parametrize("value", [0, -1, CONTEXT + 1, "10", 1.5, True, [5]])
    def test_a_bad_request_limit_is_refused_naming_its_field(self, name: str, value: Any) -> None:
        """Zero, negative, over the context, or not an integer: InvalidRequest with param."""
        with pytest.raises(InvalidRequest) as caught:
            cap_of(chat(**{name: value}))
        assert caught.value.param == name


class TestUnknownFields:
    EXTRAS: dict[str, Any] = {
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "response_format": {"type": "json_object"},
        "logit_bias": {"50256": -100},
        "x_vendor_option": [1, {"a": None}],
    }

    def test_a_chat_keeps_every_field_it_does_not_know(self) -> None:
        """Unknown fields are in body, unchanged, next to the known ones."""
        body = chat(max_tokens=999, stream=False, **self.EXTRAS)
        original = copy.deepcopy(body)
        parsed = parse_chat(body, models(), Limits())
        assert parsed.body == original
        assert parsed.body["max_tokens"] == 999
        assert parsed.output_tokens_max == 512

    def test_a_completion_keeps_every_field_it_does_not_know(self) -> None:
        """Unknown fields of /v1/completions are kept."""
        body = {"model": "chat", "prompt": "hi", "suffix": "!", **self.EXTRAS}
        assert parse_completion(body, models(), Limits()).body == body

    def test_an_embedding_keeps_every_field_it_does_not_know(self) -> None:
        """Unknown fields of /v1/embeddings are kept."""
        body = {"model": "embed", "input": ["a", "b"], "x_vendor_option": {"k": 1}}
        assert parse_embedding(body, models(), Limits()).body == body


class TestDecodeJson:
    @pytest.mark.parametrize(
        "raw", [b"", b"[]", b'"text"', b"3", b"null", b"{", b"\xff", b'{"a": NaN}']
    )
    def test_anything_but_a_json_object_is_invalid(self, raw: bytes) -> None:
        """Empty, not JSON, or JSON but not an object: InvalidRequest."""
        with pytest.raises(InvalidRequest):
            decode_json(raw)

    def test_an_object_is_decoded(self) -> None:
        """A JSON object comes back as a dict."""
        assert decode_json(b'{"model": "m", "n": 1}') == {"model": "m", "n": 1}


class TestParseChat:
    def test_a_plain_chat_is_parsed(self) -> None:
        """Model, endpoint and defaults of a minimal chat body."""
        parsed = parse_chat(chat(), models(), Limits())
        assert parsed.model == "chat"
        assert parsed.surface == "chat"
        assert parsed.stream is False
        assert parsed.include_usage is False
        assert parsed.stop == ()

    def test_stream_options_ask_for_usage(self) -> None:
        """stream with include_usage sets include_usage; stream alone does not."""
        assert parse_chat(chat(stream=True), models(), Limits()).include_usage is False
        asked = chat(stream=True, stream_options={"include_usage": True})
        parsed = parse_chat(asked, models(), Limits())
        assert parsed.stream
        assert parsed.include_usage

    def test_stop_is_a_tuple_of_strings(self) -> None:
        """A string stop is one entry; a list keeps its order."""
        assert parse_chat(chat(stop="END"), models(), Limits()).stop == ("END",)
        assert parse_chat(chat(stop=["a", "b"]), models(), Limits()).stop == ("a", "b")

    def test_stop_beyond_its_limit_is_refused(self) -> None:
        """More than Limits.stop_count_max entries is an InvalidRequest on 'stop'."""
        with pytest.raises(InvalidRequest) as caught:
            parse_chat(chat(stop=["a", "b", "c"]), models(), Limits(stop_count_max=2))
        assert caught.value.param == "stop"

    def test_messages_beyond_their_limit_are_refused(self) -> None:
        """More than Limits.messages_count_max messages is an InvalidRequest on 'messages'."""
        with pytest.raises(InvalidRequest) as caught:
            parse_chat(chat(messages=HELLO * 3), models(), Limits(messages_count_max=2))
        assert caught.value.param == "messages"

    def test_content_parts_and_tool_calls_are_valid(self) -> None:
        """Content as typed parts, and an assistant message with only tool calls, pass."""
        messages = [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "content": "42", "tool_call_id": "c1"},
        ]
        assert parse_chat(chat(messages=messages), models(), Limits()).model == "chat"

    @pytest.mark.parametrize(
        ("message", "param"),
        [
            pytest.param("hi", "messages.[0]", id="a-string"),
            pytest.param({"content": "hi"}, "messages.[0].role", id="no-role"),
            pytest.param({"role": "wizard", "content": "hi"}, "messages.[0].role", id="bad-role"),
            pytest.param({"role": ["user"], "content": "hi"}, "messages.[0].role", id="role-list"),
            pytest.param({"role": {"a": 1}, "content": "hi"}, "messages.[0].role", id="role-dict"),
            pytest.param({"role": "user"}, "messages.[0].content", id="no-content"),
            pytest.param({"role": "user", "content": 5}, "messages.[0].content", id="number"),
            pytest.param(
                {"role": "user", "content": [{"text": "x"}]},
                "messages.[0].content",
                id="part-without-type",
            ),
            pytest.param(
                {"role": "assistant", "content": None},
                "messages.[0].content",
                id="assistant-with-nothing",
            ),
        ],
    )
    def test_a_bad_message_is_refused_naming_it(self, message: Any, param: str) -> None:
        """Each malformed message is an InvalidRequest whose param points into it."""
        with pytest.raises(InvalidRequest) as caught:
            parse_chat(chat(messages=[message]), models(), Limits())
        assert caught.value.param == param

    def test_an_unknown_model_is_not_found(self) -> None:
        """An unknown model is NotFound, code model_not_found, its name cut to 200 chars."""
        with pytest.raises(NotFound) as caught:
            parse_chat(chat(model="m" * 1000), models(), Limits())
        assert caught.value.code == "model_not_found"
        assert caught.value.param == "model"
        assert len(caught.value.message) < 400

    def test_an_embedding_model_cannot_chat(self) -> None:
        """The model's kind must match the endpoint."""
        with pytest.raises(InvalidRequest) as caught:
            parse_chat(chat(model="embed"), models(), Limits())
        assert caught.value.param == "model"


class TestParseEmbedding:
    @pytest.mark.parametrize(
        "given_input",
        [
            pytest.param("hi", id="a-string"),
            pytest.param(["a", "b"], id="strings"),
            pytest.param([1, 2, 3], id="one-token-array"),
            pytest.param([[1, 2], [3]], id="token-arrays"),
        ],
    )
    def test_every_input_form_is_accepted(self, given_input: Any) -> None:
        """A string, strings, one token array or several are valid inputs."""
        body = {"model": "embed", "input": given_input}
        assert parse_embedding(body, models(), Limits()).surface == "embeddings"

    def test_inputs_beyond_their_limit_are_refused(self) -> None:
        """More than Limits.embedding_inputs_count_max inputs is refused on 'input'."""
        body = {"model": "embed", "input": ["a", "b", "c"]}
        with pytest.raises(InvalidRequest) as caught:
            parse_embedding(body, models(), Limits(embedding_inputs_count_max=2))
        assert caught.value.param == "input"

    def test_one_token_array_counts_as_one_input(self) -> None:
        """A single token array longer than the input limit is still one input."""
        body = {"model": "embed", "input": [1, 2, 3]}
        assert (
            parse_embedding(body, models(), Limits(embedding_inputs_count_max=1)).model == "embed"
        )

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("encoding_format", "hex"),
            ("dimensions", 0),
            ("dimensions", 65537),
            ("dimensions", True),
            ("user", 5),
        ],
    )
    def test_a_bad_option_is_refused_naming_it(self, field: str, value: Any) -> None:
        """encoding_format, dimensions and user are checked."""
        body = {"model": "embed", "input": "hi", field: value}
        with pytest.raises(InvalidRequest) as caught:
            parse_embedding(body, models(), Limits())
        assert caught.value.param == field


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": "chat", "prompt": "hi", **fields}


def refusal(parse: Any, body: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse(body, models(), Limits())
    return caught.value


TOKEN_BIASES = {str(token): -100 + token % 201 for token in range(LOGIT_BIAS_COUNT_MAX)}

# (field, value) pairs OpenAI's API reference refuses on /v1/chat/completions.
BAD_CHAT_FIELDS = [
    ("temperature", -0.1),
    ("temperature", 2.01),
    ("temperature", True),
    ("temperature", "1"),
    ("top_p", -0.01),
    ("top_p", 1.01),
    ("top_p", False),
    ("presence_penalty", -2.1),
    ("presence_penalty", 2.1),
    ("frequency_penalty", -3),
    ("frequency_penalty", 2.5),
    ("frequency_penalty", [0]),
    ("logit_bias", "50256:-100"),
    ("logit_bias", [50256]),
    ("logit_bias", {"abc": 1}),
    ("logit_bias", {"-1": 1}),
    ("logit_bias", {"1.5": 1}),
    ("logit_bias", {"": 1}),
    ("logit_bias", {"\u0661": 1}),  # an Arabic-Indic digit: a digit, not a token id
    ("logit_bias", {"99999999999": 1}),
    ("logit_bias", {"50256": 101}),
    ("logit_bias", {"50256": -100.5}),
    ("logit_bias", {"50256": True}),
    ("logit_bias", {"50256": "1"}),
    ("logit_bias", {**TOKEN_BIASES, "300": 1}),
    ("top_logprobs", -1),
    ("top_logprobs", 21),
    ("top_logprobs", True),
    ("top_logprobs", 1.0),
    ("logprobs", 1),
    ("logprobs", "true"),
    ("seed", 1.5),
    ("seed", True),
    ("seed", "7"),
    ("seed", 2**63),
    ("seed", -(2**63) - 1),
    ("n", 0),
    ("n", 129),
    ("n", True),
    ("n", 1.0),
    ("n", 2),
    ("user", 5),
    ("user", "u" * 257),
    ("safety_identifier", "s" * 65),
    ("metadata", "tag"),
    ("metadata", {"tag": 1}),
    ("metadata", {f"k{i}": "v" for i in range(17)}),
    ("metadata", {"k" * 65: "v"}),
    ("metadata", {"k": "v" * 513}),
    ("tools", {"type": "function"}),
    ("tools", ["lookup"]),
    ("tools", [{"type": "function"}] * 129),
    ("functions", [{"name": "f"}] * 129),
    ("tool_choice", 5),
    ("tool_choice", True),
    ("function_call", ["auto"]),
    ("response_format", "json_object"),
    ("store", "yes"),
    ("parallel_tool_calls", 1),
    ("service_tier", 5),
    ("reasoning_effort", 3),
    ("modalities", "text"),
    ("modalities", [1]),
    ("prediction", "text"),
]

# Values at the very edge of each documented range: OpenAI takes them, so must the gateway.
EDGE_CHAT_FIELDS = [
    {"temperature": 0, "top_p": 0, "presence_penalty": -2, "frequency_penalty": -2},
    {"temperature": 2.0, "top_p": 1.0, "presence_penalty": 2, "frequency_penalty": 2.0},
    {"logit_bias": TOKEN_BIASES},
    {"logit_bias": {"50256": -100, "0": 100, "1": 0.5}},
    {"logprobs": True, "top_logprobs": 0},
    {"logprobs": True, "top_logprobs": 20},
    {"seed": -(2**63)},
    {"seed": 2**63 - 1},
    {"n": 1, "user": "u" * 256, "safety_identifier": "s" * 64},
    {"metadata": {f"k{i:063}": "v" * 512 for i in range(16)}},
    {
        "tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(128)],
        "tool_choice": {"type": "function", "function": {"name": "f127"}},
    },
    {
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer"}},
        "store": False,
        "parallel_tool_calls": True,
    },
    {"modalities": ["text"], "service_tier": "flex", "reasoning_effort": "low"},
]


class TestOpenAIRanges:
    @pytest.mark.parametrize(("field", "value"), BAD_CHAT_FIELDS)
    def test_a_chat_field_out_of_openais_range_is_refused_naming_it(
        self, field: str, value: Any
    ) -> None:
        """Each value OpenAI documents as invalid is an InvalidRequest on that field."""
        assert refusal(parse_chat, chat(**{field: value})).param == field

    @pytest.mark.parametrize("fields", EDGE_CHAT_FIELDS)
    def test_a_chat_at_the_edges_of_every_range_is_accepted(self, fields: dict[str, Any]) -> None:
        """The inclusive ends of each range are valid, as in OpenAI's reference."""
        assert parse_chat(chat(**fields), models(), Limits()).model == "chat"

    def test_a_number_out_of_range_says_the_range_and_the_value(self) -> None:
        """The message gives the range and what was sent; the code says which end."""
        error = refusal(parse_chat, chat(temperature=3))
        assert error.message == "'temperature' must be between 0 and 2; it is 3."
        assert error.code == "decimal_above_max_value"
        assert refusal(parse_chat, chat(top_p=-1)).code == "decimal_below_min_value"
        assert refusal(parse_chat, chat(n=0)).code == "integer_below_min_value"
        assert refusal(parse_chat, chat(seed=2**63)).code == "integer_above_max_value"

    def test_a_boolean_is_never_taken_for_a_number(self) -> None:
        """true is not 1: a boolean in a numeric field is a type error, not a value."""
        for field in ("temperature", "top_p", "seed", "n", "top_logprobs", "max_tokens"):
            error = refusal(parse_chat, chat(**{field: True}))
            assert (error.param, error.code) == (field, "invalid_type")

    @pytest.mark.parametrize("logprobs", [None, False])
    def test_top_logprobs_needs_logprobs_true(self, logprobs: bool | None) -> None:
        """top_logprobs without logprobs true is refused on top_logprobs."""
        body = chat(top_logprobs=2) if logprobs is None else chat(top_logprobs=2, logprobs=False)
        error = refusal(parse_chat, body)
        assert error.param == "top_logprobs"
        assert "logprobs" in error.message

    def test_a_response_format_needs_a_string_type(self) -> None:
        """response_format must be an object whose type is a string; the param points at it."""
        assert refusal(parse_chat, chat(response_format={})).param == "response_format.type"
        body = chat(response_format={"type": 5})
        assert refusal(parse_chat, body).param == "response_format.type"

    def test_a_stream_option_of_the_wrong_type_is_refused_naming_it(self) -> None:
        """include_obfuscation, like include_usage, must be a boolean."""
        body = chat(stream=True, stream_options={"include_obfuscation": "yes"})
        assert refusal(parse_chat, body).param == "stream_options.include_obfuscation"

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("logprobs", -1),
            ("logprobs", 6),
            ("logprobs", True),
            ("best_of", -1),
            ("best_of", 21),
            ("best_of", True),
            ("best_of", 2),
            ("echo", "yes"),
            ("echo", True),
            ("suffix", 5),
            ("temperature", 2.5),
            ("n", 0),
            ("seed", 0.5),
            ("logit_bias", {"x": 1}),
            ("user", ["u"]),
        ],
    )
    def test_a_completion_field_out_of_openais_range_is_refused_naming_it(
        self, field: str, value: Any
    ) -> None:
        """/v1/completions checks its own fields (logprobs 0-5, best_of, echo, suffix) too."""
        assert refusal(parse_completion, completion(**{field: value})).param == field

    def test_a_completion_at_the_edges_of_its_ranges_is_accepted(self) -> None:
        """logprobs 0 and 5, best_of 1, echo false and a suffix are valid."""
        for fields in ({"logprobs": 0}, {"logprobs": 5, "best_of": 1, "echo": False}):
            body = completion(suffix="!", temperature=2, **fields)
            assert parse_completion(body, models(), Limits()).model == "chat"

    def test_an_embedding_user_over_its_length_is_refused(self) -> None:
        """user is bounded on /v1/embeddings as on the other endpoints."""
        body = {"model": "embed", "input": "hi", "user": "u" * 257}
        assert refusal(parse_embedding, body).param == "user"


def grant_for(*allowed: str) -> Grant:
    return Grant("key_1", "acct_1", frozenset(allowed), None, account_active=True)


class TestAllowList:
    @pytest.mark.parametrize(
        ("parse", "body"),
        [
            pytest.param(parse_chat, chat(), id="chat"),
            pytest.param(parse_completion, completion(), id="completions"),
            pytest.param(parse_embedding, {"model": "embed", "input": "hi"}, id="embeddings"),
        ],
    )
    def test_a_model_the_key_may_not_use_is_refused_like_an_unknown_one(
        self, parse: Any, body: dict[str, Any]
    ) -> None:
        """The same NotFound, byte for byte, as for a model that does not exist."""
        with pytest.raises(NotFound) as hidden:
            parse(
                body,
                models(),
                Limits(),
                may_use=functools.partial(may_use_model, grant_for("other")),
            )
        with pytest.raises(NotFound) as unknown:
            parse({**body, "model": "nope"}, {}, Limits())
        expected = unknown.value.to_body()
        expected["error"]["message"] = expected["error"]["message"].replace("nope", body["model"])
        assert hidden.value.to_body() == expected
        assert hidden.value.to_body() == unknown_model(body["model"]).to_body()

    def test_the_allow_list_is_checked_before_any_other_field(self) -> None:
        """A bad field on a hidden model still gets the 404, so the field cannot reveal it."""
        for body in (chat(temperature=9), chat(model="embed"), chat(messages=[])):
            with pytest.raises(NotFound):
                parse_chat(
                    body,
                    models(),
                    Limits(),
                    may_use=functools.partial(may_use_model, grant_for("other")),
                )

    def test_a_model_on_the_allow_list_is_parsed(self) -> None:
        """The control case: the listed model passes."""
        assert (
            parse_chat(
                chat(),
                models(),
                Limits(),
                may_use=functools.partial(may_use_model, grant_for("chat")),
            ).model
            == "chat"
        )
