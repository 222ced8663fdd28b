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
from bygheartd.api.errors import (
    ApiError,
    AuthError,
    RateLimited,
    bounded_wait,
    duration_words,
    poll_pause_ceiling,
)
from bygheartd.api.inventory import ran_elsewhere
from bygheartd.api.results import finite_number, keep_asked
from bygheartd.catalog import counted, credits_phrase
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
from bygheartd.jobs import SETTLING, Job, JobStatus, iso, utcnow
from bygheartd.store.errors import JobNotFound, StaleTransition, StoreError

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
# A poll error kept in a job's result (and the pool snapshot) is cut to this length.
POLL_ERROR_CHARS = 400

PollFailure = ApiError | OSError
# Up to this many tasks whose last poll failed are polled each alone (`_chunks`).
SINGLE_SUSPECTS = 8
# How long a task's result stays queryable on the server (API.md: about 7 days upstream).
# While polls cannot reach the server, a job waits this long for it, not the deadline:
# the task may well be done, and paid for, and fetched once the server answers again.
RESULT_KEPT_SECONDS = 7 * 24 * 3600.0


def _chunks(
    ids: list[str], size: int, *, suspects: set[str | None]
) -> list[tuple[list[str], bool]]:
    """The ids of one server's poll in chunks of `size`, each with whether it holds ids
    whose last poll failed (`suspects`). Those come after the others, in chunks of their
    own: each alone when there are up to SINGLE_SUSPECTS of them, else in halves (so a
    server down for all costs two requests a round, not one per task). A task whose every
    poll the server refuses (a 429, a reply that is not JSON) is so narrowed down to a poll
    of its own and never holds back the polls of the other tasks."""
    plain = [i for i in ids if i not in suspects]
    doubtful = [i for i in ids if i in suspects]
    chunks = [(plain[i : i + size], False) for i in range(0, len(plain), size)]
    if doubtful:
        part = 1 if len(doubtful) <= SINGLE_SUSPECTS else min(size, (len(doubtful) + 1) // 2)
        chunks += [(doubtful[i : i + part], True) for i in range(0, len(doubtful), part)]
    return chunks


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
        # Why polling is paused (a 429's words), while `_poll_paused_until` is ahead.
        self._pause_error: str | None = None

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
        """One batched `query_result` for every in-flight task, then adapt the interval.

        The deadline does not wait for a poll that answers: a job whose polls keep failing
        (an unreachable server, a reply that is not JSON, a 429) ends at
        `job_deadline_seconds` like any other, with the last poll error in its reason."""
        if self.parts.stopping:
            return
        now = utcnow()
        paused_until = self._poll_paused_until
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
        if not running:
            self.parts.pool.polls_idle()
        if not running and not settling:
            return
        if paused_until is not None and now < paused_until:  # a 429's pause: deadlines only
            if await self._past_deadline(running, now, unreachable=True):
                self._on_finished()
            left = (paused_until - now).total_seconds()
            self.parts.ticker.reschedule("poll", max(0.05, left + 0.05))  # polled at its end
            return
        for job in running:
            self._track(job)
        finished = 0
        await self._refresh_server_average(now)  # at most once a minute, once per round
        answered: set[str] = set()
        failed: dict[str, PollFailure] = {}  # job id: why its poll failed this round

        async def take(part: dict[str, TaskResult]) -> None:
            nonlocal finished
            answered.update(part)
            finished += await self._take(part, running, settling, now)

        error: PollFailure | None = None
        try:
            await self._query_by_server(running + settling, take, failed)
        except RateLimited as exc:
            error = exc
            self._pause(exc, now)
        except (ApiError, OSError) as exc:
            error = exc
            log.warning("poll failed (%s); trying again later", exc)
        unanswered = [j for j in running if j.id not in answered]
        for job in unanswered:
            if error is not None:
                failed.setdefault(job.id, error)
        trouble = [j for j in unanswered if j.id in failed]
        await self._note_failures(trouble, failed, now)
        # Past the deadline a task ends on what the server answered (nothing about it, or
        # a reply that cannot be read); one whose polls reach no server waits for it.
        answered_badly = [j for j in unanswered if not _unreachable(failed.get(j.id))]
        cut_off = [j for j in unanswered if _unreachable(failed.get(j.id))]
        ended = await self._past_deadline(answered_badly, now)
        ended += await self._past_deadline(cut_off, now, unreachable=True)
        if ended:
            self._on_finished()
        if error is not None:
            if not isinstance(error, RateLimited):
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
        mine = [await self._answered(j) for j in running if j.id in part]
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

    async def _answered(self, job: Job) -> Job:
        """A poll answered for this job: a stretch of failing polls is over."""
        if job.result.poll_error is None:
            return job
        cleared = job.result.but(poll_error=None, poll_failing_since=None, polls_paused_until=None)
        try:
            return await self.parts.store.update(job.id, expect={JobStatus.RUNNING}, result=cleared)
        except StaleTransition:
            return job

    async def _query_by_server(
        self,
        jobs: list[Job],
        take: Callable[[dict[str, TaskResult]], Awaitable[None]],
        failed: dict[str, PollFailure] | None = None,
    ) -> None:
        """Batched `query_result` calls, every server at once and up to CHUNKS_AT_ONCE chunks
        of one server at once; each chunk's results (by job id) go to `take` as it answers.

        A task is known only to the server that holds it. Each chunk is its own exchange,
        bounded by `[api] timeout_seconds`, so a reply that hangs holds back only the ids in
        its chunk. A server that answers a 429 gets no more chunks this round but those of
        tasks whose last poll failed (`_chunks`: each alone, to find the one the server
        refuses). With a pool, a server none of whose chunks answered is marked down and its
        tasks wait for the next poll, while the other servers' tasks go on; with one server
        that answered no chunk, the first error is raised (a rate limit first) once every
        chunk has ended. Why each unanswered job got no answer goes into `failed`.
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

            def blame(wanted: list[str], exc: PollFailure) -> None:
                if failed is not None:  # why these jobs got no answer this round
                    for job in group:
                        if job.task_id in wanted:
                            failed.setdefault(job.id, exc)

            async def chunk(wanted: list[str], suspect: bool) -> None:
                nonlocal answered
                async with gate:
                    limited = next((f for f in failures if isinstance(f, RateLimited)), None)
                    if limited is not None and not suspect:
                        blame(wanted, limited)
                        return  # asked to slow down: these wait for the next round
                    try:
                        found = await client.query(wanted, chunk_size=len(wanted))
                    except (ApiError, OSError) as exc:
                        failures.append(exc)
                        blame(wanted, exc)
                        return
                answered += 1
                await take({j.id: found[j.task_id] for j in group if j.task_id in found})

            suspects = {j.task_id for j in group if j.result.poll_error is not None}
            chunks = _chunks(ids, size, suspects=suspects)
            await asyncio.gather(*(chunk(c, suspect) for c, suspect in chunks))
            if answered and not failures:
                pool.polls_answered(server)
            self._judge_server(server, answered, failures)

        await asyncio.gather(*(one(s, g) for s, g in groups.items()))

    def _pause(self, exc: RateLimited, now: datetime) -> None:
        """A poll's 429: polling pauses for the server's `Retry-After`, but polls are free
        and tasks finish meanwhile, so a few poll intervals at most (`poll_pause_ceiling`),
        and the deadlines are still looked at while it lasts."""
        q = self.parts.config.queue
        asked, note = bounded_wait(exc.retry_after, poll_pause_ceiling(q.poll_max_seconds))
        wait = asked if asked is not None else min(self._poll_interval * 2, q.poll_max_seconds)
        wait = max(wait, q.poll_min_seconds)
        self._poll_paused_until = now + timedelta(seconds=wait)
        self._pause_error = f"{exc}" + (f" ({note})" if note else "")
        log.warning(
            "polling rate limited; polling paused until %s (%.0f s)%s",
            iso(self._poll_paused_until),
            wait,
            f": {note}" if note else "",
        )
        self.parts.ticker.reschedule("poll", wait)

    async def _note_failures(
        self, jobs: list[Job], failed: dict[str, PollFailure], now: datetime
    ) -> None:
        """What `show` and `status` say of polls that fail: since when, the last error and
        until when a 429 paused them; written only when it changes."""
        paused = self._poll_paused_until
        if paused is not None and paused <= now:
            paused = None
        for job in jobs:
            exc = failed[job.id]
            error = str(exc) or type(exc).__name__
            if isinstance(exc, RateLimited) and paused is not None and self._pause_error:
                error = self._pause_error
            error = error[:POLL_ERROR_CHARS]
            still = paused if isinstance(exc, RateLimited) else None
            self.parts.pool.polls_failed(
                job.server if self.parts.pool.pooled else None,
                error,
                None if still is None else still.timestamp(),
            )
            result = job.result
            if (
                result.poll_error == error
                and result.polls_paused_until == still
                and result.poll_failing_since is not None
            ):
                continue
            changed = result.but(
                poll_error=error,
                poll_failing_since=result.poll_failing_since or now,
                polls_paused_until=still,
            )
            with contextlib.suppress(StaleTransition):  # it moved on meanwhile
                await self.parts.store.update(job.id, expect={JobStatus.RUNNING}, result=changed)

    async def _past_deadline(
        self, jobs: list[Job], now: datetime, *, unreachable: bool = False
    ) -> int:
        """Fail the jobs past `job_deadline_seconds` that no poll answered for: a server
        that answers garbage keeps no job running for ever. How many. `unreachable`: their
        polls reached no server that answered (no connection, a 5xx, a 401, a 429's pause):
        the network or the key, not the task, so they wait as long as the server keeps
        results (`RESULT_KEPT_SECONDS`), and are fetched once it answers again."""
        limit = self.parts.config.queue.job_deadline_seconds
        if unreachable:
            limit = max(limit, RESULT_KEPT_SECONDS)
        ended = 0
        for job in jobs:
            started = job.submitted_at or job.created_at
            elapsed = (now - started).total_seconds()
            if elapsed <= limit:
                continue
            current = job
            with contextlib.suppress(JobNotFound, StoreError):  # its freshest poll error
                current = await self.parts.store.get(job.id)
            if current.status is not JobStatus.RUNNING:
                continue
            reason = f"no result after {duration_words(elapsed)} (job_deadline_seconds)"
            if unreachable:
                reason = (
                    f"no answer from the server for {duration_words(elapsed)}, past the "
                    "time it keeps results (about 7 days)"
                )
            result = current.result
            if result.poll_error is not None:
                since = iso(result.poll_failing_since) or "?"
                reason += f"; its polls failed since {since}: {result.poll_error}"
            if await self.lifecycle.fail(current, reason, refund=False) is not None:
                self.predictor.finished(job.id, now.timestamp(), succeeded=False)
                ended += 1
        return ended

    def _judge_server(
        self, server: str | None, answered: int, failures: list[ApiError | OSError]
    ) -> None:
        """A server's health after its chunks of one round: up when any chunk answered.
        With one server and no chunk answered, its error is raised (a rate limit first):
        a 429 then pauses polling, while one that only some chunks got concerns their
        tasks alone (each kept in the job, `_note_failures`)."""
        pool = self.parts.pool
        if failures and not pool.pooled and not answered:
            raise next((f for f in failures if isinstance(f, RateLimited)), failures[0])
        if failures:
            log.warning(
                "poll of %s: %d chunk(s) failed (%s); trying again later",
                server or pool.default_url(),
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
        average = finite_number((stats or {}).get("avg_job_seconds"))
        if average is not None and average > 0:
            self.typical_seconds = average
            self.predictor.server_average = average

    def _observe_generation(self, job: Job, now: datetime) -> None:
        if job.submitted_at is None:
            return
        took = (now - job.submitted_at).total_seconds()
        self.parts.pool.observe(job.server, took)
        previous = self.typical_seconds
        self.typical_seconds = took if previous is None else 0.8 * previous + 0.2 * took

    async def _takes_asked(self, job: Job) -> int | None:
        """The `batch_size` the job's submission asked for (None: not known)."""
        asked = (await self.parts.store.api_body(job.id)).get("batch_size")
        return asked if isinstance(asked, int) and not isinstance(asked, bool) else None

    async def _apply(self, job: Job, result: TaskResult, now: datetime) -> bool:
        """Act on one task's answer; True when the job left `running`."""
        if result.state is TaskState.SUCCEEDED and result.outputs:
            self._observe_generation(job, now)
            self.predictor.finished(job.id, self._answered_at or now.timestamp())
            # More files than takes asked (a hostile or broken server): the first ones.
            takes, extra = keep_asked(tuple(result.outputs), await self._takes_asked(job))
            notes = [*result.notes, *([extra] if extra else [])]
            for note in notes:
                log.warning("job %s (%s): %s", job.id, job.title, note)
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
                    reason=f"{counted(len(takes), 'file')} ready",
                    expect={JobStatus.RUNNING},
                    result=job.result.with_takes(takes),
                    progress=1.0,
                    eta_seconds=None,
                    warnings=[*job.warnings, *notes, *([elsewhere] if elsewhere else [])],
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
                f"no result after {duration_words(elapsed)} (job_deadline_seconds)",
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


def _unreachable(failure: PollFailure | None) -> bool:
    """Whether a poll's failure says nothing about the task: the exchange reached no server
    that answered it (no connection, a timeout, a 5xx, a 401/403 for the key, a 429)."""
    if failure is None:
        return False
    if isinstance(failure, AuthError | RateLimited):
        return True
    return down_reason(failure) is not None
