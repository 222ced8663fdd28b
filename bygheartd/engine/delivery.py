"""Delivery: download every take, post-process with plugins, write the sidecar, finish.

Failures, holds and the final `done` go through `lifecycle.py`, like every other stage's,
so refunds, plugin notifications and the failed/ copy of a dropped song file happen the same
way whatever the cause.
"""

from __future__ import annotations

import asyncio
import errno
import glob
import json
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from bygheartd import catalog
from bygheartd.api.errors import (
    MAX_RETRY_AFTER_SECONDS,
    ApiError,
    AuthError,
    RateLimited,
    RefusedAudioUrl,
    RejectedError,
    TransientError,
)
from bygheartd.api.results import reported_seconds
from bygheartd.config import Config
from bygheartd.engine.albums import album_folder, track_done, track_title
from bygheartd.engine.keepers import GATE, gate_keeper, place_copy, with_keeper
from bygheartd.engine.lifecycle import Lifecycle, describe_failure
from bygheartd.engine.naming import choose_base, take_stem
from bygheartd.engine.parts import EngineParts
from bygheartd.engine.retakes import (
    NO_PASS_WARNING,
    gate_failure,
    merged_postprocess,
    plan_retake,
    retake_line,
    retake_refusal,
)
from bygheartd.engine.stems import stem_base, stems_folder
from bygheartd.folders.moves import write_new_text
from bygheartd.jobs import (
    Event,
    HoldKind,
    Job,
    JobFile,
    JobResult,
    JobStatus,
    finite,
    iso,
    utcnow,
)
from bygheartd.songs.request import without_secrets
from bygheartd.store.errors import StaleTransition, StoreError

log = logging.getLogger(__name__)

DISK_RETRY_SECONDS = 60.0
# A Retry-After beyond MAX_RETRY_AFTER_SECONDS (api/errors.py, where every server wait is
# bounded) is not believed: a bad header must not park a song for days.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENOENT, errno.EACCES}


def done_line(job: Job) -> str:
    """The daemon's one log line per finished song: what, which job, where, how long.

    Timed from submission (else creation) so that the journal answers "how long does a
    song take" without reading the sidecar.
    """
    start = job.submitted_at or job.created_at
    end = job.completed_at or utcnow()
    names = ", ".join(f.path.name for f in job.files) or "no files"
    return (
        f"job {job.id} done: {job.title!r}, {catalog.counted(len(job.files), 'file')} ({names}), "
        f"{(end - start).total_seconds():.1f} s from submit to done"
    )


def disk_wait_seconds(config: Config) -> float:
    """How often an unavailable output folder is looked at again: a cheap check, so often."""
    return min(DISK_RETRY_SECONDS, config.queue.retry_base_seconds * 4)


def output_problem(config: Config) -> str | None:
    """Why songs cannot be written now (an unmounted share, no permission), or None."""
    output = config.folders.output
    folder = output if output.exists() else output.parent
    if not folder.is_dir():
        return f"the output folder {output} is unavailable (no parent folder: an unmounted share?)"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the output folder {output} is not writable by this user"
    return None


def download_refusal(exc: RejectedError) -> str:
    """A failed download's reason that says what happened: every refusal used to read
    "the server no longer has the audio", a redirect or a foreign URL included."""
    if isinstance(exc, RefusedAudioUrl):
        return f"cannot download the audio: {exc}"
    if exc.status == 404:
        return f"the server no longer has the audio: {exc}"
    if exc.status == 403:
        return f"the server refuses to serve the audio (outside its audio folder): {exc}"
    return f"the server refused the download: {exc}"


class _Interrupted(Exception):
    """Delivery stopped on purpose (held for later, or failed): nothing more to do now."""


class Delivery:
    """Downloads, post-processing (plugins) and the sidecar: `downloading` to `done`."""

    def __init__(
        self,
        parts: EngineParts,
        lifecycle: Lifecycle,
    ) -> None:
        self.parts = parts
        self.lifecycle = lifecycle
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._naming_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(4)

    def tasks(self) -> list[asyncio.Task[None]]:
        return [t for t in self._tasks.values() if not t.done()]

    def start(self, job: Job) -> None:
        """Deliver a job in the background (at most one delivery per job)."""
        current = self._tasks.get(job.id)
        running = asyncio.current_task()
        if running is not None and running is current and not running.done():
            # Asked from inside this job's own delivery (a retake that failed its download
            # goes back to `processing`): start again once this one has ended.
            running.add_done_callback(lambda _: self.start(job))
            return
        if self.parts.stopping or (current is not None and not current.done()):
            return  # when stopping, the next start resumes it from the store
        task = asyncio.get_running_loop().create_task(self._deliver(job.id))
        self._tasks[job.id] = task
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        for job_id, running in list(self._tasks.items()):
            if running is task:
                del self._tasks[job_id]

    async def _deliver(self, job_id: str) -> None:
        async with self._slots:
            try:
                job = await self.parts.store.get(job_id)
            except StoreError as exc:  # the engine's lease tick starts it again
                log.warning("delivery of job %s waits for the store: %s", job_id, exc)
                return
            try:
                if job.status is JobStatus.DOWNLOADING:
                    job = await self._download_all(job)
                if job.status is JobStatus.PROCESSING:
                    await self._process(job)
            except _Interrupted:
                pass
            except StaleTransition:
                log.info("job %s changed status during delivery (cancelled?)", job_id)
            except StoreError as exc:  # gone away: what was done is kept, the rest resumes
                log.warning("delivery of job %s waits for the store: %s", job_id, exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not lose the job: fail it with the reason
                if self.parts.stopping:  # cut off by the drain: the next start resumes it
                    log.info("delivery of job %s stopped by the shutdown: %s", job_id, exc)
                    return
                log.exception("delivery of job %s failed", job_id)
                # The generation succeeded, so the server charged it: no local refund.
                await self.lifecycle.fail(
                    await self.parts.store.get(job_id),
                    f"internal error while delivering: {exc}",
                    refund=False,
                )

    # -- download ---------------------------------------------------------------------

    async def _delivery_folder(self, job: Job) -> Path:
        """The folder the job was queued for when this host has it; else this host's own
        output folder, and the history says so (a daemon on another host queued it)."""
        own = self.parts.config.folders.output
        if job.base_name and job.output:
            return Path(job.output)  # chosen already (files may be there)
        if not job.output or Path(job.output) == own:
            return own
        wanted = Path(job.output)
        if await asyncio.to_thread(wanted.is_dir):
            return wanted
        await self.parts.store.add_event(
            job.id,
            "delivered elsewhere",
            f"{wanted} is not on this host ({socket.gethostname()}): delivered to {own}",
        )
        return own

    async def _album_place(self, job: Job, output: Path) -> tuple[Path, str]:
        """A track's folder (`output/<album-slug>/`, made when its first track lands) and
        the title its files are named after (`01 Neon On` -> `01-neon-on.mp3`)."""
        assert job.album is not None
        album = await self.parts.store.get_album(job.album)
        folder = album_folder(output, album)
        await asyncio.to_thread(folder.mkdir, exist_ok=True)
        return folder, track_title(job)

    async def _download_all(self, job: Job) -> Job:
        output = await self._delivery_folder(job)
        try:
            output.mkdir(exist_ok=True)  # only when its parent exists: never invent a share
        except OSError as exc:
            await self._download_later(
                job, f"the output folder {output} is unavailable: {exc.strerror}", disk=True
            )
            raise _Interrupted from exc
        base = job.base_name
        title = job.title
        if base is None and job.album is not None:  # a track: in its album's folder
            try:
                output, title = await self._album_place(job, output)
            except OSError as exc:
                await self._download_later(
                    job, f"the album folder in {output} is unavailable: {exc.strerror}", disk=True
                )
                raise _Interrupted from exc
        stems = stems_folder(output, job.request) if base is None else None
        if stems is not None:  # a stem: beside the song's other stems (engine/stems.py)
            try:
                await asyncio.to_thread(stems.mkdir, exist_ok=True)
            except OSError as exc:
                await self._download_later(
                    job, f"the stems folder {stems} is unavailable: {exc.strerror}", disk=True
                )
                raise _Interrupted from exc
            output = stems
        if base is None:
            async with self._naming_lock:
                takes = len(job.result.takes)
                while True:  # claimed in the store: another host may take a name first
                    reserved = await self.parts.store.reserved_take_stems()
                    # A big output folder is listed once per candidate: off the event loop.
                    base = await asyncio.to_thread(
                        choose_base, output, title, job.id, reserved, takes, source=job.source
                    ) if stems is None else await asyncio.to_thread(
                        stem_base, output, job.request, reserved, takes
                    )  # fmt: skip
                    claimed = await self.parts.store.claim_base_name(
                        job.id, base, takes, str(output)
                    )
                    if claimed:
                        break
                job = await self.parts.store.get(job.id)
        done: dict[int, JobFile] = dict(job.result.downloaded)
        for index, take in enumerate(job.result.takes):
            if index in done:
                continue
            stem = take_stem(output, base, index)
            try:
                placed = await asyncio.to_thread(_placed_before_crash, stem)
                if placed is not None:
                    record = placed
                else:
                    # From the server that made the take: its URLs are relative to it.
                    client = self.parts.pool.client_for(job.server)
                    # The length the server reported bounds what the download may decode to
                    # (unknown for cover/repaint: the output follows the source audio).
                    seconds = (
                        0.0 if job.request.get("source_audio") else reported_seconds(take.metas)
                    )
                    got = await client.download(take.file, stem, seconds=seconds)
                    record = JobFile(got.path, got.size, got.sha256)
            except FileExistsError:
                adopted = await asyncio.to_thread(_adopt_existing, stem)
                if adopted is None:
                    raise
                record = adopted
            except RejectedError as exc:  # final (the same result gives the same answer): once
                await self.lifecycle.fail(job, download_refusal(exc), refund=False)
                raise _Interrupted from exc
            except AuthError as exc:  # the key, not the song: a paid take is never given up
                await self._download_later(job, f"download refused: {exc}", strike=False)
                raise _Interrupted from exc
            except RateLimited as exc:  # the file server's limit: its wait, not a strike
                await self._download_later(
                    job, f"download rate-limited: {exc}", retry_after=exc.retry_after, strike=False
                )
                raise _Interrupted from exc
            except TransientError as exc:  # a drop, a gateway error or a time limit
                await self._download_later(
                    job, f"download interrupted: {exc}", retry_after=exc.retry_after
                )
                raise _Interrupted from exc
            except ApiError as exc:  # a reply that was not the audio (empty, HTML, ...)
                await self._download_later(job, f"download failed: {exc}")
                raise _Interrupted from exc
            except OSError as exc:
                if exc.errno in _DISK_ERRNOS:
                    await self._download_later(
                        job, f"cannot write to {output}: {exc.strerror}", disk=True
                    )
                    raise _Interrupted from exc
                raise
            done[index] = record
            job = await self.parts.store.update(
                job.id,
                expect={JobStatus.DOWNLOADING},
                result=job.result.but(downloaded=dict(done)),
                files=[done[i] for i in sorted(done)],
            )
        return await self.parts.store.transition(
            job.id,
            JobStatus.PROCESSING,
            event="downloaded",
            reason=f"{catalog.counted(len(done), 'file')} verified",
            expect={JobStatus.DOWNLOADING},
        )

    async def _download_later(
        self,
        job: Job,
        reason: str,
        *,
        disk: bool = False,
        retry_after: float | None = None,
        strike: bool = True,
    ) -> None:
        """Hold the job and resume its download later.

        Network trouble is retried a bounded number of times; a full disk or a missing
        output folder is waited out for as long as it takes: it never fails a paid song.
        A server's `Retry-After` is honoured (it knows when it can serve again), and a rate
        limit is no strike against the song: it only says "not now".
        """
        from datetime import timedelta

        attempts = job.result.download_attempts + (1 if strike and not disk else 0)
        if attempts > self.parts.config.queue.max_attempts:
            await self.lifecycle.fail(
                job, f"{reason} (gave up after {attempts - 1} attempts)", refund=False
            )
            return
        q = self.parts.config.queue
        wait = (
            disk_wait_seconds(self.parts.config)
            if disk
            else min(q.retry_max_seconds, q.retry_base_seconds * 2**attempts)
        )
        seconds = min(DISK_RETRY_SECONDS, wait)
        if retry_after is not None and not disk:  # the server's word, up to an hour
            seconds = max(seconds, min(retry_after, MAX_RETRY_AFTER_SECONDS))
        until = utcnow() + timedelta(seconds=seconds)
        await self.lifecycle.hold(
            job,
            HoldKind.DOWNLOAD,
            reason,
            until,
            expect={JobStatus.DOWNLOADING},
            result=job.result.but(download_attempts=attempts),
        )

    # -- processing -------------------------------------------------------------------

    async def _process(self, job: Job) -> None:
        files = [f.path for f in job.files]
        if self.parts.plugins is not None and job.result.postprocess is None:
            # After a retake only its own takes are post-processed: the earlier ones were
            # judged (and tagged, normalised) already, and what plugins said is merged.
            judged = set(job.result.processed_files)
            fresh = [path for path in files if path.name not in judged]
            outcome = await self.parts.plugins.on_complete(job, fresh)
            # A plugin's warnings about the song (a clipped take) come first, then failures.
            problems = [*outcome.warnings, *(describe_failure(f) for f in outcome.failures)]
            # Plugins rewrite files in place (tags, loudness) and may remove or add some:
            # record each file as it is now, so every record agrees with the disk.
            now, gone = await asyncio.to_thread(_describe_present, [*files, *outcome.added_files])
            for path in gone:
                log.warning("job %s: %s was removed during post-processing", job.id, path)
                problems.append(f"{path.name} was removed by a plugin during post-processing")
            sidecar = merged_postprocess(job.result.processed_before, outcome.sidecar)
            # Merged in the same update: the earlier plugin data is not kept twice.
            result = job.result.but(postprocess=sidecar, processed_before=None)
            job = await self.parts.store.update(
                job.id,
                expect={JobStatus.PROCESSING},
                event="post-processed",
                warnings=[*job.warnings, *problems],
                files=now,
                result=_gate_keeper(result, replace(job, files=tuple(now))),
            )
            if problems:
                await self.parts.store.add_event(job.id, "plugin warnings", "; ".join(problems))
        elif job.result.postprocess is None or job.result.keeper is None:
            earlier = job.result.processed_before or {}
            result = job.result.but(
                postprocess=job.result.postprocess or dict(earlier), processed_before=None
            )
            job = await self.parts.store.update(
                job.id, expect={JobStatus.PROCESSING}, result=_gate_keeper(result, job)
            )
        checked = await self._retake_or_warn(job)
        if checked is None:
            return  # made again: the retake's takes come back to this stage
        job = await self._copy_keeper(checked)
        output = job.output_folder(self.parts.config.folders.output)
        # The body the last submission POSTed: the engine stores it (plugins' changes
        # included) before the POST, and nothing changes it while the job is processing.
        sent = without_secrets(await self.parts.store.api_body(job.id))

        def write_sidecar(done: Job, history: list[Event]) -> None:
            # Inside the transaction that commits `done`, from exactly what it commits.
            self._write_sidecar(done, self._sidecar(done, history, sent))

        done = await self.lifecycle.finish(
            job, f"{catalog.counted(len(job.files), 'file')} in {output}", write_sidecar
        )
        if done is None:
            log.info("job %s was cancelled before it was done: no sidecar", job.id)
            return
        log.info("%s", done_line(done))
        if done.album is not None:  # album.json, the playlist and, at the end, album gain
            await track_done(
                self.parts.store, self.parts.plugins, done.album, self.parts.config.folders.output
            )

    async def _retake_or_warn(self, job: Job) -> Job | None:
        """The quality gate's word once every take is judged: a job none of whose takes
        passed goes back to the queue for a retake when `[retakes]` and the budget allow
        (None: it did), else it is finished with the warning that no take passed."""
        config = self.parts.config
        failure = gate_failure(job, config)
        if failure is None:
            return job
        refusal: str | None
        if failure.asking:
            refusal = await retake_refusal(job, config, self.parts.budget)
        else:
            refusal = f"{', '.join(failure.codes)} not in [retakes] when"
        if refusal is None:
            plan = plan_retake(job, config, failure)
            number = len(job.result.retakes) + 1
            reason = retake_line(job, failure, number, config.retakes.max)
            if await self.lifecycle.retake(job, reason, **plan.fields) is not None:
                self.parts.ticker.wake("submit")
            return None
        if any(w.startswith(NO_PASS_WARNING) for w in job.warnings):
            return job  # said before a restart
        warning = f"{NO_PASS_WARNING} ({refusal})"
        log.warning("job %s (%s): %s", job.id, job.title, warning)
        job = await self.parts.store.update(
            job.id, expect={JobStatus.PROCESSING}, warnings=[*job.warnings, warning]
        )
        await self.parts.store.add_event(job.id, "no retake", f"{failure.reason}; {refusal}")
        return job

    async def _copy_keeper(self, job: Job) -> Job:
        """The keeper's copy in `[folders] keepers`, placed while the job is still
        `processing`: once a job is `done` its copy is settled, so a person's `keep` never
        races the delivery's copy. A folder that cannot be written is noted in the history
        and never holds the song back."""
        folder = self.parts.config.folders.keepers_folder
        if folder is None:
            return job
        try:
            copy = await asyncio.to_thread(place_copy, job, folder)
        except OSError as exc:
            await self.parts.store.add_event(
                job.id, "keeper not copied", f"{folder}: {exc.strerror or exc}"
            )
            return job
        if copy is None or copy == job.result.keeper_copy:
            return job
        return await self.parts.store.update(
            job.id, expect={JobStatus.PROCESSING}, result=job.result.but(keeper_copy=copy)
        )

    def _sidecar(
        self, job: Job, events: list[Event], sent: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The sidecar of a job as committed `done` (its history ends with that line).
        `request` is the song request (song-file names, after plugins); `sent` the
        `/release_task` body its last submission POSTed."""
        output = job.output_folder(self.parts.config.folders.output)
        history = [e.as_record() for e in events]
        generated = job.generated()
        plugins = dict(job.result.postprocess or {})
        # DESIGN pins the first-party quality plugin's figures at the top level, beside
        # `files` (per take, by file name): what a reader of the sidecar looks for first.
        quality = plugins.pop("quality", None)
        return {
            "job_id": job.id,
            "task_id": job.task_id,
            "server": job.server,
            "status": "done",
            "title": job.title,
            "model": job.model,
            "request": job.request,
            "sent": sent,
            # Every submission's cost: a retake paid again.
            "credits": job.credits + job.result.earlier_credits,
            "seeds": job.result.seeds,
            "metas": [take.metas for take in job.result.takes],
            # What the model wrote (Simple mode, thinking), only when it differs: the request
            # alone would not say what was sung.
            **({"generated": generated} if generated is not None else {}),
            "files": [f.stored(relative_to=output) for f in job.files],
            # The take to keep: the quality gate's best, or a person's choice (`keep`).
            "keeper": job.result.keeper,
            "keeper_by": job.result.keeper_by,
            **({"quality": quality} if quality is not None else {}),
            "source": job.source,
            "archived_as": job.archived_as,
            "warnings": list(job.warnings),
            "plugins": plugins,
            "created_at": iso(job.created_at),
            "completed_at": iso(job.completed_at),
            "history": history,
        }

    def _write_sidecar(self, job: Job, sidecar: dict[str, Any]) -> None:
        assert job.base_name is not None
        path = job.output_folder(self.parts.config.folders.output) / f"{job.base_name}.json"
        write_new_text(
            path, json.dumps(finite(sidecar), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        )


def _gate_keeper(result: JobResult, job: Job) -> JobResult:
    """The gate's keeper from the quality plugin's verdicts (without them: the take
    closest to the request, else the first); a person's choice is never overridden."""
    if result.keeper is not None:
        return result
    quality = (result.postprocess or {}).get("quality")
    duration = job.request.get("duration")
    keeper = gate_keeper(
        job.takes(),
        quality if isinstance(quality, Mapping) else None,
        float(duration) if isinstance(duration, int | float) else None,
    )
    return with_keeper(result, keeper, GATE)


def _describe_files(paths: list[Path]) -> list[JobFile]:
    from hashlib import sha256

    described = []
    for path in paths:
        digest = sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        described.append(JobFile(path, path.stat().st_size, digest.hexdigest()))
    return described


def _describe_present(paths: list[Path]) -> tuple[list[JobFile], list[Path]]:
    """The files that exist, described as they are now, and those that no longer exist."""
    present, gone = [], []
    for path in dict.fromkeys(paths):  # a plugin may return a path twice
        if path.is_file():
            present.append(path)
        else:
            gone.append(path)
    return _describe_files(present), gone


def _takes_at(stem: Path) -> list[Path]:
    """Audio files already named as this take (`stem.mp3`, ...): exactly the stem and one
    suffix, so the first take `song` never adopts the second take `song.take2.mp3`."""
    return [
        p
        for p in stem.parent.glob(f"{glob.escape(stem.name)}.*")
        if p.suffix.lower() in catalog.AUDIO_SUFFIXES and p.name == stem.name + p.suffix
    ]


def _placed_before_crash(stem: Path) -> JobFile | None:
    """A take placed before a crash that the store did not record yet.

    Linked into place with its `.part` name not yet removed (both names are one inode), or
    placed completely (no `.part` left): keep the verified file instead of downloading it
    again, which would leave an orphan `.part` behind the finished take. The base was
    reserved for this job, so a take under its name is this job's.
    """
    part = stem.with_name(stem.name + ".part")
    if not part.exists():
        return _adopt_existing(stem) if _takes_at(stem) else None
    for candidate in _takes_at(stem):
        if os.path.samefile(part, candidate):
            return _adopt_existing(stem)
    return None


def _adopt_existing(stem: Path) -> JobFile | None:
    """A take already renamed into place before a crash: the base was ours, so is the file."""
    part = stem.with_name(stem.name + ".part")
    for candidate in _takes_at(stem):
        # A crash between link and unlink leaves the same inode under both names.
        if part.exists() and os.path.samefile(part, candidate):
            part.unlink()
        return _describe_files([candidate])[0]
    return None
