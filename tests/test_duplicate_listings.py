"""One poll reply that lists a task more than once (audit 2026-12-07, F13).

The last entry used to win silently: a success with its file, then a failure, failed the
song, never fetched the file the server had made (and charged for), and refunded it in the
local ledger. Now listings that agree are one answer, a success wins over anything else
with a warning on the job naming every outcome, and disagreeing listings with no success
are no answer this round: the task is polled again.

Against the scripted API for the client alone, and the real simulator behind a proxy that
edits its poll replies for the engine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _jobs import song, until
from _misbehaving import MisbehavingProxy, Rule
from _scripted import (  # noqa: F401 - the server, api and origin fixtures
    scripted_api_fixture,
    scripted_client,
    scripted_origin_fixture,
    scripted_server_fixture,
)
from _servers import PREFIX, TASK_A, TASK_B, ScriptedApi
from conftest import MakeConfig

from bygheartd.api.client import BygheartClient, ProtocolError, TaskState
from bygheartd.config import Config
from bygheartd.jobs import Job, JobStatus
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator

pytestmark = pytest.mark.anyio

KEY = "bgh_duplicate_listings_key_13"
HANG = 60  # an upper bound on waiting for an outcome, never an assertion about time
FILE = "/v1/audio?path=%2Fa.wav"
SUCCESS = {"status": 1, "result": json.dumps([{"file": FILE}])}
FAILURE = {"status": 2, "result": "[]"}
RUNNING = {"status": 0, "result": json.dumps([{"file": "", "progress": 0.4}])}
UNREADABLE = {"status": "done", "result": "[]"}


def client_for(origin: str) -> BygheartClient:
    return scripted_client(origin + PREFIX, KEY, timeout=5.0)


def listing(*entries: tuple[str, dict[str, Any]]) -> Rule:
    """A poll reply holding `entries` (task id, entry) in that order."""
    data = [{"task_id": task_id, **entry} for task_id, entry in entries]
    body = json.dumps({"code": 200, "data": data}).encode()
    return Rule(
        "/query_result",
        "reply",
        status=200,
        headers={"Content-Type": "application/json"},
        body=body,
        content_length=len(body),
    )


async def polled(origin: str, rule: Rule, *task_ids: str) -> dict[str, Any]:
    with MisbehavingProxy(origin, rule) as proxy:
        async with client_for(proxy.origin) as client:
            return await client.query(list(task_ids))


@pytest.mark.parametrize(
    ("entries", "outcomes"),
    [
        ((SUCCESS, FAILURE), "succeeded with 1 file, failed"),
        ((FAILURE, SUCCESS), "failed, succeeded with 1 file"),
        ((FAILURE, SUCCESS, RUNNING), "failed, succeeded with 1 file, queued or running"),
        ((UNREADABLE, SUCCESS), "unreadable, succeeded with 1 file"),
    ],
)
async def test_a_success_listed_with_other_outcomes_wins_with_a_note(
    api: ScriptedApi, origin: str, entries: tuple[dict[str, Any], ...], outcomes: str
) -> None:
    found = await polled(origin, listing(*((TASK_A, e) for e in entries)), TASK_A)
    result = found[TASK_A]
    assert result.state is TaskState.SUCCEEDED
    assert [take.file for take in result.outputs] == [FILE]
    assert result.notes == (
        f"the server listed this task {len(entries)} times in one poll reply, with different "
        f"outcomes ({outcomes}): the success and its files kept",
    )


@pytest.mark.parametrize(
    "entries",
    [(FAILURE, RUNNING), (RUNNING, FAILURE), (FAILURE, {"status": 0, "result": "[]"})],
)
async def test_disagreeing_listings_without_a_success_are_no_answer_this_round(
    api: ScriptedApi, origin: str, caplog: pytest.LogCaptureFixture, entries: Any
) -> None:
    found = await polled(origin, listing(*((TASK_A, e) for e in entries)), TASK_A)
    result = found[TASK_A]
    assert result.state is TaskState.QUEUED_OR_RUNNING and not result.outputs
    assert result.notes[-1].endswith(": read as no answer, polled again")
    if RUNNING in entries:
        assert result.progress == 0.4  # the running listing's own progress is kept
    assert any("listed this task 2 times" in r.getMessage() for r in caplog.records)


async def test_listings_that_agree_are_one_answer_without_a_note(
    api: ScriptedApi, origin: str
) -> None:
    rule = listing((TASK_A, SUCCESS), (TASK_B, FAILURE), (TASK_A, SUCCESS), (TASK_B, FAILURE))
    found = await polled(origin, rule, TASK_A, TASK_B)
    assert found[TASK_A].state is TaskState.SUCCEEDED and found[TASK_A].notes == ()
    assert [take.file for take in found[TASK_A].outputs] == [FILE]
    assert found[TASK_B].state is TaskState.FAILED and found[TASK_B].notes == ()


async def test_a_task_listed_only_unreadably_is_still_a_protocol_error(
    api: ScriptedApi, origin: str
) -> None:
    with pytest.raises(ProtocolError, match='`status` is "done"'):
        await polled(origin, listing((TASK_A, UNREADABLE), (TASK_A, UNREADABLE)), TASK_A)


def each_entry(
    change: Callable[[dict[str, Any]], list[dict[str, Any]]],
) -> Callable[[bytes], bytes]:
    """A proxy edit: every entry of a poll reply replaced by the entries `change` makes."""

    def edit(body: bytes) -> bytes:
        reply = json.loads(body)
        reply["data"] = [new for entry in reply.get("data") or [] for new in change(entry)]
        return json.dumps(reply).encode()

    return edit


async def run_one(config: Config, tmp_path: Path, name: str) -> tuple[Job, list[str]]:
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        job = await runtime.service.submit_file(song(tmp_path, f"{name}.txt", title=name))
        job = await until(runtime.store, job.id, {JobStatus.FAILED, JobStatus.DONE}, HANG)
        history = [f"{e.event}: {e.reason}" for e in await runtime.store.history(job.id)]
    return job, history


async def test_a_success_then_a_failure_for_one_task_is_delivered_and_not_refunded(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    """The audit's repro (`poll_dup_entries`): the success with its file, then `status 2`."""

    def then_failed(entry: dict[str, Any]) -> list[dict[str, Any]]:
        if entry.get("status") != 1:
            return [entry]
        return [entry, {"task_id": entry["task_id"], "status": 2, "result": "[]"}]

    rule = Rule("/query_result", "edit", edit=each_entry(then_failed))
    with MisbehavingProxy(simulator.base_url, rule) as proxy:
        config = make_config(simulator, api={"base_url": proxy.origin})
        job, history = await run_one(config, tmp_path, "listed-twice")
        downloads = proxy.seen("/v1/audio")
    assert job.status is JobStatus.DONE, job.reason
    assert len(job.takes()) == 1 and len(downloads) == 1
    assert (
        "the server listed this task 2 times in one poll reply, with different outcomes "
        "(succeeded with 1 file, failed): the success and its files kept"
    ) in job.warnings
    assert not [h for h in history if h.startswith("refunded")], history


async def test_a_failure_listed_beside_a_running_entry_is_polled_again_until_done(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    """While the task runs, each poll also lists it as failed: no answer, not a failure;
    the later success is delivered."""
    contradicted: list[str] = []

    def failed_too(entry: dict[str, Any]) -> list[dict[str, Any]]:
        if entry.get("status") != 0:
            return [entry]
        contradicted.append(entry["task_id"])
        return [{"task_id": entry["task_id"], "status": 2, "result": "[]"}, entry]

    rule = Rule("/query_result", "edit", edit=each_entry(failed_too))
    with MisbehavingProxy(simulator.base_url, rule) as proxy:
        config = make_config(simulator, api={"base_url": proxy.origin})
        job, history = await run_one(config, tmp_path, "failed-and-running")
    assert contradicted, "the proxy never saw the task running"
    assert job.status is JobStatus.DONE, job.reason
    assert not [h for h in history if h.startswith("refunded")], history
