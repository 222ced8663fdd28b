"""How late the daemon's event loop runs, measured from inside it.

Everything the daemon does (the watcher, polls, MCP over HTTP, the library page's live
updates) shares one event loop, so anything that blocks it (a slow plugin hook run inline, a
store call made on the loop) delays all of it. A ticker that asks to wake every `every`
seconds and notes how late it woke is the direct measure: /health reports it, a block of a
second or more is logged with what to look at, and `bench/store_lock.py` reads it while
another process holds the store's write lock.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass

__all__ = ["LoopLag", "LoopLagFigures"]

log = logging.getLogger(__name__)

TICK_SECONDS = 0.1
WINDOW_SECONDS = 60.0
# A loop this late is stalled for everyone: worth one line in the log.
BLOCKED_SECONDS = 1.0
# At most one such line this often, so a sick machine does not flood the journal.
WARN_EVERY_SECONDS = 30.0


@dataclass(frozen=True)
class LoopLagFigures:
    """The ticker's figures in milliseconds: its last tick's lateness and, over the window,
    the p95 and the worst; `ticks` counts every tick since start (a reader that sees the
    same count twice has seen the same tick)."""

    ticks: int
    last_ms: float
    p95_ms: float
    max_ms: float
    window_seconds: float

    def as_record(self) -> dict[str, float | int]:
        return {
            "ticks": self.ticks,
            "last_ms": self.last_ms,
            "p95_ms": self.p95_ms,
            "max_ms": self.max_ms,
            "window_seconds": self.window_seconds,
        }


class LoopLag:
    """A ticker on the running loop: `run()` it as a task; `figures()` reads it anywhere."""

    def __init__(
        self,
        *,
        every: float = TICK_SECONDS,
        window: float = WINDOW_SECONDS,
        blocked: float = BLOCKED_SECONDS,
    ) -> None:
        self.every = every
        self.window = window
        self.blocked = blocked
        self._samples: deque[tuple[float, float]] = deque()  # (monotonic, lateness s)
        self._ticks = 0
        self._last = 0.0
        self._warned_at = -math.inf

    def figures(self) -> LoopLagFigures:
        """The figures of the last `window` seconds (zeros before the first tick)."""
        self._forget(time.monotonic())
        lags = sorted(lag for _, lag in self._samples)
        p95 = lags[min(len(lags) - 1, math.ceil(0.95 * len(lags)) - 1)] if lags else 0.0
        return LoopLagFigures(
            ticks=self._ticks,
            last_ms=round(self._last * 1000, 1),
            p95_ms=round(p95 * 1000, 1),
            max_ms=round(lags[-1] * 1000, 1) if lags else 0.0,
            window_seconds=self.window,
        )

    def note(self, woke: float, lateness: float) -> None:
        """Record one tick that woke at `woke` (monotonic) `lateness` seconds late."""
        lateness = max(0.0, lateness)
        self._ticks += 1
        self._last = lateness
        self._samples.append((woke, lateness))
        self._forget(woke)
        if lateness >= self.blocked and woke - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = woke
            log.warning(
                "the event loop was blocked for %.1f s: the inbox, polls, MCP and the library "
                "page all waited (a plugin hook doing slow work inline, or an overloaded "
                "machine; run with --log-level debug to see what ran)",
                lateness,
            )

    def _forget(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self.window:
            self._samples.popleft()

    async def run(self) -> None:
        """Tick until cancelled (the daemon runs it as one of its own tasks)."""
        while True:
            asked = time.monotonic()
            await asyncio.sleep(self.every)
            woke = time.monotonic()
            self.note(woke, woke - asked - self.every)
