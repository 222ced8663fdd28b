"""In-process helpers for tests that run jobs through the engine against the simulator:
song files as users write them, and waiting for a job to reach a status in the store.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import anyio

from bygheartd.jobs import Job, JobStatus
from bygheartd.store.boundary import JobStore
from bygheartd.store.store import Store


def song(folder: Path, name: str, *, title: str | None = None, **front: Any) -> Path:
    front.setdefault("style", "dark synth pop, female vocal")
    front.setdefault("model", "bygheart-melody-fast")
    front.setdefault("duration", 20)
    if title is not None:
        front["title"] = title
    lines = ["---", *(f"{k}: {json.dumps(v)}" for k, v in front.items()), "---"]
    lines += ["[Verse]", "neon lights tonight", "[Chorus]", "we run until the morning"]
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def current(store: Store | JobStore, job_id: str) -> Job:
    """The job as committed now, from the async store of a runtime or a sync `Store` (the
    view of another process)."""
    found = store.get(job_id)
    if inspect.isawaitable(found):
        job: Job = await found
        return job
    return found


async def until(
    store: Store | JobStore, job_id: str, statuses: set[JobStatus], timeout: float = 15
) -> Job:
    with anyio.move_on_after(timeout):
        while True:
            job = await current(store, job_id)
            if job.status in statuses:
                return job
            await anyio.sleep(0.02)
    return await current(store, job_id)


def force_state(store: Store, job_id: str, status: JobStatus, *, event: str, **fields: Any) -> Job:
    """Write a state that no lifecycle move reaches (`jobs.ALLOWED_MOVES`), the way a crash
    at an awkward instant leaves the store: the test's stand-in for that crash."""
    import sqlite3

    with sqlite3.connect(store.path) as db:  # below the store: its table refuses this move
        db.execute("UPDATE jobs SET status = ? WHERE id = ?", (status.value, job_id))
    return store.update(job_id, event=event, **fields)
