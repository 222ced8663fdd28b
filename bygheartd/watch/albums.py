"""An album dropped into the inbox (DESIGN.md "Albums"): `NAME.album.yaml` and the song files
of its `NAME.album/` folder become one album of jobs, or one rejection listing every
problem; nothing is queued from a bad album.

Exactly once, as for a song file: the tracks are committed with the drop's identity (one per
track) before the files leave the inbox; a crash between the two only finishes the move.
The album file and its `NAME.album/` folder are archived together.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from bygheartd.errors import BygheartdError, RequestError
from bygheartd.folders.moves import move_no_clobber, unique_path
from bygheartd.jobs import Job, Origin
from bygheartd.service.errors import DropTaken
from bygheartd.service.submission import DropIdentity
from bygheartd.songs.albums import AlbumRequest, album_folder_of, parse_album_bytes
from bygheartd.watch.errors import Rejection, Unstable

if TYPE_CHECKING:
    from bygheartd.config import Config
    from bygheartd.service.service import SongService


class Intake(Protocol):
    """What of the intake (watch/intake.py) an album needs."""

    @property
    def service(self) -> SongService: ...

    @property
    def config(self) -> Config: ...

    @property
    def inbox(self) -> Path: ...

    @property
    def max_bytes(self) -> int: ...

    def display(self, relative: PurePosixPath) -> str: ...


@dataclass(frozen=True)
class Accepted:
    """An album taken: its first track's job, where the album file went, and whether this
    only finished the move of an album queued before a crash."""

    job_id: str
    moved_to: Path
    recovered: bool


log = logging.getLogger(__name__)


def first_track_identity(identity: str) -> str:
    """The drop identity the album's first track records (each track has its own)."""
    return f"{identity}#track1"


async def accept_album(
    intake: Intake,
    path: Path,
    relative: PurePosixPath,
    preset: str | None,
    data: bytes,
    content: str,
    identity: str,
) -> Accepted:
    """Called under the intake's decision lock, with the album file read once (and checked
    for a live duplicate: `[watch] on_duplicate`)."""
    known = await intake.service.find_drop(first_track_identity(identity))
    if known is not None:
        log.info("%s already has album %s: finishing its move", relative, known.album)
        return await _archive(intake, path, relative, known, recovered=True)
    request = await asyncio.to_thread(_parse, intake, path, relative, preset, data)
    archive = intake.config.folders.archive
    planned = await asyncio.to_thread(unique_path, archive / relative.parent, relative.name)
    try:
        view = await intake.service.submit_album(
            request,
            Origin.DROP,
            source=relative.as_posix(),
            source_path=path,
            drop=DropIdentity(identity, content, planned.relative_to(archive).as_posix()),
        )
    except DropTaken:  # another process took this exact drop just now
        raise Unstable from None
    cost = sum(j.credits for j in view.tracks)
    log.info(
        "accepted %s as album %s (%r, %d tracks, %d credits)",
        relative,
        view.album.id,
        view.album.title,
        len(view.tracks),
        cost,
    )
    return await _archive(intake, path, relative, view.tracks[0], recovered=False)


def _parse(
    intake: Intake, path: Path, relative: PurePosixPath, preset: str | None, data: bytes
) -> AlbumRequest:
    try:
        request = parse_album_bytes(
            data,
            intake.service.rules(preset),
            name=intake.display(relative),
            base_dir=path.parent,
            folder=album_folder_of(path),
            max_bytes=intake.max_bytes,
        )
    except RequestError as exc:
        raise Rejection(exc) from None
    except BygheartdError as exc:
        raise Rejection.because(str(exc)) from None
    inbox = intake.inbox.resolve()
    folder = album_folder_of(path).resolve()
    for track in request.tracks:
        if track.file is not None and not track.file.is_relative_to(folder):
            # Beside the album file it would also be taken alone, as a song of its own.
            raise Rejection.because(
                f"track {track.number}: {track.file.name} is beside the album file in the "
                "inbox, where it would also be made on its own",
                key="file",
                hint=f"put the album's song files in the folder {folder.name}/ beside it",
            )
        beside = track.file.parent if track.file is not None else path.parent
        for key in ("source_audio", "reference_audio"):
            audio = getattr(track.request, key)
            if audio and not (beside / audio).resolve().is_relative_to(inbox):
                raise Rejection.because(
                    f"track {track.number}: {key} {audio!r} points outside the inbox",
                    key=key,
                    hint="put the audio file in the album's folder and name it relative to "
                    "the song file",
                )
    return request


async def _archive(
    intake: Intake, path: Path, relative: PurePosixPath, first: Job, *, recovered: bool
) -> Accepted:
    """The album file to archive/ (its planned name), its `NAME.album/` folder beside it."""
    target, folder = await asyncio.to_thread(_move, intake, path, relative, first)
    archive = intake.config.folders.archive
    archived_as = target.relative_to(archive).as_posix()
    assert first.album is not None
    view = await intake.service.album(first.album)
    for job in view.tracks:
        await intake.service.set_archived(
            job.id, archived_as, source_path=_moved(job, path, target, folder)
        )
    return Accepted(first.id, target, recovered)


def _moved(job: Job, album_file: Path, target: Path, folder: Path | None) -> Path:
    """Where a track's song file is found once archived (its audio is beside it): in the
    archived `NAME.album/` for a `file:` track, else the archived album file."""
    old = album_folder_of(album_file)
    own = Path(job.source) if job.source else None
    if folder is not None and own is not None and own.is_relative_to(old):
        return folder / own.relative_to(old)
    return target


def _move(
    intake: Intake, path: Path, relative: PurePosixPath, first: Job
) -> tuple[Path, Path | None]:
    archive = intake.config.folders.archive
    planned = archive / first.archived_as if first.archived_as else None
    target = move_no_clobber(
        path,
        archive / relative.parent,
        planned.name if planned is not None else None,
        root=archive,
    )
    folder = album_folder_of(path)
    moved: Path | None = None
    if folder.is_dir():
        moved = unique_path(target.parent, album_folder_of(target).name)
        shutil.move(str(folder), str(moved))
    return target, moved
