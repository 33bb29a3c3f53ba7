"""Rating, pure: what a request costs, and the most it can cost before it runs.

A price is nano-units per million tokens, so ``tokens * price`` is an exact integer of
micro-nano-units (1e-15 of the currency). Sums stay exact in that unit and are rounded up
to whole nano-units once (``div_ceil``): a request that costs 0.4 nano-units pays 1.

A prompt token is one of three kinds, each at its own price: fresh input, a cache read
(``cached_input``) or a cache write (``cache_write_input``); output tokens, reasoning ones
among them, are all at the output price, counted once.

The hold bound of a request is its prompt bound at the highest of the three input prices
(how a prompt splits into them is known only after the engine answers), plus its output cap
at the output price, plus the request fee. The prompt bound comes from bytes: byte-level
tokenizers never make more tokens than bytes, and the chat template adds a per-model
allowance per request, per message, per tool and per image.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

from tokenmill.money import TOKENS_PER_PRICE, div_ceil
from tokenmill.neutral import PromptSize as PromptSize  # re-exported: its old home
from tokenmill.usage import TokenCounts


@dataclass(frozen=True)
class Price:
    """One model's price in one currency, valid from ``effective_from_ms`` on.

    The cache-write price is keyword-only (and required), so a Price written positionally
    before it existed fails rather than take its fee for it.
    """

    model: str
    currency: str
    effective_from_ms: int
    input_nano_per_mtok: int  # a fresh prompt token
    output_nano_per_mtok: int  # a completion token, reasoning ones included
    cached_input_nano_per_mtok: int  # a prompt token read from the prompt cache
    request_fee_nano: int = 0
    _: KW_ONLY
    cache_write_input_nano_per_mtok: int  # a prompt token written to the prompt cache

    def __post_init__(self) -> None:
        assert self.input_nano_per_mtok >= 0
        assert self.output_nano_per_mtok >= 0
        assert self.cached_input_nano_per_mtok >= 0
        assert self.cache_write_input_nano_per_mtok >= 0
        assert self.request_fee_nano >= 0

    @property
    def free(self) -> bool:
        return not (
            self.input_nano_per_mtok
            or self.output_nano_per_mtok
            or self.cached_input_nano_per_mtok
            or self.cache_write_input_nano_per_mtok
            or self.request_fee_nano
        )

    @property
    def input_nano_per_mtok_max(self) -> int:
        """The dearest of the three input prices: what the hold takes per prompt token."""
        return max(
            self.input_nano_per_mtok,
            self.cached_input_nano_per_mtok,
            self.cache_write_input_nano_per_mtok,
        )


@dataclass(frozen=True)
class PromptAllowance:
    """Tokens a chat template may add around what the client sent (per model)."""

    template_tokens: int = 32
    tokens_per_message: int = 8
    tokens_per_tool: int = 16
    tokens_per_image: int = 4096


def prompt_bound_tokens(size: PromptSize, allowance: PromptAllowance, context_tokens: int) -> int:
    """The most prompt tokens this request can be counted for.

    An engine refuses a prompt longer than the model's context, so the bound never needs
    to pass it.
    """
    bound = (
        size.text_bytes
        + allowance.template_tokens
        + allowance.tokens_per_message * size.messages_count
        + allowance.tokens_per_tool * size.tools_count
        + allowance.tokens_per_image * size.images_count
    )
    return min(bound, context_tokens)


def fresh_input_tokens(counts: TokenCounts) -> int:
    """The prompt tokens that are neither read from nor written to the prompt cache."""
    fresh = counts.prompt_tokens - counts.cached_tokens - counts.cache_write_tokens
    assert fresh >= 0
    return fresh


def tokens_micro(price: Price, fresh: int, reads: int, writes: int, completion: int) -> int:
    """Tokens of each kind at their price, in micro-nano-units (no fee, not rounded)."""
    assert min(fresh, reads, writes, completion) >= 0
    return (
        fresh * price.input_nano_per_mtok
        + reads * price.cached_input_nano_per_mtok
        + writes * price.cache_write_input_nano_per_mtok
        + completion * price.output_nano_per_mtok
    )


def cost_micro(price: Price, counts: TokenCounts) -> int:
    """The exact cost of ``counts``, in micro-nano-units (not rounded). Reasoning tokens are
    part of the completion tokens: charged there, once."""
    micro = tokens_micro(
        price,
        fresh_input_tokens(counts),
        counts.cached_tokens,
        counts.cache_write_tokens,
        counts.completion_tokens,
    )
    return micro + price.request_fee_nano * TOKENS_PER_PRICE


def charge_nano(price: Price, counts: TokenCounts) -> int:
    """What ``counts`` cost, rounded up to a whole nano-unit (the one rounding)."""
    charge = div_ceil(cost_micro(price, counts), TOKENS_PER_PRICE)
    assert charge >= 0
    return charge


def hold_nano(price: Price, prompt_bound: int, output_cap: int) -> int:
    """The most a request can cost: every prompt token at the dearest input price (fresh,
    cache read or cache write), the whole output cap, the fee. Never less than
    ``charge_nano`` of any usage within bounds, however its prompt splits."""
    assert prompt_bound >= 0
    assert output_cap >= 0
    micro = (
        prompt_bound * price.input_nano_per_mtok_max
        + output_cap * price.output_nano_per_mtok
        + price.request_fee_nano * TOKENS_PER_PRICE
    )
    return div_ceil(micro, TOKENS_PER_PRICE)


def output_tokens_affordable(price: Price, prompt_bound: int, available_nano: int) -> int | None:
    """How many output tokens ``available_nano`` pays for after the prompt bound and fee.

    None when output is free (no limit from funds); 0 or less when not even the prompt is
    affordable.
    """
    if price.output_nano_per_mtok == 0:
        return None if hold_nano(price, prompt_bound, 0) <= available_nano else 0
    spare_micro = (
        available_nano * TOKENS_PER_PRICE
        - prompt_bound * price.input_nano_per_mtok_max
        - price.request_fee_nano * TOKENS_PER_PRICE
    )
    return spare_micro // price.output_nano_per_mtok


def price_at(prices: list[Price], at_ms: int) -> Price | None:
    """The price in force at ``at_ms``: the latest ``effective_from_ms`` not after it.

    ``prices`` is sorted by ``effective_from_ms``; a handful per model, so a scan from the
    end is the fast path (the newest price is nearly always the one in force).
    """
    for price in reversed(prices):
        if price.effective_from_ms <= at_ms:
            return price
    return None


class PriceBook:
    """Every price of every model, by (model, currency), oldest first."""

    def __init__(self, prices: list[Price] | None = None) -> None:
        self._prices: dict[tuple[str, str], list[Price]] = {}
        self._priced_models: set[str] = set()
        for price in prices or []:
            self._prices.setdefault((price.model, price.currency), []).append(price)
            self._priced_models.add(price.model)
        for listed in self._prices.values():
            listed.sort(key=lambda p: p.effective_from_ms)

    def replace_model(self, model: str, prices: list[Price]) -> None:
        """Swap in ``model``'s prices as the store has them now."""
        for key in [key for key in self._prices if key[0] == model]:
            del self._prices[key]
        self._priced_models.discard(model)
        for price in sorted(prices, key=lambda p: p.effective_from_ms):
            assert price.model == model
            self._prices.setdefault((model, price.currency), []).append(price)
            self._priced_models.add(model)

    def priced(self, model: str) -> bool:
        """Whether ``model`` has a price in any currency (an unpriced model is free)."""
        return model in self._priced_models

    def at(self, model: str, currency: str, at_ms: int) -> Price | None:
        return price_at(self._prices.get((model, currency), []), at_ms)

    def all(self) -> list[Price]:
        return [price for listed in self._prices.values() for price in listed]


def mark_up(cost: Price, model: str, factor_ppm: int, plus_input: int, plus_output: int) -> Price:
    """A resold model's price: its upstream cost x ``factor_ppm`` / 1e6 (rounded up to a whole
    nano-unit per million tokens, so the margin is never below the factor), plus a fixed
    amount per million input and output tokens (the input amount on each of the three input
    prices: fresh, cache read, cache write)."""
    assert factor_ppm >= 1_000_000
    assert plus_input >= 0
    assert plus_output >= 0

    def scaled(amount: int) -> int:
        return div_ceil(amount * factor_ppm, 1_000_000)

    price = Price(
        model=model,
        currency=cost.currency,
        effective_from_ms=cost.effective_from_ms,
        input_nano_per_mtok=scaled(cost.input_nano_per_mtok) + plus_input,
        output_nano_per_mtok=scaled(cost.output_nano_per_mtok) + plus_output,
        cached_input_nano_per_mtok=scaled(cost.cached_input_nano_per_mtok) + plus_input,
        request_fee_nano=scaled(cost.request_fee_nano),
        cache_write_input_nano_per_mtok=scaled(cost.cache_write_input_nano_per_mtok) + plus_input,
    )
    assert price.input_nano_per_mtok >= cost.input_nano_per_mtok
    assert price.cache_write_input_nano_per_mtok >= cost.cache_write_input_nano_per_mtok
    return price
