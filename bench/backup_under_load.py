#!/usr/bin/env python3
"""What an online backup costs the requests a gateway serves meanwhile.

A SQLite business of about ``--rows`` usage records (synthetic, written straight into a
migrated database) is served by ``tokenmill serve`` on core 0 (a free sim model at
time_scale 0, so every request is one usage record through the group commit); the load
client (shared/bench/load.py, c=4) runs on core 1. Side by side in one run: requests per
second and latency percentiles with no backup, then while ``tokenmill backup`` copies the
file over and over for the same duration.

  .venv/bin/python bench/backup_under_load.py [--rows 800000] [--duration 8] [--compare REV]

``--compare REV`` serves the same business from a checkout of REV too (a git worktree, on
PYTHONPATH), alternating with this one, so before and after stand side by side.
Prints a markdown table and writes bench/results/backup_under_load-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import overhead_processes as op
import yaml

from tokenmill.store.database import open_engine
from tokenmill.store.usage import insert_sql

ROOT = Path(__file__).resolve().parent.parent
TOKENMILL = ROOT / ".venv" / "bin" / "tokenmill"
LOAD = ROOT.parent / "shared" / "bench" / "load.py"
PORT = 9350
SUT_CORE, LOAD_CORE = 0, 1
CONFIG = {
    "engines": {"sim": {"kind": "sim", "time_scale": 0.0}},
    "deployments": {"sim-8b": {"engine": "sim", "model": "llama-3.1-8b", "gpu": "h100-sxm"}},
    "models": {"bench": {"deployments": ["sim-8b"]}},
}


def make_business(home: Path, rows: int) -> int:
    """A migrated database holding ``rows`` synthetic usage records; returns its bytes."""
    database = home / "tokenmill.db"
    open_engine(f"sqlite:///{database}").dispose()
    with sqlite3.connect(database) as connection:
        started = 1_700_000_000_000
        batch = []
        for index in range(rows):
            batch.append(
                (
                    f"req_bench_{index:012d}_{secrets.token_hex(4)}",
                    "acct_bench",
                    "key_bench",
                    "bench",
                    "sim-8b",
                    "sim",
                    "chat",
                    40,
                    16,
                    0,
                    0,
                    "ok",
                    200,
                    None,
                    started + index,
                    1,
                    2,
                    0,
                    0,
                    0,
                    0,
                    None,
                )
            )
            if len(batch) == 50_000:
                connection.executemany(insert_sql("?"), batch)
                batch.clear()
        if batch:
            connection.executemany(insert_sql("?"), batch)
        connection.commit()
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return database.stat().st_size


def load(procs: op.Processes, key: str, duration_s: float) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        str(LOAD),
        "--target",
        f"http://127.0.0.1:{PORT}/v1",
        "--key",
        key,
        "--model",
        "bench",
        "-c",
        "4",
        "-d",
        str(duration_s),
        "--warmup",
        "0.5",
    ]
    return procs.start("load", command, LOAD_CORE)


def load_result(procs: op.Processes, client: subprocess.Popen[bytes]) -> dict[str, Any]:
    client.wait(timeout=600)
    result: dict[str, Any] = json.loads(procs.log_text("load").strip().splitlines()[-1])
    return result


def backups_until(procs: op.Processes, home: Path, client: subprocess.Popen[bytes]) -> list[float]:
    """Back the business up again and again while ``client`` runs; each copy's seconds."""
    times = []
    while client.poll() is None:
        target = home.parent / f"copy-{len(times)}.db"
        started = time.monotonic()
        copy = procs.start(
            "backup", [str(TOKENMILL), "backup", str(target), "--home", str(home)], LOAD_CORE
        )
        assert copy.wait(timeout=600) == 0, procs.log_text("backup")
        times.append(time.monotonic() - started)
        target.unlink()
    return times


def measure(home: Path, config: Path, source: Path, duration_s: float) -> dict[str, object]:
    """Quiet, then with backups running, on one gateway serving ``home`` from ``source``."""
    procs = op.Processes(home.parent)
    os.environ["PYTHONPATH"] = str(source)  # the gateway runs this checkout's code
    try:
        _, key = op.start_gateway(procs, str(TOKENMILL), config, home, PORT, SUT_CORE, ["bench"])
        quiet = load_result(procs, load(procs, key, duration_s))
        client = load(procs, key, duration_s)
        copies = backups_until(procs, home, client)
        busy = load_result(procs, client)
    finally:
        procs.stop_all()
        os.environ.pop("PYTHONPATH", None)
    return {"quiet": quiet, "during_backup": busy, "copy_s": copies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=800_000)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--compare", help="a git revision to serve side by side with this one")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tokenmill-backup-bench-"))
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    template = work / "template"
    template.mkdir()
    size = make_business(template, args.rows)
    print(f"business of {size / 2**20:.0f} MiB", file=sys.stderr)
    sources = {"this": ROOT / "src"}
    if args.compare:
        tree = work / "compare"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), args.compare],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        sources[args.compare] = tree / "src"
    results: dict[str, dict[str, object]] = {}
    try:
        for name, source in sources.items():
            home = work / f"home-{len(results)}"
            home.mkdir()
            shutil.copy(template / "tokenmill.db", home / "tokenmill.db")
            results[name] = measure(home, config, source, args.duration)
    finally:
        if args.compare:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(work / "compare")],
                cwd=ROOT,
                check=False,
                capture_output=True,
            )
        shutil.rmtree(work, ignore_errors=True)
    report(results, size, args)


def report(results: dict[str, dict[str, object]], size: int, args: argparse.Namespace) -> None:
    print("| code | phase | req/s | p50 ms | p99 ms | max ms | during/quiet |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, result in results.items():
        quiet, busy = result["quiet"], result["during_backup"]
        assert isinstance(quiet, dict) and isinstance(busy, dict)
        for phase, cell in (("no backup", quiet), ("backup running", busy)):
            latency = cell["latency_ms"]
            ratio = f"{busy['rps'] / quiet['rps']:.2f}" if cell is busy else ""
            print(
                f"| {name} | {phase} | {cell['rps']:.0f} | {latency['p50']:.2f} |"
                f" {latency['p99']:.2f} | {latency.get('max', float('nan')):.2f} | {ratio} |"
            )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    out = ROOT / "bench" / "results" / f"backup_under_load-{datetime.date.today()}.json"
    out.write_text(
        json.dumps(
            {
                "commit": commit,
                "machine": os.uname().nodename,
                "database_bytes": size,
                "rows": args.rows,
                "duration_s": args.duration,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {out} ({size / 2**20:.0f} MiB business)", file=sys.stderr)


if __name__ == "__main__":
    main()
