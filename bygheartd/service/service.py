"""The one API every face uses: submit, get, list, wait, cancel, retry, credits.

The drop folder, the CLI, MCP and the library page all go through here, so they behave the
same by construction. Every method that reads or writes the store is awaited: the store
never blocks the event loop. It only writes the store (moves with side effects go through
the engine's lifecycle); the engine, wherever it runs, does the rest.
"""

from __future__ import annotations

import bisect
import builtins
import hashlib
import itertools
import json
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bygheartd.catalog import cost_phrase, credits_phrase
from bygheartd.config import Config, LiveConfig
from bygheartd.engine.budget import Budget, Hold
from bygheartd.engine.lifecycle import Lifecycle
from bygheartd.engine.lock import EngineLock
from bygheartd.engine.retakes import retakes_possible
from bygheartd.errors import BygheartdError
from bygheartd.jobs import FINAL_STATUSES, Event, Job, JobStatus, Origin, utcnow
from bygheartd.service.errors import IdempotencyConflict, ServiceError
from bygheartd.service.logins import WebLogins
from bygheartd.service.submission import DropIdentity, Enqueued, Submission
from bygheartd.store.boundary import JobStore
from bygheartd.store.errors import JobNotFound, KeyTaken, StaleTransition
from bygheartd.store.events import JobEvent as JobEvent  # re-exported: faces see events
from bygheartd.store.opening import open_store

if TYPE_CHECKING:  # parsing is imported when used: `bygheartd list` must start fast
    from bygheartd.hooks.host import PluginHost
    from bygheartd.service.album_draft_file import AlbumDraft
    from bygheartd.service.albums import AlbumView
    from bygheartd.service.drafts import Polished, SongDraft
    from bygheartd.service.progress import Line
    from bygheartd.songs.albums import AlbumRequest
    from bygheartd.songs.request import RequestRules, SongRequest

ProgressCallback = Callable[[Job], Awaitable[None] | None]
Tick = Callable[[], Awaitable[None]]


class EngineControl(Protocol):
    """What the service may ask of the engine in this process (the runtime answers)."""

    @property
    def engine_running(self) -> bool: ...

    @property
    def engine_error(self) -> str | None: ...

    def wake(self) -> None: ...

    def every(self, name: str, seconds: float, func: Tick) -> bool: ...

    def cancel(self, name: str) -> None: ...


@dataclass(frozen=True)
class BudgetOutlook:
    """What a job costs and what it leaves, said the same way by every face.

    `left_today` is what the daily cap leaves once this job (and the queued jobs ahead of
    it) are paid; None when the plan has no daily cap. `hold` is set when the job will wait
    for credits instead of starting now.
    """

    cost: int
    left_today: int | None
    hold: Hold | None
    counts_credits: bool
    available_today: int | None = None  # before this job, after the jobs ahead of it
    daily: bool = False  # the hold is the daily cap (it lifts at the next day turn)
    retakes: int = 0  # how many retakes ([retakes]) the job may get when no take passes

    def text(self) -> str:
        """`2 credits, up to 4 with one retake, 26 left today after this job`, or, when it
        will wait, `needs 16 credits, 13 left today: it will wait until 00:00 UTC`."""
        cost = credits_phrase(self.cost)
        if not self.counts_credits:
            return "free (a self-hosted server)"
        if self.hold is not None:
            until = _when(self.hold.resumes_at)
            if self.available_today is not None and self.daily:
                return (
                    f"needs {cost}, {self.available_today} left today: it will wait until {until}"
                )
            return f"needs {cost}: it will wait until {until} ({self.hold.reason})"
        cost = cost_phrase(self.cost, self.retakes)
        if self.left_today is None:
            return f"{cost} (no daily cap)"
        return f"{cost}, {self.left_today} left today after this job"


def _file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data


def _when(at: datetime) -> str:
    """`00:00 UTC` for the next day turn (within a day), with the date when further off."""
    zone = at.tzname() or "UTC"
    if at - utcnow().astimezone(at.tzinfo) <= timedelta(days=1):
        return f"{at:%H:%M} {zone}"
    return f"{at:%Y-%m-%d %H:%M} {zone}"


class SongService:
    def __init__(
        self,
        config: Config | LiveConfig,
        store: JobStore,
        engine: EngineControl | None = None,
        *,
        plugins: Callable[[], PluginHost | None] = lambda: None,
    ) -> None:
        self._live = LiveConfig.of(config)
        self.store = store
        self._budget = Budget(self._live, store)
        self._engine = engine
        # A person's moves (cancel, retry, a restore's failures) with their side effects.
        self.lifecycle = Lifecycle(self._live, store, self._budget, plugins=plugins)
        self.logins = WebLogins(store)

    @property
    def config(self) -> Config:
        return self._live.current

    # -- the engine -------------------------------------------------------------------

    def _wake(self) -> None:
        """New work was queued: let an engine in this process submit it now, not next tick.
        Only `submit` and `retry` call it, so no face has to remember to."""
        if self._engine is not None:
            self._engine.wake()

    @property
    def engine_running(self) -> bool:
        """True when this process runs the engine (the daemon, or an in-process one)."""
        return self._engine is not None and self._engine.engine_running

    def generation_blocked(self) -> str | None:
        """Why no engine anywhere can generate songs now (no API key, say), or None."""
        if self._engine is None:
            return None
        problem = self._engine.engine_error
        if not problem or self._engine.engine_running or self.engine_holder() is not None:
            return None
        return problem

    def every(self, name: str, seconds: float, func: Tick) -> bool:
        """Run `func` every `seconds` on the engine's scheduler; False when no engine runs
        in this process (then nothing is scheduled)."""
        return self._engine is not None and self._engine.every(name, seconds, func)

    def cancel_every(self, name: str) -> None:
        if self._engine is not None:
            self._engine.cancel(name)

    # -- requests ---------------------------------------------------------------------

    def max_job_credits(self) -> int | None:
        return self.config.budget.daily_credits if self._budget.limited else None

    def rules(self, preset: str | None = None) -> RequestRules:
        """The request rules of the running config (and `preset`), decided here once."""
        from bygheartd.songs.request import RequestRules

        return RequestRules(
            backend=self.config.backend,
            defaults=self.config.request_defaults(preset),
            max_job_credits=self.max_job_credits(),
        )

    def build_request(
        self, data: Mapping[str, Any], *, preset: str | None = None, source: str = "<request>"
    ) -> SongRequest:
        from bygheartd.songs.request import SongRequest

        return SongRequest.build(data, self.rules(preset), source=source)

    def parse_file(
        self,
        path: Path,
        *,
        preset: str | None = None,
        display: str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> SongRequest:
        """A song file as a request; `overrides` win over its keys (validated once)."""
        from bygheartd.songs.songfile import parse_song_file

        return parse_song_file(
            path,
            self.rules(preset),
            max_bytes=self.config.watch.max_file_kib * 1024,
            display_name=display,
            overrides=overrides,
        )

    # -- inspiration and polish (the backend's language model; nothing is spent) --------

    async def inspire(
        self,
        description: str | None = None,
        *,
        instrumental: bool = False,
        language: str | None = None,
    ) -> SongDraft:
        """A complete draft song file from the model (see service/drafts.py)."""
        from bygheartd.service.drafts import inspire

        return await inspire(self.config, description, instrumental=instrumental, language=language)

    async def inspire_album(
        self,
        description: str,
        tracks: int,
        *,
        instrumental: bool = False,
        language: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> AlbumDraft:
        """A draft album file from the model (see service/album_drafts.py)."""
        from bygheartd.service.album_drafts import inspire_album

        return await inspire_album(
            self.config,
            description,
            tracks,
            instrumental=instrumental,
            language=language,
            progress=progress,
        )

    async def polish(self, path: Path) -> Polished:
        """The model's rewrite of a song file's style and lyrics (see service/drafts.py)."""
        from bygheartd.service.drafts import polish

        return await polish(self.config, path)

    async def polish_song(self, data: Mapping[str, Any], *, title: str | None = None) -> Polished:
        """The model's rewrite of a song given as keys (lyrics, style, bpm, ...), as MCP
        sends it; checked like a song file first."""
        from bygheartd.service.drafts import polish_request
        from bygheartd.songs.request import RequestRules, SongRequest

        rules = RequestRules(backend=self.config.backend)
        request = SongRequest.build(data, rules, source="polish_song")
        return await polish_request(
            self.config, request, title=title or request.title or "Untitled", where="the song"
        )

    def parse_bytes(
        self,
        data: bytes,
        *,
        name: str,
        suffix: str,
        preset: str | None = None,
        base_dir: Path | None = None,
    ) -> SongRequest:
        """Parse the very bytes a face read (and hashed, and archives): no second read."""
        from bygheartd.songs.songfile import parse_song_bytes

        return parse_song_bytes(
            data, self.rules(preset), name=name, suffix=suffix, base_dir=base_dir
        )

    async def submit(self, submission: Submission) -> Enqueued:
        """Store one song to make and wake the engine: the one way in for every face.

        With an idempotency key or a de-dupe window an existing job may come back. A key
        names one request: the same key with another request raises `IdempotencyConflict`
        rather than answer with a job that is not what was asked for.
        """
        if submission.request.stems:  # one extract job per stem (service/edits.py)
            from bygheartd.service.edits import submit_stems

            return (await submit_stems(self, submission))[0]
        enqueued = await self._store_submission(submission)
        if enqueued.created:
            self._wake()
        return enqueued

    async def _store_submission(self, submission: Submission) -> Enqueued:
        request = submission.request
        dedupe_key = hashlib.sha256(request.canonical_json().encode()).hexdigest()
        key = submission.idempotency_key
        if key and (known := await self._keyed(key, dedupe_key)):
            return known
        if submission.dedupe_seconds:
            horizon = utcnow() - timedelta(seconds=submission.dedupe_seconds)
            for job in await self.store.find_by("dedupe_key", dedupe_key):
                alive = job.status not in (JobStatus.FAILED, JobStatus.CANCELLED)
                if alive and job.created_at >= horizon:
                    return Enqueued(job, False)
        title = request.display_title(submission.fallback_title or "")
        drop = submission.drop or DropIdentity("", "", "")
        try:
            job = await self.store.insert_job(
                title=title or "untitled",
                model=request.model,
                request=request.model_dump(mode="json", exclude_none=True),
                api_body=request.to_api_body(),
                credits=request.credit_cost(self.config.backend),
                source=submission.source,
                source_path=str(submission.source_path) if submission.source_path else None,
                origin=submission.origin.value,
                drop_identity=drop.identity or None,
                content_sha256=drop.content_sha256 or submission.content_sha256,
                dedupe_key=dedupe_key,
                idempotency_key=key,
                archived_as=drop.archived_as or None,
                # The folder it was queued for: on a shared store another host may deliver
                # it, into this folder when that host has it.
                output=str(self.config.folders.output),
            )
        except KeyTaken:  # another process queued the same key just now: that job it is
            known = await self._keyed(key or "", dedupe_key)
            if known is None:
                raise
            return known
        if not title:
            job = await self.store.update(job.id, title=f"song-{job.id[:8]}")
        if warnings := request.warnings():  # on the job, so every face shows them
            job = await self.store.update(job.id, warnings=[*job.warnings, *warnings])
        return Enqueued(job, True)

    def _request_warnings(self, job: Job) -> list[str]:
        """The warnings the job's request drew when it was queued, worked out again."""
        from bygheartd.songs.request import RequestRules, SongRequest

        original = job.result.request_before_plugins or job.request
        rules = RequestRules(backend=self.config.backend, max_job_credits=None)
        try:
            return SongRequest.build(original, rules).warnings()
        except BygheartdError:  # queued under another config: it is checked again anyway
            return []

    async def _keyed(self, idempotency_key: str, dedupe_key: str) -> Enqueued | None:
        """The job a key already names, or None; a key reused for another request is an
        error rather than an answer that is not what was asked for."""
        for job in await self.store.find_by("idempotency_key", idempotency_key):
            # The normalised request as it was queued (before any plugin changed it), kept
            # as `dedupe_key`: spelling and argument order do not matter, content does.
            if all(
                same.id != job.id for same in await self.store.find_by("dedupe_key", dedupe_key)
            ):
                raise IdempotencyConflict(idempotency_key, job.id)
            return Enqueued(job, False)
        return None

    async def submit_file(
        self, path: Path, *, preset: str | None = None, origin: Origin = Origin.CLI
    ) -> Job:
        """A song file given on the command line (the same format as the inbox)."""
        request = self.parse_file(path, preset=preset, display=str(path))
        import asyncio  # here: `bygheartd list` runs without an event loop (a test keeps it)

        content = None if preset is not None else await asyncio.to_thread(_file_sha256, path)
        submission = Submission(
            request,
            origin,
            fallback_title=path.stem,
            # Absolute: a path relative to wherever the CLI ran means nothing in a sidecar.
            source=os.path.abspath(path),
            source_path=path.resolve(),
            content_sha256=content,
        )
        return (await self.submit(submission)).job

    # -- albums (service/albums.py) -----------------------------------------------------

    def parse_album(
        self, path: Path, *, preset: str | None = None, display: str | None = None
    ) -> AlbumRequest:
        """An album file and the song files it names, validated whole (songs/albums.py)."""
        from bygheartd.songs.albums import parse_album_file

        return parse_album_file(
            path,
            self.rules(preset),
            max_bytes=self.config.watch.max_file_kib * 1024,
            display_name=display,
        )

    def parse_album_text(
        self, text: str, *, name: str = "album.album.yaml", base_dir: Path | None = None
    ) -> AlbumRequest:
        """An album file's content (MCP `make_album`); `file:` tracks only with `base_dir`."""
        from bygheartd.songs.albums import parse_album_bytes

        return parse_album_bytes(
            text.encode("utf-8"),
            self.rules(),
            name=name,
            base_dir=base_dir,
            max_bytes=self.config.watch.max_file_kib * 1024,
        )

    async def submit_album(
        self,
        request: AlbumRequest,
        origin: Origin,
        *,
        source: str | None = None,
        source_path: Path | None = None,
        drop: DropIdentity | None = None,
    ) -> AlbumView:
        """Queue a whole album: the album and a job per track in one transaction."""
        from bygheartd.service.albums import AlbumView, new_album

        album, jobs = await self.store.insert_album(
            new_album(
                request,
                backend=self.config.backend,
                origin=origin,
                output=self.config.folders.output,
                source=source,
                source_path=source_path,
                drop=drop,
            )
        )
        for track, job in zip(request.tracks, jobs, strict=True):
            if warnings := track.request.warnings():
                await self.store.update(job.id, warnings=[*job.warnings, *warnings])
        self._wake()
        return AlbumView(album, tuple(await self.store.album_jobs(album.id)))

    async def submit_album_file(
        self, path: Path, *, preset: str | None = None, origin: Origin = Origin.CLI
    ) -> AlbumView:
        """An album file given on the command line (the same format as the inbox)."""
        request = self.parse_album(path, preset=preset, display=str(path))
        return await self.submit_album(
            request, origin, source=os.path.abspath(path), source_path=path.resolve()
        )

    async def album(self, ref: str) -> AlbumView:
        """An album by id, id prefix or title, with its tracks in order, keepers, total
        length and cost (`AlbumView`)."""
        from bygheartd.service.albums import album_view

        return await album_view(self.store, ref)

    async def albums(self, limit: int | None = None) -> Sequence[AlbumView]:
        """Albums, newest first, each with its tracks."""
        from bygheartd.service.albums import album_views

        return await album_views(self.store, limit)

    async def stems_of(self, job: Job) -> builtins.list[Job]:
        """The stems made from `job`'s takes (from any face), oldest first."""
        from bygheartd.service.edits import stems_of

        return await stems_of(self.store, job)

    async def album_outlook(self, request: AlbumRequest) -> BudgetOutlook:
        """What the whole album costs and what it leaves today (before anything is spent):
        tracks past today's budget wait as usual."""
        return await self.budget_outlook(request.credit_cost(self.config.backend))

    # -- the drop folder's bookkeeping ------------------------------------------------

    async def source_path(self, job_id: str) -> str | None:
        """Where the song file a job came from lies (its audio sits beside it), if known."""
        return await self.store.source_path(job_id)

    async def close(self) -> None:
        """For a face that opened its own service (`open_service`): release the store."""
        await self.store.close()

    async def find_drop(self, drop_identity: str) -> Job | None:
        """The job already made from this exact drop (same path, size, mtime and content)."""
        found = await self.store.find_by("drop_identity", drop_identity)
        return found[0] if found else None

    async def jobs_with_content(self, content_sha256: str) -> list[Job]:
        """Earlier jobs from files with identical bytes, newest first."""
        return await self.store.find_by("content_sha256", content_sha256)

    async def set_archived(
        self, job_id: str, archived_as: str, source_path: Path | None = None
    ) -> Job:
        fields: dict[str, Any] = {"archived_as": archived_as}
        if source_path is not None:
            fields["source_path"] = str(source_path)
        return await self.store.update(job_id, event="archived", reason=archived_as, **fields)

    # -- reading ----------------------------------------------------------------------

    async def get(self, ref: str) -> Job:
        try:
            return await self.store.find(ref)
        except JobNotFound as exc:
            raise ServiceError(str(exc)) from None

    async def events_after(
        self, seq: int, job_ids: list[str] | None = None, *, limit: int = 500
    ) -> list[JobEvent]:
        """Every job's history lines after `seq` (a `JobEvent.seq`), oldest first: the feed
        of `bygheartd follow`. `job_ids` narrows it to those jobs."""
        return await self.store.events_after(seq, job_ids, limit=limit)

    async def event_seq(self, back: int = 0) -> int:
        """Where a feed starts that shows the last `back` events first."""
        return await self.store.event_seq(back)

    async def data_version(self) -> int:
        """Changes whenever another process commits: poll this, then read, to follow cheaply."""
        return await self.store.data_version()

    async def history(self, job: Job) -> list[Event]:
        return await self.store.history(job.id)

    async def list(
        self,
        statuses: list[JobStatus] | None = None,
        limit: int | None = None,
        *,
        summary: bool = False,
    ) -> list[Job]:
        """Newest first; `summary` leaves out request and result bodies (fast listings)."""
        return await self.store.list_jobs(statuses, limit, summary=summary)

    def engine_holder(self) -> dict[str, Any] | None:
        """Who runs the engine for this state folder (pid, owner), or None."""
        return EngineLock(self.config.state_dir).holder()

    async def counts(self) -> dict[str, int]:
        return await self.store.counts()

    async def engines(self) -> Sequence[dict[str, Any]]:
        """Every engine on the store (one per daemon sharing it): id, host, pid, role,
        started, lease until, whether the lease is live, and how many jobs it holds."""
        now = utcnow()
        records = []
        for info in await self.store.list_engines():
            held = sum((await self.store.counts(engine=info.id)).values())
            record = info.as_record(jobs_held=held)
            record["live"] = info.lease_until >= now
            records.append(record)
        return records

    async def servers(self) -> Sequence[dict[str, Any]]:
        """Every server with health, in flight, done, average seconds and queue size."""
        from bygheartd.service.servers import server_report

        return await server_report(self.config, self.store, self.engine_holder())

    async def credits(self) -> dict[str, Any]:
        """The local ledger: today, this month, per model, the next release."""
        return await self._budget.summary()

    async def credits_left_today(self) -> int | None:
        """None when the plan has no daily cap."""
        return await self._budget.left_today()

    async def budget_hold(self, cost: int) -> Hold | None:
        """Why a job of `cost` credits would wait for credits now, and until when."""
        return await self._budget.check(cost)

    async def budget_outlook(
        self, cost: int, *, job: Job | None = None, ahead: int = 0
    ) -> BudgetOutlook:
        """What `cost` leaves today, and whether the job will wait for credits.

        Queued jobs are paid in order, so the queued jobs ahead of `job` (all queued jobs
        when `job` is None, as for a dry run) count as spent, and so does `ahead` (earlier
        files of the same dry run).
        """
        if job is not None:
            return (await self.budget_outlooks([job]))[0]
        queued = await self.store.list_jobs([JobStatus.QUEUED], None, summary=True)
        return await self._outlook(cost, ahead + sum(j.credits for j in queued), paid=0)

    async def budget_outlooks(self, jobs: Sequence[Job]) -> Sequence[BudgetOutlook]:
        """`budget_outlook` for each of `jobs` (just queued, as by `submit`), reading the
        queue and the ledger once for the batch: queuing many files costs the same per
        file however large the store or the queue is."""
        if not jobs:
            return []
        queued = sorted(
            await self.store.list_jobs([JobStatus.QUEUED], None, summary=True),
            key=lambda j: j.created_at,
        )
        times = [j.created_at for j in queued]
        running = list(itertools.accumulate((j.credits for j in queued), initial=0))
        own = {j.id: j.credits for j in queued}
        paid = await self.store.credit_balances([j.id for j in jobs])
        outlooks: builtins.list[BudgetOutlook] = []
        for job in jobs:
            # Queued jobs are paid in order: those created up to this one are ahead of it.
            ahead = running[bisect.bisect_right(times, job.created_at)] - own.get(job.id, 0)
            outlooks.append(await self._outlook(job.credits, ahead, paid=paid.get(job.id, 0)))
        return outlooks

    async def _outlook(self, cost: int, ahead: int, *, paid: int) -> BudgetOutlook:
        left = await self._budget.left_today()
        available = None if left is None else max(0, left - ahead)
        # A daemon may already have submitted (and so reserved) the job: count it once.
        due = max(0, cost - paid)
        hold = await self._budget.check(ahead + due) if due > 0 else None
        return BudgetOutlook(
            cost=cost,
            left_today=None if available is None else max(0, available - (0 if hold else due)),
            hold=hold,
            counts_credits=self._budget.counts_credits,
            available_today=available,
            daily=hold is not None and hold.resumes_at == self._budget.next_day(),
            retakes=retakes_possible(cost, self.config),
        )

    async def charged(self, jobs: Sequence[Job]) -> dict[str, int]:
        """What each job was charged in the local ledger: reservations minus refunds (0
        for a job cancelled before submission, or one not submitted yet)."""
        balances = await self.store.credit_balances([j.id for j in jobs])
        return {j.id: balances.get(j.id, 0) for j in jobs}

    async def search(
        self,
        text: str = "",
        statuses: Sequence[JobStatus] | None = None,
        *,
        limit: int = 25,
        offset: int = 0,
        warning_prefix: str | None = None,
    ) -> tuple[Sequence[Job], int]:
        """One page of jobs, newest first, whose title, style or lyrics contain `text`, and
        how many match in all (the library page); `warning_prefix` keeps those with a
        warning that starts with it (`"quality: "`: a take failed the quality gate)."""
        return await self.store.search_jobs(
            text, statuses, limit=limit, offset=offset, warning_prefix=warning_prefix
        )

    async def usage_by_day(self, days: int = 30) -> Sequence[tuple[str, int]]:
        """Credits spent on each of the last `days` days (oldest first, today last), in the
        budget's time zone, days without spending included as 0."""
        today = utcnow().astimezone(self._budget.zone).date()
        first = today - timedelta(days=days - 1)
        spent = await self.store.credits_by_day(first.isoformat())
        dates = [(first + timedelta(days=n)).isoformat() for n in range(days)]
        return [(day, spent.get(day, 0)) for day in dates]

    async def line(self) -> Line:
        """The queue as waiting songs see it, for `estimate` and `record_eta`: one read per
        answer, whatever the number of jobs in it."""
        from bygheartd.service.progress import read_line

        return await read_line(self.store, self.config)

    async def sent(self, job: Job) -> dict[str, Any] | None:
        """The `/release_task` body of the job's last submission, as the engine POSTed it
        (after plugins; no secret), or None before a server took it."""
        from bygheartd.songs.request import without_secrets

        if job.task_id is None:
            return None
        return without_secrets(await self.store.api_body(job.id))

    async def sidecar(self, job: Job) -> dict[str, Any] | None:
        """The finished job's sidecar, as written in the output folder."""
        import asyncio

        if job.status is not JobStatus.DONE or not job.base_name:
            return None
        path = job.output_folder(self.config.folders.output) / f"{job.base_name}.json"
        return await asyncio.to_thread(_read_json, path)

    async def wait(
        self,
        ref: str,
        *,
        timeout: float | None,
        on_progress: ProgressCallback | None = None,
        interval: float = 0.2,
    ) -> Job:
        """Wait until the job is final or `timeout` passes; never changes the job."""
        import asyncio

        job = await self.get(ref)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        last: tuple[Any, ...] | None = None
        while True:
            marker = (job.status, job.progress, job.reason)
            if on_progress is not None and marker != last:
                result = on_progress(job)
                if result is not None:
                    await result
            last = marker
            if job.status in FINAL_STATUSES:
                return job
            if deadline is not None and loop.time() >= deadline:
                return job
            await asyncio.sleep(
                interval if deadline is None else max(0.0, min(interval, deadline - loop.time()))
            )
            job = await self.store.get(job.id)

    # -- changing ---------------------------------------------------------------------

    async def keep(self, ref: str, take: int) -> Job:
        """A person's keeper for a finished job (`take` counts from 1): the job records, the
        sidecar and the `[folders] keepers` copy follow the choice."""
        import asyncio

        from bygheartd.engine.keepers import PERSON, place_copy, set_in_sidecar, with_keeper

        job = await self.get(ref)
        if job.status is not JobStatus.DONE:
            raise ServiceError(
                f"job {job.id} is {job.status.value}: a keeper is chosen among the takes of "
                "a finished song"
            )
        takes = job.takes()
        if not 1 <= take <= len(takes):
            count = len(takes)
            raise ServiceError(
                f"job {job.id} has {count} take{'s' if count != 1 else ''}: choose 1"
                + (f" to {count}" if count > 1 else "")
            )
        name = takes[take - 1].path.name
        job = await self.store.update(job.id, result=with_keeper(job.result, name, PERSON))
        # A history line only: the job's `reason` (where its files went) stays as it is.
        await self.store.add_event(job.id, "keeper", f"take {take} ({name}), chosen by a person")
        if job.base_name:
            sidecar = job.output_folder(self.config.folders.output) / f"{job.base_name}.json"
            await asyncio.to_thread(set_in_sidecar, sidecar, name, PERSON)
        folder = self.config.folders.keepers_folder
        if folder is not None:
            copy = await asyncio.to_thread(place_copy, job, folder)
            if copy is not None and copy != job.result.keeper_copy:
                job = await self.store.update(job.id, result=job.result.but(keeper_copy=copy))
        if job.album is not None:  # the album's playlist and album.json follow the keeper
            from bygheartd.service.albums import refresh

            await refresh(self.store, job, self.config.folders.output)
        return job

    async def cancel(self, ref: str) -> Job:
        """Queued and held jobs never get submitted; running ones stop being polled.

        The API has no cancel endpoint: a generation already submitted still runs (and
        costs) on the server.
        """
        job = await self.get(ref)
        if job.status in FINAL_STATUSES:
            raise ServiceError(f"job {job.id} is already {job.status.value}")
        try:
            return await self.lifecycle.cancel(job)
        except StaleTransition as exc:
            raise ServiceError(str(exc)) from None

    async def retry(self, ref: str) -> Job:
        """A failed or cancelled job goes back to the queue: a new submission, new credits."""
        job = await self.get(ref)
        if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise ServiceError(
                f"job {job.id} is {job.status.value}: only failed or cancelled jobs can be retried"
            )
        try:
            # What the failed attempt said goes; what the request itself draws (no style,
            # a switch the server ignores) still holds for the new one.
            retried = await self.lifecycle.retry(job, self._request_warnings(job))
        except StaleTransition as exc:
            raise ServiceError(str(exc)) from None
        self._wake()
        return retried


def open_service(config: Config | LiveConfig, *, inline: bool = False) -> SongService:
    """A service over the store `config` names, without an engine (commands, a second
    process in tests); the caller closes it (`await service.close()`). `inline`: a SQLite
    store answers on the caller's thread (a one-shot command: see `SqliteJobStore`)."""
    live = LiveConfig.of(config)
    return SongService(live, open_store(live.current, inline=inline))
