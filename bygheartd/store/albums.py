"""Albums in the store (DESIGN.md "Albums"): one `albums` row and a job per track, stored in
one transaction (an album is queued whole or not at all), for SQLite and PostgreSQL alike.

The album's folder under the output folder is decided here, inside that transaction: the
first of `slug`, `slug-2`, ... that no other album holds and that is not taken on disk.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bygheartd.jobs import JobStatus, iso, utcnow
from bygheartd.store.columns import dumps, new_job_id

if TYPE_CHECKING:
    import sqlite3

    from psycopg import AsyncConnection

# The columns of a track's job row, in the order of `_track_values`.
_TRACK_COLUMNS = (
    "id, status, title, model, request_json, api_body_json, credits, source, source_path, "
    "origin, drop_identity, content_sha256, dedupe_key, archived_as, created_at, updated_at, "
    "output, album, track, album_title, album_artist, album_tracks"
)
_ALBUM_COLUMNS = "id, title, artist, tracks, folder, output, source, origin, credits, created_at"


@dataclass(frozen=True)
class NewTrack:
    """One track's job as the service hands it to the store."""

    title: str
    model: str | None
    request: Mapping[str, Any]
    api_body: Mapping[str, Any]
    credits: int
    source: str | None = None
    source_path: str | None = None
    drop_identity: str | None = None
    content_sha256: str | None = None
    dedupe_key: str | None = None
    archived_as: str | None = None


@dataclass(frozen=True)
class NewAlbum:
    """An album to store: what it is, and its tracks in order (track numbers from 1)."""

    title: str
    artist: str | None
    slug: str
    tracks: Sequence[NewTrack]
    output: str | None = None
    source: str | None = None
    origin: str = "cli"
    # Names already in the output folder: the album's folder is none of them.
    taken: Collection[str] = field(default_factory=frozenset)

    @property
    def credits(self) -> int:
        return sum(t.credits for t in self.tracks)


def _free_folder(album: NewAlbum, used: Collection[str]) -> str:
    n = 1
    while True:
        name = album.slug if n == 1 else f"{album.slug}-{n}"
        if name not in used and name not in album.taken:
            return name
        n += 1


def _rows(album: NewAlbum, folder: str) -> tuple[tuple[Any, ...], list[tuple[Any, ...]], str]:
    """The album row, the track rows, and the album's id."""
    now = iso(utcnow())
    album_id = new_job_id()
    head = (
        album_id,
        album.title,
        album.artist,
        len(album.tracks),
        folder,
        album.output,
        album.source,
        album.origin,
        album.credits,
        now,
    )
    rows = []
    for number, track in enumerate(album.tracks, start=1):
        rows.append(
            (
                new_job_id(),
                JobStatus.QUEUED.value,
                track.title,
                track.model,
                dumps(dict(track.request)),
                dumps(dict(track.api_body)),
                track.credits,
                track.source,
                track.source_path,
                album.origin,
                track.drop_identity,
                track.content_sha256,
                track.dedupe_key,
                track.archived_as,
                now,
                now,
                album.output,
                album_id,
                number,
                album.title,
                album.artist,
                len(album.tracks),
            )
        )
    return head, rows, album_id


def _created(album: NewAlbum, number: int) -> str:
    return f"from {album.origin}: track {number} of {len(album.tracks)} of {album.title!r}"


def insert_sqlite(db: sqlite3.Connection, album: NewAlbum) -> tuple[str, list[str]]:
    """Inside the caller's transaction: the album and its tracks; (album id, job ids)."""
    used = {
        str(r[0])
        for r in db.execute(
            "SELECT folder FROM albums WHERE folder = ? OR folder LIKE ?",
            (album.slug, album.slug + "-%"),
        )
    }
    head, rows, album_id = _rows(album, _free_folder(album, used))
    db.execute(f"INSERT INTO albums ({_ALBUM_COLUMNS}) VALUES ({','.join('?' * len(head))})", head)
    marks = ",".join("?" * len(rows[0]))
    for number, row in enumerate(rows, start=1):
        db.execute(f"INSERT INTO jobs ({_TRACK_COLUMNS}) VALUES ({marks})", row)
        db.execute(
            "INSERT INTO events (job_id, at, event, from_status, to_status, reason) "
            "VALUES (?,?,?,?,?,?)",
            (row[0], row[14], "created", None, "queued", _created(album, number)),
        )
    return album_id, [str(r[0]) for r in rows]


async def insert_postgres(db: AsyncConnection[Any], album: NewAlbum) -> tuple[str, list[str]]:
    """As `insert_sqlite`, inside the caller's PostgreSQL transaction; a lock on the albums
    table makes two daemons that queue albums of one title choose folders one at a time."""
    await db.execute("LOCK TABLE albums IN SHARE ROW EXCLUSIVE MODE")
    cursor = await db.execute(
        "SELECT folder FROM albums WHERE folder = %s OR folder LIKE %s",
        (album.slug, album.slug + "-%"),
    )
    used = {str(r["folder"]) for r in await cursor.fetchall()}
    head, rows, album_id = _rows(album, _free_folder(album, used))
    await db.execute(
        f"INSERT INTO albums ({_ALBUM_COLUMNS}) VALUES ({','.join(['%s'] * len(head))})", head
    )
    marks = ",".join(["%s"] * len(rows[0]))
    for number, row in enumerate(rows, start=1):
        await db.execute(f"INSERT INTO jobs ({_TRACK_COLUMNS}) VALUES ({marks})", row)
        await db.execute(
            "INSERT INTO events (job_id, at, event, from_status, to_status, reason) "
            "VALUES (%s,%s,%s,%s,%s,%s)",
            (row[0], row[14], "created", None, "queued", _created(album, number)),
        )
    return album_id, [str(r[0]) for r in rows]


# Reading: the same SQL on both stores but for the placeholder.
def album_by_id_sql(mark: str) -> str:
    return f"SELECT * FROM albums WHERE id = {mark}"


def albums_by_ref_sql(mark: str) -> str:
    """An id prefix (a range on the key) or the exact title, case-insensitively."""
    return (
        f"SELECT * FROM albums WHERE (id >= {mark} AND id < {mark}) "
        f"OR LOWER(title) = LOWER({mark}) ORDER BY id DESC LIMIT 10"
    )


def list_albums_sql(mark: str) -> str:
    return f"SELECT * FROM albums ORDER BY id DESC LIMIT {mark}"


def album_jobs_sql(mark: str) -> str:
    return f"SELECT * FROM jobs WHERE album = {mark} ORDER BY track, id"
