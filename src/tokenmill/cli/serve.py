"""``tokenmill serve``: the gateway on uvicorn (uvloop + httptools), draining on SIGTERM."""

from __future__ import annotations

import gc
import logging
import resource
import signal
import sys
from typing import Annotated

import typer
import uvicorn

from tokenmill.access import service
from tokenmill.access.service import FirstStart
from tokenmill.api.app import create_app
from tokenmill.api.http_protocol import server_options
from tokenmill.cli.common import DatabaseOption, HomeOption, run
from tokenmill.config import DEFAULT_PORT, Settings, resolve_settings
from tokenmill.store.database import open_engine


def raise_open_files_limit(connections_count_max: int) -> None:
    """Let the process open as many sockets as it may serve connections (plus the store,
    upstreams and logs): a soft limit of 1024 would refuse connections long before the
    cap, with errors instead of 503s."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections_count_max + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def banner(first: FirstStart, settings: Settings) -> str:
    base = f"http://{settings.host}:{settings.port}"
    lines = [
        "",
        "tokenmill: first start; these secrets are shown once and stored only as hashes.",
        "",
    ]
    if first.admin_token:
        lines += [f"  admin token  {first.admin_token}", ""]
    lines += [
        f"  demo API key {first.demo_key}   (account 'demo')",
        "",
        "Try it:",
        "",
        f"  curl -N {base}/v1/chat/completions \\",
        f"    -H 'Authorization: Bearer {first.demo_key}' -H 'Content-Type: application/json' \\",
        '    -d \'{"model": "llama-3.1-8b", "stream": true, '
        '"messages": [{"role": "user", "content": "Hello"}]}\'',
        "",
        "  from openai import OpenAI",
        f"  client = OpenAI(base_url='{base}/v1', api_key='{first.demo_key}')",
        "  print(client.chat.completions.create(model='llama-3.1-8b',",
        "        messages=[{'role': 'user', 'content': 'Hello'}]).choices[0].message.content)",
        "",
    ]
    return "\n".join(lines)


GC_GENERATION0_COUNT = 50_000


def tune_garbage_collector() -> None:
    """Fewer, larger young-generation collections; the startup objects frozen out of them.

    Every request allocates many short-lived objects; at the default threshold (700) the
    collector runs every few requests and, with many requests in flight, costs a third of
    the throughput (measured with bench/gateway_overhead.py). Cycles still get collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GENERATION0_COUNT, 20, 100)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            help="YAML configuration (default $TOKENMILL_CONFIG or the built-in sim fleet).",
        ),
    ] = None,
    home: HomeOption = None,
    database_url: DatabaseOption = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve the OpenAI-compatible gateway."""
    if not __debug__:
        typer.echo(
            "tokenmill serve refuses to run under python -O: its asserts guard money.", err=True
        )
        raise typer.Exit(2)
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = run(
        lambda: resolve_settings(
            home=home, config_path=config, database_url=database_url, host=host, port=port
        )
    )
    engine = run(
        lambda: open_engine(
            settings.database_url, sqlite_synchronous=settings.config.store.sqlite_synchronous
        )
    )
    try:
        first = run(lambda: service.first_start(engine, make_admin_token=not settings.admin_token))
    finally:
        engine.dispose()
    app = run(lambda: create_app(settings))
    if first is not None:
        typer.echo(banner(first, settings))
    tune_garbage_collector()
    sys.stdout.flush()
    # uvicorn drains on SIGTERM, then raises the signal again for the previous handler; a
    # no-op handler there lets a drained gateway exit 0, as a supervisor expects.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    limits = settings.config.limits
    raise_open_files_limit(limits.connections_count_max)
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        **server_options(limits),
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=int(settings.config.limits.shutdown_drain_s_max),
        server_header=False,
        # The gateway never reads the client's address, so X-Forwarded-* need no parsing.
        proxy_headers=False,
    )
