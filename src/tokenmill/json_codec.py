"""JSON that keeps integers exact at any size.

orjson, which the hot path uses for speed, refuses integers past 64 bits and reads them
back as floats; balances and sums of money may pass 2**63 nano-units (store/wide_sums.py).
``dumps`` falls back to the standard library for those rare values, and ``loads`` reads
stored JSON with it, so no amount ever turns into a float.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any, *, indent: bool = False) -> bytes:
    option = orjson.OPT_INDENT_2 if indent else 0
    try:
        return orjson.dumps(value, option=option)
    except orjson.JSONEncodeError as error:
        if "64-bit" not in str(error):
            raise
        return json.dumps(value, indent=2 if indent else None, ensure_ascii=False).encode()


def loads(data: str | bytes) -> Any:
    """Parse stored JSON with its integers exact (orjson would make big ones floats)."""
    return json.loads(data)
