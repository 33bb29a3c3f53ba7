"""How the CLI shows results: tables that never cut a word, CSV of records, and one output
convention (``--format``, with ``--json`` its short form) on every command."""

from __future__ import annotations

import csv
import functools
import io
import re
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from tokenmill.cli.common import print_csv, print_table
from tokenmill.cli.main import app

COLUMNS = ("started (UTC)", "request", "account", "model", "prompt", "completion", "status")
ROW = (
    "2026-11-02 10:00:00",
    "req_0123456789abcdef01234567",
    "acct_0123456789abcdef",
    "llama-3.1-8b-instruct",
    1000,
    200,
    "ok 200",
)


def shown(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, width: int) -> str:
    """The usage-like table, printed on a console ``width`` columns wide."""
    monkeypatch.setenv("COLUMNS", str(width))
    print_table("usage", COLUMNS, [ROW, ROW])
    return capsys.readouterr().out


class TestTables:
    def test_a_table_that_fits_keeps_each_row_on_one_line(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """At 200 columns each row is one line holding every cell."""
        text = shown(capsys, monkeypatch, 200)
        rows = [line for line in text.splitlines() if ROW[1] in line]
        assert len(rows) == 2
        assert all(str(cell) in rows[0] for cell in ROW)

    def test_a_narrower_console_wraps_cells_at_spaces_but_cuts_no_word(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """At 128 columns the table wraps "started (UTC)" and the time, and every id, model
        and column name is still whole on one line."""
        text = shown(capsys, monkeypatch, 128)
        assert "┃" in text and "…" not in text
        assert max(len(line) for line in text.splitlines()) <= 128
        for word in [*ROW[1:4], "completion", "started", "(UTC)"]:
            assert word in text, word

    def test_a_console_too_narrow_for_the_longest_words_prints_a_block_per_row(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """At 40 columns each row is a block of name: value lines, nothing cut."""
        text = shown(capsys, monkeypatch, 40)
        assert "…" not in text and "┃" not in text
        assert text.count(f"request:       {ROW[1]}\n") == 2
        assert f"started (UTC): {ROW[0]}\n" in text
        assert f"model:         {ROW[3]}\n" in text

    def test_a_cell_is_printed_as_written_not_as_markup(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A reference such as "[bold]refund[/bold]" shows with its brackets."""
        monkeypatch.setenv("COLUMNS", "200")
        print_table("transfers [x]", ("reference",), [("[bold]refund[/bold]",)])
        text = capsys.readouterr().out
        assert "[bold]refund[/bold]" in text and "transfers [x]" in text


class TestCsv:
    def test_a_record_is_a_line_with_nested_fields_flattened(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Nested objects become outer.inner columns; lists of names join with commas."""
        print_csv([{"id": "k1", "models": ["a", "b"], "ttft_ms": {"p50": 1.5}, "gone": None}])
        (line,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
        assert line == {"id": "k1", "models": "a,b", "ttft_ms.p50": "1.5", "gone": ""}

    def test_no_records_still_print_the_header(self, capsys: pytest.CaptureFixture[str]) -> None:
        print_csv([], ("id", "model"))
        assert capsys.readouterr().out == "id,model\n"


def commands() -> list[str]:
    """Every command of ``tokenmill`` (not the groups), as typed after ``tokenmill``."""
    found: list[str] = []
    pending: list[tuple[str, Any]] = [("", typer.main.get_command(app))]
    while pending:
        name, command = pending.pop()
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            found.append(name.strip())
        else:
            pending.extend((f"{name} {sub}", each) for sub, each in subcommands.items())
    return sorted(found)


@functools.cache
def options(name: str) -> tuple[bool, list[str] | None]:
    """Whether the command's --help lists --json, and the choices of its --format."""
    result = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    choices = re.search(r"--format\s+<([a-z|]+)>", result.stdout)
    return "--json" in result.stdout, None if choices is None else choices[1].split("|")


class TestOneConvention:
    def test_every_command_with_json_takes_format_with_json_among_its_choices(self) -> None:
        """--json is short for --format json on every command that has it, and every
        --format takes json."""
        for name in commands():
            has_json, choices = options(name)
            assert has_json == (choices is not None), name
            assert choices is None or "json" in choices, name

    @pytest.mark.parametrize(
        "name",
        [
            "usage",
            "report revenue",
            "report margin",
            "accounts list",
            "accounts transfers",
            "accounts limits",
            "keys list",
            "keys limits",
            "prices list",
            "plans list",
            "invoices list",
            "plan scenario",
            "bench",
        ],
    )
    def test_commands_that_print_rows_take_table_json_and_csv(self, name: str) -> None:
        """As the README says: --format table|json|csv where the output is rows."""
        assert options(name) == (True, ["table", "json", "csv"])
