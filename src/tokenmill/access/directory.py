"""The gateway's in-memory index of live keys: the hot path authenticates without the database.

The index holds every live key, so a key it does not know does not exist (or was made less
than one poll ago): a flood of unknown keys costs dictionary lookups, never a database read,
and the index is bounded by the keys that exist, not by what attackers send.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenmill.access.keys import Grant
from tokenmill.changes import ChangeCursor
from tokenmill.retail.rate_limits import RateLimit, limits_from_spec
from tokenmill.store.accounts import AccountRow, KeyRow


class KeyDirectory(ChangeCursor):
    """Key hash -> Grant, kept current by ``apply_keys`` and ``apply_accounts``."""

    def __init__(self) -> None:
        super().__init__()
        self._grants: dict[str, Grant] = {}
        self._hash_by_key_id: dict[str, str] = {}
        self._rows_by_key_id: dict[str, KeyRow] = {}
        self._account_active: dict[str, bool] = {}
        self._account_limits: dict[str, dict[str, RateLimit]] = {}
        self._key_ids_by_account: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._grants)

    def lookup(self, key_hash: str) -> Grant | None:
        return self._grants.get(key_hash)

    def load(self, accounts: Iterable[AccountRow], keys: Iterable[KeyRow], seq: int) -> None:
        self.apply_accounts(accounts)
        self.apply_keys(keys)
        self.seq = seq

    def apply_accounts(self, accounts: Iterable[AccountRow]) -> None:
        for account in accounts:
            self._account_active[account.id] = account.status == "active"
            self._account_limits[account.id] = limits_from_spec(account.rate_limits or {})
            for key_id in self._key_ids_by_account.get(account.id, ()):
                self._index(self._rows_by_key_id[key_id])

    def apply_keys(self, keys: Iterable[KeyRow]) -> None:
        for key in keys:
            self._forget(key.id)
            if key.revoked_at_ms is None:
                self._rows_by_key_id[key.id] = key
                self._key_ids_by_account.setdefault(key.account_id, set()).add(key.id)
                self._index(key)

    def forget_keys(self, key_ids: Iterable[str]) -> None:
        for key_id in key_ids:
            self._forget(key_id)

    def _index(self, key: KeyRow) -> None:
        grant = Grant(
            key_id=key.id,
            account_id=key.account_id,
            models=frozenset(key.models) if key.models is not None else None,
            expires_at_ms=key.expires_at_ms,
            account_active=self._account_active.get(key.account_id, False),
            key_limits=limits_from_spec(key.rate_limits or {}),
            account_limits=self._account_limits.get(key.account_id, {}),
        )
        self._grants[key.key_hash] = grant
        self._hash_by_key_id[key.id] = key.key_hash
        assert len(self._grants) == len(self._hash_by_key_id)

    def _forget(self, key_id: str) -> None:
        key_hash = self._hash_by_key_id.pop(key_id, None)
        if key_hash is not None:
            del self._grants[key_hash]
        row = self._rows_by_key_id.pop(key_id, None)
        if row is not None:
            self._key_ids_by_account.get(row.account_id, set()).discard(key_id)
        assert len(self._grants) == len(self._hash_by_key_id)
