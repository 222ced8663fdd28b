"""Renders `/query_result` entries with the real server's exact key sets and order: queued,
running, succeeded and failed elements differ, `result` is a JSON string, unknown ids "[]".
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from .state import SimTask, Simulator
from .tasks import analysis, ran_on
from .writer import success_fields

ENV = "development"
LM_MODEL = "acestep-5Hz-lm-0.6B"
FORMS = ("relative", "absolute_url", "raw_path")


def _dumps(value: Any) -> str:
    # Python's json.dumps defaults (", " / ": ") with raw UTF-8, as the server's strings show.
    return json.dumps(value, ensure_ascii=False)


def file_reference(path: str, form: str, origin: str, prefix: str) -> str:
    relative = "/v1/audio?path=" + quote(path, safe="")
    if form == "raw_path":
        return path
    if form == "absolute_url":
        return f"{origin}{prefix}{relative}"
    return relative


def _generation_info(count: int, seconds: float) -> str:
    songs = f"{count} song{'s' if count != 1 else ''}"
    per = seconds / max(count, 1)
    return (
        f"**🎵 Total generation time ({songs}): {seconds:.2f}s**\n"
        f"- {per:.2f}s per song\n"
        f"- DiT phase ({songs}): {seconds:.2f}s"
    )


def elements(task: SimTask, sim: Simulator, origin: str) -> list[dict[str, Any]]:
    base = {"file": "", "wave": "", "status": 0, "create_time": int(task.created), "env": ENV}
    if task.state == "queued":
        return [
            base
            | {
                "prompt": "",
                "lyrics": "",
                "metas": {},
                "progress": 0.0,
                "stage": "queued",
                "error": None,
            }
        ]
    if task.state in ("running", "frozen"):
        progress, stage = task.progress()
        return [base | {"progress": progress, "stage": stage}]
    if task.state == "failed":
        return [base | {"status": 2, "progress": 0.0, "stage": "failed"}]
    if task.params.full_analysis_only:  # the raw dict: no file, status or stage
        return [analysis(task.params)]
    written = success_fields(task.params, task.written)
    seed_value = ",".join(str(s) for s in task.seeds)
    info = _generation_info(len(task.files), task.generation_seconds)
    configured = sim.settings.file_form
    out = []
    for index, path in enumerate(task.files):
        form = FORMS[(task.seq + index) % 3] if configured == "mixed" else configured
        out.append(
            base
            | {
                "file": file_reference(str(path), form, origin, sim.settings.path_prefix),
                "status": 1,
                "prompt": written["prompt"],
                "lyrics": written["lyrics"],
                "metas": dict(written["metas"]),
                "generation_info": info,
                "seed_value": seed_value,
                "lm_model": LM_MODEL,
                "dit_model": ran_on(task.params, sim.settings.dit_models),
                "progress": 1.0,
                "stage": "succeeded",
            }
        )
    return out


def query_entries(task_ids: list[str], sim: Simulator, origin: str) -> list[dict[str, Any]]:
    """The `data` list in request order; one progress_text for the whole reply."""
    for task_id in task_ids:
        task = sim.tasks.get(task_id)
        if task is not None:
            sim.expire_overdue(task)
    return [query_entry(task_id, sim, origin) for task_id in task_ids]


def query_entry(task_id: str, sim: Simulator, origin: str) -> dict[str, Any]:
    """One `data` entry; status 0 queued/running, 1 succeeded, 2 failed."""
    task = sim.tasks.get(task_id)
    if task is None:
        return {"task_id": task_id, "result": "[]", "status": 0}
    status = {"succeeded": 1, "failed": 2}.get(task.state, 0)
    return {
        "task_id": task_id,
        "result": _dumps(elements(task, sim, origin)),
        "status": status,
        "progress_text": sim.progress_text,
    }
