"""What the API answers, as typed values: a submitted task and the state of a task.

`result` arrives as a JSON string of a list (decoded a second time), any key may be
missing, and a success without a file is a failure: all of that is settled here.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bygheartd.api.errors import ProtocolError
from bygheartd.api.jsonsafe import TooDeep, read_json
from bygheartd.jobs import Take


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


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def reported_seconds(metas: Mapping[str, Any]) -> float | None:
    """A take's duration as its `metas` report it (a number, or a numeric text), in
    seconds; None when it says nothing usable ("N/A", zero, negative, not finite)."""
    value = metas.get("duration")
    if isinstance(value, str):
        try:
            value = float(value.strip()) if len(value) < 32 else None
        except ValueError:
            return None
    seconds = _number(value)
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        return None
    return seconds


def _decode_result(task_id: str, raw: Any) -> list[dict[str, Any]]:
    """The `result` list: a JSON string (decoded a second time) or an already-decoded list."""
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        try:
            raw = read_json(raw)
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


def parse_task_entry(entry: Mapping[str, Any]) -> TaskResult:
    """One `query_result` entry as a TaskResult; the top-level `status` is what counts."""
    task_id = str(entry.get("task_id", ""))
    elements = _decode_result(task_id, entry.get("result"))
    outputs = _outputs(elements)
    status = entry.get("status", 0)
    if isinstance(status, str) and status.strip() in ("0", "1", "2"):
        status = int(status)
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
    progress = next((p for e in elements if (p := _number(e.get("progress"))) is not None), None)
    stage = next((s for e in elements if (s := _opt_str(e.get("stage")))), None)
    return TaskResult(
        task_id=task_id,
        state=state,
        outputs=outputs,
        progress=progress,
        stage=stage,
        progress_text=_opt_str(entry.get("progress_text")),
        analysis=analysis if status == 1 else None,
    )
