"""The `/_sim/...` admin routes: counters, run-time faults, reset, forget and restart,
so tests and benchmarks can steer a simulator running in another process.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .settings import RUNTIME_FIELDS, apply_runtime_changes
from .state import Simulator


def _sim(request: Request) -> Simulator:
    sim: Simulator = request.app.state.sim
    return sim


def detail(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


async def _admin_json(request: Request) -> dict[str, Any] | Response:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return detail(400, "Malformed JSON payload")
    if not isinstance(parsed, dict):
        return detail(400, "JSON payload must be an object")
    return parsed


def _faults_json(sim: Simulator) -> dict[str, Any]:
    return {name: getattr(sim.settings, name) for name in RUNTIME_FIELDS}


async def admin_stats(request: Request) -> Response:
    return JSONResponse(_sim(request).snapshot())


async def admin_faults(request: Request) -> Response:
    sim = _sim(request)
    if request.method == "POST":
        changes = await _admin_json(request)
        if isinstance(changes, Response):
            return changes
        try:
            apply_runtime_changes(sim.settings, changes)
        except ValueError as exc:
            return detail(400, str(exc))
    return JSONResponse(_faults_json(sim))


async def admin_reset(request: Request) -> Response:
    """Clear counters; `{"ledger": true}` also clears credits, `{"tasks": true}` tasks."""
    sim = _sim(request)
    options = await _admin_json(request)
    if isinstance(options, Response):
        return options
    sim.reset_counters()
    if options.get("ledger"):
        sim.ledger.reset()
    if options.get("tasks"):
        sim.forget(None)
        sim.stats.forgotten = 0
    return JSONResponse(sim.snapshot())


async def admin_forget(request: Request) -> Response:
    """`{"task_ids": [...]}` forgets those tasks; an empty body forgets every task."""
    sim = _sim(request)
    options = await _admin_json(request)
    if isinstance(options, Response):
        return options
    ids = options.get("task_ids")
    count = sim.forget(None if ids is None else [str(i) for i in ids])
    return JSONResponse({"forgotten": count})


async def admin_restart(request: Request) -> Response:
    return JSONResponse(_sim(request).restart())


async def admin_tasks(request: Request) -> Response:
    sim = _sim(request)
    rows = [
        {
            "task_id": t.task_id,
            "state": t.state,
            "fate": t.fate,
            "batch_size": t.params.batch_size,
            "credits": t.charge.credits if t.charge else 0,
            "files": [str(f) for f in t.files],
            # epoch seconds: the result became available, and its first download request
            "finished_at": t.finished_at,
            "first_download_at": sim.first_download_at(t),
            "received": t.received,  # the submit body, as it came (no key)
        }
        for t in sim.tasks.values()
    ]
    return JSONResponse({"tasks": rows})


def admin_routes() -> list[BaseRoute]:
    return [
        Route("/_sim/stats", admin_stats, methods=["GET"]),
        Route("/_sim/faults", admin_faults, methods=["GET", "POST"]),
        Route("/_sim/reset", admin_reset, methods=["POST"]),
        Route("/_sim/forget", admin_forget, methods=["POST"]),
        Route("/_sim/restart", admin_restart, methods=["POST"]),
        Route("/_sim/tasks", admin_tasks, methods=["GET"]),
    ]
