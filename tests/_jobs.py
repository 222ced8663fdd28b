"""In-process helpers for tests that run jobs through the engine against the simulator:
song files as users write them, and waiting for a job to reach a status in the store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio

from bygheartd.jobs import Job, JobStatus
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


async def until(store: Store, job_id: str, statuses: set[JobStatus], timeout: float = 15) -> Job:
    with anyio.move_on_after(timeout):
        while True:
            job = store.get(job_id)
            if job.status in statuses:
                return job
            await anyio.sleep(0.02)
    return store.get(job_id)
