"""Measure the two roofs of the performance model on the GPU at hand (needs PyTorch and a
CUDA GPU; not part of the test suite): memory bandwidth, dense GEMM throughput in bf16 and
fp8, and a decode-like weights-streaming GEMM across batch sizes, each beside the catalog's
peak, so the efficiency factors e_m and e_c can be held against a real chip.

    python bench/gpu_roofline.py --gpu h200-sxm --out roofline.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch

from tokenmill.economics import catalog


def timed_ms(action, repeats: int = 20) -> float:  # type: ignore[no-untyped-def]
    for _ in range(3):
        action()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        action()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def bandwidth_bytes_per_s() -> float:
    """A device-to-device copy of 4 GiB reads and writes every byte once."""
    source = torch.empty(4 << 30, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    ms = timed_ms(lambda: target.copy_(source))
    return 2 * source.numel() / (ms / 1000)


def gemm_flops_per_s(dtype: str, size: int = 8192) -> float | None:
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    if dtype == "bf16":
        ms = timed_ms(lambda: a @ b)
    else:
        try:
            a8 = a.to(torch.float8_e4m3fn)
            b8 = b.t().contiguous().to(torch.float8_e4m3fn).t()
            scale = torch.tensor(1.0, device="cuda")
            ms = timed_ms(lambda: torch._scaled_mm(a8, b8, scale, scale, out_dtype=torch.bfloat16))
        except (RuntimeError, AttributeError):
            return None
    return 2 * size**3 / (ms / 1000)


def decode_sweep(hidden: int = 8192, ffn: int = 28672) -> list[dict[str, float]]:
    """One weight matrix of a 70B model's MLP (bf16, 470 MB) times a batch of activations:
    the decode step's core, from weight-bound (batch 1) to compute-bound."""
    weight = torch.randn(ffn, hidden, device="cuda", dtype=torch.bfloat16)
    rows = []
    for batch in (1, 8, 32, 64, 128, 256, 512, 1024, 2048):
        x = torch.randn(batch, hidden, device="cuda", dtype=torch.bfloat16)
        ms = timed_ms(lambda x=x: x @ weight.t())
        bytes_moved = weight.numel() * 2 + x.numel() * 2 + batch * ffn * 2
        rows.append(
            {
                "batch": batch,
                "ms": round(ms, 4),
                "bandwidth_bytes_per_s": bytes_moved / (ms / 1000),
                "flops_per_s": 2 * batch * hidden * ffn / (ms / 1000),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpu", required=True, help="catalog id of the GPU at hand")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    gpu = catalog.gpu(args.gpu)
    bandwidth = bandwidth_bytes_per_s()
    bf16 = gemm_flops_per_s("bf16")
    fp8 = gemm_flops_per_s("fp8")
    sweep = decode_sweep()
    result = {
        "device": torch.cuda.get_device_name(),
        "catalog_gpu": gpu.id,
        "bandwidth_ratio_of_peak": bandwidth / gpu.bandwidth_bytes_per_s,
        "bandwidth_bytes_per_s": bandwidth,
        "gemm_bf16_ratio_of_peak": bf16 / gpu.flops_bf16_per_s if bf16 else None,
        "gemm_fp8_ratio_of_peak": fp8 / gpu.flops_fp8_per_s
        if fp8 and gpu.flops_fp8_per_s
        else None,
        "decode_sweep": [
            {
                **row,
                "bandwidth_ratio_of_peak": row["bandwidth_bytes_per_s"] / gpu.bandwidth_bytes_per_s,
                "flops_ratio_of_bf16_peak": row["flops_per_s"] / gpu.flops_bf16_per_s,
            }
            for row in sweep
        ],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
