"""A PostgreSQL server of a test's own (initdb in a temporary folder, its own port), which
the test can stop, as by a crash, and start again on the same data."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import httpx
import orjson
import pytest

from tokenmill.testing import free_port

BINARIES = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


class PrivatePostgres:
    """A PostgreSQL server of the test's own: started, stopped (as by a crash) and started
    again on the same data."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="tokenmill-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.bin = Path(BINARIES[-1])
        os.chmod(self.folder, 0o755)  # the server's own user must reach it
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.folder / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # stopped already
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    if not BINARIES or (os.geteuid() == 0 and shutil.which("runuser") is None):
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    server = PrivatePostgres()
    server.start()
    try:
        yield server
    finally:
        server.remove()


class ClientThreads:
    """Client threads that run ``_client(index)`` until ``stop`` is set (a context manager):
    on exit they are stopped and joined, and one still alive fails the test."""

    clients_count = 4

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(index,))
            for index in range(self.clients_count)
        ]

    def _client(self, index: int) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self._threads), "a client hangs"


class Stream(threading.Thread):
    """One chat stream of ``sim-chat`` read to its end in a thread: its request id, the usage
    it was shown, whether it got ``[DONE]``, and any error (for the test thread to report)."""

    def __init__(self, url: str, secret: str, max_tokens: int) -> None:
        super().__init__(daemon=True)
        self.url, self.secret, self.max_tokens = url, secret, max_tokens
        self.started = threading.Event()  # the first line arrived (or the stream failed)
        self.request_id = ""
        self.usage: dict[str, int] | None = None
        self.done = False
        self.error: BaseException | None = None

    def run(self) -> None:
        body = {
            "model": "sim-chat",
            "stream": True,
            "max_tokens": self.max_tokens,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "tell me a long story"}],
        }
        try:
            with httpx.stream(
                "POST",
                self.url + "/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {self.secret}"},
                timeout=60,
            ) as response:
                assert response.status_code == 200, response.read()
                self.request_id = response.headers["x-request-id"]
                for line in response.iter_lines():
                    self.started.set()
                    if line == "data: [DONE]":
                        self.done = True
                    elif line.startswith("data: ") and '"usage"' in line:
                        self.usage = orjson.loads(line[6:]).get("usage") or self.usage
        except BaseException as exc:  # reported by the test thread
            self.error = exc
        finally:
            self.started.set()
