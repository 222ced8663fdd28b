"""Restoring a backup of the job store, never deleting anything.

The current store is kept next to it first (a consistent copy, or a damaged file's raw
bytes with its `-wal` and `-shm`, for `sqlite3 FILE .recover`), and the backup is then
written into the live file, which other processes may hold open. Jobs that were waiting to
be sent when the backup was taken are failed in the copy before it goes in (they may have
been sent since: sending them again could pay twice).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from bygheartd.jobs import HoldKind, JobStatus, utcnow
from bygheartd.store.backups import (
    STAMP,
    WAL_FILES,
    Backup,
    Restored,
    check,
    copy_online,
    fsync_file,
    fsync_folder,
)
from bygheartd.store.errors import StoreError
from bygheartd.store.store import Store


def restore_backup(db_path: Path, backup: Backup, now: datetime | None = None) -> Restored:
    """Put `backup` in place of the store at `db_path`, keeping the current store aside.

    The caller holds the engine lock, so no engine writes meanwhile; but an idle `bygheartd
    mcp`, or a `bygheartd run` waiting for the lock, may have the store open. So the backup
    is written *into* the live file with SQLite's backup API: the file keeps its inode and
    every open connection sees the restored store at its next read, under SQLite's locking
    (a file renamed over it would leave them writing into the set-aside copy, and deleting
    the restored store's WAL by name when they close). The copy is prepared under a
    temporary name first: jobs that were still waiting to be sent when the backup was taken
    are failed in it before it goes in, since they may well have been sent since, and the
    API has no idempotency key, so sending them again could pay twice.
    """
    now = now or utcnow()
    health = check(backup.path)
    if not health.ok:
        raise StoreError(
            f"the backup {backup.path} fails its integrity check ({health.problem}): name "
            "another one, or run `bygheartd store restore` without one to take the newest "
            "good backup"
        )
    current = check(db_path)
    label = "replaced" if current.ok else "damaged"
    tmp = db_path.with_name(f".{db_path.name}.restoring")
    try:
        _prepare(tmp, backup, _page_size(db_path) if current.ok else None)
        unsent = _fail_unsent(tmp, backup)
        fsync_file(tmp)
        if not current.exists:
            set_aside: tuple[Path, ...] = ()
            os.replace(tmp, db_path)  # nothing there that a connection could have open
        elif current.ok:
            set_aside = (_set_aside_copy(db_path, label, now),)
            _write_into(tmp, db_path)
        else:
            set_aside = _set_aside_raw(db_path, label, now)
            _write_into_damaged(tmp, db_path)
        fsync_folder(db_path.parent)
    except (OSError, sqlite3.Error) as exc:  # a failed backup step leaves the store as it was
        raise StoreError(f"cannot restore {backup.path} to {db_path}: {exc}") from None
    finally:
        _remove_with_journals(tmp)
    return Restored(backup, health, set_aside, unsent)


def _prepare(tmp: Path, backup: Backup, page_size: int | None) -> None:
    """Copy the backup to `tmp`, with the live store's page size when it has one: SQLite's
    backup API cannot change the page size of a WAL database it writes into."""
    _remove_with_journals(tmp)  # our own leftovers from an interrupted restore
    shutil.copyfile(backup.path, tmp)
    if page_size is None:
        return
    db = sqlite3.connect(str(tmp), isolation_level=None)
    try:
        if int(db.execute("PRAGMA page_size").fetchone()[0]) != page_size:
            db.execute("PRAGMA journal_mode = DELETE")  # VACUUM resizes pages only then
            db.execute(f"PRAGMA page_size = {int(page_size)}")
            db.execute("VACUUM")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot prepare {backup.path} for restoring: {exc}") from None
    finally:
        db.close()


def _page_size(db_path: Path) -> int:
    db = sqlite3.connect(f"file:{quote(str(db_path))}?mode=ro", uri=True, timeout=10.0)
    try:
        return int(db.execute("PRAGMA page_size").fetchone()[0])
    finally:
        db.close()


def _remove_with_journals(path: Path) -> None:
    for suffix in ("", *WAL_FILES, "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _write_into(source: Path, db_path: Path) -> None:
    """Write every page of `source` into the live store, in one transaction, and fold it
    into the file: other connections simply see a new version of the database."""
    src = sqlite3.connect(str(source))
    try:
        dst = sqlite3.connect(str(db_path), timeout=10.0, isolation_level=None)
        try:
            dst.execute("PRAGMA synchronous = FULL")  # the commit reaches the disk
            src.backup(dst)  # pages=-1: one step under the destination's write lock
            dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # a reader may hold it back: fine
        finally:
            dst.close()
    finally:
        src.close()
    for suffix in ("", "-wal"):
        if Path(f"{db_path}{suffix}").exists():
            fsync_file(Path(f"{db_path}{suffix}"))


def _write_into_damaged(source: Path, db_path: Path) -> None:
    """Like `_write_into`; but SQLite cannot write into a file whose header it cannot read
    (garbage, or pages of another size in WAL mode). Then the prepared copy is renamed
    over it, as the only way left: no connection can read such a file anyway, so none has
    anything left to write into it. Its raw files are already set aside, so its -wal and
    -shm go first: SQLite would lay an old WAL over the new file."""
    try:
        _write_into(source, db_path)
        return
    except sqlite3.Error:
        pass
    for suffix in WAL_FILES:
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    os.replace(source, db_path)


def _fail_unsent(path: Path, backup: Backup) -> tuple[tuple[str, str], ...]:
    """Fail queued jobs and jobs held before their submit, in the copy at `path`."""
    store = Store(path)  # migrates an older backup, too
    try:
        waiting = [
            job
            for job in store.list_jobs([JobStatus.QUEUED, JobStatus.HELD])
            if job.hold_kind is not HoldKind.DOWNLOAD  # paid for: it resumes its download
        ]
        for job in waiting:
            store.transition(
                job.id,
                JobStatus.FAILED,
                event="restored",
                reason=(
                    "may have been sent after the backup the store was restored from "
                    f"({backup.taken_at:%Y-%m-%d %H:%M} UTC): not sent again (that could pay "
                    f"twice); `bygheartd retry {job.id}` makes it"
                ),
                expect={JobStatus.QUEUED, JobStatus.HELD},
                resumes_at=None,
                hold_kind=None,
            )
        store.checkpoint()
    finally:
        store.close()
    for suffix in WAL_FILES:  # emptied by the checkpoint; a store is one file when placed
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return tuple((job.id, job.title) for job in waiting)


def _set_aside_copy(db_path: Path, label: str, now: datetime) -> Path:
    """A healthy store is set aside as one consistent, self-contained file (the backup API
    from a connection of its own, as a backup is taken), and the live file stays in use."""
    base = _claim_aside_name(db_path, label, now)
    try:
        copy_online(db_path, base)
    except BaseException:
        base.unlink(missing_ok=True)
        raise
    fsync_file(base)
    return base


def _set_aside_raw(db_path: Path, label: str, now: datetime) -> tuple[Path, ...]:
    """A damaged store is set aside byte for byte, with its -wal and -shm beside it under
    the same name (SQLite finds a WAL by the database's name), so that `sqlite3 FILE
    .recover` can still rescue what the backup does not hold. Copies, not renames: the
    live file is written into next."""
    base = _claim_aside_name(db_path, label, now)
    copied = [base]
    shutil.copyfile(db_path, base)
    for suffix in WAL_FILES:
        source = Path(f"{db_path}{suffix}")
        if source.exists():
            target = Path(f"{base}{suffix}")
            with source.open("rb") as src, target.open("xb") as dst:
                shutil.copyfileobj(src, dst)
            copied.append(target)
    for path in copied:
        fsync_file(path)
    return tuple(copied)


def _claim_aside_name(db_path: Path, label: str, now: datetime) -> Path:
    """Create `jobs.sqlite3.<label>-<UTC time>[-N]`, empty, never over another file (nor
    beside another's -wal or -shm)."""
    stamp = now.astimezone(UTC).strftime(STAMP)
    seq = 1
    while True:
        base = db_path.with_name(f"{db_path.name}.{label}-{stamp}" + (f"-{seq}" if seq > 1 else ""))
        seq += 1
        if any(Path(f"{base}{s}").exists() for s in WAL_FILES):
            continue
        try:
            os.close(os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            continue
        return base


__all__ = ["restore_backup"]
