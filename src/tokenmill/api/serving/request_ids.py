"""Request ids: unique, cheap, and made without I/O."""

from __future__ import annotations

import itertools
import secrets


class RequestIds:
    """Unique request ids, cheaply: a random prefix per gateway and a counter."""

    def __init__(self) -> None:
        self._prefix = "req_" + secrets.token_hex(8)
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):010x}"
