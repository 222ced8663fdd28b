"""Helpers shared by the simulator tests: a client per simulator and polling until done."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from bygheartd.simulator import RunningSimulator, SimulatorSettings, run_in_thread

PRO_KEY = "bgh_test_pro_key"
ULT_KEY = "bgh_ult_test_key"
FREE_KEY = "bgh_free_test_key"

QUEUED_KEYS = [
    "file", "wave", "status", "create_time", "env", "prompt", "lyrics", "metas", "progress",
    "stage", "error",
]  # fmt: skip
RUNNING_KEYS = ["file", "wave", "status", "create_time", "env", "progress", "stage"]
FAILED_KEYS = RUNNING_KEYS
SUCCEEDED_KEYS = [
    "file", "wave", "status", "create_time", "env", "prompt", "lyrics", "metas",
    "generation_info", "seed_value", "lm_model", "dit_model", "progress", "stage",
]  # fmt: skip
META_KEYS = ["bpm", "duration", "genres", "keyscale", "timesignature", "prompt", "lyrics"]


def fast(**overrides: Any) -> SimulatorSettings:
    """Settings for tests: quick tasks, tiny audio, a fixed seed."""
    values: dict[str, Any] = {"latency": 0.05, "audio_scale": 0.02, "seed": 7}
    values.update(overrides)
    return SimulatorSettings(**values)


@contextmanager
def simulator(
    key: str | None = PRO_KEY, **overrides: Any
) -> Iterator[tuple[RunningSimulator, httpx.Client]]:
    with run_in_thread(fast(**overrides)) as handle:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with httpx.Client(base_url=handle.base_url, headers=headers, timeout=10) as client:
            yield handle, client


def submit(client: httpx.Client, **body: Any) -> str:
    body.setdefault("prompt", "lofi hip hop piano")
    body.setdefault("batch_size", 1)
    reply = client.post("/release_task", json=body)
    assert reply.status_code == 200, reply.text
    task_id: str = reply.json()["data"]["task_id"]
    return task_id


def query(client: httpx.Client, *task_ids: str) -> list[dict[str, Any]]:
    reply = client.post("/query_result", json={"task_id_list": list(task_ids)})
    assert reply.status_code == 200, reply.text
    data: list[dict[str, Any]] = reply.json()["data"]
    return data


def wait_final(client: httpx.Client, task_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """Poll every 20 ms until status is 1 or 2; the entry, with `result` decoded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (entry,) = query(client, task_id)
        if entry["status"] in (1, 2):
            entry["result"] = json.loads(entry["result"])
            return entry
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} did not finish in {timeout}s")


def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def first_file(client: httpx.Client, **body: Any) -> str:
    entry = wait_final(client, submit(client, **body))
    assert entry["status"] == 1, entry
    file: str = entry["result"][0]["file"]
    return file
