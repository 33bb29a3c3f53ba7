#!/usr/bin/env python3
"""Closed-loop load client with a request mix, client disconnects and inter-token gaps.

What the shared ``load.py`` does not do: each request is drawn from a seeded mix of
``nonstream`` (whole answer), ``stream`` (read to ``[DONE]``) and ``cut`` (a stream whose
socket this client closes right after the first content chunk, the way a user closes a
tab), and for streams it records the gap between consecutive content events (inter-token
gaps, ITL) besides TTFT. Loopback only; bounded by ``-d`` seconds AND ``-n`` requests;
per-request ``--timeout``. Prints one JSON object.

  python3 bench/stream_client.py --target http://127.0.0.1:8080/v1 --key tm-... \
      -c 64 -d 30 -n 100000 --mix nonstream=50,stream=40,cut=10 --cut-model fake-midstream
Needs: httptools (uvloop optional).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import time
from urllib.parse import urlsplit

import httptools

CONTENT_RE = re.compile(rb'"(?:content|text|delta)":\s*"[^"]')
# Each surface's path, and how its stream says it ended well and showed usage.
SURFACE_PATHS = {"chat": "/chat/completions", "messages": "/messages", "responses": "/responses"}
DONE_EVENTS = {
    "chat": (b"data: [DONE]",),
    "messages": (b"event: message_stop",),
    "responses": (b"event: response.completed", b"event: response.incomplete"),
}
USAGE_MARKS = {
    "chat": b'"prompt_tokens"',
    "messages": b'"output_tokens"',
    "responses": b'"output_tokens"',
}
GAPS_COUNT_MAX = 2_000_000  # bound on stored inter-token gaps
KINDS = ("nonstream", "stream", "cut")


def summary_ms(values: list[float]) -> dict[str, float] | None:
    """p50/p90/p99/max/mean in ms of seconds ``values`` (nearest-rank, as load.py)."""
    if not values:
        return None
    xs = sorted(values)

    def rank(p: float) -> float:
        i = min(len(xs) - 1, max(0, round(p / 100.0 * len(xs) + 0.5) - 1))
        return round(xs[i] * 1000.0, 3)

    return {
        "p50": rank(50),
        "p90": rank(90),
        "p99": rank(99),
        "max": round(xs[-1] * 1000.0, 3),
        "mean": round(sum(xs) / len(xs) * 1000.0, 3),
    }


class Stats:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = {k: [] for k in KINDS}
        self.ttft: list[float] = []
        self.gaps: list[float] = []
        self.ok = dict.fromkeys(KINDS, 0)
        self.errors: dict[str, int] = {}
        self.done_seen = 0
        self.usage_seen = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Connection(asyncio.Protocol):
    """One keep-alive connection doing one request at a time."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.lost: asyncio.Future[None] | None = None
        self.kind = "nonstream"
        self.busy = False
        self.t0 = 0.0
        self.t_last = None
        self.pending = b""
        self.status = 0
        self.gaps: list[float] = []
        self.ttft: float | None = None
        self.saw_done = self.saw_usage = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.lost = asyncio.get_running_loop().create_future()
        self.run.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.connections.discard(self)
        if self.busy:
            self.finish(False, "conn_reset")
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.parser is None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.finish(False, "bad_response")
            self.close()

    def on_status(self, _status: bytes) -> None:
        assert self.parser is not None
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self.kind == "nonstream" or not self.busy:
            return
        now = time.perf_counter()
        events = (self.pending + body).split(b"\n\n")
        self.pending = events.pop()
        for event in events:
            self.on_event(event, now)
            if not self.busy:
                return

    def on_event(self, event: bytes, now: float) -> None:
        run = self.run
        if event.startswith(run.done_marks):
            self.saw_done = True
            self.saw_usage = self.saw_usage or run.usage_mark in event
            return
        if run.usage_mark in event:
            self.saw_usage = True
        if not CONTENT_RE.search(event):
            return
        if self.ttft is None:
            self.ttft = now - self.t0
            if self.kind == "cut" and 200 <= self.status < 300:
                self.finish(True, None)
                self.close()  # the client goes away mid-stream
                return
        elif self.run.record_gaps:
            self.gaps.append(now - self.t_last)
        self.t_last = now

    def on_message_complete(self) -> None:
        if not self.busy:
            return
        ok = 200 <= self.status < 300
        self.finish(ok, None if ok else f"http_{self.status}")
        assert self.parser is not None
        if self.parser.should_keep_alive():
            self.run.next(self)
        else:
            self.close()

    def close(self) -> None:
        self.parser = None
        if self.transport is not None:
            self.transport.close()

    def send(self, kind: str) -> None:
        assert self.transport is not None
        self.parser = httptools.HttpResponseParser(self)
        self.kind = kind
        self.busy = True
        self.pending = b""
        self.status = 0
        self.gaps = []
        self.ttft = self.t_last = None
        self.saw_done = self.saw_usage = False
        self.t0 = time.perf_counter()
        self.transport.write(self.run.requests[kind])

    def finish(self, ok: bool, error: str | None) -> None:
        if not self.busy:
            return
        self.busy = False
        now = time.perf_counter()
        if now > self.run.stop_at:  # answered after the measured window: not counted
            return
        self.run.record(self, ok, error, now)


class Run:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        url = urlsplit(a.target.rstrip("/"))
        if not ((url.hostname or "").startswith("127.") or url.hostname in ("localhost", "::1")):
            sys.exit("stream_client.py only targets loopback addresses")
        self.host, self.port = url.hostname, url.port or 80
        self.surface = a.surface
        self.path = url.path + SURFACE_PATHS[a.surface]
        self.done_marks = DONE_EVENTS[a.surface]
        self.usage_mark = USAGE_MARKS[a.surface]
        self.mix = parse_mix(a.mix)
        self.requests = {k: self.request_bytes(k) for k in KINDS}
        self.rng = random.Random(a.seed)
        self.record_gaps = a.gaps
        self.stats = Stats()
        self.stop_at = 0.0
        self.count = 0
        self.stopping = False
        self.connections: set[Connection] = set()

    def request_bytes(self, kind: str) -> bytes:
        a = self.a
        model = a.cut_model if kind == "cut" and a.cut_model else a.model
        body_obj: dict[str, object] = {"model": model}
        if self.surface == "responses":
            body_obj |= {"max_output_tokens": a.max_tokens, "input": a.prompt}
            if a.no_store:
                body_obj["store"] = False
        else:
            body_obj |= {"max_tokens": a.max_tokens}
            body_obj["messages"] = [{"role": "user", "content": a.prompt}]
        if kind != "nonstream":
            body_obj["stream"] = True
            if self.surface == "chat":
                body_obj["stream_options"] = {"include_usage": True}
        body = json.dumps(body_obj, separators=(",", ":")).encode()
        head = [
            b"POST %s HTTP/1.1" % self.path.encode(),
            b"Host: %s:%d" % (str(self.host).encode(), self.port),
            b"Content-Type: application/json",
            b"Content-Length: %d" % len(body),
            b"User-Agent: tokenmill-bench-stream-client",
        ]
        if a.key:
            head.append(b"Authorization: Bearer %s" % a.key.encode())
        return b"\r\n".join(head) + b"\r\n\r\n" + body

    def draw(self) -> str:
        u = self.rng.random() * sum(self.mix.values())
        for kind, weight in self.mix.items():
            if u < weight:
                return kind
            u -= weight
        return next(iter(self.mix))

    def next(self, conn: Connection) -> None:
        if self.stopping or time.perf_counter() >= self.stop_at or self.count >= self.a.requests:
            conn.close()
            return
        self.count += 1
        conn.send(self.draw())

    def record(self, conn: Connection, ok: bool, error: str | None, now: float) -> None:
        s = self.stats
        if not ok:
            s.error(error or "unknown")
            return
        s.ok[conn.kind] += 1
        s.latency[conn.kind].append(now - conn.t0)
        if conn.kind == "nonstream":
            return
        if conn.ttft is not None:
            s.ttft.append(conn.ttft)
        if conn.kind == "stream":
            s.done_seen += conn.saw_done
            s.usage_seen += conn.saw_usage
            if len(s.gaps) < GAPS_COUNT_MAX:
                s.gaps.extend(conn.gaps)

    async def worker(self) -> None:
        loop = asyncio.get_running_loop()
        while (
            not self.stopping
            and time.perf_counter() < self.stop_at
            and self.count < self.a.requests
        ):
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(lambda: Connection(self), self.host, self.port), 5
                )
            except (TimeoutError, OSError):
                self.stats.error("connect")
                await asyncio.sleep(0.05)
                continue
            self.next(conn)
            assert conn.lost is not None
            left_s = max(0.01, self.stop_at - time.perf_counter() + self.a.timeout)
            try:
                await asyncio.wait_for(asyncio.shield(conn.lost), left_s)
            except TimeoutError:
                conn.finish(False, "timeout")
                if conn.transport is not None:
                    conn.transport.abort()

    async def watchdog(self) -> None:
        while not self.stopping:
            await asyncio.sleep(0.25)
            now = time.perf_counter()
            for conn in list(self.connections):
                if conn.busy and now - conn.t0 > self.a.timeout and conn.transport is not None:
                    conn.finish(False, "timeout")
                    conn.transport.abort()

    async def main(self) -> dict[str, object]:
        a = self.a
        self.stop_at = time.perf_counter() + a.warmup + a.duration
        dog = asyncio.ensure_future(self.watchdog())
        workers = [asyncio.ensure_future(self.worker()) for _ in range(a.concurrency)]
        if a.warmup > 0:
            await asyncio.sleep(a.warmup)
            self.stats = Stats()  # drop warm-up samples
            self.count = 0
        t0 = time.perf_counter()
        _, pending = await asyncio.wait(workers, timeout=a.duration + a.timeout + 5)
        self.stopping = True
        dog.cancel()
        for w in pending:
            w.cancel()
        elapsed = max(min(time.perf_counter(), self.stop_at) - t0, 1e-9)
        return self.report(elapsed)

    def report(self, elapsed: float) -> dict[str, object]:
        s = self.stats
        ok = sum(s.ok.values())
        all_latency = [x for k in KINDS for x in s.latency[k]]
        return {
            "target": self.a.target,
            "concurrency": self.a.concurrency,
            "mix": self.mix,
            "duration_s": round(elapsed, 3),
            "requests_sent": self.count,
            "requests_ok": ok,
            "ok_by_kind": s.ok,
            "disconnected_mid_stream": s.ok["cut"],
            "errors": sum(s.errors.values()),
            "error_kinds": s.errors,
            "rps": round(ok / elapsed, 1),
            "latency_ms": summary_ms(all_latency),
            "latency_ms_by_kind": {k: summary_ms(v) for k, v in s.latency.items() if v},
            "ttft_ms": summary_ms(s.ttft),
            "itl_ms": summary_ms(s.gaps),
            "itl_count": len(s.gaps),
            "done_seen": s.done_seen,
            "usage_seen": s.usage_seen,
        }


def parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        if kind not in KINDS or not weight:
            sys.exit(f"--mix: expected kind=weight with kind in {KINDS}, got {part!r}")
        if float(weight) > 0:
            mix[kind] = float(weight)
    if not mix:
        sys.exit("--mix: no kind with a positive weight")
    return mix


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--target", default="http://127.0.0.1:9100/v1", help="base URL incl. /v1")
    ap.add_argument("--key", default="", help="API key, sent as Authorization: Bearer")
    ap.add_argument("--model", default="fake")
    ap.add_argument("--surface", choices=sorted(SURFACE_PATHS), default="chat")
    ap.add_argument("--no-store", action="store_true", help="Responses: send store: false")
    ap.add_argument("--cut-model", default="", help="model for 'cut' requests (default --model)")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--prompt", default="Say hello to the benchmark in a few words please")
    ap.add_argument("--mix", default="stream=1", help="kind=weight,...: nonstream, stream, cut")
    ap.add_argument("--gaps", action="store_true", help="record inter-token gaps of streams")
    ap.add_argument("-c", "--concurrency", type=int, default=16)
    ap.add_argument("-d", "--duration", type=float, default=10.0, help="measured seconds")
    ap.add_argument("-n", "--requests", type=int, default=1_000_000, help="max requests measured")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds run before measuring")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, s")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    a.duration = min(a.duration, 3600.0)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(Run(a).main())), flush=True)


if __name__ == "__main__":
    main()
