"""apscheduler 3.11 with the in-memory job store: it only triggers; the store remembers.

Every job gets `misfire_grace_time=None` (a late run is still a run: the default of one
second silently skips work when the loop was busy) and `coalesce=True`. A tick runs as a
task of its own, one at a time: a trigger that finds the previous run still going (a slow
exchange) coalesces into it quietly instead of piling up or filling the log.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bygheartd.store.errors import StoreDamaged, StoreError

log = logging.getLogger(__name__)

Tick = Callable[[], Awaitable[None]]


# Ticks that can succeed without reaching the store (the change watch reads a counter the
# listener keeps; the pool keeps its snapshot to itself when the store is away): their
# success says nothing about the store coming back.
STORELESS_TICKS = frozenset({"store-watch", "pool"})


class Ticker:
    def __init__(self) -> None:
        self._sched = AsyncIOScheduler(timezone=UTC)
        self._intervals: dict[str, float] = {}
        # The run of each tick still going, and the ticks woken meanwhile (run once more).
        self._running: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        # Why the store could not be reached at the last tick (None: it answers).
        self.store_trouble: str | None = None

    def start(self) -> None:
        self._sched.start()

    def shutdown(self) -> None:
        if self._sched.running:
            self._sched.shutdown(wait=False)
        # As apscheduler cancels the runs it started: a run cut off resumes from the store.
        for task in list(self._running.values()):
            task.cancel()

    def every(self, name: str, seconds: float, func: Tick, *, start_now: bool = True) -> None:
        first = datetime.now(UTC) if start_now else datetime.now(UTC) + timedelta(seconds=seconds)
        self._intervals[name] = seconds
        self._sched.add_job(
            self._guard(name, func),
            IntervalTrigger(seconds=seconds, timezone=UTC),
            id=name,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
            next_run_time=first,
            replace_existing=True,
        )

    def at(self, name: str, when: datetime, func: Tick) -> None:
        """A one-off run (a retry or a hold that is due); replaces an earlier one of that name."""
        self._sched.add_job(
            self._guard(name, func),
            "date",
            run_date=max(when, datetime.now(UTC)),
            id=name,
            coalesce=True,
            misfire_grace_time=None,
            replace_existing=True,
        )

    def reschedule(self, name: str, seconds: float) -> None:
        """Change an interval; the next run comes `seconds` from now."""
        if self._intervals.get(name) == seconds or self._sched.get_job(name) is None:
            return
        self._intervals[name] = seconds
        self._sched.reschedule_job(name, trigger=IntervalTrigger(seconds=seconds, timezone=UTC))

    def wake(self, name: str) -> None:
        """Run an interval job now instead of at its next time (once more, right after the
        run in progress, when one is going: what woke it may have come after it looked)."""
        job = self._sched.get_job(name)
        if job is None:
            return
        running = self._running.get(name)
        if running is not None and not running.done():
            self._again.add(name)
            return
        job.modify(next_run_time=datetime.now(UTC))

    def cancel(self, name: str) -> None:
        if self._sched.get_job(name) is not None:
            self._sched.remove_job(name)

    def _finished(self, name: str, task: asyncio.Task[None]) -> None:
        if self._running.get(name) is task:
            del self._running[name]

    def _guard(self, name: str, func: Tick) -> Tick:
        """What apscheduler runs: it starts `func` as a task of its own and returns at once.

        apscheduler counts a run until its coroutine returns and, with `max_instances=1`,
        refuses every trigger meanwhile with a warning ("maximum number of running instances
        reached"), each second while a slow exchange lasts. Here a trigger that finds the
        previous run still going coalesces into it quietly (a `wake` makes that run go once
        more when it ends), so a tick never runs twice at once and the log stays readable.
        """

        async def trigger() -> None:
            running = self._running.get(name)
            if running is not None and not running.done():
                log.debug("%s is still running; this trigger coalesces into it", name)
                return
            task = asyncio.get_running_loop().create_task(runs(), name=f"tick {name}")
            self._running[name] = task
            task.add_done_callback(functools.partial(self._finished, name))

        async def runs() -> None:
            while True:
                self._again.discard(name)
                await run()
                if name not in self._again or not self._sched.running:
                    return

        async def run() -> None:
            try:
                await func()
            except StoreDamaged as exc:  # its message is the explanation: no traceback
                log.error("scheduled %s failed: %s", name, exc)
            except StoreError as exc:  # a database gone away: said once, not every tick
                if self.store_trouble is None:
                    log.error("the job store is unavailable, work waits for it: %s", exc)
                self.store_trouble = str(exc)
                return
            except Exception:
                log.exception("scheduled %s failed; it runs again at its next time", name)
                return
            if self.store_trouble is not None and name not in STORELESS_TICKS:
                log.warning("the job store answers again: work goes on")
                self.store_trouble = None

        return trigger
