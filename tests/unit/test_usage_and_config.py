"""Local token counts, reported usage, and configuration validation."""

from __future__ import annotations

import pytest

from tokenmill.config import load_config, parse_config
from tokenmill.errors import ConfigurationError
from tokenmill.usage import Meter, TokenCounts, count_chat_prompt_tokens, parse_usage


class TestUsage:
    def test_the_last_reported_usage_wins_never_a_sum(self) -> None:
        """Running totals replace each other."""
        meter = Meter()
        for done in range(1, 6):
            meter.report(TokenCounts(10, done))
        assert meter.counts() == (TokenCounts(10, 5), False)

    def test_without_reported_usage_the_local_count_is_marked_estimated(self) -> None:
        """No usage from the engine: the estimates, flagged."""
        meter = Meter(prompt_tokens_estimate=7, completion_tokens_estimate=3)
        assert meter.counts() == (TokenCounts(7, 3), True)

    @pytest.mark.parametrize(
        "usage",
        [
            None,
            "x",
            {},
            {"prompt_tokens": -1},
            {"prompt_tokens": 1.5},
            {"prompt_tokens": True},
            {"prompt_tokens": 3, "completion_tokens": "4"},
        ],
    )
    def test_malformed_usage_is_ignored(self, usage: object) -> None:
        """Anything but non-negative integer counts is no usage at all."""
        assert parse_usage(usage) is None

    def test_cached_tokens_come_from_the_prompt_details(self) -> None:
        """prompt_tokens_details.cached_tokens is kept."""
        usage = {
            "prompt_tokens": 9,
            "completion_tokens": 2,
            "prompt_tokens_details": {"cached_tokens": 4},
        }
        assert parse_usage(usage) == TokenCounts(9, 2, 4)

    def test_chat_prompts_count_words_plus_template_overhead(self) -> None:
        """Two messages of two words: 4 words + 2 x 4 per message + 3 for the reply."""
        messages = [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello there"}]},
        ]
        assert count_chat_prompt_tokens(messages) == 4 + 8 + 3


class TestConfig:
    def test_the_built_in_default_is_valid_and_simulated(self) -> None:
        """The shipped default has a chat model and an embedding model on sim."""
        config = load_config(None)
        kinds = {model.kind for model in config.models.values()}
        assert kinds == {"chat", "embedding"}
        assert all(engine.kind == "sim" for engine in config.engines.values())

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            (lambda c: c["deployments"]["d"].update(gpu_count=0), "deployments.d.gpu_count"),
            (lambda c: c["deployments"]["d"].update(engine="nope"), "deployments.d.engine"),
            (lambda c: c["models"]["m"].update(deployments=["nope"]), "models.m.deployments"),
            (lambda c: c["models"]["m"].update(colour="red"), "models.m.colour"),
            (lambda c: c["engines"]["sim"].update(time_scale=-1), "engines.sim.time_scale"),
            (
                lambda c: c.update(limits={"request_body_bytes_max": 1}),
                "limits.request_body_bytes_max",
            ),
            (
                lambda c: c["models"]["m"].update(
                    price={"input": "1", "cache_write_input": "0.0000000001"}
                ),
                "models.m.price.cache_write_input",
            ),
        ],
    )
    def test_errors_name_the_bad_field(self, change, field: str) -> None:  # type: ignore[no-untyped-def]
        """Each mistake is reported with the dotted path of the field."""
        config = {
            "engines": {"sim": {"kind": "sim"}},
            "deployments": {"d": {"engine": "sim", "model": "llama-3.1-8b", "gpu": "h100-sxm"}},
            "models": {"m": {"deployments": ["d"]}},
        }
        change(config)
        with pytest.raises(ConfigurationError) as raised:
            parse_config(config)
        assert field in raised.value.message

    def test_a_missing_file_is_a_clear_error(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """A path that does not exist says so."""
        with pytest.raises(ConfigurationError, match="cannot read"):
            load_config(tmp_path / "absent.yaml")


class TestStreamEvents:
    @pytest.mark.parametrize(
        ("payload", "carries"),
        [
            (b'{"choices":[{"delta":{"content":"Hi"}}]}', True),
            (b'{"choices":[{"delta":{"role":"assistant","content":""}}]}', False),
            (b'{"choices":[{"delta": {"content": "Hi"}}]}', True),
            (b'{"choices":[{"delta": {"content": ""}}]}', False),
            (b'{"choices":[{"text":"x","index":0}]}', True),
            (b'{"choices":[{"text":""}]}', False),
            (b'{"choices":[],"usage":{"prompt_tokens":1}}', False),
            (b'{"choices":[{"delta":{"content":null}}]}', False),
        ],
    )
    def test_an_event_counts_as_a_token_only_when_it_carries_text(
        self, payload: bytes, carries: bool
    ) -> None:
        """Compact and spaced JSON alike: empty or missing content is no token."""
        from tokenmill.engines.openai_compat import _carries_text

        assert _carries_text(payload) is carries
