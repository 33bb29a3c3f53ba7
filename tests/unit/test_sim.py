"""The sim engine: deterministic text, stop sequences, embeddings, continuous batching."""

from __future__ import annotations

import asyncio
import dataclasses
import math

import pytest

from tokenmill.config import DeploymentConfig
from tokenmill.economics import catalog, perf
from tokenmill.engines import sim_text
from tokenmill.engines.sim import SimScheduler, _Job, build_setup
from tokenmill.errors import ConfigurationError, InvalidRequest, Unavailable
from tokenmill.usage import count_text_tokens

SETUP = perf.Setup(
    gpu=catalog.gpu("h100-sxm"), gpu_count=1, model=catalog.model("llama-3.1-8b"), precision="fp8"
)


class TestText:
    def test_the_same_seed_gives_the_same_answer(self) -> None:
        """Answers are a function of the seed alone."""
        seed = sim_text.seed_of("m", "hello")
        assert sim_text.answer_tokens(seed, 100) == sim_text.answer_tokens(seed, 100)
        assert sim_text.answer_tokens(seed, 100) != sim_text.answer_tokens(seed + 1, 100)

    def test_answers_respect_the_cap_and_count_as_their_tokens(self) -> None:
        """At most count_max tokens, and the local tokenizer counts exactly that many."""
        for seed in range(50):
            tokens = sim_text.answer_tokens(seed, 30)
            assert 1 <= len(tokens) <= 30
            assert count_text_tokens("".join(tokens)) == len(tokens)

    def test_a_stop_sequence_cuts_the_text_before_it(self) -> None:
        """The text ends right before the first stop sequence, even mid-token."""
        tokens = ["The", " gateway", " serves", " tokens", "."]
        kept, stop = sim_text.cut_at_stop(tokens, ("tokens", "way ser"))
        assert stop == "way ser" and "".join(kept) == "The gate"
        kept, stop = sim_text.cut_at_stop(tokens, ("absent",))
        assert stop is None and kept == tokens

    def test_embeddings_are_deterministic_unit_vectors(self) -> None:
        """Length one, the declared dimension, the same for the same seed."""
        vector = sim_text.unit_vector(42, 64)
        assert len(vector) == 64
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-9)
        assert vector == sim_text.unit_vector(42, 64)


def _run_jobs(scheduler: SimScheduler, jobs: list[_Job]) -> list[list[str]]:
    async def consume(job: _Job) -> list[str]:
        out = []
        while (token := await job.out.get()) is not None:
            out.append(token)
        return out

    async def scenario() -> list[list[str]]:
        for job in jobs:
            scheduler.submit(job)
        results = await asyncio.gather(*(consume(job) for job in jobs))
        await scheduler.aclose()
        return list(results)

    return asyncio.run(scenario())


def _job(prompt: int, count: int) -> _Job:
    return _Job(
        prompt_tokens=prompt, tokens=[f" t{i}" for i in range(count)], finish_reason="length"
    )


class TestScheduler:
    def test_concurrent_requests_share_decode_steps(self) -> None:
        """Ten requests of ten tokens take about ten steps, not a hundred."""
        scheduler = SimScheduler(SETUP, time_scale=0, queue_count_max=100)
        results = _run_jobs(scheduler, [_job(10, 10) for _ in range(10)])
        assert all(len(tokens) == 10 for tokens in results)
        assert scheduler.steps_count <= 11

    def test_the_kv_cache_bounds_the_batch_and_the_rest_wait(self) -> None:
        """When only two requests fit in KV memory, four requests need two rounds of steps."""
        capacity = perf.kv_capacity_tokens(SETUP)
        size = capacity // 2 - 10
        scheduler = SimScheduler(SETUP, time_scale=0, queue_count_max=100)
        results = _run_jobs(scheduler, [_job(size - 5, 5) for _ in range(4)])
        assert all(len(tokens) == 5 for tokens in results)
        assert scheduler.steps_count >= 10

    def test_the_modeled_time_is_prefill_plus_the_decode_steps(self) -> None:
        """One request's modeled time is its prefill (which yields the first token) plus one
        decode step per later token."""
        scheduler = SimScheduler(SETUP, time_scale=0, queue_count_max=100)
        _run_jobs(scheduler, [_job(100, 3)])
        expected = perf.prefill_time_s(SETUP, 100) + sum(
            perf.decode_step_time_s(SETUP, 1, 100 + emitted) for emitted in (1, 2)
        )
        assert scheduler.modeled_s == pytest.approx(expected)

    def test_a_request_larger_than_the_kv_cache_is_refused(self) -> None:
        """A prompt plus cap beyond the KV capacity is a 400, not a queue that never drains."""
        scheduler = SimScheduler(SETUP, time_scale=0, queue_count_max=100)
        with pytest.raises(InvalidRequest):
            scheduler.submit(_job(perf.kv_capacity_tokens(SETUP), 1))

    def test_a_full_queue_answers_unavailable(self) -> None:
        """Past queue_count_max waiting requests, submit raises Unavailable."""

        async def scenario() -> None:
            scheduler = SimScheduler(SETUP, time_scale=0, queue_count_max=2)
            scheduler.submit(_job(1, 1))
            scheduler.submit(_job(1, 1))
            with pytest.raises(Unavailable):
                scheduler.submit(_job(1, 1))
            await scheduler.aclose()

        asyncio.run(scenario())

    def test_a_cancelled_request_leaves_the_batch(self) -> None:
        """A job marked cancelled gets no more tokens and frees its place."""

        async def scenario() -> int:
            scheduler = SimScheduler(SETUP, time_scale=0, queue_count_max=10)
            job = _job(1, 1000)
            scheduler.submit(job)
            await job.out.get()
            job.cancelled = True
            await asyncio.sleep(0.01)
            emitted = job.emitted
            await asyncio.sleep(0.01)
            assert job.emitted == emitted
            await scheduler.aclose()
            return emitted

        assert asyncio.run(scenario()) < 1000


class TestSetup:
    def test_a_model_that_does_not_fit_is_a_configuration_error(self) -> None:
        """70B in bf16 on one H100 is refused at start, naming the deployment."""
        config = DeploymentConfig(engine="sim", model="llama-3.1-70b", gpu="h100-sxm")
        with pytest.raises(ConfigurationError, match="big-one"):
            build_setup("big-one", config)

    def test_an_unknown_gpu_names_the_field(self) -> None:
        """An unknown GPU id is a configuration error about deployments.<name>.gpu."""
        config = DeploymentConfig(engine="sim", model="llama-3.1-8b", gpu="tpu-v9")
        with pytest.raises(ConfigurationError, match=r"deployments\.d\.gpu"):
            build_setup("d", config)

    def test_the_setup_carries_the_configured_efficiencies(self) -> None:
        """Efficiency factors from the configuration reach the performance model."""
        config = DeploymentConfig(
            engine="sim", model="llama-3.1-8b", gpu="h100-sxm", efficiency_memory_ratio=0.35
        )
        setup = build_setup("d", config)
        assert setup.efficiency_memory_ratio == 0.35
        slower = perf.decode_step_time_s(setup, 1, 10)
        faster = perf.decode_step_time_s(
            dataclasses.replace(setup, efficiency_memory_ratio=0.7), 1, 10
        )
        assert slower > faster
