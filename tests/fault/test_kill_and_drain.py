"""The gateway as a process: a kill -9 loses no record a client saw; SIGTERM drains."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import gateway_config
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
        """Clients load the gateway; kill -9; every fully received answer has its record."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        received: list[str] = []
        stop = threading.Event()

        def client(stream: bool) -> None:
            while not stop.is_set():
                try:
                    response = _chat(url, key, stream)
                except httpx.TransportError:
                    return
                complete = response.status_code == 200 and (
                    not stream or response.text.rstrip().endswith("data: [DONE]")
                )
                if complete:
                    received.append(response.headers["x-request-id"])

        with serve(tmp_path / "home", gateway_config(None), port) as (process, key):
            threads = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(8)]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 15
            while len(received) < 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            stop.set()
            for thread in threads:
                thread.join(timeout=15)
        assert len(received) >= 50, "too little load reached the gateway before the kill"
        found = stored_records(tmp_path / "home", received)
        assert [rid for rid in received if found[rid] is None] == []

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
        """SIGTERM mid-stream: the stream still ends with [DONE], its record is kept, exit 0."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        config = gateway_config(None, time_scale=1.0)
        with serve(tmp_path / "home", config, port) as (process, key):
            body = {
                "model": "sim-chat",
                "max_tokens": 120,
                "stream": True,
                "messages": [{"role": "user", "content": "a long answer please"}],
            }
            with httpx.stream(
                "POST",
                url + "/v1/chat/completions",
                json=body,
                timeout=30,
                headers={"Authorization": f"Bearer {key}"},
            ) as response:
                lines = response.iter_lines()
                first = next(lines)
                assert first.startswith("data: ")
                process.send_signal(signal.SIGTERM)
                rest = list(lines)
                request_id = response.headers["x-request-id"]
            assert "data: [DONE]" in rest
            assert process.wait(timeout=30) == 0
            with pytest.raises(httpx.TransportError):
                httpx.get(url + "/healthz", timeout=2)
        record = stored_records(tmp_path / "home", [request_id])[request_id]
        assert record is not None
        assert record.status == "ok"
        assert record.completion_tokens > 1
