"""`bygheartd store check` and `bygheartd store restore`: a damaged store, explained and
recovered. Both work when the store does not open at all, which is when they are needed.
"""

from __future__ import annotations

from bygheartd.config import Config
from bygheartd.service.store_care import (
    Backup,
    Health,
    StoreReport,
    backup_folder,
    check_store,
    plan_restore,
    restore_store,
    when_text,
)

MAX_PROBLEMS = 5  # integrity_check can list many; the first few say enough


def check_command(config: Config) -> int:
    """Exit 0 when the store is healthy (or not made yet), 1 when it is damaged."""
    report = check_store(config)
    health = report.health
    if not health.exists:
        print(
            f"job store {health.path}: not made yet (the first `bygheartd submit` or "
            "`bygheartd run` makes it)"
        )
    elif health.ok:
        print(
            f"job store {health.path}: OK (integrity check passed: {health.jobs} jobs, "
            f"schema {health.schema_version}, {_size(health.size)})"
        )
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


def _backup_line(backup: Backup, health: Health | None) -> str:
    text = f"{backup.name}, {when_text(backup.taken_at)}"
    if health is None:
        return text
    if health.ok:
        return f"{text}: {health.jobs} jobs"
    return f"{text}: DAMAGED ({health.problem})"


def restore_command(config: Config, ref: str | None, *, force: bool) -> int:
    plan = plan_restore(config, ref, force=force)
    backup, health = plan.backup, plan.backup_health
    print(
        f"restoring {backup.path.name}, taken {when_text(backup.taken_at)}: {health.jobs} "
        f"jobs, schema {health.schema_version}"
    )
    done = restore_store(config, plan)
    if done.set_aside:
        store, *others = done.set_aside
        extra = f" (with its {', '.join(p.name[len(store.name) :] for p in others)})"
        print(f"set the {plan.label} store aside as {store}{extra if others else ''}")
    print(f"restored {plan.current.path}: {health.jobs} jobs")
    if done.unsent:
        print(
            f"{len(done.unsent)} job(s) were still waiting to be sent when the backup was "
            "taken and may have been made since: they are failed, not sent again (that could "
            "pay twice); `bygheartd retry JOB` makes one:"
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


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
