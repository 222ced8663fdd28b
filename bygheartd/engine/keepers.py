"""Each finished job names one take as its keeper: the quality gate's best, or a person's
choice (DESIGN.md "Takes you can keep").

The gate's best is the first take that passes, then the one with the fewest findings, then
the one closest to the requested length. With `[folders] keepers` set, that folder holds one
copy of each job's keeper (for a music library or a phone sync): a copy of ours that nobody
changed is replaced when the keeper changes; any other file there is never touched.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bygheartd.folders.moves import copy_no_clobber, write_new_text
from bygheartd.jobs import Job, JobFile, JobResult, finite

GATE = "gate"
PERSON = "person"


def takes_of(job: Job) -> list[JobFile]:
    """The job's takes in order (audio files; a plugin may add other files)."""
    return job.takes()


def gate_keeper(
    takes: Sequence[JobFile], quality: Mapping[str, Any] | None, duration: float | None
) -> str | None:
    """The file name of the gate's best take, or None when there is no take."""
    if not takes:
        return None
    judged = quality or {}

    def rank(item: tuple[int, JobFile]) -> tuple[int, int, float, int]:
        index, take = item
        entry = judged.get(take.path.name)
        entry = entry if isinstance(entry, Mapping) else {}
        verdict = entry.get("verdict")
        findings = entry.get("findings")
        measured = entry.get("duration")
        off = (
            abs(float(measured) - duration)
            if duration and isinstance(measured, int | float)
            else 0.0
        )
        failed = 1 if verdict == "fail" else 0
        return (failed, len(findings) if isinstance(findings, list) else 0, off, index)

    return min(enumerate(takes), key=rank)[1].path.name


def set_in_sidecar(path: Path, keeper: str, keeper_by: str) -> None:
    """A person chose another keeper: the sidecar says so (rewritten atomically)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no sidecar to correct (removed by hand): the store still knows
    data["keeper"], data["keeper_by"] = keeper, keeper_by
    write_new_text(
        path, json.dumps(finite(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    )


def place_copy(job: Job, folder: Path) -> dict[str, Any] | None:
    """Put the keeper's copy in `folder` as `<base>.<ext>`; the copy placed before for this
    job goes when nobody changed it. Returns what to remember of the new copy (its path and
    digest), or None when there is no keeper. Blocking: run it off the event loop."""
    keeper = next((t for t in takes_of(job) if t.path.name == job.result.keeper), None)
    if keeper is None:
        return None
    previous = job.result.keeper_copy
    if previous is not None and previous.get("source") == str(keeper.path):
        current = Path(str(previous.get("path")))
        if current.exists() and _digest(current) == previous.get("sha256"):
            return dict(previous)  # already the keeper, untouched
    if previous is not None:
        old = Path(str(previous.get("path")))
        if old.exists() and _digest(old) == previous.get("sha256"):
            old.unlink()  # ours, unchanged: replaced; anything else stays as it is
    name = f"{job.base_name or keeper.path.stem}{keeper.path.suffix}"
    copy = copy_no_clobber(keeper.path, folder, name)
    return {"path": str(copy), "sha256": _digest(copy), "source": str(keeper.path)}


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def with_keeper(result: JobResult, keeper: str | None, by: str) -> JobResult:
    return result.but(keeper=keeper, keeper_by=by if keeper else None)


__all__ = [
    "GATE",
    "PERSON",
    "gate_keeper",
    "place_copy",
    "set_in_sidecar",
    "takes_of",
    "with_keeper",
]
