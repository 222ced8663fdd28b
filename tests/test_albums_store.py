"""Albums in the store (issue 26): stores made by the release before albums (SQLite schema 5,
PostgreSQL schema 1) are brought up to date with their jobs intact, and `store migrate`
copies the albums with the jobs that name them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from bygheartd.store.albums import NewAlbum, NewTrack
from bygheartd.store.migrate import copy_to_postgres
from bygheartd.store.pg_schema import PG_MIGRATIONS, PG_SCHEMA_VERSION, VERSION_TABLE
from bygheartd.store.postgres import PostgresJobStore
from bygheartd.store.schema import MIGRATIONS, SCHEMA_VERSION
from bygheartd.store.store import Store

NOW = "2026-12-01T10:00:00.000Z"


def _album(tracks: int = 2) -> NewAlbum:
    return NewAlbum(
        title="Night Drive",
        artist="The Night Shift",
        slug="night-drive",
        tracks=[
            NewTrack(
                title=f"Track {n}",
                model=None,
                request={"style": "synthwave", "lyrics": f"line {n}"},
                api_body={"prompt": "synthwave"},
                credits=2,
            )
            for n in range(1, tracks + 1)
        ],
    )


def _old_sqlite(path: Path) -> None:
    """A store exactly as schema 5 left it, with one job."""
    db = sqlite3.connect(path)
    for version in range(1, 6):
        db.executescript(MIGRATIONS[version])
    db.execute("PRAGMA user_version = 5")
    db.execute(
        "INSERT INTO jobs (id, status, title, request_json, api_body_json, created_at, "
        "updated_at) VALUES ('0old0job00001', 'done', 'Old song', '{}', '{}', ?, ?)",
        (NOW, NOW),
    )
    db.commit()
    db.close()


def test_a_schema_5_store_is_migrated_to_6_and_its_jobs_read_as_before(tmp_path: Path) -> None:
    assert SCHEMA_VERSION == 6
    path = tmp_path / "jobs.sqlite3"
    _old_sqlite(path)
    store = Store(path)
    try:
        assert store.schema_version == 6
        old = store.get("0old0job00001")
        assert (old.title, old.album, old.track) == ("Old song", None, None)
        assert old.as_record()["album"] is None
        album, _ = store.insert_album(_album())
        assert [j.track for j in store.album_jobs(album.id)] == [1, 2]
        assert store.list_albums() == [album]
    finally:
        store.close()


@pytest.mark.anyio
async def test_a_schema_1_postgresql_store_is_migrated_to_2(postgres_url: str) -> None:
    assert PG_SCHEMA_VERSION == 2
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for statement in PG_MIGRATIONS[1]:
            conn.execute(statement)
        conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (1)")
        conn.execute(
            "INSERT INTO jobs (id, status, title, request_json, api_body_json, created_at, "
            "updated_at) VALUES ('0old0job00001', 'done', 'Old song', '{}', '{}', %s, %s)",
            (NOW, NOW),
        )
    store = PostgresJobStore(postgres_url)
    try:
        old = await store.get("0old0job00001")
        assert (old.title, old.album, old.track) == ("Old song", None, None)
        album, _ = await store.insert_album(_album(3))
        assert [j.track for j in await store.album_jobs(album.id)] == [1, 2, 3]
    finally:
        await store.close()
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute(f"SELECT version FROM {VERSION_TABLE}").fetchone()
    assert row is not None and row[0] == 2


@pytest.mark.anyio
async def test_store_migrate_copies_albums_with_their_tracks(
    tmp_path: Path, postgres_url: str
) -> None:
    path = tmp_path / "jobs.sqlite3"
    source = Store(path)
    try:
        album, jobs = source.insert_album(_album())
        source.insert_job(title="single", model=None, request={}, api_body={}, credits=1)
    finally:
        source.close()
    copied = await copy_to_postgres(path, postgres_url)
    assert copied.tally.jobs == 3
    store = PostgresJobStore(postgres_url)
    try:
        assert await store.get_album(album.id) == album
        assert await store.album_jobs(album.id) == jobs
    finally:
        await store.close()


@pytest.mark.anyio
async def test_store_migrate_copies_a_schema_5_store_that_has_no_albums(
    tmp_path: Path, postgres_url: str
) -> None:
    path = tmp_path / "jobs.sqlite3"
    _old_sqlite(path)
    copied = await copy_to_postgres(path, postgres_url)
    assert copied.tally.jobs == 1
    store = PostgresJobStore(postgres_url)
    try:
        assert (await store.get("0old0job00001")).album is None
        assert await store.list_albums() == []
    finally:
        await store.close()
