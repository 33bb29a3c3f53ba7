"""Deterministic readable text and embeddings for the ``sim`` engine (pure).

The same prompt on the same model always gives the same answer, so tests and load runs
repeat. Every token is one word (with its leading space) or one punctuation mark, which is
exactly what ``tokenmill.usage.count_text_tokens`` counts.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct

_WORDS = [
    "the",
    "gateway",
    "serves",
    "tokens",
    "from",
    "a",
    "simulated",
    "fleet",
    "of",
    "accelerators",
    "while",
    "every",
    "request",
    "is",
    "metered",
    "exactly",
    "and",
    "each",
    "answer",
    "arrives",
    "at",
    "the",
    "pace",
    "of",
    "a",
    "performance",
    "model",
    "where",
    "prefill",
    "is",
    "bound",
    "by",
    "compute",
    "and",
    "decode",
    "by",
    "memory",
    "bandwidth",
    "so",
    "batches",
    "share",
    "steps",
    "operators",
    "plan",
    "capacity",
    "price",
    "models",
    "and",
    "watch",
    "margins",
    "customers",
    "stream",
    "answers",
    "through",
    "any",
    "client",
    "that",
    "speaks",
    "the",
    "same",
    "protocol",
    "this",
    "text",
    "is",
    "deterministic",
    "and",
    "readable",
    "enough",
    "for",
    "a",
    "demo",
    "yet",
    "carries",
    "no",
    "meaning",
    "beyond",
    "its",
    "rhythm",
]
ANSWER_TOKENS_MIN = 24
ANSWER_TOKENS_MAX = 160


def seed_of(*parts: str) -> int:
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def answer_tokens(seed: int, count_max: int, *, fill: bool = False) -> list[str]:
    """The answer's tokens: a natural length from the seed, at most ``count_max``; with
    ``fill`` exactly ``count_max`` (vLLM's ``ignore_eos``, for benchmarks)."""
    assert count_max >= 0
    rng = random.Random(seed)
    natural = rng.randint(ANSWER_TOKENS_MIN, ANSWER_TOKENS_MAX)
    if fill:
        natural = count_max
    tokens: list[str] = []
    sentence_left = rng.randint(6, 14)
    capitalize = True
    while len(tokens) < min(natural, count_max):
        if sentence_left == 0:
            tokens.append(".")
            sentence_left = rng.randint(6, 14)
            capitalize = True
            continue
        word = rng.choice(_WORDS)
        tokens.append(" " + (word.capitalize() if capitalize else word))
        capitalize = False
        sentence_left -= 1
    if tokens:
        tokens[0] = tokens[0].lstrip()
    return tokens


def cut_at_stop(tokens: list[str], stops: tuple[str, ...]) -> tuple[list[str], str | None]:
    """Tokens before the first stop sequence (the last one trimmed mid-token), and the stop
    sequence met (None: none was)."""
    if not stops:
        return tokens, None
    text = "".join(tokens)
    cuts = [(i, stop) for stop in stops if (i := text.find(stop)) >= 0]
    if not cuts:
        return tokens, None
    cut, stop = min(cuts, key=lambda found: found[0])
    kept: list[str] = []
    length = 0
    for token in tokens:
        if length + len(token) > cut:
            if cut > length:
                kept.append(token[: cut - length])
            break
        kept.append(token)
        length += len(token)
    return kept, stop


def unit_vector(seed: int, dimensions: int) -> list[float]:
    """A deterministic vector of length 1 (Gaussian direction, so uniform on the sphere)."""
    assert dimensions >= 1
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def pack_float32(values: list[float]) -> bytes:
    """Little-endian float32, the layout of OpenAI's ``encoding_format: base64``."""
    return struct.pack(f"<{len(values)}f", *values)
