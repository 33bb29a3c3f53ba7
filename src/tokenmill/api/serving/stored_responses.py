"""The stored responses of the OpenAI Responses surface, as the request path and the
``/v1/responses/{id}`` routes use them: the store's rows (``store/responses.py``) read and
written on the gateway's I/O threads, never on the event loop.

These are the only reads of the store before an engine call: a request that continues a
conversation (``previous_response_id``) needs its earlier turns, and they live in the store,
not in one process's memory. A response is saved after its usage is committed and before
its last byte, so a client that has the answer can read it back at once.
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
PRUNE_EVERY_COUNT = 100  # saves between two prunes (expired rows, accounts over their count)
T = TypeVar("T")


class ResponseStore:
    def __init__(self, db: Engine, io: Executor, limits: Limits) -> None:
        self._db = db
        self._io = io
        self._limits = limits
        self._saves = 0

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
        if cut or sum(len(item) for item in texts) > limits.response_context_bytes_max:
            raise InvalidRequest(
                f"The conversation of '{response_id[:64]}' is longer than this gateway"
                f" continues ({limits.response_chain_count_max} responses or"
                f" {limits.response_context_bytes_max} bytes); send its items as 'input'.",
                param="previous_response_id",
            )
        return tuple(item for text in texts for item in orjson.loads(text))

    def _chain(self, account_id: str, response_id: str) -> tuple[list[str], bool] | None:
        with self._db.connect() as connection:
            depth_max = self._limits.response_chain_count_max - 1
            return rows.chain_items(connection, account_id, response_id, now_ms(), depth_max)

    async def save(self, row: StoredResponse) -> None:
        """Keep ``row``; a failure is logged, not raised (the client has its answer)."""
        self._saves += 1
        prune = self._saves % PRUNE_EVERY_COUNT == 0
        try:
            await self._run(self._save, row, prune)
        except Unavailable:
            log.warning("response %s could not be stored", row.id, exc_info=True)

    def _save(self, row: StoredResponse, prune: bool) -> None:
        with write_transaction(self._db) as connection:
            rows.insert_response(connection, row)
            if prune:
                count_max = self._limits.responses_stored_count_max
                rows.prune(connection, row.created_at_ms, row.account_id, count_max)

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
