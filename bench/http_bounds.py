#!/usr/bin/env python3
"""What the bounded HTTP protocol costs the hot path: the same gateway, served by uvicorn's
plain httptools protocol, by ``api/http_protocol.py``'s bounded one, and by uvicorn's h11
protocol (the other way to bound a head, ``h11_max_incomplete_event_size``), side by side.

Layout (2-core machine): the gateway alone on core 0, the load client (shared/bench/load.py)
on core 1. The gateway serves a free sim model at time_scale 0 (the request path minus
billing, no upstream), so the protocol's share is as large as it can be. Rounds alternate
the kinds (A B C A B C ...) so drift on a shared machine hits them alike.

  .venv/bin/python bench/http_bounds.py [--rounds 3] [--duration 5] [-c 1,64]
Prints a markdown table and writes bench/results/http_bounds-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import overhead_processes as op
import yaml

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("plain", "bounded", "h11")
SUT_CORE, LOAD_CORE = 0, 1
LOAD = ROOT.parent / "shared" / "bench" / "load.py"
SERVER = """
import sys, uvicorn
from pathlib import Path
from tokenmill.api.app import create_app
from tokenmill.api.http_protocol import server_options
from tokenmill.config import resolve_settings
settings = resolve_settings(home=sys.argv[2], config_path=sys.argv[1], environ={})
limits = settings.config.limits
options = {
    "plain": {"http": "httptools"},
    "h11": {"http": "h11", "h11_max_incomplete_event_size": limits.header_bytes_max},
}.get(sys.argv[4]) or server_options(limits)
uvicorn.run(create_app(settings), host="127.0.0.1", port=int(sys.argv[3]), loop="uvloop",
            lifespan="on", log_level="warning", access_log=False, **options)
"""
CONFIG = {
    "engines": {"sim": {"kind": "sim", "time_scale": 0.0}},
    "deployments": {
        "sim-8b": {"engine": "sim", "model": "llama-3.1-8b", "gpu": "h100-sxm"},
    },
    "models": {"bench": {"deployments": ["sim-8b"]}},
}


def serve(
    procs: op.Processes, kind: str, config: Path, home: Path, port: int
) -> subprocess.Popen[bytes]:
    home.mkdir(parents=True)
    command = [sys.executable, "-c", SERVER, str(config), str(home), str(port), kind]
    process = procs.start(f"gateway-{kind}", command, SUT_CORE)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"the {kind} gateway did not start")
        time.sleep(0.1)


def bench_key(home: Path) -> str:
    """An account and a key for the load, made with the CLI beside the running gateway."""
    tokenmill = str(ROOT / ".venv" / "bin" / "tokenmill")
    subprocess.run(
        [tokenmill, "accounts", "create", "bench", "--home", str(home)],
        check=True,
        capture_output=True,
    )
    made = subprocess.run(
        [tokenmill, "keys", "create", "bench", "--json", "--home", str(home)],
        check=True,
        capture_output=True,
        text=True,
    )
    return str(json.loads(made.stdout)["key"])


def load(
    procs: op.Processes, port: int, key: str, concurrency: int, duration_s: float
) -> dict[str, float]:
    command = [
        sys.executable,
        str(LOAD),
        "--target",
        f"http://127.0.0.1:{port}/v1",
        "--key",
        key,
        "--model",
        "bench",
        "-c",
        str(concurrency),
        "-d",
        str(duration_s),
    ]
    client = procs.start("load", command, LOAD_CORE)
    client.wait(timeout=duration_s + 120)
    result: dict[str, float] = json.loads(procs.log_text("load").strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("-c", "--concurrency", default="1,64")
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="tokenmill-bench-"))
    (work / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    results: dict[str, dict[int, list[dict[str, float]]]] = {kind: {} for kind in KINDS}
    procs = op.Processes(work)
    try:
        for round_index in range(args.rounds):
            for kind_index, kind in enumerate(KINDS):
                port = 9300 + round_index * len(KINDS) + kind_index
                home = work / f"r{round_index}" / kind
                server = serve(procs, kind, work / "config.yaml", home, port)
                try:
                    key = bench_key(home)
                    time.sleep(1.0)  # the key reaches the gateway's directory
                    for level in levels:
                        cell = load(procs, port, key, level, args.duration)
                        results[kind].setdefault(level, []).append(cell)
                        print(
                            f"round {round_index} {kind} c={level}: {cell['rps']:.0f} req/s",
                            file=sys.stderr,
                        )
                finally:
                    procs.stop(server)
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    report(results, levels, args)


def report(
    results: dict[str, dict[int, list[dict[str, float]]]],
    levels: list[int],
    args: argparse.Namespace,
) -> None:
    rows = []
    print(
        "| c | " + " | ".join(f"{kind} req/s" for kind in KINDS) + " | bounded/plain |"
        " h11/plain | " + " | ".join(f"{kind} p50 ms" for kind in KINDS) + " |"
    )
    print("| ---: " * (2 * len(KINDS) + 3) + "|")
    for level in levels:
        rps = {k: statistics.median(c["rps"] for c in results[k][level]) for k in KINDS}
        p50 = {
            k: statistics.median(c["latency_ms"]["p50"] for c in results[k][level]) for k in KINDS
        }
        print(
            f"| {level} | "
            + " | ".join(f"{rps[k]:.0f}" for k in KINDS)
            + f" | {rps['bounded'] / rps['plain']:.3f} | {rps['h11'] / rps['plain']:.3f} | "
            + " | ".join(f"{p50[k]:.3f}" for k in KINDS)
            + " |"
        )
        rows.append({"concurrency": level, "rps": rps, "p50_ms": p50})
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    out = ROOT / "bench" / "results" / f"http_bounds-{datetime.date.today()}.json"
    out.write_text(
        json.dumps(
            {
                "commit": commit,
                "machine": os.uname().nodename,
                "rounds": args.rounds,
                "duration_s": args.duration,
                "rows": rows,
                "raw": results,
            },
            indent=2,
        )
    )
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
