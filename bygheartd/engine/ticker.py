"""apscheduler 3.11 with the in-memory job store: it only triggers; the store remembers.

Every job gets `misfire_grace_time=None` (a late run is still a run: the default of one
second silently skips work when the loop was busy) and `coalesce=True`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger(__name__)

Tick = Callable[[], Awaitable[None]]


class Ticker:
    def __init__(self) -> None:
        self._sched = AsyncIOScheduler(timezone=UTC)
        self._intervals: dict[str, float] = {}

    def start(self) -> None:
        self._sched.start()

    def shutdown(self) -> None:
        if self._sched.running:
            self._sched.shutdown(wait=False)

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
        """Run an interval job now instead of at its next time."""
        job = self._sched.get_job(name)
        if job is not None:
            job.modify(next_run_time=datetime.now(UTC))

    def cancel(self, name: str) -> None:
        if self._sched.get_job(name) is not None:
            self._sched.remove_job(name)

    @staticmethod
    def _guard(name: str, func: Tick) -> Tick:
        async def run() -> None:
            try:
                await func()
            except Exception:
                log.exception("scheduled %s failed; it runs again at its next time", name)

        return run
