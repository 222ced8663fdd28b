"""`bygheartd store migrate --to URL` and `store check` on PostgreSQL (issue 24, point 5).

A real SQLite store, made through the store with jobs in many states, copied by the real
CLI into a real PostgreSQL (Debian's server, started by the tests), then read back through
`PostgresJobStore` and compared with the SQLite store column by column. The URL's password
is a secret: it must appear in no output of any of these commands.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import psycopg
import pytest
from _daemon import cli
from _postgres import PASSWORD, ROLE
from conftest import MakeConfig
from psycopg.rows import dict_row

from bygheartd.config import Config, redact_url
from bygheartd.engine.lock import EngineLock, EngineRole
from bygheartd.jobs import HoldKind, JobFile, JobStatus, utcnow
from bygheartd.store.engines import EngineInfo
from bygheartd.store.errors import StoreError
from bygheartd.store.migrate import COPIED_TABLES, LEFT_BEHIND, copy_to_postgres
from bygheartd.store.pg_schema import VERSION_TABLE
from bygheartd.store.postgres import PostgresJobStore
from bygheartd.store.store import Store

DAY, MONTH = "2025-05-01", "2025-05"
OLD_ENGINE = "oldhost-4242-abcdef"
TABLES = {
    "jobs": "SELECT * FROM jobs ORDER BY id",
    "events": "SELECT id, job_id, at, event, from_status, to_status, reason FROM events "
    "ORDER BY id",
    "ledger": "SELECT id, job_id, at, day, month, model, credits, kind FROM ledger ORDER BY id",
    "meta": "SELECT key, value FROM meta ORDER BY key",
    "albums": "SELECT * FROM albums ORDER BY id",
}


# -- helpers ---------------------------------------------------------------------------


def config_file(config: Config) -> Path:
    assert config.source_path is not None
    return config.source_path


def sqlite_path(config: Config) -> Path:
    return config.state_dir / "jobs.sqlite3"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wrong_password_url(url: str) -> str:
    return url.replace(f":{PASSWORD}@", ":not-the-Pw-91c4@")


def assert_no_secret(*results: subprocess.CompletedProcess[str]) -> None:
    for result in results:
        for secret in (PASSWORD, "not-the-Pw-91c4"):
            assert secret not in result.stdout, result.stdout
            assert secret not in result.stderr, result.stderr
        assert "Traceback" not in result.stderr, result.stderr


def _walk(store: Store, job_id: str, *path: JobStatus, **fields: Any) -> None:
    for status in path:
        store.transition(job_id, status, event=f"to {status.value}", **fields)


def reserve(store: Store, job_id: str, credits: int) -> None:
    store.transition(
        job_id,
        JobStatus.SUBMITTING,
        event="submitting",
        ledger={
            "job_id": job_id,
            "model": "bygheart-melody-fast",
            "credits": credits,
            "kind": "reserve",
            "day": DAY,
            "month": MONTH,
        },
        engine=OLD_ENGINE,
    )


def build_store(path: Path) -> dict[str, str]:
    """A store with a job in most states, history, ledger lines and named values; the ids
    by the state each job ends in."""
    store = Store(path)
    try:

        def new(title: str, **keys: Any) -> str:
            fields: dict[str, Any] = {
                "title": title,
                "model": "bygheart-melody-fast",
                "request": {"style": "synth pop", "lyrics": "[Verse]\nneon\train \\ é ✓"},
                "api_body": {"prompt": "synth pop", "seed": 7},
                "credits": 2,
            }
            fields.update(keys)
            return store.insert_job(**fields).id

        ids: dict[str, str] = {}
        ids["queued"] = new(
            'Queued "one"',
            source="inbox/one.txt",
            source_path="/srv/inbox/one.txt",
            origin="drop",
            drop_identity="dev:ino:1",
            content_sha256="ab" * 32,
            dedupe_key="dk-1",
            idempotency_key="idem-1",
            archived_as="archive/one.txt",
        )
        ids["done"] = new("Done, with takes")
        reserve(store, ids["done"], 2)
        _walk(store, ids["done"], JobStatus.RUNNING, task_id="task-1", server="http://a:8001")
        store.update(ids["done"], progress=0.625, eta_seconds=12.5, progress_at=utcnow())
        _walk(store, ids["done"], JobStatus.DOWNLOADING, base_name="done-with-takes")
        _walk(store, ids["done"], JobStatus.PROCESSING)
        _walk(
            store,
            ids["done"],
            JobStatus.DONE,
            files=[JobFile(Path("/srv/out/done-with-takes.mp3"), 1234, "cd" * 32)],
            warnings=["loudnorm: quiet"],
            completed_at=utcnow(),
        )
        ids["failed"] = new("Failed and refunded")
        reserve(store, ids["failed"], 3)
        _walk(store, ids["failed"], JobStatus.FAILED, reason="the server failed it")
        store.record_credits(
            job_id=ids["failed"],
            model="bygheart-melody-fast",
            credits=-3,
            kind="refund",
            day=DAY,
            month=MONTH,
        )
        ids["cancelled"] = new("Cancelled")
        _walk(store, ids["cancelled"], JobStatus.CANCELLED, reason="cancelled by you")
        ids["held"] = new("Held for the budget")
        _walk(
            store,
            ids["held"],
            JobStatus.HELD,
            hold_kind=HoldKind.BUDGET.value,
            resumes_at=utcnow() + timedelta(hours=3),
        )
        ids["running"] = new("Running on the old engine")
        reserve(store, ids["running"], 2)
        _walk(store, ids["running"], JobStatus.RUNNING, task_id="task-2", attempts=1)
        store.add_event(ids["running"], "note", "a reason\twith a tab\nand a line \\N")
        store.record_credits(
            job_id=None, model=None, credits=5, kind="outside", day="2025-04-30", month="2025-04"
        )
        store.set_meta("pool.snapshot", '{"a": 1}')
        store.set_meta("web.address", "http://127.0.0.1:8765/")
        store.set_meta("ünïcode key", "välue ✓")
        store.register_engine(EngineInfo.new("bygheartd run", 30))  # not copied
        return ids
    finally:
        store.close()


def sqlite_rows(path: Path, table: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(TABLES[table]).fetchall()]
    finally:
        db.close()


def sqlite_columns(path: Path) -> list[str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [str(r[1]) for r in db.execute("PRAGMA table_info(jobs)").fetchall()]
    finally:
        db.close()


def pg_rows(url: str, table: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return list(conn.execute(TABLES[table]).fetchall())


def pg_columns(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        cursor = conn.execute("SELECT * FROM jobs LIMIT 0")
        return [d.name for d in cursor.description or []]


@pytest.fixture
def sqlite_config(make_config: MakeConfig) -> Config:
    return make_config()


# -- migrate -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_migrate_copies_every_job_history_ledger_and_meta_and_leaves_sqlite_untouched(
    sqlite_config: Config, postgres_url: str
) -> None:
    path = sqlite_path(sqlite_config)
    ids = build_store(path)
    before = digest(path)

    result = cli(config_file(sqlite_config), "store", "migrate", "--to", postgres_url)
    assert_no_secret(result)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "copied 6 jobs" in out and "5 ledger lines (9 credits)" in out, out
    assert "3 named values" in out and "the counts match" in out, out
    # Held by the old engine: taken over.
    assert "1 job was in flight: the first daemon on the new store takes it over" in out, out
    assert f"the SQLite store {path} is untouched" in out
    assert f'url = "{redact_url(postgres_url)}"' in out and "***" in out
    assert str(config_file(sqlite_config)) in out

    # The SQLite file: not one byte changed, and still a whole store.
    assert digest(path) == before

    # Every table, row by row and column by column (the engines table is not copied).
    sqlite_jobs = sqlite_rows(path, "jobs")
    assert len(sqlite_jobs) == 6
    assert sorted(pg_columns(postgres_url)) == sorted(sqlite_columns(path))
    for table in TABLES:
        assert pg_rows(postgres_url, table) == sqlite_rows(path, table), table

    # And through the store every daemon will use.
    source = Store(path)
    store = PostgresJobStore(postgres_url)
    try:
        assert [j.id for j in await store.list_jobs()] == [j.id for j in source.list_jobs()]
        for job in source.list_jobs():
            assert await store.get(job.id) == job
            assert await store.history(job.id) == source.history(job.id)
            assert await store.api_body(job.id) == source.api_body(job.id)
            assert await store.source_path(job.id) == source.source_path(job.id)
            assert await store.job_credit_balance(job.id) == source.job_credit_balance(job.id)
        assert await store.credits_spent(day=DAY) == source.credits_spent(day=DAY) == 4
        assert await store.credits_spent(month=MONTH) == source.credits_spent(month=MONTH)
        assert await store.credits_by_model(MONTH) == source.credits_by_model(MONTH)
        assert await store.credits_by_day("2025-01-01") == source.credits_by_day("2025-01-01")
        assert await store.first_ledger_month() == "2025-04"
        assert await store.open_reservation(ids["running"]) == source.open_reservation(
            ids["running"]
        )
        assert await store.meta_with_prefix("") == source.meta_with_prefix("")
        assert await store.get_meta("ünïcode key") == "välue ✓"
        assert await store.counts() == source.counts()
        assert await store.event_seq() == source.event_seq()
        assert await store.list_engines() == []  # each daemon registers itself
        assert (await store.get(ids["running"])).engine == OLD_ENGINE

        # New history lines and ledger lines follow the copied ids (the sequences moved on).
        last_event = await store.event_seq()
        await store.add_event(ids["queued"], "after the move")
        assert await store.event_seq() == last_event + 1
        await store.record_credits(
            job_id=ids["queued"], model=None, credits=1, kind="reserve", day=DAY, month=MONTH
        )
        ledger = pg_rows(postgres_url, "ledger")
        assert ledger[-1]["id"] == max(r["id"] for r in sqlite_rows(path, "ledger")) + 1

        # A daemon on the new store takes over what the old engine held.
        engine = EngineInfo.new("bygheartd run", 30)
        await store.register_engine(engine)
        adopted = {j.id for j in await store.adopt_jobs(engine.id)}
        assert adopted == {ids["running"]}
    finally:
        source.close()
        await store.close()
    assert digest(path) == before


def test_a_second_migrate_into_a_store_with_jobs_is_refused(
    sqlite_config: Config, postgres_url: str
) -> None:
    path = sqlite_path(sqlite_config)
    build_store(path)
    first = cli(config_file(sqlite_config), "store", "migrate", "--to", postgres_url)
    assert first.returncode == 0, first.stderr
    before = pg_rows(postgres_url, "events")

    second = cli(config_file(sqlite_config), "store", "migrate", "--to", postgres_url)
    assert_no_secret(first, second)
    assert second.returncode == 1
    line = second.stderr.strip()
    assert "\n" not in line, line
    assert "is not empty: it holds 6 jobs already" in line, line
    assert redact_url(postgres_url) in line
    assert pg_rows(postgres_url, "events") == before  # nothing copied twice


def test_an_empty_database_with_only_our_schema_is_fine(
    sqlite_config: Config, postgres_url: str
) -> None:
    """A daemon started on the new store before the migration made the schema, registered
    and left a named value: still empty of jobs, so the copy goes in (the SQLite store's
    named values win)."""

    async def touch() -> None:
        store = PostgresJobStore(postgres_url)
        try:
            await store.set_meta("web.address", "http://elsewhere/")
            await store.set_meta("only.here", "kept")
        finally:
            await store.close()

    anyio.run(touch)
    path = sqlite_path(sqlite_config)
    build_store(path)
    result = cli(config_file(sqlite_config), "store", "migrate", "--to", postgres_url)
    assert_no_secret(result)
    assert result.returncode == 0, result.stderr
    meta = {r["key"]: r["value"] for r in pg_rows(postgres_url, "meta")}
    assert meta["web.address"] == "http://127.0.0.1:8765/"
    assert meta["only.here"] == "kept"


def test_migrate_refuses_while_an_engine_runs_on_the_sqlite_store(
    sqlite_config: Config, postgres_url: str
) -> None:
    build_store(sqlite_path(sqlite_config))
    lock = EngineLock(sqlite_config.state_dir)
    assert lock.try_acquire(EngineRole.DAEMON)
    try:
        result = cli(config_file(sqlite_config), "store", "migrate", "--to", postgres_url)
    finally:
        lock.release()
    assert_no_secret(result)
    assert result.returncode == 1
    assert "`bygheartd run`" in result.stderr and "stop it first" in result.stderr
    assert "`bygheartd store migrate` again" in result.stderr
    assert not _has_schema(postgres_url)  # refused before connecting


def _has_schema(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass('jobs') IS NOT NULL").fetchone()
        return bool(row and row[0])


def test_migrate_refuses_a_database_that_is_not_ours_and_bad_urls(
    sqlite_config: Config, postgres_server: Any, postgres_url: str
) -> None:
    build_store(sqlite_path(sqlite_config))
    database = urlsplit(postgres_url).path.lstrip("/")
    postgres_server.admin("CREATE TABLE invoices (id INTEGER)", database)
    postgres_server.admin(f"ALTER TABLE invoices OWNER TO {ROLE}", database)
    theirs = cli(config_file(sqlite_config), "store", "migrate", "--to", postgres_url)
    wrong = cli(
        config_file(sqlite_config), "store", "migrate", "--to", wrong_password_url(postgres_url)
    )
    not_pg = cli(
        config_file(sqlite_config), "store", "migrate", "--to", f"mysql://u:{PASSWORD}@h/db"
    )
    assert_no_secret(theirs, wrong, not_pg)
    assert theirs.returncode == wrong.returncode == not_pg.returncode == 1
    assert "holds other tables (invoices...) and no bygheartd schema" in theirs.stderr
    assert "password authentication failed" in wrong.stderr, wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
    assert "--to must be a postgresql:// URL" in not_pg.stderr
    assert not _has_schema(postgres_url)


def test_migrate_without_a_sqlite_store_says_so(sqlite_config: Config, postgres_url: str) -> None:
    result = cli(config_file(sqlite_config), "store", "migrate", "--to", postgres_url)
    assert_no_secret(result)
    assert result.returncode == 1
    assert "nothing to migrate" in result.stderr
    assert not sqlite_path(sqlite_config).exists()


@pytest.mark.anyio
async def test_a_large_store_goes_over_in_batches_all_or_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = Store(path)
    try:
        for n in range(25):
            job = store.insert_job(
                title=f"song {n}", model=None, request={}, api_body={}, credits=1
            )
            store.add_event(job.id, "note", str(n))
    finally:
        store.close()
    copied = await copy_to_postgres(path, postgres_url, batch=4)
    assert (copied.tally.jobs, copied.tally.events, copied.tally.meta) == (25, 50, 0)
    for table in TABLES:
        assert pg_rows(postgres_url, table) == sqlite_rows(path, table), table


@pytest.mark.anyio
async def test_a_store_another_process_keeps_open_is_copied_with_its_last_commits(
    tmp_path: Path, postgres_url: str
) -> None:
    """An idle `bygheartd mcp` keeps the store open: its last commits are still in the WAL,
    not in the file. The copy reads them too and writes neither."""
    path = tmp_path / "jobs.sqlite3"
    store = Store(path)
    try:
        for n in range(3):
            store.insert_job(title=f"song {n}", model=None, request={}, api_body={}, credits=1)
        store.set_meta("k", "v")
        assert Path(f"{path}-wal").stat().st_size > 0
        before = digest(path)
        copied = await copy_to_postgres(path, postgres_url)
        assert digest(path) == before
        assert (copied.tally.jobs, copied.tally.events, copied.tally.meta) == (3, 3, 1)
        for table in TABLES:
            assert pg_rows(postgres_url, table) == sqlite_rows(path, table), table
    finally:
        store.close()


@pytest.mark.anyio
async def test_a_copy_that_fails_midway_leaves_nothing_behind(
    tmp_path: Path, postgres_url: str
) -> None:
    """A history line whose job is gone (a store from before foreign keys were on): the
    copy fails on it, and not one row of the jobs before it stays."""
    path = tmp_path / "jobs.sqlite3"
    store = Store(path)
    try:
        for n in range(5):
            store.insert_job(title=f"song {n}", model=None, request={}, api_body={}, credits=1)
    finally:
        store.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA foreign_keys = OFF")
    db.execute(
        "INSERT INTO events (job_id, at, event) VALUES ('gone', '2025-05-01T00:00:00.000Z', 'x')"
    )
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="nothing was written there") as failed:
        await copy_to_postgres(path, postgres_url, batch=2)
    assert PASSWORD not in str(failed.value)
    assert pg_rows(postgres_url, "jobs") == []


def test_migrate_knows_every_table_of_both_stores(tmp_path: Path, postgres_url: str) -> None:
    """A table added to either schema must be copied or named as left behind here."""
    Store(tmp_path / "jobs.sqlite3").close()
    db = sqlite3.connect(tmp_path / "jobs.sqlite3")
    sqlite_tables = {
        str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    db.close()

    async def make_schema() -> None:
        store = PostgresJobStore(postgres_url)
        try:
            await store.counts()
        finally:
            await store.close()

    anyio.run(make_schema)
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    pg_tables = {str(r[0]) for r in rows}
    known = set(COPIED_TABLES) | set(LEFT_BEHIND)
    assert sqlite_tables - {"sqlite_sequence"} == known
    assert pg_tables - {VERSION_TABLE} == known
    assert set(TABLES) == set(COPIED_TABLES)


# -- store check and restore on PostgreSQL --------------------------------------------------


@pytest.mark.anyio
async def test_store_check_on_postgresql_reports_schema_jobs_engines_and_backups(
    make_config: MakeConfig, postgres_url: str
) -> None:
    build_store(sqlite_path(make_config()))
    migrated = cli(config_file(make_config()), "store", "migrate", "--to", postgres_url)
    assert migrated.returncode == 0, migrated.stderr
    config = make_config(store={"url": postgres_url})
    store = PostgresJobStore(postgres_url)
    live = EngineInfo.new("bygheartd run", 60)
    gone = EngineInfo(
        id="deadhost-7-000000",
        host="deadhost",
        pid=7,
        role="bygheartd run",
        started_at=utcnow() - timedelta(hours=2),
        lease_until=utcnow() - timedelta(minutes=5),
    )
    try:
        await store.register_engine(live)
        await store.register_engine(gone, lease_seconds=-300)  # ran out 5 min ago
        await store.adopt_jobs(live.id)  # takes the old engine's running job
    finally:
        await store.close()

    result = cli(config_file(config), "store", "check")
    assert_no_secret(result)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"job store {redact_url(postgres_url)}: OK (PostgreSQL " in out, out
    assert "reachable; schema 2; 6 jobs," in out, out
    assert "engines: 1" in out, out  # the expired one was let go by the adopting engine
    assert f"{live.id} on {live.host} (pid {live.pid}, bygheartd run), 1 job held" in out
    assert "lease live until" in out
    assert "pg_dump" in out and "pg_restore" in out
    assert "is not used while [store] url is set (6 jobs" in out

    # An engine whose lease ran out is listed as such.
    store = PostgresJobStore(postgres_url)
    try:
        await store.register_engine(gone, lease_seconds=-300)  # ran out 5 min ago
    finally:
        await store.close()
    result = cli(config_file(config), "store", "check")
    assert result.returncode == 0, result.stderr
    assert "deadhost-7-000000 on deadhost (pid 7, bygheartd run), 0 jobs held" in result.stdout
    assert "lease expired" in result.stdout


def test_store_check_on_a_new_database_makes_the_schema(
    make_config: MakeConfig, postgres_url: str
) -> None:
    config = make_config(store={"url": postgres_url})
    result = cli(config_file(config), "store", "check")
    assert_no_secret(result)
    assert result.returncode == 0, result.stderr
    assert "schema 2; 0 jobs" in result.stdout
    assert "engines: none registered" in result.stdout
    assert _has_schema(postgres_url)


def test_store_check_with_a_wrong_password_or_no_server_says_so_in_one_line(
    make_config: MakeConfig, postgres_server: Any, postgres_url: str
) -> None:
    config = make_config(store={"url": wrong_password_url(postgres_url)})
    wrong = cli(config_file(config), "store", "check")
    parts = urlsplit(postgres_url)
    closed = postgres_url.replace(f":{parts.port}/", ":9/")
    config = make_config(store={"url": closed})
    away = cli(config_file(config), "store", "check")
    assert_no_secret(wrong, away)
    for result in (wrong, away):
        assert result.returncode == 1
        lines = (result.stdout + result.stderr).strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("cannot open the job store postgresql://bygheartd:***@")
    assert 'password authentication failed for user "bygheartd"' in wrong.stdout
    assert "127.0.0.1" in away.stdout and ":9/" in away.stdout


def test_restore_on_postgresql_points_to_pg_restore(
    make_config: MakeConfig, postgres_url: str
) -> None:
    config = make_config(store={"url": postgres_url})
    result = cli(config_file(config), "store", "restore", "--force")
    assert_no_secret(result)
    assert result.returncode == 1
    assert "pg_dump" in result.stderr and "pg_restore" in result.stderr
    assert redact_url(postgres_url) in result.stderr
    assert not sqlite_path(config).exists()
