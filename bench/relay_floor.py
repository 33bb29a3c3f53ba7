"""The floor under any Python stream relay on this machine: CPU per relayed chunk of a bare
TCP pipe (uvloop, one upstream connection per client connection, bytes forwarded as they
arrive, no HTTP parsing at all) beside the tokenmill gateway, on the same long streams.

Both relay the fake upstream's realistic streams (100 ms to the first token, 20 ms per
token, 256 tokens) to ``stream_client.py`` at the same concurrency; each relay is pinned to
core 0, upstream and client to core 1. CPU per chunk is the relay process's CPU seconds
over the chunks its upstream sent (256 tokens + role, finish and usage chunks per stream):
what one chunk's read from one socket and write to another cost, with the event loop's
wake-ups, and nothing else. The gateway's figure minus the pipe's is what tokenmill's own
code costs per chunk.

    .venv/bin/python bench/relay_floor.py [-c 256] [-d 15] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway_overhead as go
import overhead_processes as op

TOKENS = 256
CHUNKS_PER_STREAM = TOKENS + 3  # the role chunk, the tokens, the finish, the usage chunk


class _Half(asyncio.Protocol):
    """One side of the pipe: what it receives goes to its peer's transport (held back
    until the peer is connected)."""

    def __init__(self, peer: _Half | None = None) -> None:
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
        else:
            peer.transport.write(data)

    def flush(self) -> None:
        assert self.peer is not None and self.peer.transport is not None
        for data in self.early:
            self.peer.transport.write(data)
        self.early.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


def pipe_main(listen_port: int, upstream_port: int) -> None:
    """Serve the bare pipe until killed (run in its own process)."""
    import uvloop

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        connecting: set[asyncio.Task[None]] = set()

        def client_side() -> _Half:
            client = _Half()

            async def connect() -> None:
                _, upstream = await loop.create_connection(
                    lambda: _Half(client), "127.0.0.1", upstream_port
                )
                client.peer = upstream
                client.flush()

            task = loop.create_task(connect())
            connecting.add(task)
            task.add_done_callback(connecting.discard)
            return client

        server = await loop.create_server(client_side, "127.0.0.1", listen_port)
        print(f"pipe listening on {listen_port}", flush=True)
        await server.serve_forever()

    uvloop.run(serve())


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("-c", "--concurrency", type=int, default=256)
    ap.add_argument("-d", "--duration", type=float, default=15.0, help="measured s per side")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--pipe", nargs=2, type=int, help=argparse.SUPPRESS)  # internal
    return ap.parse_args()


def measure(
    bench: go.Bench, relay_pid: int, target: str, key: str, model: str, upstream: str, a: Any
) -> dict[str, Any]:
    args = ["-c", str(a.concurrency), "-d", str(a.duration), "--warmup", "6"]
    args += ["--max-tokens", str(TOKENS), "--mix", "stream=1", "--gaps", "--model", model]
    args += ["--timeout", "60", "-n", "1000000"]
    cpu_before, served_before = op.cpu_s(relay_pid), op.upstream_stats(upstream)["requests"]
    result = bench.client(target, key, args, a.duration + 6 + 120)
    cpu = op.cpu_s(relay_pid) - cpu_before
    served = op.upstream_stats(upstream)["requests"] - served_before
    result["relay_cpu_s"] = round(cpu, 3)
    result["upstream_requests"] = served
    result["cpu_us_per_chunk"] = round(cpu / max(served * CHUNKS_PER_STREAM, 1) * 1e6, 2)
    return result


def main() -> None:
    a = parse_args()
    if a.pipe:
        pipe_main(*a.pipe)
        return
    workdir = Path(tempfile.mkdtemp(prefix="tokenmill-floor-"))
    sys.argv = [sys.argv[0], "--quick"]  # the gateway bench's set-up, none of its runs
    bench = go.Bench(go.parse_args(), workdir)
    results: dict[str, Any] = {"command": "bench/relay_floor.py", "concurrency": a.concurrency}
    try:
        bench.start_all()
        pipe_port = op.free_port()
        upstream_port = int(bench.urls["realistic-direct"].rsplit(":", 1)[1].split("/")[0])
        pipe = bench.procs.start(
            "pipe",
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--pipe",
                str(pipe_port),
                str(upstream_port),
            ],
            go.SUT_CORE,
        )
        time.sleep(1.0)
        assert bench.gateway is not None
        go.log("bare pipe")
        results["pipe"] = measure(
            bench,
            pipe.pid,
            f"http://127.0.0.1:{pipe_port}/v1",
            "",
            "fake",
            bench.urls["realistic-direct"],
            a,
        )
        go.log(f"pipe: {results['pipe']['cpu_us_per_chunk']} us/chunk")
        results["gateway"] = measure(
            bench,
            bench.gateway.pid,
            bench.gateway_url,
            bench.key,
            "fake-realistic",
            bench.urls["realistic-gateway"],
            a,
        )
        go.log(f"gateway: {results['gateway']['cpu_us_per_chunk']} us/chunk")
    finally:
        bench.procs.stop_all()
    results["machine"] = go.machine()
    for side in ("pipe", "gateway"):
        r = results[side]
        itl = r.get("itl_ms") or {}
        print(
            f"| {side} | {r['rps']:.1f} | {r['upstream_requests']} | {r['relay_cpu_s']:.2f} "
            f"| {r['cpu_us_per_chunk']:.2f} | {itl.get('p99', '')} |"
        )
    out = a.out or go.ROOT / "bench" / "results" / (
        f"relay_floor-{datetime.date.today().isoformat()}.json"
    )
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")
    subprocess.run(["rm", "-rf", str(workdir)], check=False)


if __name__ == "__main__":
    main()
