"""Tests for the GPU and model catalogs (tokenmill.economics.catalog)."""

from __future__ import annotations

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
    "gb200",
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
            "interconnect_bytes_per_s": 900.0e9,
            "source": "a test",
            "as_of": "2026-11-25",
        }
    }


def _model_document() -> dict[str, dict[str, object]]:
    """A dense entry with Llama 3.1 8B's figures, optional fields left out."""
    return {
        "test-model": {
            "name": "Llama 3.1 8B",
            "parameters": 8_030_000_000,
            "parameters_active": 8_030_000_000,
            "layers": 32,
            "hidden_size": 4096,
            "heads_query": 32,
            "heads_kv": 8,
            "head_dim": 128,
            "kv_bytes_per_token_bf16": 131072,
            "context_tokens": 131072,
            "source": catalog.model("llama-3.1-8b").source,
            "as_of": "2026-11-25",
        }
    }


def _moe_document() -> dict[str, dict[str, object]]:
    """A mixture-of-experts entry with Mixtral 8x7B's figures."""
    return {
        "test-moe": {
            "name": "Mixtral 8x7B",
            "parameters": 46_702_792_704,
            "parameters_active": 12_879_925_248,
            "layers": 32,
            "hidden_size": 4096,
            "heads_query": 32,
            "heads_kv": 8,
            "head_dim": 128,
            "kv_bytes_per_token_bf16": 131072,
            "context_tokens": 32768,
            "experts": 8,
            "experts_per_token": 2,
            "expert_parameters": 45_097_156_608,
            "source": "a test",
            "as_of": "2026-11-25",
        }
    }


def _parse_error(document: dict[str, dict[str, object]]) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        catalog.parse_models(document)
    return caught.value


class TestLoadGpus:
    def test_the_catalog_holds_every_listed_gpu(self) -> None:
        """The packaged catalog has exactly the GPUs the product documents."""
        assert set(catalog.load_gpus()) == GPU_IDS

    @pytest.mark.parametrize("gpu_id", sorted(GPU_IDS))
    def test_every_gpu_names_a_source_and_an_as_of_date(self, gpu_id: str) -> None:
        """Each GPU entry can be traced to a source and an ISO date."""
        gpu = catalog.gpu(gpu_id)
        assert gpu.source.strip()
        assert datetime.date.fromisoformat(gpu.as_of).isoformat() == gpu.as_of

    def test_h100_sxm_figures_match_the_research_notes(self) -> None:
        """The H100 SXM entry carries the economics.md section 1 figures and NVLink 4."""
        h100 = catalog.gpu("h100-sxm")
        assert h100.flops_bf16_per_s == 989e12
        assert h100.flops_fp8_per_s == 1979e12
        assert h100.flops_fp4_per_s is None
        assert h100.memory_bytes == 80_000_000_000
        assert h100.bandwidth_bytes_per_s == 3.35e12
        assert h100.power_w == 700
        assert h100.interconnect_bytes_per_s == 900e9

    def test_gb200_figures_match_the_research_notes(self) -> None:
        """One GB200 GPU: 2.5 / 5 / 10 PFLOP/s dense, 186 GB at 8 TB/s, NVLink 5, 1200 W."""
        gb200 = catalog.gpu("gb200")
        assert gb200.flops_bf16_per_s == 2500e12
        assert gb200.flops_fp8_per_s == 5000e12
        assert gb200.flops_fp4_per_s == 10000e12
        assert gb200.memory_bytes == 186_000_000_000
        assert gb200.bandwidth_bytes_per_s == 8e12
        assert gb200.power_w == 1200
        assert gb200.interconnect_bytes_per_s == 1800e9

    def test_only_blackwell_has_an_fp4_figure(self) -> None:
        """FP4 tensor throughput is listed for the B200 and GB200 only; A100 has no FP8."""
        with_fp4 = {g.id for g in catalog.load_gpus().values() if g.flops_fp4_per_s is not None}
        assert with_fp4 == {"b200", "gb200"}
        assert catalog.gpu("a100-sxm-80gb").flops_fp8_per_s is None

    def test_nvlink_parts_link_faster_than_pcie_parts(self) -> None:
        """Every SXM or Blackwell GPU has a faster scale-up link than any PCIe-only card."""
        nvlink = ("h100-sxm", "h200-sxm", "b200", "gb200", "a100-sxm-80gb")
        pcie = ("h100-pcie", "l40s", "rtx-4090")
        slowest_nvlink = min(catalog.gpu(g).interconnect_bytes_per_s for g in nvlink)
        fastest_pcie = max(catalog.gpu(g).interconnect_bytes_per_s for g in pcie)
        assert slowest_nvlink > fastest_pcie

    def test_the_returned_dict_is_a_fresh_copy(self) -> None:
        """Mutating the returned dict does not change the catalog."""
        catalog.load_gpus().clear()
        assert set(catalog.load_gpus()) == GPU_IDS


class TestLoadModels:
    def test_the_catalog_holds_every_listed_model(self) -> None:
        """The packaged catalog has exactly the models the product documents."""
        assert set(catalog.load_models()) == MODEL_IDS

    @pytest.mark.parametrize("model_id", sorted(MODEL_IDS))
    def test_every_model_names_a_source_and_an_as_of_date(self, model_id: str) -> None:
        """Each model entry can be traced to a source and an ISO date."""
        spec = catalog.model(model_id)
        assert spec.source.strip()
        assert datetime.date.fromisoformat(spec.as_of).isoformat() == spec.as_of

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


class TestMixtureOfExperts:
    @pytest.mark.parametrize("model_id", sorted(MOE_MODEL_IDS))
    def test_every_moe_entry_adds_up(self, model_id: str) -> None:
        """Active experts plus the active dense part make the active parameters, and the
        dense part active lies between 0 and the parameters outside the experts."""
        spec = catalog.model(model_id)
        assert 1 <= spec.experts_per_token <= spec.experts
        assert 1 <= spec.moe_layers <= spec.layers
        assert 1 <= spec.attention_layers <= spec.layers
        assert 0 < spec.dense_parameters_active <= spec.dense_parameters
        assert spec.expert_parameters_active + spec.dense_parameters_active == (
            spec.parameters_active
        )
        assert spec.dense_parameters + spec.expert_parameters == spec.parameters

    @pytest.mark.parametrize(
        ("model_id", "intermediate_size"),
        [
            ("mixtral-8x7b", 14336),
            ("deepseek-v3", 2048),
            ("deepseek-r1", 2048),
            ("llama-4-maverick", 8192),
            ("qwen3-30b-a3b", 768),
            ("qwen3-235b-a22b", 1536),
            ("gpt-oss-20b", 2880),
            ("gpt-oss-120b", 2880),
        ],
    )
    def test_expert_parameters_match_the_expert_shapes(
        self, model_id: str, intermediate_size: int
    ) -> None:
        """MoE layers * experts * 3 matrices of hidden * intermediate, within 0.1%
        (DeepSeek: 58 * 256 * 3 * 7168 * 2048 = 653.9B against the 653.5B listed)."""
        spec = catalog.model(model_id)
        shapes = spec.moe_layers * spec.experts * 3 * spec.hidden_size * intermediate_size
        assert spec.expert_parameters == pytest.approx(shapes, rel=1e-3)

    def test_mixtral_derived_counts_match_the_hand_computation(self) -> None:
        """45,097,156,608 * 2 / 8 = 11,274,289,152 active expert parameters, leaving
        46,702,792,704 - 45,097,156,608 = 1,605,636,096 dense ones, all of them active."""
        spec = catalog.model("mixtral-8x7b")
        assert spec.expert_parameters_active == 11_274_289_152
        assert spec.dense_parameters == 1_605_636_096
        assert spec.dense_parameters_active == 12_879_925_248 - 11_274_289_152
        assert spec.moe_layers == 32  # every layer, by default

    def test_deepseek_keeps_its_dense_layers_and_mla_widths(self) -> None:
        """3 of 61 layers are dense; all 61 attend, with 576-wide scores over 512-wide values."""
        spec = catalog.model("deepseek-v3")
        assert spec.moe_layers == 58
        assert spec.attention_layers == 61
        assert (spec.attention_dim_qk, spec.attention_dim_v) == (576, 512)
        assert spec.heads_kv == 1
        assert spec.expert_parameters_active == 653_500_000_000 * 8 // 256

    @pytest.mark.parametrize(
        ("model_id", "attention_layers"), [("gpt-oss-20b", 12), ("gpt-oss-120b", 18)]
    )
    def test_gpt_oss_ships_fp4_experts_and_half_its_layers_attend_fully(
        self, model_id: str, attention_layers: int
    ) -> None:
        """gpt-oss's experts are MXFP4 and only every other layer attends over the context."""
        spec = catalog.model(model_id)
        assert spec.expert_precision == "fp4"
        assert spec.attention_layers == attention_layers == spec.layers // 2

    @pytest.mark.parametrize("model_id", sorted(MODEL_IDS - MOE_MODEL_IDS))
    def test_a_dense_model_has_no_experts_and_attends_in_every_layer(self, model_id: str) -> None:
        """Without 'experts' every expert field is empty and the attention defaults apply."""
        spec = catalog.model(model_id)
        assert (spec.experts, spec.experts_per_token, spec.expert_parameters) == (0, 0, 0)
        assert (spec.moe_layers, spec.expert_precision) == (0, None)
        assert spec.expert_parameters_active == 0
        assert spec.dense_parameters == spec.dense_parameters_active == spec.parameters
        assert spec.attention_layers == spec.layers
        assert spec.attention_dim_qk == spec.attention_dim_v == spec.head_dim


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
        assert gpu.interconnect_bytes_per_s == 900e9
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
            ("interconnect_bytes_per_s", 0),
            ("interconnect_bytes_per_s", None),
            ("name", ""),
            ("source", "  "),
            ("as_of", "last tuesday"),
            ("as_of", None),
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

    @pytest.mark.parametrize("field", ["interconnect_bytes_per_s", "source", "as_of"])
    def test_a_missing_field_names_the_entry_and_field(self, field: str) -> None:
        """An entry without a required field is a ConfigurationError naming it."""
        document = _gpu_document()
        del document["test-gpu"][field]
        with pytest.raises(
            ConfigurationError, match=rf"'test-gpu'.*'{field}' is missing"
        ) as caught:
            catalog.parse_gpus(document)
        assert caught.value.param == field

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
    def test_a_valid_dense_document_parses(self) -> None:
        """A complete dense entry parses to Llama 3.1 8B's spec under its new id."""
        spec = catalog.parse_models(_model_document())["test-model"]
        assert spec == dataclasses.replace(catalog.model("llama-3.1-8b"), id="test-model")

    def test_a_valid_moe_document_parses(self) -> None:
        """A complete MoE entry parses to Mixtral's spec, moe_layers defaulting to all 32."""
        spec = catalog.parse_models(_moe_document())["test-moe"]
        mixtral = catalog.model("mixtral-8x7b")
        assert spec == dataclasses.replace(mixtral, id="test-moe", source="a test")

    @pytest.mark.parametrize(
        ("field", "bad_value"),
        [
            ("layers", 0),
            ("layers", "32"),
            ("parameters", 8.03e9),
            ("context_tokens", None),
            ("source", ""),
            ("as_of", "2026-13-01"),
            ("attention_layers", 0),
            ("attention_dim_qk", -1),
            ("attention_dim_v", 1.5),
        ],
    )
    def test_a_wrong_typed_field_names_the_entry_and_field(
        self, field: str, bad_value: object
    ) -> None:
        """A field of the wrong type or range is a ConfigurationError naming the field."""
        document = _model_document()
        document["test-model"][field] = bad_value
        error = _parse_error(document)
        assert error.param == field
        assert "'test-model'" in error.message

    def test_more_active_than_total_parameters_is_rejected(self) -> None:
        """Active parameters cannot exceed the total."""
        document = _model_document()
        document["test-model"]["parameters_active"] = 9_000_000_000
        assert _parse_error(document).param == "parameters_active"

    def test_more_attention_layers_than_layers_are_rejected(self) -> None:
        """33 attention layers in a 32-layer model name the entry and attention_layers."""
        document = _model_document()
        document["test-model"]["attention_layers"] = 33
        error = _parse_error(document)
        assert error.param == "attention_layers"
        assert "'test-model'" in error.message

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("experts_per_token", 2),
            ("expert_parameters", 1_000_000_000),
            ("moe_layers", 32),
            ("expert_precision", "fp4"),
        ],
    )
    def test_an_expert_field_without_experts_is_rejected(self, field: str, value: object) -> None:
        """Expert fields belong to a mixture of experts: without 'experts' they are an error."""
        document = _model_document()
        document["test-model"][field] = value
        error = _parse_error(document)
        assert error.param == field
        assert "'test-model'" in error.message
        assert "needs 'experts'" in error.message

    @pytest.mark.parametrize(
        ("field", "bad_value"),
        [
            ("experts", 0),
            ("experts_per_token", 9),  # more than the 8 experts
            ("experts_per_token", None),
            ("expert_parameters", 46_702_792_704),  # all the parameters
            ("moe_layers", 33),  # more than the 32 layers
            ("expert_precision", "int4"),
            ("expert_precision", "fp32"),
            ("expert_precision", 4),
        ],
    )
    def test_a_wrong_moe_field_names_the_entry_and_field(
        self, field: str, bad_value: object
    ) -> None:
        """An MoE field out of range, or at odds with another, is an error naming it."""
        document = _moe_document()
        document["test-moe"][field] = bad_value
        error = _parse_error(document)
        assert error.param == field
        assert "'test-moe'" in error.message

    def test_experts_without_experts_per_token_are_rejected(self) -> None:
        """An MoE entry must say how many experts each token uses."""
        document = _moe_document()
        del document["test-moe"]["experts_per_token"]
        error = _parse_error(document)
        assert error.param == "experts_per_token"
        assert "is missing" in error.message

    @pytest.mark.parametrize(
        "parameters_active",
        [
            11_000_000_000,  # below the 11.27B the two active experts alone hold
            46_702_792_704,  # leaves 35.4B active outside the experts, of 1.6B there
        ],
    )
    def test_moe_counts_that_do_not_add_up_are_rejected(self, parameters_active: int) -> None:
        """parameters_active minus 45.1B * 2 / 8 must lie in [0, 46.7B - 45.1B]."""
        document = _moe_document()
        document["test-moe"]["parameters_active"] = parameters_active
        error = _parse_error(document)
        assert error.param == "expert_parameters"
        assert "'test-moe'" in error.message
        assert "does not add up" in error.message
