"""One stable inbox file -> one job (moved to archive/) or a rejection (moved to failed/).

The order makes acceptance exactly-once: the job is committed with the drop's identity
before the file leaves the inbox, and a file whose identity already has a job is only
moved. A crash between the two, a restart, a rescan or a duplicate event cannot make a
second job. The disk work (reading, hashing, moving) runs on worker threads and the store
is awaited, so a burst of drops never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from bygheartd.config import Config, LiveConfig
from bygheartd.errors import BygheartdError, RequestError
from bygheartd.folders.moves import (
    FolderUnavailable,
    copy_no_clobber,
    fsync_dir,
    move_no_clobber,
    prepare_folder,
    unique_path,
    write_note,
)
from bygheartd.jobs import Job, JobStatus, Origin
from bygheartd.service.errors import DropTaken
from bygheartd.service.service import SongService
from bygheartd.service.submission import DropIdentity, Submission
from bygheartd.songs.albums import is_album_file
from bygheartd.songs.request import SongRequest
from bygheartd.songs.songfile import SUPPORTED_SUFFIXES
from bygheartd.watch.errors import Rejection, Unstable
from bygheartd.watch.ignore import IgnoreRules, PathKind

log = logging.getLogger(__name__)

OutcomeKind = Literal["accepted", "recovered", "rejected", "ignored", "unstable", "gone", "waiting"]


@dataclass(frozen=True)
class Outcome:
    """What became of one file. `waiting`: it stays in the inbox, untouched, because the
    folder it must move to (`waits_for`: archive/ or failed/) is unavailable."""

    kind: OutcomeKind
    path: Path
    job_id: str | None = None
    moved_to: Path | None = None
    message: str = ""
    waits_for: Path | None = None


def drop_identity(relative: str, size: int, mtime_ns: int, content_sha256: str, n: int = 0) -> str:
    """The identity of one drop; `n` > 0 numbers deliberate re-drops of the same file."""
    raw = f"{relative}\0{size}\0{mtime_ns}\0{content_sha256}" + (f"\0{n}" if n else "")
    return hashlib.sha256(raw.encode("utf-8", "surrogateescape")).hexdigest()


def preset_of(relative: PurePosixPath) -> str | None:
    """`inbox/<preset>/...` names a preset; files at the top level use `[defaults]`."""
    return relative.parts[0] if len(relative.parts) > 1 else None


class Intake:
    """Turns stable files into jobs; one decision at a time (a lock), moves in parallel."""

    def __init__(self, config: Config | LiveConfig, service: SongService) -> None:
        self.service = service
        start = LiveConfig.of(config).current
        self.inbox = start.folders.inbox  # folders change only with a restart
        self._rules = (tuple(start.watch.ignore), IgnoreRules(start.watch.ignore))
        self._decide = asyncio.Lock()

    @property
    def config(self) -> Config:
        """The service's config, so presets and [watch] rules follow a SIGHUP reload."""
        return self.service.config

    @property
    def rules(self) -> IgnoreRules:
        patterns = tuple(self.config.watch.ignore)
        if patterns != self._rules[0]:
            self._rules = (patterns, IgnoreRules(patterns))
        return self._rules[1]

    @property
    def max_bytes(self) -> int:
        return self.config.watch.max_file_kib * 1024

    def display(self, relative: PurePosixPath) -> str:
        return f"{self.inbox.name}/{relative.as_posix()}"

    async def process(self, path: Path) -> Outcome:
        """Take one file that the tracker found stable. Never raises for a bad file."""
        try:
            relative = PurePosixPath(path.relative_to(self.inbox).as_posix())
        except ValueError:
            return Outcome("ignored", path, message="outside the inbox")
        kind = self.rules.classify(relative)
        if kind in (PathKind.IGNORED, PathKind.AUDIO):
            return Outcome("ignored", path)
        try:
            info = await asyncio.to_thread(os.lstat, path)
        except FileNotFoundError:
            return Outcome("gone", path)
        try:
            return await self._process(path, relative, kind, info)
        except Rejection as rejection:
            try:
                return await asyncio.to_thread(self.reject, path, relative, rejection)
            except FileNotFoundError:  # it left the inbox meanwhile: nothing to move
                return Outcome("gone", path)
            except FolderUnavailable as exc:
                return Outcome("waiting", path, message=str(exc), waits_for=exc.root)
        except FolderUnavailable as exc:  # the file stays; the watcher waits for the folder
            return Outcome("waiting", path, message=str(exc), waits_for=exc.root)
        except Unstable:
            return Outcome("unstable", path)
        except FileNotFoundError:
            return Outcome("gone", path)

    async def _process(
        self, path: Path, relative: PurePosixPath, kind: PathKind, info: os.stat_result
    ) -> Outcome:
        if stat.S_ISLNK(info.st_mode):
            raise self._symlink(path)
        if not stat.S_ISREG(info.st_mode):
            return Outcome("ignored", path, message="not a regular file")
        if not _is_utf8(relative.as_posix()):  # SQLite, notes and logs need text
            raise Rejection.because(
                "has a name that is not valid UTF-8 text (written by a program or share that "
                "uses another character set)",
                hint="rename it (letters, digits, spaces and - are always safe)",
            )
        if kind is PathKind.OTHER:
            what = f"extension {relative.suffix!r}" if relative.suffix else "no extension"
            raise Rejection.because(
                f"is not a song file ({what})",
                hint=f"song files end in {', '.join(SUPPORTED_SUFFIXES)} (any case): "
                "rename or convert it",
            )
        preset = preset_of(relative)
        if preset is not None and preset not in self.config.presets:
            raise self._unknown_preset(preset)
        if info.st_size > self.max_bytes:  # rejected unread: never hash a huge file
            raise Rejection.because(
                f"is {info.st_size} bytes, over the limit of {self.max_bytes} bytes "
                f"([watch] max_file_kib = {self.config.watch.max_file_kib})",
                hint="song files are small text files; raise [watch] max_file_kib if this "
                "one is right",
            )
        data, content = await asyncio.to_thread(self._read, path, info)
        base = (relative.as_posix(), info.st_size, info.st_mtime_ns, content)
        async with self._decide:
            return await self._decide_and_accept(path, relative, preset, data, content, base)

    def _read(self, path: Path, info: os.stat_result) -> tuple[bytes, str]:
        """The file's bytes and their SHA-256, read once (on a worker thread)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except PermissionError:
            raise Rejection.because(
                "cannot be read (permission denied)",
                hint="make it readable by the user bygheartd runs as (chmod a+r)",
            ) from None
        try:
            with os.fdopen(fd, "rb") as handle:
                data = handle.read(self.max_bytes + 1)
                after = os.fstat(handle.fileno())
        except IsADirectoryError:
            raise Unstable from None
        if (after.st_size, after.st_mtime_ns) != (info.st_size, info.st_mtime_ns) or len(
            data
        ) != info.st_size:
            raise Unstable
        return data, hashlib.sha256(data).hexdigest()

    async def _decide_and_accept(
        self,
        path: Path,
        relative: PurePosixPath,
        preset: str | None,
        data: bytes,
        content: str,
        base: tuple[str, int, int, str],
    ) -> Outcome:
        archive = self.config.folders.archive
        if is_album_file(relative.name):  # an album: a job per track (watch/albums.py)
            from bygheartd.watch.albums import accept_album

            # No job before its file can leave the inbox: an unmounted archive share
            # leaves the drop as it is, to be queued once the share is back.
            await asyncio.to_thread(prepare_folder, archive / relative.parent, archive)
            duplicate = await self._live_duplicate(content, preset, None)
            if duplicate is not None and self.config.watch.on_duplicate == "skip":
                raise self._duplicate(relative, duplicate)  # a sync tool must not pay twice
            taken = await accept_album(
                self, path, relative, preset, data, content, drop_identity(*base)
            )
            kind: OutcomeKind = "recovered" if taken.recovered else "accepted"
            return Outcome(kind, path, job_id=taken.job_id, moved_to=taken.moved_to)
        n = 0
        earlier: Job | None = None
        while True:
            identity = drop_identity(*base, n=n)
            job = await self.service.find_drop(identity)
            if job is None:
                break
            if not await asyncio.to_thread(self._archived, job):
                # A crash after the insert and before the move: only finish the move.
                log.info("%s already has job %s: finishing its move", relative, job.id)
                return await self._archive(path, relative, job, recovered=True)
            earlier, n = job, n + 1
        duplicate = await self._live_duplicate(content, preset, earlier)
        if duplicate is not None and self.config.watch.on_duplicate == "skip":
            raise self._duplicate(relative, duplicate)
        request = await asyncio.to_thread(self._parse, path, relative, preset, data)
        # No job before its file can leave the inbox (see the album case above).
        await asyncio.to_thread(prepare_folder, archive / relative.parent, archive)
        # The archive name is recorded with the job, before the move: a crash between the
        # two can then only leave the file in the inbox, where the next scan finishes it.
        planned = await asyncio.to_thread(unique_path, archive / relative.parent, relative.name)
        submission = Submission(
            request,
            Origin.DROP,
            fallback_title=relative.stem,
            source=relative.as_posix(),
            source_path=path,
            drop=DropIdentity(identity, content, planned.relative_to(archive).as_posix()),
        )
        try:
            job = (await self.service.submit(submission)).job
        except DropTaken:  # another process took this exact drop just now
            raise Unstable from None
        log.info("accepted %s as job %s (%s)", relative, job.id, job.title)
        for warning in job.warnings:
            log.warning("%s", _printable(f"{relative} (job {job.id}): {warning}"))
        return await self._archive(path, relative, job, recovered=False, request=request)

    def _archived(self, job: Job) -> bool:
        """Whether this drop already reached the archive (else a crash stopped its move)."""
        if job.archived_as is None:
            return False
        return (self.config.folders.archive / job.archived_as).exists()

    async def _live_duplicate(
        self, content: str, preset: str | None, earlier: Job | None
    ) -> Job | None:
        """An earlier drop of identical bytes (same preset), or a `bygheartd submit` of them
        (no preset), that did not fail or get cancelled."""
        candidates = [earlier] if earlier is not None else []
        candidates += await self.service.jobs_with_content(content)
        for job in candidates:
            if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
                continue
            if job.origin == "drop" and preset_of(PurePosixPath(job.source or "")) == preset:
                return job
            if job.origin == "cli" and preset is None:
                return job
        return None

    def _parse(
        self, path: Path, relative: PurePosixPath, preset: str | None, data: bytes
    ) -> SongRequest:
        try:
            request = self.service.parse_bytes(
                data,
                name=self.display(relative),
                suffix=relative.suffix.lower(),
                preset=preset,
                base_dir=path.parent,
            )
        except RequestError as exc:
            raise Rejection(exc) from None
        except BygheartdError as exc:
            raise Rejection.because(str(exc)) from None
        for key in ("source_audio", "reference_audio"):
            audio = getattr(request, key)
            if audio and not (path.parent / audio).resolve().is_relative_to(self.inbox.resolve()):
                raise Rejection.because(
                    f"{key} {audio!r} points outside the inbox",
                    key=key,
                    hint="put the audio file in the inbox next to the song file and name it "
                    f"relative to it ({key}: take.wav)",
                )
        return request

    # -- moving -------------------------------------------------------------------------

    async def _archive(
        self,
        path: Path,
        relative: PurePosixPath,
        job: Job,
        *,
        recovered: bool,
        request: SongRequest | None = None,
    ) -> Outcome:
        """Move the file (exactly what was submitted) to archive/, mirroring subfolders."""
        archive = self.config.folders.archive
        target, source_path = await asyncio.to_thread(
            self._move_to_archive, path, relative, job, request
        )
        await self.service.set_archived(
            job.id, target.relative_to(archive).as_posix(), source_path=source_path
        )
        kind: OutcomeKind = "recovered" if recovered else "accepted"
        return Outcome(kind, path, job_id=job.id, moved_to=target)

    def _move_to_archive(
        self, path: Path, relative: PurePosixPath, job: Job, request: SongRequest | None
    ) -> tuple[Path, Path]:
        """On a worker thread: the move, and the audio the song names copied beside it.
        Returns where the song went and where its audio is found from now on."""
        archive = self.config.folders.archive
        planned = archive / job.archived_as if job.archived_as else None
        target = move_no_clobber(
            path,
            archive / relative.parent,
            planned.name if planned is not None else None,
            root=archive,
        )
        source_path = target
        for key in ("source_audio", "reference_audio"):
            audio = (getattr(request, key) if request else None) or job.request.get(key)
            if audio and not self._copy_source_audio(path.parent, target.parent, str(audio)):
                source_path = path  # the audio stays beside the inbox path, which the engine uses
        return target, source_path

    def _copy_source_audio(self, inbox_dir: Path, archive_dir: Path, relative: str) -> bool:
        """Copy `source_audio` next to the archived song, so its relative name still works."""
        src, dest = inbox_dir / relative, archive_dir / relative
        try:
            if not src.resolve().is_relative_to(self.inbox.resolve()):
                return False
            if not dest.resolve().is_relative_to(self.config.folders.archive.resolve()):
                return False
            if dest.exists():
                return _same_bytes(src, dest)
            copied = copy_no_clobber(src, dest.parent, dest.name, root=self.config.folders.archive)
            return copied == dest
        except OSError as exc:
            log.warning("could not copy source audio %s to the archive: %s", src, exc)
            return False

    def reject(self, path: Path, relative: PurePosixPath, rejection: Rejection) -> Outcome:
        """Move the file to failed/ (mirroring subfolders) and write NAME.error.txt beside it.

        The note's name is shortened when `NAME.error.txt` would be too long for the file
        system (a 255-byte song name). Once the file has moved, a note that still cannot be
        written is logged as that: the file is in failed/, not in the inbox.
        """
        failed = self.config.folders.failed
        if os.path.islink(path):  # moved as a link: a copy across devices would follow it
            target = _move_link(path, failed / relative.parent, failed)
        else:
            target = move_no_clobber(path, failed / relative.parent, root=failed)
        why = rejection.full or rejection.reason
        try:
            note = write_note(target, _printable(self._note(relative, target, rejection)))
        except OSError as exc:
            log.error(
                "%s",
                _printable(
                    f"rejected {relative}: moved to {target}, but its note could not be "
                    f"written there ({exc.strerror or exc}): {why}"
                ),
            )
            return Outcome("rejected", path, moved_to=target, message=rejection.reason)
        # A numbered note (NAME.error-2.txt) still starts with the name; a shortened one not.
        shortened = "shortened to " if not note.name.startswith(target.name) else ""
        log.warning(
            "%s", _printable(f"rejected {relative} -> {target}, note {shortened}{note.name}: {why}")
        )
        return Outcome("rejected", path, moved_to=target, message=rejection.reason)

    def _note(self, relative: PurePosixPath, target: Path, rejection: Rejection) -> str:
        """What is wrong, where, how to fix it: for each problem when there are several,
        so that one round of fixing is enough."""
        error = rejection.error
        lines = [f"{self.display(relative)} was not accepted (moved to {target}).", ""]
        if error.problems:
            lines.append(f"What is wrong: {len(error.problems)} problems")
            for number, problem in enumerate(error.problems, start=1):
                lines += ["", f"{number}. {problem.reason}"]
                lines += _where_and_fix(problem, indent="   ")
        else:
            lines.append(f"What is wrong: {rejection.reason}")
            lines += _where_and_fix(error, indent="")
        where = relative.parent if rejection.redrop is None else PurePosixPath(rejection.redrop)
        folder = (self.inbox / where).as_posix().rstrip("/")
        lines += [
            "",
            f"Then drop the file into the inbox again ({folder}/). Nothing was spent.",
        ]
        if rejection.full and rejection.full != rejection.reason and not error.problems:
            lines += ["", f"Full message: {rejection.full}"]
        return "\n".join(lines) + "\n"

    # -- rejection texts ----------------------------------------------------------------

    def _symlink(self, path: Path) -> Rejection:
        target = os.readlink(path)
        resolved = Path(os.path.realpath(path.parent / target))  # no raise on a link loop
        inside = resolved.is_relative_to(os.path.realpath(self.inbox))
        where = "inside" if inside else "outside"
        return Rejection.because(
            f"is a symbolic link (to {target}, {where} the inbox); links are not followed, "
            "so that the inbox cannot be used to read other files",
            hint="copy or move the song file itself into the inbox",
        )

    def _unknown_preset(self, preset: str) -> Rejection:
        nearest = self.config.nearest_preset(preset)
        known = ", ".join(sorted(self.config.presets)) or "none are configured"
        hint = f"did you mean '{nearest}'? " if nearest else ""
        return Rejection.because(
            f"is in the subfolder {preset}/, but there is no [presets.{preset}] (presets: {known})",
            hint=hint + f"move the file to the right preset folder or the inbox top level, "
            f"or add [presets.{preset}] to the config",
            redrop=nearest or "",
        )

    def _duplicate(self, relative: PurePosixPath, job: Job) -> Rejection:
        when = job.created_at.strftime("%Y-%m-%d %H:%M UTC")
        return Rejection.because(
            f"has exactly the same content as the file that made job {job.id} "
            f"({job.title!r}, {job.status.value}, created {when}"
            f"{', with bygheartd submit' if job.origin == 'cli' else ''}); it was not queued "
            "again, "
            "so that a sync tool re-delivering a file never spends credits twice "
            '([watch] on_duplicate = "skip")',
            hint="to make it again, change the file (a new title or a seed) or set "
            '[watch] on_duplicate = "allow"',
        )


def _where_and_fix(error: RequestError, *, indent: str) -> list[str]:
    """The `Where:` and `How to fix:` lines of one problem, when they are known."""
    lines = [f"{indent}Where: {error.spot()}"] if error.spot() else []
    if error.hint:
        lines.append(f"{indent}How to fix: {error.hint}")
    return lines


def _same_bytes(a: Path, b: Path) -> bool:
    def digest(p: Path) -> str:
        with open(p, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()

    return a.stat().st_size == b.stat().st_size and digest(a) == digest(b)


def _is_utf8(text: str) -> bool:
    """False for names with undecodable bytes (`os.fsdecode` keeps them as surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    """Undecodable bytes of a file name shown as escapes, so the note can be written."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _move_link(link: Path, directory: Path, root: Path) -> Path:
    """Move a symbolic link as a link, never its target's content, under a free name
    (`root`: the configured folder, as for `move_no_clobber`)."""
    prepare_folder(directory, root)
    target_text = os.readlink(link)
    while True:
        target = unique_path(directory, link.name)
        try:
            os.symlink(target_text, target)
        except FileExistsError:
            continue
        link.unlink()
        fsync_dir(directory)
        fsync_dir(link.parent)
        return target
