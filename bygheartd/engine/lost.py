"""Tasks a self-hosted server lost, and making them again.

ACE-Step keeps its tasks in memory. After a restart its queued tasks answer `"[]"` and the
one that was running freezes at status 0 with its last progress (API.md, API-TRANSCRIPTS.md
step 34); an hour after submission the server then reports it failed, which it did not. With
no credits at stake (`[queue] resubmit_lost`, self-hosted only) such a task is made again,
once it is provably lost:

- it answered `"[]"` for the grace the poller already uses (`unknown_grace_seconds`, 3+ polls);
- or it shows a running stage with unchanged progress for three times the expected time
  (observed on that server, else its `/v1/stats` `avg_job_seconds`) plus a minute;
- or it shows a running stage with unchanged progress for the `"[]"` grace while the server's
  own `/v1/stats`, read then, says nothing runs there (0 running): the server is not working
  on it.

A job is made again at most `MAX_RESUBMITS` times, each recorded in its history.
"""

from __future__ import annotations

import logging
from datetime import datetime

from bygheartd.api.client import TaskResult
from bygheartd.engine.parts import EngineParts
from bygheartd.jobs import Job, JobStatus
from bygheartd.store.errors import StaleTransition

log = logging.getLogger(__name__)

MAX_RESUBMITS = 3
FROZEN_FACTOR = 3.0
FROZEN_MARGIN_SECONDS = 60.0
# ACE-Step reports a task unfinished an hour after its submission as failed.
SERVER_HOUR_SECONDS = 3600.0
ONE_HOUR_REASON = (
    "the server ended the task after its one-hour limit (ACE-Step reports any task unfinished "
    "an hour after submission as failed; a restart of the server while the task ran freezes it "
    "like this, so the generation itself may never have failed)"
)


def running_stage(result: TaskResult) -> bool:
    """A task that says it is being generated (not waiting in the server's queue)."""
    stage = (result.stage or "").strip().lower()
    return bool(stage) and stage != "queued" and result.progress is not None


def frozen_for(job: Job, result: TaskResult, now: datetime) -> float | None:
    """Seconds the task's progress has not moved, when it shows a running stage."""
    if not running_stage(result) or job.progress is None or result.progress is None:
        return None
    if abs(job.progress - result.progress) >= 0.01:
        return None
    since = job.progress_at or job.submitted_at
    return None if since is None else (now - since).total_seconds()


def one_hour_rule(job: Job, now: datetime) -> bool:
    """A failure reported about when the server's own one-hour limit ends a task."""
    started = job.submitted_at or job.created_at
    return (now - started).total_seconds() >= SERVER_HOUR_SECONDS - 120


class LostTasks:
    """Decides and performs the making-again of tasks a server lost."""

    def __init__(self, parts: EngineParts) -> None:
        self.parts = parts

    @property
    def enabled(self) -> bool:
        return self.parts.config.resubmit_lost

    def frozen_limit(self, expected: float | None) -> float | None:
        """How long a running task may keep one progress before it counts as lost."""
        if expected is None or expected <= 0:
            return None
        return FROZEN_FACTOR * expected + FROZEN_MARGIN_SECONDS

    async def resubmit(self, job: Job, why: str) -> bool:
        """Put a lost job back in the queue (True), or fail it past the bound (False is
        returned when it was not resubmitted, having been failed or changed meanwhile)."""
        server = job.server or "its server"
        if job.resubmits >= MAX_RESUBMITS:
            return False
        number = job.resubmits + 1
        lost_on = tuple(dict.fromkeys((*job.result.lost_on, *(s for s in [job.server] if s))))
        reason = (
            f"task {job.task_id} lost on {server}: {why}; made again "
            f"(resubmit {number} of {MAX_RESUBMITS})"
        )
        try:
            await self.parts.store.transition(
                job.id,
                JobStatus.QUEUED,
                event="resubmitted",
                reason=reason,
                expect={JobStatus.RUNNING},
                task_id=None,
                server=None,
                progress=None,
                eta_seconds=None,
                unknown_since=None,
                progress_at=None,
                submitted_at=None,
                resubmits=number,
                result=job.result.but(unknown_polls=0, lost_on=lost_on),
                engine=None,
            )
        except StaleTransition:
            return False
        log.warning("job %s (%s): %s", job.id, job.title, reason)
        self.parts.ticker.wake("submit")
        return True

    def exhausted_reason(self, job: Job, why: str) -> str:
        return (
            f"the server lost this task ({why}) and it was already made again "
            f"{job.resubmits} times ([queue] resubmit_lost allows {MAX_RESUBMITS}): check the "
            f"server {job.server or ''}, then `bygheartd retry {job.id}`"
        ).replace("server  ", "server ")
