"""An album to take away (the library page's album downloads): its playlist with paths
relative to itself, and the files a zip of the album holds.

Only files the store recorded for the album's tracks go out, plus the album's own
`album.json` and playlist (the engine writes both into the album folder), each resolved
and checked to be inside the output folder, as the page's audio route checks a take: a
link planted in the output folder never carries anything else out. Every file sits flat
in one folder named after the album (as on disk), so the playlist's bare file names work
both unzipped and beside the files downloaded one by one.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from bygheartd.engine.albums import ALBUM_JSON, keeper_seconds, playlist_name
from bygheartd.jobs import JobStatus
from bygheartd.service.albums import AlbumView

__all__ = ["AlbumFile", "album_files", "inside", "playlist", "zip_chunks"]

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class AlbumFile:
    """One file of an album download: its name in the album's folder and where it is."""

    name: str
    path: Path
    job_id: str | None  # the track it was recorded for; None for album.json


def inside(path: Path, root: Path) -> Path | None:
    """`path` resolved, when it is a regular file inside `root` (blocking: it resolves)."""
    try:
        real = path.resolve(strict=True)
        top = root.resolve()
    except OSError:
        return None
    return real if real.is_relative_to(top) and real.is_file() else None


def album_files(view: AlbumView, root: Path) -> list[AlbumFile]:
    """The files recorded for the album's tracks, in track order, then `album.json`: each
    still there and inside the output folder `root`; one file per name (blocking)."""
    found: list[AlbumFile] = []
    names: set[str] = set()
    for job in view.tracks:
        for recorded in job.files:
            real = inside(recorded.path, root)
            if real is not None and recorded.path.name not in names:
                names.add(recorded.path.name)
                found.append(AlbumFile(recorded.path.name, real, job.id))
    document = inside(view.folder(root) / ALBUM_JSON, root)
    if document is not None and ALBUM_JSON not in names:
        found.append(AlbumFile(ALBUM_JSON, document, None))
    return found


def playlist(view: AlbumView) -> tuple[str, str]:
    """(file name, text) of the album's `.m3u8`: the keepers of the done tracks in track
    order, each by its bare file name (the files sit beside it); the same lines the engine
    writes into the album folder."""
    lines = ["#EXTM3U", f"#PLAYLIST:{_one_line(view.album.title)}"]
    who = f"{_one_line(view.album.artist)} - " if view.album.artist else ""
    for job in view.tracks:
        keeper = job.keeper_record()
        if job.status is not JobStatus.DONE or keeper is None:
            continue
        seconds = keeper_seconds(job)
        lines.append(f"#EXTINF:{round(seconds) if seconds else -1},{who}{_one_line(job.title)}")
        lines.append(Path(keeper["path"]).name)
    return playlist_name(view.album), "\n".join(lines) + "\n"


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


class _Spout:
    """A write-only stream the zip writes into; the bytes are taken out as they come."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None

    def drain(self) -> Iterator[bytes]:
        """What was written since the last drain, as one piece (nothing when empty)."""
        if self.parts:
            out = b"".join(self.parts)
            self.parts.clear()
            yield out


def zip_chunks(
    folder: str, files: Sequence[AlbumFile], playlist_text: tuple[str, str]
) -> Iterator[bytes]:
    """The zip of an album, made as it is sent (blocking: iterate it in a thread): every
    file under `folder/`, stored as it is (audio does not compress), then the playlist.
    A file that disappears meanwhile is left out."""
    spout = _Spout()
    with zipfile.ZipFile(cast(IO[bytes], spout), "w", compression=zipfile.ZIP_STORED) as archive:
        for item in files:
            try:
                source = item.path.open("rb")
            except OSError:
                continue
            with source:
                info = zipfile.ZipInfo.from_file(item.path, f"{folder}/{item.name}")
                info.compress_type = zipfile.ZIP_STORED
                big = info.file_size > zipfile.ZIP64_LIMIT // 2
                with archive.open(info, "w", force_zip64=big) as entry:
                    while chunk := source.read(CHUNK):
                        entry.write(chunk)
                        yield from spout.drain()
            yield from spout.drain()
        name, text = playlist_text
        archive.writestr(f"{folder}/{name}", text.encode("utf-8"))
    yield from spout.drain()
