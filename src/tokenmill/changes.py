"""Where a follower of the store's change sequence stands, pure.

On PostgreSQL two writers can commit out of sequence order (seq 11 visible before seq 10),
so a follower re-reads a window of recent seqs and skips those it applied: ``seq`` is the
highest applied, ``has_applied`` answers inside the window.
"""

from __future__ import annotations

from collections.abc import Iterable


class ChangeCursor:
    def __init__(self) -> None:
        self.seq = 0  # the highest change applied
        self._applied_recent: set[int] = set()  # applied seqs in the overlap window
        self._floor = 0  # every seq up to here was applied (below the overlap window)

    def has_applied(self, seq: int) -> bool:
        """Whether change ``seq`` was applied: below the window, or remembered inside it.

        Two fetches racing each other read the same changes; the second one's apply must
        see them as applied (on SQLite too, where the window is empty).
        """
        return seq <= self._floor or seq in self._applied_recent

    def mark_applied(self, seqs: Iterable[int], overlap: int) -> None:
        """Remember ``seqs`` as applied; forget those that fell out of the overlap window."""
        self._applied_recent.update(seqs)
        self.seq = max(self.seq, max(self._applied_recent, default=0))
        floor = self.seq - overlap
        self._floor = max(self._floor, floor)
        self._applied_recent = {seq for seq in self._applied_recent if seq > floor}
        assert len(self._applied_recent) <= overlap
