"""The job store's care, for the faces: its integrity check, daily backups, restoring one,
moving it to PostgreSQL and checking it there.

`bygheartd store check` and `bygheartd store restore` must work on a store that does not
open at all, so nothing here opens a `Store` on the live file: a check reads it read-only,
a restore writes the backup's pages into it with SQLite's backup API (so a process that
keeps the store open, an idle `bygheartd mcp`, sees the restored store). A restore holds
the engine lock meanwhile, so that no engine (a daemon, `bygheartd mcp`, `submit --wait`)
starts on the store it is replacing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bygheartd.config import Config, redact_url
from bygheartd.engine.lock import EngineLock, EngineRole, holder_role
from bygheartd.service.errors import ServiceError
from bygheartd.store.backups import Backup as Backup  # re-exported: faces see these
from bygheartd.store.backups import Health as Health
from bygheartd.store.backups import Restored as Restored
from bygheartd.store.backups import (
    backup_due,
    backups_dir,
    check,
    find_backup,
    list_backups,
    newest_restorable,
    take_backup,
)
from bygheartd.store.backups import when_text as when_text
from bygheartd.store.errors import StoreError
from bygheartd.store.migrate import Copied as Copied
from bygheartd.store.migrate import PgHealth as PgHealth
from bygheartd.store.migrate import check_postgres, copy_to_postgres
from bygheartd.store.restore import restore_backup
from bygheartd.store.store import DB_NAME
from bygheartd.store.strictjson import report_line as not_strict_line


def store_file(config: Config) -> Path:
    return config.state_dir / DB_NAME


def backup_folder(config: Config) -> Path:
    return backups_dir(store_file(config))


@dataclass(frozen=True)
class StoreReport:
    """`bygheartd store check`: the store's health and what there is to go back to."""

    health: Health
    backups: list[Backup]
    newest: Health | None  # the newest backup's own check, when there is one
    keep: int  # [store] backups


def check_store(config: Config) -> StoreReport:
    """Integrity check of the store (full) and of its newest backup (quick): blocking."""
    path = store_file(config)
    backups = list_backups(path)
    newest = check(backups[0].path, full=False) if backups else None
    return StoreReport(check(path), backups, newest, config.store.backups)


def backup_store_if_due(config: Config, now: datetime | None = None) -> Backup | None:
    """Take a backup when `[store] backups` wants them and the newest is a day old (or
    there is none); None when none was due. Blocking: the daemon runs it in a thread."""
    keep = config.store.backups
    path = store_file(config)
    if config.store.shared:  # PostgreSQL keeps its own backups (pg_dump), not ours
        return None
    if keep == 0 or not path.exists() or not backup_due(path, now):
        return None
    return take_backup(path, keep, now)


@dataclass(frozen=True)
class SharedStoreReport:
    """`bygheartd store check` with `[store] url`: the database's health, or the one line
    that says why it cannot be used; and the SQLite file it left behind, if any."""

    url: str  # without its password
    health: PgHealth | None
    problem: str | None
    local: Health  # the state folder's SQLite store, unused while [store] url is set


async def check_shared_store(config: Config) -> SharedStoreReport:
    """Connect as a daemon would (the same checks; the first use makes the schema) and
    count what the store holds; never raises for a store that cannot be used."""
    import asyncio

    local = await asyncio.to_thread(check, store_file(config), full=False)
    try:
        health = await check_postgres(config.store.url)
    except StoreError as exc:
        return SharedStoreReport(config.store.display_url(), None, str(exc), local)
    return SharedStoreReport(config.store.display_url(), health, None, local)


@dataclass(frozen=True)
class Migrated:
    """What `bygheartd store migrate` did, and whether the config names the new store yet."""

    copied: Copied
    config_names_it: bool


async def migrate_store(config: Config, url: str) -> Migrated:
    """Copy the state folder's SQLite store into the empty PostgreSQL database at `url`
    (all or nothing, counts checked, the file only read); refused while an engine runs on
    it or when the file is damaged."""
    import asyncio

    if not url.startswith(("postgresql://", "postgres://")):
        raise ServiceError(
            f"--to must be a postgresql:// URL (got {redact_url(url)!r}), like "
            "postgresql://bygheartd@db.example.net/bygheartd"
        )
    _refuse_while_engine_runs(config, "store migrate")
    path = store_file(config)
    health = await asyncio.to_thread(check, path)
    if not health.exists:
        raise ServiceError(f"there is no job store at {path}: nothing to migrate")
    if not health.ok:
        raise ServiceError(
            f"the job store {path} fails its integrity check ({health.problem}): "
            "`bygheartd store check` explains it; restore a backup (`bygheartd store "
            "restore`), then migrate"
        )
    copied = await copy_to_postgres(path, url)
    return Migrated(copied, config.store.url == url)


@dataclass(frozen=True)
class RestorePlan:
    """What `restore_store` will do, shown to the user before it does it."""

    backup: Backup
    backup_health: Health
    current: Health  # the store as it is now (damaged, healthy or missing)

    @property
    def label(self) -> str:
        """How the current file is named once set aside."""
        return "replaced" if self.current.ok else "damaged"


def plan_restore(config: Config, ref: str | None, *, force: bool = False) -> RestorePlan:
    """Which backup a restore takes (`ref`, or the newest that passes its check), or why
    it must not run now: an engine uses the store, or the store is healthy (without
    `force`: going back drops every job and credit since the backup)."""
    if config.store.shared:
        raise ServiceError(
            f"the job store is the PostgreSQL database {config.store.display_url()}: its "
            "backups are the database's own (pg_dump); restore one with pg_restore"
        )
    _refuse_while_engine_runs(config)
    path = store_file(config)
    if ref is None:
        backup, health = newest_restorable(path)
    else:
        backup = find_backup(path, ref)
        health = check(backup.path)
        if not health.ok:
            raise ServiceError(
                f"the backup {backup.path} fails its integrity check ({health.problem}): "
                "name another one, or leave BACKUP out to take the newest good one"
            )
    current = check(path)
    if current.ok and not force:
        raise ServiceError(
            f"the job store {path} passes its integrity check ({current.jobs} jobs): going "
            f"back to the backup from {when_text(backup.taken_at)} drops every job and "
            "credit since; add --force to do it anyway (the current store is set aside, "
            "not deleted)"
        )
    return RestorePlan(backup, health, current)


def restore_store(config: Config, plan: RestorePlan) -> Restored:
    """Carry out `plan` under the engine lock: set the store aside, put the backup in."""
    lock = EngineLock(config.state_dir)
    if not lock.try_acquire(EngineRole.RESTORE):
        _refuse_while_engine_runs(config)
        raise ServiceError("the engine lock is taken: run `bygheartd store restore` again")
    try:
        return restore_backup(store_file(config), plan.backup)
    finally:
        lock.release()


def _refuse_while_engine_runs(config: Config, command: str = "store restore") -> None:
    holder = EngineLock(config.state_dir).holder()
    if holder is None:
        return
    owner = str(holder.get("owner") or "another process")
    pid = holder.get("pid")
    who = f"`{owner}` (pid {pid})" if pid else f"`{owner}`"
    role = holder_role(holder)
    if role is EngineRole.RESTORE:
        raise ServiceError(f"another {who} is restoring the job store right now")
    how = (
        "stop it first (`sudo systemctl stop bygheartd`, `systemctl --user stop bygheartd`, or "
        "Ctrl-C where it runs)"
        if role is EngineRole.DAEMON
        else "let it finish or stop it first"
    )
    raise ServiceError(
        f"{who} is running an engine on the job store {store_file(config)}: {how}, then run "
        f"`bygheartd {command}` again"
    )


__all__ = [
    "Backup",
    "Copied",
    "Health",
    "Migrated",
    "PgHealth",
    "RestorePlan",
    "Restored",
    "SharedStoreReport",
    "StoreReport",
    "backup_folder",
    "backup_store_if_due",
    "check_shared_store",
    "check_store",
    "migrate_store",
    "not_strict_line",
    "plan_restore",
    "restore_store",
    "store_file",
    "when_text",
]
