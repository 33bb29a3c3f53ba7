"""What the ``tokenmill`` commands print and how they exit: one ``--format`` convention (with
``--json`` its short form), tables that never cut an id or a column name, signed
adjustments, time errors that say what is wrong, and ``bench`` failing when nothing worked."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from typer.testing import CliRunner, Result

from tests.conftest import LiveGateway, gateway_config, live_gateway
from tokenmill.cli.main import app
from tokenmill.testing import ServerThread, free_port

TOKENMILL = Path(sys.executable).parent / "tokenmill"
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """A gateway on SQLite with the sim models; each test uses its own account."""
    home = tmp_path_factory.mktemp("output")
    url = f"sqlite:///{home / 'tokenmill.db'}"
    with live_gateway(url, gateway_config(None), home) as gateway:
        yield gateway


def cli(live: LiveGateway, *args: str, columns: int = 200) -> Result:
    """``tokenmill ARGS --database-url ...`` in process, with a console ``columns`` wide."""
    split = args.index("--") if "--" in args else len(args)
    argv = [*args[:split], "--database-url", live.database_url, *args[split:]]
    return CliRunner().invoke(app, argv, env={"COLUMNS": str(columns)})


def worked(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def usage_error(result: Result) -> str:
    """The message of a refused option, on one line (the error box wraps it)."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    return " ".join(result.stderr.replace("│", " ").split())


def chat(live: LiveGateway, secret: str) -> str:
    """One chat request through the gateway; its request id."""
    answer = httpx.post(
        live.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": "sim-chat", "messages": HELLO, "max_tokens": 4},
    )
    assert answer.status_code == 200, answer.text
    return answer.headers["x-request-id"]


class TestFormat:
    def test_report_revenue_takes_format_table_json_and_csv_as_the_readme_says(
        self, live: LiveGateway
    ) -> None:
        """report revenue --format json is what --json prints; --format csv has a line per
        row with the JSON fields; --format table is the default."""
        secret, _, account_id = live.new_key("revenue-co")
        chat(live, secret)
        shown = ("report", "revenue", "--account", account_id)
        rows = json.loads(worked(cli(live, *shown, "--format", "json")))
        assert rows == json.loads(worked(cli(live, *shown, "--json")))
        assert len(rows) == 1 and rows[0]["account_id"] == account_id
        lines = list(csv.DictReader(io.StringIO(worked(cli(live, *shown, "--format", "csv")))))
        assert [line["account_id"] for line in lines] == [account_id]
        assert set(lines[0]) == set(rows[0])
        assert worked(cli(live, *shown, "--format", "table")) == worked(cli(live, *shown))

    def test_usage_as_csv_has_a_header_and_a_line_per_record(self, live: LiveGateway) -> None:
        """usage --format csv: the JSON records' fields as the header, one line each."""
        secret, key_id, _ = live.new_key("csv-co")
        sent = {chat(live, secret) for _ in range(2)}
        text = worked(cli(live, "usage", "--key", key_id, "--format", "csv"))
        lines = list(csv.DictReader(io.StringIO(text)))
        records = json.loads(worked(cli(live, "usage", "--key", key_id, "--json")))
        assert {line["request_id"] for line in lines} == sent
        assert list(lines[0]) == list(records[0])

    def test_a_command_that_prints_a_sentence_takes_format_json(self, live: LiveGateway) -> None:
        """accounts topup --format json prints the transfer, like --json."""
        live.new_key("topup-co")
        moved = json.loads(
            worked(cli(live, "accounts", "topup", "topup-co", "1", "--format", "json"))
        )
        assert (moved["kind"], moved["amount"]) == ("topup", "1.00")

    def test_json_and_another_format_together_are_refused(self, live: LiveGateway) -> None:
        """--json --format table is a usage error naming both, and changes nothing; csv is
        not a format of a command that prints one record."""
        message = usage_error(
            cli(live, "accounts", "create", "twice-co", "--json", "--format", "table")
        )
        assert "--json is short for --format json" in message
        assert "'csv' is not one of" in usage_error(
            cli(live, "accounts", "create", "twice-co", "--format", "csv")
        )
        assert "twice-co" not in worked(cli(live, "accounts", "list", "--json"))

    def test_a_statement_takes_json_as_its_format_too(self, live: LiveGateway) -> None:
        """accounts statement --json is --format json (its default)."""
        live.new_key("statement-co")
        shown = json.loads(worked(cli(live, "accounts", "statement", "statement-co", "--json")))
        assert shown["account_name"] == "statement-co"


class TestNarrowTables:
    def test_forty_columns_in_a_pipe_cut_no_id_or_column_name(self, live: LiveGateway) -> None:
        """usage with COLUMNS=40 printed to a pipe: every request id, account id and column
        name appears whole (one block of name: value lines per record)."""
        secret, key_id, account_id = live.new_key("narrow-co")
        sent = [chat(live, secret) for _ in range(2)]
        env = {name: value for name, value in os.environ.items() if name != "COLUMNS"}
        result = subprocess.run(
            [str(TOKENMILL), "usage", "--key", key_id, "--database-url", live.database_url],
            capture_output=True,
            text=True,
            env={**env, "COLUMNS": "40"},
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "…" not in result.stdout
        for word in [*sent, account_id, "request:", "completion:", "started (UTC):"]:
            assert word in result.stdout, (word, result.stdout)

    def test_a_table_that_fits_stays_a_table(self, live: LiveGateway) -> None:
        """accounts list at 200 columns is a table with the ids whole."""
        live.new_key("wide-co")
        shown = worked(cli(live, "accounts", "list"))
        assert "┃ id" in shown and "…" not in shown


def wait_for_available(live: LiveGateway, account_id: str, nano: int) -> None:
    """Until the gateway sees ``nano`` available (it reads top-ups within a second)."""
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        answer = httpx.get(
            f"{live.url}/admin/v1/accounts/{account_id}/balance",
            headers={"Authorization": f"Bearer {live.admin_token}"},
        )
        if answer.status_code == 200 and answer.json()["available_nano"] == nano:
            return
        time.sleep(0.02)
    raise AssertionError(f"the gateway does not see {nano} available after 2 s")


class TestSignedAdjustments:
    def test_an_adjustment_prints_its_sign(self, sqlite_url: str) -> None:
        """With no gateway: adjust -0.05 says "adjustment of -0.05 USD", 0.05 "+0.05"."""

        def run(*args: str) -> str:
            argv = ["accounts", *args, "--database-url", sqlite_url]
            return worked(CliRunner().invoke(app, argv, env={"COLUMNS": "200"}))

        run("create", "signed-co")
        run("topup", "signed-co", "1")
        down = run("adjust", "signed-co", "-0.05")
        assert "adjustment of -0.05 USD applied; balance 0.95 USD" in down
        up = run("adjust", "signed-co", "0.05")
        assert "adjustment of +0.05 USD applied; balance 1.00 USD" in up

    def test_a_debit_through_the_running_gateway_prints_its_minus_sign(
        self, live: LiveGateway
    ) -> None:
        """While a gateway serves the database, adjust -0.05 (through it) says "-0.05"."""
        _, _, account_id = live.new_key("signed-live-co")
        worked(cli(live, "accounts", "topup", "signed-live-co", "1"))
        wait_for_available(live, account_id, 10**9)
        gateway = ("--url", live.url, "--admin-token", live.admin_token)
        down = worked(cli(live, "accounts", "adjust", "signed-live-co", *gateway, "--", "-0.05"))
        assert "adjustment of -0.05 USD applied through the running gateway" in down


class TestTimeErrors:
    @pytest.mark.parametrize(
        "command",
        [("usage",), ("report", "revenue"), ("report", "margin")],
        ids=["usage", "revenue", "margin"],
    )
    def test_a_year_one_date_is_out_of_the_supported_range(
        self, live: LiveGateway, command: tuple[str, ...]
    ) -> None:
        """--since 0001-01-01 names the range (1970 to 9999), not "since must be before"."""
        message = usage_error(cli(live, *command, "--since", "0001-01-01"))
        assert "'0001-01-01' is out of the supported range: 1970-01-01 to 9999-12-31" in message
        assert "before" not in message

    def test_since_after_until_shows_both(self, live: LiveGateway) -> None:
        """report revenue --since 2026-03-01 --until 2026-01-01 shows both instants."""
        message = usage_error(
            cli(live, "report", "revenue", "--since", "2026-03-01", "--until", "2026-01-01")
        )
        assert "since 2026-03-01T00:00:00Z must be before until 2026-01-01T00:00:00Z" in message

    def test_a_since_past_the_default_until_says_it_is_the_default(self, live: LiveGateway) -> None:
        """accounts statement --since far ahead: the until shown is marked as the default."""
        live.new_key("later-co")
        message = usage_error(
            cli(live, "accounts", "statement", "later-co", "--since", "9000-01-01")
        )
        assert "since 9000-01-01T00:00:00Z must be before until" in message
        assert "(the default)" in message


def flaky_app() -> Starlette:
    """An OpenAI-compatible far side that answers every second request with 503 and streams
    three tokens to the others."""
    count = itertools.count()
    chunks: list[dict[str, Any]] = [{"choices": [{"delta": {"content": "hi "}}]}] * 3
    chunks.append({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
    stream = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"

    async def completions(request: Request) -> Response:
        await request.body()
        if next(count) % 2:
            return Response(b'{"error": {"message": "busy"}}', status_code=503)
        return Response(stream, media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


def bench(target: str, *args: str) -> Result:
    return CliRunner().invoke(
        app,
        ["bench", target, "--model", "m", "--concurrency", "1", "--requests", "4", *args],
        env={"COLUMNS": "200"},
    )


class TestBenchExitStatus:
    def test_a_refused_connection_on_every_request_exits_1(self) -> None:
        """Nothing listens on TARGET: exit 1, and stderr says every request failed and why."""
        result = bench(f"http://127.0.0.1:{free_port()}/v1")
        assert result.exit_code == 1, (result.stdout, result.stderr)
        assert "error: all 4 requests failed; the first: ClientConnector" in result.stderr
        assert "is TARGET the right address" in result.stderr
        assert "Traceback" not in result.stderr

    def test_a_wrong_key_exits_1_and_still_prints_the_results(self, live: LiveGateway) -> None:
        """Every request 401: the JSON is printed (errors counted), then exit 1 naming 401."""
        result = bench(f"{live.url}/v1", "--api-key", "tm-wrong", "--json")
        assert result.exit_code == 1, (result.stdout, result.stderr)
        assert orjson.loads(result.stdout)["levels"][0]["errors"] == 4
        assert "the first: HTTP 401" in result.stderr and "--api-key" in result.stderr

    def test_some_requests_succeeding_exits_0(self) -> None:
        """Half the requests fail: the sweep is a result, exit 0, the first error shown."""
        with ServerThread(flaky_app()) as server:
            result = bench(f"{server.url}/v1", "--format", "csv")
        assert result.exit_code == 0, (result.stdout, result.stderr)
        (level,) = csv.DictReader(io.StringIO(result.stdout))
        assert (level["requests"], level["errors"]) == ("4", "2")
        assert level["first_error"].startswith("HTTP 503")
