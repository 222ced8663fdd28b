"""The poll stage: one batched `query_result` for every in-flight task, at an interval
that starts short after a submit and grows while tasks run; and the client-side limits
(`"[]"` answers, the job deadline) that end tasks the server forgot.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bygheartd.api.client import TaskResult, TaskState
from bygheartd.api.errors import ApiError, RateLimited
from bygheartd.catalog import credits_phrase
from bygheartd.engine.delivery import Delivery
from bygheartd.engine.endings import Endings
from bygheartd.engine.parts import EngineParts
from bygheartd.jobs import SETTLING, Job, JobStatus, utcnow
from bygheartd.store.errors import StaleTransition

log = logging.getLogger(__name__)


class Poller:
    """Batched polls of every task in flight, timed to when they should be done."""

    def __init__(
        self,
        parts: EngineParts,
        delivery: Delivery,
        endings: Endings,
        on_finished: Callable[[], None],
    ) -> None:
        self.parts = parts
        self.delivery = delivery
        self.endings = endings
        self._on_finished = on_finished
        self._poll_interval = parts.config.queue.poll_min_seconds
        self._poll_paused_until: datetime | None = None
        # How long a generation typically takes: observed here, or ACE-Step's own average.
        self.typical_seconds: float | None = None
        self._stats_checked = 0.0

    def poll_soon(self) -> None:
        """After a submit: poll soon, or when the first task is expected to be done."""
        running = self.parts.store.list_jobs([JobStatus.RUNNING], summary=True)
        self._plan_next_poll(running, after_submit=True)

    def _plan_next_poll(self, running: list[Job], *, after_submit: bool = False) -> None:
        """Poll when the first in-flight task should be done, once we know how long they take;
        until then (and for tasks running late), short right after a submit and growing."""
        q = self.parts.config.queue
        expected = self._seconds_until_first_expected(running)
        if expected is not None and expected > 0:
            interval = expected
        elif after_submit:
            interval = q.poll_min_seconds
        else:
            interval = self._poll_interval * 1.5
        self._poll_interval = min(q.poll_max_seconds, max(q.poll_min_seconds, interval))
        self.parts.ticker.reschedule("poll", self._poll_interval)

    def _seconds_until_first_expected(self, running: list[Job]) -> float | None:
        if self.typical_seconds is None:
            return None
        now = utcnow()
        waits = [
            (j.submitted_at - now).total_seconds() + self.typical_seconds
            for j in running
            if j.submitted_at is not None
        ]
        return min(waits) if waits else None

    async def poll_due(self) -> None:
        """One batched `query_result` for every in-flight task, then adapt the interval."""
        if self.parts.stopping:
            return
        now = utcnow()
        if self._poll_paused_until is not None and now < self._poll_paused_until:
            return
        running = [j for j in self.parts.store.list_jobs([JobStatus.RUNNING]) if j.task_id]
        settling = [
            j
            for j in self.parts.store.find_by("hold_kind", SETTLING)
            if j.status is JobStatus.CANCELLED and j.task_id
        ]
        if not running and not settling:
            return
        ids = [j.task_id for j in running + settling if j.task_id]
        try:
            results = await self.parts.client.query(
                ids, chunk_size=self.parts.config.queue.poll_batch
            )
        except RateLimited as exc:
            wait = exc.retry_after or self._poll_interval * 2
            self._poll_paused_until = now + timedelta(seconds=wait)
            log.warning("polling rate limited; next poll in %.0f s", wait)
            return
        except (ApiError, OSError) as exc:
            log.warning("poll failed (%s); trying again later", exc)
            self._plan_next_poll([])
            return
        await self._refresh_server_average(now)
        finished = 0
        for job in running:
            result = results.get(job.task_id or "")
            if result is not None and self._apply(job, result, now):
                finished += 1
        for job in settling:
            result = results.get(job.task_id or "")
            if result is not None:
                self._settle(job, result, now)
        if finished:
            self._on_finished()
        still = [
            j for j in self.parts.store.list_jobs([JobStatus.RUNNING], summary=True) if j.task_id
        ]
        self._plan_next_poll(still)

    def _settle(self, job: Job, result: TaskResult, now: datetime) -> None:
        """A cancelled job's task ended on the server: bring the ledger in line with it."""
        started = job.submitted_at or job.created_at
        overdue = (now - started).total_seconds() > self.parts.config.queue.job_deadline_seconds
        if result.state is TaskState.FAILED:
            refunded = self.parts.budget.refund(job.id, job.model)
            outcome = f"failed on the server after the cancel: {credits_phrase(refunded)} back"
        elif result.state is TaskState.SUCCEEDED:
            outcome = "the server finished it after the cancel (charged, not downloaded)"
        elif result.state is TaskState.UNKNOWN or overdue:
            outcome = "the server no longer reports it; its credits stay counted"
        else:
            return
        try:
            self.parts.store.update(job.id, expect={JobStatus.CANCELLED}, hold_kind=None)
        except StaleTransition:
            return  # retried meanwhile: a new submission, nothing to settle
        self.parts.store.add_event(job.id, "settled", outcome)

    async def _refresh_server_average(self, now: datetime) -> None:
        """A self-hosted ACE-Step server reports its average job time in /v1/stats."""
        if self.parts.config.backend != "acestep" or now.timestamp() - self._stats_checked < 60:
            return
        self._stats_checked = now.timestamp()
        try:
            stats = await self.parts.client.stats()
        except (ApiError, OSError):
            return
        average = (stats or {}).get("avg_job_seconds")
        if isinstance(average, int | float) and average > 0:
            self.typical_seconds = float(average)

    def _observe_generation(self, job: Job, now: datetime) -> None:
        if job.submitted_at is None:
            return
        took = (now - job.submitted_at).total_seconds()
        previous = self.typical_seconds
        self.typical_seconds = took if previous is None else 0.8 * previous + 0.2 * took

    def _apply(self, job: Job, result: TaskResult, now: datetime) -> bool:
        """Act on one task's answer; True when the job left `running`."""
        if result.state is TaskState.SUCCEEDED:
            self._observe_generation(job, now)
            takes = tuple(result.outputs)
            try:
                job = self.parts.store.transition(
                    job.id,
                    JobStatus.DOWNLOADING,
                    event="generated",
                    reason=f"{len(takes)} file(s) ready",
                    expect={JobStatus.RUNNING},
                    result=job.result.but(takes=takes),
                    progress=1.0,
                    eta_seconds=None,
                )
            except StaleTransition:
                return True
            self.delivery.start(job)
            return True
        if result.state is TaskState.FAILED:
            self.endings.fail(job, "the generation failed on the server (it gives no reason)")
            return True
        deadline = job.submitted_at or job.created_at
        elapsed = (now - deadline).total_seconds()
        if elapsed > self.parts.config.queue.job_deadline_seconds:
            self.endings.fail(
                job,
                f"no result after {elapsed / 60:.0f} minutes (job_deadline_seconds)",
                refund=False,
            )
            return True
        if result.state is TaskState.UNKNOWN:
            return self._unknown(job, now)
        updates: dict[str, Any] = {}
        if job.result.unknown_polls or job.unknown_since is not None:
            # Known again: a later stretch of "[]" starts its own grace period.
            updates["unknown_since"] = None
            updates["result"] = job.result.but(unknown_polls=0)
        if result.progress is not None and abs((job.progress or 0) - result.progress) >= 0.01:
            updates["progress"] = result.progress
        eta = self._eta(elapsed, result.progress)
        if eta is not None and (job.eta_seconds is None or abs(job.eta_seconds - eta) >= 1.0):
            updates["eta_seconds"] = eta
        if updates:
            with contextlib.suppress(StaleTransition):  # cancelled meanwhile
                self.parts.store.update(job.id, expect={JobStatus.RUNNING}, **updates)
        return False

    def _eta(self, elapsed: float, progress: float | None) -> float | None:
        """Seconds left: from the server's progress when it gives one, else from history."""
        if progress is not None and progress > 0.05:
            return round(elapsed * (1 - progress) / progress, 1)
        if self.typical_seconds is not None:
            return round(max(0.0, self.typical_seconds - elapsed), 1)
        return None

    def _unknown(self, job: Job, now: datetime) -> bool:
        """`"[]"` means unknown, expired or lost: tolerate it for a while, never forever."""
        polls = job.result.unknown_polls + 1
        since = job.unknown_since
        since_ts = (since or now).timestamp()
        if (
            polls >= 3
            and now.timestamp() - since_ts >= self.parts.config.queue.unknown_grace_seconds
        ):
            self.endings.fail(
                job,
                "the server no longer knows this task (it answered '[]' for "
                f"{now.timestamp() - since_ts:.0f} s)",
                refund=False,
            )
            return True
        with contextlib.suppress(StaleTransition):  # cancelled meanwhile
            self.parts.store.update(
                job.id,
                expect={JobStatus.RUNNING},
                unknown_since=datetime.fromtimestamp(since_ts, UTC),
                result=job.result.but(unknown_polls=polls),
            )
        return False
