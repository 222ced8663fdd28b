"""A pool server's place freed by one engine wakes the others waiting for it (PostgreSQL).

Engines sharing a store count each server's `max_in_flight` over all of them. When a song
leaves a full server (done generating, failed, cancelled), an engine that waits for a place
there learns of it through `NOTIFY` at once, not at its next submit tick; and only then: a
move nobody else waits for, a poll, a progress update send nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from _jobs import song
from _simprocs import SimProcess
from conftest import TEST_KEY, write_config

from bygheartd.config import load_config
from bygheartd.jobs import Job, JobStatus
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.store.boundary import JobStore
from bygheartd.store.engines import EngineInfo
from bygheartd.store.postgres import CHANNEL, PostgresJobStore
from bygheartd.store.threaded import SqliteJobStore

pytestmark = pytest.mark.anyio

MODEL = "acestep-v15-turbo"
GPU = "http://gpu-1:8001"


def _config(root: Path, name: str, url: str, server: dict[str, Any], **queue: Any) -> Path:
    home = root / name
    folders = {
        n: str(home / n) for n in ("inbox", "output", "archive", "failed", "drafts", "state")
    }
    for folder in folders.values():
        Path(folder).mkdir(parents=True, exist_ok=True)
    return write_config(
        home / "config.toml",
        {
            "api": {"backend": "acestep", "servers": [server]},
            "folders": folders,
            "queue": {"poll_min_seconds": 0.1, "poll_max_seconds": 0.3, **queue},
            "plugins": {"enabled": []},
            "store": {"url": url, "lease_seconds": 60},
        },
    )


async def _status(runtime: Runtime, job: Job) -> JobStatus:
    return (await runtime.service.get(job.id)).status


# -- the store: who is told, and when ------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    opened: JobStore = (
        SqliteJobStore(tmp_path / "jobs.sqlite3")
        if request.param == "sqlite"
        else PostgresJobStore(request.getfixturevalue("postgres_url"))
    )
    try:
        yield opened
    finally:
        await opened.close()


async def _on(store: JobStore, engine: str) -> Job:
    """A song of `engine` in flight on GPU."""
    info = replace(EngineInfo.new("test", 30), id=engine)
    await store.register_engine(info, 30)
    job = await store.insert_job(
        title="Night drive", model=MODEL, request={}, api_body={}, credits=0
    )
    await store.transition(
        job.id, JobStatus.SUBMITTING, event="submitting", server=GPU, engine=engine
    )
    return await store.transition(job.id, JobStatus.RUNNING, event="submitted")


async def test_wanting_a_place_says_whether_a_server_has_room_now(store: JobStore) -> None:
    assert await store.want_slot("engine-b", {GPU: 1})  # nothing there yet
    first = await _on(store, "engine-a")
    assert not await store.want_slot("engine-b", {GPU: 1})  # full: wait for a wake-up
    assert await store.want_slot("engine-b", {GPU: 2, "http://gpu-2:8001": 1})
    await store.transition(first.id, JobStatus.DOWNLOADING, event="generated")
    assert await store.want_slot("engine-b", {GPU: 1})  # its place is free


async def test_a_freed_place_wakes_the_engines_waiting_for_it_and_only_then(
    postgres_url: str,
) -> None:
    mine, theirs = PostgresJobStore(postgres_url), PostgresJobStore(postgres_url)
    kinds: list[str] = []
    try:
        assert mine.on_work(kinds.append)
        await mine.counts()  # opens the store and its listener
        with anyio.fail_after(10):
            while "reconnected" not in kinds:
                await anyio.sleep(0.01)
        kinds.clear()

        # Engine a's song runs on GPU (limit 1); engine b waits for the place.
        first = await _on(theirs, "engine-a")
        assert not await mine.want_slot("engine-b", {GPU: 1})
        assert not await mine.want_slot("engine-b", {GPU: 1})  # written down once
        assert not await theirs.want_slot("engine-a", {GPU: 1})
        await theirs.update(first.id, progress=0.5)  # a poll's progress: nothing
        await theirs.transition(first.id, JobStatus.DOWNLOADING, event="generated")  # slot

        # Only engine a waits now for its own song's place: it learns of its own moves
        # in-process, so the move off the server sends nothing. A later notification (a new
        # song) arrives after anything that move sent: the commit order.
        second = await _on(theirs, "engine-a")
        assert not await theirs.want_slot("engine-a", {GPU: 1})
        await theirs.transition(second.id, JobStatus.FAILED, event="failed")
        await theirs.insert_job(title="later", model=MODEL, request={}, api_body={}, credits=0)

        # A cancel says `cancelled` anyway: the engine waiting is woken by that, once.
        third = await _on(theirs, "engine-a")
        assert not await mine.want_slot("engine-b", {GPU: 1})
        await theirs.transition(third.id, JobStatus.CANCELLED, event="cancelled")
        fourth = await _on(theirs, "engine-a")
        await theirs.transition(fourth.id, JobStatus.FAILED, event="failed")  # nobody waits
        await theirs.insert_job(title="last", model=MODEL, request={}, api_body={}, credits=0)
        with anyio.fail_after(10):
            while kinds.count("queued") < 6:
                await anyio.sleep(0.01)
    finally:
        await mine.close()
        await theirs.close()
    assert kinds == [
        "queued",
        "slot",
        "queued",
        "queued",
        "queued",
        "cancelled",
        "queued",
        "queued",
    ]


# -- engines: the waiting one submits at once ------------------------------------------


async def test_an_engine_waiting_for_a_shared_servers_place_submits_as_soon_as_it_is_freed(
    postgres_url: str, tmp_path: Path, api_key: str
) -> None:
    with SimProcess(tmp_path / "gpu", latency=4.0) as gpu:
        gpu.start()
        key_a = tmp_path / "a.key"
        key_a.write_text(TEST_KEY + "\n")
        key_a.chmod(0o600)
        server = {"url": gpu.url, "max_in_flight": 1}
        path_a = _config(tmp_path, "a", postgres_url, {**server, "api_key_file": str(key_a)})
        # Engine b's ticks are ten minutes apart: only a wake-up can make it submit now.
        slow = {"poll_min_seconds": 600, "poll_max_seconds": 600}
        path_b = _config(tmp_path, "b", postgres_url, server, **slow)
        async with Runtime(load_config(path_a), role=EngineRole.DAEMON) as a:
            first = await a.service.submit_file(
                song(tmp_path, "first.txt", title="First", model=MODEL, duration=10)
            )
            with anyio.fail_after(20):
                while await _status(a, first) is not JobStatus.RUNNING:
                    await anyio.sleep(0.02)
            # Engine a sends no new song to the server any more (its key file is gone: the
            # server is down for it), but still polls and downloads the one it has there.
            key_a.unlink()
            await a.reload(load_config(path_a), plugins_changed=False)
            async with Runtime(load_config(path_b), role=EngineRole.DAEMON) as b:
                assert b.engine is not None
                engine_b = b.engine.info.id
                second = await b.service.submit_file(
                    song(tmp_path, "second.txt", title="Second", model=MODEL, duration=10)
                )
                with anyio.fail_after(30):  # the first takes about 4 s on the server
                    while await _status(b, second) is JobStatus.QUEUED:
                        await anyio.sleep(0.02)
                sent = await b.service.get(second.id)
                second_history = await b.service.history(second)
                first_history = await a.service.history(first)
    assert sent.status in (JobStatus.SUBMITTING, JobStatus.RUNNING) and sent.server == gpu.url
    submitting = next(e for e in second_history if e.to_status == "submitting")
    assert submitting.reason == f"by engine {engine_b}"
    # The second waited, queued while the first held the place, and went once it was free.
    freed = next(e.at for e in first_history if e.from_status == "running")
    assert second.created_at < freed <= submitting.at


async def test_a_lone_engine_sends_no_notification_per_poll_or_per_song_off_its_server(
    postgres_url: str, tmp_path: Path, api_key: str
) -> None:
    listener = await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)
    payloads: list[str] = []
    async with listener:
        await listener.execute(f"LISTEN {CHANNEL}")
        with SimProcess(tmp_path / "gpu", latency=0.5) as gpu:
            gpu.start()
            # One place on the server and three songs: the engine waits for its own songs'
            # places (and is written down as waiting), polling every 0.05 s meanwhile.
            path = _config(
                tmp_path,
                "alone",
                postgres_url,
                {"url": gpu.url, "max_in_flight": 1},
                poll_min_seconds=0.05,
            )
            async with Runtime(load_config(path), role=EngineRole.DAEMON) as runtime:
                jobs = [
                    await runtime.service.submit_file(
                        song(tmp_path, f"alone-{n}.txt", title=f"Alone {n}", model=MODEL)
                    )
                    for n in range(3)
                ]
                done = [await runtime.service.wait(j.id, timeout=60, interval=0.05) for j in jobs]
                async with await psycopg.AsyncConnection.connect(
                    postgres_url, autocommit=True
                ) as sender:
                    await sender.execute("SELECT pg_notify(%s, 'end')", (CHANNEL,))
            polls = int(gpu.stats()["http_requests"].get("/query_result", 0))
        async for notice in listener.notifies(timeout=10):
            if notice.payload == "end":
                break
            payloads.append(notice.payload)
    assert [j.status for j in done] == [JobStatus.DONE] * 3
    assert polls > 3  # polled, each song more than once
    assert payloads == ["queued"] * 3  # the new songs, nothing per poll or per move
