"""Albums for every face (DESIGN.md "Albums"): queue one whole, read one back.

An album is validated whole before this is reached (songs/albums.py); here it becomes an
`albums` row and a queued job per track in one store transaction, so a crash never leaves
half an album queued. `AlbumView` is what the CLI, MCP and the library page show: the
album, its tracks in order, their keepers, the total length and the cost.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bygheartd.engine.albums import keeper_seconds, playlist_name, refresh_album
from bygheartd.jobs import Album, Job, JobStatus, Origin
from bygheartd.service.errors import ServiceError
from bygheartd.store.albums import NewAlbum, NewTrack
from bygheartd.store.boundary import JobStore
from bygheartd.store.errors import JobNotFound

if TYPE_CHECKING:
    from bygheartd.service.submission import DropIdentity
    from bygheartd.songs.albums import AlbumRequest


@dataclass(frozen=True)
class AlbumView:
    """An album with its tracks (jobs, in track order): what every face shows of it."""

    album: Album
    tracks: tuple[Job, ...]

    @property
    def cost(self) -> int:
        """Credits the album's tracks cost as queued (retakes add theirs when made)."""
        return sum(j.credits for j in self.tracks)

    @property
    def status(self) -> str:
        """`done` once every track is; `failed` when a track failed or was cancelled and
        the rest are over; else `making`."""
        if all(j.status is JobStatus.DONE for j in self.tracks):
            return "done"
        if all(j.status.is_final for j in self.tracks):
            return "failed"
        return "making"

    @property
    def done(self) -> int:
        return sum(1 for j in self.tracks if j.status is JobStatus.DONE)

    def keepers(self) -> list[dict[str, Any] | None]:
        """Each track's keeper (`{take, path, uri, by}`) in order; None while not done."""
        return [j.keeper_record() for j in self.tracks]

    @property
    def seconds(self) -> float | None:
        """The keepers' total length (as the server reported each), None before any."""
        lengths = [s for s in (keeper_seconds(j) for j in self.tracks) if s is not None]
        return round(sum(lengths), 2) if lengths else None

    def folder(self, root: Path) -> Path:
        """Where its tracks are (or will be)."""
        placed = next((j.output for j in self.tracks if j.base_name and j.output), None)
        return Path(placed) if placed else root / self.album.folder

    def playlist(self, root: Path) -> Path:
        return self.folder(root) / playlist_name(self.album)

    def as_record(self, root: Path) -> dict[str, Any]:
        """The album in `--json` output and MCP replies."""
        return {
            **self.album.as_record(),
            "status": self.status,
            "done": self.done,
            "seconds": self.seconds,
            "credits": self.cost,
            "folder": str(self.folder(root)),
            "playlist": str(self.playlist(root)),
            "track_jobs": [
                {
                    "track": j.track,
                    "id": j.id,
                    "title": j.title,
                    "status": j.status.value,
                    "keeper": j.keeper_record(),
                    "seconds": keeper_seconds(j),
                    "credits": j.credits,
                }
                for j in self.tracks
            ],
        }


def new_album(
    request: AlbumRequest,
    *,
    backend: str,
    origin: Origin,
    output: Path,
    source: str | None,
    source_path: Path | None,
    drop: DropIdentity | None = None,
) -> NewAlbum:
    """What the store needs to queue `request` (one job per track)."""
    tracks = []
    for track in request.tracks:
        req = track.request
        # A track's own song file is its source (its audio is beside it); else the album's.
        own = track.file
        tracks.append(
            NewTrack(
                title=track.title,
                model=req.model,
                request=req.model_dump(mode="json", exclude_none=True),
                api_body=req.to_api_body(),
                credits=req.credit_cost(backend),
                source=(str(own) if own else source),
                source_path=str(own or source_path) if (own or source_path) else None,
                drop_identity=f"{drop.identity}#track{track.number}" if drop else None,
                content_sha256=drop.content_sha256 if drop else None,
                dedupe_key=hashlib.sha256(req.canonical_json().encode()).hexdigest(),
                archived_as=drop.archived_as if drop and drop.archived_as else None,
            )
        )
    try:
        taken = frozenset(os.listdir(output))
    except OSError:
        taken = frozenset()
    return NewAlbum(
        title=request.title,
        artist=request.artist,
        slug=request.slug,
        tracks=tracks,
        output=str(output),
        source=source,
        origin=origin.value,
        taken=taken,
    )


async def album_view(store: JobStore, ref: str) -> AlbumView:
    """An album by id, unique id prefix (6+ characters) or title (newest of that title)."""
    try:
        album = await store.get_album(ref.strip())
    except JobNotFound:
        found = await store.find_albums(ref)
        if not found:
            raise ServiceError(
                f"no album {ref!r}: `bygheartd list` shows the albums and their ids"
            ) from None
        by_id = [a for a in found if a.id.startswith(ref.strip().lower())]
        if len(by_id) > 1:
            raise ServiceError(f"{ref!r} matches several albums: give more characters") from None
        album = by_id[0] if by_id else found[0]
    return AlbumView(album, tuple(await store.album_jobs(album.id)))


async def album_views(store: JobStore, limit: int | None = None) -> Sequence[AlbumView]:
    return [
        AlbumView(a, tuple(await store.album_jobs(a.id))) for a in await store.list_albums(limit)
    ]


async def refresh(store: JobStore, job: Job, root: Path) -> None:
    """The album files again (a keeper changed)."""
    if job.album is not None:
        await refresh_album(store, job.album, root)
