"""When is a file in the inbox finished? A pure tracker that takes the clock as an argument.

A file is ready when it had no filesystem events and kept the same (st_size, st_mtime_ns)
for `settle_seconds`. Network copies write in chunks, scanners open and close a file many
times, and a polling observer reports a growing file on every poll: none of them may be
taken half-written. Tests drive the clock by hand, so they need no sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple


class Signature(NamedTuple):
    """What a stat says about a file's content without reading it."""

    size: int
    mtime_ns: int


@dataclass
class _Pending:
    last_event: float
    signature: Signature | None = None
    seen_since: float = 0.0  # when `signature` was first observed with its current value
    needs_stat: bool = True


class FileStabilityTracker:
    """Pending paths, their last event, and the last signature seen.

    The caller feeds `event()` from the observer, asks `to_check(now)` which paths need a
    stat, stats them (off the event loop), and hands each result to `observe()`, which says
    whether the file is ready. Ready and vanished files are forgotten.
    """

    def __init__(self, settle_seconds: float) -> None:
        self.settle = max(0.0, settle_seconds)
        self._pending: dict[Path, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, path: object) -> bool:
        return path in self._pending

    def paths(self) -> list[Path]:
        return list(self._pending)

    def event(self, path: Path, now: float) -> None:
        """Something happened to `path` (created, modified, moved in, found by a scan)."""
        entry = self._pending.get(path)
        if entry is None:
            self._pending[path] = _Pending(last_event=now)
        else:
            entry.last_event = max(entry.last_event, now)
            entry.needs_stat = True

    def forget(self, path: Path) -> None:
        self._pending.pop(path, None)

    def clear(self) -> None:
        self._pending.clear()

    def _due(self, entry: _Pending) -> float:
        return max(entry.last_event, entry.seen_since) + self.settle

    def to_check(self, now: float) -> list[Path]:
        """Paths to stat now: new events (first look) and those whose settle time is up."""
        return [p for p, e in self._pending.items() if e.needs_stat or self._due(e) <= now]

    def next_check(self, now: float) -> float | None:
        """The earliest time a path needs a stat; None when nothing is pending."""
        if not self._pending:
            return None
        return min(now if e.needs_stat else self._due(e) for e in self._pending.values())

    def observe(self, path: Path, signature: Signature | None, now: float) -> bool:
        """Record a stat of `path` (None: it is gone). True when the file is ready."""
        entry = self._pending.get(path)
        if entry is None:
            return False
        if signature is None:
            del self._pending[path]
            return False
        entry.needs_stat = False
        if signature != entry.signature:
            entry.signature = signature
            entry.seen_since = now
            return False
        if now - max(entry.last_event, entry.seen_since) >= self.settle:
            del self._pending[path]
            return True
        return False
