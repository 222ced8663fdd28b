"""Hostile values in well-formed replies (audit 2026-12-07, F1, F2, F6, F8, F9, F10): a bare
`NaN` or `1e999` in a poll reply, a meta `"bpm": "nan"`, forty files for one take asked, a
`queue_position` of 10^400, a task id of 900 KB or with control characters, `"status":
true`. Each one is read as what it is (null, "not reported", a protocol error), never
stored as something no JSON parser reads, never fails a paid song, and never charges twice.

Against the scripted API for the client alone, and the real simulator behind a proxy that
edits its replies for the engine.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
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
from _servers import PREFIX, TASK_A, ScriptedApi
from conftest import TEST_KEY, MakeConfig
from mcp import Client
from mcp.types import TextContent

from bygheartd.api.client import BygheartClient, ProtocolError, TaskState, TransientError
from bygheartd.config import Config
from bygheartd.jobs import Job, JobStatus
from bygheartd.mcp.server import build_server
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator

pytestmark = pytest.mark.anyio

KEY = "bgh_hostile_values_key_31"
HANG = 60  # an upper bound on waiting for an outcome, never an assertion about time
NAN_MARK = '"__NaN__"'


def client_for(origin: str) -> BygheartClient:
    return scripted_client(origin + PREFIX, KEY, timeout=5.0)


def raw_reply(match: str, body: str) -> Rule:
    data = body.encode()
    return Rule(
        match,
        "reply",
        status=200,
        headers={"Content-Type": "application/json"},
        body=data,
        content_length=len(data),
    )


def strict(text: str) -> Any:
    """JSON as a browser's `JSON.parse` reads it: no NaN, no Infinity."""

    def refuse(token: str) -> Any:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def bgh(config: Config, *args: str) -> subprocess.CompletedProcess[str]:
    assert config.source_path is not None
    env = {**os.environ, "BYGHEART_API_KEY": TEST_KEY, "BYGHEARTD_LOAD_PLUGINS": ""}
    env["COLUMNS"] = "250"
    command = [sys.executable, "-m", "bygheartd", *args, "--config", str(config.source_path)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


async def list_songs(runtime: Runtime) -> str:
    async with Client(build_server(runtime.service)) as client:
        result = await client.call_tool("list_songs", {})
    text = "\n".join(c.text for c in result.content if isinstance(c, TextContent))
    assert not result.is_error, text
    return text


def successes(change: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    """A proxy edit: `change` gets each success entry of a poll reply (its `result` decoded
    to a list); NAN_MARK in what it writes becomes a bare NaN on the wire."""

    def edit(body: bytes) -> bytes:
        reply = json.loads(body)
        for entry in reply.get("data") or []:
            if entry.get("status") == 1:
                entry["result"] = json.loads(entry["result"])
                change(entry)
                entry["result"] = json.dumps(entry["result"]).replace(NAN_MARK, "NaN")
        return json.dumps(reply).replace(NAN_MARK, "NaN").encode()

    return edit


async def run_one(config: Config, tmp_path: Path, name: str, **front: Any) -> tuple[Job, list[str]]:
    """Submit one song through a runtime; its final job and its history's reasons."""
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        job = await runtime.service.submit_file(song(tmp_path, f"{name}.txt", title=name, **front))
        job = await until(runtime.store, job.id, {JobStatus.FAILED, JobStatus.DONE}, HANG)
        history = [f"{e.event}: {e.reason}" for e in await runtime.store.history(job.id)]
    return job, history


# -- F1: numbers that JSON has no place for ---------------------------------------------


async def test_non_finite_numbers_in_a_poll_reply_read_as_null(
    api: ScriptedApi, origin: str, caplog: pytest.LogCaptureFixture
) -> None:
    takes = (
        '[{"file": "/v1/audio?path=%2Fa.wav", "progress": NaN, "metas": {"bpm": NaN, '
        '"duration": Infinity, "genres": -Infinity, "keyscale": 1e999, "timesignature": "4"}}]'
    )
    body = (
        '{"code": 200, "data": [{"task_id": "' + TASK_A + '", "status": 1, '
        '"progress_text": NaN, "result": ' + json.dumps(takes) + "}]}"
    )
    with MisbehavingProxy(origin, raw_reply("/query_result", body)) as proxy:
        async with client_for(proxy.origin) as client:
            found = (await client.query([TASK_A]))[TASK_A]
    assert found.state is TaskState.SUCCEEDED and found.progress_text is None
    [take] = found.outputs
    assert take.metas == {
        "bpm": None,
        "duration": None,
        "genres": None,
        "keyscale": None,
        "timesignature": "4",
    }
    [note] = found.notes
    assert note == (
        "the server's result held 5 numbers JSON has no place for "
        "(NaN, Infinity, -Infinity, 1e999): read as null"
    )
    # The one outside the takes' data (`progress_text`) is logged.
    logged = "POST /query_result: the reply held 1 number JSON has no place for (NaN): read as null"
    assert logged in caplog.messages


async def test_a_nan_in_a_success_is_done_with_null_and_every_listing_works(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    """The auditor's `meta_nan_other`: the song is delivered, the value is null in the
    store and the sidecar (strict JSON), a warning says so, and `list`, `list --json` and
    MCP `list_songs` keep working for every job."""

    def genres_nan(entry: dict[str, Any]) -> None:
        for element in entry["result"]:
            element.setdefault("metas", {})["genres"] = "__NaN__"

    rule = Rule("/query_result", "edit", edit=successes(genres_nan))
    with MisbehavingProxy(simulator.base_url, rule) as proxy:
        config = make_config(simulator, api={"base_url": proxy.origin})
        job, _ = await run_one(config, tmp_path, "nan-genres")
        assert rule.hits >= 1
    assert job.status is JobStatus.DONE, job.reason
    assert job.result.takes[0].metas["genres"] is None
    assert any("held 1 number JSON has no place for (NaN): read as null" in w for w in job.warnings)
    sidecar = strict((config.folders.output / f"{job.base_name}.json").read_text("utf-8"))
    assert sidecar["warnings"] == list(job.warnings)
    listed = bgh(config, "list")
    assert listed.returncode == 0, listed.stderr
    assert job.id in listed.stdout
    as_json = bgh(config, "list", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert [r["id"] for r in json.loads(as_json.stdout)] == [job.id]
    async with Runtime(config, role=EngineRole.MCP, engine=False) as runtime:
        assert job.id in await list_songs(runtime)


BAD_RESULT = (
    '{"keeper": "old.wav", "keeper_by": "gate", "outputs": [{"file": "/v1/audio?path=old.wav",'
    ' "prompt": "old style", "metas": {"bpm": NaN, "duration": Infinity, "genres": NaN}}]}'
)


async def queued_job(config: Config, tmp_path: Path, name: str) -> str:
    async with Runtime(config, role=EngineRole.MCP, engine=False) as runtime:
        job = await runtime.service.submit_file(song(tmp_path, f"{name}.txt", title=name))
    return job.id


async def test_an_old_row_holding_nan_never_breaks_a_listing_and_store_check_names_it(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """A store written by an older version: `result_json` holds bare NaN tokens."""
    config = make_config(None)
    bad = await queued_job(config, tmp_path, "old-bad")
    good = await queued_job(config, tmp_path, "fine")
    with sqlite3.connect(config.folders.state / "jobs.sqlite3") as db:
        db.execute("UPDATE jobs SET result_json = ? WHERE id = ?", (BAD_RESULT, bad))
    for args in (("list",), ("list", "--status", "queued"), ("list", "--json")):
        listed = bgh(config, *args)
        assert listed.returncode == 0, (args, listed.stderr)
        assert bad in listed.stdout and good in listed.stdout
    shown = bgh(config, "show", bad)
    assert shown.returncode == 0, shown.stderr
    assert "Traceback" not in shown.stderr
    shown_json = bgh(config, "show", bad, "--json")
    assert shown_json.returncode == 0, shown_json.stderr
    strict(shown_json.stdout)  # what scripts read is strict JSON: the NaN prints as null
    checked = bgh(config, "store", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK (integrity check passed" in checked.stdout
    assert "1 job holds a number strict JSON has no place for (NaN or Infinity" in checked.stdout
    assert f"older bygheartd from a server's reply): {bad}." in checked.stdout
    async with Runtime(config, role=EngineRole.MCP, engine=False) as runtime:
        text = await list_songs(runtime)
        [kept] = [j for j in await runtime.store.list_jobs(summary=True) if j.id == bad]
    assert bad in text and good in text
    assert kept.result.keeper is None  # the row's keeper cannot be read: none shown


async def test_an_old_row_holding_nan_never_breaks_a_postgresql_listing(
    make_config: MakeConfig, tmp_path: Path, postgres_url: str
) -> None:
    import psycopg

    config = make_config(None, store={"url": postgres_url})
    bad = await queued_job(config, tmp_path, "old-bad")
    good = await queued_job(config, tmp_path, "fine")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET result_json = %s WHERE id = %s", (BAD_RESULT, bad))
    async with Runtime(config, role=EngineRole.MCP, engine=False) as runtime:
        listed = {j.id: j for j in await runtime.store.list_jobs(summary=True)}
        text = await list_songs(runtime)
    assert set(listed) == {bad, good} and listed[bad].result.keeper is None
    assert bad in text and good in text
    checked = bgh(config, "store", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 job holds a number strict JSON has no place for" in checked.stdout
    assert f"server's reply): {bad}." in checked.stdout


# -- F2: a meta that is not a finite number is "not reported" ---------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "1e999", "__NaN__"])
async def test_a_meta_that_is_no_finite_number_is_not_reported_and_the_song_is_done(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path, value: str
) -> None:
    """`"bpm": "nan"` (valid JSON) failed a paid, downloaded song in delivery and in the
    tags plugin, and `show` raised; a bare NaN, read as null, too."""

    def bpm(entry: dict[str, Any]) -> None:
        for element in entry["result"]:
            element.setdefault("metas", {}).update(bpm=value, duration=value)

    rule = Rule("/query_result", "edit", edit=successes(bpm))
    with MisbehavingProxy(simulator.base_url, rule) as proxy:
        config = make_config(
            simulator, api={"base_url": proxy.origin}, plugins={"enabled": ["tags"]}
        )
        job, _ = await run_one(config, tmp_path, "nan-bpm", bpm=96)
    assert job.status is JobStatus.DONE, job.reason
    assert not [w for w in job.warnings if "plugin 'tags' failed" in w], job.warnings
    generated = job.generated() or {}
    assert "bpm" not in generated and "duration" not in generated
    strict((config.folders.output / f"{job.base_name}.json").read_text("utf-8"))
    shown = bgh(config, "show", job.id)
    assert shown.returncode == 0, shown.stderr
    shown_json = bgh(config, "show", job.id, "--json")
    assert shown_json.returncode == 0, shown_json.stderr
    strict(shown_json.stdout)


# -- F6: more files than takes asked --------------------------------------------------


async def test_forty_files_for_one_take_keep_the_first_with_a_warning(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    def forty(entry: dict[str, Any]) -> None:
        entry["result"] = entry["result"][:1] * 40

    rule = Rule("/query_result", "edit", edit=successes(forty))
    with MisbehavingProxy(simulator.base_url, rule) as proxy:
        config = make_config(simulator, api={"base_url": proxy.origin})
        job, history = await run_one(config, tmp_path, "forty", takes=1)
        downloads = proxy.seen("/v1/audio")
    assert job.status is JobStatus.DONE, job.reason
    assert len(job.result.takes) == 1 and len(job.takes()) == 1
    assert len(downloads) == 1
    warning = "the server sent 40 files for 1 take asked: the first 1 kept, 39 more ignored"
    assert warning in job.warnings
    assert "generated: 1 file ready" in history
    kept = sorted(p.name for p in config.folders.output.iterdir())
    assert len(kept) == 2 and kept[0].endswith(".json"), kept  # one take and its sidecar


# -- F8: a queue position no queue has --------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "position"),
    [("3", 3), ("0", 0), ("1" + "0" * 400, None), ("1" + "0" * 30, None), ("-2", None)],
    ids=["3", "0", "10^400", "10^30", "negative"],
)
async def test_a_queue_position_out_of_any_range_is_ignored(
    api: ScriptedApi, origin: str, raw: str, position: int | None
) -> None:
    body = '{"code": 200, "data": {"task_id": "t-1", "queue_position": ' + raw + "}}"
    with MisbehavingProxy(origin, raw_reply("/release_task", body)) as proxy:
        async with client_for(proxy.origin) as client:
            submitted = await client.submit({"prompt": "x"})
    assert submitted.task_id == "t-1" and submitted.queue_position == position


# -- F9: a task id bygheartd cannot use ---------------------------------------------------


@pytest.mark.parametrize(
    ("task_id", "reason"),
    [
        ("A" * 900_000, "the task_id is 900000 characters long (at most 256)"),
        ("task\x1b]52;c;SGk=\x07", "the task_id holds control or invisible characters"),
        ("../../x\x00y", "the task_id holds control or invisible characters"),
    ],
    ids=["900-KB", "escape", "nul"],
)
async def test_a_task_id_too_long_or_with_control_characters_is_an_unknown_outcome(
    api: ScriptedApi, origin: str, task_id: str, reason: str
) -> None:
    body = json.dumps({"code": 200, "data": {"task_id": task_id, "queue_position": 1}})
    with MisbehavingProxy(origin, raw_reply("/release_task", body)) as proxy:
        async with client_for(proxy.origin) as client:
            with pytest.raises(TransientError) as info:
                await client.submit({"prompt": "x"})
            assert client.requests_made["submit"] == 1  # never resent: it may exist
    assert info.value.outcome_unknown
    message = str(info.value)
    assert message == (
        f"POST /release_task: {reason}: not a task id bygheartd can use "
        "(the task may or may not exist)"
    )


async def test_a_900_kb_task_id_fails_the_job_as_an_unknown_outcome_never_resubmitted(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    body = json.dumps({"code": 200, "data": {"task_id": "A" * 900_000, "queue_position": 1}})
    with MisbehavingProxy(simulator.base_url, raw_reply("/release_task", body)) as proxy:
        config = make_config(simulator, api={"base_url": proxy.origin})
        job, _ = await run_one(config, tmp_path, "huge-id")
        submits, polls = proxy.seen("/release_task"), proxy.seen("/query_result")
    assert job.status is JobStatus.FAILED, job.reason
    reason = job.reason or ""
    assert "submission outcome unknown" in reason
    assert "the task_id is 900000 characters long (at most 256)" in reason
    assert len(submits) == 1 and polls == [] and job.task_id is None
    assert len(reason) < 2000


# -- F10: a JSON boolean is no status ----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "shown"),
    [
        ("true", "true"),
        ("false", "false"),
        ("null", "null"),
        ("7", "7"),
        ("1.0", "1.0"),
        ('"done"', '"done"'),
    ],
)
async def test_a_status_other_than_0_1_2_is_a_protocol_error(
    api: ScriptedApi, origin: str, status: str, shown: str
) -> None:
    takes = json.dumps([{"file": "/v1/audio?path=%2Fa.wav"}])
    body = (
        '{"code": 200, "data": [{"task_id": "' + TASK_A + '", "status": ' + status + ", "
        '"result": ' + json.dumps(takes) + "}]}"
    )
    with MisbehavingProxy(origin, raw_reply("/query_result", body)) as proxy:
        async with client_for(proxy.origin) as client:
            with pytest.raises(ProtocolError) as info:
                await client.query([TASK_A])
    assert f"task {TASK_A}: `status` is {shown}, not one of 0, 1 or 2" in str(info.value)


async def test_status_true_is_never_read_as_a_success(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    """The first success poll says `"status": true` and names a file the server does not
    have: read as a success, the job would fail on a 404; it is a protocol error, the
    next poll is the real answer and the real take is kept."""
    edited: list[str] = []

    def bogus(entry: dict[str, Any]) -> None:
        if not edited:
            edited.append(entry["task_id"])
            entry["status"] = True
            entry["result"][0]["file"] = "/v1/audio?path=%2Fnowhere%2Fbogus.wav"

    rule = Rule("/query_result", "edit", edit=successes(bogus))
    with MisbehavingProxy(simulator.base_url, rule) as proxy:
        config = make_config(simulator, api={"base_url": proxy.origin})
        job, history = await run_one(config, tmp_path, "status-true")
        bogus_fetches = proxy.seen("bogus.wav")
    assert edited, "the proxy never saw the success"
    assert job.status is JobStatus.DONE, job.reason
    assert bogus_fetches == [] and len(job.takes()) == 1
    assert not any(h.startswith("held") for h in history), history
