"""The ``sim`` engine: a simulated GPU deployment that answers at a performance model's pace.

Each deployment runs one scheduler task doing continuous batching: every step admits waiting
requests while their KV cache fits (prompt plus output cap), prefills them (compute-bound),
and runs one decode step for the whole batch (bandwidth-bound); each running request gets
one token per step. Step times come from ``tokenmill.economics.perf``, scaled by
``time_scale`` (1 = real time, 0 = instant). Text and usage are deterministic.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson

from tokenmill.config import DeploymentConfig
from tokenmill.economics import catalog, perf
from tokenmill.engines import sim_text
from tokenmill.engines.base import EngineCall
from tokenmill.engines.sim_answers import (
    Piece,
    SimAnswer,
    logprob_of,
    plan_answer,
    prompt_tokens_of,
    refuse_unsupported,
)
from tokenmill.errors import ConfigurationError, InvalidRequest, TokenmillError, Unavailable
from tokenmill.neutral import (
    Answer,
    EmbeddingsAnswer,
    Finish,
    ReasoningDelta,
    ReasoningPart,
    StreamPart,
    TextDelta,
    TextPart,
    TokenLogprob,
    ToolCallDelta,
    ToolCallPart,
    UsageReport,
    prompt_tokens_estimate,
)
from tokenmill.usage import (
    TokenCounts,
    count_chat_prompt_tokens,
    count_embedding_tokens,
    count_prompt_tokens,
    embedding_inputs,
)

CONVERSATION_SURFACES = frozenset({"messages", "responses"})  # prompts as neutral messages


@dataclass(eq=False)
class _Job:
    prompt_tokens: int
    tokens: list[Piece]
    finish_reason: str
    output_tokens_max: int = 0  # the request's cap: what it could use at most
    out: asyncio.Queue[Piece | None] = field(default_factory=asyncio.Queue)
    emitted: int = 0
    cancelled: bool = False

    @property
    def kv_tokens_reserved(self) -> int:
        """KV the request will occupy: its prompt and the tokens it will produce (paged
        attention allocates as tokens come, so a short answer holds no room for its cap)."""
        return self.prompt_tokens + len(self.tokens)

    @property
    def kv_tokens_worst(self) -> int:
        return self.prompt_tokens + max(self.output_tokens_max, len(self.tokens))


class SimScheduler:
    """Continuous batching over one simulated deployment."""

    def __init__(self, setup: perf.Setup, *, time_scale: float, queue_count_max: int) -> None:
        self._setup = setup
        self._time_scale = time_scale
        self._queue_count_max = queue_count_max
        self.kv_capacity_tokens = perf.kv_capacity_tokens(setup)
        assert self.kv_capacity_tokens > 0
        self._waiting: deque[_Job] = deque()
        self._running: list[_Job] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.steps_count = 0
        self.modeled_s = 0.0  # the GPU time the model says all steps so far took

    @property
    def running_count(self) -> int:
        return len(self._running)

    def submit(self, job: _Job, cap_param: str = "max_tokens") -> None:
        """Queue ``job``; a 400 naming ``cap_param`` (the request's cap field) if it could
        never fit."""
        if job.kv_tokens_worst > self.kv_capacity_tokens:
            raise InvalidRequest(
                f"prompt plus {cap_param} ({job.kv_tokens_worst} tokens) exceed what this"
                f" deployment's KV cache holds ({self.kv_capacity_tokens} tokens)",
                param=cap_param,
            )
        if len(self._waiting) >= self._queue_count_max:
            raise Unavailable("the simulated deployment is at capacity; retry shortly")
        self._waiting.append(job)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sim")
        self._wake.set()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _admit(self) -> list[_Job]:
        used = sum(job.kv_tokens_reserved for job in self._running)
        admitted: list[_Job] = []
        room = perf.batch_limit(self._setup) - len(self._running)
        while self._waiting and len(admitted) < room:
            job = self._waiting[0]
            if job.cancelled:
                self._waiting.popleft()
                continue
            if used + job.kv_tokens_reserved > self.kv_capacity_tokens:
                break
            self._waiting.popleft()
            used += job.kv_tokens_reserved
            admitted.append(job)
        assert used <= self.kv_capacity_tokens
        return admitted

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            self._running = [job for job in self._running if not job.cancelled]
            if not self._running and not self._waiting:
                self._wake.clear()
                await self._wake.wait()
                deadline = loop.time()
                continue
            decoding = self._running
            admitted = self._admit()
            step_s = self._step_s(decoding, admitted)
            self._running = decoding + admitted
            deadline = max(deadline, loop.time() - 0.05) + step_s * self._time_scale
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            self.steps_count += 1
            self.modeled_s += step_s
            for job in self._running:
                self._emit(job)
            self._running = [
                job for job in self._running if job.emitted < len(job.tokens) and not job.cancelled
            ]

    def _step_s(self, decoding: list[_Job], admitted: list[_Job]) -> float:
        """One step: a decode pass for the running requests, with the admitted prompts riding
        in it at their marginal cost; on an idle replica the first prompt's pass reads the
        weights itself. Each prompt's prefill yields its first token."""
        prompts = [job.prompt_tokens for job in admitted]
        if decoding:
            kv_total = sum(job.prompt_tokens + job.emitted for job in decoding)
            step_s = perf.decode_step_time_s(self._setup, len(decoding), kv_total)
        elif prompts:
            step_s = perf.prefill_time_s(self._setup, prompts.pop(0))
        else:
            return 0.0
        return step_s + sum(perf.prefill_busy_s(self._setup, tokens) for tokens in prompts)

    @staticmethod
    def _emit(job: _Job) -> None:
        if job.cancelled:
            return
        if job.emitted < len(job.tokens):
            job.out.put_nowait(job.tokens[job.emitted])
            job.emitted += 1
        if job.emitted >= len(job.tokens):
            job.out.put_nowait(None)


def build_setup(name: str, config: DeploymentConfig) -> perf.Setup:
    """The performance-model setup of a sim deployment; ConfigurationError if it cannot run."""
    assert config.gpu is not None
    try:
        setup = perf.Setup(
            gpu=catalog.gpu(config.gpu),
            gpu_count=config.gpu_count,
            model=catalog.model(config.model),
            precision=config.precision,
            kv_precision=config.kv_precision,
            efficiency_compute_ratio=config.efficiency_compute_ratio,
            efficiency_memory_ratio=config.efficiency_memory_ratio,
            efficiency_moe_ratio=config.efficiency_moe_ratio,
            parallel=config.parallel,
            batch_requests_max=config.batch_requests_max,
        )
        fits = perf.fits(setup)
        perf.peak_flops_per_s(setup)
    except TokenmillError as exc:
        field_name = exc.param or "gpu"
        raise ConfigurationError(
            f"deployments.{name}.{field_name}: {exc.message}", param=f"deployments.{name}"
        ) from exc
    if not fits:
        raise ConfigurationError(
            f"deployments.{name}: {config.model} at {config.precision} does not fit in"
            f" {config.gpu_count} x {config.gpu} (weights plus a KV reserve); add GPUs or"
            " lower the precision",
            param=f"deployments.{name}.gpu_count",
        )
    return setup


class SimBackend:
    """One simulated deployment: chat and completions through the scheduler, embeddings."""

    kind = "sim"
    simulated = True

    def __init__(
        self,
        deployment: str,
        engine: str,
        config: DeploymentConfig,
        *,
        time_scale: float,
        queue_count_max: int,
    ) -> None:
        self.deployment = deployment
        self.engine = engine
        self._config = config
        self._time_scale = time_scale
        self._setup = build_setup(deployment, config)
        self._scheduler = SimScheduler(
            self._setup, time_scale=time_scale, queue_count_max=queue_count_max
        )
        self.fingerprint = f"tokenmill-sim:{config.gpu}x{config.gpu_count}:{config.precision}"

    async def aclose(self) -> None:
        await self._scheduler.aclose()

    def _job(self, call: EngineCall) -> tuple[_Job, SimAnswer]:
        neutral = call.call
        refuse_unsupported(neutral)
        if neutral.surface == "chat":
            messages = call.body["messages"]
            prompt_tokens = prompt_tokens_of(neutral, count_chat_prompt_tokens(messages))
            seed_text = orjson.dumps(messages).decode()
        elif neutral.surface in CONVERSATION_SURFACES:  # read from the neutral messages
            prompt_tokens = prompt_tokens_estimate(neutral)
            seed_text = repr(neutral.messages)
        else:
            seed_text = neutral.prompt_text or ""
            prompt_tokens = count_prompt_tokens(seed_text)
        cap = call.output_tokens_max if call.output_tokens_max is not None else 1
        # ignore_eos (vLLM's extension, for benchmarks): answer exactly max_tokens tokens.
        fill = call.body.get("ignore_eos") is True
        seed = sim_text.seed_of(call.public_model, seed_text)
        answer = plan_answer(neutral, seed, cap, fill=fill)
        call.meter.prompt_tokens_estimate = prompt_tokens
        job = _Job(prompt_tokens, answer.pieces, answer.finish, output_tokens_max=cap)
        # Submitted before anything is sent, so a refusal (too big, queue full) is still an
        # HTTP status and not an error event inside a 200 stream.
        self._scheduler.submit(job, neutral.cap_param)
        return job, answer

    async def _pieces(self, call: EngineCall, job: _Job) -> AsyncIterator[Piece]:
        reasoning = 0
        try:
            while (piece := await job.out.get()) is not None:
                if call.meter.first_token_at_ns is None:
                    call.meter.first_token_at_ns = time.perf_counter_ns()
                call.meter.completion_tokens_estimate += 1
                reasoning += piece.kind == "reasoning"
                yield piece
        finally:
            job.cancelled = True  # finished jobs are gone already; this stops a cut one
            produced = call.meter.completion_tokens_estimate
            counts = TokenCounts(job.prompt_tokens, produced, reasoning_tokens=reasoning)
            call.meter.report(counts)

    async def complete(self, call: EngineCall) -> Answer | EmbeddingsAnswer:
        if call.endpoint == "embeddings":
            return await self._embed(call)
        job, answer = self._job(call)
        pieces = [piece async for piece in self._pieces(call, job)]
        assert call.meter.reported is not None
        return Answer(
            parts=whole_parts(answer, pieces),
            finish=job.finish_reason,  # type: ignore[arg-type]
            counts=call.meter.reported,
            logprobs=self._logprobs(call, pieces) if call.call.logprobs else None,
            fingerprint=self.fingerprint,
            stop_sequence=answer.stop_sequence,
        )

    def _logprobs(self, call: EngineCall, pieces: list[Piece]) -> tuple[TokenLogprob, ...]:
        top = call.call.top_logprobs
        seed = sim_text.seed_of(call.public_model)
        return tuple(
            logprob_of(p.text, seed + i, top) for i, p in enumerate(pieces) if p.kind == "text"
        )

    async def stream(self, call: EngineCall) -> AsyncIterator[list[StreamPart]]:
        job, answer = self._job(call)
        logprobs = call.call.logprobs
        top = call.call.top_logprobs
        seed = sim_text.seed_of(call.public_model)
        opened: set[int] = set()
        try:
            number = 0
            async for piece in self._pieces(call, job):
                if piece.kind == "reasoning":
                    yield [ReasoningDelta(piece.text)]
                elif piece.kind == "text":
                    lp = (logprob_of(piece.text, seed + number, top),) if logprobs else None
                    number += 1
                    yield [TextDelta(piece.text, lp)]
                else:
                    yield [tool_delta(answer, piece, opened)]
            assert call.meter.reported is not None
            yield [Finish(job.finish_reason, answer.stop_sequence)]  # type: ignore[arg-type]
            yield [UsageReport(call.meter.reported)]
        finally:
            job.cancelled = True  # a client that left stops its place in the batch

    async def _embed(self, call: EngineCall) -> EmbeddingsAnswer:
        dimensions = call.body.get("dimensions") or self._config.embedding_dimensions
        if dimensions is None:
            raise InvalidRequest("this model does not make embeddings", param="model")
        texts = embedding_inputs(call.body["input"])
        prompt_tokens = count_embedding_tokens(call.body["input"])
        call.meter.prompt_tokens_estimate = prompt_tokens
        await asyncio.sleep(perf.prefill_time_s(self._setup, prompt_tokens) * self._time_scale)
        vectors = []
        for text in texts:
            seed = sim_text.seed_of(call.public_model, str(dimensions), orjson.dumps(text).decode())
            vectors.append(tuple(sim_text.unit_vector(seed, dimensions)))
        counts = TokenCounts(prompt_tokens, 0)
        call.meter.report(counts)
        call.meter.first_token_at_ns = time.perf_counter_ns()
        return EmbeddingsAnswer(tuple(vectors), counts)


def whole_parts(
    answer: SimAnswer, pieces: list[Piece]
) -> tuple[TextPart | ToolCallPart | ReasoningPart, ...]:
    """The pieces produced, joined into the parts of a whole answer."""
    parts: list[TextPart | ToolCallPart | ReasoningPart] = []
    reasoning = "".join(p.text for p in pieces if p.kind == "reasoning")
    if reasoning:
        parts.append(ReasoningPart(reasoning))
    text = "".join(p.text for p in pieces if p.kind == "text")
    if text or not answer.tool_calls:
        parts.append(TextPart(text))
    for index, (call_id, name) in enumerate(answer.tool_calls):
        arguments = "".join(p.text for p in pieces if p.kind == "tool" and p.tool_index == index)
        if arguments or index == 0:
            parts.append(ToolCallPart(call_id, name, arguments))
    return tuple(parts)


def tool_delta(answer: SimAnswer, piece: Piece, opened: set[int]) -> ToolCallDelta:
    """A piece of a tool call's arguments; the first of each call names it."""
    if piece.tool_index in opened:
        return ToolCallDelta(piece.tool_index, arguments=piece.text)
    opened.add(piece.tool_index)
    call_id, name = answer.tool_calls[piece.tool_index]
    return ToolCallDelta(piece.tool_index, call_id, name, piece.text)
