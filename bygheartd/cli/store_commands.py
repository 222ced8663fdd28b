"""`bygheartd store check` and `bygheartd store restore`: a damaged store, explained and
recovered. Both work when the store does not open at all, which is when they are needed.
`bygheartd store migrate --to URL` moves the SQLite store into PostgreSQL; `store check`
on PostgreSQL connects as a daemon would and says what is there, or why it cannot be used.
"""

from __future__ import annotations

import asyncio

from bygheartd.catalog import counted, credits_phrase
from bygheartd.config import Config, redact_url
from bygheartd.jobs import utcnow
from bygheartd.service.store_care import (
    Backup,
    Health,
    Migrated,
    SharedStoreReport,
    StoreReport,
    backup_folder,
    check_shared_store,
    check_store,
    migrate_store,
    not_strict_line,
    plan_restore,
    restore_store,
    store_file,
    when_text,
)

MAX_PROBLEMS = 5  # integrity_check can list many; the first few say enough


def check_command(config: Config) -> int:
    """Exit 0 when the store is healthy (or not made yet), 1 when it is damaged (or, on
    PostgreSQL, cannot be used)."""
    if config.store.shared:
        return _shared_check(asyncio.run(check_shared_store(config)))
    report = check_store(config)
    health = report.health
    if not health.exists:
        print(
            f"job store {health.path}: not made yet (the first `bygheartd submit` or "
            "`bygheartd run` makes it)"
        )
    elif health.ok:
        print(
            f"job store {health.path}: OK (integrity check passed: {_jobs(health.jobs)}, "
            f"schema {health.schema_version}, {_size(health.size)})"
        )
        if health.not_strict:
            print(f"  note: {not_strict_line(health.not_strict, len(health.not_strict))}")
    else:
        print(f"job store {health.path}: DAMAGED: {health.problem}")
        for line in health.problems[1:MAX_PROBLEMS]:
            print(f"  {line}")
        if len(health.problems) > MAX_PROBLEMS:
            print(f"  ... and {len(health.problems) - MAX_PROBLEMS} more")
    print(_backups_text(config, report))
    if health.exists and not health.ok:
        if report.backups:
            print(
                "to go back to the newest good backup: `bygheartd store restore` (the damaged "
                "file is set aside next to the store, never deleted)"
            )
        else:
            print(
                f"with no backup to go back to, move the file aside (`mv {health.path} "
                f"{health.path}.damaged`) to start again with an empty store"
            )
        return 1
    return 0


def _backups_text(config: Config, report: StoreReport) -> str:
    folder = backup_folder(config)
    if not report.backups:
        why = (
            "[store] backups = 0 takes none"
            if report.keep == 0
            else "`bygheartd run` takes one at start and then daily"
        )
        return f"backups in {folder}: none yet ({why})"
    newest = report.backups[0]
    lines = [
        f"backups in {folder}: {len(report.backups)} ([store] backups = {report.keep})",
        f"  newest: {_backup_line(newest, report.newest)}",
    ]
    return "\n".join(lines)


def _jobs(count: int | None) -> str:
    return f"{count} job" if count == 1 else f"{count} jobs"


def _backup_line(backup: Backup, health: Health | None) -> str:
    text = f"{backup.name}, {when_text(backup.taken_at)}"
    if health is None:
        return text
    if health.ok:
        return f"{text}: {_jobs(health.jobs)}"
    return f"{text}: DAMAGED ({health.problem})"


def restore_command(config: Config, ref: str | None, *, force: bool) -> int:
    plan = plan_restore(config, ref, force=force)
    backup, health = plan.backup, plan.backup_health
    print(
        f"restoring {backup.path.name}, taken {when_text(backup.taken_at)}: "
        f"{_jobs(health.jobs)}, schema {health.schema_version}"
    )
    done = restore_store(config, plan)
    if done.set_aside:
        store, *others = done.set_aside
        extra = f" (with its {', '.join(p.name[len(store.name) :] for p in others)})"
        print(f"set the {plan.label} store aside as {store}{extra if others else ''}")
    print(f"restored {plan.current.path}: {_jobs(health.jobs)}")
    if done.unsent:
        print(
            f"{counted(len(done.unsent), 'job')} "
            f"{'was' if len(done.unsent) == 1 else 'were'} still waiting to be sent when the "
            "backup was taken and may have been made since: failed, not sent again (that "
            "could pay twice); `bygheartd retry JOB` makes one:"
        )
        for job_id, title in done.unsent:
            print(f"  {job_id}  {title}")
        # Like any failure: a note in failed/ for a dropped song, and plugins told.
        import asyncio

        from bygheartd.runtime import announce_restored

        asyncio.run(announce_restored(config, [job_id for job_id, _ in done.unsent]))
    print(
        f"jobs and credits since {when_text(backup.taken_at)} are not in the restored store; "
        "the songs in the output folder are untouched"
    )
    return 0


def _shared_check(report: SharedStoreReport) -> int:
    health = report.health
    if health is None:
        print(report.problem)  # one line, naming the store without its password
        return 1
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(health.by_status.items()))
    print(
        f"job store {health.url}: OK (PostgreSQL {health.server_version}, reachable; schema "
        f"{health.schema_version}; {_jobs(health.jobs)}, {health.events} history lines, "
        f"{health.ledger} ledger lines; {_size(health.size)})"
    )
    if statuses:
        print(f"  jobs: {statuses}")
    if health.not_strict:
        print(f"  note: {not_strict_line(health.not_strict, len(health.not_strict))}")
    if not health.engines:
        print("engines: none registered (each `bygheartd run` on this store registers itself)")
    else:
        print(f"engines: {len(health.engines)}")
        now = utcnow()
        for state in health.engines:
            info = state.info
            lease = (
                f"lease live until {when_text(info.lease_until, now)}"
                if state.live
                else f"lease expired {when_text(info.lease_until, now)}: its jobs go to the "
                "next engine that renews its lease"
            )
            print(
                f"  {info.id} on {info.host} (pid {info.pid}, {info.role}), "
                f"{counted(state.jobs_held, 'job')} held, {lease}"
            )
    print(
        "backups: the database's own (pg_dump, and pg_restore to go back): bygheartd takes "
        "none of its own for a PostgreSQL store"
    )
    local = report.local
    if local.exists:
        jobs = f"{local.jobs} jobs, " if local.jobs is not None else ""
        print(
            f"the SQLite store {local.path} is not used while [store] url is set ({jobs}left "
            "as it was)"
        )
    return 0


def migrate_command(config: Config, url: str) -> int:
    """Copy the SQLite store into an empty PostgreSQL database, then say what comes next."""
    shown = redact_url(url)
    print(f"copying the job store {store_file(config)} into {shown} ...")
    done: Migrated = asyncio.run(migrate_store(config, url))
    tally = done.copied.tally
    print(
        f"copied {_jobs(tally.jobs)}, {counted(tally.events, 'history line')}, "
        f"{counted(tally.ledger, 'ledger line')} ({credits_phrase(tally.credits)}) and "
        f"{counted(tally.meta, 'named value')}; the counts match on both sides"
    )
    if tally.by_status:
        print("  jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(tally.by_status.items())))
    if tally.in_flight:
        print(
            f"{_jobs(tally.in_flight)} {'was' if tally.in_flight == 1 else 'were'} in flight: "
            f"the first daemon on the new store takes {'it' if tally.in_flight == 1 else 'them'} "
            "over (one that was being sent gets the crash rule, never a second submit)"
        )
    print(f"the SQLite store {done.copied.source} is untouched (it was only read)")
    where = f" in {config.source_path}" if config.source_path else " in the config"
    if done.config_names_it:
        print("next: the config names this database already: start the daemon(s)")
    else:
        print(f"next: point every daemon and command at it{where}:")
        print("  [store]")
        print(f'  url = "{shown}"')
        if shown != url:
            print(
                "  (with the password where *** stands, or leave it out of the URL and keep it "
                "in ~/.pgpass or PGPASSFILE), then start the daemon(s)"
            )
        else:
            print("then start the daemon(s)")
    return 0


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
