"""The poll stage: one batched `query_result` for every in-flight task, at an interval
that starts short after a submit and grows while tasks run; and the client-side limits
(`"[]"` answers, the job deadline) that end tasks the server forgot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bygheartd.api.client import TaskResult, TaskState
from bygheartd.api.errors import ApiError, RateLimited
from bygheartd.api.inventory import ran_elsewhere
from bygheartd.catalog import credits_phrase
from bygheartd.engine.budget import is_retake
from bygheartd.engine.delivery import Delivery
from bygheartd.engine.lifecycle import Lifecycle
from bygheartd.engine.lost import (
    MAX_RESUBMITS,
    ONE_HOUR_REASON,
    LostTasks,
    frozen_for,
    one_hour_rule,
    running_stage,
)
from bygheartd.engine.parts import EngineParts
from bygheartd.engine.pool import ServerState, down_reason
from bygheartd.engine.prediction import Predictor, poll_delay
from bygheartd.jobs import SETTLING, Job, JobStatus, utcnow
from bygheartd.store.errors import StaleTransition

log = logging.getLogger(__name__)

# A poll goes out when the first in-flight task is done with this probability, and waits up
# to GATHER_SECONDS longer when that also catches the next ones (prediction.py).
POLL_CONFIDENCE = 0.98
GATHER_SECONDS = 1.0
# However sure a prediction is, polls stay this far apart (or poll_min_seconds if shorter).
PREDICTED_POLL_FLOOR = 0.5
# Chunks (`[queue] poll_batch` ids each) of one server's poll in flight at once: a chunk
# whose reply hangs holds back only its own ids, and a server is not flooded either.
CHUNKS_AT_ONCE = 4


class Poller:
    """Batched polls of every task in flight, timed to when they should be done."""

    def __init__(
        self,
        parts: EngineParts,
        delivery: Delivery,
        lifecycle: Lifecycle,
        on_finished: Callable[[], None],
    ) -> None:
        self.parts = parts
        self.delivery = delivery
        self.lifecycle = lifecycle
        self._on_finished = on_finished
        self._poll_interval = parts.config.queue.poll_min_seconds
        self._poll_paused_until: datetime | None = None
        # How long a generation typically takes: observed here, or ACE-Step's own average.
        self.typical_seconds: float | None = None
        self._stats_checked = 0.0
        self.lost = LostTasks(parts)
        # When each in-flight task should finish; starts from the store's finished jobs.
        self.predictor = Predictor()
        self._expected_done = 0  # how many tasks the planned poll should find done
        self._misses = 0  # polls in a row that found none of those
        self._answered_at: float | None = None  # epoch seconds of the last poll's answer

    async def load_history(self) -> None:
        """At start: predictions begin from the store's finished jobs."""
        for model, duration, seconds in await self.parts.store.recent_generations():
            self.predictor.history.add(model, duration, seconds)

    async def poll_soon(self, job: Job | None = None, queue_position: int | None = None) -> None:
        """After a submit: poll soon, or when the first task is expected to be done."""
        if job is not None and job.submitted_at is not None:
            # An ACE-Step server generates one task at a time: the tasks ahead of this one
            # each take about a generation. The hosted service runs many at once, so its
            # position says little about the wait (and the simulator's even less).
            if self.parts.config.backend != "acestep":
                queue_position = None
            duration = job.request.get("duration")
            self.predictor.submitted(
                job.id,
                job.submitted_at.timestamp(),
                model=job.model,
                duration=float(duration) if isinstance(duration, int | float) else None,
                queue_position=queue_position,
            )
        running = await self.parts.store.list_jobs(
            [JobStatus.RUNNING], summary=True, engine=self.parts.engine_id
        )
        self._plan_next_poll(running, after_submit=True)

    def _track(self, job: Job) -> None:
        """A running job the predictor has not seen submitted (a restart): from the store."""
        if job.submitted_at is not None and job.id not in self.predictor.tracks:
            duration = job.request.get("duration")
            self.predictor.ensure(
                job.id,
                job.submitted_at.timestamp(),
                model=job.model,
                duration=float(duration) if isinstance(duration, int | float) else None,
            )

    def _plan_next_poll(self, running: list[Job], *, after_submit: bool = False) -> None:
        """One poll for all, when the first in-flight task is likely done (prediction.py);
        tasks with no prediction yet (nothing known of their model, no progress seen) keep
        the plain interval: short right after a submit, growing to poll_max_seconds."""
        q = self.parts.config.queue
        for job in running:
            self._track(job)
        keys = [j.id for j in running if j.submitted_at is not None]
        if running:  # after a failed poll (no list): keep what the last ones saw
            self.predictor.keep_only(keys)
        now = utcnow().timestamp()
        predicted, self._expected_done = self.predictor.plan(
            now,
            keys,
            confidence=POLL_CONFIDENCE,
            gather_seconds=GATHER_SECONDS,
            look_after=q.poll_min_seconds,
        )
        unpredicted: float | None = None
        if predicted is None or any(self.predictor.estimate(k) is None for k in keys):
            grown = q.poll_min_seconds if after_submit else self._poll_interval * 1.5
            unpredicted = min(q.poll_max_seconds, max(q.poll_min_seconds, grown))
            self._poll_interval = unpredicted
        interval = poll_delay(
            predicted,
            unpredicted,
            floor=min(q.poll_min_seconds, PREDICTED_POLL_FLOOR),
            ceiling=q.poll_max_seconds,
            misses=self._misses,
        )
        log.debug(
            "next poll in %.2f s (%d task(s) expected done, %d in flight)",
            interval,
            self._expected_done,
            len(keys),
        )
        self.parts.ticker.reschedule("poll", interval)

    async def poll_due(self) -> None:
        """One batched `query_result` for every in-flight task, then adapt the interval."""
        if self.parts.stopping:
            return
        now = utcnow()
        if self._poll_paused_until is not None and now < self._poll_paused_until:
            return
        mine = self.parts.engine_id  # jobs another engine holds are that engine's to poll
        running = [
            j
            for j in await self.parts.store.list_jobs([JobStatus.RUNNING], engine=mine)
            if j.task_id
        ]
        settling = [
            j
            for j in await self.parts.store.find_by("hold_kind", SETTLING)
            if j.status is JobStatus.CANCELLED and j.task_id and j.engine in (mine, None)
        ]
        if not running and not settling:
            return
        for job in running:
            self._track(job)
        finished = 0
        await self._refresh_server_average(now)  # at most once a minute, once per round

        async def take(part: dict[str, TaskResult]) -> None:
            nonlocal finished
            finished += await self._take(part, running, settling, now)

        try:
            await self._query_by_server(running + settling, take)
        except RateLimited as exc:
            wait = exc.retry_after or self._poll_interval * 2
            self._poll_paused_until = now + timedelta(seconds=wait)
            log.warning("polling rate limited; next poll in %.0f s", wait)
            return
        except (ApiError, OSError) as exc:
            log.warning("poll failed (%s); trying again later", exc)
            self._plan_next_poll([])
            return
        # A poll the predictions timed that found nothing done: the next one backs off.
        self._misses = self._misses + 1 if self._expected_done and not finished else 0
        still = [
            j
            for j in await self.parts.store.list_jobs(
                [JobStatus.RUNNING], summary=True, engine=self.parts.engine_id
            )
            if j.task_id
        ]
        self._plan_next_poll(still)

    async def _take(
        self,
        part: dict[str, TaskResult],
        running: list[Job],
        settling: list[Job],
        now: datetime,
    ) -> int:
        """One chunk's answers, acted on as they come rather than when the round's slowest
        chunk does; how many of its jobs left `running`."""
        # The server read its progress while answering, between the send and the reply:
        # stamped at the send, every task would look faster than it is by up to the
        # round trip, and the predictions early (a loaded machine, a distant server).
        answered_at = (now.timestamp() + utcnow().timestamp()) / 2
        mine = [j for j in running if j.id in part]
        lost = await self._lost_frozen(mine, part, now)
        self._answered_at = answered_at  # no await from here on: the other chunks wait
        finished = len(lost)
        for job in mine:
            if job.id not in lost and await self._apply(job, part[job.id], now):
                finished += 1
        for job in settling:
            result = part.get(job.id)
            if result is not None:
                await self._settle(job, result, now)
        if finished:
            self._on_finished()
        return finished

    async def _query_by_server(
        self, jobs: list[Job], take: Callable[[dict[str, TaskResult]], Awaitable[None]]
    ) -> None:
        """Batched `query_result` calls, every server at once and up to CHUNKS_AT_ONCE chunks
        of one server at once; each chunk's results (by job id) go to `take` as it answers.

        A task is known only to the server that holds it. Each chunk is its own exchange,
        bounded by `[api] timeout_seconds`, so a reply that hangs holds back only the ids in
        its chunk. A server that answers a 429 gets no more chunks this round. With a pool,
        a server none of whose chunks answered is marked down and its tasks wait for the
        next poll, while the other servers' tasks go on; with one server the first error is
        raised (a rate limit first) once every chunk has ended.
        """
        pool = self.parts.pool
        groups: dict[str | None, list[Job]] = {}
        for job in jobs:
            groups.setdefault(job.server if pool.pooled else None, []).append(job)
        size = self.parts.config.queue.poll_batch

        async def one(server: str | None, group: list[Job]) -> None:
            ids = list(dict.fromkeys(j.task_id for j in group if j.task_id))
            client = pool.client_for(server)
            gate = asyncio.Semaphore(CHUNKS_AT_ONCE)
            failures: list[ApiError | OSError] = []
            answered = 0

            async def chunk(wanted: list[str]) -> None:
                nonlocal answered
                async with gate:
                    if any(isinstance(f, RateLimited) for f in failures):
                        return  # asked to slow down: these wait for the next round
                    try:
                        found = await client.query(wanted, chunk_size=len(wanted))
                    except (ApiError, OSError) as exc:
                        failures.append(exc)
                        return
                answered += 1
                await take({j.id: found[j.task_id] for j in group if j.task_id in found})

            chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
            await asyncio.gather(*(chunk(c) for c in chunks))
            self._judge_server(server, answered, failures)

        await asyncio.gather(*(one(s, g) for s, g in groups.items()))

    def _judge_server(
        self, server: str | None, answered: int, failures: list[ApiError | OSError]
    ) -> None:
        """A server's health after its chunks of one round: up when any chunk answered."""
        pool = self.parts.pool
        if failures and not pool.pooled:
            raise next((f for f in failures if isinstance(f, RateLimited)), failures[0])
        if failures:
            log.warning(
                "poll of %s: %d chunk(s) failed (%s); trying again later",
                server,
                len(failures),
                failures[0],
            )
        state = pool.state(server) if pool.pooled else None
        if state is None:
            return
        if not answered:
            reason = next((r for r in map(down_reason, failures) if r is not None), None)
            if reason is not None:
                pool.mark_down(server, reason)
        elif not state.healthy and pool.unreadable_key(server) is None:
            pool.mark_up(state)  # it answers again: back in the pool at once

    async def _lost_frozen(
        self, running: list[Job], results: dict[str, TaskResult], now: datetime
    ) -> set[str]:
        """Running tasks frozen at one progress that their server provably lost (see
        `lost.py`): made again, or failed once made again too often. Their job ids."""
        if not self.lost.enabled:
            return set()
        grace = self.parts.config.queue.unknown_grace_seconds
        fresh: dict[str | None, ServerState | None] = {}
        handled: set[str] = set()
        for job in running:
            result = results.get(job.id)
            if result is None or result.state is not TaskState.QUEUED_OR_RUNNING:
                continue
            still = frozen_for(job, result, now)
            if still is None:
                continue
            state = self.parts.pool.state(job.server)
            expected = (state.expected_seconds() if state else None) or self.typical_seconds
            limit = self.lost.frozen_limit(expected)
            shown = f"{result.stage!r} at {100 * (result.progress or 0):.0f}%"
            why: str | None = None
            if limit is not None and expected is not None and still > limit:
                why = (
                    f"it showed {shown} unchanged for {still:.0f} s, over 3x the expected "
                    f"{expected:.0f} s + 60 s"
                )
            elif still >= grace:
                if job.server not in fresh:
                    fresh[job.server] = await self.parts.pool.fresh_stats(job.server)
                stats = fresh[job.server]
                if stats is not None and stats.running == 0:
                    why = (
                        f"the server runs nothing (/v1/stats: 0 running) while the task "
                        f"showed {shown}, unchanged for {still:.0f} s (a restart froze it)"
                    )
            if why is None:
                continue
            handled.add(job.id)
            if job.resubmits >= MAX_RESUBMITS:
                await self.lifecycle.fail(job, self.lost.exhausted_reason(job, why), refund=False)
            else:
                await self.lost.resubmit(job, why)
        return handled

    async def _settle(self, job: Job, result: TaskResult, now: datetime) -> None:
        """A cancelled job's task ended on the server: bring the ledger in line with it."""
        started = job.submitted_at or job.created_at
        overdue = (now - started).total_seconds() > self.parts.config.queue.job_deadline_seconds
        if result.state is TaskState.FAILED:
            refunded = await self.parts.budget.refund(job.id, job.model, retake=is_retake(job))
            outcome = f"failed on the server after the cancel: {credits_phrase(refunded)} back"
        elif result.state is TaskState.SUCCEEDED:
            outcome = "the server finished it after the cancel (charged, not downloaded)"
        elif result.state is TaskState.UNKNOWN or overdue:
            outcome = "the server no longer reports it; its credits stay counted"
        else:
            return
        try:
            await self.parts.store.update(job.id, expect={JobStatus.CANCELLED}, hold_kind=None)
        except StaleTransition:
            return  # retried meanwhile: a new submission, nothing to settle
        await self.parts.store.add_event(job.id, "settled", outcome)

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
            self.predictor.server_average = float(average)

    def _observe_generation(self, job: Job, now: datetime) -> None:
        if job.submitted_at is None:
            return
        took = (now - job.submitted_at).total_seconds()
        self.parts.pool.observe(job.server, took)
        previous = self.typical_seconds
        self.typical_seconds = took if previous is None else 0.8 * previous + 0.2 * took

    async def _apply(self, job: Job, result: TaskResult, now: datetime) -> bool:
        """Act on one task's answer; True when the job left `running`."""
        if result.state is TaskState.SUCCEEDED and result.outputs:
            self._observe_generation(job, now)
            self.predictor.finished(job.id, self._answered_at or now.timestamp())
            takes = tuple(result.outputs)
            # An ACE-Step server runs its slot 1 when the model asked for is not loaded; the
            # hosted API names its own models, which no `dit_model` it reports ever equals.
            elsewhere = (
                ran_elsewhere(job.model, takes) if self.parts.config.backend == "acestep" else None
            )
            try:
                job = await self.parts.store.transition(
                    job.id,
                    JobStatus.DOWNLOADING,
                    event="generated",
                    reason=f"{len(takes)} file(s) ready",
                    expect={JobStatus.RUNNING},
                    result=job.result.with_takes(takes),
                    progress=1.0,
                    eta_seconds=None,
                    warnings=[*job.warnings, *([elsewhere] if elsewhere else [])],
                )
            except StaleTransition:
                return True
            self.delivery.start(job)
            return True
        if result.state in (TaskState.FAILED, TaskState.SUCCEEDED):  # no file: a failure
            if self.parts.config.backend == "acestep" and one_hour_rule(job, now):
                await self.lifecycle.fail(job, ONE_HOUR_REASON, refund=False)
                return True
            await self.lifecycle.fail(
                job, "the generation failed on the server (it gives no reason)"
            )
            return True
        deadline = job.submitted_at or job.created_at
        elapsed = (now - deadline).total_seconds()
        if elapsed > self.parts.config.queue.job_deadline_seconds:
            await self.lifecycle.fail(
                job,
                f"no result after {elapsed / 60:.0f} minutes (job_deadline_seconds)",
                refund=False,
            )
            return True
        # Looked at: "[]" is status 0 too (unknown, or not yet known), without a progress.
        self.predictor.sighted(
            job.id, result.progress, result.stage, self._answered_at or now.timestamp()
        )
        if result.state is TaskState.UNKNOWN:
            return await self._unknown(job, now)
        updates: dict[str, Any] = {}
        if job.result.unknown_polls or job.unknown_since is not None:
            # Known again: a later stretch of "[]" starts its own grace period.
            updates["unknown_since"] = None
            updates["result"] = job.result.but(unknown_polls=0)
        if result.progress is not None and abs((job.progress or 0) - result.progress) >= 0.01:
            updates["progress"] = result.progress
            updates["progress_at"] = now
        elif job.progress_at is None and running_stage(result):
            updates["progress_at"] = now  # generating from here: frozen counts from now
        eta = self._eta(elapsed, result.progress, job.id, now)
        if eta is not None and (job.eta_seconds is None or abs(job.eta_seconds - eta) >= 1.0):
            updates["eta_seconds"] = eta
        if updates:
            with contextlib.suppress(StaleTransition):  # cancelled meanwhile
                await self.parts.store.update(job.id, expect={JobStatus.RUNNING}, **updates)
        return False

    def _eta(
        self,
        elapsed: float,
        progress: float | None,
        key: str | None = None,
        now: datetime | None = None,
    ) -> float | None:
        """Seconds left: the prediction (progress and history), else the progress alone."""
        finish = self.predictor.estimate(key) if key is not None else None
        if finish is not None and now is not None:
            return round(max(0.0, finish.expected - now.timestamp()), 1)
        if progress is not None and progress > 0.05:
            return round(elapsed * (1 - progress) / progress, 1)
        if self.typical_seconds is not None:
            return round(max(0.0, self.typical_seconds - elapsed), 1)
        return None

    async def _unknown(self, job: Job, now: datetime) -> bool:
        """`"[]"` means unknown, expired or lost: tolerate it for a while, never forever."""
        polls = job.result.unknown_polls + 1
        since = job.unknown_since
        since_ts = (since or now).timestamp()
        if (
            polls >= 3
            and now.timestamp() - since_ts >= self.parts.config.queue.unknown_grace_seconds
        ):
            why = f"it answered '[]' for {now.timestamp() - since_ts:.0f} s"
            if self.lost.enabled and job.resubmits < MAX_RESUBMITS:
                await self.lost.resubmit(job, why)
                return True
            if self.lost.enabled:
                await self.lifecycle.fail(job, self.lost.exhausted_reason(job, why), refund=False)
                return True
            await self.lifecycle.fail(
                job,
                "the server no longer knows this task (it answered '[]' for "
                f"{now.timestamp() - since_ts:.0f} s)",
                refund=False,
            )
            return True
        with contextlib.suppress(StaleTransition):  # cancelled meanwhile
            await self.parts.store.update(
                job.id,
                expect={JobStatus.RUNNING},
                unknown_since=datetime.fromtimestamp(since_ts, UTC),
                result=job.result.but(unknown_polls=polls),
            )
        return False
