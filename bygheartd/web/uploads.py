"""Audio uploaded with the new-song form: where it is kept, how "make again" reuses it, and
when it is deleted.

Each form submit gets its own folder `<state>/web-uploads/<random>/` holding the uploaded
files and a `job` file naming the job they belong to. The engine reads the audio from there
when it submits the job (the job's "song file" is `<folder>/form`), and again on a retry,
so a folder is kept while its job can still be submitted: it is deleted only once the job
is final (done, failed, cancelled) and has not changed for `keep_seconds` (7 days by
default, so "make again" and "retry" keep working for a week). A folder no job ever got
(a submit refused half-way) goes after a day.

"Make again" never takes a path from the browser: it names the earlier *job*, and the file
is looked up from that job's own record, and used only when it lies in the uploads folder
or the archive.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from bygheartd.jobs import FINAL_STATUSES, Job

__all__ = [
    "JOB_FILE",
    "KEEP_SECONDS",
    "ORPHAN_SECONDS",
    "job_ids",
    "kept_audio",
    "reuse",
    "sweep",
]

KEEP_SECONDS = 7 * 24 * 3600
ORPHAN_SECONDS = 24 * 3600
JOB_FILE = "job"


def kept_audio(
    job: Job, key: str, source_path: str | None, allowed: tuple[Path, ...]
) -> Path | None:
    """The audio file `job` was made with under `key` (`source_audio`, ...), when it is
    still there and inside one of the `allowed` folders; None otherwise."""
    relative = job.request.get(key)
    if not relative or not source_path:
        return None
    try:
        real = (Path(source_path).parent / str(relative)).resolve(strict=True)
    except OSError:
        return None
    if not real.is_file():
        return None
    for folder in allowed:
        try:
            if real.is_relative_to(folder.resolve()):
                return real
        except OSError:
            continue
    return None


def reuse(original: Path, target: Path) -> None:
    """Put the earlier job's audio into the new job's folder (a hard link when the file
    system allows, else a copy), mode 0600."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.link(original, target)
    except OSError:
        shutil.copyfile(original, target)
        target.chmod(0o600)


def _folders(root: Path) -> list[Path]:
    try:
        return [p for p in root.iterdir() if p.is_dir()]
    except OSError:
        return []


def _job_id(folder: Path) -> str:
    try:
        return (folder / JOB_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def job_ids(root: Path) -> set[str]:
    """The jobs the upload folders under `root` belong to (blocking), for `sweep`."""
    return {job_id for folder in _folders(root) if (job_id := _job_id(folder))}


def sweep(
    root: Path,
    jobs: Mapping[str, Job | None],
    *,
    keep_seconds: float = KEEP_SECONDS,
    orphan_seconds: float = ORPHAN_SECONDS,
    now: datetime | None = None,
) -> list[Path]:
    """Delete the upload folders under `root` nothing needs any more; returns them.

    `jobs` maps the ids `job_ids` found to the job, or to None when it is gone from the
    store; a folder whose job is not in `jobs` (a submit that came since) is left alone."""
    moment = now or datetime.now(UTC)
    removed: list[Path] = []
    for folder in _folders(root):
        job_id = _job_id(folder)
        if not job_id:
            try:
                age = time.time() - folder.stat().st_mtime
            except OSError:
                continue
            if age < orphan_seconds:
                continue  # a submit may be writing it right now
        else:
            if job_id not in jobs:
                continue  # not looked up: its job is new, so not final
            job = jobs[job_id]
            if job is not None:
                if job.status not in FINAL_STATUSES:
                    continue  # queued, running, held: the engine still needs the audio
                if (moment - job.updated_at).total_seconds() < keep_seconds:
                    continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
