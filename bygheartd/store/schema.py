"""The job store's tables: versioned migrations and how a row becomes a `Job`.

Migrations only ever add; `PRAGMA user_version` records how far a database has come.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any, Protocol

from bygheartd.jobs import Album, HoldKind, Job, JobFile, JobResult, JobStatus, parse_iso, utcnow

SCHEMA_VERSION = 6

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        title TEXT NOT NULL,
        model TEXT,
        request_json TEXT NOT NULL,
        api_body_json TEXT NOT NULL,
        task_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        resumes_at TEXT,
        credits INTEGER NOT NULL DEFAULT 0,
        progress REAL,
        eta_seconds REAL,
        source TEXT,
        source_path TEXT,
        archived_as TEXT,
        base_name TEXT,
        files_json TEXT NOT NULL DEFAULT '[]',
        warnings_json TEXT NOT NULL DEFAULT '[]',
        result_json TEXT NOT NULL DEFAULT '{}',
        origin TEXT NOT NULL DEFAULT 'cli',
        drop_identity TEXT,
        content_sha256 TEXT,
        dedupe_key TEXT,
        idempotency_key TEXT UNIQUE,
        hold_kind TEXT,
        unknown_since TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        submitted_at TEXT,
        completed_at TEXT
    );
    CREATE INDEX jobs_status ON jobs(status);
    CREATE INDEX jobs_created ON jobs(created_at);
    CREATE UNIQUE INDEX jobs_drop_identity ON jobs(drop_identity);
    CREATE INDEX jobs_content ON jobs(content_sha256);
    CREATE INDEX jobs_dedupe ON jobs(dedupe_key);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL REFERENCES jobs(id),
        at TEXT NOT NULL,
        event TEXT NOT NULL,
        from_status TEXT,
        to_status TEXT,
        reason TEXT
    );
    CREATE INDEX events_job ON events(job_id, id);
    CREATE TABLE ledger (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT,
        at TEXT NOT NULL,
        day TEXT NOT NULL,
        month TEXT NOT NULL,
        model TEXT,
        credits INTEGER NOT NULL,
        kind TEXT NOT NULL
    );
    CREATE INDEX ledger_day ON ledger(day);
    CREATE INDEX ledger_month ON ledger(month);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    2: """
    CREATE INDEX jobs_task ON jobs(task_id);
    """,
    # The server pool (issue 15): which server holds a job's task (its URL, never a key),
    # how often a lost task was made again, and when its progress last moved (a task frozen
    # at one progress after a server restart is lost, not slow).
    3: """
    ALTER TABLE jobs ADD COLUMN server TEXT;
    ALTER TABLE jobs ADD COLUMN resubmits INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN progress_at TEXT;
    CREATE INDEX jobs_server ON jobs(server);
    """,
    # A 10,000-job store (issue 16): every poll looks for settling cancels by `hold_kind`,
    # and status-filtered listings (newest or oldest first) read through (status, id)
    # instead of sorting every job of that status.
    4: """
    CREATE INDEX jobs_hold_kind ON jobs(hold_kind);
    CREATE INDEX jobs_status_id ON jobs(status, id);
    """,
    # Engines and their leases (issue 24): which engine holds a job (the one that submitted
    # it, or took it over), the same on SQLite (one engine at a time) as on PostgreSQL.
    5: """
    ALTER TABLE jobs ADD COLUMN engine TEXT;
    ALTER TABLE jobs ADD COLUMN output TEXT;
    CREATE INDEX jobs_engine ON jobs(engine);
    CREATE TABLE engines (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        role TEXT NOT NULL,
        started_at TEXT NOT NULL,
        lease_until TEXT NOT NULL
    );
    """,
    # Albums (issue 26): each track is a job that records its album and track number, with
    # the album's title, artist and track count beside them (they never change: plugins and
    # records read them without a second query); the album itself is one row.
    6: """
    ALTER TABLE jobs ADD COLUMN album TEXT;
    ALTER TABLE jobs ADD COLUMN track INTEGER;
    ALTER TABLE jobs ADD COLUMN album_title TEXT;
    ALTER TABLE jobs ADD COLUMN album_artist TEXT;
    ALTER TABLE jobs ADD COLUMN album_tracks INTEGER;
    CREATE INDEX jobs_album ON jobs(album, track);
    CREATE TABLE albums (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        artist TEXT,
        tracks INTEGER NOT NULL,
        folder TEXT NOT NULL,
        output TEXT,
        source TEXT,
        origin TEXT NOT NULL DEFAULT 'cli',
        credits INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    );
    CREATE INDEX albums_title ON albums(title);
    """,
}


# Everything a job record shows; `list` reads only these (no request or result bodies).
SUMMARY_COLUMNS = (
    "id, status, title, model, task_id, attempts, reason, resumes_at, hold_kind, credits, "
    "progress, "
    "eta_seconds, source, archived_as, base_name, files_json, warnings_json, origin, "
    "created_at, updated_at, submitted_at, completed_at, server, resubmits, progress_at, "
    "engine, output, album, track, album_title, album_artist, album_tracks, "
    # The keeper, from the result body that a listing leaves unread (`json_extract` is
    # SQLite's; `PG_SUMMARY_COLUMNS` says the same for PostgreSQL). A body that is not
    # strict JSON (a NaN an older version wrote) reads as no keeper instead of failing the
    # whole listing; `bygheartd store check` names such rows.
    "CASE WHEN json_valid(result_json) THEN json_extract(result_json, '$.keeper') END "
    "AS keeper, "
    "CASE WHEN json_valid(result_json) THEN json_extract(result_json, '$.keeper_by') END "
    "AS keeper_by"
)
# PostgreSQL 15 has no `IS JSON`, and a cast that fails fails the statement: a body holding
# a bare NaN or Infinity token (outside a string, as far as a pattern can tell: after `:`,
# `,` or `[`) is not cast. A string that holds such text reads as no keeper, never as an
# error.
NOT_STRICT_JSON_PG = r"""result_json ~ '[:,\[]\s*-?(NaN|Infinity)\s*[],}]'"""
PG_SUMMARY_COLUMNS = SUMMARY_COLUMNS.replace(
    "CASE WHEN json_valid(result_json) THEN json_extract(result_json, '$.keeper') END",
    f"CASE WHEN {NOT_STRICT_JSON_PG} THEN NULL ELSE (result_json::jsonb ->> 'keeper') END",
).replace(
    "CASE WHEN json_valid(result_json) THEN json_extract(result_json, '$.keeper_by') END",
    f"CASE WHEN {NOT_STRICT_JSON_PG} THEN NULL ELSE (result_json::jsonb ->> 'keeper_by') END",
)


class _Row(Protocol):
    """A row by column name: `sqlite3.Row`, or a dict from PostgreSQL's `dict_row`."""

    def keys(self) -> Iterable[str]: ...

    def __getitem__(self, key: str) -> Any: ...


def row_to_job(row: _Row | sqlite3.Row) -> Job:
    """A row of `SELECT *`, or of `SUMMARY_COLUMNS` (then request and result are empty)."""
    full = "request_json" in row.keys()  # noqa: SIM118 (`in row` would search the values)
    files = tuple(JobFile.from_stored(f) for f in json.loads(row["files_json"]))
    if full:
        result = JobResult.from_stored(json.loads(row["result_json"]))
    else:  # a listing: only the keeper of the result (`SUMMARY_COLUMNS`)
        keys = set(row.keys())
        keeper = row["keeper"] if "keeper" in keys else None
        result = JobResult(
            keeper=keeper, keeper_by=row["keeper_by"] if keeper and "keeper_by" in keys else None
        )
    created = parse_iso(row["created_at"]) or utcnow()
    return Job(
        id=row["id"],
        status=JobStatus(row["status"]),
        title=row["title"],
        model=row["model"],
        request=json.loads(row["request_json"]) if full else {},
        created_at=created,
        updated_at=parse_iso(row["updated_at"]) or created,
        task_id=row["task_id"],
        reason=row["reason"],
        resumes_at=parse_iso(row["resumes_at"]),
        hold_kind=HoldKind(row["hold_kind"]) if row["hold_kind"] else None,
        attempts=int(row["attempts"]),
        credits=int(row["credits"]),
        progress=row["progress"],
        eta_seconds=row["eta_seconds"],
        source=row["source"],
        archived_as=row["archived_as"],
        base_name=row["base_name"],
        files=files,
        warnings=tuple(json.loads(row["warnings_json"])),
        result=result,
        submitted_at=parse_iso(row["submitted_at"]),
        completed_at=parse_iso(row["completed_at"]),
        origin=row["origin"],
        unknown_since=(
            (parse_iso(row["unknown_since"]) or result.legacy_unknown_since) if full else None
        ),
        server=row["server"],
        resubmits=int(row["resubmits"] or 0),
        progress_at=parse_iso(row["progress_at"]),
        engine=row["engine"],
        output=row["output"],
        album=row["album"],
        track=row["track"],
        album_title=row["album_title"],
        album_artist=row["album_artist"],
        album_tracks=row["album_tracks"],
    )


def row_to_album(row: _Row | sqlite3.Row) -> Album:
    """A row of `albums` (SQLite or PostgreSQL)."""
    return Album(
        id=row["id"],
        title=row["title"],
        artist=row["artist"],
        tracks=int(row["tracks"]),
        created_at=parse_iso(row["created_at"]) or utcnow(),
        folder=row["folder"],
        output=row["output"],
        source=row["source"],
        origin=row["origin"],
        credits=int(row["credits"] or 0),
    )
