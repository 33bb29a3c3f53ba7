"""Tests for the GPU and model catalogs (tokenmill.economics.catalog)."""

from __future__ import annotations

import copy
import dataclasses
import datetime

import pytest

from tokenmill.economics import catalog
from tokenmill.errors import ConfigurationError, NotFound

GPU_IDS = {
    "h100-sxm",
    "h100-pcie",
    "h200-sxm",
    "b200",
    "a100-sxm-80gb",
    "l40s",
    "rtx-4090",
    "mi300x",
}
MODEL_IDS = {
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.3-70b",
    "llama-3.1-405b",
    "qwen2.5-72b",
    "mixtral-8x7b",
    "deepseek-v3",
    "llama-2-70b",
    "llama-4-maverick",
    "qwen3-30b-a3b",
    "qwen3-235b-a22b",
    "deepseek-r1",
    "gpt-oss-20b",
    "gpt-oss-120b",
}
MLA_MODEL_IDS = {"deepseek-v3", "deepseek-r1"}
SLIDING_WINDOW_MODEL_IDS = {"gpt-oss-20b", "gpt-oss-120b"}
MOE_MODEL_IDS = {
    "mixtral-8x7b",
    "deepseek-v3",
    "deepseek-r1",
    "llama-4-maverick",
    "qwen3-30b-a3b",
    "qwen3-235b-a22b",
    "gpt-oss-20b",
    "gpt-oss-120b",
}


def _gpu_document() -> dict[str, dict[str, object]]:
    return {
        "test-gpu": {
            "name": "Test GPU",
            "flops_bf16_per_s": 1.0e15,
            "flops_fp8_per_s": 2.0e15,
            "flops_fp4_per_s": None,
            "memory_bytes": 80_000_000_000,
            "bandwidth_bytes_per_s": 3.0e12,
            "power_w": 700,
            "source": "a test",
            "as_of": "2026-11-25",
        }
    }


def _model_document() -> dict[str, dict[str, object]]:
    spec = dataclasses.asdict(catalog.model("llama-3.1-8b"))
    del spec["id"]
    return {"test-model": spec}


class TestLoadGpus:
    def test_the_catalog_holds_every_listed_gpu(self) -> None:
        """The packaged catalog has exactly the GPUs the product documents."""
        assert set(catalog.load_gpus()) == GPU_IDS

    def test_every_gpu_names_a_source_and_an_as_of_date(self) -> None:
        """Each GPU entry can be traced to a source and a date."""
        for gpu in catalog.load_gpus().values():
            assert gpu.source.strip()
            datetime.date.fromisoformat(gpu.as_of)

    def test_h100_sxm_figures_match_the_research_notes(self) -> None:
        """The H100 SXM entry carries the economics.md section 1 figures."""
        h100 = catalog.gpu("h100-sxm")
        assert h100.flops_bf16_per_s == 989e12
        assert h100.flops_fp8_per_s == 1979e12
        assert h100.flops_fp4_per_s is None
        assert h100.memory_bytes == 80_000_000_000
        assert h100.bandwidth_bytes_per_s == 3.35e12
        assert h100.power_w == 700

    def test_only_the_b200_has_an_fp4_figure(self) -> None:
        """FP4 tensor throughput is listed for Blackwell only; A100 has no FP8."""
        with_fp4 = {g.id for g in catalog.load_gpus().values() if g.flops_fp4_per_s is not None}
        assert with_fp4 == {"b200"}
        assert catalog.gpu("a100-sxm-80gb").flops_fp8_per_s is None

    def test_the_returned_dict_is_a_fresh_copy(self) -> None:
        """Mutating the returned dict does not change the catalog."""
        catalog.load_gpus().clear()
        assert set(catalog.load_gpus()) == GPU_IDS


class TestLoadModels:
    def test_the_catalog_holds_every_listed_model(self) -> None:
        """The packaged catalog has exactly the models the product documents."""
        assert set(catalog.load_models()) == MODEL_IDS

    def test_every_model_names_a_source_and_an_as_of_date(self) -> None:
        """Each model entry can be traced to a source and a date."""
        for spec in catalog.load_models().values():
            assert spec.source.strip()
            datetime.date.fromisoformat(spec.as_of)

    def test_kv_bytes_follow_the_formula_for_grouped_query_attention(self) -> None:
        """KV bytes per token are 2 * layers * kv heads * head_dim * 2 for every plain-GQA model."""
        for spec in catalog.load_models().values():
            if spec.id in MLA_MODEL_IDS | SLIDING_WINDOW_MODEL_IDS:
                continue
            expected = 2 * spec.layers * spec.heads_kv * spec.head_dim * 2
            assert spec.kv_bytes_per_token_bf16 == expected, spec.id

    def test_deepseek_v3_caches_only_the_mla_latent(self) -> None:
        """DeepSeek-V3 caches 576 latent values per layer: 61 * 576 * 2 bytes."""
        assert catalog.model("deepseek-v3").kv_bytes_per_token_bf16 == 61 * 576 * 2

    def test_dense_models_have_all_parameters_active(self) -> None:
        """Only the mixture-of-experts models have fewer active than total parameters."""
        moe = {m.id for m in catalog.load_models().values() if m.parameters_active < m.parameters}
        assert moe == MOE_MODEL_IDS

    def test_llama_3_3_70b_shares_the_llama_3_1_70b_architecture(self) -> None:
        """Llama 3.3 70B differs from 3.1 70B only in name, source and training."""
        old = dataclasses.replace(catalog.model("llama-3.1-70b"), id="", name="", source="")
        new = dataclasses.replace(catalog.model("llama-3.3-70b"), id="", name="", source="")
        assert old == new


class TestAddedModels:
    ADDED_IDS = (
        "llama-2-70b",
        "llama-4-maverick",
        "qwen3-30b-a3b",
        "qwen3-235b-a22b",
        "deepseek-r1",
        "gpt-oss-20b",
        "gpt-oss-120b",
    )

    @pytest.mark.parametrize("model_id", ADDED_IDS)
    def test_each_added_model_loads_under_its_id(self, model_id: str) -> None:
        """Every added id resolves to a spec carrying that id, a source and a date."""
        spec = catalog.model(model_id)
        assert spec.id == model_id
        assert spec.source.strip()
        datetime.date.fromisoformat(spec.as_of)

    @pytest.mark.parametrize("model_id", ADDED_IDS)
    def test_active_parameters_are_fewer_only_for_mixture_of_experts(self, model_id: str) -> None:
        """An added MoE model has fewer active than total parameters; a dense one has all."""
        spec = catalog.model(model_id)
        if model_id in MOE_MODEL_IDS:
            assert spec.parameters_active < spec.parameters
        else:
            assert spec.parameters_active == spec.parameters

    @pytest.mark.parametrize(
        "model_id", ["llama-2-70b", "llama-4-maverick", "qwen3-30b-a3b", "qwen3-235b-a22b"]
    )
    def test_plain_attention_kv_bytes_match_the_entry_fields(self, model_id: str) -> None:
        """KV bytes per token equal 2 * layers * kv heads * head_dim * 2 from the entry itself."""
        spec = catalog.model(model_id)
        expected = 2 * spec.layers * spec.heads_kv * spec.head_dim * 2
        assert spec.kv_bytes_per_token_bf16 == expected

    @pytest.mark.parametrize("model_id", sorted(SLIDING_WINDOW_MODEL_IDS))
    def test_gpt_oss_counts_only_the_full_attention_half_of_its_layers(self, model_id: str) -> None:
        """gpt-oss alternates window and full layers; only the full half is counted."""
        spec = catalog.model(model_id)
        assert spec.layers % 2 == 0
        expected = 2 * (spec.layers // 2) * spec.heads_kv * spec.head_dim * 2
        assert spec.kv_bytes_per_token_bf16 == expected

    def test_deepseek_r1_shares_the_deepseek_v3_architecture(self) -> None:
        """DeepSeek-R1 differs from V3 only in name and source, MLA cache figure included."""
        v3 = dataclasses.replace(catalog.model("deepseek-v3"), id="", name="", source="")
        r1 = dataclasses.replace(catalog.model("deepseek-r1"), id="", name="", source="")
        assert v3 == r1
        assert catalog.model("deepseek-r1").kv_bytes_per_token_bf16 == 61 * 576 * 2


class TestLookup:
    def test_an_unknown_gpu_is_not_found_with_the_known_ids(self) -> None:
        """Asking for a GPU the catalog lacks names the parameter and lists the known ids."""
        with pytest.raises(NotFound) as caught:
            catalog.gpu("tpu-v5")
        assert caught.value.param == "gpu"
        assert "unknown GPU 'tpu-v5'" in caught.value.message
        assert "h100-sxm" in caught.value.message

    def test_an_unknown_model_is_not_found_with_the_known_ids(self) -> None:
        """Asking for a model the catalog lacks names the parameter and lists the known ids."""
        with pytest.raises(NotFound) as caught:
            catalog.model("gpt-5")
        assert caught.value.param == "model"
        assert "llama-3.1-8b" in caught.value.message


class TestParseGpus:
    def test_a_valid_document_parses(self) -> None:
        """A complete entry becomes a Gpu with its id and float figures."""
        gpu = catalog.parse_gpus(_gpu_document())["test-gpu"]
        assert gpu.id == "test-gpu"
        assert gpu.power_w == 700.0
        assert gpu.flops_fp4_per_s is None

    def test_an_unquoted_yaml_date_is_accepted(self) -> None:
        """A date that YAML already parsed into a date object is kept as ISO text."""
        document = _gpu_document()
        document["test-gpu"]["as_of"] = datetime.date(2026, 11, 25)
        assert catalog.parse_gpus(document)["test-gpu"].as_of == "2026-11-25"

    @pytest.mark.parametrize(
        ("field", "bad_value"),
        [
            ("flops_bf16_per_s", "989e12"),
            ("flops_bf16_per_s", None),
            ("flops_fp8_per_s", -1.0),
            ("memory_bytes", 80.5e9),
            ("memory_bytes", True),
            ("bandwidth_bytes_per_s", float("nan")),
            ("name", ""),
            ("as_of", "last tuesday"),
        ],
    )
    def test_a_wrong_typed_field_names_the_entry_and_field(
        self, field: str, bad_value: object
    ) -> None:
        """A field of the wrong type or range is a ConfigurationError naming it."""
        document = _gpu_document()
        document["test-gpu"][field] = bad_value
        with pytest.raises(ConfigurationError) as caught:
            catalog.parse_gpus(document)
        assert caught.value.param == field
        assert "'test-gpu'" in caught.value.message

    def test_a_missing_field_names_the_entry_and_field(self) -> None:
        """An entry without a required field is a ConfigurationError naming it."""
        document = _gpu_document()
        del document["test-gpu"]["source"]
        with pytest.raises(ConfigurationError, match=r"'test-gpu'.*'source' is missing"):
            catalog.parse_gpus(document)

    def test_an_unknown_field_is_rejected(self) -> None:
        """A misspelt field is an error, not silently ignored."""
        document = _gpu_document()
        document["test-gpu"]["memroy_bytes"] = 1
        with pytest.raises(ConfigurationError) as caught:
            catalog.parse_gpus(document)
        assert caught.value.param == "memroy_bytes"

    @pytest.mark.parametrize("document", [None, [], {}, {"x": "not a mapping"}, {1: {}}])
    def test_a_malformed_document_is_rejected(self, document: object) -> None:
        """A document that is not a mapping of id to entry is a ConfigurationError."""
        with pytest.raises(ConfigurationError):
            catalog.parse_gpus(document)


class TestParseModels:
    def test_a_valid_document_parses(self) -> None:
        """A complete model entry parses to an equal ModelSpec under its new id."""
        spec = catalog.parse_models(_model_document())["test-model"]
        assert spec == dataclasses.replace(catalog.model("llama-3.1-8b"), id="test-model")

    @pytest.mark.parametrize(
        ("field", "bad_value"),
        [("layers", 0), ("layers", "32"), ("parameters", 8.03e9), ("context_tokens", None)],
    )
    def test_a_wrong_typed_field_names_the_entry_and_field(
        self, field: str, bad_value: object
    ) -> None:
        """A count that is not a positive int is a ConfigurationError naming the field."""
        document = copy.deepcopy(_model_document())
        document["test-model"][field] = bad_value
        with pytest.raises(ConfigurationError) as caught:
            catalog.parse_models(document)
        assert caught.value.param == field
        assert "'test-model'" in caught.value.message

    def test_more_active_than_total_parameters_is_rejected(self) -> None:
        """Active parameters cannot exceed the total."""
        document = _model_document()
        document["test-model"]["parameters_active"] = 9_000_000_000
        with pytest.raises(ConfigurationError) as caught:
            catalog.parse_models(document)
        assert caught.value.param == "parameters_active"
