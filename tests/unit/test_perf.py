"""Tests for the performance model (tokenmill.economics.perf).

Expected values are worked out by hand from the formulas in perf.py's docstrings, with the
catalog figures they use:

* H100 SXM: 989 TFLOP/s bf16, 1979 fp8, 80 GB, 3.35 TB/s, 900 GB/s interconnect (both ways);
* B200: 2250 / 4500 / 9000 TFLOP/s bf16 / fp8 / fp4, 180 GB, 8 TB/s, 1800 GB/s interconnect;
* Llama 3.1 8B: 8.03B parameters, 32 layers, hidden 4096, 32 query / 8 KV heads of 128,
  131,072 KV bytes per token in bf16;
* Mixtral 8x7B: 46,702,792,704 parameters of which 45,097,156,608 in 8 experts, top-2;
* DeepSeek-V3: 671B parameters of which 653.5B in 256 experts, top-8, 58 MoE layers of 61,
  one latent KV "head", 70,272 KV bytes per token in bf16, hidden 7168.

With the default factors (e_c 0.5, e_m 0.7, e_net 0.7) an H100 computes at 494.5 TFLOP/s,
reads at 2.345 TB/s and sends at 900 / 2 * 0.7 = 315 GB/s.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tokenmill.economics import catalog, perf
from tokenmill.economics.catalog import Gpu, ModelSpec
from tokenmill.economics.perf import Setup
from tokenmill.errors import InvalidRequest

H100 = catalog.gpu("h100-sxm")
H200 = catalog.gpu("h200-sxm")
B200 = catalog.gpu("b200")
A100 = catalog.gpu("a100-sxm-80gb")
LLAMA_8B = catalog.model("llama-3.1-8b")
LLAMA_70B = catalog.model("llama-3.1-70b")
MIXTRAL = catalog.model("mixtral-8x7b")
DEEPSEEK = catalog.model("deepseek-v3")
GPT_OSS_120B = catalog.model("gpt-oss-120b")

H100_PEAK_BF16 = 989e12 * 0.5  # FLOP/s at the default e_c
H100_BANDWIDTH = 3.35e12 * 0.7  # bytes/s at the default e_m
H100_LINK = 900e9 / 2 * 0.7  # bytes/s one way at the default e_net
# Attention FLOPs per (query, key) pair of Llama 8B: 2 * 32 layers * 32 heads * (128 + 128).
LLAMA_8B_PAIR_FLOPS = 2 * 32 * 32 * 256
LLAMA_8B_USABLE_KV_TOKENS = 426_788  # (80 GB * 0.9 - 16.06 GB) / 131072, rounded down
# DeepSeek-V3's active routed-expert parameters: 653.5B * 8 / 256.
DEEPSEEK_EXPERT_ACTIVE = 20_421_875_000
# Mixtral's dense part: 46,702,792,704 - 45,097,156,608 parameters, all active.
MIXTRAL_DENSE = 1_605_636_096


def _setup_8b(**fields: object) -> Setup:
    """Llama 3.1 8B on one H100, bf16, default factors unless ``fields`` say otherwise."""
    arguments: dict[str, object] = {"gpu": H100, "gpu_count": 1, "model": LLAMA_8B, **fields}
    return Setup(**arguments)


def _deepseek(parallel: str, **fields: object) -> Setup:
    """DeepSeek-V3 in fp8 (fp8 KV) on eight B200s."""
    return Setup(
        gpu=B200,
        gpu_count=8,
        model=DEEPSEEK,
        precision="fp8",
        parallel=parallel,
        **fields,
    )


# Every factor that takes a share or adds a fixed time, set so that a step is its roofs only.
_IDEAL = {
    "efficiency_compute_ratio": 1.0,
    "efficiency_memory_ratio": 1.0,
    "efficiency_moe_ratio": 1.0,
    "efficiency_network_ratio": 1.0,
    "moe_token_overhead_s": 0.0,
    "collective_latency_s": 0.0,
    "step_overhead_s": 0.0,
}


class TestWeightBytes:
    def test_llama_8b_weighs_two_one_and_a_little_over_half_a_byte_per_parameter(self) -> None:
        """8.03B parameters: 16.06 GB in bf16, 8.03 GB in fp8, 8.03B * 0.5625 in fp4."""
        assert perf.weight_bytes(_setup_8b()) == pytest.approx(16.06e9)
        assert perf.weight_bytes(_setup_8b(precision="fp8")) == pytest.approx(8.03e9)
        assert perf.weight_bytes(_setup_8b(precision="fp4")) == pytest.approx(4.516875e9)

    def test_fp4_counts_its_block_scales(self) -> None:
        """NVFP4 is 4 bits plus one 8-bit scale per 16 values: 4.5 bits, 0.5625 bytes."""
        assert perf.PRECISION_BYTES["fp4"] == (4 + 8 / 16) / 8

    @pytest.mark.parametrize(
        ("precision", "expected_bytes"),
        [
            # dense 117B - 114.6B = 2.4B at the chosen precision, experts at fp4 throughout
            ("bf16", 2.4e9 * 2 + 114.6e9 * 0.5625),  # 4.8 + 64.4625 = 69.2625 GB
            ("fp8", 2.4e9 * 1 + 114.6e9 * 0.5625),  # 2.4 + 64.4625 = 66.8625 GB
            ("fp4", 117e9 * 0.5625),  # 65.8125 GB
        ],
    )
    def test_gpt_oss_keeps_its_experts_at_fp4(self, precision: str, expected_bytes: float) -> None:
        """gpt-oss ships MXFP4 experts: a bigger precision widens only its dense part."""
        setup = Setup(gpu=B200, gpu_count=1, model=GPT_OSS_120B, precision=precision)
        assert perf.weight_bytes(setup) == pytest.approx(expected_bytes)

    def test_experts_without_a_checkpoint_precision_follow_the_chosen_one(self) -> None:
        """Mixtral in fp8 is one byte per parameter, experts included: 46.7 GB."""
        setup = Setup(gpu=H100, gpu_count=2, model=MIXTRAL, precision="fp8")
        assert perf.weight_bytes(setup) == pytest.approx(46_702_792_704)


class TestKvBytesPerToken:
    @pytest.mark.parametrize(
        ("fields", "expected_bytes"),
        [
            ({}, 131072),  # bf16 weights keep bf16 KV: the catalog figure
            ({"kv_precision": "fp8"}, 65536),  # half of it
            ({"kv_precision": "fp4"}, 36864),  # 131072 * 0.5625 / 2
            ({"precision": "fp8"}, 65536),  # fp8 weights default to fp8 KV
        ],
    )
    def test_kv_bytes_scale_with_the_kv_precision(
        self, fields: dict[str, str], expected_bytes: int
    ) -> None:
        """One token's KV is the bf16 figure times the KV precision's bytes over two."""
        assert perf.kv_bytes_per_token(_setup_8b(**fields)) == expected_bytes

    @pytest.mark.parametrize(
        ("precision", "kv_precision"),
        [("bf16", "bf16"), ("fp16", "fp16"), ("fp8", "fp8"), ("fp4", "fp8")],
    )
    def test_quantized_weights_default_to_an_fp8_cache(
        self, precision: str, kv_precision: str
    ) -> None:
        """fp8 and fp4 checkpoints ship an fp8 KV scale; wider weights keep their own."""
        assert perf.default_kv_precision(precision) == kv_precision
        assert _setup_8b(precision=precision).kv_precision == kv_precision


class TestKvCapacity:
    def test_llama_8b_on_one_h100_holds_the_hand_computed_capacity(self) -> None:
        """(80 GB * 0.9 - 16.06 GB) / 131072 = 55.94e9 / 131072 = 426,788.3 tokens."""
        assert perf.kv_capacity_tokens(_setup_8b()) == LLAMA_8B_USABLE_KV_TOKENS

    def test_llama_70b_in_bf16_does_not_fit_on_one_h100(self) -> None:
        """141.2 GB of weights exceed one H100's 72 usable GB: no KV room, does not fit."""
        setup = Setup(gpu=H100, gpu_count=1, model=LLAMA_70B)
        assert perf.kv_capacity_tokens(setup) == 0
        assert not perf.fits(setup)
        assert perf.batch_max(setup, 1000) == 0

    def test_llama_70b_on_two_h100s_keeps_one_copy_of_its_eight_kv_heads(self) -> None:
        """Per GPU 72 - 70.6 = 1.4 GB; 2 * 1.4e9 / 327680 = 8544.9 tokens (2 <= 8 heads)."""
        setup = Setup(gpu=H100, gpu_count=2, model=LLAMA_70B)
        assert perf.fits(setup)
        assert perf.kv_capacity_tokens(setup) == 8544

    def test_tp_beyond_the_kv_head_count_copies_the_heads(self) -> None:
        """Llama 70B: 8 GPUs hold (72 - 17.65) * 8 / 327680 = 1,326,904 tokens; 16 GPUs hold
        each KV head twice, (72 - 8.825) * 16 / (2 * 327680) = 1,542,358 tokens."""
        eight = Setup(gpu=H100, gpu_count=8, model=LLAMA_70B)
        sixteen = Setup(gpu=H100, gpu_count=16, model=LLAMA_70B)
        assert perf.kv_capacity_tokens(eight) == 1_326_904
        assert perf.kv_capacity_tokens(sixteen) == 1_542_358

    def test_deepseek_under_tp_copies_its_one_latent_to_every_gpu(self) -> None:
        """671 GB of fp8 weights leave 162 - 83.875 = 78.125 GB per B200; a token's fp8
        latent (70272 / 2 = 35136 bytes) is kept 8 / min(8, 1) = 8 times:
        8 * 78.125e9 / (8 * 35136) = 2,223,502.96 tokens."""
        assert perf.kv_capacity_tokens(_deepseek("tp")) == 2_223_502

    def test_deepseek_under_dep_keeps_each_token_once_beside_whole_dense_weights(self) -> None:
        """Each B200 holds the 17.5 GB dense part and 653.5 / 8 = 81.6875 GB of experts,
        leaving 162 - 99.1875 = 62.8125 GB: 8 * 62.8125e9 / 35136 = 14,301,571.04 tokens."""
        assert perf.kv_capacity_tokens(_deepseek("dep")) == 14_301_571

    def test_a_larger_reserve_leaves_less_kv_room(self) -> None:
        """Reserving none of the 80 GB holds (80 - 16.06) GB / 131072 = 487,823 tokens."""
        assert perf.kv_capacity_tokens(_setup_8b(memory_reserve_ratio=0.0)) == 487_823
        large = perf.kv_capacity_tokens(_setup_8b(memory_reserve_ratio=0.3))
        assert LLAMA_8B_USABLE_KV_TOKENS > large > 0


class TestBatchMax:
    def test_batch_max_divides_the_capacity(self) -> None:
        """426,788 tokens hold 213 requests of 2000 tokens and none of 426,789."""
        assert perf.batch_max(_setup_8b(), 2000) == 213
        assert perf.batch_max(_setup_8b(), LLAMA_8B_USABLE_KV_TOKENS) == 1
        assert perf.batch_max(_setup_8b(), LLAMA_8B_USABLE_KV_TOKENS + 1) == 0

    def test_batch_max_rejects_empty_requests(self) -> None:
        """Tokens per request must be at least one."""
        with pytest.raises(InvalidRequest) as caught:
            perf.batch_max(_setup_8b(), 0)
        assert caught.value.param == "tokens_per_request"

    def test_under_dep_a_request_must_fit_on_one_gpu(self) -> None:
        """With 3.6 GB of KV room per B200 (102,459 tokens), no 120,000-token request fits,
        though the eight GPUs together hold 819,672 tokens."""
        per_gpu_weights = 17.5e9 + 653.5e9 / 8
        reserve = 1 - (per_gpu_weights + 3.6e9) / 180e9
        setup = _deepseek("dep", memory_reserve_ratio=reserve)
        assert perf.batch_max(setup, 100_000) == 8
        assert perf.batch_max(setup, 120_000) == 0


class TestBatchLimit:
    def test_tp_runs_one_scheduler_whatever_the_gpu_count(self) -> None:
        """Under tp the replica is one scheduler: batch_requests_max requests."""
        assert perf.batch_limit(_setup_8b()) == 512
        assert perf.batch_limit(_deepseek("tp", batch_requests_max=64)) == 64

    def test_dep_runs_one_scheduler_per_gpu(self) -> None:
        """Under dep every GPU schedules its own requests: 8 * 256 = 2048."""
        assert perf.batch_limit(_deepseek("dep", batch_requests_max=256)) == 2048


class TestPeakFlops:
    def test_peak_uses_the_precision_figure_times_the_gpu_count(self) -> None:
        """Two H100s at fp8 peak at 2 * 1979 TFLOP/s; two B200s at fp4 at 2 * 9000."""
        assert perf.peak_flops_per_s(_setup_8b(precision="fp8", gpu_count=2)) == 2 * 1979e12
        b200 = Setup(gpu=B200, gpu_count=2, model=LLAMA_8B, precision="fp4")
        assert perf.peak_flops_per_s(b200) == 2 * 9000e12

    def test_fp16_uses_the_bf16_figure(self) -> None:
        """FP16 and BF16 tensor throughput are the same on every catalog GPU."""
        assert perf.peak_flops_per_s(_setup_8b(precision="fp16")) == 989e12

    def test_a_precision_the_gpu_lacks_is_rejected(self) -> None:
        """An H100 has no fp4 tensor cores and an A100 no fp8: InvalidRequest on precision."""
        with pytest.raises(InvalidRequest) as caught:
            perf.peak_flops_per_s(_setup_8b(precision="fp4"))
        assert caught.value.param == "precision"
        a100 = Setup(gpu=A100, gpu_count=1, model=LLAMA_8B, precision="fp8")
        with pytest.raises(InvalidRequest) as caught:
            perf.prefill_time_s(a100, 100)
        assert caught.value.param == "precision"


class TestPrefill:
    def test_a_1000_token_prompt_costs_its_weights_flops_and_the_quadratic_attention(
        self,
    ) -> None:
        """2 * 8.03e9 * 1000 = 16.06e12 FLOPs of weights (32.5 ms, above the 6.85 ms read)
        plus 1000^2 / 2 pairs * 524,288 = 0.262e12 FLOPs of attention: 33.0 ms."""
        weights_flops = 2 * 8.03e9 * 1000
        attention_flops = 1000**2 / 2 * LLAMA_8B_PAIR_FLOPS
        expected_s = (weights_flops + attention_flops) / H100_PEAK_BF16
        assert perf.prefill_time_s(_setup_8b(), 1000) == pytest.approx(expected_s)
        assert expected_s == pytest.approx(0.0330074, rel=1e-5)

    def test_attention_grows_with_the_square_of_the_prompt(self) -> None:
        """Eight times the prompt costs eight times the weight FLOPs plus the extra pairs:
        (8000^2 - 8 * 1000^2) / 2 * 524,288 FLOPs = 29.7 ms at 494.5 TFLOP/s."""
        setup = _setup_8b()
        extra_s = perf.prefill_time_s(setup, 8000) - 8 * perf.prefill_time_s(setup, 1000)
        expected_s = (8000**2 - 8 * 1000**2) / 2 * LLAMA_8B_PAIR_FLOPS / H100_PEAK_BF16
        assert extra_s == pytest.approx(expected_s)

    def test_a_short_idle_prompt_waits_for_the_weights_to_be_read(self) -> None:
        """Ten tokens compute for 0.32 ms but read 16.06 GB at 2.345 TB/s: 6.85 ms, plus
        10^2 / 2 pairs of attention."""
        expected_s = 16.06e9 / H100_BANDWIDTH + 10**2 / 2 * LLAMA_8B_PAIR_FLOPS / H100_PEAK_BF16
        assert perf.prefill_time_s(_setup_8b(), 10) == pytest.approx(expected_s)

    def test_on_a_busy_server_a_short_prompt_adds_only_its_compute(self) -> None:
        """The decode steps read the weights anyway: ten tokens add only their FLOPs, the
        weights' 2 * 8.03e9 * 10 and the attention's 50 pairs * 524,288, at the derated peak."""
        expected_s = (2 * 8.03e9 * 10 + 10**2 / 2 * LLAMA_8B_PAIR_FLOPS) / H100_PEAK_BF16
        assert perf.prefill_busy_s(_setup_8b(), 10) == pytest.approx(expected_s)

    def test_a_compute_bound_prompt_costs_a_busy_server_its_whole_time_under_tp(self) -> None:
        """Every group of a 1000-token prefill is compute-bound: nothing is hidden."""
        setup = _setup_8b()
        assert perf.prefill_busy_s(setup, 1000) == perf.prefill_time_s(setup, 1000)

    def test_under_dep_prompts_prefill_side_by_side_on_every_gpu(self) -> None:
        """Under dep each GPU prefills its own prompts, so one prompt takes well under the
        replica time of an idle prefill, which runs its dense part on one GPU."""
        setup = _deepseek("dep")
        assert perf.prefill_busy_s(setup, 4000) < perf.prefill_time_s(setup, 4000) / 2

    def test_fp8_prefill_is_twice_as_fast_on_an_h100(self) -> None:
        """fp8 weights (1979 TFLOP/s) and fp8 KV attention halve the compute-bound prefill."""
        bf16_s = perf.prefill_time_s(_setup_8b(), 4096)
        fp8_s = perf.prefill_time_s(_setup_8b(precision="fp8"), 4096)
        assert fp8_s == pytest.approx(bf16_s * 989 / 1979)

    def test_attention_over_an_fp8_cache_falls_back_to_bf16_on_an_a100(self) -> None:
        """An A100 has no fp8 path: weights and attention both compute at 312 * 0.5."""
        setup = Setup(gpu=A100, gpu_count=1, model=LLAMA_8B, kv_precision="fp8")
        expected_s = (2 * 8.03e9 * 1000 + 1000**2 / 2 * LLAMA_8B_PAIR_FLOPS) / (312e12 * 0.5)
        assert perf.prefill_time_s(setup, 1000) == pytest.approx(expected_s)

    def test_attention_over_an_fp4_cache_computes_at_fp8(self) -> None:
        """fp4 weights compute at 9000 * 0.5 TFLOP/s (3.57 ms, above a 0.81 ms read); the
        attention over fp4 KV runs at the fp8 peak, 4500 * 0.5."""
        setup = Setup(gpu=B200, gpu_count=1, model=LLAMA_8B, precision="fp4", kv_precision="fp4")
        weights_s = 2 * 8.03e9 * 1000 / (9000e12 * 0.5)
        attention_s = 1000**2 / 2 * LLAMA_8B_PAIR_FLOPS / (4500e12 * 0.5)
        assert perf.prefill_time_s(setup, 1000) == pytest.approx(weights_s + attention_s)

    def test_an_idle_prompt_under_dep_sends_all_its_tokens_from_one_gpu(self) -> None:
        """Halving the link (630 to 315 GB/s one way) adds the dispatch and combine of
        1000 tokens * 8 experts * 7168 * 2 bytes * 7/8 leaving the GPU, over 2 * 58 layers:
        116 * 100.352 MB * (1/315e9 - 1/630e9) = 18.5 ms."""
        fast = _deepseek("dep")
        slow = dataclasses.replace(
            fast, gpu=dataclasses.replace(B200, interconnect_bytes_per_s=900e9)
        )
        added_s = perf.prefill_time_s(slow, 1000) - perf.prefill_time_s(fast, 1000)
        sent_bytes = 1000 * 8 * 7168 * 2 * 7 / 8
        expected_s = 2 * 58 * sent_bytes * (1 / (900e9 / 2 * 0.7) - 1 / (1800e9 / 2 * 0.7))
        assert added_s == pytest.approx(expected_s)

    @pytest.mark.parametrize("function", [perf.prefill_time_s, perf.prefill_busy_s])
    def test_no_prompt_takes_no_time(self, function: object) -> None:
        """An empty prompt costs nothing, idle or busy."""
        assert function(_setup_8b(), 0) == 0.0  # type: ignore[operator]

    @pytest.mark.parametrize("function", [perf.prefill_time_s, perf.prefill_busy_s])
    @pytest.mark.parametrize("bad", [-1, 1.5, True])
    def test_negative_or_non_integer_tokens_are_rejected(
        self, function: object, bad: object
    ) -> None:
        """Prompt tokens must be an integer >= 0."""
        with pytest.raises(InvalidRequest) as caught:
            function(_setup_8b(), bad)  # type: ignore[operator]
        assert caught.value.param == "prompt_tokens"


class TestDecodeStep:
    def test_batch_1_reads_the_weights_and_is_bandwidth_bound(self) -> None:
        """16.06 GB at 2.345 TB/s (6.85 ms, above 0.03 ms of compute) plus 3 ms: 9.85 ms."""
        setup = _setup_8b()
        expected_s = 16.06e9 / H100_BANDWIDTH + 0.003
        assert perf.decode_step_time_s(setup, 1, 0) == pytest.approx(expected_s)
        assert perf.step_bound(setup, 1, 0) == "bandwidth"

    def test_kv_reads_add_to_the_bandwidth_time(self) -> None:
        """10,000 KV tokens add 1.31 GB to the bytes read (their 5.2 GFLOPs take 0.01 ms)."""
        expected_s = (16.06e9 + 10_000 * 131072) / H100_BANDWIDTH + 0.003
        assert perf.decode_step_time_s(_setup_8b(), 4, 10_000) == pytest.approx(expected_s)

    def test_a_large_batch_is_compute_bound(self) -> None:
        """At full efficiency and no overheads 4096 tokens take 2 * 8.03e9 * 4096 / 989e12
        = 66.5 ms of compute against a 4.8 ms read: 989e12 / 16.06e9 = 61,582 tokens/s."""
        setup = _setup_8b(**_IDEAL)
        expected_s = 2 * 8.03e9 * 4096 / 989e12
        assert perf.decode_step_time_s(setup, 4096, 0) == pytest.approx(expected_s)
        assert perf.step_bound(setup, 4096, 0) == "compute"
        assert perf.output_tokens_per_s(setup, 4096, 0) == pytest.approx(989e12 / 16.06e9)

    def test_step_time_is_monotone_in_batch_and_in_kv_tokens(self) -> None:
        """A bigger batch or more KV never takes less time per step."""
        setup = _setup_8b()
        by_batch = [perf.decode_step_time_s(setup, batch, 50_000) for batch in range(1, 5000, 97)]
        by_kv = [perf.decode_step_time_s(setup, 64, kv) for kv in range(0, 400_000, 9_999)]
        assert by_batch == sorted(by_batch)
        assert by_kv == sorted(by_kv)
        assert by_kv[-1] > by_kv[0]

    def test_overhead_is_added_once_per_step(self) -> None:
        """Raising the step overhead by 1 ms raises the step time by exactly 1 ms."""
        base_s = perf.decode_step_time_s(_setup_8b(), 8, 1000)
        slower_s = perf.decode_step_time_s(_setup_8b(step_overhead_s=0.004), 8, 1000)
        assert slower_s - base_s == pytest.approx(0.001)

    @pytest.mark.parametrize(
        ("tokens", "touched_ratio"),
        # E * (1 - (1 - k/E)^t) of E = 8 experts with k = 2: (1 - (3/4)^t) of them.
        [(1, 1 / 4), (2, 7 / 16), (4, 175 / 256), (8, 58975 / 65536)],
    )
    def test_a_step_reads_only_the_experts_its_tokens_touch(
        self, tokens: int, touched_ratio: float
    ) -> None:
        """Mixtral on one H200, reading at 4.8 TB/s: its 3.21 GB dense part and the
        touched share of its 90.19 GB of bf16 experts (compute stays under 0.4 ms)."""
        setup = Setup(gpu=H200, gpu_count=1, model=MIXTRAL, **_IDEAL)
        expected_s = (MIXTRAL_DENSE * 2 + 45_097_156_608 * 2 * touched_ratio) / 4.8e12
        assert perf.decode_step_time_s(setup, tokens, 0) == pytest.approx(expected_s)

    def test_the_expert_group_runs_at_its_share_of_the_roofline(self) -> None:
        """At e_moe 0.25 one token's quarter of the experts takes as long as all of them."""
        fields = {**_IDEAL, "efficiency_moe_ratio": 0.25}
        setup = Setup(gpu=H200, gpu_count=1, model=MIXTRAL, **fields)
        expected_s = (MIXTRAL_DENSE * 2 + 45_097_156_608 * 2) / 4.8e12
        assert perf.decode_step_time_s(setup, 1, 0) == pytest.approx(expected_s)

    def test_routing_costs_each_token_in_each_moe_layer(self) -> None:
        """1 us per token per layer: 8 tokens through Mixtral's 32 MoE layers add 256 us."""
        fields = {**_IDEAL, "moe_token_overhead_s": 1e-6}
        setup = Setup(gpu=H200, gpu_count=1, model=MIXTRAL, **fields)
        base = Setup(gpu=H200, gpu_count=1, model=MIXTRAL, **_IDEAL)
        added_s = perf.decode_step_time_s(setup, 8, 0) - perf.decode_step_time_s(base, 8, 0)
        assert added_s == pytest.approx(8 * 32 * 1e-6)

    def test_tp_over_two_gpus_adds_two_all_reduces_per_layer(self) -> None:
        """Each H100 reads half the weights, 8.03 GB (3.42 ms; compute 1.04 ms), then 2 * 32
        all-reduces of 64 tokens * 4096 * 2 bytes * 2 * (1/2) = 524,288 bytes at 315 GB/s
        plus 10 us each: 3.42 + 64 * 11.66 us = 4.17 ms."""
        setup = Setup(gpu=H100, gpu_count=2, model=LLAMA_8B, step_overhead_s=0.0)
        all_reduce_s = 10e-6 + 64 * 4096 * 2 * 2 * (2 - 1) / 2 / H100_LINK
        expected_s = 8.03e9 / H100_BANDWIDTH + 2 * 32 * all_reduce_s
        assert perf.decode_step_time_s(setup, 64, 0) == pytest.approx(expected_s)
        assert perf.step_bound(setup, 64, 0) == "bandwidth"

    def test_dep_over_eight_gpus_adds_an_all_to_all_pair_per_moe_layer(self) -> None:
        """DeepSeek on 8 B200s at full efficiency, batch 64: every GPU reads the 17.5 GB dense
        part whole (2.19 ms) and 1/8 of the 653.5 GB of experts times the share 64 tokens
        touch, 1 - (31/32)^64 = 0.869 (8.87 ms); each GPU sends its 8 tokens to 8 experts,
        8 * 8 * 7168 * 2 bytes * 7/8 = 802,816 bytes at 900 GB/s, twice per MoE layer with
        10 us latency: 116 * 10.89 us = 1.26 ms."""
        setup = _deepseek("dep", **{**_IDEAL, "collective_latency_s": 10e-6})
        dense_s = 17.5e9 / 8e12
        experts_s = 653.5e9 * (1 - (1 - 8 / 256) ** 64) / 8 / 8e12
        all_to_all_s = 10e-6 + 64 / 8 * 8 * 7168 * 2 * (8 - 1) / 8 / 900e9
        expected_s = dense_s + experts_s + 2 * 58 * all_to_all_s
        assert perf.decode_step_time_s(setup, 64, 0) == pytest.approx(expected_s)

    @pytest.mark.parametrize("function", [perf.decode_step_time_s, perf.step_bound])
    @pytest.mark.parametrize(
        ("batch", "kv_tokens_total", "param"),
        [(0, 0, "batch"), (-3, 0, "batch"), (1, -1, "kv_tokens_total"), (2.0, 0, "batch")],
    )
    def test_bad_batch_or_kv_tokens_are_rejected(
        self, function: object, batch: int, kv_tokens_total: int, param: str
    ) -> None:
        """Batch must be >= 1 and KV tokens >= 0, both integers."""
        with pytest.raises(InvalidRequest) as caught:
            function(_setup_8b(), batch, kv_tokens_total)  # type: ignore[operator]
        assert caught.value.param == param


class TestOutputTokensPerS:
    def test_throughput_is_batch_over_step_time(self) -> None:
        """32 requests at (16.06e9 + 64,000 * 131072) / 2.345e12 + 3 ms per step."""
        step_s = (16.06e9 + 64_000 * 131072) / H100_BANDWIDTH + 0.003
        assert perf.output_tokens_per_s(_setup_8b(), 32, 64_000) == pytest.approx(32 / step_s)

    def test_bad_batch_is_rejected(self) -> None:
        """The decode checks apply to the throughput too."""
        with pytest.raises(InvalidRequest) as caught:
            perf.output_tokens_per_s(_setup_8b(), 0, 0)
        assert caught.value.param == "batch"


class TestOperatingPoint:
    def test_the_throughput_shares_decode_steps_and_adds_the_prefill(self) -> None:
        """8 requests of 1000 in, 200 out on Llama 8B: a 33.0 ms compute-bound prefill, and
        steps over 8 * (1000 + 100) = 8800 KV tokens, (16.06e9 + 8800 * 131072) / 2.345e12
        + 3 ms = 10.34 ms, so 200 / (33.0 ms + 199 * 10.34 ms / 8) = 689 tokens/s."""
        point = perf.operating_point(_setup_8b(), 1000, 200, 8)
        busy_s = (2 * 8.03e9 * 1000 + 1000**2 / 2 * LLAMA_8B_PAIR_FLOPS) / H100_PEAK_BF16
        step_s = (16.06e9 + 8800 * 131072) / H100_BANDWIDTH + 0.003
        first_step_s = (16.06e9 + 1000 * 131072) / H100_BANDWIDTH + 0.003
        expected = 200 / (busy_s + 199 * step_s / 8)
        assert point.output_tokens_per_s == pytest.approx(expected)
        assert point.output_tokens_per_s_per_gpu == pytest.approx(expected)
        assert point.batch == 8
        assert point.batch_max == LLAMA_8B_USABLE_KV_TOKENS // 1200
        assert point.bound == point.step_bound == "bandwidth"
        assert point.step_ms == pytest.approx(step_s * 1000)
        assert point.decode_tokens_per_s == pytest.approx(8 / step_s)
        assert point.prefill_tokens_per_s == pytest.approx(1000 / busy_s)
        assert point.ttft_ms == pytest.approx((busy_s + first_step_s) * 1000)
        assert point.itl_ms == pytest.approx((step_s + 8 * busy_s / 200) * 1000)

    def test_a_kv_capped_bandwidth_bound_batch_is_memory_bound(self) -> None:
        """Llama 70B on two H100s holds 8544 KV tokens: 4 requests of 2000 tokens, not the
        512 the scheduler runs, and reading 70.6 GB per GPU makes each step bandwidth-bound."""
        setup = Setup(gpu=H100, gpu_count=2, model=LLAMA_70B)
        point = perf.operating_point(setup, 1000, 1000, None)
        assert point.batch == point.batch_max == 4
        assert point.step_bound == "bandwidth"
        assert point.bound == "memory"

    def test_an_uncapped_bandwidth_bound_batch_is_bandwidth_bound(self) -> None:
        """One request at a time is far from the KV limit and reads the weights per token."""
        point = perf.operating_point(_setup_8b(), 1000, 200, 1)
        assert point.batch == 1
        assert point.bound == "bandwidth"

    def test_a_large_uncapped_batch_is_compute_bound(self) -> None:
        """400 requests of 12 tokens compute 2 * 8.03e9 * 400 FLOPs (13.0 ms) against a 6.85 ms
        weight read and 400 * 11 KV tokens (0.25 ms): compute-bound, far below 35,565."""
        point = perf.operating_point(_setup_8b(), 10, 2, 400)
        assert point.batch == 400
        assert point.batch_max == LLAMA_8B_USABLE_KV_TOKENS // 12
        assert point.bound == point.step_bound == "compute"

    def test_a_kv_capped_compute_bound_batch_stays_compute_bound(self) -> None:
        """With room in the scheduler the KV caps 200-token requests at 426,788 // 200 =
        2133: 69.3 ms of weight compute outweigh the 17.9 ms read of 2133 * 150 KV tokens."""
        point = perf.operating_point(_setup_8b(batch_requests_max=100_000), 100, 100, None)
        assert point.batch == point.batch_max == 2133
        assert point.bound == "compute"

    def test_a_scheduler_capped_batch_is_not_memory_bound(self) -> None:
        """The scheduler, not the KV cache, stops the batch at 64: bound is the step's roof."""
        point = perf.operating_point(_setup_8b(batch_requests_max=64), 100, 100, 10_000)
        assert point.batch == 64
        assert point.batch_max == 2133
        assert point.bound == "bandwidth"

    def test_dep_batches_up_to_every_gpus_scheduler(self) -> None:
        """Under dep eight schedulers of 16 run 128 requests; the KV holds 8 GPUs * (14,301,571
        tokens / 8 // 2,000 per request) = 8 * 893 = 7,144 of them, whole on their GPU."""
        point = perf.operating_point(_deepseek("dep", batch_requests_max=16), 1000, 1000, None)
        assert point.batch == 128
        assert point.batch_max == 8 * ((14_301_571 // 8) // 2000)

    def test_a_model_that_does_not_fit_is_rejected(self) -> None:
        """Llama 70B in bf16 on one H100 has no room: InvalidRequest on gpus."""
        setup = Setup(gpu=H100, gpu_count=1, model=LLAMA_70B)
        with pytest.raises(InvalidRequest) as caught:
            perf.operating_point(setup, 100, 100, 1)
        assert caught.value.param == "gpus"

    def test_a_request_that_does_not_fit_is_rejected(self) -> None:
        """9000 tokens exceed the 8544 Llama 70B holds on two H100s: InvalidRequest on input."""
        setup = Setup(gpu=H100, gpu_count=2, model=LLAMA_70B)
        with pytest.raises(InvalidRequest) as caught:
            perf.operating_point(setup, 8000, 1000, 1)
        assert caught.value.param == "input"

    @pytest.mark.parametrize(
        ("prompt_tokens", "output_tokens", "concurrency", "param"),
        [(0, 10, 1, "input"), (10, 0, 1, "output"), (10, 10, 0, "concurrency")],
    )
    def test_bad_request_sizes_are_rejected(
        self, prompt_tokens: int, output_tokens: int, concurrency: int, param: str
    ) -> None:
        """Prompt, output and concurrency must each be at least one."""
        with pytest.raises(InvalidRequest) as caught:
            perf.operating_point(_setup_8b(), prompt_tokens, output_tokens, concurrency)
        assert caught.value.param == param

    def test_more_bandwidth_never_lowers_the_served_throughput(self) -> None:
        """At 5 TB/s 100-token prompts read-bound, at 8 TB/s they are compute-bound; the
        faster GPU must not serve fewer tokens."""
        slower = _setup_8b(gpu=dataclasses.replace(H100, bandwidth_bytes_per_s=5e12))
        faster = _setup_8b(gpu=dataclasses.replace(H100, bandwidth_bytes_per_s=8e12))
        slower_point = perf.operating_point(slower, 100, 100, 64)
        faster_point = perf.operating_point(faster, 100, 100, 64)
        assert faster_point.output_tokens_per_s >= slower_point.output_tokens_per_s


# Property tests ------------------------------------------------------------------------------

_MODELS = tuple(catalog.load_models()[model_id] for model_id in sorted(catalog.load_models()))
_FP8_GPUS = tuple(gpu for gpu in catalog.load_gpus().values() if gpu.flops_fp8_per_s)


@st.composite
def _setups(draw: st.DrawFn) -> Setup:
    """Any catalog model on 1 to 32 fp8-capable catalog GPUs, tp or (for MoE) dep."""
    model: ModelSpec = draw(st.sampled_from(_MODELS))
    gpu: Gpu = draw(st.sampled_from(_FP8_GPUS))
    parallel = draw(st.sampled_from(("tp", "dep"))) if model.experts else "tp"
    return Setup(
        gpu=gpu,
        gpu_count=draw(st.sampled_from((1, 2, 4, 8, 16, 32))),
        model=model,
        precision=draw(st.sampled_from(("bf16", "fp8"))),
        parallel=parallel,
    )


class TestProperties:
    @settings(max_examples=60, deadline=None)
    @given(
        setup=_setups(),
        batch=st.integers(min_value=1, max_value=4096),
        kv_tokens_total=st.integers(min_value=0, max_value=2_000_000),
        factor=st.floats(min_value=1.0, max_value=10.0),
    )
    def test_more_bandwidth_never_lowers_decode_throughput(
        self, setup: Setup, batch: int, kv_tokens_total: int, factor: float
    ) -> None:
        """Every roof of a step is a bytes-over-bandwidth or a FLOPs term: faster memory
        never slows it."""
        bandwidth = setup.gpu.bandwidth_bytes_per_s * factor
        faster = dataclasses.replace(
            setup, gpu=dataclasses.replace(setup.gpu, bandwidth_bytes_per_s=bandwidth)
        )
        before = perf.output_tokens_per_s(setup, batch, kv_tokens_total)
        assert perf.output_tokens_per_s(faster, batch, kv_tokens_total) >= before

    @settings(max_examples=60, deadline=None)
    @given(
        setup=_setups(),
        prompt_tokens=st.integers(min_value=1, max_value=8000),
        output_tokens=st.integers(min_value=1, max_value=2000),
        shares=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    )
    def test_more_concurrency_never_lowers_throughput_up_to_the_kv_limit(
        self, setup: Setup, prompt_tokens: int, output_tokens: int, shares: tuple[float, float]
    ) -> None:
        """Below the KV and scheduler limits each added request shares the same steps."""
        assume(perf.fits(setup))
        largest = min(perf.batch_max(setup, prompt_tokens + output_tokens), perf.batch_limit(setup))
        assume(largest >= 1)
        low, high = sorted(1 + math.floor(share * (largest - 1)) for share in shares)
        fewer = perf.operating_point(setup, prompt_tokens, output_tokens, low)
        more = perf.operating_point(setup, prompt_tokens, output_tokens, high)
        assert more.batch == high
        assert more.output_tokens_per_s >= fewer.output_tokens_per_s * (1 - 1e-9)

    @settings(max_examples=60, deadline=None)
    @given(
        setup=_setups(),
        tokens_per_request=st.integers(min_value=1, max_value=200_000),
        added_bytes=st.integers(min_value=0, max_value=200_000_000_000),
    )
    def test_more_gpu_memory_never_lowers_batch_max(
        self, setup: Setup, tokens_per_request: int, added_bytes: int
    ) -> None:
        """Memory beyond the weights goes to the KV cache, so it never holds fewer requests."""
        memory = setup.gpu.memory_bytes + added_bytes
        bigger = dataclasses.replace(setup, gpu=dataclasses.replace(setup.gpu, memory_bytes=memory))
        before = perf.batch_max(setup, tokens_per_request)
        assert perf.batch_max(bigger, tokens_per_request) >= before


class TestSetupValidation:
    @pytest.mark.parametrize(
        ("field", "bad_value"),
        [
            ("gpu_count", 0),
            ("gpu_count", 1.0),
            ("gpu_count", True),
            ("precision", "int4"),
            ("kv_precision", "fp32"),
            ("parallel", "pp"),
            ("efficiency_compute_ratio", 0.0),
            ("efficiency_compute_ratio", 1.5),
            ("efficiency_memory_ratio", float("nan")),
            ("efficiency_memory_ratio", -0.7),
            ("efficiency_moe_ratio", 0.0),
            ("efficiency_moe_ratio", 1.01),
            ("efficiency_network_ratio", float("inf")),
            ("efficiency_network_ratio", 2.0),
            ("moe_token_overhead_s", -1e-9),
            ("collective_latency_s", -1e-6),
            ("collective_latency_s", float("nan")),
            ("step_overhead_s", -0.001),
            ("step_overhead_s", "0.003"),
            ("batch_requests_max", 0),
            ("batch_requests_max", 1.5),
            ("memory_reserve_ratio", 1.0),
            ("memory_reserve_ratio", -0.1),
            ("memory_reserve_ratio", float("nan")),
        ],
    )
    def test_a_bad_setting_is_rejected_naming_it(self, field: str, bad_value: object) -> None:
        """Each out-of-range setting raises InvalidRequest with the setting as param."""
        with pytest.raises(InvalidRequest) as caught:
            _setup_8b(**{field: bad_value})
        assert caught.value.param == field

    def test_dep_on_a_dense_model_is_rejected(self) -> None:
        """dep spreads experts over the GPUs; Llama 8B has none, so the setup names parallel."""
        with pytest.raises(InvalidRequest) as caught:
            _setup_8b(parallel="dep", gpu_count=2)
        assert caught.value.param == "parallel"
        assert "llama-3.1-8b" in caught.value.message

    def test_the_edges_of_the_ranges_are_accepted(self) -> None:
        """Ratios of exactly 1, overheads of 0, no reserve and one request are all valid."""
        setup = _setup_8b(**_IDEAL, memory_reserve_ratio=0.0, batch_requests_max=1)
        assert perf.batch_limit(setup) == 1


class TestLargestMeeting:
    @settings(max_examples=60, deadline=None)
    @given(st.integers(min_value=0, max_value=600), st.integers(min_value=1, max_value=600))
    def test_it_finds_the_last_concurrency_that_meets_a_monotone_target(
        self, threshold: int, high: int
    ) -> None:
        """A target met up to ``threshold`` in flight: the answer is min(threshold, high),
        or None when even one request misses it; asked about log2(high) times."""
        asked: list[int] = []

        def meets(concurrency: int) -> bool:
            asked.append(concurrency)
            return concurrency <= threshold

        found = perf.largest_meeting(meets, high)
        assert found == (None if threshold == 0 else min(threshold, high))
        assert len(asked) <= math.ceil(math.log2(high)) + 2

    def test_a_high_below_one_is_refused(self) -> None:
        with pytest.raises(InvalidRequest):
            perf.largest_meeting(lambda concurrency: True, 0)
