"""A damaged store is explained and can be recovered: online backups, `store check`,
`store restore` (issue 11, point 4).

Real files, the real CLI in subprocesses and a real daemon. A store is damaged the ways
disks and tools damage files: garbage written over it, cut in half, cut to nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from _daemon import Daemon, cli, list_json, write_songs
from conftest import MakeConfig

from bygheartd.config import Config, parse_config
from bygheartd.engine.ticker import Ticker
from bygheartd.errors import ConfigError
from bygheartd.jobs import HoldKind, JobStatus
from bygheartd.service.store_care import backup_store_if_due
from bygheartd.simulator import RunningSimulator
from bygheartd.store.backups import list_backups, take_backup
from bygheartd.store.errors import StoreDamaged
from bygheartd.store.schema import SCHEMA_VERSION
from bygheartd.store.store import Store

BACKUP_NAME = re.compile(r"^jobs-\d{8}T\d{6}Z(-\d+)?\.sqlite3$")
TIME_TEXT = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")


# -- helpers ---------------------------------------------------------------------------


def config_file(config: Config) -> Path:
    assert config.source_path is not None
    return config.source_path


def store_path(config: Config) -> Path:
    return config.state_dir / "jobs.sqlite3"


def backups(config: Config) -> list[str]:
    folder = config.state_dir / "backups"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def queue_songs(config: Config, count: int, tag: str) -> list[str]:
    """Jobs queued with no engine anywhere: nothing is sent, the store is real."""
    songs = write_songs(config.state_dir.parent / "songs", count, tag=tag)
    done = cli(config_file(config), "submit", "--json", *map(str, songs))
    assert done.returncode == 0, done.stderr
    return [r["id"] for r in json.loads(done.stdout)]


def damage(path: Path, how: str) -> None:
    """Damage the store file the way it happens to real files (its -wal and -shm gone,
    as after a clean shutdown: nothing of the old store to fall back on)."""
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if how == "garbage":
        path.write_bytes(os.urandom(40_000))
    elif how == "truncated":
        os.truncate(path, path.stat().st_size // 2)
    elif how == "empty":
        os.truncate(path, 0)
    elif how == "pages":  # the header and the schema survive, the tables' pages do not
        size = path.stat().st_size
        with path.open("r+b") as fh:
            fh.seek(4096)
            fh.write(os.urandom(size - 4096))
    else:
        raise ValueError(how)


def set_aside(config: Config, label: str) -> list[Path]:
    """The store files a restore set aside (their -wal and -shm, when any, beside them)."""
    found = config.state_dir.glob(f"jobs.sqlite3.{label}-*")
    return sorted(p for p in found if not p.name.endswith(("-wal", "-shm")))


def sqlite_ok(path: Path) -> bool:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        db.close()


def job_ids_in(path: Path) -> set[str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0] for r in db.execute("SELECT id FROM jobs")}
    finally:
        db.close()


def assert_explained(
    result: subprocess.CompletedProcess[str], config: Config, *, backup_expected: bool
) -> None:
    """One message, on stderr, with no traceback: what, where, and what to do."""
    stderr = result.stderr
    assert result.returncode != 0
    assert "Traceback" not in stderr, stderr
    assert "is damaged" in stderr, stderr
    assert str(store_path(config)) in stderr, stderr
    assert "`bygheartd store check`" in stderr, stderr
    if backup_expected:
        assert "`bygheartd store restore`" in stderr, stderr
        assert "newest backup, from " in stderr and TIME_TEXT.search(stderr), stderr
    else:
        assert "there is no backup in" in stderr, stderr


@pytest.fixture
def cfg(make_config: MakeConfig) -> Config:
    return make_config()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop()


def start_daemon(config: Config, daemons: list[Daemon]) -> Daemon:
    daemon = Daemon(config_file(config), config.state_dir.parent / "daemon.log")
    daemons.append(daemon)
    return daemon.start()


# -- a damaged store is explained --------------------------------------------------------


EVERY_COMMAND = ["list", "list --json", "show JOB", "status", "submit SONG", "run", "mcp"]


@pytest.mark.parametrize(
    ("how", "commands"),
    [
        ("garbage", EVERY_COMMAND),  # not a database at all: found when it is opened
        ("truncated", ["list", "run"]),
        ("empty", ["list", "run"]),  # 0 bytes beside backups: never taken as a new store
        ("pages", ["list", "show JOB", "run"]),  # found only when the damaged rows are read
    ],
)
def test_commands_explain_a_damaged_store_without_a_traceback(
    cfg: Config, how: str, commands: list[str]
) -> None:
    ids = queue_songs(cfg, 40, tag="damage")
    backup_store_if_due(cfg)
    damage(store_path(cfg), how)
    song = str(cfg.state_dir.parent / "songs" / "damage-0.txt")
    for command in commands:
        args = [song if a == "SONG" else ids[0] if a == "JOB" else a for a in command.split()]
        assert_explained(cli(config_file(cfg), *args), cfg, backup_expected=True)
    if how == "empty":  # nothing was "repaired" behind the user's back
        assert store_path(cfg).stat().st_size == 0


def test_without_a_backup_the_message_says_how_to_start_again(cfg: Config) -> None:
    queue_songs(cfg, 1, tag="nobackup")
    damage(store_path(cfg), "garbage")
    result = cli(config_file(cfg), "list")
    assert_explained(result, cfg, backup_expected=False)
    assert f"mv {store_path(cfg)}" in result.stderr


def test_an_empty_new_store_is_still_a_new_store(cfg: Config) -> None:
    """Without backups, a 0-byte file is what a first start left behind: no damage."""
    store_path(cfg).write_bytes(b"")
    assert list_json(config_file(cfg)) == []


# -- store check --------------------------------------------------------------------------


def test_store_check_reports_a_healthy_store_with_jobs_schema_and_newest_backup(
    cfg: Config,
) -> None:
    queue_songs(cfg, 2, tag="check")
    made = backup_store_if_due(cfg)
    assert made is not None
    result = cli(config_file(cfg), "store", "check")
    assert result.returncode == 0, result.stderr
    assert f"job store {store_path(cfg)}: OK" in result.stdout
    assert f"2 jobs, schema {SCHEMA_VERSION}" in result.stdout
    assert f"newest: {made.name}" in result.stdout and "2 jobs" in result.stdout


def test_store_check_finds_damage_and_exits_1(cfg: Config) -> None:
    queue_songs(cfg, 40, tag="check")
    backup_store_if_due(cfg)
    damage(store_path(cfg), "pages")  # the file still opens: only the check finds it
    result = cli(config_file(cfg), "store", "check")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"job store {store_path(cfg)}: DAMAGED" in result.stdout
    assert "`bygheartd store restore`" in result.stdout


def test_store_check_before_the_store_exists_creates_nothing(cfg: Config) -> None:
    result = cli(config_file(cfg), "store", "check")
    assert result.returncode == 0, result.stderr
    assert "not made yet" in result.stdout
    assert not store_path(cfg).exists()


# -- backups ------------------------------------------------------------------------------


def test_the_daemon_backs_up_at_start_and_keeps_the_newest_n(
    make_config: MakeConfig, simulator: RunningSimulator, daemons: list[Daemon]
) -> None:
    config = make_config(simulator, store={"backups": 3})
    ids = queue_songs(config, 1, tag="retention")
    folder = config.state_dir / "backups"
    folder.mkdir()
    for day in range(1, 5):  # four old backups, and a file that is not ours
        shutil.copyfile(store_path(config), folder / f"jobs-2020010{day}T000000Z.sqlite3")
    (folder / "notes.txt").write_text("mine")
    daemon = start_daemon(config, daemons)
    assert "job store backed up to" in daemon.log()
    kept = backups(config)
    assert "notes.txt" in kept
    ours = [n for n in kept if n != "notes.txt"]
    assert len(ours) == 3
    assert ours[:2] == ["jobs-20200103T000000Z.sqlite3", "jobs-20200104T000000Z.sqlite3"]
    new = folder / ours[2]
    assert BACKUP_NAME.match(new.name) and not new.name.startswith("jobs-2020")
    assert sqlite_ok(new)
    assert set(ids) <= job_ids_in(new)
    assert not list(folder.glob(".*")), "no temporary files are left behind"


def test_the_daemon_takes_no_start_backup_when_the_newest_is_recent(
    make_config: MakeConfig, simulator: RunningSimulator, daemons: list[Daemon]
) -> None:
    config = make_config(simulator)
    queue_songs(config, 1, tag="recent")
    recent = backup_store_if_due(config)
    assert recent is not None
    start_daemon(config, daemons)
    assert backups(config) == [recent.name]


def test_backups_0_takes_none(
    make_config: MakeConfig, simulator: RunningSimulator, daemons: list[Daemon]
) -> None:
    config = make_config(simulator, store={"backups": 0})
    queue_songs(config, 1, tag="none")
    start_daemon(config, daemons)
    assert backups(config) == []


def test_a_backup_is_due_after_a_day(cfg: Config) -> None:
    queue_songs(cfg, 1, tag="due")
    now = datetime.now(UTC)
    first = backup_store_if_due(cfg, now)
    assert first is not None
    assert backup_store_if_due(cfg, now + timedelta(hours=12)) is None
    second = backup_store_if_due(cfg, now + timedelta(days=1))
    assert second is not None and second.name != first.name
    assert [b.name for b in list_backups(store_path(cfg))] == [second.name, first.name]


def test_a_backup_is_a_consistent_copy_while_the_store_is_written(tmp_path: Path) -> None:
    """The backup API from a connection of its own: commits still in the WAL are in the
    copy, and a writer in another thread keeps committing meanwhile."""
    store = Store(tmp_path / "jobs.sqlite3")
    for n in range(30):
        store.insert_job(title=f"song {n}", model=None, request={}, api_body={}, credits=0)
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            store.insert_job(title="meanwhile", model=None, request={}, api_body={}, credits=0)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        backup = take_backup(store.path, keep=7)
    finally:
        stop.set()
        writer.join()
    assert sqlite_ok(backup.path)
    db = sqlite3.connect(backup.path)
    try:
        assert db.execute("SELECT COUNT(*) FROM jobs WHERE title LIKE 'song %'").fetchone() == (30,)
        # One self-contained file: no WAL mode, so copying the file alone copies everything.
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    finally:
        db.close()
    store.close()


def test_a_damaged_store_is_not_backed_up_and_pushes_no_good_backup_out(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "jobs.sqlite3")
    for n in range(40):
        store.insert_job(title=f"song {n}", model=None, request={}, api_body={}, credits=0)
    store.checkpoint()
    store.close()
    good = take_backup(tmp_path / "jobs.sqlite3", keep=1)
    damage(tmp_path / "jobs.sqlite3", "pages")
    with pytest.raises(StoreDamaged, match="is damaged"):
        take_backup(tmp_path / "jobs.sqlite3", keep=1, now=good.taken_at + timedelta(days=1))
    assert [b.name for b in list_backups(tmp_path / "jobs.sqlite3")] == [good.name]


# -- store restore ------------------------------------------------------------------------


def test_restore_sets_the_damaged_file_aside_and_the_jobs_come_back(
    make_config: MakeConfig, simulator: RunningSimulator
) -> None:
    config = make_config(simulator)
    path = config_file(config)
    songs = write_songs(config.state_dir.parent / "songs", 2, tag="restore")
    made = cli(path, "submit", "--wait", "--json", *map(str, songs), timeout=60)
    assert made.returncode == 0, made.stderr
    done_ids = {r["id"] for r in json.loads(made.stdout)}
    [waiting] = queue_songs(config, 1, tag="waiting")
    backup = backup_store_if_due(config)
    assert backup is not None
    damage(store_path(config), "garbage")
    garbage = store_path(config).read_bytes()

    result = cli(path, "store", "restore")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"restoring {backup.name}, taken " in result.stdout
    assert "3 jobs" in result.stdout
    assert "set the damaged store aside as " in result.stdout
    # Never deleted: the damaged bytes are kept, next to the store, under a dated name.
    [aside] = set_aside(config, "damaged")
    assert re.fullmatch(r"jobs\.sqlite3\.damaged-\d{8}T\d{6}Z", aside.name)
    assert aside.read_bytes() == garbage
    assert str(aside) in result.stdout

    records = {r["id"]: r for r in list_json(path)}
    assert set(records) == done_ids | {waiting}
    assert all(records[i]["status"] == "done" for i in done_ids)
    # It may have been made after the backup: it is not sent a second time on its own.
    assert records[waiting]["status"] == "failed"
    assert "not sent again" in records[waiting]["reason"]
    assert f"bygheartd retry {waiting}" in records[waiting]["reason"]
    assert waiting in result.stdout
    check = cli(path, "store", "check")
    assert check.returncode == 0 and ": OK" in check.stdout


def test_restore_takes_the_newest_backup_that_passes_its_own_check(cfg: Config) -> None:
    queue_songs(cfg, 1, tag="older")
    now = datetime.now(UTC)
    older = backup_store_if_due(cfg, now - timedelta(days=2))
    queue_songs(cfg, 1, tag="newer")
    newer = backup_store_if_due(cfg, now - timedelta(days=1))
    assert older is not None and newer is not None
    damage(newer.path, "garbage")
    damage(store_path(cfg), "garbage")
    result = cli(config_file(cfg), "store", "restore")
    assert result.returncode == 0, result.stderr
    assert f"restoring {older.name}" in result.stdout
    assert len(list_json(config_file(cfg))) == 1


def test_restore_by_name_or_by_path(cfg: Config, tmp_path: Path) -> None:
    queue_songs(cfg, 2, tag="named")
    now = datetime.now(UTC)
    named = backup_store_if_due(cfg, now - timedelta(days=1))
    assert named is not None
    elsewhere = tmp_path / "my-copy.sqlite3"
    shutil.copyfile(named.path, elsewhere)
    queue_songs(cfg, 1, tag="later")
    backup_store_if_due(cfg, now)

    damage(store_path(cfg), "truncated")
    result = cli(config_file(cfg), "store", "restore", named.path.stem)
    assert result.returncode == 0, result.stderr
    assert f"restoring {named.name}" in result.stdout
    assert len(list_json(config_file(cfg))) == 2

    damage(store_path(cfg), "garbage")
    result = cli(config_file(cfg), "store", "restore", str(elsewhere))
    assert result.returncode == 0, result.stderr
    assert "restoring my-copy.sqlite3" in result.stdout
    assert len(set_aside(cfg, "damaged")) == 2  # both kept

    missing = cli(config_file(cfg), "store", "restore", "jobs-19990101T000000Z")
    assert missing.returncode == 1 and "no backup 'jobs-19990101T000000Z'" in missing.stderr


def test_restore_refuses_a_healthy_store_without_force(cfg: Config) -> None:
    queue_songs(cfg, 1, tag="healthy")
    backup_store_if_due(cfg)
    queue_songs(cfg, 1, tag="since")
    refused = cli(config_file(cfg), "store", "restore")
    assert refused.returncode == 1
    assert "passes its integrity check" in refused.stderr and "--force" in refused.stderr
    assert len(list_json(config_file(cfg))) == 2
    forced = cli(config_file(cfg), "store", "restore", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "set the replaced store aside as " in forced.stdout
    assert len(list_json(config_file(cfg))) == 1
    [aside] = set_aside(cfg, "replaced")
    assert len(job_ids_in(aside)) == 2


def test_a_store_left_open_across_a_restore_writes_into_the_restored_store(
    cfg: Config,
) -> None:
    """An idle `bygheartd mcp` keeps its connection for days: after a restore it must write
    into the restored store, not into the copy set aside, and closing it must not take the
    restored store's WAL with it."""
    kept = queue_songs(cfg, 2, tag="kept")
    backup_store_if_due(cfg)
    since = queue_songs(cfg, 1, tag="since")
    idle = Store(store_path(cfg))  # standing in for the idle MCP server
    try:
        assert len(idle.list_jobs()) == 3
        forced = cli(config_file(cfg), "store", "restore", "--force")
        assert forced.returncode == 0, forced.stderr
        late = idle.insert_job(title="late", model=None, request={}, api_body={}, credits=0)
        fresh = Store(store_path(cfg))
        try:
            assert {j.id for j in fresh.list_jobs()} == {*kept, late.id}
            later = fresh.insert_job(title="later", model=None, request={}, api_body={}, credits=0)
            idle.close()  # it used to checkpoint and delete `jobs.sqlite3-wal` by name
        finally:
            fresh.close()
    finally:
        idle.close()
    assert sqlite_ok(store_path(cfg))
    assert job_ids_in(store_path(cfg)) == {*kept, late.id, later.id}
    [aside] = set_aside(cfg, "replaced")
    assert sqlite_ok(aside)
    assert job_ids_in(aside) == {*kept, *since}  # exactly the store before the restore
    assert not any(Path(f"{aside}{s}").exists() for s in ("-wal", "-shm"))


def test_restore_matches_the_live_page_size(cfg: Config, tmp_path: Path) -> None:
    """A copy with pages of another size (an older SQLite's 1024) still restores into the
    live WAL store, which the backup API cannot resize."""
    ids = queue_songs(cfg, 2, tag="pages")
    copy = tmp_path / "small-pages.sqlite3"
    db = sqlite3.connect(store_path(cfg))
    try:
        db.execute("VACUUM INTO ?", (str(copy),))
    finally:
        db.close()
    db = sqlite3.connect(copy, isolation_level=None)
    try:
        db.execute("PRAGMA page_size = 1024")
        db.execute("VACUUM")
        assert db.execute("PRAGMA page_size").fetchone() == (1024,)
    finally:
        db.close()
    queue_songs(cfg, 1, tag="after")
    forced = cli(config_file(cfg), "store", "restore", "--force", str(copy))
    assert forced.returncode == 0, forced.stderr
    assert sqlite_ok(store_path(cfg))
    assert job_ids_in(store_path(cfg)) == set(ids)


def test_restore_refuses_while_a_daemon_runs(
    make_config: MakeConfig, simulator: RunningSimulator, daemons: list[Daemon]
) -> None:
    config = make_config(simulator)
    queue_songs(config, 1, tag="running")
    daemon = start_daemon(config, daemons)
    result = cli(config_file(config), "store", "restore", "--force")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"`bygheartd run` (pid {daemon.pid})" in result.stderr
    assert "stop it first" in result.stderr
    assert not list(config.state_dir.glob("jobs.sqlite3.*-*"))
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_restore_keeps_paid_downloads_and_fails_only_unsent_jobs(tmp_path: Path) -> None:
    db = tmp_path / "state" / "jobs.sqlite3"
    store = Store(db)

    def job(title: str) -> str:
        return store.insert_job(title=title, model=None, request={}, api_body={}, credits=0).id

    queued, budget, download = job("queued"), job("budget"), job("download")
    store.transition(budget, JobStatus.HELD, event="held", hold_kind=HoldKind.BUDGET.value)
    store.transition(
        download, JobStatus.HELD, event="held", task_id="t1", hold_kind=HoldKind.DOWNLOAD.value
    )
    store.close()
    backup = take_backup(db, keep=7)
    damage(db, "garbage")

    from bygheartd.store.restore import restore_backup

    restored = restore_backup(db, backup)
    assert {i for i, _ in restored.unsent} == {queued, budget}
    store = Store(db)
    try:
        assert store.get(queued).status is JobStatus.FAILED
        assert store.get(budget).status is JobStatus.FAILED
        assert store.get(download).status is JobStatus.HELD
        assert store.get(download).hold_kind is HoldKind.DOWNLOAD
    finally:
        store.close()


# -- the rest of the daemon, the config ----------------------------------------------------


@pytest.mark.anyio
async def test_a_scheduled_tick_on_a_damaged_store_logs_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A store damaged under a running daemon: each tick says so in one line, no traceback."""

    async def tick() -> None:
        raise StoreDamaged("the job store X is damaged (file is not a database): ...", detail="")

    ticker = Ticker()
    ticker.start()
    try:
        with caplog.at_level(logging.ERROR, logger="bygheartd.engine.ticker"):
            ticker.every("poll", 3600, tick)
            deadline = asyncio.get_running_loop().time() + 10
            while not caplog.records and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)  # waiting for the condition, not for time
    finally:
        ticker.shutdown()
    [record] = caplog.records
    assert record.exc_info is None
    assert "is damaged" in record.getMessage()


def test_store_backups_is_validated() -> None:
    assert parse_config({}).store.backups == 7
    assert parse_config({"store": {"backups": 0}}).store.backups == 0
    with pytest.raises(ConfigError, match=r"store\.backups"):
        parse_config({"store": {"backups": -1}})
