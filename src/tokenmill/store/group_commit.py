"""The group commit: one writer task commits whatever is waiting, as soon as it can.

Requests hand their usage record to ``submit`` and wait for it to be durable. The writer
takes everything queued (up to ``batch_count_max``) and commits it in one transaction on
its own thread; whatever arrives meanwhile waits for the next commit. There is no timer:
an idle gateway pays one commit of latency, a busy one shares each commit among many.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tokenmill.errors import Unavailable
from tokenmill.retail.metering import UsageRecord
from tokenmill.store.database import write_transaction
from tokenmill.store.usage import insert_records

log = logging.getLogger("tokenmill.store")

_Item = tuple[UsageRecord, "asyncio.Future[None]"]


class GroupCommitWriter:
    def __init__(self, engine: Engine, *, queue_count_max: int, batch_count_max: int) -> None:
        assert batch_count_max >= 1
        self._engine = engine
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue_count_max)
        self._batch_count_max = batch_count_max
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenmill-commit")
        self._task: asyncio.Task[None] | None = None
        self.commits_count = 0
        self.records_count = 0

    def start(self) -> None:
        assert self._task is None
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    async def submit(self, record: UsageRecord) -> None:
        """Return once ``record`` is committed; raise Unavailable if the commit failed."""
        if self._task is None or self._task.done():
            raise Unavailable("the usage writer is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((record, future))
        # A cancelled caller (client gone) must not cancel the commit: shield the wait.
        await asyncio.shield(future)

    async def close(self) -> None:
        """Commit everything queued, then stop the writer."""
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._thread.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_count_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            records = [record for record, _ in batch]
            try:
                await loop.run_in_executor(self._thread, self._commit, records)
            except SQLAlchemyError as exc:
                log.error("usage commit of %d records failed: %s", len(records), exc)
                error = Unavailable("could not record usage; the store is unavailable")
                self._settle(batch, error)
            else:
                self.commits_count += 1
                self.records_count += len(records)
                self._settle(batch, None)

    def _commit(self, records: list[UsageRecord]) -> None:
        with write_transaction(self._engine) as connection:
            insert_records(connection, records)

    def _settle(self, batch: list[_Item], error: Exception | None) -> None:
        for _, future in batch:
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
            self._queue.task_done()
