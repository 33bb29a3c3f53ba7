"""Drive an OpenAI-compatible endpoint with streaming chat requests, closed loop, one
concurrency level after another, and time every request (I/O: aiohttp)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from tokenmill.benchmark.stats import Sample, summary

CHAT_OVERHEAD_TOKENS = 7  # a chat template's tokens around one user message


@dataclass(frozen=True)
class Plan:
    base_url: str  # ends in /v1
    model: str
    api_key: str | None
    input_tokens: int
    output_tokens: int
    concurrencies: tuple[int, ...]
    requests_per_level: int | None = None  # None: 4 per request slot, at least 8
    ignore_eos: bool = True  # ask for exactly output_tokens (vLLM, SGLang, tokenmill sim)
    timeout_s: float = 600.0

    def requests_at(self, concurrency: int) -> int:
        return self.requests_per_level or max(8, 4 * concurrency)


def prompt(index: int, tokens: int) -> str:
    """About ``tokens`` tokens of text, different per request so no prefix cache helps."""
    words = max(1, tokens - CHAT_OVERHEAD_TOKENS - 1)
    return f"{index} " + " ".join("word" for _ in range(words))


def body(plan: Plan, index: int) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model": plan.model,
        "messages": [{"role": "user", "content": prompt(index, plan.input_tokens)}],
        "max_tokens": plan.output_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
    }
    if plan.ignore_eos:
        request["ignore_eos"] = True
    return request


async def _one(session: aiohttp.ClientSession, plan: Plan, index: int) -> Sample:
    headers = {"Authorization": f"Bearer {plan.api_key}"} if plan.api_key else {}
    sent = time.monotonic()
    first: float | None = None
    usage: dict[str, Any] = {}
    chunks = 0
    arrivals: list[float] = []
    try:
        async with session.post(
            plan.base_url.rstrip("/") + "/chat/completions", json=body(plan, index), headers=headers
        ) as response:
            if response.status != 200:
                text = (await response.text())[:200]
                return Sample(sent, None, time.monotonic(), 0, 0, f"HTTP {response.status}: {text}")
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data:") or line == b"data: [DONE]":
                    continue
                event = orjson.loads(line[5:])
                if event.get("usage"):
                    usage = event["usage"]
                for choice in event.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        chunks += 1
                        arrivals.append(time.monotonic())
                        if first is None:
                            first = arrivals[-1]
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
        return Sample(sent, first, time.monotonic(), 0, 0, f"{type(exc).__name__}: {exc}")
    return Sample(
        sent_s=sent,
        first_token_s=first,
        done_s=time.monotonic(),
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        output_tokens=int(usage.get("completion_tokens", chunks)),
        chunk_gaps_s=tuple(later - earlier for earlier, later in itertools.pairwise(arrivals)),
    )


async def _level(
    session: aiohttp.ClientSession, plan: Plan, concurrency: int, tick: Callable[[], None]
) -> list[Sample]:
    total = plan.requests_at(concurrency)
    issued = 0
    samples: list[Sample] = []

    async def worker() -> None:
        nonlocal issued
        while issued < total:
            index = issued
            issued += 1
            samples.append(await _one(session, plan, index))
            tick()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


async def run(plan: Plan, tick: Callable[[], None]) -> list[dict[str, Any]]:
    """Every level's summary, in order; ``tick`` is called as each request ends."""
    timeout = aiohttp.ClientTimeout(total=plan.timeout_s)
    connector = aiohttp.TCPConnector(limit=max(plan.concurrencies))
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        levels = []
        for concurrency in plan.concurrencies:
            samples = await _level(session, plan, concurrency, tick)
            levels.append(summary(concurrency, samples))
        return levels
