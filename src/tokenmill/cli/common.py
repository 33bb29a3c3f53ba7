"""What every command shares: where the home and database are, how times are read, and how
results are shown (a table for people, JSON or CSV for scripts)."""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import orjson
import typer
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine

from tokenmill import json_codec
from tokenmill.config import resolve_home
from tokenmill.errors import TokenmillError
from tokenmill.instants import ms_of
from tokenmill.store.database import open_engine

HomeOption = Annotated[
    str | None,
    typer.Option("--home", help="Home folder (default $TOKENMILL_HOME or ./.tokenmill)."),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Database URL (default $TOKENMILL_DATABASE_URL or SQLite in the home).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Short for --format json.")]
# One convention for every command: --format picks the output (table for people; csv where
# the output is rows), --json is short for --format json.
RowsFormatOption = Annotated[
    Literal["table", "json", "csv"] | None,
    typer.Option(
        "--format", help="table (default), json, or csv: one line per row.", show_default=False
    ),
]
FormatOption = Annotated[
    Literal["table", "json"] | None,
    typer.Option("--format", help="table (default) or json.", show_default=False),
]

T = TypeVar("T")


def database_url(home: str | None, url: str | None) -> str:
    env = dict(os.environ)
    if url or env.get("TOKENMILL_DATABASE_URL"):
        return url or env["TOKENMILL_DATABASE_URL"]
    return f"sqlite:///{resolve_home(home, env) / 'tokenmill.db'}"


@contextmanager
def store(home: str | None, url: str | None) -> Iterator[Engine]:
    engine = run(lambda: open_engine(database_url(home, url)))
    try:
        yield engine
    finally:
        engine.dispose()


def run(action: Callable[[], T]) -> T:
    """Run ``action``; a TokenmillError becomes one clear line on stderr and exit code 1."""
    try:
        return action()
    except TokenmillError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(1) from error


def when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def output_format(chosen: str | None, as_json: bool, default: str = "table") -> str:
    """The format a command prints in: ``--json`` is short for ``--format json``."""
    if as_json and chosen not in (None, "json"):
        raise typer.BadParameter(
            f"--json is short for --format json; give one, not both with --format {chosen}",
            param_hint="--json",
        )
    return "json" if as_json else chosen or default


def print_json(value: Any) -> None:
    sys.stdout.write(json_codec.dumps(value, indent=True).decode() + "\n")


def print_records(
    output: str, records: Sequence[Mapping[str, Any]], fields: Sequence[str] = ()
) -> None:
    """Rows for scripts: a JSON list, or CSV with the same fields."""
    assert output in ("json", "csv")
    if output == "json":
        print_json(list(records))
    else:
        print_csv(records, fields)


def print_csv(records: Sequence[Mapping[str, Any]], fields: Sequence[str] = ()) -> None:
    """One line per record under a header of its fields (the JSON output's, a nested
    object's as ``outer.inner``): ``fields`` first (all of them, even with no records),
    then any other field in the order the records name them."""
    flat = [_flat(record) for record in records]
    header = list(dict.fromkeys([*fields, *(name for row in flat for name in row)]))
    writer = csv.DictWriter(sys.stdout, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)


def _flat(record: Mapping[str, Any]) -> dict[str, str]:
    cells: dict[str, str] = {}
    for name, value in record.items():
        if isinstance(value, Mapping):
            cells.update({f"{name}.{inner}": _cell(each) for inner, each in value.items()})
        else:
            cells[name] = _cell(value)
    return cells


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple) and all(isinstance(each, str | int) for each in value):
        return ",".join(str(each) for each in value)
    if isinstance(value, list | tuple | Mapping):
        return orjson.dumps(value).decode()
    return str(value)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Rows under their column names, never cutting a word: where the console is too narrow
    for every cell on one line, cells wrap at spaces; where even the longest words (an id, a
    column name) do not fit side by side, each row is printed as ``name: value`` lines."""
    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    assert all(len(row) == len(columns) for row in cells)
    console = Console()
    widths = _column_widths(columns, cells, console.width)
    if widths is None:
        _print_blocks(title, columns, cells)
        return
    console.print(Text(title, style="table.title"), soft_wrap=True)
    table = Table()
    for column, width in zip(columns, widths, strict=True):
        table.add_column(Text(column), width=width, overflow="fold")
    for row in cells:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)


def _column_widths(
    columns: Sequence[str], cells: Sequence[Sequence[str]], console_width: int
) -> list[int] | None:
    """Each column's width (without its padding) so that the table fits ``console_width``
    and no word is cut; None where that cannot be done."""
    texts = [[column, *(row[index] for row in cells)] for index, column in enumerate(columns)]
    widest = [
        max(cell_len(line) for text in each for line in text.splitlines() or [""]) for each in texts
    ]
    longest_word = [
        max((cell_len(word) for text in each for word in text.split()), default=1) for each in texts
    ]
    # Each column has a space either side, and a border line before it and after the last.
    room = console_width - 3 * len(columns) - 1
    if sum(widest) <= room:
        return widest
    if sum(longest_word) > room:
        return None
    widths = list(longest_word)
    spare = room - sum(widths)
    # The columns that need the least to fit on one line get it first: most cells stay whole.
    for index in sorted(range(len(columns)), key=lambda i: widest[i] - longest_word[i]):
        grant = min(spare, widest[index] - widths[index])
        widths[index] += grant
        spare -= grant
    assert sum(widths) <= room
    return widths


def _print_blocks(title: str, columns: Sequence[str], cells: Sequence[Sequence[str]]) -> None:
    """The vertical layout: the title, then one block of ``name: value`` lines per row."""
    name_width = max(cell_len(column) for column in columns) + 1
    lines = [title] if cells else [title, "(none)"]
    for row in cells:
        lines.append("")
        lines.extend(
            f"{column + ':':<{name_width}} {cell}".rstrip()
            for column, cell in zip(columns, row, strict=True)
        )
    typer.echo("\n".join(lines))


# Instants the CLI takes and shows: Unix ms from 1970 (the store's epoch) to the last
# instant a four-digit year can name.
TIME_MS_MIN = 0
TIME_MS_MAX = ms_of(datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC))


def parse_time(text: str | None, param: str) -> int | None:
    """ISO 8601 (a date or a date and time, UTC unless it says) -> Unix ms."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(
            f"{text!r} is not an ISO 8601 date or time", param_hint=param
        ) from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    ms = ms_of(value)
    if not TIME_MS_MIN <= ms <= TIME_MS_MAX:
        raise typer.BadParameter(
            f"{text!r} is out of the supported range: 1970-01-01 to 9999-12-31 (UTC)",
            param_hint=param,
        )
    return ms


def parse_period(
    since: str | None, until: str | None, defaults: tuple[int, int] | None = None
) -> tuple[int | None, int | None]:
    """``--since`` and ``--until`` as Unix ms, an omitted one taken from ``defaults`` where
    given; since must come before until, and the message shows both."""
    since_ms, until_ms = parse_time(since, "--since"), parse_time(until, "--until")
    if defaults is not None:
        since_ms = defaults[0] if since_ms is None else since_ms
        until_ms = defaults[1] if until_ms is None else until_ms
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        since_shown = f"{iso(since_ms)}{'' if since else ' (the default)'}"
        until_shown = f"{iso(until_ms)}{'' if until else ' (the default)'}"
        raise typer.BadParameter(
            f"since {since_shown} must be before until {until_shown}",
            param_hint="--since/--until",
        )
    return since_ms, until_ms
