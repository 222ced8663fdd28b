"""The PostgreSQL store's tables: migrations of its own, numbered in `bygheartd_schema`.

The columns mirror the SQLite store's (JSON and times as text, so one `row_to_job` reads
both); ids sort byte-wise (`COLLATE "C"`), as SQLite's do, so newest-first listings and id
prefixes mean the same on both. Migrations only ever add.
"""

from __future__ import annotations

PG_SCHEMA_VERSION = 2

# The table that says a database is ours, and how far its schema has come.
VERSION_TABLE = "bygheartd_schema"

PG_MIGRATIONS: dict[int, list[str]] = {
    1: [
        f"CREATE TABLE {VERSION_TABLE} (version INTEGER NOT NULL)",
        """CREATE TABLE jobs (
            id TEXT COLLATE "C" PRIMARY KEY,
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
            progress DOUBLE PRECISION,
            eta_seconds DOUBLE PRECISION,
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
            idempotency_key TEXT,
            hold_kind TEXT,
            unknown_since TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            submitted_at TEXT,
            completed_at TEXT,
            server TEXT,
            resubmits INTEGER NOT NULL DEFAULT 0,
            progress_at TEXT,
            engine TEXT,
            output TEXT
        )""",
        "CREATE UNIQUE INDEX jobs_idempotency_key ON jobs(idempotency_key)",
        "CREATE UNIQUE INDEX jobs_drop_identity ON jobs(drop_identity)",
        "CREATE INDEX jobs_status_id ON jobs(status, id)",
        "CREATE INDEX jobs_content ON jobs(content_sha256)",
        "CREATE INDEX jobs_dedupe ON jobs(dedupe_key)",
        "CREATE INDEX jobs_task ON jobs(task_id)",
        "CREATE INDEX jobs_server ON jobs(server)",
        "CREATE INDEX jobs_hold_kind ON jobs(hold_kind)",
        "CREATE INDEX jobs_engine ON jobs(engine)",
        """CREATE TABLE events (
            id BIGSERIAL PRIMARY KEY,
            job_id TEXT COLLATE "C" NOT NULL REFERENCES jobs(id),
            at TEXT NOT NULL,
            event TEXT NOT NULL,
            from_status TEXT,
            to_status TEXT,
            reason TEXT
        )""",
        "CREATE INDEX events_job ON events(job_id, id)",
        """CREATE TABLE ledger (
            id BIGSERIAL PRIMARY KEY,
            job_id TEXT,
            at TEXT NOT NULL,
            day TEXT NOT NULL,
            month TEXT NOT NULL,
            model TEXT,
            credits INTEGER NOT NULL,
            kind TEXT NOT NULL
        )""",
        "CREATE INDEX ledger_day ON ledger(day)",
        "CREATE INDEX ledger_month ON ledger(month)",
        "CREATE INDEX ledger_job ON ledger(job_id, id)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE engines (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            role TEXT NOT NULL,
            started_at TEXT NOT NULL,
            lease_until TEXT NOT NULL
        )""",
    ],
    # Albums (issue 26), as SQLite's schema 6.
    2: [
        "ALTER TABLE jobs ADD COLUMN album TEXT",
        "ALTER TABLE jobs ADD COLUMN track INTEGER",
        "ALTER TABLE jobs ADD COLUMN album_title TEXT",
        "ALTER TABLE jobs ADD COLUMN album_artist TEXT",
        "ALTER TABLE jobs ADD COLUMN album_tracks INTEGER",
        "CREATE INDEX jobs_album ON jobs(album, track)",
        """CREATE TABLE albums (
            id TEXT COLLATE "C" PRIMARY KEY,
            title TEXT NOT NULL,
            artist TEXT,
            tracks INTEGER NOT NULL,
            folder TEXT NOT NULL,
            output TEXT,
            source TEXT,
            origin TEXT NOT NULL DEFAULT 'cli',
            credits INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX albums_title ON albums(title)",
    ],
}
