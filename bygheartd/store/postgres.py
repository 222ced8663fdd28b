"""The job store on PostgreSQL: one database shared by every daemon and command that names it.

The same `JobStore` as SQLite's, through psycopg 3's async connection pool. Engines claim
queued jobs in the statement that marks them (`FOR UPDATE SKIP LOCKED`), and every move
locks its row (`FOR UPDATE`), so two engines never take one job and never wait for each
other; a write that gives engines work (a queued job, a cancel, an engine gone) sends a
`NOTIFY`, which wakes the others at once. So does a move that frees a place on a pool server
(out of `submitting`/`running`) while another engine waits for one there (`want_slot`), and
only then. Leases run on the database's clock. Nothing here logs or raises the URL's password
(`config.redact_url`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bygheartd.config import redact_url
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
    dumps,
    new_job_id,
    take_names,
    update_statement,
    warning_like,
)
from bygheartd.store.engines import ADOPT_WHERE, EngineInfo, claimable
from bygheartd.store.errors import (
    DropTaken,
    IllegalMove,
    JobNotFound,
    KeyTaken,
    OverBudget,
    ServerFull,
    StaleTransition,
    StoreError,
)
from bygheartd.store.events import JobEvent
from bygheartd.store.pg_schema import PG_MIGRATIONS, PG_SCHEMA_VERSION, VERSION_TABLE
from bygheartd.store.schema import PG_SUMMARY_COLUMNS, row_to_album, row_to_job

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)
# The pool says "error connecting" every second while the server is away, over several
# lines; the engine says once that the store is unavailable, and when it is back.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

CHANNEL = "bygheartd_jobs"
# What a notification says (its payload), for the engines' wake-up (`on_work`).
QUEUED, CANCELLED, ENGINES = "queued", "cancelled", "engines"
# A place on a pool server was freed while another engine waited for one there.
SLOT = "slot"
# The statuses that hold a place on a server (its `max_in_flight` counts them).
_IN_FLIGHT = ("submitting", "running")
# Per server, the engines waiting for a place there (`want_slot`), in `meta`: space-separated
# engine ids, read and written under the server's lock only.
SLOT_WAIT = "slot-wait:"
# The database's time as the stores write times (`jobs.iso`): leases are measured with one
# clock, whatever the hosts' clocks say.
_ISO = """'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'"""
DB_NOW = f"to_char(now() AT TIME ZONE 'UTC', {_ISO})"
DB_LATER = f"to_char((now() + make_interval(secs => %s)) AT TIME ZONE 'UTC', {_ISO})"
_CLAIMABLE = claimable("%s", DB_NOW)
MIN_SERVER_VERSION = 120000  # PostgreSQL 12
CONNECT_SECONDS = 10.0
_FIND_BY = {"drop_identity", "content_sha256", "dedupe_key", "idempotency_key", "task_id"}
_FIND_BY |= {"hold_kind"}


class PostgresJobStore:
    """`JobStore` on PostgreSQL. Opened at first use (the URL checked, the schema brought
    up to date, the pool and the change listener started), so building one costs nothing
    and a command that never touches the store never connects."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._pool: AsyncConnectionPool | None = None
        self._opening: asyncio.Lock | None = None
        self._version = 0  # changes whenever a NOTIFY arrives: `data_version`
        self._listener: asyncio.Task[None] | None = None
        self._closed = False
        self._wakes: list[Callable[[str], None]] = []
        # Duties (`lead`): session advisory locks on a connection of their own.
        self._duty_conn: AsyncConnection[Any] | None = None
        self._duty_lock: asyncio.Lock | None = None
        self._duties: set[str] = set()

    @property
    def location(self) -> str:
        return redact_url(self._url)

    # -- opening ----------------------------------------------------------------------

    async def _open_pool(self) -> AsyncConnectionPool:
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                self._pool = await self._connect()
                self._listener = asyncio.get_running_loop().create_task(self._listen())
        return self._pool

    async def _connect(self) -> AsyncConnectionPool:
        """Check the server and the database, migrate, open the pool; one clear line when the
        password is wrong, the server unreachable or too old, or the database not ours."""
        try:
            from psycopg_pool import AsyncConnectionPool
        except ImportError:
            raise StoreError(
                "[store] url names PostgreSQL, but psycopg is not installed: install "
                "bygheartd with the postgresql extra (pip install 'bygheartd[postgresql]')"
            ) from None
        shown = self.location
        await _migrate(self._url, shown)
        pool: AsyncConnectionPool = AsyncConnectionPool(
            self._url,
            min_size=1,
            max_size=8,
            open=False,
            kwargs={"autocommit": True, "connect_timeout": int(CONNECT_SECONDS)},
            name="bygheartd",
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_SECONDS)
        except Exception as exc:
            await pool.close()
            reason = _reason(exc, self._url)
            raise StoreError(f"cannot open the job store {shown}: {reason}") from None
        return pool

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._duty_conn is not None:
            with contextlib.suppress(Exception):
                await self._duty_conn.close()  # its duties pass to another engine at once
        if self._pool is not None:
            await self._pool.close()

    # -- connections --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[AsyncConnection[Any]]:
        if self._closed:
            raise StoreError(f"the job store {self.location} is closed")
        import psycopg
        from psycopg.rows import dict_row

        pool = await self._open_pool()
        try:
            async with pool.connection() as conn:
                conn.row_factory = dict_row  # type: ignore[assignment]
                yield conn
        except (
            KeyTaken,
            DropTaken,
            StaleTransition,
            JobNotFound,
            StoreError,
            OverBudget,
            ServerFull,
        ):
            raise
        except psycopg.errors.UniqueViolation:
            raise  # `insert_job` names which key was taken
        except psycopg.Error as exc:
            raise StoreError(f"the job store {self.location}: {_reason(exc, self._url)}") from None
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg_pool"):
                raise StoreError(
                    f"the job store {self.location} cannot be reached: {_reason(exc, self._url)}"
                ) from None
            raise

    @contextlib.asynccontextmanager
    async def _tx(self, notify: str | None = None) -> AsyncIterator[AsyncConnection[Any]]:
        """One write transaction; with `notify`, other processes are told when it commits.
        Only for what other engines must act on: every NOTIFY takes a lock that orders the
        commits of the whole database."""
        async with self._conn() as conn, conn.transaction():
            yield conn
            if notify is not None:
                await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, notify))

    async def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            cursor = await conn.execute(sql, list(args))
            return list(await cursor.fetchall())

    async def _one(self, sql: str, args: Iterable[Any] = ()) -> dict[str, Any] | None:
        rows = await self._rows(sql, args)
        return rows[0] if rows else None

    def on_work(self, wake: Callable[[str], None]) -> bool:
        """`wake(kind)` at every notification from any process (ours too): `queued`,
        `cancelled`, `engines`, `slot`, and `reconnected` after the listener was away
        (anything may have changed meanwhile). Listening starts with the store."""
        self._wakes.append(wake)
        return True

    def _wake(self, kind: str) -> None:
        self._version += 1
        for wake in self._wakes:
            try:
                wake(kind)
            except Exception:  # one listener's bug must not stop the others' wake-ups
                log.exception("a job store wake-up failed")

    async def _listen(self) -> None:
        """Wake the subscribers at every NOTIFY from every process (ours too). A dropped
        connection is opened again after a pause; never fatal."""
        import psycopg

        pause = 0.5
        while not self._closed:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, connect_timeout=int(CONNECT_SECONDS)
                )
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._wake("reconnected")  # anything may have changed meanwhile
                    pause = 0.5
                    async for notice in conn.notifies():
                        self._wake(notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "job store %s: listening for changes failed: %s; again in %.0f s",
                    self.location,
                    _reason(exc, self._url),
                    pause,
                )
                await asyncio.sleep(pause)
                pause = min(30.0, pause * 2)

    # -- jobs -------------------------------------------------------------------------

    async def insert_job(
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
        drop_identity: str | None = None,
        content_sha256: str | None = None,
        dedupe_key: str | None = None,
        idempotency_key: str | None = None,
        archived_as: str | None = None,
        output: str | None = None,
    ) -> Job:
        import psycopg

        now = iso(utcnow())
        job_id = new_job_id()
        try:
            async with self._tx(notify=QUEUED) as db:
                await db.execute(
                    """INSERT INTO jobs (id, status, title, model, request_json, api_body_json,
                       credits, source, source_path, origin, drop_identity, content_sha256,
                       dedupe_key, idempotency_key, archived_as, created_at, updated_at, output)
                       VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)""",
                    (
                        job_id,
                        JobStatus.QUEUED.value,
                        title,
                        model,
                        dumps(request),
                        dumps(api_body),
                        credits,
                        source,
                        source_path,
                        origin,
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
                await _event(db, job_id, "created", None, "queued", f"from {origin}")
        except psycopg.errors.UniqueViolation as exc:
            constraint = exc.diag.constraint_name or ""
            if "idempotency" in constraint:
                raise KeyTaken(
                    f"the idempotency key {idempotency_key!r} names a job already"
                ) from None
            if "drop_identity" in constraint:
                raise DropTaken("another process made a job of this drop just now") from None
            raise StoreError(f"the job store refused the job: {exc}") from None
        return await self.get(job_id)

    # -- albums (store/albums.py) ------------------------------------------------------

    async def insert_album(self, album: NewAlbum) -> tuple[Album, list[Job]]:
        """The album and a queued job per track, in one transaction: whole or not at all."""
        async with self._tx() as db:
            album_id, job_ids = await albums.insert_postgres(db, album)
        return await self.get_album(album_id), [await self.get(j) for j in job_ids]

    async def get_album(self, album_id: str) -> Album:
        row = await self._one(albums.album_by_id_sql("%s"), (album_id,))
        if row is None:
            raise JobNotFound(f"no album {album_id!r}")
        return row_to_album(row)

    async def find_albums(self, ref: str) -> list[Album]:
        ref = ref.strip()
        low = ref.lower() if len(ref) >= 6 else "\uffff"
        rows = await self._rows(albums.albums_by_ref_sql("%s"), (low, low + "\U0010ffff", ref))
        return [row_to_album(r) for r in rows]

    async def list_albums(self, limit: int | None = None) -> list[Album]:
        rows = await self._rows(
            "SELECT * FROM albums ORDER BY id DESC" + (" LIMIT %s" if limit else ""),
            (limit,) if limit else (),
        )
        return [row_to_album(r) for r in rows]

    async def album_jobs(self, album_id: str) -> list[Job]:
        rows = await self._rows(albums.album_jobs_sql("%s"), (album_id,))
        return [row_to_job(r) for r in rows]

    async def get(self, job_id: str) -> Job:
        row = await self._one("SELECT * FROM jobs WHERE id = %s", (job_id,))
        if row is None:
            raise JobNotFound(f"no job {job_id!r}")
        return row_to_job(row)

    async def find(self, ref: str) -> Job:
        ref = ref.strip().lower()
        row = await self._one("SELECT * FROM jobs WHERE id = %s", (ref,))
        if row is not None:
            return row_to_job(row)
        if len(ref) < 6:
            raise JobNotFound(f"no job {ref!r} (a prefix needs at least 6 characters)")
        rows = await self._rows(
            "SELECT * FROM jobs WHERE id >= %s AND id < %s ORDER BY id LIMIT 2",
            (ref, ref + "\U0010ffff"),
        )
        if not rows:
            raise JobNotFound(f"no job matches {ref!r}: `bygheartd list` shows the ids")
        if len(rows) > 1:
            raise JobNotFound(f"{ref!r} matches several jobs: give more characters")
        return row_to_job(rows[0])

    async def find_by(self, column: str, value: str) -> list[Job]:
        if column not in _FIND_BY:
            raise ValueError(column)
        rows = await self._rows(
            f"SELECT * FROM jobs WHERE {column} = %s ORDER BY id DESC", (value,)
        )
        return [row_to_job(r) for r in rows]

    async def list_jobs(
        self,
        statuses: Iterable[JobStatus] | None = None,
        limit: int | None = None,
        *,
        summary: bool = False,
        engine: str | None = None,
    ) -> list[Job]:
        sql = f"SELECT {PG_SUMMARY_COLUMNS if summary else '*'} FROM jobs"
        where: list[str] = []
        args: list[Any] = []
        if statuses is not None:
            where.append("status = ANY(%s)")
            args.append([s.value for s in statuses])
        if engine is not None:
            where.append("engine = %s")
            args.append(engine)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT %s"
            args.append(limit)
        return [row_to_job(r) for r in await self._rows(sql, args)]

    async def search_jobs(
        self,
        text: str = "",
        statuses: Iterable[JobStatus] | None = None,
        *,
        limit: int,
        offset: int = 0,
        warning_prefix: str | None = None,
    ) -> tuple[list[Job], int]:
        where: list[str] = []
        args: list[Any] = []
        if statuses is not None:
            where.append("status = ANY(%s)")
            args.append([s.value for s in statuses])
        if warning_prefix:
            # A LIKE on the raw JSON first: only the candidate rows are parsed.
            where.append(
                "(warnings_json LIKE %s AND EXISTS (SELECT 1 FROM jsonb_array_elements_text("
                "warnings_json::jsonb) AS w(value) WHERE left(w.value, %s) = %s))"
            )
            args.extend([warning_like(warning_prefix), len(warning_prefix), warning_prefix])
        if text.strip():
            like = (
                "%"
                + text.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                + "%"
            )
            where.append(
                "(title ILIKE %s OR (request_json::jsonb->>'style') ILIKE %s "
                "OR (request_json::jsonb->>'lyrics') ILIKE %s)"
            )
            args.extend([like, like, like])
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = await self._one(f"SELECT COUNT(*) AS n FROM jobs{clause}", args)
        rows = await self._rows(
            f"SELECT * FROM jobs{clause} ORDER BY id DESC LIMIT %s OFFSET %s",
            [*args, limit, offset],
        )
        return [row_to_job(r) for r in rows], int(total["n"] if total else 0)

    async def jobs_made_from(self, sources: Collection[str], after: str) -> list[Job]:
        if not sources:
            return []
        rows = await self._rows(
            "SELECT * FROM jobs WHERE id > %s AND source = ANY(%s) ORDER BY id",
            (after, list(sources)),
        )
        return [row_to_job(r) for r in rows]

    async def list_oldest(self, status: JobStatus, limit: int) -> list[Job]:
        rows = await self._rows(
            "SELECT * FROM jobs WHERE status = %s ORDER BY id LIMIT %s", (status.value, limit)
        )
        return [row_to_job(r) for r in rows]

    async def counts(self, engine: str | None = None) -> dict[str, int]:
        where, args = ("WHERE engine = %s ", [engine]) if engine is not None else ("", [])
        rows = await self._rows(
            f"SELECT status, COUNT(*) AS n FROM jobs {where}GROUP BY status", args
        )
        return {str(r["status"]): int(r["n"]) for r in rows}

    # -- engines and their leases (store/engines.py) --------------------------------------

    async def register_engine(self, info: EngineInfo, lease_seconds: float | None = None) -> None:
        """The lease ends `lease_seconds` (else as long as `info`'s) after the database's
        now: a host whose clock runs behind or ahead neither loses nor keeps jobs by it."""
        seconds = (
            lease_seconds
            if lease_seconds is not None
            else (info.lease_until - info.started_at).total_seconds()
        )
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO engines (id, host, pid, role, started_at, lease_until) "
                f"VALUES (%s,%s,%s,%s,%s,{DB_LATER}) ON CONFLICT (id) DO UPDATE SET "
                "lease_until = EXCLUDED.lease_until",
                (info.id, info.host, info.pid, info.role, iso(info.started_at), seconds),
            )

    async def renew_engine(self, engine_id: str, lease_seconds: float) -> datetime | None:
        row = await self._one(
            f"UPDATE engines SET lease_until = {DB_LATER} WHERE id = %s RETURNING lease_until",
            (lease_seconds, engine_id),
        )
        return None if row is None else parse_iso(row["lease_until"])

    async def retire_engine(self, engine_id: str) -> None:
        async with self._tx(notify=ENGINES) as db:  # the others take its jobs at once
            await db.execute("DELETE FROM engines WHERE id = %s", (engine_id,))

    async def list_engines(self) -> list[EngineInfo]:
        rows = await self._rows(
            "SELECT id, host, pid, role, started_at, lease_until FROM engines ORDER BY id"
        )
        return [
            EngineInfo(
                id=str(r["id"]),
                host=str(r["host"]),
                pid=int(r["pid"]),
                role=str(r["role"]),
                started_at=parse_iso(r["started_at"]) or utcnow(),
                lease_until=parse_iso(r["lease_until"]) or utcnow(),
            )
            for r in rows
        ]

    async def adopt_jobs(self, engine_id: str, *, everyone_else: bool = False) -> list[Job]:
        live = (
            ""
            if everyone_else
            else f" AND engine NOT IN (SELECT id FROM engines WHERE lease_until >= {DB_NOW})"
        )
        args: list[Any] = [engine_id]
        async with self._tx() as db:
            # SKIP LOCKED: a job another engine is moving right now is not waited for; it
            # is still held by a live engine, or comes up again at the next lease tick.
            cursor = await db.execute(
                f"SELECT id, engine FROM jobs WHERE {ADOPT_WHERE} AND (engine IS NULL OR "
                f"(engine != %s{live})) FOR UPDATE SKIP LOCKED",
                args,
            )
            rows = await cursor.fetchall()
            if everyone_else:
                await db.execute("DELETE FROM engines WHERE id != %s", (engine_id,))
            else:
                await db.execute(f"DELETE FROM engines WHERE lease_until < {DB_NOW}")
            adopted = []
            for row in rows:
                await _update(db, str(row["id"]), engine=engine_id)
                if row["engine"] is not None:
                    reason = f"from engine {row['engine']}"
                    await _event(db, str(row["id"]), "taken over", None, None, reason)
                found = await _fetch_one(db, "SELECT * FROM jobs WHERE id = %s", row["id"])
                adopted.append(row_to_job(found))
        return adopted

    async def claim_queued(self, engine_id: str, limit: int) -> list[Job]:
        """The claim is the statement that marks the jobs: rows another engine is claiming
        (or a face is moving) right now are skipped, never waited for, so two engines get
        distinct jobs and neither waits for the other."""
        if limit <= 0:
            return []
        rows = await self._rows(
            "WITH next AS (SELECT id FROM jobs WHERE status = 'queued' AND "
            f"{_CLAIMABLE} ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) "
            "UPDATE jobs SET engine = %s FROM next WHERE jobs.id = next.id RETURNING jobs.*",
            (engine_id, limit, engine_id),
        )
        return sorted((row_to_job(r) for r in rows), key=lambda job: job.id)

    async def release_claims(self, engine_id: str, job_ids: Collection[str] | None = None) -> int:
        where = "status = 'queued' AND engine = %s"
        args: list[Any] = [engine_id]
        if job_ids is not None:
            if not job_ids:
                return 0
            where += " AND id = ANY(%s)"
            args.append(list(job_ids))
        async with self._tx() as db:
            cursor = await db.execute(f"UPDATE jobs SET engine = NULL WHERE {where}", args)
            if cursor.rowcount > 0:  # work for the other engines
                await db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, QUEUED))
            return int(cursor.rowcount)

    async def lead(self, duty: str) -> bool:
        """A session advisory lock per duty, on a connection of this store's own: held
        until the process stops or that connection breaks (then another engine takes the
        duty at its next try). Checked at every call, so a lock lost with the connection
        (the server restarted) is known at once."""
        import psycopg

        if self._closed:
            return False
        if self._duty_lock is None:
            self._duty_lock = asyncio.Lock()
        async with self._duty_lock:
            try:
                if self._duty_conn is None or self._duty_conn.closed:
                    self._duties.clear()
                    self._duty_conn = await psycopg.AsyncConnection.connect(
                        self._url, autocommit=True, connect_timeout=int(CONNECT_SECONDS)
                    )
                if duty in self._duties:
                    await self._duty_conn.execute("SELECT 1")
                    return True
                cursor = await self._duty_conn.execute(
                    "SELECT pg_try_advisory_lock(hashtext(%s))", (f"bygheartd-duty:{duty}",)
                )
                row = await cursor.fetchone()
            except psycopg.Error as exc:
                log.debug("job store %s: duty %s: %s", self.location, duty, _reason(exc, self._url))
                if self._duty_conn is not None:
                    with contextlib.suppress(Exception):
                        await self._duty_conn.close()
                self._duty_conn = None
                self._duties.clear()
                return False
            if row is not None and row[0]:
                self._duties.add(duty)
                return True
            return False

    async def counts_by_server(self, statuses: Iterable[JobStatus]) -> dict[str, int]:
        rows = await self._rows(
            "SELECT server, COUNT(*) AS n FROM jobs WHERE status = ANY(%s) "
            "AND server IS NOT NULL GROUP BY server",
            ([s.value for s in statuses],),
        )
        return {str(r["server"]): int(r["n"]) for r in rows}

    async def want_slot(self, engine_id: str, limits: Mapping[str, int]) -> bool:
        """Under each server's lock (the one its submits and the moves off it take): True
        at once when one has room now; else this engine is written down as waiting there,
        so the next move that frees a place on one of them notifies (`slot`). The lock
        leaves no gap: a move off the server commits before this count (which sees it) or
        after this mark (and sees that)."""
        for server, limit in sorted(limits.items()):
            async with self._tx() as db:
                await _lock_server(db, server)
                if await _in_flight(db, server) < limit:
                    return True
                cursor = await db.execute(
                    "SELECT value FROM meta WHERE key = %s", (SLOT_WAIT + server,)
                )
                row = await cursor.fetchone()
                waiting = str(row["value"]).split() if row else []
                if engine_id not in waiting:
                    await db.execute(
                        "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) "
                        "DO UPDATE SET value = EXCLUDED.value",
                        (SLOT_WAIT + server, " ".join([*waiting, engine_id])),
                    )
        return False

    async def transition(
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
        wanted = None if expect is None else {s.value for s in expect}
        notify = {JobStatus.QUEUED: QUEUED, JobStatus.CANCELLED: CANCELLED}.get(to)
        async with self._tx(notify=notify) as db:
            # The row lock: a second engine making a move on this job waits here, then
            # finds it moved and is refused (two never act on one job).
            cursor = await db.execute(
                "SELECT status, server, engine FROM jobs WHERE id = %s FOR UPDATE", (job_id,)
            )
            row = await cursor.fetchone()
            if row is None:
                raise JobNotFound(f"no job {job_id!r}")
            current = str(row["status"])
            if wanted is not None and current not in wanted:
                raise StaleTransition(f"job {job_id} is {current}, not {to.value}-able")
            if not move_allowed(JobStatus(current), to):
                raise IllegalMove(job_id, current, to.value)
            if server_limit is not None and fields.get("server"):
                await _check_server(db, str(fields["server"]), server_limit, job_id)
            if current in _IN_FLIGHT and to.value not in _IN_FLIGHT and row["server"]:
                # A place on its server is free: engines waiting there learn of it now. A
                # notification this move sends anyway (queued, cancelled) wakes them too.
                others = await _free_slot(db, str(row["server"]), row["engine"])
                if others and notify is None:
                    await db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, SLOT))
            if caps is not None and ledger is not None:
                await _check_caps(db, caps, int(ledger["credits"]))
            fields.setdefault("reason", reason)
            await _update(db, job_id, status=to.value, **fields)
            await _event(db, job_id, event, current, to.value, reason)
            if ledger is not None:
                await _ledger(db, **ledger)
            moved = row_to_job(await _fetch_one(db, "SELECT * FROM jobs WHERE id = %s", job_id))
            if before_commit is not None:
                history = await _history(db, job_id)
                await asyncio.to_thread(before_commit, moved, history)
        return moved

    async def update(
        self,
        job_id: str,
        *,
        event: str | None = None,
        expect: Iterable[JobStatus] | None = None,
        **fields: Any,
    ) -> Job:
        if "status" in fields:
            raise ValueError("update() cannot change a job's status: use transition()")
        async with self._tx() as db:
            cursor = await db.execute("SELECT status FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
            row = await cursor.fetchone()
            if row is None:
                raise JobNotFound(f"no job {job_id!r}")
            if expect is not None and str(row["status"]) not in {s.value for s in expect}:
                raise StaleTransition(f"job {job_id} is {row['status']} now")
            await _update(db, job_id, **fields)
            if event is not None:
                await _event(db, job_id, event, None, None, fields.get("reason"))
            found = await _fetch_one(db, "SELECT * FROM jobs WHERE id = %s", job_id)
        return row_to_job(found)

    async def add_event(self, job_id: str, event: str, reason: str | None = None) -> None:
        async with self._tx() as db:
            await _event(db, job_id, event, None, None, reason)

    async def history(self, job_id: str) -> list[Event]:
        async with self._conn() as db:
            return await _history(db, job_id)

    async def events_after(
        self, seq: int, job_ids: Collection[str] | None = None, *, limit: int = 500
    ) -> list[JobEvent]:
        sql = (
            "SELECT e.id, e.job_id, j.title, e.at, e.event, e.from_status, e.to_status, "
            "e.reason FROM events e JOIN jobs j ON j.id = e.job_id WHERE e.id > %s"
        )
        args: list[Any] = [seq]
        if job_ids is not None:
            sql += " AND e.job_id = ANY(%s)"
            args.append(list(job_ids))
        sql += " ORDER BY e.id LIMIT %s"
        args.append(limit)
        return [
            JobEvent(
                int(r["id"]),
                r["job_id"],
                r["title"],
                Event(
                    parse_iso(r["at"]) or utcnow(),
                    r["event"],
                    r["from_status"],
                    r["to_status"],
                    r["reason"],
                ),
            )
            for r in await self._rows(sql, args)
        ]

    async def event_seq(self, back: int = 0) -> int:
        row = await self._one("SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET %s", (back,))
        return 0 if row is None else int(row["id"])

    async def data_version(self) -> int:
        """The newest history line (every move and note writes one) plus the notifications
        seen: writes no longer notify each, so followers read the one indexed row."""
        row = await self._one("SELECT COALESCE(MAX(id), 0) AS seq FROM events")
        return int(row["seq"] if row else 0) + self._version

    async def recent_generations(
        self, limit: int = 200
    ) -> list[tuple[str | None, float | None, float]]:
        rows = await self._rows(
            "SELECT j.model, j.request_json, j.submitted_at, "
            "(SELECT e.at FROM events e WHERE e.job_id = j.id AND e.event = 'generated' "
            "ORDER BY e.id DESC LIMIT 1) AS generated FROM jobs j WHERE j.status = 'done' "
            "AND j.submitted_at IS NOT NULL ORDER BY j.id DESC LIMIT %s",
            (limit,),
        )
        out: list[tuple[str | None, float | None, float]] = []
        for row in rows:
            start, end = parse_iso(row["submitted_at"]), parse_iso(row["generated"])
            if start is None or end is None or end <= start:
                continue
            duration = json.loads(row["request_json"]).get("duration")
            length = float(duration) if isinstance(duration, int | float) else None
            out.append((row["model"], length, (end - start).total_seconds()))
        return out

    async def reserved_take_stems(self) -> set[str]:
        rows = await self._rows(
            "SELECT base_name, result_json FROM jobs WHERE base_name IS NOT NULL AND "
            "status NOT IN ('done', 'failed', 'cancelled')"
        )
        return take_names((r["base_name"], r["result_json"]) for r in rows)

    async def claim_base_name(self, job_id: str, base: str, takes: int, output: str) -> bool:
        async with self._tx() as db:
            # One lock per output folder: deliveries into other folders never wait for it.
            await db.execute(
                "SELECT pg_advisory_xact_lock(hashtext('bygheartd-names:' || %s))", (output,)
            )
            cursor = await db.execute("SELECT status FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
            row = await cursor.fetchone()
            if row is None:
                raise JobNotFound(f"no job {job_id!r}")
            if str(row["status"]) != JobStatus.DOWNLOADING.value:
                raise StaleTransition(f"job {job_id} is {row['status']} now")
            cursor = await db.execute(
                "SELECT base_name, result_json FROM jobs WHERE base_name IS NOT NULL AND "
                "status NOT IN ('done', 'failed', 'cancelled') AND id != %s",
                (job_id,),
            )
            rows = await cursor.fetchall()
            taken = take_names((r["base_name"], r["result_json"]) for r in rows)
            if not taken.isdisjoint(take_stems(base, takes)):
                return False
            await _update(db, job_id, base_name=base, output=output)
            return True

    async def api_body(self, job_id: str) -> dict[str, Any]:
        return dict(json.loads(await self._column(job_id, "api_body_json") or "{}"))

    async def source_path(self, job_id: str) -> str | None:
        return await self._column(job_id, "source_path")

    async def _column(self, job_id: str, column: str) -> str | None:
        row = await self._one(f"SELECT {column} AS value FROM jobs WHERE id = %s", (job_id,))
        if row is None:
            raise JobNotFound(f"no job {job_id!r}")
        return None if row["value"] is None else str(row["value"])

    async def checkpoint(self) -> None:
        """Nothing to fold back: the server owns its write-ahead log."""

    # -- the credit ledger ------------------------------------------------------------

    async def record_credits(
        self,
        *,
        job_id: str | None,
        model: str | None,
        credits: int,
        kind: str,
        day: str,
        month: str,
    ) -> None:
        async with self._tx() as db:
            await _ledger(
                db, job_id=job_id, model=model, credits=credits, kind=kind, day=day, month=month
            )

    async def open_reservation(self, job_id: str) -> tuple[int, str, str] | None:
        row = await self._one(
            "SELECT id, day, month FROM ledger WHERE job_id = %s "
            "AND kind IN ('reserve', 'retake') ORDER BY id DESC LIMIT 1",
            (job_id,),
        )
        if row is None:
            return None
        held = await self._one(
            "SELECT COALESCE(SUM(credits), 0) AS n FROM ledger WHERE job_id = %s AND id >= %s",
            (job_id, int(row["id"])),
        )
        return int(held["n"] if held else 0), str(row["day"]), str(row["month"])

    async def credits_spent(self, *, day: str | None = None, month: str | None = None) -> int:
        column, value = ("day", day) if day is not None else ("month", month)
        row = await self._one(
            f"SELECT COALESCE(SUM(credits), 0) AS n FROM ledger WHERE {column} = %s", (value,)
        )
        return int(row["n"] if row else 0)

    async def credits_of_kinds(self, kinds: Collection[str], *, day: str) -> int:
        row = await self._one(
            "SELECT COALESCE(SUM(credits), 0) AS n FROM ledger WHERE day = %s AND kind = ANY(%s)",
            (day, list(kinds)),
        )
        return int(row["n"] if row else 0)

    async def credits_by_model(self, month: str) -> dict[str, int]:
        rows = await self._rows(
            "SELECT COALESCE(model, '') AS model, SUM(credits) AS n FROM ledger "
            "WHERE month = %s GROUP BY model",
            (month,),
        )
        return {str(r["model"]): int(r["n"]) for r in rows}

    async def credits_by_day(self, since_day: str) -> dict[str, int]:
        rows = await self._rows(
            "SELECT day, SUM(credits) AS n FROM ledger WHERE day >= %s GROUP BY day",
            (since_day,),
        )
        return {str(r["day"]): int(r["n"]) for r in rows}

    async def first_ledger_month(self) -> str | None:
        row = await self._one("SELECT MIN(month) AS m FROM ledger")
        return None if row is None or row["m"] is None else str(row["m"])

    async def job_credit_balance(self, job_id: str) -> int:
        row = await self._one(
            "SELECT COALESCE(SUM(credits), 0) AS n FROM ledger WHERE job_id = %s", (job_id,)
        )
        return int(row["n"] if row else 0)

    async def credit_balances(self, job_ids: list[str]) -> dict[str, int]:
        if not job_ids:
            return {}
        rows = await self._rows(
            "SELECT job_id, SUM(credits) AS n FROM ledger WHERE job_id = ANY(%s) GROUP BY job_id",
            (list(job_ids),),
        )
        return {str(r["job_id"]): int(r["n"]) for r in rows}

    # -- named values -----------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        row = await self._one("SELECT value FROM meta WHERE key = %s", (key,))
        return None if row is None else str(row["value"])

    async def set_meta(self, key: str, value: str | None) -> None:
        async with self._tx() as db:
            if value is None:
                await db.execute("DELETE FROM meta WHERE key = %s", (key,))
            else:
                await db.execute(
                    "INSERT INTO meta (key, value) VALUES (%s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (key, value),
                )

    async def take_meta(self, key: str) -> str | None:
        async with self._tx() as db:
            cursor = await db.execute("DELETE FROM meta WHERE key = %s RETURNING value", (key,))
            row = await cursor.fetchone()
        return None if row is None else str(row["value"])

    async def meta_with_prefix(self, prefix: str) -> dict[str, str]:
        rows = await self._rows("SELECT key, value FROM meta WHERE starts_with(key, %s)", (prefix,))
        return {str(r["key"]): str(r["value"]) for r in rows}


# -- statements shared by the methods above ------------------------------------------------


async def _check_caps(db: AsyncConnection[Any], caps: CreditCaps, credits: int) -> None:
    """The account's lock, held to the end of the transaction: every daemon's reservation
    waits here for the one before it, then sees what that one booked."""
    await db.execute("SELECT pg_advisory_xact_lock(hashtext('bygheartd-budget'))")
    cursor = await db.execute(
        "SELECT COALESCE(SUM(credits) FILTER (WHERE day = %s), 0) AS today, "
        "COALESCE(SUM(credits) FILTER (WHERE month = %s), 0) AS month FROM ledger",
        (caps.day, caps.month),
    )
    row = await cursor.fetchone()
    refusal = caps.refusal(credits, int(row["today"]), int(row["month"])) if row else None
    if refusal is not None:
        raise OverBudget(refusal)


async def _lock_server(db: AsyncConnection[Any], server: str) -> None:
    """The server's lock, held to the end of the transaction (after the job's row lock and
    before the budget's, always in that order)."""
    await db.execute("SELECT pg_advisory_xact_lock(hashtext('bygheartd-server:' || %s))", (server,))


async def _in_flight(db: AsyncConnection[Any], server: str, job_id: str = "") -> int:
    cursor = await db.execute(
        "SELECT COUNT(*) AS n FROM jobs WHERE server = %s AND status = ANY(%s) AND id != %s",
        (server, list(_IN_FLIGHT), job_id),
    )
    row = await cursor.fetchone()
    return int(row["n"]) if row else 0


async def _check_server(db: AsyncConnection[Any], server: str, limit: int, job_id: str) -> None:
    """Under the server's lock: every engine's submit to this server counts the songs in
    flight there after the one before it committed."""
    await _lock_server(db, server)
    in_flight = await _in_flight(db, server, job_id)
    if in_flight >= limit:
        raise ServerFull(f"{server} has {in_flight} of {limit} songs in flight")


async def _free_slot(db: AsyncConnection[Any], server: str, holder: str | None) -> bool:
    """A move takes a song off `server`: under the server's lock, whether an engine other
    than the song's own (which learns of its own moves in-process) waits for a place there;
    if so the waiting list is cleared (who still finds the server full writes itself down
    again). Nothing is written when nobody else waits."""
    await _lock_server(db, server)
    cursor = await db.execute("SELECT value FROM meta WHERE key = %s", (SLOT_WAIT + server,))
    row = await cursor.fetchone()
    waiting = set(str(row["value"]).split()) if row else set()
    if not waiting - {holder}:
        return False
    await db.execute("DELETE FROM meta WHERE key = %s", (SLOT_WAIT + server,))
    return True


async def _fetch_one(db: AsyncConnection[Any], sql: str, *args: Any) -> dict[str, Any]:
    cursor = await db.execute(sql, args)
    row = await cursor.fetchone()
    if row is None:
        raise JobNotFound(f"no job {args[0]!r}")
    return dict(row)


async def _history(db: AsyncConnection[Any], job_id: str) -> list[Event]:
    cursor = await db.execute(
        "SELECT at, event, from_status, to_status, reason FROM events "
        "WHERE job_id = %s ORDER BY id",
        (job_id,),
    )
    return [
        Event(
            parse_iso(r["at"]) or utcnow(),
            r["event"],
            r["from_status"],
            r["to_status"],
            r["reason"],
        )
        for r in await cursor.fetchall()
    ]


async def _update(db: AsyncConnection[Any], job_id: str, **fields: Any) -> None:
    await db.execute(*update_statement(job_id, "%s", fields))


async def _event(
    db: AsyncConnection[Any],
    job_id: str,
    event: str,
    from_status: str | None,
    to_status: str | None,
    reason: str | None,
) -> None:
    await db.execute(
        "INSERT INTO events (job_id, at, event, from_status, to_status, reason) "
        "VALUES (%s,%s,%s,%s,%s,%s)",
        (job_id, iso(utcnow()), event, from_status, to_status, reason),
    )


async def _ledger(
    db: AsyncConnection[Any],
    *,
    job_id: str | None,
    model: str | None,
    credits: int,
    kind: str,
    day: str,
    month: str,
) -> None:
    await db.execute(
        "INSERT INTO ledger (job_id, at, day, month, model, credits, kind) "
        "VALUES (%s,%s,%s,%s,%s,%s,%s)",
        (job_id, iso(utcnow()), day, month, model, credits, kind),
    )


async def _migrate(url: str, shown: str) -> None:
    """Check the server and that the database is ours (or empty), then bring its schema up
    to date under an advisory lock, so two daemons starting together migrate once."""
    import psycopg

    try:
        conn = await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=int(CONNECT_SECONDS)
        )
    except Exception as exc:
        raise StoreError(f"cannot open the job store {shown}: {_reason(exc, url)}") from None
    async with conn:
        try:
            await _bring_up_to_date(conn, shown)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StoreError(
                f"the job store {shown}: {_reason(exc, url)}: give bygheartd a database of "
                "its own that its user may create tables in (createdb -O USER bygheartd)"
            ) from None
        except psycopg.Error as exc:
            raise StoreError(f"cannot prepare the job store {shown}: {_reason(exc, url)}") from None


async def _bring_up_to_date(conn: AsyncConnection[Any], shown: str) -> None:
    """The server new enough, the database ours (or empty), the schema up to date: under an
    advisory lock, so two daemons starting together migrate once."""
    version = conn.info.server_version
    if version < MIN_SERVER_VERSION:
        raise StoreError(
            f"the job store {shown} runs PostgreSQL {version // 10000}: bygheartd needs "
            "PostgreSQL 12 or newer"
        )
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('bygheartd-migrate'))")
        cursor = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        tables = {str(r[0]) for r in await cursor.fetchall()}
        current = 0
        if VERSION_TABLE in tables:
            cursor = await conn.execute(f"SELECT version FROM {VERSION_TABLE}")
            row = await cursor.fetchone()
            current = int(row[0]) if row else 0
        elif tables:
            raise StoreError(
                f"the database of {shown} holds other tables ({', '.join(sorted(tables)[:3])}"
                "...) and no bygheartd schema: give bygheartd a database of its own "
                "(createdb bygheartd)"
            )
        if current > PG_SCHEMA_VERSION:
            raise StoreError(
                f"the job store {shown} was written by a newer bygheartd (schema "
                f"{current}, this version knows {PG_SCHEMA_VERSION}): upgrade bygheartd"
            )
        for target in range(current + 1, PG_SCHEMA_VERSION + 1):
            for statement in PG_MIGRATIONS[target]:
                await conn.execute(statement)
            await conn.execute(f"DELETE FROM {VERSION_TABLE}")
            await conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (%s)", (target,))
        if current < PG_SCHEMA_VERSION:
            log.info("job store %s: schema %d", shown, PG_SCHEMA_VERSION)


def _reason(exc: BaseException, url: str) -> str:
    """A driver's message as one line, without the password (libpq never echoes it, but a
    URL that failed to parse can end up in a message)."""
    lines = [
        line.strip()
        for line in str(exc).splitlines()
        if line.strip() and not line.lstrip().startswith(("LINE ", "^"))
    ]  # the SQL excerpt a server error quotes says nothing to a user
    text = " ".join(" ".join(lines).split()) or type(exc).__name__
    text = text.replace(url, redact_url(url))
    from urllib.parse import unquote, urlsplit

    with contextlib.suppress(ValueError):
        password = urlsplit(url).password
        if password:
            text = text.replace(password, "***").replace(unquote(password), "***")
    return text
