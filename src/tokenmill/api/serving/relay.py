"""The stream relay: the engine's batches go to the client as they come, one write per
batch, while a watcher stops the engine call when the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from tokenmill.api.error_json import Receive, Send
from tokenmill.api.serving.intake import disconnected
from tokenmill.errors import TokenmillError
from tokenmill.neutral import StreamPart, WirePart
from tokenmill.surfaces import Renderer

Batches = AsyncIterator[list[StreamPart]]


async def close_batches(parts: Batches) -> None:
    close = getattr(parts, "aclose", None)
    if close is not None:
        await close()


async def relay(
    first: list[StreamPart] | None,
    parts: Batches,
    renderer: Renderer,
    frame: Callable[[WirePart], bytes],
    show_usage: bool,
    send: Send,
    watcher: DisconnectWatcher,
) -> tuple[str, TokenmillError | None, bool]:
    """Send every batch; (status, error, usage shown) once the stream ends, fails or is
    cut. The usage chunk reaches the client only if it asked for it."""
    usage_shown = False
    try:
        watcher.arm()
        batch = first
        next_batch = parts.__anext__  # per batch: cheaper than anext(parts, None)
        while batch is not None:
            shown = renderer.parts(batch)
            if not show_usage:
                shown = [p for p in shown if not p.usage_only]
            elif not usage_shown:
                usage_shown = any(p.usage_only for p in shown)
            if shown:
                body = frame(shown[0]) if len(shown) == 1 else b"".join([frame(p) for p in shown])
                await send({"type": "http.response.body", "body": body, "more_body": True})
            try:
                batch = await next_batch()
            except StopAsyncIteration:
                batch = None
        return "ok", None, usage_shown
    except TokenmillError as error:
        return "error", error, usage_shown
    except asyncio.CancelledError:
        if not watcher.take_cancel():
            raise
        return "cancelled", None, usage_shown
    finally:
        watcher.disarm()
        await close_batches(parts)


class DisconnectWatcher:
    """Cancels the request's task when the client goes away, so the engine call stops too;
    only while armed (waiting on the engine or relaying), never in the middle of a commit."""

    def __init__(self, receive: Receive) -> None:
        self.client_gone = False
        self._armed = False
        self._cancelled = False
        self._stopped = False
        self._task = asyncio.current_task()
        self._future = asyncio.ensure_future(disconnected(receive))
        self._future.add_done_callback(self._on_disconnect)

    def _on_disconnect(self, future: asyncio.Future[None]) -> None:
        if self._stopped or future.cancelled() or future.exception() is not None:
            return
        self.client_gone = True
        if self._armed:
            self._cancel()

    def _cancel(self) -> None:
        if self._task is not None and not self._cancelled:
            self._cancelled = True
            self._task.cancel()

    def arm(self) -> None:
        self._armed = True
        if self.client_gone:
            self._cancel()  # gone already: the next wait is cut at once

    def disarm(self) -> None:
        self._armed = False

    def take_cancel(self) -> bool:
        """Whether a CancelledError came from this watcher; if so it is absorbed (the task
        goes on to record what the client got)."""
        if not self._cancelled:
            return False
        self._cancelled = False
        if self._task is not None:
            self._task.uncancel()
        return True

    def stop(self) -> None:
        self._stopped = True
        self._armed = False
        self._future.cancel()
