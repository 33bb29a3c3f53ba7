#!/usr/bin/env python3
"""What the store's size costs the requests: an empty SQLite business beside one that holds
``--records`` usage records (10 million by default), served by the same code in one run.

The full business is synthetic but shaped like a real one, written straight into a migrated
database: ``--accounts`` accounts (a few large, many small: activity falls as 1/rank), two
keys each, eight models, records spread evenly over ``--months`` months up to an hour ago,
each with its usage transfer to ``revenue:USD``, a grant per account and the cached
balances that match. Secondary indexes are dropped for the bulk load and rebuilt after
(sorted builds), so the file is the one a gateway would have grown.

Each round starts ``tokenmill serve`` (core 0) on the empty business, then on the full one,
timing the start until its first answer; the load client (shared/bench/load.py) and a fake
upstream run on core 1. Cells: billed non-streamed requests at c=64 (requests/s and the
gateway's CPU per request) and at c=1 (latency). Rounds alternate so a drift of the machine
weighs on both. Also reported: the file's size, each table's and index's bytes (SQLite's
dbstat), and the build's time.

  .venv/bin/python bench/store_size.py [--records 10000000] [--rounds 2] [--duration 10]
  .venv/bin/python bench/store_size.py --keep /tmp/store-10m.db   # build once, reuse after

Writes bench/results/store_size-<date>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import itertools
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import overhead_processes as op

from tokenmill.retail.ledger import Transfer, operator_account, usage_transfer_id
from tokenmill.store.database import open_engine
from tokenmill.store.group_commit import _Batch, _SqliteWriter
from tokenmill.store.ledger import balance_upsert_sql, transfer_insert_sql, transfer_row
from tokenmill.store.tables import metadata
from tokenmill.store.usage import insert_sql, record_row
from tokenmill.store.wide_sums import split_balance
from tokenmill.usage import UsageRecord

ROOT = Path(__file__).resolve().parent.parent
SHARED_BENCH = ROOT.parent / "shared" / "bench"
SUT_CORE, LOAD_CORE = 0, 1
MONTH_MS = 30 * 86_400_000
MODELS = [f"model-{index}" for index in range(8)]
GRANT_NANO = 10**15  # per account: far more than its synthetic spend
CHUNK_COUNT = 100_000
op.GATEWAY_READY_S_MAX = 900.0  # a large business may take a while to load
# The tables the bulk load fills; their secondary indexes are rebuilt after it.
BULK_TABLES = ("usage_records", "transfers")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per cell")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--keep", type=Path, help="the full business's file: built once there, reused after"
    )
    parser.add_argument("--out", type=Path)
    return parser.parse_args()


def log(message: str) -> None:
    print(f"[store_size {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def migrated(path: Path) -> None:
    open_engine(f"sqlite:///{path}").dispose()


def secondary_indexes(tables: tuple[str, ...]) -> list[Any]:
    return [index for name in tables for index in metadata.tables[name].indexes]


REVENUE = operator_account("revenue", "USD")


def billed(
    request_id: str, account: str, at_ms: int, prompt: int, completion: int, charge_nano: int
) -> tuple[UsageRecord, Transfer]:
    """A billed request's usage record and its usage transfer, as the gateway writes them."""
    record = UsageRecord(
        request_id, account, f"key_{account[5:]}_{at_ms % 2}", MODELS[at_ms % len(MODELS)],
        "deployment", "engine", "chat", prompt, completion, 0, False, "ok", 200, None, at_ms,
        200, 1500, charge_nano=charge_nano, cost_nano=charge_nano // 2, cost_basis="modeled",
    )  # fmt: skip
    transfer = Transfer(
        usage_transfer_id(request_id), account, REVENUE, charge_nano, "USD", "usage", None,
        at_ms,
    )  # fmt: skip
    return record, transfer


def build_business(path: Path, records: int, accounts: int, months: int) -> dict[str, Any]:
    """Fill a migrated database at ``path``; returns what was written and how long it took."""
    started = time.monotonic()
    migrated(path)
    rng = random.Random(15)
    now = int(time.time() * 1000) - 3_600_000
    first = now - months * MONTH_MS
    account_ids = [f"acct_bench{index:08d}" for index in range(accounts)]
    weights = list(itertools.accumulate(1 / (rank + 1) for rank in range(accounts)))
    balances = dict.fromkeys(account_ids, GRANT_NANO)
    grants = operator_account("grants", "USD")
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=OFF")
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute("PRAGMA cache_size=-1000000")
    indexes = secondary_indexes(BULK_TABLES)
    connection.execute("BEGIN")
    for index in indexes:
        connection.execute(f"DROP INDEX {index.name}")
    connection.executemany(
        "INSERT INTO accounts (id, name, status, created_at_ms, currency, credit_limit_nano)"
        " VALUES (?, ?, 'active', ?, 'USD', 0)",
        [(account, account, first) for account in account_ids],
    )
    connection.executemany(
        transfer_insert_sql("?"),
        [
            transfer_row(
                Transfer(
                    f"grant:{account}", grants, account, GRANT_NANO, "USD", "grant", "bench", first
                )
            )
            for account in account_ids
        ],
    )
    step = (now - first) / max(1, records)
    prefix = ""
    counter = 0
    usage_sql, transfer_sql = insert_sql("?"), transfer_insert_sql("?")
    written = 0
    while written < records:
        count = min(CHUNK_COUNT, records - written)
        picks = rng.choices(account_ids, cum_weights=weights, k=count)
        usage_rows, transfer_rows = [], []
        for offset, account in enumerate(picks):
            at = int(first + (written + offset) * step)
            if not prefix or counter >= 50_000:  # a gateway restart: a new id prefix
                prefix, counter = f"req_{rng.getrandbits(64):016x}", 0
            counter += 1
            request_id = f"{prefix}{counter:010x}"
            prompt, completion = 20 + (at % 3000), 1 + (at % 700)
            charge = prompt * 150 + completion * 600
            balances[account] -= charge
            record, transfer = billed(request_id, account, at, prompt, completion, charge)
            usage_rows.append(record_row(record))
            transfer_rows.append(transfer_row(transfer))
        connection.executemany(usage_sql, usage_rows)
        connection.executemany(transfer_sql, transfer_rows)
        written += count
        if written % 1_000_000 < CHUNK_COUNT:
            log(f"  {written:,} records written ({time.monotonic() - started:.0f} s)")
    balances[grants] = -GRANT_NANO * accounts
    balances[REVENUE] = -sum(balances[account] - GRANT_NANO for account in account_ids)
    connection.executemany(
        balance_upsert_sql("?"),
        [(account, "USD", *split_balance(value), now) for account, value in balances.items()],
    )
    loaded_s = time.monotonic() - started
    for index in indexes:
        columns = ", ".join(column.name for column in index.columns)
        connection.execute(f"CREATE INDEX {index.name} ON {index.table.name} ({columns})")
    connection.execute("COMMIT")
    connection.execute("ANALYZE")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.close()
    return {
        "records": records,
        "accounts": accounts,
        "months": months,
        "bulk_load_s": round(loaded_s, 1),
        "build_s": round(time.monotonic() - started, 1),
    }


def sizes(path: Path) -> dict[str, int]:
    """Bytes of each table and index (dbstat), largest first; empty where SQLite lacks it."""
    with sqlite3.connect(path) as connection:
        try:
            rows = connection.execute(
                "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
            ).fetchall()
        except sqlite3.OperationalError:
            return {}
    return {name: int(size) for name, size in rows}


COMMITS_COUNT = 2000
COMMIT_BATCHES = (1, 16)  # records per commit: an idle gateway's, and a busy one's
CHECKPOINT_COMMITS = 100  # as the gateway does (store/group_commit.py), outside the timing
REPEATS = 3  # each figure is the least of this many runs: noise only ever adds


def commit_cost(path: Path, label: str) -> dict[str, float]:
    """CPU per billed record of the group commit's own SQLite writer on ``path`` (a usage
    record, its transfer and two balance updates per record), at each of COMMIT_BATCHES;
    the WAL is checkpointed every CHECKPOINT_COMMITS commits, untimed (the gateway does it
    on a thread of its own)."""
    writer = _SqliteWriter(open_engine(f"sqlite:///{path}", migrate=False), "NORMAL", None)
    prefix = f"req_bench{label}{os.getpid():08x}"
    serial = itertools.count()

    def batch(count: int) -> _Batch:
        items = []
        for _ in range(count):
            request_id = f"{prefix}{next(serial):010x}"
            record, transfer = billed(request_id, "acct_live", int(time.time() * 1000), 40, 16, 100)
            items.append((record, (transfer,), None, None))
        return _Batch(items)  # type: ignore[arg-type]

    figures = {}
    for count in COMMIT_BATCHES:
        runs = []
        for _ in range(REPEATS):
            elapsed = 0.0
            for index in range(COMMITS_COUNT // count):
                rows = batch(count)
                started = time.process_time()
                writer._write_now(rows)
                elapsed += time.process_time() - started
                if index % CHECKPOINT_COMMITS == CHECKPOINT_COMMITS - 1:
                    writer._checkpoint("RESTART")
            runs.append(elapsed / (COMMITS_COUNT // count * count))
        figures[f"batch_{count}_us_per_record"] = round(min(runs) * 1e6, 1)
    writer._discard()
    return figures


def index_costs(work: Path) -> dict[str, dict[str, float]]:
    """Commit cost on an empty store with every index, then without each secondary index of
    the tables a request writes: what each one adds to every commit."""
    costs = {}
    for dropped in [None, *secondary_indexes(BULK_TABLES)]:
        path = work / "index-cost.db"
        migrated(path)
        if dropped is not None:
            with sqlite3.connect(path) as connection:
                connection.execute(f"DROP INDEX {dropped.name}")
        name = "all indexes" if dropped is None else f"without {dropped.name}"
        costs[name] = commit_cost(path, "i")
        for leftover in work.glob("index-cost.db*"):
            leftover.unlink()
    return costs


def load(key: str, base_url: str, concurrency: int, a: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        str(SHARED_BENCH / "load.py"),
        "--target",
        base_url,
        "--key",
        key,
        "--model",
        "billed",
        "-c",
        str(concurrency),
        "-d",
        str(a.duration),
        "--warmup",
        str(a.warmup),
        "-n",
        str(int(a.duration * 200_000)),
        "--max-tokens",
        "16",
    ]
    done = subprocess.run(
        ["taskset", "-c", str(LOAD_CORE), *command],
        capture_output=True,
        text=True,
        timeout=a.duration + a.warmup + 120,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(home: Path, config: Path, upstream: str, a: argparse.Namespace) -> dict[str, Any]:
    """One gateway on ``home``: its start, then billed non-streamed c=64 and c=1."""
    procs = op.Processes(home)
    port = op.free_port()
    try:
        started = time.monotonic()
        gateway, key = op.start_gateway(
            procs,
            str(ROOT / ".venv" / "bin" / "tokenmill"),
            config,
            home,
            port,
            SUT_CORE,
            ["billed"],
        )
        start_s = time.monotonic() - started
        base_url = f"http://127.0.0.1:{port}/v1"
        cells: dict[str, Any] = {"start_s": round(start_s, 2)}
        for concurrency in (64, 1):
            result, cpu, served = op.cpu_over(
                lambda: op.cpu_s(gateway.pid),
                upstream,
                functools.partial(load, key, base_url, concurrency, a),
            )
            result["cpu_us_per_request"] = round(cpu / served * 1e6, 1) if served else None
            cells[f"c{concurrency}"] = result
            log(
                f"  {home.name} c={concurrency}: {result['rps']:.0f} req/s, p50"
                f" {result['latency_ms']['p50']} ms, {result['cpu_us_per_request']} us/request"
            )
        return cells
    finally:
        procs.stop_all()


def main() -> None:
    a = parse_args()
    work = Path(tempfile.mkdtemp(prefix="tokenmill-store-size-"))
    procs = op.Processes(work)
    results: dict[str, Any] = {"rounds": []}
    try:
        full = a.keep or work / "full.db"
        if a.keep is not None and a.keep.exists():
            results["build"] = {"reused": str(a.keep)}
        else:
            log(f"building a business of {a.records:,} records in {full}")
            results["build"] = build_business(full, a.records, a.accounts, a.months)
        results["build"]["bytes"] = full.stat().st_size
        results["sizes"] = sizes(full)
        log(f"business: {full.stat().st_size / 2**30:.2f} GiB")
        _, upstream = op.start_upstream(
            procs, "upstream", SHARED_BENCH / "fake_upstream.py", sys.executable, LOAD_CORE, []
        )
        config = work / "tokenmill.yaml"
        op.write_config(config, {"billed": upstream}, prices={"billed": ("0.01", "0.01")})
        empty = work / "empty.db"
        migrated(empty)
        log("commit cost: empty store, full store, and without each index")
        scratch = work / "scratch.db"
        shutil.copy(empty, scratch)
        results["commit_cost"] = {"empty": commit_cost(scratch, "e")}
        shutil.copy(full, scratch)
        results["commit_cost"]["full"] = commit_cost(scratch, "f")
        scratch.unlink()
        results["index_cost"] = index_costs(work)
        log(f"  {results['commit_cost']}")
        for round_index in range(a.rounds):
            row: dict[str, Any] = {}
            for name, source in (("empty", empty), ("full", full)):
                home = work / f"{name}-{round_index}"
                home.mkdir()
                copy = home / "tokenmill.db"
                shutil.copy(source, copy)
                log(f"round {round_index + 1}: {name} store")
                row[name] = measure(home, config, upstream, a)
                copy.unlink()
            results["rounds"].append(row)
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    report(results, a)


def _mean(rounds: list[dict[str, Any]], name: str, pick: Any) -> float:
    values = [pick(row[name]) for row in rounds]
    return sum(values) / len(values)


def report(results: dict[str, Any], a: argparse.Namespace) -> None:
    rounds = results["rounds"]
    print("| store | start s | c=64 req/s | c=64 us/request | c=1 p50 ms | c=1 p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in ("empty", "full"):
        figures = [
            _mean(rounds, name, lambda cells: cells["start_s"]),
            _mean(rounds, name, lambda cells: cells["c64"]["rps"]),
            _mean(rounds, name, lambda cells: cells["c64"]["cpu_us_per_request"]),
            _mean(rounds, name, lambda cells: cells["c1"]["latency_ms"]["p50"]),
            _mean(rounds, name, lambda cells: cells["c1"]["latency_ms"]["p99"]),
        ]
        print(f"| {name} | " + " | ".join(f"{value:,.2f}" for value in figures) + " |")
    ratio = _mean(rounds, "full", lambda c: c["c64"]["rps"]) / _mean(
        rounds, "empty", lambda c: c["c64"]["rps"]
    )
    results["full_over_empty_rps_c64"] = round(ratio, 3)
    print(f"\nfull/empty c=64 req/s: {ratio:.3f}")
    for name, size in list(results["sizes"].items())[:12]:
        print(f"  {name}: {size / 2**20:,.0f} MiB")
    print(
        "\n| commit, CPU us per billed record | "
        + " | ".join(f"{count} per commit" for count in COMMIT_BATCHES)
        + " |"
    )
    print("| --- |" + " ---: |" * len(COMMIT_BATCHES))
    rows = {
        **{f"{name} store": c for name, c in results["commit_cost"].items()},
        **results["index_cost"],
    }
    for name, cost in rows.items():
        print(
            f"| {name} | "
            + " | ".join(f"{cost[f'batch_{count}_us_per_record']}" for count in COMMIT_BATCHES)
            + " |"
        )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    results.update(
        commit=commit,
        machine=os.uname().nodename,
        command_line=" ".join(sys.argv),
        started_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    out = a.out or ROOT / "bench" / "results" / f"store_size-{datetime.date.today()}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
