"""How jobs look on a terminal (rich tables) and as stable JSON for scripts."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bygheartd.jobs import Event, Job, JobStatus, utcnow

if TYPE_CHECKING:  # rich is imported when a table is drawn, not for `--json`
    from rich.console import Group
    from rich.table import Table

STATUS_STYLE = {
    JobStatus.DONE: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "dim",
    JobStatus.HELD: "yellow",
    JobStatus.RUNNING: "cyan",
    JobStatus.DOWNLOADING: "cyan",
    JobStatus.PROCESSING: "cyan",
    JobStatus.SUBMITTING: "cyan",
    JobStatus.QUEUED: "blue",
}


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def ago(ts: datetime | None) -> str:
    if ts is None:
        return ""
    seconds = (utcnow() - ts).total_seconds()
    if seconds < 0:
        seconds = -seconds
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size:
                return f"in {seconds / size:.0f}{unit}"
        return f"in {seconds:.0f}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


# Statuses whose reason a listing shows: what is wrong, or what a job waits for.
NOTED = frozenset({JobStatus.HELD, JobStatus.FAILED})


def short_path(path: Path) -> str:
    """Relative to the current folder when inside it (what people can paste), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def status_text(job: Job) -> str:
    text = job.status.value
    if job.status is JobStatus.RUNNING and job.progress:
        text += f" {job.progress:.0%}"
    if job.status is JobStatus.HELD and job.resumes_at:
        text += f" ({ago(job.resumes_at)})"
    return text


def jobs_table(jobs: list[Job], *, with_files: bool = False) -> Table:
    """`list` shows what a job is; `--wait` and `demo` show where its files went."""
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    table.add_column("id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("title", overflow="fold")
    if with_files:
        table.add_column("files (or reason)", overflow="fold", ratio=2)
    else:
        table.add_column("model", overflow="fold")
        table.add_column("credits", justify="right")
        table.add_column("created", no_wrap=True)
        if any(j.reason and j.status in NOTED for j in jobs):
            table.add_column("why", overflow="fold", ratio=2)
    for job in jobs:
        cells = [job.id, _status_cell(job), job.title]
        if with_files:
            cells.append("\n".join(short_path(f.path) for f in job.files) or (job.reason or ""))
        else:
            cells += [job.model or "(default)", str(job.credits), ago(job.created_at)]
            if len(table.columns) > len(cells):
                cells.append((job.reason or "") if job.status in NOTED else "")
        table.add_row(*cells)
    return table


def _status_cell(job: Job) -> str:
    return f"[{STATUS_STYLE.get(job.status, '')}]{status_text(job)}[/]"


def job_detail(job: Job, history: list[Event]) -> Group:
    from rich.console import Group
    from rich.table import Table

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    rows: list[tuple[str, str]] = [
        ("id", job.id),
        ("status", f"[{STATUS_STYLE.get(job.status, '')}]{status_text(job)}[/]"),
        ("title", job.title),
        ("model", job.model or "(backend default)"),
        ("credits", str(job.credits)),
        ("task", job.task_id or "-"),
        ("source", job.source or "-"),
    ]
    if job.archived_as:
        rows.append(("archived as", job.archived_as))
    if job.reason:
        rows.append(("reason", job.reason))
    for f in job.files:
        rows.append(("file", f"{f.path} ({f.size} bytes)"))
    for warning in job.warnings:
        rows.append(("warning", warning))
    for name, value in rows:
        facts.add_row(name, value)
    events = Table(box=None, header_style="bold", title="history", title_justify="left")
    for column in ("at", "event", "from → to", "reason"):
        events.add_column(column, overflow="fold")
    for e in history:
        move = f"{e.from_status or ''} → {e.to_status}" if e.to_status else ""
        events.add_row(e.at.strftime("%Y-%m-%d %H:%M:%S"), e.event, move, e.reason or "")
    return Group(facts, "", events)


def credits_text(summary: dict[str, Any]) -> str:
    today, month = summary["today"], summary["month"]
    lines = [f"plan: {summary['plan']} (days turn at 00:00 {summary['timezone']})"]
    if today["cap"] is None:
        lines.append(f"today ({today['day']}): {today['spent']} credits used, no daily cap")
    else:
        lines.append(
            f"today ({today['day']}): {today['spent']} of {today['cap']} used, {today['left']} left"
        )
    if month["allowance"] is None:
        lines.append(f"this month ({month['month']}): {month['spent']} credits used")
    else:
        lines.append(
            f"this month ({month['month']}): {month['spent']} of {month['allowance']} used "
            f"(rollover {month['rollover']}), {month['left']} left"
        )
    for model, credits in sorted(summary["by_model"].items()):
        lines.append(f"  {model or '(default)'}: {credits}")
    if summary.get("server_cap_until"):
        lines.append(f"the server reported its cap reached until {summary['server_cap_until']}")
    return "\n".join(lines)
