"""The stored responses of the OpenAI Responses surface, as the request path and the
``/v1/responses/{id}`` routes use them: the store's rows (``store/responses.py``) read and
written on the gateway's I/O threads, never on the event loop.

These are the only reads of the store before an engine call: a request that continues a
conversation (``previous_response_id``) needs its earlier turns, and they live in the store,
not in one process's memory. A response is written by the group commit in the same
transaction as its usage record, before the last byte, so a client that has the answer can
read it back at once; it is pruned here, in the background.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import orjson
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tokenmill.config import Limits
from tokenmill.errors import InvalidRequest, Unavailable
from tokenmill.store import responses as rows
from tokenmill.store.database import now_ms, write_transaction
from tokenmill.store.responses import StoredResponse

log = logging.getLogger("tokenmill.responses")
PRUNE_EVERY_COUNT = 1000  # saves between two prunes (expired rows, accounts over their count)
T = TypeVar("T")


class ResponseStore:
    def __init__(self, db: Engine, io: Executor, limits: Limits) -> None:
        self._db = db
        self._io = io
        self._limits = limits
        self._saves = 0
        self._pruning: set[asyncio.Task[None]] = set()

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._io, work, *args)
        except SQLAlchemyError as exc:
            raise Unavailable(
                "The gateway cannot read or write stored responses right now; retry shortly.",
                retry_after_s=1,
            ) from exc

    async def context(self, account_id: str, response_id: str) -> tuple[dict[str, Any], ...]:
        """The items of the conversation ``response_id`` ends (its own and its ancestors'
        inputs and outputs, oldest first); a clear 400 if the account has no such response
        or the conversation is longer than the gateway keeps in one request."""
        limits = self._limits
        found = await self._run(self._chain, account_id, response_id)
        if found is None:
            raise InvalidRequest(
                f"Previous response with id '{response_id[:64]}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        texts, cut = found
        if cut or sum(len(a) + len(b) for a, b in texts) > limits.response_context_bytes_max:
            raise InvalidRequest(
                f"The conversation of '{response_id[:64]}' is longer than this gateway"
                f" continues ({limits.response_chain_count_max} responses or"
                f" {limits.response_context_bytes_max} bytes); send its items as 'input'.",
                param="previous_response_id",
            )
        items: list[dict[str, Any]] = []
        for inputs, response in texts:
            items.extend(orjson.loads(inputs))
            items.extend(orjson.loads(response)["output"])
        return tuple(items)

    def _chain(
        self, account_id: str, response_id: str
    ) -> tuple[list[tuple[str, str]], bool] | None:
        with self._db.connect() as connection:
            depth_max = self._limits.response_chain_count_max - 1
            return rows.chain_items(connection, account_id, response_id, now_ms(), depth_max)

    def kept(self, account_id: str, now_ms: int) -> None:
        """A response of ``account_id`` was stored (by the group commit, with its usage
        record); every ``PRUNE_EVERY_COUNT``-th one, prune in the background: expired rows,
        and the account's oldest beyond its count."""
        self._saves += 1
        if self._saves % PRUNE_EVERY_COUNT:
            return
        task = asyncio.get_running_loop().create_task(self._prune(account_id, now_ms))
        self._pruning.add(task)
        task.add_done_callback(self._pruning.discard)

    async def _prune(self, account_id: str, now_ms: int) -> None:
        try:
            await self._run(self._prune_now, account_id, now_ms)
        except Unavailable:
            log.warning("stored responses could not be pruned", exc_info=True)

    def _prune_now(self, account_id: str, now_ms: int) -> None:
        with write_transaction(self._db) as connection:
            count_max = self._limits.responses_stored_count_max
            rows.prune(connection, now_ms, account_id, count_max)

    def expiry_ms(self, created_at_ms: int) -> int:
        return created_at_ms + int(self._limits.responses_retention_s * 1000)

    async def get(self, account_id: str, response_id: str) -> StoredResponse | None:
        return await self._run(self._get, account_id, response_id)

    def _get(self, account_id: str, response_id: str) -> StoredResponse | None:
        with self._db.connect() as connection:
            return rows.response_by_id(connection, account_id, response_id, now_ms())

    async def delete(self, account_id: str, response_id: str) -> bool:
        return await self._run(self._delete, account_id, response_id)

    def _delete(self, account_id: str, response_id: str) -> bool:
        with write_transaction(self._db) as connection:
            return rows.delete_response(connection, account_id, response_id, now_ms())
