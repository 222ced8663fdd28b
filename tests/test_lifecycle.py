"""The life of a job, declared once (`jobs.ALLOWED_MOVES`), enforced by the store, and the
side effects of its moves owned by `engine/lifecycle.py`."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest
from conftest import REPO, MakeConfig

from bygheartd.engine.lifecycle import Lifecycle
from bygheartd.jobs import ALLOWED_MOVES, FINAL_STATUSES, Event, Job, JobStatus
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator
from bygheartd.store.errors import IllegalMove, StaleTransition
from bygheartd.store.store import Store
from bygheartd.store.threaded import SqliteJobStore

pytestmark = pytest.mark.anyio

SONG = "style: bright synth pop\nduration: 10\n\n[Verse]\nla la la\n"


def _job(store: Store) -> Job:
    return store.insert_job(title="t", model=None, request={}, api_body={}, credits=0)


def _walk(store: Store, job: Job, *path: JobStatus) -> Job:
    for status in path:
        job = store.transition(job.id, status, event=f"to {status}")
    return job


def test_every_status_declares_its_moves_and_only_retry_leaves_an_end() -> None:
    assert set(ALLOWED_MOVES) == set(JobStatus)
    assert ALLOWED_MOVES[JobStatus.DONE] == frozenset()
    for final in FINAL_STATUSES - {JobStatus.DONE}:
        assert ALLOWED_MOVES[final] == {JobStatus.QUEUED}  # `retry`
    for status, targets in ALLOWED_MOVES.items():
        assert status not in targets
        if not status.is_final:  # anything still alive can be cancelled or fail
            assert {JobStatus.CANCELLED, JobStatus.FAILED} <= targets


def test_the_store_refuses_a_move_the_table_lacks_and_names_both_statuses(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "jobs.sqlite3")
    try:
        job = _job(store)
        with pytest.raises(IllegalMove, match="cannot move from queued to done"):
            store.transition(job.id, JobStatus.DONE, event="done")
        after = store.get(job.id)
        assert after.status is JobStatus.QUEUED
        assert [e.event for e in store.history(job.id)] == ["created"]  # nothing written
        done = _walk(
            store,
            job,
            JobStatus.SUBMITTING,
            JobStatus.RUNNING,
            JobStatus.DOWNLOADING,
            JobStatus.PROCESSING,
            JobStatus.DONE,
        )
        assert done.status is JobStatus.DONE
        with pytest.raises(IllegalMove, match="from done to queued"):
            store.transition(job.id, JobStatus.QUEUED, event="retry")
    finally:
        store.close()


def test_a_status_changes_only_by_a_move(tmp_path: Path) -> None:
    store = Store(tmp_path / "jobs.sqlite3")
    try:
        job = _job(store)
        with pytest.raises(ValueError, match="use transition"):
            store.update(job.id, status="done")
        assert store.get(job.id).status is JobStatus.QUEUED
    finally:
        store.close()


async def test_the_async_store_refuses_it_too_and_a_lost_race_is_stale(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    try:
        job = await store.insert_job(title="t", model=None, request={}, api_body={}, credits=0)
        with pytest.raises(IllegalMove):
            await store.transition(job.id, JobStatus.DOWNLOADING, event="generated")
        await store.transition(job.id, JobStatus.CANCELLED, event="cancelled")
        # A stage that lost the race to a cancel meets a StaleTransition, whatever the cause.
        with pytest.raises(StaleTransition):
            await store.transition(
                job.id, JobStatus.SUBMITTING, event="submitting", expect={JobStatus.QUEUED}
            )
    finally:
        await store.close()


def test_the_architecture_page_draws_the_table_the_code_has() -> None:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## The life of a job: the allowed moves", 1)[1].split("\n## ", 1)[0]
    drawn: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            drawn[cells[0].strip("`")] = set(re.findall(r"`(\w+)`", cells[1]))
    assert drawn == {s.value: {t.value for t in ts} for s, ts in ALLOWED_MOVES.items()}


async def _processing(tmp_path: Path, make_config: MakeConfig) -> tuple[SqliteJobStore, Job]:
    path = make_config().state_dir / "jobs.sqlite3"
    sync = Store(path)
    try:
        job = _walk(
            sync,
            _job(sync),
            JobStatus.SUBMITTING,
            JobStatus.RUNNING,
            JobStatus.DOWNLOADING,
            JobStatus.PROCESSING,
        )
    finally:
        sync.close()
    return SqliteJobStore(path), job


async def test_the_sidecar_is_written_from_the_done_state_being_committed(
    tmp_path: Path, make_config: MakeConfig
) -> None:
    store, job = await _processing(tmp_path, make_config)
    lifecycle = Lifecycle(make_config(), store)
    seen: list[tuple[Job, list[Event]]] = []
    try:
        done = await lifecycle.finish(job, "1 file(s)", lambda j, h: seen.append((j, h)))
        assert done is not None and done.status is JobStatus.DONE
        [(committed, history)] = seen
        assert committed.status is JobStatus.DONE and committed.completed_at is not None
        assert (history[-1].event, history[-1].to_status) == ("done", "done")
    finally:
        await store.close()


async def test_a_job_cancelled_before_done_never_gets_a_sidecar(
    tmp_path: Path, make_config: MakeConfig
) -> None:
    store, job = await _processing(tmp_path, make_config)
    lifecycle = Lifecycle(make_config(), store)
    written: list[Job] = []
    try:
        await lifecycle.cancel(job)
        assert await lifecycle.finish(job, "1 file(s)", lambda j, h: written.append(j)) is None
        assert written == []
        assert (await store.get(job.id)).status is JobStatus.CANCELLED
    finally:
        await store.close()


async def test_a_sidecar_that_cannot_be_written_leaves_the_job_processing(
    tmp_path: Path, make_config: MakeConfig
) -> None:
    store, job = await _processing(tmp_path, make_config)
    lifecycle = Lifecycle(make_config(), store)

    def disk_full(done: Job, history: list[Event]) -> None:
        raise OSError(28, "No space left on device")

    try:
        with pytest.raises(OSError, match="No space"):
            await lifecycle.finish(job, "1 file(s)", disk_full)
        after = await store.get(job.id)
        assert after.status is JobStatus.PROCESSING and after.completed_at is None
        assert "done" not in [e.event for e in await store.history(job.id)]
    finally:
        await store.close()


SLOW_NOTIFIER = """
import time
from pathlib import Path

from bygheartd import hookimpl

@hookimpl
def on_failed(job, reason):
    time.sleep(1.0)  # a webhook that takes its time
    Path({marker!r}).write_text(job.id)
"""


async def test_a_failure_notification_in_flight_finishes_before_the_engine_stops(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = tmp_path / "notified"
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "slow_notifier.py").write_text(SLOW_NOTIFIER.format(marker=str(marker)))
    monkeypatch.setenv("BYGHEARTD_LOAD_PLUGINS", "slow_notifier")
    simulator.set_faults(server_error_on_submit=1)  # a 500: the job fails at once
    config = make_config(simulator, plugins={"enabled": [], "paths": [str(folder)]})
    song = tmp_path / "song.txt"
    song.write_text(SONG)
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        assert runtime.plugin_names() == ["slow_notifier"]
        job = await runtime.service.submit_file(song)
        with anyio.fail_after(15):
            while (await runtime.service.get(job.id)).status is not JobStatus.FAILED:
                await anyio.sleep(0.02)
        assert not marker.exists()  # the notification is still on its way
        await runtime.stop_engine(drain_seconds=10)
        assert marker.read_text() == job.id  # finished by the stop, not cut off
