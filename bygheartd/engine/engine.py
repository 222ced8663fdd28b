"""The engine: moves jobs from `queued` to `done` against the API, one per state folder.

It owns the submit stage and the holds; polling lives in `polling.py`, downloads and
post-processing in `delivery.py`. apscheduler triggers the ticks, but every decision is
read back from the store, so a restart (or a `kill -9`) resumes exactly where the store
says the work stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bygheartd.api.client import BygheartClient
from bygheartd.api.errors import (
    MAX_CREDIT_WAIT_SECONDS,
    MAX_RETRY_AFTER_SECONDS,
    ApiError,
    AuthError,
    ProtocolError,
    RateLimited,
    RejectedError,
    TransientError,
    bounded_wait,
)
from bygheartd.catalog import counted
from bygheartd.config import Config, LiveConfig
from bygheartd.engine.budget import Budget
from bygheartd.engine.delivery import Delivery, disk_wait_seconds, output_problem
from bygheartd.engine.lifecycle import Lifecycle
from bygheartd.engine.parts import EngineParts
from bygheartd.engine.polling import Poller
from bygheartd.engine.pool import ServerPool, down_reason, model_needed
from bygheartd.engine.ticker import Ticker
from bygheartd.errors import BygheartdError, PluginError, RejectJob
from bygheartd.hooks.host import PluginHost
from bygheartd.jobs import HoldKind, Job, JobStatus, utcnow
from bygheartd.songs.request import RequestRules, SongRequest
from bygheartd.store.boundary import JobStore
from bygheartd.store.engines import EngineInfo
from bygheartd.store.errors import (
    JobNotFound,
    OverBudget,
    ServerFull,
    StaleTransition,
    StoreError,
)

log = logging.getLogger(__name__)

UNKNOWN_OUTCOME = "submission outcome unknown"
# Duties one engine on a shared store does at a time (`JobStore.lead`).
RELEASE_DUTY = "daily-release"
AUTH_RECHECK_SECONDS = 600.0
STORE_WATCH_SECONDS = 0.25
# At most this many jobs waiting for a server with their model are looked past per submit.
MAX_MODEL_WAITING = 100


@dataclass
class _SubmitStep:
    """How far one submit got, for the error path (`Engine._rescue`): whether the POST
    went out, the error the server answered with (then nothing was created, unless the
    answer itself was unreadable or lost), and the task id once one exists."""

    sent: bool = False
    answer: ApiError | None = None
    task_id: str | None = None

    @property
    def nothing_made(self) -> bool:
        """True when provably no task exists: never sent, or refused by a readable answer
        (a 429, 401, 4xx, a gateway's 5xx)."""
        if not self.sent:
            return True
        answer = self.answer
        if answer is None or isinstance(answer, ProtocolError):
            return False
        return not (isinstance(answer, TransientError) and answer.outcome_unknown)


class Engine:
    def __init__(
        self,
        config: Config | LiveConfig,
        store: JobStore,
        client: BygheartClient,
        plugins: PluginHost | None = None,
        *,
        on_change: Callable[[], None] | None = None,
        role: str = "engine",
    ) -> None:
        live = LiveConfig.of(config)
        self.info = EngineInfo.new(role, live.current.store.lease_seconds)
        self.parts = EngineParts(
            live=live,
            store=store,
            client=client,
            plugins=plugins,
            budget=Budget(live, store),
            ticker=Ticker(),
            pool=ServerPool(live, store, lambda: self.parts.client),
            engine_id=self.info.id,
        )
        self.parts.pool.engine_id = self.info.id
        self.store = store
        self.lifecycle = Lifecycle(
            live,
            store,
            self.parts.budget,
            plugins=lambda: self.parts.plugins,
            schedule_release=self._schedule_release,
            engine_id=self.info.id,
        )
        self.delivery = Delivery(self.parts, self.lifecycle)
        self.lifecycle.on_processing = self.delivery.start  # a failed retake's song
        self._on_change = on_change
        self.poller = Poller(self.parts, self.delivery, self.lifecycle, self._finished)
        self._submit_paused_until: datetime | None = None
        # Jobs that waited at the last submit for a server with their model (`submit_due`).
        self._model_waiting = 0
        self._data_version = -1
        self._submitting: set[asyncio.Task[None]] = set()

    @property
    def config(self) -> Config:
        return self.parts.config

    @property
    def client(self) -> BygheartClient:
        return self.parts.client

    @property
    def plugins(self) -> PluginHost | None:
        return self.parts.plugins

    @property
    def budget(self) -> Budget:
        return self.parts.budget

    @property
    def ticker(self) -> Ticker:
        return self.parts.ticker

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Register on the store, take over what no live engine holds, rebuild everything
        else from the store, then start the ticks."""
        await self.store.register_engine(self.info, self.config.store.lease_seconds)
        # PostgreSQL pushes the work other processes commit; SQLite is polled (store-watch).
        pushed = self.store.on_work(self._work_arrived)
        # SQLite: the lock file says every earlier engine is gone. PostgreSQL: only those
        # whose lease ran out; the live ones keep theirs.
        adopted = await self.store.adopt_jobs(
            self.info.id, everyone_else=not self.config.store.shared
        )
        await self._take_over(adopted)
        await self.poller.load_history()
        self.parts.pool.sync()
        q = self.config.queue
        self.ticker.every("submit", max(0.5, q.poll_min_seconds), self.submit_due)
        self.ticker.every("poll", q.poll_min_seconds, self.poller.poll_due, start_now=True)
        if not pushed:
            self.ticker.every("store-watch", STORE_WATCH_SECONDS, self._watch_store)
        self.ticker.every("release-held", 30.0, self.release_due)
        # Probe down servers, refresh healthy ones' stats, publish the pool's state.
        self.ticker.every("pool", max(0.2, q.poll_min_seconds), self._tend_pool)
        lease = self.config.store.lease_seconds
        self.ticker.every("lease", max(0.5, lease / 3), self._tend_lease, start_now=False)
        for job in adopted:
            if job.status in (JobStatus.DOWNLOADING, JobStatus.PROCESSING):
                self.delivery.start(job)
        self.ticker.start()
        # A key fixed while we were stopped (the usual way: edit the file, restart the
        # service) is tried at once, not when the old key's hold would have ended.
        await self.recheck_auth()
        log.info("engine started: %s", await self.describe_counts())
        if self.config.backend == "acestep":
            await self._log_server_health()

    async def _log_server_health(self) -> None:
        """A self-hosted server says whether its models are loaded: worth a line at start
        (one per server of a pool, which also learns at once which servers are down)."""
        if self.parts.pool.pooled:
            await self._tend_pool()
        for state in self.parts.pool.states():
            if self.parts.pool.unreadable_key(state.url):
                continue  # said once already, with the fix; not asked without its key
            client = self.parts.pool.client_for(state.url)
            try:
                health = await client.health()
            except (ApiError, OSError) as exc:
                log.warning("ACE-Step server at %s: %s", client.base_url, exc)
                continue
            if health is None:
                log.info("ACE-Step server at %s has no /health endpoint", client.base_url)
            else:
                log.info(
                    "ACE-Step server at %s: %s, model %s, models initialized: %s",
                    client.base_url,
                    health.get("status"),
                    health.get("loaded_model"),
                    health.get("models_initialized"),
                )

    async def _tend_pool(self) -> None:
        if self.parts.stopping:
            return
        before = {s.url for s in self.parts.pool.states() if s.healthy and not s.models_pending}
        await self.parts.pool.tend()
        after = {s.url for s in self.parts.pool.states() if s.healthy and not s.models_pending}
        # A server came back, or has loaded its models now (the songs that waited for its
        # inventory): it has room for queued songs.
        if after - before:
            self.ticker.wake("submit")

    async def stop(self, drain_seconds: float = 10.0) -> dict[str, int]:
        """Stop ticking, let submissions and downloads in flight finish within a bound."""
        self.parts.stopping = True
        self.ticker.shutdown()
        submits = list(self._submitting)
        if submits:
            # A POST cut off mid-flight has an unknown outcome (the job would fail as such):
            # give submissions up to one request timeout, however short the drain.
            bound = max(drain_seconds, self.config.api.timeout_seconds + 2)
            log.info("waiting up to %.0f s for %d submission(s) in flight", bound, len(submits))
            await asyncio.wait(submits, timeout=bound)
        pending = [t for t in submits if not t.done()] + self.delivery.tasks()
        if pending:
            log.info("draining %d task(s) for up to %.0f s", len(pending), drain_seconds)
            _, still = await asyncio.wait(pending, timeout=drain_seconds)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=2.0)
        # Plugin notifications (on_done, on_failed, on_held) finish too, within the bound.
        await self.lifecycle.drain(drain_seconds)
        await self.parts.pool.write_snapshot(force=True)
        # Its jobs keep naming it: the next engine (this folder's next start, or another
        # daemon on a shared store) takes them over at once, with no lease to wait out.
        await self.store.retire_engine(self.info.id)
        await self.store.checkpoint()
        return await self.store.counts()

    def use(self, client: BygheartClient, plugins: PluginHost | None = None) -> None:
        """After a reload: the next request goes out with the new key (and the next hook
        call reaches the reloaded plugins); the config itself is read from its holder."""
        self.parts.client = client
        self.parts.pool.reset_clients()
        if plugins is not None:
            self.parts.plugins = plugins

    async def describe_counts(self) -> str:
        counts = await self.store.counts()
        return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no jobs"

    async def _take_over(self, adopted: list[Job]) -> None:
        """Jobs of an engine that is gone: a job left in `submitting` may or may not exist
        on the server, so it gets the crash rule (never a guess); polls and downloads of
        the others are safe to repeat, and this engine goes on with them."""
        for job in adopted:
            if job.status is not JobStatus.SUBMITTING:
                continue
            if self.config.queue.resubmit_uncertain:
                await self.lifecycle.requeue(
                    job, event="recovered", reason="resubmitting after a crash", engine=None
                )
            else:  # the server may have created and charged it: keep the reservation
                await self.lifecycle.fail(
                    job, f"{UNKNOWN_OUTCOME}: the daemon stopped during the submit", refund=False
                )

    async def _tend_lease(self) -> None:
        """Renew this engine's lease; on a shared store, take over the jobs of engines whose
        lease ran out (a `kill -9`, a host gone down)."""
        lease = self.config.store.lease_seconds
        until = await self.store.renew_engine(self.info.id, lease)
        if until is None:
            log.warning(
                "engine %s: its lease had run out (the process stalled?): registered again",
                self.info.id,
            )
            await self.store.register_engine(self.info, lease)
        else:
            self.info = replace(self.info, lease_until=until)
        if self.parts.stopping:
            return
        # Deliveries cut off by a store that went away start again once it answers.
        for job in await self.store.list_jobs(
            [JobStatus.DOWNLOADING, JobStatus.PROCESSING], engine=self.info.id
        ):
            self.delivery.start(job)
        if not self.config.store.shared:
            return
        adopted = await self.store.adopt_jobs(self.info.id)
        if not adopted:
            return
        log.warning(
            "took over %s of an engine whose lease ran out: %s",
            counted(len(adopted), "job"),
            ", ".join(j.id for j in adopted),
        )
        await self._take_over(adopted)
        for job in adopted:
            if job.status in (JobStatus.DOWNLOADING, JobStatus.PROCESSING):
                self.delivery.start(job)
        self.ticker.wake("poll")

    def _finished(self) -> None:
        """Jobs left the server: their slots are free for the next submissions."""
        self._changed()
        self.ticker.wake("submit")

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def _work_arrived(self, kind: str) -> None:
        """A store that pushes (PostgreSQL's LISTEN) says another process committed work:
        the stage that acts on it runs now, not at its next tick."""
        if self.parts.stopping:
            return
        # An engine gone: its claims lapsed. A song cancelled or off its server (`slot`):
        # a place on that server is free.
        if kind in ("queued", "engines", "reconnected", "cancelled", "slot"):
            self.ticker.wake("submit")
        if kind in ("cancelled", "reconnected"):
            self.ticker.wake("poll")
        if kind in ("engines", "reconnected"):
            self.ticker.wake("lease")

    async def _watch_store(self) -> None:
        """Other processes (CLI, MCP) commit jobs; react within a fraction of a second."""
        version = await self.store.data_version()
        if version != self._data_version:
            first = self._data_version == -1
            self._data_version = version
            if not first:
                self.ticker.wake("submit")

    # -- submit stage -----------------------------------------------------------------

    async def submit_due(self) -> None:
        if self.parts.stopping:
            return
        now = utcnow()
        if self._submit_paused_until is not None and now < self._submit_paused_until:
            return
        pool = self.parts.pool
        by_server: dict[str, int] = {}
        if pool.pooled:  # each server's own max_in_flight, healthy servers only
            by_server = await self.store.counts_by_server([JobStatus.SUBMITTING, JobStatus.RUNNING])
            slots = pool.room(by_server)
        else:
            counts = await self.store.counts(engine=self.info.id)  # max_in_flight is ours
            in_flight = counts.get("submitting", 0) + counts.get("running", 0)
            slots = self.config.queue.max_in_flight - in_flight  # includes POSTs in flight
        if slots <= 0:
            if pool.pooled:
                await self._want_slot(by_server)
            return
        full = False  # every healthy server full with songs left: wait for a place
        # The claim: these jobs are this engine's to prepare and send, no other engine's;
        # past the ones that waited last time for a server with their model, so that the
        # songs behind them are reached.
        left = await self.store.claim_queued(self.info.id, slots + self._model_waiting)
        waiting: list[Job] = []  # for a server with their model: the others still go
        while left and slots > 0:
            job = left.pop(0)
            needs = model_needed(job.request)  # stems, layers: a server with that model
            if (missing := pool.missing_model(needs)) is not None:
                await self.lifecycle.fail(job, missing, refund=False)
                continue
            server = (
                pool.choose(by_server, avoid=job.result.lost_on, model=needs)
                if pool.pooled or needs
                else pool.default_url()
            )
            if server is None and needs is not None:
                # No server with its model has room, or the one that has loaded nothing yet
                # (ACESTEP_NO_INIT) is finding out with another such task: this one waits,
                # songs behind it that need no particular model go on.
                waiting.append(job)
                continue
            if server is None:
                left.insert(0, job)
                full = True
                break  # every healthy server is full
            state = pool.state(server) if pool.pooled else None
            try:
                prepared = await self._prepare(job, server, state.max_in_flight if state else None)
            except ServerFull:  # another engine filled it meanwhile: another server, or wait
                by_server[server] = state.max_in_flight if state else 0
                pool.not_sent(server, needs)
                left.insert(0, job)
                continue
            if prepared is None:
                pool.not_sent(server, needs)
                continue
            by_server[server] = by_server.get(server, 0) + 1
            slots -= 1
            task = asyncio.create_task(self._submit(*prepared))
            self._submitting.add(task)
            task.add_done_callback(self._submit_done)
            if self._submit_paused_until is not None:
                break
        self._model_waiting = min(len(waiting), MAX_MODEL_WAITING)
        left += waiting
        if left:  # not sent now: back to the queue, for whichever engine has room first
            await self.store.release_claims(self.info.id, [j.id for j in left])
        if full and pool.pooled:
            await self._want_slot(by_server)

    async def _want_slot(self, in_flight: dict[str, int]) -> None:
        """Songs wait and every healthy pool server is full: on a shared store, the move
        that frees a place there (another engine's song done, failed, cancelled) wakes this
        engine at once (`on_work`: `slot`) instead of at its next submit tick; when one was
        freed meanwhile, the submit runs again now. Alone on its store, the engine's own
        moves and the store-watch wake it already."""
        if not self.config.store.shared:
            return
        full = self.parts.pool.full(in_flight)
        if not full or not await self.store.list_oldest(JobStatus.QUEUED, 1):
            return
        if await self.store.want_slot(self.info.id, full):
            self.ticker.wake("submit")

    async def _prepare(
        self, job: Job, server: str | None = None, server_limit: int | None = None
    ) -> tuple[Job, dict[str, Any]] | None:
        """Plugins, budget and the `submitting` mark (with the server it goes to, within
        its `server_limit` over every engine: else `ServerFull`): everything decided
        before the POST, on a job this engine claimed."""
        body = await self.store.api_body(job.id)
        credits = job.credits
        if self.plugins is not None:
            # Plugins always start from the request as queued: a job held and resumed (or
            # retried) must not get a non-idempotent change applied twice.
            original = job.result.request_before_plugins or job.request
            try:
                changes = await self.plugins.before_submit(job, dict(original))
            except RejectJob as exc:
                await self.lifecycle.fail(job, f"rejected by a plugin: {exc}", refund=False)
                return None
            except PluginError as exc:
                await self.lifecycle.fail(job, str(exc), refund=False)
                return None
            if changes or original != job.request:
                try:
                    # Re-validated for the backend; the budget decides on the cost below.
                    rules = RequestRules(backend=self.config.backend, max_job_credits=None)
                    current = SongRequest.build(original, rules)
                    request = current.with_changes(
                        changes, rules, source=f"job {job.id} after before_submit"
                    )
                except BygheartdError as exc:
                    await self.lifecycle.fail(
                        job, f"a plugin made the request invalid: {exc}", refund=False
                    )
                    return None
                body = request.to_api_body()
                credits = request.credit_cost(self.config.backend)
                try:
                    job = await self.store.update(
                        job.id,
                        expect={JobStatus.QUEUED},  # another engine may have taken it meanwhile
                        event="changed by plugins",
                        request=request.model_dump(mode="json", exclude_none=True),
                        api_body=body,
                        credits=credits,
                        model=request.model,
                        result=job.result.but(request_before_plugins=original),
                    )
                except StaleTransition:
                    return None  # another engine took it (or it was cancelled) meanwhile
        too_much = self.budget.too_expensive(credits)
        if too_much is not None:
            await self.lifecycle.fail(job, too_much, refund=False)
            return None
        unwritable = output_problem(self.config)
        if unwritable is not None:  # never pay for a song that has nowhere to go
            until = utcnow() + timedelta(seconds=disk_wait_seconds(self.config))
            await self.lifecycle.hold(
                job, HoldKind.DISK, f"{unwritable}: waiting before spending credits", until
            )
            return None
        hold = await self.budget.check(credits)
        if hold is not None:
            await self.lifecycle.hold(job, HoldKind.BUDGET, hold.reason, hold.resumes_at)
            return None
        try:
            submitting = await self.lifecycle.submitting(
                job, credits=credits, server=server, server_limit=server_limit
            )
        except OverBudget as exc:  # another daemon on the shared store spent it first
            hold = await self.budget.check(credits)
            until = hold.resumes_at if hold else utcnow() + timedelta(seconds=60)
            await self.lifecycle.hold(
                job, HoldKind.BUDGET, hold.reason if hold else str(exc), until
            )
            return None
        if submitting is None:
            return None  # cancelled meanwhile
        job = submitting
        return job, body

    def _submit_done(self, task: asyncio.Task[None]) -> None:
        """No submit task dies unobserved: what escaped it is logged."""
        self._submitting.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("a submit task failed unexpectedly: %r", exc)

    async def _submit(self, job: Job, body: dict[str, Any]) -> None:
        step = _SubmitStep()
        try:
            await self._submit_once(job, body, step)
        except Exception as exc:  # a bug, or a server's value no code expected
            log.exception("submit of job %s failed unexpectedly", job.id)
            await self._rescue(job, exc, step)
        finally:
            self._changed()

    async def _rescue(self, job: Job, exc: Exception, step: _SubmitStep) -> None:
        """No job is left in `submitting` by an error the submit did not expect (a restart
        would fail it as "outcome unknown", its credits counted): what the submit got to
        decides, through the lifecycle like every other move. A job that moved on (it was
        recorded `running`, or cancelled) is left alone: the error is logged."""
        try:
            current = await self.store.get(job.id)
        except JobNotFound:
            return
        if current.status is not JobStatus.SUBMITTING:
            return
        what = f"internal error while submitting: {type(exc).__name__}: {exc}"
        if step.task_id is not None:  # made and paid for, but not recorded
            await self.lifecycle.fail(
                current,
                f"{what}; the server made task {step.task_id}, which may be charged: check "
                "your account before `bygheartd retry`",
                refund=False,
            )
        elif step.nothing_made:  # the server answered (a 429, say): no task, no charge
            answer = f" (the server answered: {step.answer})" if step.answer is not None else ""
            await self._retry_later(current, what + answer, refund=True)
        else:
            await self._outcome_unknown(current, what)

    async def _submit_once(self, job: Job, body: dict[str, Any], step: _SubmitStep) -> None:
        client = self.parts.pool.client_for(job.server)
        try:
            source_audio = await self._source_audio(job)
            reference_audio = await self._source_audio(job, "reference_audio")
            step.sent = True
            try:
                submitted = await client.submit(
                    body, src_audio=source_audio, ref_audio=reference_audio
                )
            except ApiError as exc:
                step.answer = exc
                raise
        except AuthError as exc:  # 401, and 403 (PlanError) with its "upgrade your plan"
            await self._auth_problem(job, f"{exc} ({self._key_hint()})")
        except RateLimited as exc:
            await self._rate_limited(job, exc)
        except TransientError as exc:
            if exc.outcome_unknown:
                await self._outcome_unknown(job, str(exc))
            elif self.parts.pool.pooled and await self._to_another_server(job, exc):
                pass
            else:  # nothing reached a server that could make it: it waits, however long
                await self._retry_later(
                    job, f"waiting for the API to be reachable: {exc}", refund=True, give_up=False
                )
        except ProtocolError as exc:
            await self._outcome_unknown(job, f"unreadable reply: {exc}")
        except (RejectedError, ApiError) as exc:  # nothing was created: refund with the failure
            await self.lifecycle.fail(job, f"the API refused the request: {exc}")
        except OSError as exc:
            await self.lifecycle.fail(job, f"cannot read the source audio: {exc}")
        else:
            step.task_id = submitted.task_id
            try:
                job = await self._record_submitted(job, submitted.task_id)
            except StaleTransition:
                # cancelled while the POST was in flight: keep the task id for the record
                await self.store.update(job.id, task_id=submitted.task_id, event="submitted")
                return
            await self.poller.poll_soon(job, submitted.queue_position)
            if self.plugins is not None:
                failures = await self.plugins.after_submit(job, submitted.task_id)
                await self.lifecycle.record_hook_failures(job.id, failures)

    async def _record_submitted(self, job: Job, task_id: str) -> Job:
        """The task exists on the server (and is paid for): its id must reach the store.
        A store that went away is waited for (with backoff) rather than leave the job in
        `submitting`, which a restart would have to fail as "outcome unknown"."""
        pause = 0.5
        while True:
            try:
                return await self.store.transition(
                    job.id,
                    JobStatus.RUNNING,
                    event="submitted",
                    reason=f"task {task_id}",
                    expect={JobStatus.SUBMITTING},
                    task_id=task_id,
                    submitted_at=utcnow(),
                    progress=0.0,
                )
            except StoreError as exc:
                if self.parts.stopping:
                    log.error("job %s: task %s could not be recorded: %s", job.id, task_id, exc)
                    raise
                log.warning(
                    "job %s: task %s made, the store is unavailable (%s): trying again in %.0f s",
                    job.id,
                    task_id,
                    exc,
                    pause,
                )
                await asyncio.sleep(pause)
                pause = min(30.0, pause * 2)

    async def _to_another_server(self, job: Job, exc: TransientError) -> bool:
        """A pool server that provably took nothing (no connection, a gateway's 5xx) is
        marked down and the job goes straight back to the queue, for a healthy server."""
        reason = down_reason(exc)
        if reason is None or job.attempts >= self.config.queue.max_attempts:
            return False
        self.parts.pool.mark_down(job.server, reason)
        if not any(s.healthy for s in self.parts.pool.states()):
            return False  # nowhere to go now: the usual backoff
        requeued = await self.lifecycle.requeue(
            job,
            event="server down",
            reason=f"{job.server} took nothing ({reason}): back to the queue",
            expect={JobStatus.SUBMITTING},
            server=None,
        )
        if requeued is not None:
            self.ticker.wake("submit")
        return True

    async def _source_audio(self, job: Job, key: str = "source_audio") -> Path | None:
        """An audio file the request names (`source_audio`, `reference_audio`), found
        beside the song file it came from."""
        relative = job.request.get(key)
        if not relative:
            return None
        origin = await self.store.source_path(job.id)
        base = Path(origin).parent if origin else Path.cwd()
        return (base / str(relative)).resolve()

    def _key_hint(self) -> str:
        from bygheartd.config import find_api_key

        try:
            source = find_api_key(self.config).source
        except BygheartdError:
            source = None
        return f"the key came from {source}" if source else "no key source was found"

    async def _auth_problem(self, job: Job, reason: str) -> None:
        """Nothing was created; every other submit with this key would fail the same way.
        Alone on its store, the engine holds the whole queue (where the hold says why). On
        a shared store other daemons may have a good key: this engine holds this job, gives
        back its claims and stops submitting until its key changes; the queue goes on."""
        until = utcnow() + timedelta(seconds=AUTH_RECHECK_SECONDS)
        self._submit_paused_until = until
        await self.lifecycle.hold(
            job, HoldKind.AUTH, reason, until, expect={JobStatus.SUBMITTING}, refund=True
        )
        if self.config.store.shared:
            await self.store.release_claims(self.info.id)
            log.error(
                "%s; this daemon sends nothing until its key or plan changes (the other "
                "daemons on the store go on with the queue)",
                reason,
            )
            return
        for other in await self.store.list_jobs([JobStatus.QUEUED]):
            await self.lifecycle.hold(other, HoldKind.AUTH, reason, until)
        log.error("%s; submissions paused until the key or plan changes", reason)

    async def _rate_limited(self, job: Job, exc: RateLimited) -> None:
        """Nothing was created: the job waits (refunded) for the server's `Retry-After`,
        within a ceiling (api/errors.py): the server's credit cap may last until its plan
        resets (a month at most), any other 429 an hour at most."""
        credit = exc.reason == "credit_limit_reached"
        ceiling = MAX_CREDIT_WAIT_SECONDS if credit else MAX_RETRY_AFTER_SECONDS
        asked, note = bounded_wait(exc.retry_after, ceiling)
        wait = asked if asked is not None else min(ceiling, self._backoff(job.attempts))
        now = utcnow()
        until = now + timedelta(seconds=wait)
        # The server's credit cap holds every song alike (and the budget holds them too);
        # another 429 pauses this engine's other songs no longer than a retry's backoff
        # ceiling: sent then, each gets its own answer (and its own hold, if any).
        pause = wait if credit else min(wait, self.config.queue.retry_max_seconds)
        self._submit_paused_until = now + timedelta(seconds=pause)
        if credit:
            await self.budget.server_capped_until(until)
            reason = f"the server's credit limit is reached: {exc}"
        else:
            reason = f"rate limited by the API: {exc}"
        if note:
            reason += f" ({note})"
        await self.lifecycle.hold(
            job, HoldKind.RATE, reason, until, expect={JobStatus.SUBMITTING}, refund=True
        )

    async def _outcome_unknown(self, job: Job, detail: str) -> None:
        if self.config.queue.resubmit_uncertain:
            await self._retry_later(
                job, f"{UNKNOWN_OUTCOME} ({detail}); resubmitting as configured", refund=True
            )
        else:
            await self.lifecycle.fail(
                job,
                f"{UNKNOWN_OUTCOME} ({detail}): it may have been created and charged; check "
                "your account before `bygheartd retry`",
                refund=False,
            )

    async def _retry_later(
        self, job: Job, reason: str, *, refund: bool, give_up: bool = True
    ) -> None:
        """Hold the job for a retry after a backoff; past `max_attempts` it fails, unless
        `give_up` is false: a submit that provably created nothing (no connection, a
        gateway's 5xx) is no fault of the song, so an outage of any length (Wi-Fi down, a
        server restart, a daemon started before the network) costs a wait, never the song."""
        if give_up and job.attempts >= self.config.queue.max_attempts:
            await self.lifecycle.fail(
                job, f"{reason} (gave up after {job.attempts} attempts)", refund=refund
            )
            return
        until = utcnow() + timedelta(seconds=self._backoff(job.attempts))
        await self.lifecycle.hold(
            job, HoldKind.RETRY, reason, until, expect={JobStatus.SUBMITTING}, refund=refund
        )

    def _backoff(self, attempts: int) -> float:
        q = self.config.queue
        ceiling = min(q.retry_max_seconds, q.retry_base_seconds * 2.0 ** max(0, attempts - 1))
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))

    # -- holds ------------------------------------------------------------------------

    def _schedule_release(self, until: datetime) -> None:
        self.ticker.at(f"release-at-{until.timestamp():.1f}", until, self.release_due)

    async def release_due(self) -> None:
        """Held jobs whose time has come go back to the queue (or back to their download).
        Budget holds (the daily and monthly release, all at one instant) are released by one
        engine of a shared store at a time; each other hold by whichever engine comes first."""
        now = utcnow()
        released = 0
        releases_budget: bool | None = None  # asked only when a budget hold is due
        next_budget: datetime | None = None  # the next budget release, whoever held it
        for job in await self.store.list_jobs([JobStatus.HELD]):
            if job.resumes_at is not None and job.resumes_at > now:
                if job.hold_kind is HoldKind.BUDGET and (
                    next_budget is None or job.resumes_at < next_budget
                ):
                    next_budget = job.resumes_at
                continue
            if job.hold_kind is HoldKind.DOWNLOAD and job.engine not in (self.info.id, None):
                continue  # another engine's paid take: that engine resumes its download
            if job.hold_kind is HoldKind.BUDGET:
                if releases_budget is None:
                    releases_budget = await self.store.lead(RELEASE_DUTY)
                if not releases_budget:
                    continue
            released_job = await self.lifecycle.release(job)
            if released_job is None:
                continue
            job = released_job
            released += 1
            if job.status is JobStatus.DOWNLOADING:
                self.delivery.start(job)
        if next_budget is not None:
            # The duty holder releases budget holds made by any engine of a shared store at
            # their instant, not at its next half-minute tick.
            if releases_budget is None:
                releases_budget = await self.store.lead(RELEASE_DUTY)
            if releases_budget:
                self._schedule_release(next_budget)
        if self._submit_paused_until is not None and self._submit_paused_until <= now:
            self._submit_paused_until = None
        if released:
            self.ticker.wake("submit")
            self._changed()

    async def recheck_auth(self) -> None:
        """At start and after a new key (reload, key file changed): release auth holds now."""
        self._submit_paused_until = None
        held = [
            j for j in await self.store.list_jobs([JobStatus.HELD]) if j.hold_kind is HoldKind.AUTH
        ]
        for job in held:
            with contextlib.suppress(StaleTransition):
                await self.store.update(job.id, resumes_at=utcnow(), expect={JobStatus.HELD})
        if held:
            self.ticker.wake("release-held")
