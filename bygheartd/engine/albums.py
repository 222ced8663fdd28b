"""An album's folder (DESIGN.md "Albums"): where its tracks go, how they are named, and the
two files that describe it, `album.json` and `<album-slug>.m3u8` (the keepers in track
order).

Both files are the album's own and are rewritten from the store whenever a track is done or
a keeper changes (atomically: a player never reads half a playlist). A track's audio and
sidecar follow the usual rules (never overwritten).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bygheartd.jobs import Album, Job, JobFile, JobStatus, finite, iso, utcnow
from bygheartd.store.boundary import JobStore

if TYPE_CHECKING:
    from bygheartd.hooks.host import PluginHost

log = logging.getLogger(__name__)

ALBUM_JSON = "album.json"


def track_title(job: Job) -> str:
    """What a track's files are named after: `01 Neon On` -> `01-neon-on`."""
    width = max(2, len(str(job.album_tracks or 0)))
    return f"{job.track or 0:0{width}d} {job.title}"


def album_folder(root: Path, album: Album) -> Path:
    return root / album.folder


def playlist_name(album: Album) -> str:
    return f"{album.folder}.m3u8"


def keeper_seconds(job: Job) -> float | None:
    """The keeper's length as the server reported it (its metas), else None."""
    keeper = job.keeper_record()
    if keeper is None or not job.result.takes:
        return None
    index = keeper["take"] - 1
    if index >= len(job.result.takes):
        return None
    value = job.result.takes[index].metas.get("duration")
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return seconds if seconds is not None and seconds > 0 else None


def album_document(album: Album, jobs: Sequence[Job]) -> dict[str, Any]:
    """`album.json`: title, artist, and each track with its job id, keeper and length."""
    tracks = []
    for job in jobs:
        keeper = job.keeper_record()
        folder = Path(job.output) if job.output else None
        path = Path(keeper["path"]) if keeper else None
        tracks.append(
            {
                "track": job.track,
                "title": job.title,
                "job_id": job.id,
                "status": job.status.value,
                "keeper": (
                    path.name if path and folder and path.parent == folder else keeper["path"]
                )
                if keeper and path
                else None,
                "seconds": keeper_seconds(job),
                "credits": job.credits,
            }
        )
    lengths = [float(s) for s in (keeper_seconds(j) for j in jobs) if s is not None]
    return {
        "album_id": album.id,
        "title": album.title,
        "artist": album.artist,
        "tracks": tracks,
        "track_count": album.tracks,
        "seconds": round(sum(lengths), 2) if lengths else None,
        "credits": sum(j.credits for j in jobs),
        "created_at": iso(album.created_at),
        "updated_at": iso(utcnow()),
    }


def playlist_text(album: Album, jobs: Sequence[Job], folder: Path) -> str:
    """An extended M3U of the keepers of the done tracks, in track order, relative paths."""
    lines = ["#EXTM3U", f"#PLAYLIST:{_one_line(album.title)}"]
    for job in jobs:
        keeper = job.keeper_record()
        if job.status is not JobStatus.DONE or keeper is None:
            continue
        path = Path(keeper["path"])
        seconds = keeper_seconds(job)
        who = f"{_one_line(album.artist)} - " if album.artist else ""
        lines.append(f"#EXTINF:{round(seconds) if seconds else -1},{who}{_one_line(job.title)}")
        lines.append(path.name if path.parent == folder else str(path))
    return "\n".join(lines) + "\n"


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _write_atomically(path: Path, text: str) -> None:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(name, 0o644)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def write_album_files(album: Album, jobs: Sequence[Job], folder: Path, plugins: Any = None) -> None:
    """Write `album.json` and the playlist into the album's folder (it must exist);
    `plugins`: what `on_album_complete` plugins recorded (under `plugins`)."""
    document = album_document(album, jobs)
    if plugins:
        document["plugins"] = plugins
    text = json.dumps(finite(document), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    # album.json last: once it says a track is done, the playlist already has it.
    _write_atomically(folder / playlist_name(album), playlist_text(album, jobs, folder))
    _write_atomically(folder / ALBUM_JSON, text)


def _lock(album_id: str) -> asyncio.Lock:
    # Tracks finish together: one refresh at a time per album, each from a fresh read, so
    # an older read never overwrites a newer one.
    return _locks.setdefault((id(asyncio.get_running_loop()), album_id), asyncio.Lock())


async def refresh_album(store: JobStore, album_id: str, root: Path) -> Path | None:
    """Rewrite the album's files from the store, into the folder its done tracks are in
    (else `root`/its folder); None when no track is delivered yet. Never raises for a
    folder that cannot be written: it is logged, and the next change writes them again."""
    async with _lock(album_id):
        return await _refresh(store, album_id, root)


async def _refresh(store: JobStore, album_id: str, root: Path) -> Path | None:
    album = await store.get_album(album_id)
    jobs = await store.album_jobs(album_id)
    delivered = [j for j in jobs if j.base_name and j.output]
    if not delivered:
        return None
    folder = Path(delivered[0].output or album_folder(root, album))
    plugins = json.loads(await store.get_meta(_plugins_key(album_id)) or "null")
    try:
        await asyncio.to_thread(write_album_files, album, jobs, folder, plugins)
    except OSError as exc:
        log.warning("album %s: cannot write its files in %s: %s", album.id, folder, exc)
        return None
    return folder


def _plugins_key(album_id: str) -> str:
    return f"album.{album_id}.plugins"


def _done_key(album_id: str) -> str:
    return f"album.{album_id}.complete"


async def track_done(
    store: JobStore, plugins: PluginHost | None, album_id: str, root: Path
) -> None:
    """A track is done: the album's files follow, and once every track is done, plugins
    post-process the album whole (`on_album_complete`: one album gain), exactly once.

    The store records that the album was completed before any plugin runs, so a crash in
    the middle never applies an album gain twice (it is then left out, and logged)."""
    async with _lock(album_id):
        jobs = await store.album_jobs(album_id)
        complete = bool(jobs) and all(j.status is JobStatus.DONE for j in jobs)
        if complete and plugins is not None and not await store.get_meta(_done_key(album_id)):
            await store.set_meta(_done_key(album_id), iso(utcnow()) or "")
            album = await store.get_album(album_id)
            await _post_process(store, plugins, album, jobs)
        await _refresh(store, album_id, root)


async def _post_process(
    store: JobStore, plugins: PluginHost, album: Album, jobs: Sequence[Job]
) -> None:
    files = [f.path for job in jobs for f in job.takes()]
    info = {"id": album.id, "title": album.title, "artist": album.artist, "tracks": album.tracks}
    outcome = await plugins.on_album_complete(info, list(jobs), files)
    for job in jobs:  # plugins rewrite files in place: records follow the disk
        now = await asyncio.to_thread(_described, [f.path for f in job.files])
        if list(now) != list(job.files):
            await store.update(job.id, event="album post-processed", files=now)
            folder = Path(job.output) if job.output else None
            if folder is not None and job.base_name:
                await asyncio.to_thread(
                    _sidecar_files, folder / f"{job.base_name}.json", now, folder
                )
    data: dict[str, Any] = dict(outcome.sidecar)
    if outcome.failures:
        data["warnings"] = [str(f) for f in outcome.failures]
    await store.set_meta(_plugins_key(album.id), json.dumps(data, ensure_ascii=False))


def _described(paths: list[Path]) -> list[JobFile]:
    """Files as they are on disk now (size, SHA-256); gone ones left out."""
    out = []
    for path in paths:
        if not path.is_file():
            continue
        with open(path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        out.append(JobFile(path, path.stat().st_size, digest))
    return out


def _sidecar_files(path: Path, files: list[JobFile], folder: Path) -> None:
    """A finished track's sidecar with its `files` described again (after the album gain)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    data["files"] = [f.stored(relative_to=folder) for f in files]
    _write_atomically(
        path, json.dumps(finite(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    )


_locks: dict[tuple[int, str], asyncio.Lock] = {}
