"""``tokenmill usage``: the usage records, filtered."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Annotated

import typer

from tokenmill.access import service
from tokenmill.cli.common import (
    DatabaseOption,
    HomeOption,
    JsonOption,
    RowsFormatOption,
    iso,
    output_format,
    parse_period,
    print_records,
    print_table,
    run,
    store,
    when,
)
from tokenmill.store.usage import query_records
from tokenmill.usage import UsageRecord

FIELDS = (*(field.name for field in fields(UsageRecord)), "started_at")


def usage(
    account: Annotated[str | None, typer.Option(help="Account id or name.")] = None,
    key: Annotated[str | None, typer.Option(help="Key id.")] = None,
    model: Annotated[str | None, typer.Option(help="Model id.")] = None,
    since: Annotated[str | None, typer.Option(help="From this time (ISO 8601, inclusive).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this time (ISO 8601).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 100,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    output: RowsFormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Usage records, newest first: one per authenticated, valid request."""
    shown_as = output_format(output, as_json)
    since_ms, until_ms = parse_period(since, until)
    if not 1 <= limit <= 100_000:
        raise typer.BadParameter("must be between 1 and 100000", param_hint="--limit")
    with store(home, database_url) as engine:

        def query() -> list:  # type: ignore[type-arg]
            for value, param in ((key, "--key"), (model, "--model")):
                if value is not None:
                    service.check_ref(value, param)
            account_id = service.find_account(engine, account).id if account else None
            with engine.connect() as connection:
                return query_records(
                    connection,
                    account_id=account_id,
                    key_id=key,
                    model=model,
                    since_ms=since_ms,
                    until_ms=until_ms,
                    limit=limit,
                )

        records = run(query)
    if shown_as != "table":
        shown = [{**asdict(r), "started_at": iso(r.started_at_ms)} for r in records]
        print_records(shown_as, shown, FIELDS)
        return
    print_table(
        "usage",
        [
            "started (UTC)",
            "request",
            "account",
            "model",
            "prompt",
            "completion",
            "cache read",
            "cache write",
            "reasoning",
            "est.",
            "status",
            "ttft ms",
            "ms",
        ],
        [
            (
                when(r.started_at_ms),
                r.request_id,
                r.account_id,
                r.model,
                r.prompt_tokens,
                r.completion_tokens,
                r.cached_tokens,
                r.cache_write_tokens,
                r.reasoning_tokens,
                "yes" if r.estimated else "",
                f"{r.status} {r.http_status}",
                r.ttft_ms,
                r.duration_ms,
            )
            for r in records
        ],
    )
