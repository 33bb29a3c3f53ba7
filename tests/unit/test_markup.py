"""Resold models priced from the vendor's price list: markup rules and seeding."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokenmill.billing.seeding import configured_prices
from tokenmill.config import parse_config
from tokenmill.errors import ConfigurationError
from tokenmill.retail.rating import Price, mark_up

ROOT = Path(__file__).resolve().parents[2]
NANO = 1_000_000_000


def cost(input_nano: int, output_nano: int) -> Price:
    return Price(
        "vendor/m",
        "USD",
        0,
        input_nano,
        output_nano,
        input_nano,
        0,
        cache_write_input_nano_per_mtok=input_nano,
    )


def resale(markup: dict[str, Any]) -> dict[str, Any]:
    return {
        "engines": {
            "vendor": {
                "kind": "openai",
                "base_url": "http://vendor.example/v1",
                "prices": {"vendor/70b": {"input": "0.23", "output": "0.40"}},
            }
        },
        "deployments": {"d": {"engine": "vendor", "model": "vendor/70b"}},
        "models": {"m": {"deployments": ["d"], "markup": markup}},
    }


class TestMarkUp:
    def test_a_factor_multiplies_the_cost_exactly(self) -> None:
        """0.23 x 1.3 = 0.299 and 0.40 x 1.3 = 0.52 per million tokens, to the nano-unit."""
        price = mark_up(cost(230_000_000, 400_000_000), "m", 1_300_000, 0, 0)
        assert (price.input_nano_per_mtok, price.output_nano_per_mtok) == (299_000_000, 520_000_000)

    def test_a_fraction_of_a_nano_unit_is_rounded_up_never_down(self) -> None:
        """1 nano x 1.5 is 1.5: the price is 2, so the margin is never below the factor."""
        price = mark_up(cost(1, 3), "m", 1_500_000, 0, 0)
        assert (price.input_nano_per_mtok, price.output_nano_per_mtok) == (2, 5)

    def test_a_fixed_amount_is_added_per_million_tokens(self) -> None:
        """cost + 0.05 in and + 0.10 out."""
        price = mark_up(cost(230_000_000, 400_000_000), "m", 1_000_000, 50_000_000, 100_000_000)
        assert (price.input_nano_per_mtok, price.output_nano_per_mtok) == (280_000_000, 500_000_000)

    def test_the_cache_read_and_write_prices_are_marked_up_too(self) -> None:
        """Reads at 0.30 and writes at 3.75 x 1.3, plus 0.05 each: 0.44 and 4.925."""
        vendor = dataclasses.replace(
            cost(3 * NANO, 15 * NANO),
            cached_input_nano_per_mtok=300_000_000,
            cache_write_input_nano_per_mtok=3_750_000_000,
        )
        price = mark_up(vendor, "m", 1_300_000, 50_000_000, 0)
        assert price.cached_input_nano_per_mtok == 440_000_000
        assert price.cache_write_input_nano_per_mtok == 4_925_000_000

    def test_a_factor_below_one_is_a_bug(self) -> None:
        """Selling below cost is refused by an assertion (the configuration refuses it first)."""
        with pytest.raises(AssertionError):
            mark_up(cost(10, 10), "m", 999_999, 0, 0)


class TestSeeding:
    def test_a_marked_up_model_is_priced_from_its_upstream(self) -> None:
        """The seeded price is the vendor's list price times the factor, in its currency."""
        (price,) = configured_prices(parse_config(resale({"factor": "1.3"})))
        assert (price.model, price.currency) == ("m", "USD")
        assert price.input_nano_per_mtok == 299_000_000
        assert price.output_nano_per_mtok == 520_000_000

    @pytest.mark.parametrize("factor", ["0.9", "abc", "1.1234567", "-2"])
    def test_a_bad_factor_is_refused_naming_the_field(self, factor: str) -> None:
        """A factor below 1, not a decimal, or finer than a millionth names models.m.markup."""
        with pytest.raises(ConfigurationError) as raised:
            parse_config(resale({"factor": factor}))
        assert "models.m.markup.factor" in raised.value.message

    def test_a_markup_without_an_upstream_price_is_refused(self) -> None:
        """Nothing to mark up: the configuration says which model and where prices go."""
        config = resale({"factor": "1.2"})
        config["engines"]["vendor"]["prices"] = {}
        with pytest.raises(ConfigurationError) as raised:
            parse_config(config)
        assert "models.m.markup" in raised.value.message

    def test_a_vendors_cache_prices_are_marked_up_into_the_seeded_price(self) -> None:
        """The vendor's cached_input and cache_write_input, x 1.3: 0.039 and 0.377; without
        them, a read or write is marked up from the input price."""
        config = resale({"factor": "1.3"})
        listed = config["engines"]["vendor"]["prices"]["vendor/70b"]
        listed |= {"cached_input": "0.03", "cache_write_input": "0.29"}
        (price,) = configured_prices(parse_config(config))
        assert price.cached_input_nano_per_mtok == 39_000_000
        assert price.cache_write_input_nano_per_mtok == 377_000_000
        (plain,) = configured_prices(parse_config(resale({"factor": "1.3"})))
        assert plain.cache_write_input_nano_per_mtok == plain.input_nano_per_mtok == 299_000_000

    def test_price_and_markup_together_are_refused(self) -> None:
        """One source of price per model."""
        config = resale({"factor": "1.2"})
        config["models"]["m"]["price"] = {"input": "1.00"}
        with pytest.raises(ConfigurationError) as raised:
            parse_config(config)
        assert "not both" in raised.value.message

    def test_the_configuration_guide_example_parses_and_prices(self) -> None:
        """docs/configuration.md's example is a valid configuration with its prices."""
        text = (ROOT / "docs" / "configuration.md").read_text()
        example = yaml.safe_load(text.split("```yaml")[1].split("```")[0])
        prices = {p.model: p for p in configured_prices(parse_config(example))}
        assert prices["llama-3.3-70b"].input_nano_per_mtok == 169_000_000  # 0.13 x 1.3
        assert prices["llama-3.1-8b"].output_nano_per_mtok == 50_000_000
