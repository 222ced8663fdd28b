"""Online backups of the job store, its integrity check, and restoring a backup.

A backup is SQLite's backup API run from a connection of its own, in one step: one
consistent snapshot of the WAL database while the daemon keeps writing. It is written under
a temporary name, checked, fsynced and then renamed, so every `jobs-<UTC time>.sqlite3` in
`<state>/backups` is whole and passed an integrity check when it was made, and a damaged
store never pushes a good backup out of the retention. Restoring never deletes anything:
the current store is kept next to it first (a consistent copy, or a damaged file's raw
bytes with its `-wal` and `-shm`, for `sqlite3 FILE .recover`), and the backup is then
written into the live file, which other processes may hold open.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from bygheartd.jobs import utcnow
from bygheartd.store.errors import StoreDamaged, StoreError
from bygheartd.store.schema import SCHEMA_VERSION
from bygheartd.store.strictjson import JSON_COLUMNS_CHECKED

BACKUPS_DIR = "backups"
# "Older than a day", with ten minutes of slack: the hourly check that finds yesterday's
# backup a few seconds short of 24 hours old must not push every backup back by an hour.
DUE_AFTER = timedelta(hours=23, minutes=50)
STAMP = "%Y%m%dT%H%M%SZ"
_NAME = re.compile(r"^jobs-(\d{8}T\d{6}Z)(?:-(\d+))?\.sqlite3$")
WAL_FILES = ("-wal", "-shm")
# SQLite's primary result codes for "file is not a database" and "disk image is malformed".
_DAMAGE_CODES = {11, 26}


@dataclass(frozen=True)
class Backup:
    """One backup file, newest first when sorted by `key`."""

    path: Path
    taken_at: datetime
    seq: int = 1  # a second backup within the same second gets `-2`

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def key(self) -> tuple[datetime, int]:
        return (self.taken_at, self.seq)


@dataclass(frozen=True)
class Health:
    """What an integrity check of one store file found (`problems` empty: healthy)."""

    path: Path
    exists: bool
    problems: tuple[str, ...] = ()
    jobs: int | None = None
    schema_version: int | None = None
    size: int = 0
    # Jobs whose JSON is not strict (a NaN from an older version): usable, but named.
    not_strict: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.exists and not self.problems

    @property
    def problem(self) -> str:
        """The first problem, the way a one-line message names it."""
        return self.problems[0] if self.problems else ""


@dataclass(frozen=True)
class Restored:
    """What `restore_backup` did: which backup, what was set aside, which jobs it failed."""

    backup: Backup
    health: Health  # of the backup, as restored
    set_aside: tuple[Path, ...]
    # (id, title) of jobs that were waiting to be sent in the backup: failed, not resent.
    unsent: tuple[tuple[str, str], ...]


def is_damage(exc: sqlite3.Error) -> bool:
    """True for "not a database" and "malformed" (not for locks, constraints, full disks)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _DAMAGE_CODES


def when_text(at: datetime, now: datetime | None = None) -> str:
    """`2025-05-01 12:00 UTC (3 hours ago)`: the time to look for and how old it is."""
    now = now or utcnow()
    age = max(timedelta(0), now - at)
    if age < timedelta(minutes=1):
        ago = "just now"
    elif age < timedelta(hours=1):
        ago = _plural(int(age.total_seconds() // 60), "minute") + " ago"
    elif age < timedelta(days=2):
        ago = _plural(int(age.total_seconds() // 3600), "hour") + " ago"
    else:
        ago = _plural(age.days, "day") + " ago"
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M} UTC ({ago})"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -- finding backups -----------------------------------------------------------------


def backups_dir(db_path: Path) -> Path:
    return db_path.parent / BACKUPS_DIR


def list_backups(db_path: Path) -> list[Backup]:
    """The backups of the store at `db_path`, newest first (only files named as we name them)."""
    folder = backups_dir(db_path)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(f"cannot read the backups folder {folder}: {exc.strerror}") from None
    found = []
    for name in names:
        match = _NAME.match(name)
        if match is None:
            continue
        taken = datetime.strptime(match[1], STAMP).replace(tzinfo=UTC)
        found.append(Backup(folder / name, taken, int(match[2] or 1)))
    return sorted(found, key=lambda b: b.key, reverse=True)


def newest_backup(db_path: Path) -> Backup | None:
    try:
        backups = list_backups(db_path)
    except StoreError:
        return None
    return backups[0] if backups else None


def backup_due(db_path: Path, now: datetime | None = None) -> bool:
    """No backup yet, or the newest is (about) a day old."""
    newest = newest_backup(db_path)
    return newest is None or (now or utcnow()) - newest.taken_at >= DUE_AFTER


def find_backup(db_path: Path, ref: str) -> Backup:
    """A backup by its name (`jobs-20250501T120000Z.sqlite3`, the `.sqlite3` optional) or
    by a path to any copy of a job store (one kept elsewhere, say)."""
    backups = list_backups(db_path)
    for backup in backups:
        if ref in (backup.name, backup.path.stem):
            return backup
    path = Path(ref).expanduser()
    if path.is_file():
        match = _NAME.match(path.name)
        if match is not None:
            taken = datetime.strptime(match[1], STAMP).replace(tzinfo=UTC)
        else:
            taken = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        return Backup(path.resolve(), taken)
    known = ", ".join(b.name for b in backups[:3]) or "none yet"
    raise StoreError(
        f"no backup {ref!r}: give a file's path or the name of one in {backups_dir(db_path)} "
        f"(newest: {known}; `bygheartd store check` lists them)"
    )


# -- checking ------------------------------------------------------------------------


def check(path: Path, *, full: bool = True) -> Health:
    """Open `path` read-only and run SQLite's integrity check (`quick_check` unless `full`).

    Read-only, so that checking never writes into a damaged file or creates a missing one.
    A file that is a healthy database but not a job store (no `jobs` table) is a problem
    too: restoring it would lose every job.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return Health(path, exists=False)
    except OSError as exc:
        return Health(path, exists=True, problems=(f"cannot read it: {exc.strerror}",))
    if size == 0:
        return Health(path, exists=True, problems=("the file is empty (0 bytes)",))
    try:
        db = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error as exc:
        return Health(path, exists=True, problems=(str(exc),), size=size)
    try:
        pragma = "integrity_check(20)" if full else "quick_check(20)"
        rows = [str(r[0]) for r in db.execute(f"PRAGMA {pragma}").fetchall()]
        if rows != ["ok"]:
            return Health(path, exists=True, problems=tuple(rows), size=size)
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        has_jobs = db.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'jobs'"
        ).fetchone()[0]
        if not has_jobs:
            return Health(
                path,
                exists=True,
                problems=("it is an SQLite database, but not a bygheartd job store",),
                schema_version=version,
                size=size,
            )
        jobs = int(db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
        not_strict = _not_strict(db)
    except sqlite3.Error as exc:
        return Health(path, exists=True, problems=(str(exc),), size=size)
    finally:
        db.close()
    problems: tuple[str, ...] = ()
    if version > SCHEMA_VERSION:
        problems = (
            f"it was written by a newer bygheartd (schema {version}, this version knows "
            f"{SCHEMA_VERSION}): upgrade bygheartd",
        )
    return Health(
        path,
        True,
        problems,
        jobs=jobs,
        schema_version=version,
        size=size,
        not_strict=not_strict,
    )


def _not_strict(db: sqlite3.Connection) -> tuple[str, ...]:
    """The jobs whose JSON columns SQLite's JSON functions refuse (any schema's columns)."""
    present = {str(r[1]) for r in db.execute("PRAGMA table_info(jobs)").fetchall()}
    columns = [c for c in JSON_COLUMNS_CHECKED if c in present]
    if not columns:
        return ()
    where = " OR ".join(f"NOT json_valid({c})" for c in columns)
    return tuple(str(r[0]) for r in db.execute(f"SELECT id FROM jobs WHERE {where} ORDER BY id"))


def newest_restorable(db_path: Path) -> tuple[Backup, Health]:
    """The newest backup that passes its own integrity check (a disk that damaged the store
    may have damaged a backup too)."""
    backups = list_backups(db_path)
    skipped = []
    for backup in backups:
        health = check(backup.path)
        if health.ok:
            return backup, health
        skipped.append(f"{backup.name}: {health.problem}")
    if not backups:
        raise StoreError(
            f"there is no backup in {backups_dir(db_path)} (`bygheartd run` makes one a day, "
            "[store] backups): give the path of a copy of the store, or move the damaged file "
            "aside to start again with an empty store"
        )
    raise StoreError("no backup passes its integrity check: " + "; ".join(skipped))


def damaged_error(db_path: Path, detail: str) -> StoreDamaged:
    """What every face says about a damaged store: what, where, and the way back."""
    newest = newest_backup(db_path)
    if newest is not None:
        advice = (
            "run `bygheartd store check`, then `bygheartd store restore` to go back to the "
            f"newest backup, from {when_text(newest.taken_at)}"
        )
    else:
        advice = (
            f"there is no backup in {backups_dir(db_path)}: run `bygheartd store check`; to "
            f"start again with an empty store, move the file aside (`mv {db_path} "
            f"{db_path}.damaged`); the songs in the output folder are not affected"
        )
    return StoreDamaged(f"the job store {db_path} is damaged ({detail}): {advice}", detail=detail)


# -- backing up ----------------------------------------------------------------------


def take_backup(db_path: Path, keep: int, now: datetime | None = None) -> Backup:
    """Back the store up into `<state>/backups` and keep the newest `keep` backups.

    Blocking (a copy of the whole file and an integrity check of it): run it in a thread.
    Raises `StoreDamaged` when the copy fails its check, and then prunes nothing.
    """
    now = now or utcnow()
    folder = backups_dir(db_path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(folder)
        stamp = now.astimezone(UTC).strftime(STAMP)
        tmp = folder / f".jobs-{stamp}.{os.getpid()}.tmp"
        copy_online(db_path, tmp)
        health = check(tmp)
        if not health.ok:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise damaged_error(db_path, health.problem)
        fsync_file(tmp)
        backup = _place(tmp, folder, stamp, now)
        fsync_folder(folder)
    except OSError as exc:
        raise StoreError(
            f"cannot back the job store up into {folder}: {exc.strerror or exc}"
        ) from None
    prune_backups(db_path, keep)
    return backup


def copy_online(db_path: Path, tmp: Path) -> None:
    if not db_path.exists():
        raise StoreError(f"there is no job store at {db_path} to back up")
    src = sqlite3.connect(f"file:{quote(str(db_path))}?mode=ro", uri=True, timeout=10.0)
    try:
        dst = sqlite3.connect(str(tmp))
        try:
            src.backup(dst)  # pages=-1: one step, one consistent snapshot
            # A backup is one self-contained file: no -wal beside it to lose in a copy.
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
    except sqlite3.Error as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if is_damage(exc):
            raise damaged_error(db_path, str(exc)) from None
        raise StoreError(f"cannot back the job store {db_path} up: {exc}") from None
    finally:
        src.close()


def _place(tmp: Path, folder: Path, stamp: str, now: datetime) -> Backup:
    """Rename the checked copy to the first free `jobs-<stamp>[-N].sqlite3`, never over one."""
    seq = 1
    while True:
        name = f"jobs-{stamp}.sqlite3" if seq == 1 else f"jobs-{stamp}-{seq}.sqlite3"
        target = folder / name
        if link_or_rename(tmp, target):
            return Backup(target, datetime.strptime(stamp, STAMP).replace(tzinfo=UTC), seq)
        seq += 1


def prune_backups(db_path: Path, keep: int) -> list[Path]:
    """Remove all but the newest `keep` backups (only files named as we name them)."""
    removed = []
    for old in list_backups(db_path)[keep:]:
        with contextlib.suppress(FileNotFoundError):
            old.path.unlink()
            removed.append(old.path)
    return removed


def _remove_stale_temporaries(folder: Path) -> None:
    """A backup interrupted by a crash leaves its temporary file: ours, and worthless."""
    for path in folder.glob(".jobs-*.tmp"):
        with contextlib.suppress(OSError):
            path.unlink()


def link_or_rename(source: Path, target: Path, *, keep: bool = False) -> bool:
    """Give `source` the name `target` unless `target` exists (False then). With `keep`,
    `source` keeps its name too (a hard link; a copy where links are not supported)."""
    try:
        os.link(source, target)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
            raise
        if target.exists():
            return False
        if keep:
            shutil.copy2(source, target)
        else:
            os.rename(source, target)
        return True
    if not keep:
        source.unlink()
    return True


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be fsynced
        fsync_file(folder)


__all__ = [
    "BACKUPS_DIR",
    "Backup",
    "Health",
    "Restored",
    "backup_due",
    "backups_dir",
    "check",
    "damaged_error",
    "find_backup",
    "is_damage",
    "list_backups",
    "newest_backup",
    "newest_restorable",
    "prune_backups",
    "take_backup",
    "when_text",
]
