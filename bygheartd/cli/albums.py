"""Albums on the command line: `submit NAME.album.yaml` (the whole cost said before anything
is spent), the albums under `list`, `show ALBUM` and `follow ALBUM`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bygheartd.catalog import credits_phrase
from bygheartd.cli.display import ago, shown
from bygheartd.jobs import Job, Origin

if TYPE_CHECKING:
    from rich.console import Console

    from bygheartd.service.albums import AlbumView
    from bygheartd.service.service import SongService


def is_album_path(path: object) -> bool:
    from bygheartd.songs.albums import is_album_file

    return isinstance(path, Path) and is_album_file(path)


async def submit_album(
    service: SongService, path: Path, preset: str | None, *, as_json: bool
) -> list[Job]:
    """Validate the whole album, say what it costs, then queue a job per track."""
    request = service.parse_album(path, preset=preset, display=str(path))
    outlook = await service.album_outlook(request)
    if not as_json:  # the cost of the whole album, before the engine spends anything
        print(f"album {shown(request.title)!r}: {len(request.tracks)} tracks, {outlook.text()}")
        for track in request.tracks:
            for warning in track.request.warnings():
                print(f"warning: {path}: track {track.number}: {warning}", file=sys.stderr)
    view = await service.submit_album(
        request,
        Origin.CLI,
        source=str(path.absolute()),
        source_path=path.resolve(),
    )
    return list(view.tracks)


def albums_lines(views: list[AlbumView]) -> list[str]:
    """`0hk3a4bx Night Drive (The Night Shift)  2/3 done  6 credits  5 minutes ago`."""
    lines = []
    for view in views:
        album = view.album
        artist = f" ({shown(album.artist)})" if album.artist else ""
        lines.append(
            f"{album.id}  {shown(album.title)}{artist}  {view.done}/{album.tracks} done  "
            f"{credits_phrase(view.cost)}  {ago(album.created_at)}"
        )
    return lines


def print_album(console: Console, view: AlbumView, root: Path) -> None:
    """`show ALBUM`: the album, then its tracks in order with status and keeper."""
    album = view.album
    print(f"album {album.id}: {shown(album.title)}")
    if album.artist:
        print(f"artist: {shown(album.artist)}")
    length = f", {view.seconds:.0f} s" if view.seconds else ""
    print(
        f"status: {view.status} ({view.done} of {album.tracks} tracks done{length}), "
        f"{credits_phrase(view.cost)}"
    )
    print(f"folder: {view.folder(root)}")
    print(f"playlist: {view.playlist(root)}")
    for job in view.tracks:
        keeper = job.keeper_record()
        where = f"  {Path(keeper['path']).name}" if keeper else ""
        reason = f": {shown(job.reason)}" if job.reason and job.status.value != "done" else ""
        print(f"  {job.track:>2}. {shown(job.title)}  [{job.id}] {job.status.value}{reason}{where}")


async def job_ids_of(service: SongService, ref: str) -> list[str]:
    """A job's id, or the track jobs of an album (by id or title): what `follow` follows."""
    from bygheartd.service.errors import ServiceError

    try:
        return [(await service.get(ref)).id]
    except ServiceError as not_a_job:
        try:
            view = await service.album(ref)
        except ServiceError:
            raise ServiceError(f"{not_a_job} (and no album has that id or title)") from None
        return [job.id for job in view.tracks]
