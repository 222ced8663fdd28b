"""Moving a job store to PostgreSQL (`bygheartd store migrate --to URL`), and checking one
there (`bygheartd store check` with `[store] url`).

The copy reads the SQLite file read-only, in one snapshot, and writes every job (every
column), its history (ids and order kept), the credit ledger and the named values into a
PostgreSQL database that holds no jobs yet, with COPY in batches, in one transaction: it
commits only when the counts on both sides match, so a failed copy leaves nothing behind.
The engines table is not copied: every daemon registers itself on the new store, and the
first one takes over the jobs the old engine held (the crash rule for `submitting` ones).

Both connect through the same checks as `PostgresJobStore` on open (a server too old, a
database that is not ours, the schema brought up to date) and never show the password.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from bygheartd.catalog import counted
from bygheartd.config import redact_url
from bygheartd.jobs import parse_iso, utcnow
from bygheartd.store.engines import ADOPT_WHERE, EngineInfo
from bygheartd.store.errors import StoreError
from bygheartd.store.pg_schema import VERSION_TABLE
from bygheartd.store.postgres import CHANNEL, CONNECT_SECONDS, _migrate, _reason
from bygheartd.store.schema import SCHEMA_VERSION
from bygheartd.store.strictjson import PG_SUSPECTS, not_strict_ids

if TYPE_CHECKING:
    from psycopg import AsyncConnection

BATCH = 1000  # rows read from SQLite and sent to PostgreSQL at a time
COPIED_TABLES = ("jobs", "events", "ledger", "meta", "albums")
# Tables every SQLite store has; `albums` came with schema 6 (an older store has none).
_REQUIRED_TABLES = ("jobs", "events", "ledger", "meta")
LEFT_BEHIND = ("engines",)  # every engine registers itself on the new store
EVENT_COLUMNS = ("id", "job_id", "at", "event", "from_status", "to_status", "reason")
LEDGER_COLUMNS = ("id", "job_id", "at", "day", "month", "model", "credits", "kind")


@dataclass(frozen=True)
class Tally:
    """What one store holds, counted the same way on both sides of a copy."""

    jobs: int
    events: int
    ledger: int  # lines
    credits: int  # the ledger's sum
    meta: int
    in_flight: int = 0  # jobs an engine held (taken over by the first engine on the new store)
    by_status: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Copied:
    """What `copy_to_postgres` copied (counted in SQLite, found the same in PostgreSQL)."""

    source: Path
    target: str  # the URL without its password
    source_schema: int
    tally: Tally


@dataclass(frozen=True)
class EngineState:
    info: EngineInfo
    jobs_held: int
    live: bool


@dataclass(frozen=True)
class PgHealth:
    """`store check` on PostgreSQL: the server, our schema, what the store holds."""

    url: str  # without its password
    server_version: str
    schema_version: int
    jobs: int
    events: int
    ledger: int
    by_status: dict[str, int]
    engines: list[EngineState]
    size: int  # bytes, the database's
    # Jobs whose JSON is not strict (a NaN from an older version): usable, but named.
    not_strict: tuple[str, ...] = ()


# -- the SQLite side -------------------------------------------------------------------


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A plain connection that cannot write (no migration, no checkpoint into the file)."""
    if not path.exists():
        raise StoreError(f"there is no job store at {path}: nothing to migrate")
    try:
        db = sqlite3.connect(
            f"file:{quote(str(path))}?mode=ro", uri=True, timeout=10.0, isolation_level=None
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the job store {path} read-only: {exc}") from None
    return db


def _sqlite_columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [str(r[1]) for r in db.execute(f"PRAGMA table_info({table})").fetchall()]


def _sqlite_tally(db: sqlite3.Connection) -> Tally:
    jobs = int(db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
    events = int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    lines, credits = db.execute("SELECT COUNT(*), COALESCE(SUM(credits), 0) FROM ledger").fetchone()
    meta = int(db.execute("SELECT COUNT(*) FROM meta").fetchone()[0])
    by_status = {
        str(s): int(n)
        for s, n in db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
    }
    in_flight = int(db.execute(f"SELECT COUNT(*) FROM jobs WHERE {ADOPT_WHERE}").fetchone()[0])
    return Tally(jobs, events, int(lines), int(credits), meta, in_flight, by_status)


def _batches(db: sqlite3.Connection, sql: str, size: int) -> Iterator[list[Sequence[Any]]]:
    cursor = db.execute(sql)
    while rows := cursor.fetchmany(size):
        yield rows


# -- the copy ----------------------------------------------------------------------------


async def copy_to_postgres(source: Path, url: str, *, batch: int = BATCH) -> Copied:
    """Copy the SQLite store at `source` into the PostgreSQL database at `url`, which must
    hold no jobs, history or ledger lines yet; all or nothing. The file is only read."""
    shown = redact_url(url)
    psycopg = _psycopg()
    db = _open_read_only(source)
    try:
        db.execute("BEGIN")  # one snapshot: what is counted is what is copied
        try:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            tables = {
                str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if not set(_REQUIRED_TABLES) <= tables:
                raise StoreError(f"{source} is not a bygheartd job store (no jobs table)")
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{source} was written by a newer bygheartd (schema {version}, this "
                    f"version knows {SCHEMA_VERSION}): upgrade bygheartd, then migrate"
                )
            tally = _sqlite_tally(db)
            job_columns = _sqlite_columns(db, "jobs")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the job store {source}: {exc}") from None

        await _open_checks(url, shown)  # the server, the database, our schema: as on open
        try:
            conn = await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=int(CONNECT_SECONDS)
            )
        except Exception as exc:
            raise StoreError(f"cannot open the job store {shown}: {_reason(exc, url)}") from None
        try:
            async with conn, conn.transaction():
                await _refuse_a_used_store(conn, shown)
                await _check_columns(conn, job_columns, shown)
                await _copy_rows(conn, db, "jobs", job_columns, batch)
                await _copy_rows(conn, db, "events", list(EVENT_COLUMNS), batch)
                await _copy_rows(conn, db, "ledger", list(LEDGER_COLUMNS), batch)
                await _copy_meta(conn, db, batch)
                if "albums" in tables:  # schema 6 on: the albums the tracks name
                    await _copy_albums(conn, db, shown, batch)
                for table in ("events", "ledger"):  # new ids follow the copied ones
                    await conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM {table}"
                    )
                await _compare(conn, db, tally, shown)
                await conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot read the job store {source} (nothing was written to {shown}): {exc}"
            ) from None
        except psycopg.Error as exc:
            raise StoreError(
                f"copying into the job store {shown} failed, nothing was written there: "
                f"{_reason(exc, url)}"
            ) from None
    finally:
        db.close()
    return Copied(source, shown, version, tally)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError(
            "psycopg is not installed: install bygheartd with the postgresql extra "
            "(pip install 'bygheartd[postgresql]')"
        ) from None
    return psycopg


async def _open_checks(url: str, shown: str) -> None:
    """What `PostgresJobStore` checks on open, and its migrations; a statement the server
    refuses there (no right to create tables) is one line too, not a traceback."""
    import psycopg

    try:
        await _migrate(url, shown)
    except psycopg.Error as exc:
        raise StoreError(f"cannot open the job store {shown}: {_reason(exc, url)}") from None


async def _count(conn: AsyncConnection[Any], sql: str, *args: Any) -> int:
    cursor = await conn.execute(sql, args)
    row = await cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


async def _refuse_a_used_store(conn: AsyncConnection[Any], shown: str) -> None:
    """Writers wait until the copy commits (a second migrate, a daemon already on it), then
    find the jobs; what is already there is never mixed with the copy."""
    await conn.execute("LOCK TABLE jobs, events, ledger, meta IN EXCLUSIVE MODE")
    jobs = await _count(conn, "SELECT COUNT(*) FROM jobs")
    lines = await _count(conn, "SELECT COUNT(*) FROM ledger")
    if jobs or lines:
        held = counted(jobs, "job") if jobs else counted(lines, "ledger line")
        raise StoreError(
            f"the job store {shown} is not empty: it holds {held} already, and a migration "
            "copies into an empty database only (nothing was copied; create an empty "
            "database with `createdb`, or point [store] url at this one to use it as it is)"
        )


async def _check_columns(conn: AsyncConnection[Any], columns: list[str], shown: str) -> None:
    cursor = await conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'jobs'"
    )
    known = {str(r[0]) for r in await cursor.fetchall()}
    missing = [c for c in columns if c not in known]
    if missing:
        raise StoreError(
            f"the job store {shown} has no column for {', '.join(missing)}: upgrade the "
            "bygheartd that made it, or migrate with the bygheartd that wrote the SQLite store"
        )


async def _copy_rows(
    conn: AsyncConnection[Any],
    db: sqlite3.Connection,
    table: str,
    columns: list[str],
    batch: int,
) -> None:
    names = ", ".join(columns)
    async with conn.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        for rows in _batches(db, f"SELECT {names} FROM {table} ORDER BY rowid", batch):
            for row in rows:
                await copy.write_row(row)


async def _copy_albums(
    conn: AsyncConnection[Any], db: sqlite3.Connection, shown: str, batch: int
) -> None:
    """The albums (issue 26), checked by count like the jobs: a track never names an
    album the copy left behind."""
    await _copy_rows(conn, db, "albums", _sqlite_columns(db, "albums"), batch)
    wanted = int(db.execute("SELECT COUNT(*) FROM albums").fetchone()[0])
    found = await _count(conn, "SELECT COUNT(*) FROM albums")
    if found != wanted:
        raise StoreError(
            f"the copy into {shown} does not match the SQLite store (albums: {found} copied "
            f"of {wanted}): nothing was written there"
        )


async def _copy_meta(conn: AsyncConnection[Any], db: sqlite3.Connection, batch: int) -> None:
    """Named values: the SQLite store's win over any a daemon left in the empty database."""
    for rows in _batches(db, "SELECT key, value FROM meta ORDER BY key", batch):
        async with conn.cursor() as cursor:
            await cursor.executemany(
                "INSERT INTO meta (key, value) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                [tuple(r) for r in rows],
            )


async def _compare(
    conn: AsyncConnection[Any], db: sqlite3.Connection, tally: Tally, shown: str
) -> None:
    """The counts on both sides, before anything commits."""
    keys = [str(r[0]) for r in db.execute("SELECT key FROM meta").fetchall()]
    found = {
        "jobs": await _count(conn, "SELECT COUNT(*) FROM jobs"),
        "history lines": await _count(conn, "SELECT COUNT(*) FROM events"),
        "ledger lines": await _count(conn, "SELECT COUNT(*) FROM ledger"),
        "credits": await _count(conn, "SELECT COALESCE(SUM(credits), 0) FROM ledger"),
        "meta values": await _count(conn, "SELECT COUNT(*) FROM meta WHERE key = ANY(%s)", keys),
    }
    wanted = {
        "jobs": tally.jobs,
        "history lines": tally.events,
        "ledger lines": tally.ledger,
        "credits": tally.credits,
        "meta values": tally.meta,
    }
    wrong = [f"{k}: {found[k]} copied of {wanted[k]}" for k in wanted if found[k] != wanted[k]]
    if wrong:
        raise StoreError(
            f"the copy into {shown} does not match the SQLite store ({'; '.join(wrong)}): "
            "nothing was written there"
        )


# -- checking a PostgreSQL store -------------------------------------------------------------


async def check_postgres(url: str) -> PgHealth:
    """Open the store as a daemon would (the same checks, the schema brought up to date),
    then count what it holds and list its engines; a `StoreError` of one line when the
    server cannot be reached, the password is wrong, or the database is not ours."""
    shown = redact_url(url)
    psycopg = _psycopg()
    await _open_checks(url, shown)
    try:
        conn = await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=int(CONNECT_SECONDS)
        )
    except Exception as exc:
        raise StoreError(f"cannot open the job store {shown}: {_reason(exc, url)}") from None
    try:
        async with conn:
            version = conn.info.server_version
            schema = await _count(conn, f"SELECT MAX(version) FROM {VERSION_TABLE}")
            cursor = await conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")
            by_status = {str(s): int(n) for s, n in await cursor.fetchall()}
            events = await _count(conn, "SELECT COUNT(*) FROM events")
            ledger = await _count(conn, "SELECT COUNT(*) FROM ledger")
            size = await _count(conn, "SELECT pg_database_size(current_database())")
            cursor = await conn.execute(
                "SELECT e.id, e.host, e.pid, e.role, e.started_at, e.lease_until, "
                "(SELECT COUNT(*) FROM jobs j WHERE j.engine = e.id) FROM engines e ORDER BY e.id"
            )
            engines = [_engine_state(r) for r in await cursor.fetchall()]
            cursor = await conn.execute(PG_SUSPECTS)
            not_strict = tuple(not_strict_ids(await cursor.fetchall()))
    except psycopg.Error as exc:
        raise StoreError(f"the job store {shown}: {_reason(exc, url)}") from None
    return PgHealth(
        url=shown,
        server_version=f"{version // 10000}.{version % 10000}",
        schema_version=schema,
        jobs=sum(by_status.values()),
        events=events,
        ledger=ledger,
        by_status=by_status,
        engines=engines,
        size=size,
        not_strict=not_strict,
    )


def _engine_state(row: Sequence[Any], now: datetime | None = None) -> EngineState:
    now = now or utcnow()
    info = EngineInfo(
        id=str(row[0]),
        host=str(row[1]),
        pid=int(row[2]),
        role=str(row[3]),
        started_at=parse_iso(row[4]) or now,
        lease_until=parse_iso(row[5]) or now,
    )
    return EngineState(info, int(row[6]), info.lease_until >= now)
