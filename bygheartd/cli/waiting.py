"""`submit --wait`: one live bar per job, and what stopping early means for the jobs.

The bars read the store the way any face does (through the service), so they move the same
whether this process drives the engine or a running daemon does. Between two polls of the
server the bar keeps moving on the job's ETA, since a bar frozen at 0% until the audio
arrives looks like a hang. The figure is the one `show` and the library page print
(`bygheartd.service.progress`), and a bar never moves backwards (its `Ratchet`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bygheartd.catalog import counted
from bygheartd.jobs import FINAL_STATUSES, Job
from bygheartd.service.progress import Ratchet, estimate

if TYPE_CHECKING:
    from rich.console import Console

    from bygheartd.service.service import SongService

# The bars redraw this often even when the store has nothing new (the ETA runs down).
REDRAW_SECONDS = 0.5


@dataclass(frozen=True)
class Shown:
    """What one bar shows of a job at one moment."""

    fraction: float
    status: str
    left: str


def shown(job: Job, *, now: float | None = None, ratchet: Ratchet | None = None) -> Shown:
    """The bar of `job`: the shared estimate (`bygheartd.service.progress`), the status
    word and the time left; with `ratchet`, never below what that bar showed before."""
    found = ratchet.see(job, now=now) if ratchet is not None else estimate(job, now=now)
    return Shown(found.fraction, job.status.value, found.left)


async def wait_all(
    service: SongService,
    jobs: Sequence[Job],
    timeout: float | None,
    *,
    console: Console | None,
) -> list[Job]:
    """Wait for every job (or the timeout); draw the bars on `console` when given."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    progress = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(bar_width=24),
        TaskProgressColumn(),
        TextColumn("{task.fields[status]}"),
        TextColumn("{task.fields[left]}"),
        console=console,
        disable=console is None,
        transient=False,
    )
    latest = {j.id: j for j in jobs}
    bars = {
        j.id: progress.add_task(_label(j.title), total=1.0, status=j.status.value, left="")
        for j in jobs
    }

    ratchet = Ratchet()

    def redraw() -> None:
        for job_id, job in latest.items():
            view = shown(job, ratchet=ratchet)
            progress.update(
                bars[job_id], completed=view.fraction, status=view.status, left=view.left
            )

    def seen(job: Job) -> None:
        latest[job.id] = job
        redraw()

    import asyncio  # here, not at the top: `bygheartd list` imports this module too

    async def keep_drawing() -> None:
        while True:
            await asyncio.sleep(REDRAW_SECONDS)
            redraw()

    with progress:
        drawing = asyncio.create_task(keep_drawing())
        try:
            results = await asyncio.gather(
                *(service.wait(j.id, timeout=timeout, on_progress=seen) for j in jobs)
            )
        finally:
            drawing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drawing
        redraw()
    return list(results)


def _label(title: str, width: int = 28) -> str:
    return title if len(title) <= width else title[: width - 1] + "…"


async def stopped_waiting(service: SongService, jobs: Sequence[Job], *, ran_engine: bool) -> str:
    """Ctrl-C during `--wait`: the wait stops, the jobs do not. Say where they go on."""
    now = [await service.get(j.id) for j in jobs]
    ids = [j.id for j in now if j.status not in FINAL_STATUSES]
    if not ids:
        return "stopped waiting: every job had already ended (`bygheartd list` shows them)"
    follow = f"`bygheartd follow {' '.join(ids)}`"
    them = "it" if len(ids) == 1 else "them"
    if ran_engine:
        return (
            f"stopped waiting: {counted(len(ids), 'job')} "
            f"{'stays' if len(ids) == 1 else 'stay'} in the queue and nothing paid is lost "
            "(a submitted song keeps generating on the server); `bygheartd run` finishes "
            f"{them}, and {follow} watches {them}"
        )
    return (
        f"stopped waiting: the daemon carries on with {counted(len(ids), 'job')}; {follow} "
        f"watches {them}"
    )


async def print_queued(service: SongService, jobs: Sequence[Job]) -> None:
    """Each job's id first, so that a script or a person has it before the bars start."""
    for job, outlook in zip(jobs, await service.budget_outlooks(jobs), strict=True):
        print(f"queued {job.id} {job.title}: {outlook.text()}", flush=True)
