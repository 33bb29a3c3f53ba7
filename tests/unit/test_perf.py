"""Tests for the performance model (tokenmill.economics.perf)."""

from __future__ import annotations

import dataclasses

import pytest

from tokenmill.economics import catalog, perf
from tokenmill.economics.perf import Setup
from tokenmill.errors import InvalidRequest

H100 = catalog.gpu("h100-sxm")
LLAMA_8B = catalog.model("llama-3.1-8b")
LLAMA_70B = catalog.model("llama-3.1-70b")
MIXTRAL = catalog.model("mixtral-8x7b")


def _setup_8b(**changes: object) -> Setup:
    setup = Setup(gpu=H100, gpu_count=1, model=LLAMA_8B)
    return dataclasses.replace(setup, **changes)  # type: ignore[arg-type]


class TestWeightBytes:
    def test_llama_8b_in_bf16_weighs_16_06_gb(self) -> None:
        """8.03B parameters at two bytes each are 16.06 GB."""
        assert perf.weight_bytes(_setup_8b()) == pytest.approx(16.06e9)

    def test_fp8_halves_and_fp4_quarters_the_weight_bytes(self) -> None:
        """Weight bytes scale with the bytes per weight of the precision."""
        bf16_bytes = perf.weight_bytes(_setup_8b())
        assert perf.weight_bytes(_setup_8b(precision="fp8")) == pytest.approx(bf16_bytes / 2)
        assert perf.weight_bytes(_setup_8b(precision="fp4")) == pytest.approx(bf16_bytes / 4)


class TestKvCache:
    def test_kv_bytes_per_token_follow_the_kv_precision(self) -> None:
        """BF16 KV keeps the catalog figure; FP8 KV halves it regardless of weight precision."""
        assert perf.kv_bytes_per_token(_setup_8b(precision="fp8")) == 131072
        assert perf.kv_bytes_per_token(_setup_8b(kv_precision="fp8")) == 65536

    def test_llama_8b_on_one_h100_holds_the_hand_computed_capacity(self) -> None:
        """(80 GB * 0.9 - 16.06 GB) / 128 KiB per token, rounded down."""
        expected = int((80e9 * 0.9 - 16.06e9) // 131072)
        assert perf.kv_capacity_tokens(_setup_8b()) == expected

    def test_llama_70b_in_bf16_does_not_fit_on_one_h100(self) -> None:
        """141 GB of weights exceed one H100's 72 usable GB: no KV room, does not fit."""
        setup = Setup(gpu=H100, gpu_count=1, model=LLAMA_70B)
        assert perf.kv_capacity_tokens(setup) == 0
        assert not perf.fits(setup)
        assert perf.batch_max(setup, 1000) == 0

    def test_llama_70b_in_bf16_fits_on_two_h100s(self) -> None:
        """Two H100s give 144 usable GB, a few GB more than the 141 GB of weights."""
        setup = Setup(gpu=H100, gpu_count=2, model=LLAMA_70B)
        assert perf.fits(setup)
        assert perf.kv_capacity_tokens(setup) == int((144e9 - 141.2e9) // 327680)

    def test_batch_max_shrinks_as_requests_grow(self) -> None:
        """Longer requests leave room for fewer of them at once."""
        setup = _setup_8b()
        sizes = [perf.batch_max(setup, tokens) for tokens in (500, 1000, 2000, 8000, 10**9)]
        assert sizes == sorted(sizes, reverse=True)
        assert sizes[0] > sizes[3] > 0
        assert sizes[-1] == 0

    def test_batch_max_divides_the_capacity(self) -> None:
        """batch_max is the KV capacity divided by tokens per request, rounded down."""
        setup = _setup_8b()
        assert perf.batch_max(setup, 2000) == perf.kv_capacity_tokens(setup) // 2000

    def test_a_larger_reserve_leaves_less_kv_room(self) -> None:
        """Reserving more memory shrinks the KV capacity."""
        small = perf.kv_capacity_tokens(_setup_8b(memory_reserve_ratio=0.0))
        large = perf.kv_capacity_tokens(_setup_8b(memory_reserve_ratio=0.3))
        assert small > large > 0


class TestPeakFlops:
    def test_peak_uses_the_precision_figure_times_the_gpu_count(self) -> None:
        """Two H100s at FP8 peak at twice 1,979 TFLOP/s."""
        setup = _setup_8b(precision="fp8", gpu_count=2)
        assert perf.peak_flops_per_s(setup) == pytest.approx(2 * 1979e12)

    def test_fp16_uses_the_bf16_figure(self) -> None:
        """FP16 and BF16 tensor throughput are the same on every catalog GPU."""
        assert perf.peak_flops_per_s(_setup_8b(precision="fp16")) == 989e12

    def test_a_precision_the_gpu_lacks_is_rejected(self) -> None:
        """An H100 has no FP4 tensor cores and an A100 no FP8: InvalidRequest on precision."""
        with pytest.raises(InvalidRequest) as caught:
            perf.peak_flops_per_s(_setup_8b(precision="fp4"))
        assert caught.value.param == "precision"
        a100 = _setup_8b(gpu=catalog.gpu("a100-sxm-80gb"), precision="fp8")
        with pytest.raises(InvalidRequest):
            perf.prefill_time_s(a100, 100)


class TestPrefill:
    def test_llama_8b_prefill_of_1000_tokens_matches_the_hand_computation(self) -> None:
        """2 * 8.03e9 * 1000 FLOPs at half of 989 TFLOP/s take about 32.5 ms."""
        expected_s = 2 * 8.03e9 * 1000 / (989e12 * 0.5)
        assert perf.prefill_time_s(_setup_8b(), 1000) == pytest.approx(expected_s)
        assert expected_s == pytest.approx(0.03248, rel=1e-3)

    def test_prefill_is_linear_in_tokens(self) -> None:
        """Twice the prompt takes twice as long; no prompt takes no time."""
        setup = _setup_8b()
        assert perf.prefill_time_s(setup, 0) == 0.0
        one = perf.prefill_time_s(setup, 777)
        assert perf.prefill_time_s(setup, 2 * 777) == pytest.approx(2 * one)

    def test_fp8_prefill_is_twice_as_fast_on_an_h100(self) -> None:
        """FP8 doubles the H100's peak, halving the compute-bound prefill."""
        bf16_s = perf.prefill_time_s(_setup_8b(), 4096)
        fp8_s = perf.prefill_time_s(_setup_8b(precision="fp8"), 4096)
        assert fp8_s == pytest.approx(bf16_s / 2, rel=1e-3)

    def test_negative_or_non_integer_tokens_are_rejected(self) -> None:
        """Prompt tokens must be an integer >= 0."""
        for bad in (-1, 1.5, True):
            with pytest.raises(InvalidRequest) as caught:
                perf.prefill_time_s(_setup_8b(), bad)  # type: ignore[arg-type]
            assert caught.value.param == "prompt_tokens"


class TestDecodeStep:
    def test_llama_8b_batch_1_is_memory_bound_at_the_hand_computed_time(self) -> None:
        """Reading 16.06 GB at 70% of 3.35 TB/s plus 3 ms overhead: about 9.85 ms."""
        setup = _setup_8b()
        expected_s = 16.06e9 / (3.35e12 * 0.7) + 0.003
        assert perf.decode_step_time_s(setup, 1, 0) == pytest.approx(expected_s)
        assert perf.bound(setup, 1, 0) == "memory"

    def test_kv_reads_add_to_the_memory_time(self) -> None:
        """Each KV token in the batch adds its bytes to the bytes read per step."""
        setup = _setup_8b()
        expected_s = (16.06e9 + 10_000 * 131072) / (3.35e12 * 0.7) + 0.003
        assert perf.decode_step_time_s(setup, 4, 10_000) == pytest.approx(expected_s)

    def test_a_large_batch_turns_compute_bound(self) -> None:
        """With no KV, enough requests per step make the compute roof the limit."""
        setup = _setup_8b()
        batch = 4096
        expected_s = 2 * 8.03e9 * batch / (989e12 * 0.5) + 0.003
        assert perf.bound(setup, batch, 0) == "compute"
        assert perf.decode_step_time_s(setup, batch, 0) == pytest.approx(expected_s)

    def test_step_time_is_monotone_in_batch(self) -> None:
        """A bigger batch never takes less time per step."""
        setup = _setup_8b()
        times = [perf.decode_step_time_s(setup, batch, 50_000) for batch in range(1, 5000, 97)]
        assert times == sorted(times)

    def test_step_time_is_monotone_in_kv_tokens(self) -> None:
        """More KV tokens never take less time per step."""
        setup = _setup_8b()
        times = [perf.decode_step_time_s(setup, 64, kv) for kv in range(0, 400_000, 9_999)]
        assert times == sorted(times)
        assert times[-1] > times[0]

    def test_overhead_is_added_once_per_step(self) -> None:
        """Raising the step overhead by 1 ms raises the step time by exactly 1 ms."""
        base_s = perf.decode_step_time_s(_setup_8b(), 8, 1000)
        slower_s = perf.decode_step_time_s(_setup_8b(step_overhead_s=0.004), 8, 1000)
        assert slower_s - base_s == pytest.approx(0.001)

    def test_moe_reads_only_active_weights_at_batch_1(self) -> None:
        """Mixtral at batch 1 reads its 12.9B active parameters, not all 46.7B."""
        setup = Setup(gpu=H100, gpu_count=2, model=MIXTRAL)
        expected_s = 2 * 12.9e9 / (2 * 3.35e12 * 0.7) + 0.003
        assert perf.decode_step_time_s(setup, 1, 0) == pytest.approx(expected_s)

    def test_moe_reads_are_capped_at_all_weights(self) -> None:
        """From batch 4 on Mixtral touches every expert: all 46.7B parameters are read."""
        setup = Setup(gpu=H100, gpu_count=2, model=MIXTRAL)
        expected_s = 2 * 46.7e9 / (2 * 3.35e12 * 0.7) + 0.003
        assert perf.decode_step_time_s(setup, 4, 0) == pytest.approx(expected_s)
        assert perf.decode_step_time_s(setup, 16, 0) == pytest.approx(expected_s)

    @pytest.mark.parametrize(
        ("batch", "kv_tokens_total", "param"),
        [(0, 0, "batch"), (-3, 0, "batch"), (1, -1, "kv_tokens_total"), (2.0, 0, "batch")],
    )
    def test_bad_batch_or_kv_tokens_are_rejected(
        self, batch: int, kv_tokens_total: int, param: str
    ) -> None:
        """Batch must be >= 1 and KV tokens >= 0, both integers."""
        for function in (perf.decode_step_time_s, perf.bound, perf.output_tokens_per_s):
            with pytest.raises(InvalidRequest) as caught:
                function(_setup_8b(), batch, kv_tokens_total)
            assert caught.value.param == param


class TestOutputTokensPerS:
    def test_throughput_is_batch_over_step_time(self) -> None:
        """Each request in the batch emits one token per decode step."""
        setup = _setup_8b()
        step_s = perf.decode_step_time_s(setup, 32, 64_000)
        assert perf.output_tokens_per_s(setup, 32, 64_000) == pytest.approx(32 / step_s)

    def test_llama_8b_fp8_on_one_h100_lands_in_the_published_range(self) -> None:
        """Batch 64 at 2,000 tokens each gives 1k-10k tokens/s, as published measurements do.

        See /work/shared/research/throughput-calibration.md (NVIDIA TensorRT-LLM perf overview:
        a few thousand output tokens/s per Hopper GPU for models of this size).
        """
        setup = _setup_8b(precision="fp8")
        assert perf.batch_max(setup, 2000) >= 64
        tokens_per_s = perf.output_tokens_per_s(setup, 64, 64 * 2000)
        assert 1_000 < tokens_per_s < 10_000


class TestSetupValidation:
    @pytest.mark.parametrize(
        ("field", "bad_value"),
        [
            ("gpu_count", 0),
            ("gpu_count", 1.0),
            ("precision", "int4"),
            ("kv_precision", "fp32"),
            ("efficiency_compute_ratio", 0.0),
            ("efficiency_compute_ratio", 1.5),
            ("efficiency_memory_ratio", float("nan")),
            ("step_overhead_s", -0.001),
            ("memory_reserve_ratio", 1.0),
            ("memory_reserve_ratio", -0.1),
        ],
    )
    def test_a_bad_setting_is_rejected_naming_it(self, field: str, bad_value: object) -> None:
        """Each out-of-range setting raises InvalidRequest with the setting as param."""
        with pytest.raises(InvalidRequest) as caught:
            _setup_8b(**{field: bad_value})
        assert caught.value.param == field

    def test_batch_max_rejects_empty_requests(self) -> None:
        """Tokens per request must be at least one."""
        with pytest.raises(InvalidRequest) as caught:
            perf.batch_max(_setup_8b(), 0)
        assert caught.value.param == "tokens_per_request"
