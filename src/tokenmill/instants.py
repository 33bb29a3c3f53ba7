"""Instants as Unix milliseconds, exactly: integer arithmetic, never through a float.

``datetime.timestamp() * 1000`` is a float and loses a millisecond for some instants
(2004-09-08T06:56:51.501Z becomes ...500.9999, truncated to ...500).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def ms_of(value: datetime) -> int:
    """Unix ms of ``value``; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // _MILLISECOND
