"""What every command shares: where the home and database are, and how results are shown."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

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
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

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


def print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if cell is None else str(cell) for cell in row])
    Console().print(table)


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
    return ms_of(value)
