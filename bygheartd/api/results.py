"""What the API answers, as typed values: a submitted task and the state of a task.

`result` arrives as a JSON string of a list (decoded a second time), any key may be
missing, and a success without a file is a failure: all of that is settled here.

The top-level `status` is one of the integers 0, 1 and 2 (or their digits as text); any
other value, a JSON boolean included (Python's `True == 1`), is a protocol error, never
read as a success. A task id is text of at most MAX_TASK_ID characters with no control
character: the ids of API.md are 36-character UUIDs, and an id is sent back in every poll
and shown in every record.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from bygheartd.api.errors import ProtocolError
from bygheartd.api.jsonsafe import TooDeep, nulled_note, read_json
from bygheartd.jobs import Take

# Generous for any id scheme (a UUID is 36 characters, a URL-safe digest well under 100);
# an id is echoed in every poll and shown in `show`, so one of megabytes is refused.
MAX_TASK_ID = 256
STATUSES = {0, 1, 2}
# How the note on a task listed more than once with different outcomes begins.
LISTED_AGAIN = "the server listed this task"


def task_id_problem(task_id: str) -> str | None:
    """Why a submit reply's task id cannot be used (too long, control characters), or None."""
    if len(task_id) > MAX_TASK_ID:
        return f"the task_id is {len(task_id)} characters long (at most {MAX_TASK_ID})"
    if any(not ch.isprintable() for ch in task_id):
        return "the task_id holds control or invisible characters"
    return None


@dataclass(frozen=True)
class Submitted:
    task_id: str
    queue_position: int | None


class TaskState(enum.StrEnum):
    QUEUED_OR_RUNNING = "queued_or_running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"  # status 0 with result "[]": unknown, expired or lost in a restart


@dataclass(frozen=True)
class TaskResult:
    task_id: str
    state: TaskState
    outputs: list[Take] = field(default_factory=list)
    progress: float | None = None
    stage: str | None = None
    progress_text: str | None = None
    # An analysis task's answer (`full_analysis_only`): the raw element, and no file.
    analysis: Mapping[str, Any] | None = None
    # What the reply held that was changed to be used (a NaN read as null), for the record.
    notes: tuple[str, ...] = ()


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def finite_number(value: Any) -> float | None:
    """A number a server sent, as a finite float; None for anything else (a boolean,
    whose `True` Python counts as 1, an int too large for a float, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def reported_seconds(metas: Mapping[str, Any]) -> float | None:
    """A take's duration as its `metas` report it (a number, or a numeric text), in
    seconds; None when it says nothing usable ("N/A", zero, negative, not finite)."""
    value = metas.get("duration")
    if isinstance(value, str):
        try:
            value = float(value.strip()) if len(value) < 32 else None
        except ValueError:
            return None
    seconds = finite_number(value)
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        return None
    return seconds


def _decode_result(task_id: str, raw: Any, nulled: list[str]) -> list[dict[str, Any]]:
    """The `result` list: a JSON string (decoded a second time) or an already-decoded list.
    Numbers JSON has no place for (NaN) are read as None and named in `nulled`."""
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        try:
            raw = read_json(raw, nulled=nulled)
        except TooDeep as exc:
            raise ProtocolError(f"task {task_id}: `result`: {exc}") from None
        except ValueError:
            raise ProtocolError(f"task {task_id}: `result` is not valid JSON") from None
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise ProtocolError(f"task {task_id}: `result` is a {type(raw).__name__}, not a list")
    return [element for element in raw if isinstance(element, dict)]


def _outputs(elements: list[dict[str, Any]]) -> list[Take]:
    outputs: list[Take] = []
    for index, element in enumerate(elements):
        file = element.get("file")
        if not isinstance(file, str) or not file.strip():
            continue
        seeds = str(element.get("seed_value") or "").split(",")
        seeds = [s.strip() for s in seeds if s.strip()]
        seed = seeds[index] if len(seeds) == len(elements) else None
        if seed is None and len(seeds) == 1:
            seed = seeds[0]
        metas = element.get("metas")
        outputs.append(
            Take(
                file=file.strip(),
                seed=seed,
                metas=dict(metas) if isinstance(metas, dict) else {},
                prompt=_opt_str(element.get("prompt")),
                lyrics=_opt_str(element.get("lyrics")),
                dit_model=_opt_str(element.get("dit_model")),
                lm_model=_opt_str(element.get("lm_model")),
            )
        )
    return outputs


def _shown(value: Any) -> str:
    """A status as the reply wrote it (`true`, `null`, `"done"`), short."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**12:
        return "a huge number"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


def parse_task_entry(entry: Mapping[str, Any]) -> TaskResult:
    """One `query_result` entry as a TaskResult; the top-level `status` is what counts."""
    task_id = str(entry.get("task_id", ""))
    nulled: list[str] = []
    elements = _decode_result(task_id, entry.get("result"), nulled)
    outputs = _outputs(elements)
    status = entry.get("status", 0)  # absent: queued or running (with elements), else unknown
    if isinstance(status, str) and status.strip() in ("0", "1", "2"):
        status = int(status)
    if isinstance(status, bool) or not isinstance(status, int) or status not in STATUSES:
        raise ProtocolError(
            f"task {task_id[:MAX_TASK_ID]}: `status` is {_shown(status)}, not one of 0, 1 or 2"
        )
    # An analysis answers with a raw dict and no file: a success without audio, by design.
    analysis = next((e for e in elements if "status_message" in e and not e.get("file")), None)
    if status == 1:
        state = TaskState.SUCCEEDED if outputs or analysis is not None else TaskState.FAILED
    elif status == 2:
        state = TaskState.FAILED
    elif status == 0 and elements:
        state = TaskState.QUEUED_OR_RUNNING
    else:
        state = TaskState.UNKNOWN
    progress = next(
        (p for e in elements if (p := finite_number(e.get("progress"))) is not None), None
    )
    stage = next((s for e in elements if (s := _opt_str(e.get("stage")))), None)
    return TaskResult(
        task_id=task_id,
        state=state,
        outputs=outputs,
        progress=progress,
        stage=stage,
        progress_text=_opt_str(entry.get("progress_text")),
        analysis=analysis if status == 1 else None,
        notes=(nulled_note("the server's result", nulled),) if nulled else (),
    )


def _outcome(listed: TaskResult | ProtocolError) -> str:
    """One listing of a task, in a few words, for the warning that names them all."""
    if isinstance(listed, ProtocolError):
        return "unreadable"
    if listed.state is TaskState.SUCCEEDED:
        count = len(listed.outputs)
        if count:
            return f"succeeded with {count} file{'s' if count != 1 else ''}"
        return "succeeded (an analysis)"
    return {
        TaskState.FAILED: "failed",
        TaskState.QUEUED_OR_RUNNING: "queued or running",
        TaskState.UNKNOWN: "unknown",
    }[listed.state]


def _alike(first: TaskResult, other: TaskResult) -> bool:
    """Two listings that tell the same outcome (progress may differ: that is no outcome)."""
    return first.state is other.state and [t.file for t in first.outputs] == [
        t.file for t in other.outputs
    ]


def merge_listings(task_id: str, listed: list[TaskResult | ProtocolError]) -> TaskResult:
    """What to act on when one poll reply lists a task more than once (audit F13).

    Letting the last entry win failed a song the server said it made, never fetched the
    file and refunded what the server may have charged. So: listings that agree are one
    answer; else a success wins (the first one with files), with a note naming every
    outcome the server gave; and disagreeing listings with no success are no answer this
    round (queued or running: polled again, and the deadline still ends it, not refunded).
    An entry that cannot be read counts as a disagreeing one; when none can, its error is
    raised, as for a task listed once.
    """
    parsed = [r for r in listed if isinstance(r, TaskResult)]
    if not parsed:
        error = listed[0]
        assert isinstance(error, ProtocolError)
        raise error
    first = parsed[0]
    if len(parsed) == len(listed) and all(_alike(first, other) for other in parsed[1:]):
        return first
    outcomes = ", ".join(_outcome(r) for r in listed)
    said = (
        f"{LISTED_AGAIN} {len(listed)} times in one poll reply, with "
        f"different outcomes ({outcomes})"
    )
    successes = [r for r in parsed if r.state is TaskState.SUCCEEDED]
    if successes:
        best = next((r for r in successes if r.outputs), successes[0])
        kept = "the success and its files kept" if best.outputs else "the success kept"
        return replace(best, notes=(*best.notes, f"{said}: {kept}"))
    running = next((r for r in parsed if r.state is TaskState.QUEUED_OR_RUNNING), None)
    base = running or TaskResult(task_id, TaskState.QUEUED_OR_RUNNING)
    return replace(base, notes=(*base.notes, f"{said}: read as no answer, polled again"))


def keep_asked(takes: tuple[Take, ...], asked: int | None) -> tuple[tuple[Take, ...], str | None]:
    """At most the `asked` takes a success may hold (API.md: "`batch_size` outputs,
    possibly fewer"), the first ones; with a warning naming how many more the server sent."""
    if asked is None or asked < 1 or len(takes) <= asked:
        return takes, None
    extra = len(takes) - asked
    return takes[:asked], (
        f"the server sent {len(takes)} files for {asked} take{'s' if asked != 1 else ''} "
        f"asked: the first {asked} kept, {extra} more ignored"
    )
