"""The gateway as a process: a kill -9 loses no record a client saw; SIGTERM drains. The
load and the streams drained are on every serving surface (chat, Messages, Responses)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import gateway_config
from tests.surface_requests import (
    PATHS,
    SURFACES,
    StreamReader,
    Surface,
    exchange,
    key_headers,
    opened,
    request_body,
)
from tokenmill.store.database import open_engine
from tokenmill.store.usage import record_by_request_id
from tokenmill.testing import free_port
from tokenmill.usage import UsageRecord

TOKENMILL = str(Path(sys.executable).with_name("tokenmill"))


@contextmanager
def serve(home: Path, config: dict, port: int) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``tokenmill serve`` as a child process; yields it and the demo key it printed."""
    config_path = home / "config.yaml"
    home.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(config))
    log = open(home / "serve.log", "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            TOKENMILL,
            "serve",
            "--port",
            str(port),
            "--home",
            str(home),
            "--config",
            str(config_path),
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, (home / "serve.log").read_text()
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.1)
        keys = re.findall(r"tm-[A-Za-z0-9_-]{20,}", (home / "serve.log").read_text())
        yield process, keys[0] if keys else ""
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        log.close()


def stored_records(home: Path, request_ids: list[str]) -> dict[str, UsageRecord | None]:
    """The usage record of each request id in the SQLite store of ``home`` (None if absent)."""
    engine = open_engine(f"sqlite:///{home / 'tokenmill.db'}")
    try:
        with engine.connect() as connection:
            return {rid: record_by_request_id(connection, rid) for rid in request_ids}
    finally:
        engine.dispose()


def _chat(url: str, key: str, stream: bool) -> httpx.Response:
    body = {
        "model": "sim-chat",
        "max_tokens": 8,
        "stream": stream,
        "messages": [{"role": "user", "content": "count the records"}],
    }
    return httpx.post(
        url + "/v1/chat/completions",
        json=body,
        timeout=10,
        headers={"Authorization": f"Bearer {key}"},
    )


class TestKill:
    def test_every_answer_a_client_received_survives_a_kill_9(self, tmp_path: Path) -> None:
        """Clients load the gateway on every surface; kill -9; every fully received answer
        has its record, of its surface."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        received: dict[Surface, list[str]] = {surface: [] for surface in SURFACES}
        stop = threading.Event()

        def client(surface: Surface, stream: bool) -> None:
            raw = request_body(surface, "count the records", 8, stream=stream)
            with httpx.Client(base_url=url, timeout=10) as http:
                while not stop.is_set():
                    try:
                        outcome = exchange(http, surface, key, raw)
                    except httpx.TransportError:
                        return
                    if outcome.status == 200 and outcome.ended and outcome.request_id:
                        received[surface].append(outcome.request_id)

        pairs = [(surface, stream) for surface in SURFACES for stream in (False, True)]
        with serve(tmp_path / "home", gateway_config(None), port) as (process, key):
            threads = [threading.Thread(target=client, args=pair) for pair in pairs * 2]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 15
            while min(map(len, received.values())) < 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            stop.set()
            for thread in threads:
                thread.join(timeout=15)
        for surface, request_ids in received.items():
            assert len(request_ids) >= 50, f"too little {surface} load before the kill"
            found = stored_records(tmp_path / "home", request_ids)
            assert [rid for rid in request_ids if found[rid] is None] == [], surface
            assert {record.endpoint for record in found.values() if record} == {surface}

    def test_a_restarted_gateway_serves_the_same_keys_and_keeps_the_records(
        self, tmp_path: Path
    ) -> None:
        """After kill -9 and a restart on the same home, the demo key works and records remain."""
        home = tmp_path / "home"
        port = free_port()
        with serve(home, gateway_config(None), port) as (process, key):
            first = _chat(f"http://127.0.0.1:{port}", key, False)
            assert first.status_code == 200
            os.kill(process.pid, signal.SIGKILL)
        with serve(home, gateway_config(None), port) as (_process, printed):
            assert printed == key, "a restart must not make a second demo key"
            second = _chat(f"http://127.0.0.1:{port}", key, False)
            assert second.status_code == 200
        ids = [response.headers["x-request-id"] for response in (first, second)]
        assert all(record is not None for record in stored_records(home, ids).values())


class TestDrain:
    def test_sigterm_lets_a_stream_in_flight_finish_then_exits_zero(self, tmp_path: Path) -> None:
        """SIGTERM with a stream showing text on every surface: each still ends well
        ([DONE], message_stop, response.completed), its record is kept, and the exit is 0."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        # About 25 ms a token: an answer (24 tokens or more) outlasts opening all three.
        config = gateway_config(None, time_scale=4.0)
        with serve(tmp_path / "home", config, port) as (process, key), ExitStack() as stack:
            streams: list[tuple[StreamReader, Iterator[str]]] = []
            for surface in SURFACES:
                response = stack.enter_context(
                    httpx.stream(
                        "POST",
                        url + PATHS[surface],
                        content=request_body(surface, "a long answer please", 40, stream=True),
                        timeout=30,
                        headers=key_headers(key),
                    )
                )
                reader = StreamReader(opened(surface, response))
                lines = response.iter_lines()
                for line in lines:  # up to the first text
                    reader.feed(line)
                    if reader.outcome.pieces:
                        break
                assert reader.outcome.pieces and not reader.outcome.ended, reader.outcome
                streams.append((reader, lines))
            process.send_signal(signal.SIGTERM)
            for reader, lines in streams:
                for line in lines:
                    reader.feed(line)
            assert process.wait(timeout=30) == 0
            with pytest.raises(httpx.TransportError):
                httpx.get(url + "/healthz", timeout=2)
        outcomes = [reader.outcome for reader, _ in streams]
        for outcome in outcomes:
            assert outcome.ended and outcome.error is None, outcome
            assert outcome.usage is not None and outcome.usage[1] == len(outcome.pieces)
        found = stored_records(tmp_path / "home", [o.request_id or "" for o in outcomes])
        for outcome in outcomes:
            record = found[outcome.request_id or ""]
            assert record is not None, outcome
            assert (record.status, record.endpoint) == ("ok", outcome.surface)
            assert record.completion_tokens == len(outcome.pieces) > 1
