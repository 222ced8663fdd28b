"""Review findings in the job engine, each pinned by a test against the real simulator:
money (refunds only for what the server did not charge), output bases that two jobs
never share, and the states a `kill -9` or another process leaves in the store.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import TEST_KEY, MakeConfig

from bygheartd.engine.budget import Budget
from bygheartd.engine.naming import choose_base
from bygheartd.jobs import Job, JobStatus, utcnow
from bygheartd.service.runtime import Runtime
from bygheartd.service.service import SongService
from bygheartd.simulator import RunningSimulator, key_label
from bygheartd.store.store import Store

pytestmark = pytest.mark.anyio


def song(folder: Path, name: str, *, title: str, **front: Any) -> Path:
    front.setdefault("style", "dark synth pop, female vocal")
    front.setdefault("model", "bygheart-melody-fast")
    front.setdefault("duration", 20)
    front["title"] = title
    lines = ["---", *(f"{k}: {json.dumps(v)}" for k, v in front.items()), "---"]
    lines += ["[Verse]", "neon lights tonight", "[Chorus]", "we run until the morning"]
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def used_today(sim: RunningSimulator) -> int:
    row: dict[str, Any] = sim.sim.ledger.snapshot()[key_label(TEST_KEY)]
    return int(row["used_today"])


async def until(store: Store, job_id: str, statuses: set[JobStatus], timeout: float = 15) -> Job:
    with anyio.move_on_after(timeout):
        while True:
            job = store.get(job_id)
            if job.status in statuses:
                return job
            await anyio.sleep(0.02)
    return store.get(job_id)


# -- money ------------------------------------------------------------------------------


async def test_a_retry_that_fails_refunds_only_its_own_reservation(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    """The first attempt's outcome was unknown (the server charged it): a later refund of
    the retry must not give that charge back too."""
    simulator.set_faults(lose_submit_reply=1)
    config = make_config(simulator)
    async with Runtime(config, owner="test") as runtime:
        job = runtime.service.enqueue_file(song(tmp_path, "a.txt", title="Lost Reply"))
        runtime.wake()
        job = await runtime.service.wait(job.id, timeout=20)
        assert job.status is JobStatus.FAILED and "outcome unknown" in (job.reason or "")
        simulator.set_faults(server_error_on_submit=1)
        runtime.service.retry(job.id)
        runtime.wake()
        job = await until(runtime.store, job.id, {JobStatus.FAILED}, timeout=20)
        job = await runtime.service.wait(job.id, timeout=20)
        spent = runtime.service.credits()["today"]["spent"]
        balance = runtime.store.job_credit_balance(job.id)
    assert job.status is JobStatus.FAILED and "refused" in (job.reason or "")
    assert used_today(simulator) == 1  # the lost-reply task was created and charged
    assert spent == 1 and balance == 1


async def test_a_job_left_submitting_by_a_crash_keeps_its_reservation(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    """`kill -9` during the POST: the task may exist and be charged, so no local refund."""
    config = make_config(simulator)
    store = Store.open(config.state_dir)
    service = SongService(config, store)
    job = service.enqueue_file(
        song(tmp_path, "a.txt", title="Crashed", model="bygheart-studio-pro")
    )
    budget = Budget(config, store)
    store.transition(  # exactly what the engine commits before its POST
        job.id,
        JobStatus.SUBMITTING,
        event="submitting",
        expect={JobStatus.QUEUED},
        ledger=budget.ledger_entry(job.id, job.model, 2, "reserve"),
        attempts=1,
    )
    store.close()
    async with Runtime(config, owner="test") as runtime:
        job = await until(runtime.store, job.id, {JobStatus.FAILED})
        balance = runtime.store.job_credit_balance(job.id)
        history = runtime.store.history(job.id)
    assert job.status is JobStatus.FAILED and "outcome unknown" in (job.reason or "")
    assert balance == 2
    assert not any(e.event == "refunded" for e in history)
    assert simulator.sim.stats.submits == 0


async def test_an_error_after_generation_never_refunds_the_charged_song(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(simulator)
    # something in the way of the sidecar's temporary file: delivery cannot finish
    (config.folders.output / ".blocked.json.tmp").mkdir()
    async with Runtime(config, owner="test") as runtime:
        job = runtime.service.enqueue_file(song(tmp_path, "a.txt", title="Blocked"))
        runtime.wake()
        job = await runtime.service.wait(job.id, timeout=20)
        spent = runtime.service.credits()["today"]["spent"]
    assert job.status is JobStatus.FAILED
    assert used_today(simulator) == 1  # the generation succeeded: the server charged it
    assert spent == 1


# -- output bases -----------------------------------------------------------------------


def test_a_download_held_for_later_keeps_its_output_base(make_config: MakeConfig) -> None:
    config = make_config()
    store = Store.open(config.state_dir)
    held = store.insert_job(title="Song", model=None, request={}, api_body={}, credits=1)
    store.transition(  # a download held before its first byte: no file on disk yet
        held.id,
        JobStatus.HELD,
        event="held (download)",
        base_name="song",
        hold_kind="download",
        result={"hold_target": "downloading", "outputs": [{"file": "/a.mp3"}]},
        resumes_at=utcnow() + timedelta(minutes=1),
    )
    reserved = store.reserved_take_stems()
    store.close()
    assert choose_base(config.folders.output, "Song", "x" * 14, reserved) == "song-2"


@pytest.mark.parametrize(
    ("title", "takes", "reserved", "expected"),
    [("Song", 2, {"song-2"}, "song-3"), ("Song 2", 1, {"song", "song-2"}, "song-2-2")],
    ids=["a-second-take-on-a-reserved-base", "a-first-take-on-a-reserved-second-take"],
)
def test_a_base_whose_take_names_overlap_a_reserved_take_is_not_free(
    tmp_path: Path, title: str, takes: int, reserved: set[str], expected: str
) -> None:
    """`song`'s second take `song-2.mp3` is also the first take of a base `song-2`."""
    assert choose_base(tmp_path, title, "x" * 14, reserved, takes) == expected


async def test_a_failing_job_removes_only_its_own_part_files(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(simulator)
    output = config.folders.output
    (output / ".song.json.tmp").mkdir()  # job "Song" cannot finish: it fails
    other = output / "songbird.part"  # another job's download in progress
    other.write_bytes(b"ID3 half a song")
    async with Runtime(config, owner="test") as runtime:
        job = runtime.service.enqueue_file(song(tmp_path, "a.txt", title="Song"))
        runtime.wake()
        job = await runtime.service.wait(job.id, timeout=20)
    assert job.status is JobStatus.FAILED
    assert other.exists()


# -- crash windows and other processes --------------------------------------------------


async def test_a_take_placed_just_before_a_crash_is_adopted_without_a_part_left(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    """`kill -9` after the take was renamed into place, before the store recorded it."""
    config = make_config(simulator)
    output = config.folders.output
    async with Runtime(config, owner="test") as runtime:
        job = runtime.service.enqueue_file(song(tmp_path, "a.txt", title="Placed"))
        runtime.wake()
        job = await runtime.service.wait(job.id, timeout=20)
    assert job.status is JobStatus.DONE
    # the store and the disk as they were at the crash: take placed, nothing recorded
    (output / "placed.json").unlink()
    store = Store.open(config.state_dir)
    result = dict(store.get(job.id).result)
    result.pop("downloaded")
    result.pop("postprocess", None)
    store.transition(job.id, JobStatus.DOWNLOADING, event="crash", files=[], result=result)
    store.close()
    async with Runtime(config, owner="test") as runtime:
        job = await until(runtime.store, job.id, {JobStatus.DONE, JobStatus.FAILED})
    assert job.status is JobStatus.DONE, job.reason
    assert sorted(p.name for p in output.iterdir()) == ["placed.json", "placed.mp3"]
    sidecar = json.loads((output / "placed.json").read_text())
    assert [f["path"] for f in sidecar["files"]] == ["placed.mp3"]


async def test_cancel_and_retry_during_a_download_never_gives_the_new_job_old_files(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    simulator.set_faults(latency=0.5)
    config = make_config(simulator)
    cli = Store.open(config.state_dir)  # the CLI in another process
    cli_service = SongService(config, cli)
    async with Runtime(config, owner="test") as runtime:
        job = runtime.service.enqueue_file(song(tmp_path, "a.txt", title="Twice"))
        runtime.wake()
        await until(cli, job.id, {JobStatus.RUNNING})
        simulator.set_faults(slow_reply_seconds=1.0)  # the download will take a second
        await until(cli, job.id, {JobStatus.DOWNLOADING})
        first_task = cli.get(job.id).task_id
        cli_service.cancel(job.id)
        cli_service.retry(job.id)
        assert runtime.engine is not None
        delivery = runtime.engine.delivery
        with anyio.move_on_after(10):  # the old download completes meanwhile
            while delivery.tasks():
                await anyio.sleep(0.02)
        simulator.set_faults(slow_reply_seconds=0.0)
        runtime.wake()
        job = await runtime.service.wait(job.id, timeout=20)
    cli.close()
    assert job.status is JobStatus.DONE, job.reason
    assert job.task_id != first_task
    served = simulator.sim.tasks[str(job.task_id)].files
    got = [hashlib.sha256(f.path.read_bytes()).hexdigest() for f in job.files]
    assert got == [hashlib.sha256(p.read_bytes()).hexdigest() for p in served]


async def test_a_task_answering_unknown_again_gets_the_full_grace_period(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    """An earlier stretch of `"[]"` (then normal answers) must not shorten the next one."""
    simulator.set_faults(latency=60.0)
    config = make_config(simulator, queue={"unknown_grace_seconds": 2.0})
    async with Runtime(config, owner="test") as runtime:
        store = runtime.store
        job = runtime.service.enqueue_file(song(tmp_path, "a.txt", title="Flicker"))
        runtime.wake()
        job = await until(store, job.id, {JobStatus.RUNNING})
        earlier = utcnow().timestamp() - 600  # "[]" for a while, ten minutes ago
        store.update(job.id, result={**job.result, "unknown_polls": 2, "unknown_since_ts": earlier})
        with anyio.move_on_after(5):  # the task answers normally again
            while store.get(job.id).result.get("unknown_polls"):
                await anyio.sleep(0.02)
        simulator.sim.forget([str(job.task_id)])  # and then "[]" again
        polls = simulator.sim.stats.polls
        with anyio.move_on_after(5):
            while simulator.sim.stats.polls < polls + 4:
                await anyio.sleep(0.02)
        still = store.get(job.id)
        ended = await until(store, job.id, {JobStatus.FAILED})
    assert still.status is JobStatus.RUNNING, still.reason
    assert ended.status is JobStatus.FAILED and "no longer knows" in (ended.reason or "")
