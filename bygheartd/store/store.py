"""The job store: SQLite (WAL) in the state folder, the single source of truth.

Every status change and its history line are one transaction, committed before the
side effect that depends on it. Front-ends in other processes write to the same file;
the engine notices their commits through `PRAGMA data_version`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bygheartd.jobs import (
    Album,
    Event,
    Job,
    JobStatus,
    iso,
    move_allowed,
    parse_iso,
    take_stems,
    utcnow,
)
from bygheartd.store import albums
from bygheartd.store.albums import NewAlbum
from bygheartd.store.columns import (
    CreditCaps,
    new_job_id,
    take_names,
    update_statement,
    warning_like,
)
from bygheartd.store.columns import dumps as _dumps
from bygheartd.store.damage import GuardedConnection, refuse_empty_store
from bygheartd.store.engines import ADOPT_WHERE, EngineInfo, claimable
from bygheartd.store.errors import (
    DropTaken,
    IllegalMove,
    JobNotFound,
    KeyTaken,
    OverBudget,
    ServerFull,
    StaleTransition,
    StoreBusy,
    StoreError,
)
from bygheartd.store.events import JobEvent
from bygheartd.store.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    SUMMARY_COLUMNS,
    row_to_album,
    row_to_job,
)
from bygheartd.store.state_folder import make_state_folder

DB_NAME = "jobs.sqlite3"
_CLAIMABLE = claimable("?", "?")


class Store:
    """One SQLite connection, used synchronously (guarded by a lock).

    Async code never holds one: it holds a `JobStore` (`store/threaded.py` runs these on
    threads of their own). Tools that work on the file itself (backups, `store check`,
    tests that look at what was committed) use it directly."""

    def __init__(self, path: Path, *, migrate: bool = True) -> None:
        self.path = path
        make_state_folder(path.parent)  # never with its parents: see store/state_folder.py
        refuse_empty_store(path)
        try:
            # Guarded: a damaged file says so, with the way back to a backup (store/damage.py).
            self._db = sqlite3.connect(
                str(path),
                timeout=10.0,
                isolation_level=None,
                check_same_thread=False,
                factory=GuardedConnection,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the job store {path}: {exc}") from None
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._db.execute("PRAGMA busy_timeout = 10000")
        self._db.execute("PRAGMA journal_mode = WAL")
        # FULL: a `submitting` mark must survive a power cut, or a restart could pay twice.
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA foreign_keys = ON")
        if migrate:
            self._migrate()

    @classmethod
    def open(cls, state_dir: Path) -> Store:
        return cls(state_dir / DB_NAME)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- schema -----------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._tx() as db:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer bygheartd (schema {version}, this "
                    f"version knows {SCHEMA_VERSION}): upgrade bygheartd"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {target}")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise _busy(self.path, exc) from None
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                try:
                    self._db.execute("COMMIT")
                except sqlite3.OperationalError as exc:
                    self._db.execute("ROLLBACK")
                    raise _busy(self.path, exc) from None

    def data_version(self) -> int:
        """Changes whenever another connection commits: the cheap cross-process wake-up."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    # -- jobs -------------------------------------------------------------------------

    def insert_job(
        self,
        *,
        title: str,
        model: str | None,
        request: dict[str, Any],
        api_body: dict[str, Any],
        credits: int,
        source: str | None = None,
        source_path: str | None = None,
        origin: str = "cli",
        status: JobStatus = JobStatus.QUEUED,
        reason: str | None = None,
        drop_identity: str | None = None,
        content_sha256: str | None = None,
        dedupe_key: str | None = None,
        idempotency_key: str | None = None,
        archived_as: str | None = None,
        output: str | None = None,
    ) -> Job:
        now = iso(utcnow())
        job_id = new_job_id()
        try:
            self._insert(
                job_id,
                now,
                status=status,
                title=title,
                model=model,
                request=request,
                api_body=api_body,
                credits=credits,
                source=source,
                source_path=source_path,
                origin=origin,
                reason=reason,
                drop_identity=drop_identity,
                content_sha256=content_sha256,
                dedupe_key=dedupe_key,
                idempotency_key=idempotency_key,
                archived_as=archived_as,
                output=output,
            )
        except sqlite3.IntegrityError as exc:
            if idempotency_key and "idempotency_key" in str(exc):
                raise KeyTaken(
                    f"the idempotency key {idempotency_key!r} names a job already"
                ) from None
            if drop_identity and "drop_identity" in str(exc):
                raise DropTaken("another process made a job of this drop just now") from None
            raise StoreError(f"the job store refused the job: {exc}") from None
        return self.get(job_id)

    def _insert(
        self,
        job_id: str,
        now: str | None,
        *,
        status: JobStatus,
        title: str,
        model: str | None,
        request: dict[str, Any],
        api_body: dict[str, Any],
        credits: int,
        source: str | None,
        source_path: str | None,
        origin: str,
        reason: str | None,
        drop_identity: str | None,
        content_sha256: str | None,
        dedupe_key: str | None,
        idempotency_key: str | None,
        archived_as: str | None,
        output: str | None = None,
    ) -> None:
        with self._tx() as db:
            db.execute(
                """INSERT INTO jobs (id, status, title, model, request_json, api_body_json,
                   credits, source, source_path, origin, reason, drop_identity, content_sha256,
                   dedupe_key, idempotency_key, archived_as, created_at, updated_at, output)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
                (
                    job_id,
                    status.value,
                    title,
                    model,
                    _dumps(request),
                    _dumps(api_body),
                    credits,
                    source,
                    source_path,
                    origin,
                    reason,
                    drop_identity,
                    content_sha256,
                    dedupe_key,
                    idempotency_key,
                    archived_as,
                    now,
                    now,
                    output,
                ),
            )
            self._event(db, job_id, "created", None, status.value, reason or f"from {origin}")

    # -- albums (store/albums.py) ------------------------------------------------------

    def insert_album(self, album: NewAlbum) -> tuple[Album, list[Job]]:
        """The album and a queued job per track, in one transaction: whole or not at all."""
        with self._tx() as db:
            album_id, job_ids = albums.insert_sqlite(db, album)
        return self.get_album(album_id), [self.get(j) for j in job_ids]

    def get_album(self, album_id: str) -> Album:
        with self._lock:
            row = self._db.execute(albums.album_by_id_sql("?"), (album_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"no album {album_id!r}")
        return row_to_album(row)

    def find_albums(self, ref: str) -> list[Album]:
        """Albums whose id starts with `ref` (6 characters or more) or titled `ref`."""
        ref = ref.strip()
        low = ref.lower() if len(ref) >= 6 else "\uffff"
        with self._lock:
            rows = self._db.execute(
                albums.albums_by_ref_sql("?"), (low, low + "\U0010ffff", ref)
            ).fetchall()
        return [row_to_album(r) for r in rows]

    def list_albums(self, limit: int | None = None) -> list[Album]:
        with self._lock:
            rows = self._db.execute(albums.list_albums_sql("?"), (limit or -1,)).fetchall()
        return [row_to_album(r) for r in rows]

    def album_jobs(self, album_id: str) -> list[Job]:
        """The album's tracks in order."""
        with self._lock:
            rows = self._db.execute(albums.album_jobs_sql("?"), (album_id,)).fetchall()
        return [row_to_job(r) for r in rows]

    def get(self, job_id: str) -> Job:
        with self._lock:
            return self._get(self._db, job_id)

    @staticmethod
    def _get(db: sqlite3.Connection, job_id: str) -> Job:
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id!r}")
        return row_to_job(row)

    def find(self, ref: str) -> Job:
        """A job by id or by a unique prefix of at least 6 characters."""
        ref = ref.strip().lower()
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (ref,)).fetchone()
            if row is not None:
                return row_to_job(row)
            if len(ref) < 6:
                raise JobNotFound(f"no job {ref!r} (a prefix needs at least 6 characters)")
            # A range on the primary key (ids are lowercase ASCII): LIKE is case-insensitive
            # in SQLite, so it scanned every job.
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
                (ref, ref + "\U0010ffff"),
            ).fetchall()
        if not rows:
            raise JobNotFound(f"no job matches {ref!r}: `bygheartd list` shows the ids")
        if len(rows) > 1:
            raise JobNotFound(f"{ref!r} matches several jobs: give more characters")
        return row_to_job(rows[0])

    def find_by(self, column: str, value: str) -> list[Job]:
        if column not in {
            "drop_identity",
            "content_sha256",
            "dedupe_key",
            "idempotency_key",
            "task_id",
            "hold_kind",
        }:
            raise ValueError(column)
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM jobs WHERE {column} = ? ORDER BY id DESC", (value,)
            ).fetchall()
        return [row_to_job(r) for r in rows]

    def list_jobs(
        self,
        statuses: Iterable[JobStatus] | None = None,
        limit: int | None = None,
        *,
        summary: bool = False,
        engine: str | None = None,
    ) -> list[Job]:
        """Newest first; `summary=True` skips the request and result bodies (for listings);
        `engine` keeps the jobs that engine holds."""
        sql = f"SELECT {SUMMARY_COLUMNS if summary else '*'} FROM jobs"
        where: list[str] = []
        args: list[Any] = []
        wanted = [s.value for s in statuses] if statuses is not None else None
        if wanted is not None:
            where.append(f"status IN ({','.join('?' * len(wanted))})")
            args.extend(wanted)
        if engine is not None:
            where.append("engine = ?")
            args.append(engine)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [row_to_job(r) for r in rows]

    def search_jobs(
        self,
        text: str = "",
        statuses: Iterable[JobStatus] | None = None,
        *,
        limit: int,
        offset: int = 0,
        warning_prefix: str | None = None,
    ) -> tuple[list[Job], int]:
        """One page of jobs, newest first, whose title, style or lyrics contain `text`
        (case-insensitive), and how many match in all: the library page's query.
        `warning_prefix` keeps the jobs with a warning that starts with it (`"quality: "`:
        a take failed the quality gate, each finding being such a warning).

        Without text the page is read through the primary key (`ORDER BY id DESC LIMIT`);
        a text match scans the table once (bench/web.py times both at 10,000 jobs)."""
        where: list[str] = []
        args: list[Any] = []
        wanted = [s.value for s in statuses] if statuses is not None else None
        if wanted is not None:
            where.append(f"status IN ({','.join('?' * len(wanted))})")
            args.extend(wanted)
        if warning_prefix:
            where.append(_warning_clause(warning_prefix, args))
        if text.strip():
            like = (
                "%"
                + text.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                + "%"
            )
            fields = (
                "json_extract(request_json, '$.style') LIKE ? ESCAPE '\\' OR "
                "json_extract(request_json, '$.lyrics') LIKE ? ESCAPE '\\'"
            )
            if any(ch in text for ch in '"\\') or any(ord(ch) < 32 for ch in text):
                where.append(f"(title LIKE ? ESCAPE '\\' OR {fields})")
                args.extend([like, like, like])
            else:
                # The raw JSON holds the text as typed (no escapes for these characters), so
                # a LIKE on it rules out most rows before any JSON is parsed (7x faster).
                raw = "request_json LIKE ? ESCAPE '\\'"
                where.append(f"(title LIKE ? ESCAPE '\\' OR ({raw} AND ({fields})))")
                args.extend([like, like, like, like])
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            if not text.strip():
                total = int(
                    self._db.execute(f"SELECT COUNT(*) FROM jobs{clause}", args).fetchone()[0]
                )
                rows = self._db.execute(
                    f"SELECT * FROM jobs{clause} ORDER BY id DESC LIMIT ? OFFSET ?",
                    [*args, limit, offset],
                ).fetchall()
                return [row_to_job(r) for r in rows], total
            # A text match scans every row: do it once, for the ids, then read the page.
            ids = [
                str(r[0])
                for r in self._db.execute(
                    f"SELECT id FROM jobs{clause} ORDER BY id DESC", args
                ).fetchall()
            ]
            page = ids[offset : offset + limit]
            rows = self._db.execute(
                f"SELECT * FROM jobs WHERE id IN ({','.join('?' * len(page))}) ORDER BY id DESC",
                page,
            ).fetchall()
        return [row_to_job(r) for r in rows], len(ids)

    def jobs_made_from(self, sources: Collection[str], after: str) -> list[Job]:
        """The jobs newer than job `after` made from one of the files `sources` (their
        `source`), oldest first: read through the primary key from `after` on."""
        wanted = list(sources)
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM jobs WHERE id > ? AND source IN ({marks}) ORDER BY id",
                (after, *wanted),
            ).fetchall()
        return [row_to_job(r) for r in rows]

    def list_oldest(self, status: JobStatus, limit: int) -> list[Job]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE status = ? ORDER BY id LIMIT ?", (status.value, limit)
            ).fetchall()
        return [row_to_job(r) for r in rows]

    def claim_queued(self, engine_id: str, limit: int) -> list[Job]:
        """Up to `limit` of the oldest queued jobs that no live engine claimed, marked as
        this engine's (`jobs.engine`) in one write, oldest first. One engine per SQLite
        store: nothing to skip; the write is only made when there is something to claim."""
        if limit <= 0:
            return []
        with self._lock:
            waiting = self._db.execute(
                f"SELECT id FROM jobs WHERE status = 'queued' AND {_CLAIMABLE} LIMIT 1",
                (engine_id, iso(utcnow())),
            ).fetchone()
        if waiting is None:
            return []
        with self._tx() as db:
            rows = db.execute(
                f"UPDATE jobs SET engine = ? WHERE id IN (SELECT id FROM jobs WHERE status = "
                f"'queued' AND {_CLAIMABLE} ORDER BY id LIMIT ?) RETURNING *",
                (engine_id, engine_id, iso(utcnow()), limit),
            ).fetchall()
        return sorted((row_to_job(r) for r in rows), key=lambda job: job.id)

    def release_claims(self, engine_id: str, job_ids: Collection[str] | None = None) -> int:
        """Give back queued jobs this engine claimed (all of them without `job_ids`)."""
        ids = list(job_ids) if job_ids is not None else None
        if ids == []:
            return 0
        where = "status = 'queued' AND engine = ?"
        args: list[Any] = [engine_id]
        if ids is not None:
            where += f" AND id IN ({', '.join('?' for _ in ids)})"
            args += ids
        with self._tx() as db:
            return int(db.execute(f"UPDATE jobs SET engine = NULL WHERE {where}", args).rowcount)

    def counts_by_server(self, statuses: Iterable[JobStatus]) -> dict[str, int]:
        """Jobs in these statuses per server URL (the pool's in-flight and done counts)."""
        wanted = [s.value for s in statuses]
        marks = ", ".join("?" for _ in wanted)
        with self._lock:
            rows = self._db.execute(
                f"SELECT server, COUNT(*) FROM jobs WHERE status IN ({marks}) "
                "AND server IS NOT NULL GROUP BY server",
                wanted,
            ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def counts(self, engine: str | None = None) -> dict[str, int]:
        """Jobs per status; with `engine`, only the jobs that engine holds."""
        where, args = ("WHERE engine = ? ", [engine]) if engine is not None else ("", [])
        with self._lock:
            rows = self._db.execute(
                f"SELECT status, COUNT(*) FROM jobs {where}GROUP BY status", args
            ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    # -- engines and their leases (store/engines.py) --------------------------------------

    def register_engine(self, info: EngineInfo, lease_seconds: float | None = None) -> None:
        """One host per SQLite store: its clock is the store's clock."""
        if lease_seconds is not None:
            info = replace(info, lease_until=utcnow() + timedelta(seconds=lease_seconds))
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO engines (id, host, pid, role, started_at, lease_until) "
                "VALUES (?,?,?,?,?,?)",
                (
                    info.id,
                    info.host,
                    info.pid,
                    info.role,
                    iso(info.started_at),
                    iso(info.lease_until),
                ),
            )

    def renew_engine(self, engine_id: str, lease_seconds: float) -> datetime | None:
        """The new end of the lease; None when the engine's row is gone (taken for dead by
        another engine)."""
        until = utcnow() + timedelta(seconds=lease_seconds)
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE engines SET lease_until = ? WHERE id = ?", (iso(until), engine_id)
            )
            return until if cursor.rowcount > 0 else None

    def retire_engine(self, engine_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM engines WHERE id = ?", (engine_id,))

    def list_engines(self) -> list[EngineInfo]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, host, pid, role, started_at, lease_until FROM engines ORDER BY id"
            ).fetchall()
        return [_engine(r) for r in rows]

    def adopt_jobs(self, engine_id: str, *, everyone_else: bool = False) -> list[Job]:
        """Take over the jobs of engines whose lease ran out (or, with `everyone_else`, of
        every other engine: SQLite's lock file already says they are gone), and jobs no
        engine holds; each with a history line that says from whom."""
        now = iso(utcnow())
        with self._tx() as db:
            live = (
                ""
                if everyone_else
                else (" AND engine NOT IN (SELECT id FROM engines WHERE lease_until >= ?)")
            )
            args: list[Any] = [engine_id] if everyone_else else [engine_id, now]
            rows = db.execute(
                f"SELECT id, engine FROM jobs WHERE {ADOPT_WHERE} AND (engine IS NULL OR "
                f"(engine != ?{live}))",
                args,
            ).fetchall()
            if not everyone_else:
                db.execute("DELETE FROM engines WHERE lease_until < ?", (now,))
            else:
                db.execute("DELETE FROM engines WHERE id != ?", (engine_id,))
            for job_id, previous in rows:
                self._update(db, job_id, engine=engine_id)
                if previous is not None:
                    self._event(db, job_id, "taken over", None, None, f"from engine {previous}")
            return [self._get(db, str(r[0])) for r in rows]

    def transition(
        self,
        job_id: str,
        to: JobStatus,
        *,
        event: str,
        reason: str | None = None,
        expect: Iterable[JobStatus] | None = None,
        ledger: dict[str, Any] | None = None,
        before_commit: Callable[[Job, list[Event]], None] | None = None,
        caps: CreditCaps | None = None,
        server_limit: int | None = None,
        **fields: Any,
    ) -> Job:
        """Move a job to `to` and append history (and a ledger line), atomically.
        With `caps`, the ledger line is refused (`OverBudget`) when it would pass a cap,
        checked in this transaction (SQLite's write lock is the account's lock).

        Only moves in `jobs.ALLOWED_MOVES` are made (`IllegalMove` names both statuses).
        With `expect`, the move happens only from one of those statuses: that is how a
        cancel from the CLI and the engine's progress never overwrite each other.
        `before_commit` sees the job and its history as they will be committed and may
        still refuse (raise): the sidecar of a `done` job is written from it, so a job
        cancelled in that instant never leaves a sidecar that says `done`.
        """
        with self._tx() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(f"no job {job_id!r}")
            current = str(row[0])
            if expect is not None and current not in {s.value for s in expect}:
                raise StaleTransition(f"job {job_id} is {current}, not {to.value}-able")
            if not move_allowed(JobStatus(current), to):
                raise IllegalMove(job_id, current, to.value)
            if server_limit is not None and fields.get("server"):
                _check_server(db, str(fields["server"]), server_limit, job_id)
            if caps is not None and ledger is not None:
                _check_caps(db, caps, int(ledger["credits"]))
            fields.setdefault("reason", reason)
            self._update(db, job_id, status=to.value, **fields)
            self._event(db, job_id, event, current, to.value, reason)
            if ledger is not None:
                self._ledger(db, **ledger)
            moved = self._get(db, job_id)
            if before_commit is not None:
                before_commit(moved, self._history(db, job_id))
        return moved

    def update(
        self,
        job_id: str,
        *,
        event: str | None = None,
        expect: Iterable[JobStatus] | None = None,
        **fields: Any,
    ) -> Job:
        """Change fields without a status change (progress, results, warnings).

        With `expect`, only while the job is in one of those statuses: a stage that was
        overtaken (a cancel and a retry from the CLI) must not write into the new attempt.
        """
        if "status" in fields:  # a status changes only by a move of the lifecycle table
            raise ValueError("update() cannot change a job's status: use transition()")
        with self._tx() as db:
            if expect is not None:
                row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is None:
                    raise JobNotFound(f"no job {job_id!r}")
                if str(row[0]) not in {s.value for s in expect}:
                    raise StaleTransition(f"job {job_id} is {row[0]} now")
            self._update(db, job_id, **fields)
            if event is not None:
                self._event(db, job_id, event, None, None, fields.get("reason"))
        return self.get(job_id)

    def add_event(self, job_id: str, event: str, reason: str | None = None) -> None:
        with self._tx() as db:
            self._event(db, job_id, event, None, None, reason)

    def history(self, job_id: str) -> list[Event]:
        with self._lock:
            return self._history(self._db, job_id)

    @staticmethod
    def _history(db: sqlite3.Connection, job_id: str) -> list[Event]:
        rows = db.execute(
            "SELECT at, event, from_status, to_status, reason FROM events "
            "WHERE job_id = ? ORDER BY id",
            (job_id,),
        ).fetchall()
        return [
            Event(parse_iso(r[0]) or utcnow(), r[1], r[2], r[3], r[4])  # at is never null
            for r in rows
        ]

    def events_after(
        self, seq: int, job_ids: Collection[str] | None = None, *, limit: int = 500
    ) -> list[JobEvent]:
        """History lines of every job (or of `job_ids`) committed after `seq`, oldest first.

        A range scan of the events' primary key (or of `events_job` for named jobs), so a
        follower that polls it after each commit reads only what is new.
        """
        sql = (
            "SELECT e.id, e.job_id, j.title, e.at, e.event, e.from_status, e.to_status, "
            "e.reason FROM events e JOIN jobs j ON j.id = e.job_id WHERE e.id > ?"
        )
        args: list[Any] = [seq]
        if job_ids is not None:
            sql += f" AND e.job_id IN ({','.join('?' * len(job_ids))})"
            args.extend(job_ids)
        sql += " ORDER BY e.id LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [
            JobEvent(
                int(r[0]), r[1], r[2], Event(parse_iso(r[3]) or utcnow(), r[4], r[5], r[6], r[7])
            )
            for r in rows
        ]

    def event_seq(self, back: int = 0) -> int:
        """The `seq` after which the last `back` events follow (0: after the newest one)."""
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?", (back,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def recent_generations(self, limit: int = 200) -> list[tuple[str | None, float | None, float]]:
        """(model, requested duration, seconds from submit to result) of the newest jobs
        that got a result: what the poller's predictions start from after a restart.

        Read through the primary key and the events index: `limit` rows, whatever the size
        of the store."""
        with self._lock:
            rows = self._db.execute(
                "SELECT j.model, json_extract(j.request_json, '$.duration'), j.submitted_at, "
                "(SELECT e.at FROM events e WHERE e.job_id = j.id AND e.event = 'generated' "
                "ORDER BY e.id DESC LIMIT 1) FROM jobs j WHERE j.status = 'done' "
                "AND j.submitted_at IS NOT NULL ORDER BY j.id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        out: list[tuple[str | None, float | None, float]] = []
        for model, duration, submitted, generated in rows:
            start, end = parse_iso(submitted), parse_iso(generated)
            if start is None or end is None or end <= start:
                continue
            length = float(duration) if isinstance(duration, int | float) else None
            out.append((model, length, (end - start).total_seconds()))
        return out

    def claim_base_name(self, job_id: str, base: str, takes: int, output: str) -> bool:
        """Give a job in `downloading` its output base (and folder) unless an unfinished
        delivery holds one of its take names: claimed in the store, so two hosts writing
        into one shared folder never pick the same name. False: choose again."""
        with self._tx() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(f"no job {job_id!r}")
            if str(row[0]) != JobStatus.DOWNLOADING.value:
                raise StaleTransition(f"job {job_id} is {row[0]} now")
            rows = db.execute(
                "SELECT base_name, result_json FROM jobs WHERE base_name IS NOT NULL AND "
                "status NOT IN ('done', 'failed', 'cancelled') AND id != ?",
                (job_id,),
            ).fetchall()
            taken = take_names(rows)
            if not taken.isdisjoint(take_stems(base, takes)):
                return False
            self._update(db, job_id, base_name=base, output=output)
            return True

    def reserved_take_stems(self) -> set[str]:
        """Every take name (`base`, `base.take2`, ...) an unfinished delivery will write."""
        with self._lock:
            rows = self._db.execute(
                "SELECT base_name, result_json FROM jobs WHERE base_name IS NOT NULL AND "
                "status NOT IN ('done', 'failed', 'cancelled')"
            ).fetchall()
        return take_names(rows)

    def _update(self, db: sqlite3.Connection, job_id: str, **fields: Any) -> None:
        db.execute(*update_statement(job_id, "?", fields))

    @staticmethod
    def _event(
        db: sqlite3.Connection,
        job_id: str,
        event: str,
        from_status: str | None,
        to_status: str | None,
        reason: str | None,
    ) -> None:
        db.execute(
            "INSERT INTO events (job_id, at, event, from_status, to_status, reason) "
            "VALUES (?,?,?,?,?,?)",
            (job_id, iso(utcnow()), event, from_status, to_status, reason),
        )

    # -- credit ledger ----------------------------------------------------------------

    def record_credits(
        self,
        *,
        job_id: str | None,
        model: str | None,
        credits: int,
        kind: str,
        day: str,
        month: str,
    ) -> None:
        with self._tx() as db:
            self._ledger(
                db, job_id=job_id, model=model, credits=credits, kind=kind, day=day, month=month
            )

    @staticmethod
    def _ledger(
        db: sqlite3.Connection,
        *,
        job_id: str | None,
        model: str | None,
        credits: int,
        kind: str,
        day: str,
        month: str,
    ) -> None:
        db.execute(
            "INSERT INTO ledger (job_id, at, day, month, model, credits, kind) "
            "VALUES (?,?,?,?,?,?,?)",
            (job_id, iso(utcnow()), day, month, model, credits, kind),
        )

    def open_reservation(self, job_id: str) -> tuple[int, str, str] | None:
        """What a job's latest reservation still holds, and its day and month.

        Only the latest: an earlier attempt that was never refunded (its outcome unknown,
        a deadline) may have been charged by the server, and a retry must not undo that.
        """
        with self._lock:
            row = self._db.execute(
                "SELECT id, day, month FROM ledger WHERE job_id = ? "
                "AND kind IN ('reserve', 'retake') ORDER BY id DESC LIMIT 1",
                (job_id,),
            ).fetchone()
            if row is None:
                return None
            held = self._db.execute(
                "SELECT COALESCE(SUM(credits), 0) FROM ledger WHERE job_id = ? AND id >= ?",
                (job_id, int(row[0])),
            ).fetchone()
        return int(held[0]), str(row[1]), str(row[2])

    def credits_spent(self, *, day: str | None = None, month: str | None = None) -> int:
        column, value = ("day", day) if day is not None else ("month", month)
        with self._lock:
            row = self._db.execute(
                f"SELECT COALESCE(SUM(credits), 0) FROM ledger WHERE {column} = ?", (value,)
            ).fetchone()
        return int(row[0])

    def credits_of_kinds(self, kinds: Collection[str], *, day: str) -> int:
        """Credits a day's ledger lines of these kinds add up to (what retakes spent)."""
        marks = ",".join("?" * len(kinds))
        with self._lock:
            row = self._db.execute(
                f"SELECT COALESCE(SUM(credits), 0) FROM ledger WHERE day = ? AND kind IN ({marks})",
                (day, *sorted(kinds)),
            ).fetchone()
        return int(row[0])

    def credits_by_model(self, month: str) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT COALESCE(model, ''), SUM(credits) FROM ledger WHERE month = ? "
                "GROUP BY model",
                (month,),
            ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def credits_by_day(self, since_day: str) -> dict[str, int]:
        """Credits spent per ledger day from `since_day` (YYYY-MM-DD) on: the usage chart."""
        with self._lock:
            rows = self._db.execute(
                "SELECT day, SUM(credits) FROM ledger WHERE day >= ? GROUP BY day", (since_day,)
            ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def first_ledger_month(self) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(month) FROM ledger").fetchone()
        return None if row[0] is None else str(row[0])

    def job_credit_balance(self, job_id: str) -> int:
        """What a job has cost so far (reservations minus refunds)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(credits), 0) FROM ledger WHERE job_id = ?", (job_id,)
            ).fetchone()
        return int(row[0])

    def credit_balances(self, job_ids: list[str]) -> dict[str, int]:
        """`job_credit_balance` for many jobs in one query (a listing's `credits` column);
        jobs with no ledger lines are left out (they were charged nothing)."""
        if not job_ids:
            return {}
        marks = ",".join("?" * len(job_ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT job_id, SUM(credits) FROM ledger WHERE job_id IN ({marks}) "
                "GROUP BY job_id",
                job_ids,
            ).fetchall()
        return {str(job_id): int(total) for job_id, total in rows}

    def api_body(self, job_id: str) -> dict[str, Any]:
        """The body to POST (kept out of `Job` so faces never see it by accident)."""
        return dict(json.loads(self._column(job_id, "api_body_json") or "{}"))

    def source_path(self, job_id: str) -> str | None:
        """The absolute path of the song file a job came from (for failed/ copies)."""
        return self._column(job_id, "source_path")

    def _column(self, job_id: str, column: str) -> str | None:
        with self._lock:
            row = self._db.execute(f"SELECT {column} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id!r}")
        return None if row[0] is None else str(row[0])

    def checkpoint(self) -> None:
        """Fold the WAL back into the database file (on clean shutdown)."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- meta -------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str | None) -> None:
        with self._tx() as db:
            if value is None:
                db.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                db.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

    def take_meta(self, key: str) -> str | None:
        """Read and delete a meta value in one transaction: whoever takes it, takes it once
        (a one-time login code used twice at the same moment still works only once)."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            if row is not None:
                db.execute("DELETE FROM meta WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    def meta_with_prefix(self, prefix: str) -> dict[str, str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
            ).fetchall()
        return {str(r[0]): str(r[1]) for r in rows}


def _warning_clause(prefix: str, args: list[Any]) -> str:
    """The WHERE term for "has a warning starting with `prefix`" (its arguments appended):
    a LIKE on the raw JSON first, so that only the few candidate rows are parsed."""
    args.extend([warning_like(prefix), len(prefix), prefix])
    return (
        "(warnings_json LIKE ? ESCAPE '\\' AND EXISTS (SELECT 1 FROM json_each(jobs.warnings_json)"
        " WHERE substr(json_each.value, 1, ?) = ?))"
    )


def _check_caps(db: sqlite3.Connection, caps: CreditCaps, credits: int) -> None:
    day = db.execute("SELECT COALESCE(SUM(credits), 0) FROM ledger WHERE day = ?", (caps.day,))
    month = db.execute(
        "SELECT COALESCE(SUM(credits), 0) FROM ledger WHERE month = ?", (caps.month,)
    )
    refusal = caps.refusal(credits, int(day.fetchone()[0]), int(month.fetchone()[0]))
    if refusal is not None:
        raise OverBudget(refusal)


def _check_server(db: sqlite3.Connection, server: str, limit: int, job_id: str) -> None:
    row = db.execute(
        "SELECT COUNT(*) FROM jobs WHERE server = ? AND status IN ('submitting', 'running') "
        "AND id != ?",
        (server, job_id),
    ).fetchone()
    if int(row[0]) >= limit:
        raise ServerFull(f"{server} has {row[0]} of {limit} songs in flight")


def _engine(row: Any) -> EngineInfo:
    return EngineInfo(
        id=str(row[0]),
        host=str(row[1]),
        pid=int(row[2]),
        role=str(row[3]),
        started_at=parse_iso(str(row[4])) or utcnow(),
        lease_until=parse_iso(str(row[5])) or utcnow(),
    )


def _busy(path: Path, exc: sqlite3.OperationalError) -> StoreError:
    """SQLite's "database is locked" in words a user can act on; other errors as they are."""
    if "locked" in str(exc) or "busy" in str(exc):
        return StoreBusy(
            f"the job store {path} stayed locked by another process for over 10 s (a "
            "`bygheartd` command or a backup): the change was not made; try again when it "
            "has finished"
        )
    return StoreError(f"the job store {path}: {exc}")


__all__ = [
    "DB_NAME",
    "JobEvent",
    "JobNotFound",
    "StaleTransition",
    "Store",
    "StoreError",
    "new_job_id",
]
