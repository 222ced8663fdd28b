"""Every move of a job that has side effects, in one place, whoever asks for it.

The moves themselves are declared once (`jobs.ALLOWED_MOVES`) and the store refuses any
other; this module owns what goes with them: a refund committed in the same transaction
as the failure, the note in failed/ for a dropped song, the log line, and the plugin
notifications (`on_failed`, `on_held`, `on_done`). Those run as tasks that `drain()`
finishes before the engine stops, so no stop cuts a webhook off unobserved. Engine stages,
the service (cancel, retry), MCP, the web page and `store restore` all come here.
"""

from __future__ import annotations

import glob
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bygheartd.catalog import credits_phrase
from bygheartd.config import Config, LiveConfig
from bygheartd.engine.budget import RETAKE_RESERVE, Budget, is_retake
from bygheartd.folders.moves import FolderUnavailable, copy_no_clobber, write_note
from bygheartd.jobs import SETTLING, Event, HoldKind, Job, JobStatus, iso, utcnow
from bygheartd.store.boundary import JobStore
from bygheartd.store.errors import StaleTransition

if TYPE_CHECKING:
    import asyncio

    # the plugin host (pluggy, entry points) only where plugins run:
    # a cold `bygheartd list` builds a service, and so a lifecycle, without them
    from bygheartd.hooks.host import HookFailure, PluginHost

log = logging.getLogger(__name__)

# `base.part`, `base.takeN.part`, and `base-N.part` left by versions that named takes so.
_PART_OF_TAKE = re.compile(r"(\.take\d+|-\d+)?\.part")

CANCELLED_SPENT = (
    "cancelled by the user; the server has no cancel call, so the generation may still run "
    "and be charged"
)
CANCELLED_UNSENT = "cancelled by the user before submission"


# Where a retake can fail on its way (submit, generation, download, a hold): then the song
# falls back to the takes it had instead of failing (`Lifecycle._keep_earlier_takes`).
RETAKE_IN_FLIGHT = frozenset(
    {
        JobStatus.QUEUED,
        JobStatus.SUBMITTING,
        JobStatus.RUNNING,
        JobStatus.DOWNLOADING,
        JobStatus.HELD,
    }
)


def _earlier_takes(job: Job) -> bool:
    """Whether `job` is a retake in flight whose song already has takes to fall back to."""
    return (
        is_retake(job)
        and job.status in RETAKE_IN_FLIGHT
        and any(f.path.name in job.result.processed_files for f in job.files)
    )


class Lifecycle:
    """The side effects of moves; one per process that changes jobs (engine or face)."""

    def __init__(
        self,
        config: Config | LiveConfig,
        store: JobStore,
        budget: Budget | None = None,
        *,
        plugins: Callable[[], PluginHost | None] = lambda: None,
        schedule_release: Callable[[datetime], None] | None = None,
        engine_id: str | None = None,
    ) -> None:
        self._live = LiveConfig.of(config)
        self.store = store
        self.budget = budget or Budget(self._live, store)
        self._plugins = plugins
        self._schedule_release = schedule_release
        self._notifying: set[asyncio.Task[None]] = set()
        # The engine this lifecycle moves jobs for: a job it submits is that engine's.
        self.engine_id = engine_id
        # Who finishes a job put back in `processing` (a failed retake): the engine's
        # delivery; a face's lifecycle has none, and the next engine start resumes it.
        self.on_processing: Callable[[Job], None] | None = None

    @property
    def config(self) -> Config:
        return self._live.current

    # -- ends -------------------------------------------------------------------------

    async def fail(self, job: Job, reason: str, *, refund: bool = True) -> Job | None:
        """Fail a job: refund when nothing was produced, tell plugins, copy drops to failed/.

        None when the job had moved on meanwhile (finished, cancelled): it is left alone.
        """
        # The refund commits with the failure: a crash between them must not keep it.
        refund_line = (
            await self.budget.refund_entry(job.id, job.model, retake=is_retake(job))
            if refund
            else None
        )
        if _earlier_takes(job):
            kept = await self._keep_earlier_takes(job, reason, refund_line)
            if kept is not None:
                return kept
        try:
            failed = await self.store.transition(
                job.id,
                JobStatus.FAILED,
                event="failed",
                reason=reason,
                ledger=refund_line,
                engine=None,  # nobody holds a failed job
            )
        except StaleTransition:
            return None
        if refund_line is not None:
            await self.store.add_event(
                job.id, "refunded", f"{credits_phrase(-refund_line['credits'])} back"
            )
        log.warning("job %s (%s) failed: %s", job.id, job.title, reason)
        await self._after_failure(failed, reason)
        return failed

    async def _keep_earlier_takes(
        self, job: Job, reason: str, refund_line: dict[str, Any] | None
    ) -> Job | None:
        """A retake that fails (its submit, its generation or its download) does not fail
        the song: it goes back to `processing` with the takes it had, judged as they were,
        and is finished there (`done`, with the warning that no take passed the gate, or
        another retake when `[retakes] max` leaves one). The retake's credits are refunded
        as any failure's would be, in the same transaction. None when the job moved on."""
        earlier = set(job.result.processed_files)
        person = job.result.keeper_by == "person"
        result = job.result.but(
            postprocess=dict(job.result.processed_before or {}),
            processed_before=None,
            keeper=job.result.keeper if person else None,
            keeper_by=job.result.keeper_by if person else None,
        )
        try:
            kept = await self.store.transition(
                job.id,
                JobStatus.PROCESSING,
                event="retake failed",
                reason=f"{reason}; the song keeps the takes it had",
                expect=RETAKE_IN_FLIGHT,
                ledger=refund_line,
                files=[f for f in job.files if f.path.name in earlier],
                warnings=[*job.warnings, f"the retake failed: {reason}"],
                result=result,
                task_id=None,
                progress=None,
                eta_seconds=None,
                resumes_at=None,
                hold_kind=None,
                engine=self.engine_id,
            )
        except StaleTransition:
            return None
        if refund_line is not None:
            await self.store.add_event(
                job.id, "refunded", f"{credits_phrase(-refund_line['credits'])} back"
            )
        log.warning(
            "job %s (%s): the retake failed, keeping its takes: %s", job.id, job.title, reason
        )
        if self.on_processing is not None:
            self.on_processing(kept)
        return kept

    async def _after_failure(self, failed: Job, reason: str) -> None:
        import asyncio

        output = failed.output_folder(self.config.folders.output)
        if failed.base_name:
            await asyncio.to_thread(remove_parts, output, failed.base_name)
        if failed.origin == "drop":
            skipped = await asyncio.to_thread(self._copy_to_failed, failed, reason)
            if skipped is not None:  # the failure stands; only its copy in failed/ is missing
                await self.store.add_event(failed.id, "not copied to failed/", skipped)
        plugins = self._plugins()
        if plugins is not None:
            self._track(self._notify_failed(plugins, failed, reason))

    async def restored(self, failed: Sequence[Job]) -> None:
        """Jobs a `store restore` failed (they may have been sent after the backup): the
        same note in failed/ and `on_failed` as any other failure."""
        for job in failed:
            await self._after_failure(job, job.reason or "failed by a store restore")

    async def finish(
        self,
        job: Job,
        reason: str,
        write_sidecar: Callable[[Job, list[Event]], None],
    ) -> Job | None:
        """`processing` -> `done`: the sidecar is written from the very state being committed
        (inside the transaction), so a job cancelled in that instant never leaves a sidecar
        that says `done`. None when the job moved on (cancelled) before."""
        try:
            done = await self.store.transition(
                job.id,
                JobStatus.DONE,
                event="done",
                reason=reason,
                expect={JobStatus.PROCESSING},
                before_commit=write_sidecar,
                completed_at=utcnow(),
                engine=None,
            )
        except StaleTransition:
            return None
        plugins = self._plugins()
        if plugins is not None:
            self._track(self._notify_done(plugins, done))
        return done

    # -- the submit ---------------------------------------------------------------------

    async def submitting(
        self, job: Job, *, credits: int, server: str | None, server_limit: int | None = None
    ) -> Job | None:
        """`queued` -> `submitting`, written before the POST with the credits it reserves
        (one transaction, refused with `OverBudget` when another daemon sharing the store
        spent the room meanwhile, `ServerFull` when `server` has `server_limit` songs in
        flight from every engine). None when the job was cancelled meanwhile."""
        budget = self.budget
        ledger = (
            budget.ledger_entry(
                job.id, job.model, credits, RETAKE_RESERVE if is_retake(job) else "reserve"
            )
            if budget.counts_credits and credits
            else None
        )
        try:
            return await self.store.transition(
                job.id,
                JobStatus.SUBMITTING,
                event="submitting",
                reason=f"by engine {self.engine_id}" if self.engine_id else None,
                expect={JobStatus.QUEUED},
                ledger=ledger,
                caps=await budget.caps() if ledger is not None else None,
                server_limit=server_limit,
                attempts=job.attempts + 1,
                credits=credits,
                resumes_at=None,
                hold_kind=None,
                server=server,
                engine=self.engine_id,
            )
        except StaleTransition:
            return None

    async def requeue(
        self,
        job: Job,
        *,
        event: str,
        reason: str,
        expect: Iterable[JobStatus] | None = None,
        **fields: Any,
    ) -> Job | None:
        """Back to the queue with the reservation given back in the same transaction: a
        submit that provably made nothing, a crash with `resubmit_uncertain`, or a task its
        server lost. None when the job moved on meanwhile."""
        try:
            return await self.store.transition(
                job.id,
                JobStatus.QUEUED,
                event=event,
                reason=reason,
                expect=expect,
                ledger=await self.budget.refund_entry(job.id, job.model, retake=is_retake(job)),
                **{"engine": None, **fields},
            )
        except StaleTransition:
            return None

    async def retake(self, job: Job, reason: str, **fields: Any) -> Job | None:
        """`processing` -> `queued`: no take passed the quality gate and a retake was
        decided (`retakes.py`). The request with its new seed, the retake count and the
        queue fields commit in one transaction, so a crash either side of it never makes
        the song twice; its cost is reserved at the submit like any other's. The history,
        the log and the `on_retake` plugins (the webhook's `retake`) say so: nothing is
        spent silently. None when the job moved on meanwhile (cancelled)."""
        try:
            queued = await self.store.transition(
                job.id,
                JobStatus.QUEUED,
                event="retake",
                reason=reason,
                expect={JobStatus.PROCESSING},
                **{"engine": None, **fields},
            )
        except StaleTransition:
            return None
        log.warning("job %s (%s) is made again: %s", job.id, job.title, reason)
        plugins = self._plugins()
        if plugins is not None:
            self._track(self._notify_retake(plugins, queued, reason))
        return queued

    # -- holds ------------------------------------------------------------------------

    async def hold(
        self,
        job: Job,
        kind: HoldKind,
        reason: str,
        until: datetime,
        *,
        expect: Iterable[JobStatus] | None = None,
        refund: bool = False,
        **fields: Any,
    ) -> Job | None:
        """Hold a job until `until`; `refund` gives back its reservation in the same
        transaction (a submit that provably created nothing), so a crash cannot separate
        the two. None when the job moved on meanwhile."""
        if kind is not HoldKind.DOWNLOAD:  # nobody's until released (any engine claims it then)
            fields.setdefault("engine", None)
        try:
            held = await self.store.transition(
                job.id,
                JobStatus.HELD,
                event=f"held ({kind})",
                reason=reason,
                expect=expect or {JobStatus.QUEUED},
                ledger=(
                    await self.budget.refund_entry(job.id, job.model, retake=is_retake(job))
                    if refund
                    else None
                ),
                resumes_at=until,
                hold_kind=kind,
                **fields,
            )
        except StaleTransition:
            return None
        # One line per hold, so the journal says why a song waits and when it goes on.
        what = "retried at" if kind is HoldKind.RETRY else f"held ({kind}) until"
        log.info("job %s (%s) %s %s: %s", job.id, job.title, what, iso(until), reason)
        if self._schedule_release is not None:
            self._schedule_release(until)
        plugins = self._plugins()
        if plugins is not None and kind is not HoldKind.DOWNLOAD:
            self._track(self._notify_held(plugins, held, reason))
        return held

    async def release(self, job: Job) -> Job | None:
        """A hold is over: a held download resumes its download, every other hold goes back
        to the queue. None when it was cancelled or released elsewhere meanwhile."""
        target = JobStatus.DOWNLOADING if job.hold_kind is HoldKind.DOWNLOAD else JobStatus.QUEUED
        try:
            return await self.store.transition(
                job.id,
                target,
                event="resumed",
                reason=f"hold over: {job.reason}",
                expect={JobStatus.HELD},
                resumes_at=None,
                hold_kind=None,
                **({"engine": None} if target is JobStatus.QUEUED else {}),
            )
        except StaleTransition:
            return None

    # -- a person's moves -------------------------------------------------------------

    async def cancel(self, job: Job) -> Job:
        """Queued and held jobs never get submitted; running ones stop being polled (the API
        has no cancel call: a task still generating is watched until the server ends it,
        so a failure there, which the server refunds, is refunded locally too).
        `StaleTransition` when the job finished meanwhile."""
        spent = job.status not in (JobStatus.QUEUED, JobStatus.HELD)
        settling = job.status is JobStatus.RUNNING and job.task_id is not None
        return await self.store.transition(
            job.id,
            JobStatus.CANCELLED,
            event="cancelled",
            reason=CANCELLED_SPENT if spent else CANCELLED_UNSENT,
            expect={s for s in JobStatus if not s.is_final},
            hold_kind=SETTLING if settling else None,
            # A settling task is still its engine's to watch; anything else nobody's.
            **({} if settling else {"engine": None}),
        )

    async def retry(self, job: Job, warnings: list[str]) -> Job:
        """A failed or cancelled job goes back to the queue: a new submission, new credits.
        `warnings` are what the request itself draws (the failed attempt's go)."""
        return await self.store.transition(
            job.id,
            JobStatus.QUEUED,
            event="retry",
            reason="queued again by the user",
            expect={JobStatus.FAILED, JobStatus.CANCELLED},
            task_id=None,
            attempts=0,
            progress=None,
            eta_seconds=None,
            resumes_at=None,
            hold_kind=None,
            base_name=None,
            files=[],
            warnings=warnings,
            # keep only what was queued before plugins changed it: they run again
            result={k: v for k, v in job.result.items() if k == "request_before_plugins"},
            submitted_at=None,
            completed_at=None,
            engine=None,
        )

    # -- notifications ----------------------------------------------------------------

    def _track(self, work: Any) -> None:
        import asyncio

        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._notifying.add(task)
        task.add_done_callback(self._notification_done)

    def _notification_done(self, task: asyncio.Task[None]) -> None:
        self._notifying.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("a plugin notification failed unexpectedly: %r", exc)

    def notifications(self) -> list[asyncio.Task[None]]:
        return list(self._notifying)

    async def drain(self, timeout: float) -> None:
        """Finish the notifications in flight (within `timeout`) before the engine stops;
        what is still running then is cancelled and said so, never left unobserved."""
        import asyncio

        pending = list(self._notifying)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            log.warning("%d plugin notification(s) cut off by the stop", len(late))
            await asyncio.wait(late, timeout=2.0)

    async def _notify_failed(self, plugins: PluginHost, job: Job, reason: str) -> None:
        await self.record_hook_failures(job.id, await plugins.on_failed(job, reason))

    async def _notify_held(self, plugins: PluginHost, job: Job, reason: str) -> None:
        await self.record_hook_failures(job.id, await plugins.on_held(job, reason))

    async def _notify_retake(self, plugins: PluginHost, job: Job, reason: str) -> None:
        await self.record_hook_failures(job.id, await plugins.on_retake(job, reason))

    async def _notify_done(self, plugins: PluginHost, job: Job) -> None:
        """`on_done` after the sidecar and the `done` status: a webhook tells the truth."""
        failures = await plugins.on_done(job, [f.path for f in job.files])
        await self.record_hook_failures(job.id, failures)

    async def record_hook_failures(self, job_id: str, failures: list[HookFailure]) -> None:
        for failure in failures:
            await self.store.add_event(
                job_id, f"plugin {failure.plugin} failed", describe_failure(failure)
            )

    def _copy_to_failed(self, job: Job, reason: str) -> str | None:
        """A copy of a failed drop's song file and its note in failed/. Returns why it was
        skipped (for the job's history), or None. A failed folder on an unmounted share is
        skipped, never created in the bare mount point, and never holds the failure up."""
        if not job.archived_as:
            return None
        folders = self.config.folders
        archived = folders.archive / job.archived_as
        try:
            copy = copy_no_clobber(
                archived, folders.failed, Path(job.archived_as).name, root=folders.failed
            )
            write_note(
                copy,
                f"{copy.name}: the song was accepted (job {job.id}) but failed later:\n"
                f"{reason}\n\nTo try again: `bygheartd retry {job.id}`, or drop the file into "
                "the inbox again.\n",
            )
        except FolderUnavailable as exc:
            why = f"the failed folder is unavailable ({exc}): no copy of {archived} was made"
            log.warning("job %s failed; %s", job.id, why)
            return why
        except OSError as exc:
            log.warning("could not copy %s to failed/: %s", archived, exc)
            return f"could not copy {archived} to {folders.failed}: {exc.strerror or exc}"
        return None


def describe_failure(failure: HookFailure) -> str:
    what = "timed out" if failure.timed_out else f"raised {failure.error}"
    return f"plugin {failure.plugin} {failure.hook} {what}"


def remove_parts(output: Path, base: str) -> None:
    """The `.part` files of this base's takes (`base.part`, `base.takeN.part`), no others."""
    for part in output.glob(f"{glob.escape(base)}*.part"):
        if _PART_OF_TAKE.fullmatch(part.name[len(base) :]):
            part.unlink(missing_ok=True)
