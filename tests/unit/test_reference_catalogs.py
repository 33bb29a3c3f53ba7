"""The reference catalogs (tokenmill.economics.reference): market prices and site defaults
beside the GPUs and models, packaged and extended by a user's own YAML file."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import pytest
import yaml

from tokenmill.economics import reference
from tokenmill.economics.costing import CostQuery, cost_answer
from tokenmill.economics.queries import PerfQuery
from tokenmill.economics.reference import Catalogs, parse_market_prices, parse_site_defaults
from tokenmill.errors import ConfigurationError, NotFound, TokenmillError

PACKAGED = reference.packaged()
# Every site default that costing.py reads by name: a missing one would be a KeyError.
DEFAULTS_USED = {
    "energy_usd_per_kwh",
    "pue",
    "node_overhead_ratio",
    "utilization_power_ratio",
    "depreciation_years",
    "residual_ratio",
    "colocation_usd_per_kw_month",
    "utilization_ratio",
    "operations_usd_per_gpu_month",
    "cluster_servers_share",
    "cluster_network_share",
    "cluster_storage_share",
    "build_power_cooling_share",
}
RATIO_DEFAULTS = {
    "node_overhead_ratio",
    "utilization_power_ratio",
    "residual_ratio",
    "utilization_ratio",
    "cluster_servers_share",
    "cluster_network_share",
    "cluster_storage_share",
    "build_power_cooling_share",
}


def is_iso_date(text: str) -> bool:
    return datetime.date.fromisoformat(text).isoformat() == text


def user_gpu(**changes: Any) -> dict[str, Any]:
    """A GPU entry as a user writes it: 500 W, 10,000 USD to buy, 1.50 USD an hour."""
    entry = {
        "name": "Test GPU",
        "flops_bf16_per_s": 1.0e15,
        "flops_fp8_per_s": 2.0e15,
        "flops_fp4_per_s": None,
        "memory_bytes": 80_000_000_000,
        "bandwidth_bytes_per_s": 2.0e12,
        "power_w": 500,
        "interconnect_bytes_per_s": 100.0e9,
        "source": "a test",
        "as_of": "2026-11-25",
        "purchase_usd": "10000",
        "rent_usd_per_gpu_hour": "1.50",
        "prices_source": "a test quote",
        "prices_as_of": "2026-11-25",
    }
    return {**entry, **changes}


def user_price(**changes: Any) -> dict[str, Any]:
    """A market price of Llama 3.3 70B as a user writes it."""
    entry = {
        "model": "Llama-3.3-70B",
        "catalog_model": "llama-3.3-70b",
        "provider": "Cheap Inc",
        "input_usd_per_mtok": "0.05",
        "output_usd_per_mtok": "0.20",
        "date": "2026-12-01",
        "source": "a test quote",
    }
    return {**entry, **changes}


def tiny_model() -> dict[str, Any]:
    """A small dense model entry as a user writes it."""
    return {
        "name": "Tiny",
        "parameters": 1_000_000_000,
        "parameters_active": 1_000_000_000,
        "layers": 16,
        "hidden_size": 2048,
        "heads_query": 16,
        "heads_kv": 4,
        "head_dim": 128,
        "kv_bytes_per_token_bf16": 32768,
        "context_tokens": 8192,
        "source": "a test",
        "as_of": "2026-11-25",
    }


def user_default(value: Any = "0.05", **changes: Any) -> dict[str, Any]:
    return {
        "value": value,
        "unit": "USD/kWh",
        "source": "my bill",
        "as_of": "2026-11-25",
        **changes,
    }


def refusal(document: object) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        PACKAGED.extended(document, "mine.yaml")
    return caught.value


class TestPackagedMarketPrices:
    @pytest.mark.parametrize("price", PACKAGED.market_prices, ids=lambda price: price.model)
    def test_every_price_names_a_source_and_a_date(self, price: reference.MarketPrice) -> None:
        assert price.source.strip()
        assert is_iso_date(price.date)
        assert price.provider.strip()

    def test_every_linked_price_names_a_catalog_model(self) -> None:
        linked = [price for price in PACKAGED.market_prices if price.catalog_model is not None]
        assert linked  # open-weight models are linked
        assert all(price.catalog_model in PACKAGED.models for price in linked)

    def test_prices_are_exact_decimals_never_floats(self) -> None:
        for price in PACKAGED.market_prices:
            assert isinstance(price.input_usd_per_mtok, Decimal)
            assert isinstance(price.output_usd_per_mtok, Decimal)
            assert price.output_usd_per_mtok > 0

    def test_prices_of_a_model_are_its_own_oldest_first(self) -> None:
        """Llama 3.3 70B: two DeepInfra prices of 2026-06-01, then Together's of 2026-11-25."""
        prices = PACKAGED.prices_of("llama-3.3-70b")
        assert [(price.provider, price.date) for price in prices] == [
            ("DeepInfra", "2026-06-01"),
            ("DeepInfra", "2026-06-01"),
            ("Together", "2026-11-25"),
        ]
        assert prices[-1].output_usd_per_mtok == Decimal("0.88")
        assert PACKAGED.prices_of("llama-3.1-8b") == []


class TestPackagedSiteDefaults:
    @pytest.mark.parametrize("name", sorted(PACKAGED.site_defaults))
    def test_every_default_names_a_source_a_unit_and_a_date(self, name: str) -> None:
        default = PACKAGED.site_defaults[name]
        assert default.name == name
        assert default.source.strip()
        assert default.unit.strip()
        assert is_iso_date(default.as_of)

    def test_every_default_that_costing_reads_is_there(self) -> None:
        assert set(PACKAGED.site_defaults) >= DEFAULTS_USED

    @pytest.mark.parametrize("name", sorted(RATIO_DEFAULTS))
    def test_ratios_lie_between_zero_and_one(self, name: str) -> None:
        assert 0 <= PACKAGED.default(name) <= 1

    def test_the_cluster_capex_shares_add_up_to_all_of_it(self) -> None:
        """85% servers, 10% network, 5% storage."""
        shares = ("cluster_servers_share", "cluster_network_share", "cluster_storage_share")
        assert sum(PACKAGED.default(name) for name in shares) == 1

    def test_the_figures_the_hand_computations_use(self) -> None:
        assert PACKAGED.default("energy_usd_per_kwh") == Decimal("0.0806")
        assert PACKAGED.default("colocation_usd_per_kw_month") == Decimal("163.44")
        assert PACKAGED.default("operations_usd_per_gpu_month") == Decimal("50")
        assert PACKAGED.default("pue") == Decimal("1.3")


class TestPackagedGpus:
    @pytest.mark.parametrize("gpu_id", sorted(PACKAGED.gpus))
    def test_every_priced_gpu_names_where_its_prices_came_from(self, gpu_id: str) -> None:
        gpu = PACKAGED.gpus[gpu_id]
        if gpu.purchase_usd is None and gpu.rent_usd_per_gpu_hour is None:
            pytest.skip(f"{gpu_id} has no price")
        assert gpu.prices_source is not None
        assert gpu.prices_source.strip()
        assert gpu.prices_as_of is not None
        assert is_iso_date(gpu.prices_as_of)

    def test_a_gpu_is_found_by_id_or_alias(self) -> None:
        assert PACKAGED.gpu("h200").id == "h200-sxm"
        assert PACKAGED.gpu("h100-sxm").purchase_usd == Decimal("27500")

    def test_an_unknown_gpu_or_model_is_not_found(self) -> None:
        with pytest.raises(NotFound) as gpu:
            PACKAGED.gpu("h900")
        assert gpu.value.param == "gpu"
        assert "h100-sxm" in gpu.value.message
        with pytest.raises(NotFound) as model:
            PACKAGED.model("llama-9")
        assert model.value.param == "model"


class TestExtended:
    def test_a_gpu_is_added_beside_the_packaged_ones(self) -> None:
        mine = PACKAGED.extended({"gpus": {"test-gpu": user_gpu()}}, "mine.yaml")
        assert mine.gpu("test-gpu").purchase_usd == Decimal("10000")
        assert set(mine.gpus) == set(PACKAGED.gpus) | {"test-gpu"}
        assert "test-gpu" not in PACKAGED.gpus  # the packaged catalogs stay as they were

    def test_a_gpu_with_a_packaged_id_replaces_it(self) -> None:
        mine = PACKAGED.extended({"gpus": {"h100-sxm": user_gpu(purchase_usd="20000")}}, "m")
        assert mine.gpu("h100").purchase_usd == Decimal("20000")
        assert mine.gpu("h100-sxm").power_w == 500
        assert PACKAGED.gpu("h100-sxm").purchase_usd == Decimal("27500")

    def test_a_market_price_is_added_to_the_packaged_list(self) -> None:
        mine = PACKAGED.extended({"market_prices": [user_price()]}, "mine.yaml")
        assert len(mine.market_prices) == len(PACKAGED.market_prices) + 1
        newest = mine.prices_of("llama-3.3-70b")[-1]
        assert (newest.provider, newest.output_usd_per_mtok) == ("Cheap Inc", Decimal("0.20"))
        assert len(PACKAGED.prices_of("llama-3.3-70b")) == 3

    def test_an_unlinked_market_price_is_accepted(self) -> None:
        """A closed model has no catalog_model."""
        price = user_price(model="Closed-1")
        del price["catalog_model"]
        mine = PACKAGED.extended({"market_prices": [price]}, "mine.yaml")
        assert mine.market_prices[-1].catalog_model is None

    def test_a_site_default_replaces_the_packaged_one_in_the_cost(self) -> None:
        """Energy at 0.10 USD/kWh: one H100 SXM draws 700 W * 1.8 * 1.3 * 0.8 / 1000 =
        1.3104 kW, so 0.13104 USD an hour (0.10561824 at the packaged 0.0806)."""
        mine = PACKAGED.extended(
            {"site_defaults": {"energy_usd_per_kwh": user_default("0.10")}}, "mine.yaml"
        )
        assert mine.default("energy_usd_per_kwh") == Decimal("0.10")
        one_gpu = CostQuery(perf=PerfQuery(gpu="h100-sxm", model="llama-3.1-8b"))
        assert cost_answer(one_gpu, mine)["cost_usd_per_hour"]["energy"] == "0.13104"
        assert cost_answer(one_gpu, PACKAGED)["cost_usd_per_hour"]["energy"] == "0.10561824"

    def test_a_model_is_added(self) -> None:
        mine = PACKAGED.extended({"models": {"tiny-1b": tiny_model()}}, "mine.yaml")
        assert mine.model("tiny-1b").layers == 16
        assert "tiny-1b" not in PACKAGED.models

    def test_a_user_price_may_link_a_model_of_the_same_file(self) -> None:
        """The links are checked once every section is in."""
        document = {
            "models": {"tiny-1b": tiny_model()},
            "market_prices": [user_price(catalog_model="tiny-1b")],
        }
        mine = PACKAGED.extended(document, "mine.yaml")
        assert mine.prices_of("tiny-1b")[0].provider == "Cheap Inc"

    def test_an_unquoted_yaml_date_is_read_as_iso_text(self) -> None:
        document = yaml.safe_load(
            "market_prices:\n"
            "- {model: X, provider: P, input_usd_per_mtok: '0.1', output_usd_per_mtok: '0.2',"
            " date: 2026-12-01, source: s}\n"
        )
        assert PACKAGED.extended(document, "mine.yaml").market_prices[-1].date == "2026-12-01"

    def test_an_empty_section_changes_nothing(self) -> None:
        mine = PACKAGED.extended({"market_prices": []}, "mine.yaml")
        assert mine == Catalogs(
            PACKAGED.gpus, PACKAGED.models, PACKAGED.market_prices, PACKAGED.site_defaults
        )


class TestExtendedRefusals:
    def test_an_unknown_section_is_named(self) -> None:
        error = refusal({"gpu": {"test-gpu": user_gpu()}})
        assert error.param == "gpu"
        assert "unknown section 'gpu'" in error.message
        assert "mine.yaml" in error.message

    @pytest.mark.parametrize("document", [None, [], "gpus", 3])
    def test_a_file_that_is_not_a_mapping_of_sections_is_refused(self, document: object) -> None:
        assert "must be a mapping of sections" in refusal(document).message

    @pytest.mark.parametrize("field", ["input_usd_per_mtok", "output_usd_per_mtok"])
    def test_a_market_price_written_as_a_float_names_the_field(self, field: str) -> None:
        """YAML reads 0.2 unquoted as a float: prices are text, never floats."""
        error = refusal({"market_prices": [user_price(**{field: 0.2})]})
        assert error.param == field
        assert "0.2" in error.message

    @pytest.mark.parametrize("text", ["-0.2", "1e-3", "0.1234567891", "", "0,2"])
    def test_a_market_price_that_is_not_plain_decimal_text_is_refused(self, text: str) -> None:
        assert refusal({"market_prices": [user_price(input_usd_per_mtok=text)]}).param == (
            "input_usd_per_mtok"
        )

    def test_a_site_default_written_as_a_float_names_the_field(self) -> None:
        error = refusal({"site_defaults": {"energy_usd_per_kwh": user_default(0.05)}})
        assert error.param == "value"
        assert "energy_usd_per_kwh" in error.message

    def test_a_gpu_price_written_as_a_float_names_the_field(self) -> None:
        error = refusal({"gpus": {"test-gpu": user_gpu(purchase_usd=10000.5)}})
        assert error.param == "purchase_usd"

    def test_a_priced_gpu_without_a_prices_source_is_refused(self) -> None:
        entry = user_gpu()
        del entry["prices_source"]
        assert refusal({"gpus": {"test-gpu": entry}}).param == "prices_source"

    def test_an_unknown_catalog_model_is_named(self) -> None:
        error = refusal({"market_prices": [user_price(catalog_model="llama-9")]})
        assert error.param == "catalog_model"
        assert "llama-9" in error.message

    @pytest.mark.parametrize(
        ("changes", "param"),
        [
            ({"date": "2026-13-01"}, "date"),
            ({"date": None}, "date"),
            ({"source": ""}, "source"),
            ({"provider": None}, "provider"),
            ({"discount": "0.1"}, "discount"),
        ],
    )
    def test_a_bad_market_price_field_is_named(self, changes: dict[str, Any], param: str) -> None:
        assert refusal({"market_prices": [user_price(**changes)]}).param == param

    @pytest.mark.parametrize(
        ("changes", "param"),
        [({"as_of": "soon"}, "as_of"), ({"unit": ""}, "unit"), ({"note": "x"}, "note")],
    )
    def test_a_bad_site_default_field_is_named(self, changes: dict[str, Any], param: str) -> None:
        default = user_default(**changes)
        assert refusal({"site_defaults": {"pue": default}}).param == param

    def test_market_prices_must_be_a_list(self) -> None:
        assert "must be a list" in refusal({"market_prices": user_price()}).message

    def test_site_defaults_must_be_a_mapping(self) -> None:
        assert "must map names" in refusal({"site_defaults": [user_default()]}).message

    def test_the_parsers_refuse_the_wrong_shape_of_document(self) -> None:
        with pytest.raises(ConfigurationError):
            parse_market_prices({"model": "x"}, "prices.yaml")
        with pytest.raises(ConfigurationError):
            parse_site_defaults([1, 2], "defaults.yaml")

    @pytest.mark.parametrize(
        ("name", "value"),
        [("cluster_servers_share", "0"), ("build_power_cooling_share", "2")],
    )
    def test_a_site_default_out_of_its_range_is_refused(self, name: str, value: str) -> None:
        """A bad figure in a user's file is bad input: a TokenmillError, not a crash."""
        one_gpu = CostQuery(perf=PerfQuery(gpu="h100-sxm", model="llama-3.1-8b"))
        with pytest.raises(TokenmillError):
            mine = PACKAGED.extended({"site_defaults": {name: user_default(value)}}, "mine.yaml")
            cost_answer(one_gpu, mine)
