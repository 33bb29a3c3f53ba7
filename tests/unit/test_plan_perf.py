"""``tokenmill plan perf`` and the operating point behind it."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tokenmill.cli.main import app
from tokenmill.economics import catalog, perf

KEYS = {
    "output_tokens_per_s",
    "output_tokens_per_s_per_gpu",
    "ttft_ms",
    "itl_ms",
    "batch",
    "bound",
}


def plan(*args: str) -> Any:
    result = CliRunner().invoke(app, ["plan", "perf", *args, "--json"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return orjson.loads(result.stdout)


def refused(*args: str) -> str:
    result = CliRunner().invoke(app, ["plan", "perf", *args])
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    return result.stderr


def setup(gpu: str = "h100-sxm", gpus: int = 2, model: str = "llama-3.3-70b") -> perf.Setup:
    return perf.Setup(
        gpu=catalog.gpu(gpu), gpu_count=gpus, model=catalog.model(model), precision="fp8"
    )


class TestContract:
    def test_the_json_carries_the_contract_and_agrees_with_the_model(self) -> None:
        """The issue's example: every contract key; figures equal the perf model's own."""
        shown = plan(
            "--gpu", "h100-sxm", "--gpus", "2", "--model", "llama-3.3-70b",
            "--precision", "fp8", "--input", "1000", "--output", "1000", "--concurrency", "64",
        )  # fmt: skip
        assert shown.keys() >= KEYS
        assert shown["batch"] == 64
        assert shown["kv_precision"] == "fp8"  # the default beside fp8 weights
        kv = 64 * (1000 + 500)
        step_s = perf.decode_step_time_s(setup(), 64, kv)
        busy_s = perf.prefill_busy_s(setup(), 1000)
        request_s = busy_s + 999 * step_s / 64  # the first token comes with the prefill
        assert shown["step_ms"] == pytest.approx(step_s * 1000, abs=0.001)
        assert shown["itl_ms"] == pytest.approx((step_s + 64 * busy_s / 1000) * 1000, abs=0.001)
        assert shown["output_tokens_per_s"] == pytest.approx(1000 / request_s, abs=0.001)
        assert shown["output_tokens_per_s_per_gpu"] == pytest.approx(500 / request_s, abs=0.001)
        assert shown["decode_tokens_per_s"] == pytest.approx(64 / step_s, abs=0.001)
        ttft_s = perf.prefill_time_s(setup(), 1000) + perf.decode_step_time_s(setup(), 1, 1000)
        assert shown["ttft_ms"] == pytest.approx(ttft_s * 1000, abs=0.001)
        assert shown["bound"] == perf.step_bound(setup(), 64, kv)  # 64 < what the KV holds

    def test_max_is_the_largest_batch_the_kv_memory_holds(self) -> None:
        """Long prompts fill the KV cache at a batch whose step is still bandwidth-bound."""
        shown = plan("--gpu", "h100-sxm", "--gpus", "2", "--model", "llama-3.3-70b",
                     "--precision", "fp8", "--input", "8192", "--output", "1024",
                     "--concurrency", "max")  # fmt: skip
        assert shown["batch"] == shown["batch_max"] == perf.batch_max(setup(), 8192 + 1024)
        assert shown["batch"] < shown["batch_limit"]
        assert shown["bound"] == "memory"  # more KV memory would run a bigger batch
        assert shown["concurrency"] == "max"

    def test_max_stops_at_the_scheduler_limit_where_memory_holds_more(self) -> None:
        """gpt-oss-20b on an H200 holds thousands of short requests; the scheduler runs 512,
        or what --batch-requests-max says."""
        shown = plan("--gpu", "h200", "--model", "gpt-oss-20b", "--precision", "fp8")
        assert shown["batch_max"] > shown["batch"] == shown["batch_limit"] == 512
        assert shown["bound"] in ("bandwidth", "compute")
        wider = plan("--gpu", "h200", "--model", "gpt-oss-20b", "--precision", "fp8",
                     "--batch-requests-max", "1024")  # fmt: skip
        assert wider["batch"] == 1024

    def test_dep_spreads_experts_and_runs_one_scheduler_per_gpu(self) -> None:
        """Under dep each of 4 GPUs holds the dense weights and a quarter of the experts,
        and runs its own 512 requests."""
        shown = plan("--gpu", "h100-sxm", "--gpus", "4", "--model", "gpt-oss-120b",
                     "--precision", "fp8", "--parallel", "dep")  # fmt: skip
        assert shown["parallel"] == "dep"
        assert shown["batch_limit"] == 4 * 512
        replica = perf.Setup(
            gpu=catalog.gpu("h100-sxm"),
            gpu_count=4,
            model=catalog.model("gpt-oss-120b"),
            precision="fp8",
            parallel="dep",
        )
        point = perf.operating_point(replica, 1000, 1000, None)
        assert shown["output_tokens_per_s"] == pytest.approx(point.output_tokens_per_s, abs=0.001)

    def test_a_concurrency_above_the_kv_limit_runs_at_the_limit(self) -> None:
        shown = plan("--gpu", "h100-sxm", "--gpus", "2", "--model", "llama-3.3-70b",
                     "--precision", "fp8", "--concurrency", "100000")  # fmt: skip
        assert shown["batch"] == shown["batch_max"]

    def test_a_short_gpu_alias_names_the_catalog_gpu(self) -> None:
        assert plan("--gpu", "h200", "--model", "llama-3.1-8b")["gpu"] == "h200-sxm"

    @pytest.mark.parametrize(
        ("args", "words"),
        [
            (("--gpu", "h900", "--model", "llama-3.1-8b"), "unknown GPU"),
            (("--gpu", "h100-sxm", "--model", "llama-9"), "unknown model"),
            (("--gpu", "h100-sxm", "--model", "llama-3.1-8b", "--concurrency", "0"), "concurrency"),
            (("--gpu", "h100-sxm", "--model", "llama-3.1-8b", "--concurrency", "lots"), "max"),
            (("--gpu", "h100-sxm", "--model", "llama-3.1-8b", "--parallel", "dep"), "experts"),
            (("--gpu", "h100-sxm", "--model", "llama-3.1-8b", "--parallel", "pp"), "tp, dep"),
            (("--gpu", "h100-sxm", "--model", "llama-3.1-8b", "--efficiency-moe", "0"), "(0, 1]"),
            (("--gpu", "h100-sxm", "--model", "llama-3.1-8b", "--input", "0"), "input"),
            (("--gpu", "h100-sxm", "--model", "llama-3.1-8b", "--precision", "int3"), "fp8"),
            (("--gpu", "l40s", "--model", "llama-3.1-405b"), "does not fit"),
            (("--gpu", "h100-sxm", "--model", "llama-3.1-8b", "--gpus", "0"), "gpus"),
            (("--gpu", "a100-sxm-80gb", "--model", "llama-3.1-8b", "--precision", "fp8"), "fp8"),
        ],
    )
    def test_bad_input_is_one_clear_line_and_exit_1(
        self, args: tuple[str, ...], words: str
    ) -> None:
        assert words in refused(*args)


class TestProperties:
    @settings(max_examples=40, deadline=None)
    @given(
        concurrency=st.integers(min_value=1, max_value=300),
        more=st.integers(min_value=1, max_value=300),
    )
    def test_more_concurrency_never_lowers_total_throughput(
        self, concurrency: int, more: int
    ) -> None:
        """Up to the KV limit, a bigger batch serves at least as many tokens per second."""
        replica = setup()
        low = perf.operating_point(replica, 1000, 1000, concurrency)
        high = perf.operating_point(replica, 1000, 1000, concurrency + more)
        assert high.output_tokens_per_s >= low.output_tokens_per_s
        assert high.itl_ms >= low.itl_ms  # each token waits for a bigger step

    @settings(max_examples=30, deadline=None)
    @given(bandwidth_factor=st.floats(min_value=1.0, max_value=4.0))
    def test_more_bandwidth_never_lowers_throughput(self, bandwidth_factor: float) -> None:
        replica = setup()
        wider = replica.gpu.bandwidth_bytes_per_s * bandwidth_factor
        faster = dataclasses.replace(
            replica, gpu=dataclasses.replace(replica.gpu, bandwidth_bytes_per_s=wider)
        )
        base = perf.operating_point(replica, 1000, 500, 32)
        quick = perf.operating_point(faster, 1000, 500, 32)
        assert quick.output_tokens_per_s >= base.output_tokens_per_s
