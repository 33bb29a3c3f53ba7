#!/usr/bin/env python3
"""Gateway overhead: tokenmill side by side with going straight to a free upstream.

Layout (2-core machine): ``tokenmill serve`` alone on core 0; the shared fake upstreams
(``../shared/bench/fake_upstream.py``) and the load clients on core 1. The gateway and the
direct runs use separate upstream instances, so the gateway's upstreams' ``/stats`` count
exactly what went through the gateway. In one run:

* matrix: ``load.py`` direct and through the gateway, non-streamed and streamed
  (16 tokens), at concurrency 1, 16 and 64; through the gateway twice: a free model
  (metering only), a priced one (billing on: hold, settle, usage transfer), and a priced
  one behind two deployments called with a rate-limited key (routing and limits on), on
  the same upstream, so each layer's cost is a ratio of two neighbours;
* surfaces: chat, Anthropic Messages and OpenAI Responses (stored, as by default, and with
  ``store: false``) through the gateway on one billed model, non-streamed and streamed at
  c=1 and c=64 (``stream_client.py --surface``);
* realistic stream: upstreams with ``--delay-ms 100 --itl-ms 20``, 256 tokens, c=256,
  TTFT and inter-token gaps direct vs gateway (``stream_client.py``);
* optional py-spy profile of the gateway under non-streamed c=16 load (``--profile``);
* long run, twice: a mix of non-streamed, streamed and cut streams (the client closes the
  socket after the first token) with the gateway's RSS before and after each;
* peers: LiteLLM's proxy and Portkey's gateway (``peers.py``), each alone on the gateway's
  core, through the same non-streamed and streamed cells (skipped with a note where not
  installed; ``--skip-peers``);
* metering check: usage records in the gateway's SQLite == requests its upstreams served.

  .venv/bin/python bench/gateway_overhead.py [--quick] [--profile]
Writes bench/results/gateway_overhead-<date>[-quick].json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead_processes as op
import overhead_report as report
import peers

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED_DEFAULT = ROOT.parent / "shared" / "bench"
SUT_CORE, LOAD_CORE = 0, 1
LONG_MIX = "nonstream=50,stream=40,cut=10"
SURFACES = ("chat", "messages", "responses")
# The surfaces' rows: each surface as its SDK sends it, and Responses with ``store: false``
# (the same work as chat's but the translation: no stored response in the commit).
SURFACE_RUNS = {
    "chat": ["--surface", "chat"],
    "messages": ["--surface", "messages"],
    "responses": ["--surface", "responses"],
    "responses_unstored": ["--surface", "responses", "--no-store"],
}
assert tuple(SURFACE_RUNS) == report.SURFACE_ROWS
SURFACE_CONCURRENCY = (1, 64)
STREAM_CHUNKS_16 = 16 + 3  # a 16-token stream: the role chunk, 16 tokens, the finish, usage


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="3 s cells, 20,000-request long runs: a fast check"
    )
    ap.add_argument("-d", "--duration", type=float, default=10.0, help="measured s per cell")
    ap.add_argument("--warmup", type=float, default=2.0, help="s before measuring, per cell")
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument(
        "--long-requests", type=int, default=1_000_000, help="requests per long run (there are two)"
    )
    ap.add_argument(
        "--long-seconds-max",
        type=float,
        default=600.0,
        help="time limit per long run, s; the run stops at whichever comes first",
    )
    ap.add_argument("--long-concurrency", type=int, default=64)
    ap.add_argument("--profile", action="store_true", help="py-spy the gateway, c=16 non-stream")
    ap.add_argument("--profile-seconds", type=float, default=10.0)
    ap.add_argument("--profile-surface", choices=SURFACES, default="chat")
    ap.add_argument("--profile-stream", action="store_true", help="profile streamed requests")
    ap.add_argument("--profile-concurrency", type=int, default=16)
    ap.add_argument("--profile-raw", type=Path, help="keep py-spy's raw stacks in this file")
    ap.add_argument(
        "--profile-max-tokens", type=int, default=16, help="tokens per answer while profiling"
    )
    ap.add_argument(
        "--profile-model", default="fake", help="fake (metering only) or fake-billed (billing on)"
    )
    ap.add_argument("--skip-matrix", action="store_true")
    ap.add_argument("--skip-long", action="store_true")
    ap.add_argument("--skip-surfaces", action="store_true", help="no chat/Messages/Responses rows")
    ap.add_argument("--skip-peers", action="store_true", help="no LiteLLM and Portkey rows")
    ap.add_argument("--litellm-bin", type=Path, default=Path("/tmp/litellm-venv/bin/litellm"))
    ap.add_argument(
        "--portkey-js",
        type=Path,
        default=Path("/tmp/portkey/node_modules/@portkey-ai/gateway/build/start-server.js"),
    )
    ap.add_argument(
        "--shared-bench",
        type=Path,
        default=SHARED_DEFAULT,
        help="folder with load.py and fake_upstream.py",
    )
    ap.add_argument("--out", type=Path, help="results JSON (default bench/results/...)")
    ap.add_argument("--keep-workdir", action="store_true", help="keep logs and the gateway home")
    a = ap.parse_args()
    if a.quick:
        a.duration, a.warmup = 3.0, 1.0
        if "--long-requests" not in sys.argv:
            a.long_requests = 20_000
    return a


class Bench:
    def __init__(self, a: argparse.Namespace, workdir: Path) -> None:
        self.a = a
        self.workdir = workdir
        self.procs = op.Processes(workdir)
        self.python = sys.executable
        self.load_py = a.shared_bench / "load.py"
        self.client_py = HERE / "stream_client.py"
        self.urls: dict[str, str] = {}
        self.gateway_url = ""
        self.key = ""
        self.limited_key = ""
        self.gateway: subprocess.Popen[bytes] | None = None
        self.results: dict[str, Any] = {}

    # -- setup ---------------------------------------------------------------------------
    def start_all(self) -> None:
        fake = self.a.shared_bench / "fake_upstream.py"
        realistic = ["--delay-ms", "100", "--itl-ms", "20"]
        specs = {
            "direct": [],
            "gateway": [],
            "realistic-direct": realistic,
            "realistic-gateway": realistic,
            "midstream-gateway": ["--itl-ms", "5"],
            "peers": [],
        }
        for name, extra in specs.items():
            _, self.urls[name] = op.start_upstream(
                self.procs, f"upstream-{name}", fake, self.python, LOAD_CORE, extra
            )
        config = self.workdir / "tokenmill.yaml"
        models = {
            "fake": self.urls["gateway"],
            "fake-billed": self.urls["gateway"],
            "fake-realistic": self.urls["realistic-gateway"],
            "fake-midstream": self.urls["midstream-gateway"],
            op.FLEET_MODEL: self.urls["gateway"],
        }
        # The demo account's 5.00 USD grant pays for ~20 million requests at this price.
        prices = {"fake-billed": ("0.01", "0.01"), op.FLEET_MODEL: ("0.01", "0.01")}
        op.write_config(config, models, prices=prices)
        port = op.free_port()
        self.gateway, self.key = op.start_gateway(
            self.procs, tokenmill_bin(), config, self.workdir / "home", port, SUT_CORE, list(models)
        )
        self.gateway_url = f"http://127.0.0.1:{port}/v1"
        self.limited_key = op.limited_key(tokenmill_bin(), self.workdir / "home")
        time.sleep(1.0)  # the gateway follows the new key and its limits within a poll
        log(f"gateway pid {self.gateway.pid} on {self.gateway_url}, upstreams {self.urls}")

    def rss(self, label: str) -> dict[str, Any]:
        assert self.gateway is not None
        time.sleep(1.0)  # let the last requests' buffers go
        figures = {"when": label, **op.memory_mib(self.gateway.pid)}
        log(f"gateway memory {label}: {figures}")
        return figures

    # -- load runs -----------------------------------------------------------------------
    def cpu_cost(
        self, upstream: str, chunks_per_request: int, run: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """``run``'s result with the gateway's CPU time over it, per request its upstream
        served and, for streams, per relayed chunk (warm-up included on both sides of the
        ratio; the gateway's few background tasks are in it too)."""
        assert self.gateway is not None
        pid = self.gateway.pid
        result, cpu, served = op.cpu_over(lambda: op.cpu_s(pid), self.urls[upstream], run)
        result["gateway_cpu_s"] = round(cpu, 3)
        result["upstream_requests"] = served
        result["cpu_us_per_request"] = round(cpu / served * 1e6, 1) if served else None
        if chunks_per_request and served:
            result["cpu_us_per_chunk"] = round(cpu / (served * chunks_per_request) * 1e6, 2)
        return result

    def load(self, target: str, stream: bool, conc: int, key: str, **kw: Any) -> dict[str, Any]:
        a = self.a
        duration = kw.get("duration", a.duration)
        warmup = kw.get("warmup", a.warmup)
        cmd = [
            self.python,
            str(self.load_py),
            "--target",
            target,
            "-c",
            str(conc),
            "-d",
            str(duration),
            "--warmup",
            str(warmup),
            "-n",
            str(int(duration * 200_000)),
            "--max-tokens",
            "16",
        ]
        cmd += ["--key", key] if key else []
        cmd += ["--stream"] if stream else []
        cmd += ["--model", kw["model"]] if "model" in kw else []
        for header in kw.get("headers", ()):
            cmd += ["--header", header]
        return run_json(cmd, duration + warmup + 90)

    def client(self, target: str, key: str, args: list[str], limit_s: float) -> dict[str, Any]:
        cmd = [self.python, str(self.client_py), "--target", target, *args]
        cmd += ["--key", key] if key else []
        return run_json(cmd, limit_s)

    def matrix(self) -> None:
        rows = []
        for mode in ("nonstream", "stream"):
            for conc in [int(c) for c in self.a.concurrency.split(",")]:
                row: dict[str, Any] = {
                    "case": f"{mode} c={conc}",
                    "mode": mode,
                    "concurrency": conc,
                }
                for side, target, key, model in (
                    ("direct", self.urls["direct"], "", "fake"),
                    ("gateway", self.gateway_url, self.key, "fake"),
                    ("gateway_billed", self.gateway_url, self.key, "fake-billed"),
                    ("gateway_fleet", self.gateway_url, self.limited_key, op.FLEET_MODEL),
                ):
                    stream = mode == "stream"
                    if side == "direct":
                        row[side] = self.load(target, stream, conc, key, model=model)
                    else:
                        row[side] = self.cpu_cost(
                            "gateway",
                            STREAM_CHUNKS_16 if stream else 0,
                            functools.partial(self.load, target, stream, conc, key, model=model),
                        )
                    row[side]["loadavg_1m_after"] = os.getloadavg()[0]
                    log(f"{row['case']} {side}: {summarize(row[side])}")
                rows.append(row)
        self.results["matrix"] = rows

    def peers(self) -> None:
        """LiteLLM and Portkey through the matrix's cells, one after the other, each alone on
        the gateway's core (tokenmill idles meanwhile) with an upstream of its own."""
        cells = [
            (mode, int(conc))
            for mode in ("nonstream", "stream")
            for conc in self.a.concurrency.split(",")
        ]

        def load(target: str, stream: bool, conc: int, key: str, headers: list[str]) -> Any:
            return self.load(target, stream, conc, key, model="fake", headers=headers)

        found = {}
        for peer in peers.peers(self.a.litellm_bin, self.a.portkey_js):
            log(f"peer {peer.name}")
            found[peer.name] = peers.measure(
                peer, self.procs, SUT_CORE, self.urls["peers"], self.workdir, cells, load
            )
            log(f"peer {peer.name}: {found[peer.name].get('skipped') or 'measured'}")
        self.results["peers"] = found

    def realistic(self) -> None:
        a = self.a
        row: dict[str, Any] = {
            "case": "realistic stream c=256",
            "mode": "stream",
            "concurrency": 256,
            "max_tokens": 256,
            "upstream_args": "--delay-ms 100 --itl-ms 20",
        }
        for side, target, key, model in (
            ("direct", self.urls["realistic-direct"], "", "fake"),
            ("gateway", self.gateway_url, self.key, "fake-realistic"),
        ):
            # one stream lasts ~5.2 s: warm up past the first wave, measure two cells' worth
            args = [
                "-c",
                "256",
                "-d",
                str(2 * a.duration),
                "--warmup",
                "6",
                "--max-tokens",
                "256",
                "--mix",
                "stream=1",
                "--gaps",
                "--model",
                model,
                "--timeout",
                "60",
                "-n",
                "1000000",
            ]
            if side == "direct":
                row[side] = self.client(target, key, args, 2 * a.duration + 6 + 120)
            else:
                row[side] = self.cpu_cost(
                    "realistic-gateway",
                    256 + 3,
                    functools.partial(self.client, target, key, args, 2 * a.duration + 6 + 120),
                )
            log(f"{row['case']} {side}: {summarize(row[side])}")
        self.results["realistic"] = row

    def surfaces(self) -> None:
        """Chat, Messages and Responses through the gateway side by side: the same billed
        model on the same upstream (Messages and Responses translated to chat on the way),
        each cell run twice in mirrored order (chat, messages, responses, then back) so a
        drift of the machine weighs on every surface alike; the two runs are averaged."""
        a = self.a
        rows = []
        order = (*SURFACE_RUNS, *reversed(SURFACE_RUNS))
        for mode in ("nonstream", "stream"):
            for conc in SURFACE_CONCURRENCY:
                row: dict[str, Any] = {
                    "case": f"{mode} c={conc}",
                    "mode": mode,
                    "concurrency": conc,
                }
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SURFACE_RUNS}
                for surface in order:
                    args = ["-c", str(conc), "-d", str(a.duration), "--warmup", str(a.warmup)]
                    args += ["--max-tokens", "16", "--mix", f"{mode}=1", "-n", "1000000"]
                    args += ["--model", "fake-billed", *SURFACE_RUNS[surface]]
                    limit_s = a.duration + a.warmup + 90
                    runs[surface].append(
                        self.cpu_cost(
                            "gateway",
                            STREAM_CHUNKS_16 if mode == "stream" else 0,
                            functools.partial(
                                self.client, self.gateway_url, self.key, args, limit_s
                            ),
                        )
                    )
                for surface, pair in runs.items():
                    row[surface] = report.mean_run(pair)
                    log(f"surfaces {row['case']} {surface}: {summarize(row[surface])}")
                rows.append(row)
        self.results["surfaces"] = rows

    def profile(self) -> None:
        assert self.gateway is not None
        spy = Path(self.python).parent / "py-spy"
        if not spy.exists():
            self.results["profile"] = {"skipped": f"{spy} not installed"}
            return
        seconds = self.a.profile_seconds
        raw = self.workdir / "profile.raw"
        load_cmd = ["taskset", "-c", str(LOAD_CORE), self.python]
        common = ["--target", self.gateway_url, "--key", self.key]
        common += ["-c", str(self.a.profile_concurrency)]
        common += ["--max-tokens", str(self.a.profile_max_tokens)]
        common += ["-d", str(seconds + 3), "--warmup", "1", "-n", "10000000"]
        common += ["--model", self.a.profile_model]
        if self.a.profile_surface == "chat" and not self.a.profile_stream:
            load_cmd += [str(self.load_py), *common]
        else:  # the shared load.py speaks chat only
            mode = "stream" if self.a.profile_stream else "nonstream"
            load_cmd += [str(self.client_py), *common, "--surface", self.a.profile_surface]
            load_cmd += ["--mix", f"{mode}=1"]
        with subprocess.Popen(load_cmd, stdout=subprocess.PIPE, text=True) as load_proc:
            try:
                time.sleep(2)
                spy_cmd = [
                    "taskset",
                    "-c",
                    str(LOAD_CORE),
                    str(spy),
                    "record",
                    "--pid",
                    str(self.gateway.pid),
                    "-d",
                    str(int(seconds)),
                    "-r",
                    "200",
                    "-f",
                    "raw",
                    "-o",
                    str(raw),
                    "--nonblocking",
                ]
                subprocess.run(
                    spy_cmd,
                    check=True,
                    timeout=seconds + 60,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                out, _ = load_proc.communicate(timeout=seconds + 90)
            finally:
                if load_proc.poll() is None:
                    load_proc.kill()
        if self.a.profile_raw:
            shutil.copy(raw, self.a.profile_raw)
        profile = op.profile_self_time(raw, 15)
        profile["load_during_profile"] = summarize(json.loads(out.strip().splitlines()[-1]))
        profile["command"] = " ".join(spy_cmd[3:])
        self.results["profile"] = profile

    def long_runs(self) -> None:
        a = self.a
        runs, memory = [], [self.rss("before long run 1")]
        for i in (1, 2):
            args = [
                "-c",
                str(a.long_concurrency),
                "-n",
                str(a.long_requests),
                "-d",
                str(a.long_seconds_max),
                "--warmup",
                "0",
                "--mix",
                LONG_MIX,
                "--cut-model",
                "fake-midstream",
                "--seed",
                str(i),
                "--timeout",
                "30",
            ]
            res = self.client(self.gateway_url, self.key, args, a.long_seconds_max + 120)
            res["stopped_by"] = "count" if res["requests_sent"] >= a.long_requests else "time limit"
            runs.append(res)
            log(f"long run {i}: {summarize(res)} stopped by {res['stopped_by']}")
            memory.append(self.rss(f"after long run {i}"))
        self.results["long_runs"] = {
            "requests_asked": a.long_requests,
            "mix": LONG_MIX,
            "seconds_max": a.long_seconds_max,
            "concurrency": a.long_concurrency,
            "runs": runs,
        }
        self.results["memory"] = self.results.get("memory", []) + memory

    def metering(self) -> None:
        """Stop the gateway (it commits all usage on SIGTERM), then count its usage records."""
        assert self.gateway is not None
        served = {}
        for name in ("gateway", "realistic-gateway", "midstream-gateway"):
            stats = op.upstream_stats(self.urls[name])
            served[name] = stats["by_path"].get("/v1/chat/completions", 0)
        tokens = {n: op.upstream_stats(self.urls[n]) for n in served}
        exit_code = self.procs.stop(self.gateway, op.STOP_GRACE_S)
        usage = op.usage_summary(self.workdir / "home" / "tokenmill.db")
        upstream_total = sum(served.values())
        self.results["metering"] = {
            "upstream_requests_via_gateway": served,
            "upstream_requests_via_gateway_total": upstream_total,
            "upstream_completion_tokens_via_gateway": sum(
                t["completion_tokens"] for t in tokens.values()
            ),
            "upstream_prompt_tokens_via_gateway": sum(t["prompt_tokens"] for t in tokens.values()),
            "gateway_usage": usage,
            "gateway_exit_code": exit_code,
            "exact": usage["records_count"] == upstream_total and usage["ledger_matches_records"],
        }
        log(f"metering: {self.results['metering']}")


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "rps",
        "requests_ok",
        "errors",
        "latency_ms",
        "ttft_ms",
        "itl_ms",
        "disconnected_mid_stream",
        "done_seen",
        "usage_seen",
    )
    return {k: res[k] for k in keep if k in res}


def run_json(cmd: list[str], timeout_s: float) -> dict[str, Any]:
    full = ["taskset", "-c", str(LOAD_CORE), *cmd]
    out = subprocess.run(full, capture_output=True, text=True, timeout=timeout_s)
    try:
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result
    except (IndexError, json.JSONDecodeError) as exc:
        raise RuntimeError(f"load run failed: {out.stdout[-500:]} {out.stderr[-2000:]}") from exc


def tokenmill_bin() -> str:
    local = Path(sys.executable).parent / "tokenmill"
    found = str(local) if local.exists() else shutil.which("tokenmill")
    if not found:
        sys.exit("tokenmill not found: run with the project's venv python")
    return found


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git_commit": git,
        "loadavg_1m_5m_15m_at_end": [round(x, 2) for x in os.getloadavg()],
        "git_src_dirty": bool(dirty),
    }


def interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C: the finally stops every process


def main() -> None:
    a = parse_args()
    for path in (a.shared_bench / "load.py", a.shared_bench / "fake_upstream.py"):
        if not path.exists():
            sys.exit(f"missing {path}: pass --shared-bench")
    signal.signal(signal.SIGTERM, interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="tokenmill-bench-"))
    bench = Bench(a, workdir)
    started = datetime.datetime.now(datetime.UTC)
    loadavg_start = [round(x, 2) for x in os.getloadavg()]
    ok = False
    try:
        bench.start_all()
        bench.results["memory"] = [bench.rss("idle after start")]
        if not a.skip_matrix:
            bench.matrix()
            bench.realistic()
        if not a.skip_surfaces:
            bench.surfaces()
        if not a.skip_peers:
            bench.peers()
        if a.profile:
            bench.profile()
        if not a.skip_long:
            bench.long_runs()
        bench.metering()
        ok = True
    finally:
        bench.procs.stop_all()
        if ok and not a.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"logs and gateway home kept in {workdir}")
    results = {
        "benchmark": "gateway_overhead",
        "started_at": started.isoformat(),
        "command_line": shlex.join([sys.executable, *sys.argv]),
        "quick": a.quick,
        "machine": {**machine(), "loadavg_1m_5m_15m_at_start": loadavg_start},
        "units": report.UNITS,
        "layout": report.LAYOUT,
        "settings": {
            "duration_s": a.duration,
            "warmup_s": a.warmup,
            "max_tokens": 16,
            "long_mix": LONG_MIX,
        },
        **bench.results,
    }
    results["aims"] = report.aims(results)
    out = a.out or HERE / "results" / "gateway_overhead-{}{}.json".format(
        started.strftime("%Y-%m-%d"), "-quick" if a.quick else ""
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n", "utf-8")
    print(report.markdown(results))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
