"""Hypothesis strategies shared by the tests: JSON values and OpenAI-shaped request bodies
whose fields are sometimes right and sometimes anything at all; prices, token counts and
amounts for the money tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tokenmill.money import AMOUNT_NANO_MAX
from tokenmill.retail.plans import OveragePrice, Plan, TimeBand
from tokenmill.retail.rating import Price
from tokenmill.usage import TokenCounts

# Models of tests.conftest.gateway_config: sim ones answer at once; "fake" is the loopback
# upstream; the rest do not exist.
MODEL_NAMES = ("sim-chat", "sim-chat", "sim-embed", "fake", "fake-embed", "no-such-model")
ROLES = ("system", "developer", "user", "assistant", "tool", "function", "wizard", "")

json_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value: scalars, arrays and objects nested a few levels deep."""
    return st.recursive(
        json_scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5),
            st.dictionaries(st.text(max_size=12), inner, max_size=5),
        ),
        max_leaves=max_leaves,
    )


def fuzzed(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly (four in five) a plausible value for a field, sometimes any JSON value."""
    return st.one_of(plausible, plausible, plausible, plausible, json_values(max_leaves=4))


def some_of(fields: dict[str, st.SearchStrategy[Any]], most: int) -> st.SearchStrategy[dict]:
    """A dict of at most ``most`` of ``fields`` (so that one bad field does not hide the rest)."""
    chosen = st.lists(st.sampled_from(sorted(fields)), max_size=most, unique=True)
    return chosen.flatmap(lambda names: st.fixed_dictionaries({n: fields[n] for n in names}))


def _with_some_of(
    core: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(st.fixed_dictionaries(core), some_of(optional, 3)).map(
        lambda pair: {**pair[0], **pair[1]}
    )


models = fuzzed(st.sampled_from(MODEL_NAMES) | st.sampled_from(MODEL_NAMES) | st.text(max_size=20))
token_counts = fuzzed(
    st.one_of(st.integers(min_value=-2, max_value=64), st.sampled_from([10**6, 2**31, 1.5]))
)
content_parts = st.lists(
    st.fixed_dictionaries(
        {"type": fuzzed(st.sampled_from(["text", "image_url"]))},
        optional={"text": fuzzed(st.text(max_size=30))},
    ),
    max_size=3,
)
messages = st.lists(
    fuzzed(
        _with_some_of(
            {
                "role": fuzzed(st.sampled_from(ROLES)),
                "content": fuzzed(st.one_of(st.text(max_size=60), content_parts)),
            },
            {"name": fuzzed(st.text(max_size=10)), "tool_calls": json_values(max_leaves=3)},
        )
    ),
    min_size=1,
    max_size=4,
)
stops = fuzzed(st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5), max_size=6)))
numbers = fuzzed(st.floats(min_value=-3, max_value=3, allow_nan=False))

_COMMON_OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    "max_tokens": token_counts,
    "max_completion_tokens": token_counts,
    "stream": fuzzed(st.booleans()),
    "stream_options": fuzzed(st.fixed_dictionaries({}, optional={"include_usage": st.booleans()})),
    "n": fuzzed(st.integers(min_value=0, max_value=3)),
    "stop": stops,
    "temperature": numbers,
    "top_p": numbers,
    "presence_penalty": numbers,
    "frequency_penalty": numbers,
    "seed": fuzzed(st.integers(min_value=-(2**63), max_value=2**63)),
    "user": fuzzed(st.text(max_size=10)),
    "response_format": json_values(max_leaves=3),
    "tools": json_values(max_leaves=4),
}


def chat_bodies() -> st.SearchStrategy[dict[str, Any]]:
    """Bodies shaped like a chat completion request, any field possibly wrong."""
    return _with_some_of({"model": models, "messages": fuzzed(messages)}, _COMMON_OPTIONAL)


def completion_bodies() -> st.SearchStrategy[dict[str, Any]]:
    """Bodies shaped like a (legacy) completion request, any field possibly wrong."""
    prompt = fuzzed(st.one_of(st.text(max_size=60), st.lists(st.text(max_size=20), max_size=3)))
    return _with_some_of(
        {"model": models, "prompt": prompt},
        {
            **_COMMON_OPTIONAL,
            "echo": fuzzed(st.booleans()),
            "best_of": fuzzed(st.integers(min_value=0, max_value=3)),
        },
    )


def embedding_bodies() -> st.SearchStrategy[dict[str, Any]]:
    """Bodies shaped like an embeddings request, any field possibly wrong."""
    token_array = st.lists(st.integers(min_value=-1, max_value=2**31), max_size=6)
    given = fuzzed(
        st.one_of(
            st.text(max_size=40),
            st.lists(st.text(max_size=20), max_size=4),
            token_array,
            st.lists(token_array, max_size=3),
        )
    )
    return _with_some_of(
        {"model": models, "input": given},
        {
            "encoding_format": fuzzed(st.sampled_from(["float", "base64", "hex"])),
            "dimensions": fuzzed(st.integers(min_value=-1, max_value=70_000)),
            "user": fuzzed(st.text(max_size=10)),
        },
    )


anthropic_blocks = st.lists(
    _with_some_of(
        {"type": fuzzed(st.sampled_from(["text", "image", "tool_use", "tool_result", "thinking"]))},
        {
            "text": fuzzed(st.text(max_size=30)),
            "source": json_values(max_leaves=3),
            "id": fuzzed(st.text(max_size=8)),
            "name": fuzzed(st.sampled_from(["get_weather", "", "x" * 70])),
            "input": json_values(max_leaves=3),
            "tool_use_id": fuzzed(st.text(max_size=8)),
            "content": json_values(max_leaves=3),
            "cache_control": fuzzed(st.just({"type": "ephemeral"})),
        },
    ),
    max_size=3,
)
anthropic_turns = st.lists(
    fuzzed(
        st.fixed_dictionaries(
            {
                "role": fuzzed(st.sampled_from(["user", "assistant", "system"])),
                "content": fuzzed(st.one_of(st.text(max_size=60), anthropic_blocks)),
            }
        )
    ),
    min_size=1,
    max_size=4,
)


def messages_bodies() -> st.SearchStrategy[dict[str, Any]]:
    """Bodies shaped like an Anthropic Messages request, any field possibly wrong."""
    return _with_some_of(
        {"model": models, "max_tokens": token_counts, "messages": fuzzed(anthropic_turns)},
        {
            "system": fuzzed(st.one_of(st.text(max_size=30), anthropic_blocks)),
            "stream": fuzzed(st.booleans()),
            "stop_sequences": stops,
            "temperature": numbers,
            "top_k": token_counts,
            "tools": json_values(max_leaves=4),
            "tool_choice": json_values(max_leaves=3),
            "thinking": fuzzed(
                st.fixed_dictionaries(
                    {"type": st.sampled_from(["enabled", "disabled"])},
                    optional={"budget_tokens": token_counts},
                )
            ),
            "metadata": json_values(max_leaves=2),
        },
    )


responses_items = st.lists(
    fuzzed(
        _with_some_of(
            {"type": fuzzed(st.sampled_from(["message", "function_call", "function_call_output"]))},
            {
                "role": fuzzed(st.sampled_from(["user", "assistant", "developer"])),
                "content": fuzzed(st.one_of(st.text(max_size=40), json_values(max_leaves=3))),
                "call_id": fuzzed(st.text(max_size=8)),
                "name": fuzzed(st.text(max_size=8)),
                "arguments": fuzzed(st.text(max_size=20)),
                "output": fuzzed(st.text(max_size=20)),
            },
        )
    ),
    max_size=4,
)


def responses_bodies() -> st.SearchStrategy[dict[str, Any]]:
    """Bodies shaped like an OpenAI Responses request, any field possibly wrong."""
    return _with_some_of(
        {"model": models, "input": fuzzed(st.one_of(st.text(max_size=60), responses_items))},
        {
            "instructions": fuzzed(st.text(max_size=30)),
            "max_output_tokens": token_counts,
            "stream": fuzzed(st.booleans()),
            "store": fuzzed(st.booleans()),
            "previous_response_id": fuzzed(st.text(max_size=12)),
            "tools": json_values(max_leaves=4),
            "tool_choice": json_values(max_leaves=3),
            "text": json_values(max_leaves=3),
            "reasoning": json_values(max_leaves=2),
            "temperature": numbers,
            "include": json_values(max_leaves=2),
        },
    )


def request_bodies() -> st.SearchStrategy[dict[str, Any]]:
    """A chat-, completion-, embeddings-, Messages- or Responses-shaped body."""
    return st.one_of(
        chat_bodies(),
        completion_bodies(),
        embedding_bodies(),
        messages_bodies(),
        responses_bodies(),
    )


def optional_token_limits(most: int) -> st.SearchStrategy[int | None]:
    """A max_tokens-like value from 1 to ``most``, or absent (None)."""
    return st.none() | st.integers(min_value=1, max_value=most)


# Money: prices up to 100 currency units per million tokens, counts up to a long context.
PRICE_NANO_PER_MTOK_MAX = 100 * 10**9
TOKENS_MAX = 2_000_000

price_per_mtok = st.one_of(
    st.just(0),
    st.integers(min_value=1, max_value=1_000),  # far below a nano-unit per token
    st.integers(min_value=0, max_value=PRICE_NANO_PER_MTOK_MAX),
)


def prices(
    *, output_free: bool | None = None, model: str = "m", currency: str = "USD"
) -> st.SearchStrategy[Price]:
    """Any price of ``model``; ``output_free`` True or False forces the output price to be
    zero or not."""
    if output_free is None:
        output = price_per_mtok
    elif output_free:
        output = st.just(0)
    else:
        output = st.integers(min_value=1, max_value=PRICE_NANO_PER_MTOK_MAX)
    return st.builds(
        Price,
        model=st.just(model),
        currency=st.just(currency),
        effective_from_ms=st.integers(min_value=0, max_value=2**41),
        input_nano_per_mtok=price_per_mtok,
        output_nano_per_mtok=output,
        cached_input_nano_per_mtok=price_per_mtok,
        cache_write_input_nano_per_mtok=price_per_mtok,
        request_fee_nano=st.one_of(st.just(0), st.integers(min_value=0, max_value=10**7)),
    )


token_totals = st.integers(min_value=0, max_value=TOKENS_MAX)


@st.composite
def counts_within(
    draw: st.DrawFn, prompt_most: int = TOKENS_MAX, completion_most: int = TOKENS_MAX
) -> TokenCounts:
    """Token counts with prompt and completion within bounds: cache reads and writes parts
    of the prompt, reasoning tokens part of the completion."""
    prompt = draw(st.integers(min_value=0, max_value=prompt_most))
    completion = draw(st.integers(min_value=0, max_value=completion_most))
    cached = draw(st.integers(min_value=0, max_value=prompt))
    written = draw(st.integers(min_value=0, max_value=prompt - cached))
    reasoning = draw(st.integers(min_value=0, max_value=completion))
    return TokenCounts(prompt, completion, cached, written, reasoning)


amounts_nano = st.integers(min_value=-AMOUNT_NANO_MAX, max_value=AMOUNT_NANO_MAX)


# Plans (tokenmill.retail.plans): what plan_from_spec can make, for round trips and rating.
PLAN_ZONES = (
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",  # a half-hour daylight saving shift
    "Pacific/Chatham",  # +12:45 / +13:45
)
PLAN_RATIO_PPM_MAX = 100 * 1_000_000
PLAN_INCLUDED_MAX = 10**15

plan_keys = st.one_of(
    st.sampled_from(["sim-chat", "llama-3.3-70b", "tier:standard", "tier:frontier"]),
    st.from_regex(r"tier:[a-z0-9][a-z0-9_-]{0,8}", fullmatch=True),
    st.text(min_size=1, max_size=20),
)
ratios_ppm = st.one_of(
    st.sampled_from([0, 500_000, 1_000_000, 250_000, 333_333, 1_500_000]),
    st.integers(min_value=0, max_value=PLAN_RATIO_PPM_MAX),
)


@st.composite
def time_bands(draw: st.DrawFn) -> TimeBand:
    """A band of the local day (it may wrap past midnight) with any ratio from 0 to 100."""
    start = draw(st.integers(min_value=0, max_value=24 * 60 - 1))
    end = draw(st.integers(min_value=0, max_value=24 * 60).filter(lambda end: end != start))
    return TimeBand(start, end, draw(ratios_ppm))


overage_prices = st.builds(
    OveragePrice,
    input_nano_per_mtok=st.integers(min_value=0, max_value=AMOUNT_NANO_MAX),
    output_nano_per_mtok=st.integers(min_value=0, max_value=AMOUNT_NANO_MAX),
    cached_input_nano_per_mtok=st.integers(min_value=0, max_value=AMOUNT_NANO_MAX),
    cache_write_input_nano_per_mtok=st.integers(min_value=0, max_value=AMOUNT_NANO_MAX),
)


def plans(name: str = "p") -> st.SearchStrategy[Plan]:
    """Any plan that a valid spec can describe."""
    return st.builds(
        Plan,
        name=st.just(name),
        currency=st.from_regex(r"[A-Z]{3}", fullmatch=True),
        monthly_fee_nano=st.integers(min_value=0, max_value=AMOUNT_NANO_MAX),
        timezone=st.sampled_from(PLAN_ZONES),
        included_tokens=st.dictionaries(
            plan_keys, st.integers(min_value=0, max_value=PLAN_INCLUDED_MAX), max_size=4
        ),
        overage=st.dictionaries(plan_keys, overage_prices, max_size=3),
        time_bands=st.lists(time_bands(), max_size=4).map(tuple),
        batch_discount_ppm=st.integers(min_value=0, max_value=1_000_000),
    )
