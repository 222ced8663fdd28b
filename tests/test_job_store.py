"""One suite for every store behind the boundary (`JobStore`): SQLite in a state folder and
a real PostgreSQL database (Debian's server, started by the tests) must behave the same."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from bygheartd.jobs import Event, Job, JobStatus, utcnow
from bygheartd.store.boundary import JobStore
from bygheartd.store.columns import CreditCaps
from bygheartd.store.errors import (
    DropTaken,
    IllegalMove,
    JobNotFound,
    KeyTaken,
    OverBudget,
    StaleTransition,
)
from bygheartd.store.postgres import PostgresJobStore
from bygheartd.store.threaded import SqliteJobStore

pytestmark = pytest.mark.anyio

KINDS = ["sqlite", "postgresql"]


def _open(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> JobStore:
    if kind == "sqlite":
        return SqliteJobStore(tmp_path / "jobs.sqlite3")
    return PostgresJobStore(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    opened = _open(str(request.param), tmp_path, request)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture(params=KINDS)
async def two_stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[JobStore, JobStore]]:
    """Two processes' worth of store on the same jobs."""
    first = _open(str(request.param), tmp_path, request)
    url = getattr(first, "_url", None)
    second = PostgresJobStore(url) if url else SqliteJobStore(tmp_path / "jobs.sqlite3")
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def _job(store: JobStore, **keys: Any) -> Job:
    fields: dict[str, Any] = {
        "title": "Night drive",
        "model": "bygheart-melody-fast",
        "request": {"style": "synth pop", "lyrics": "[Verse]\nneon rain", "duration": 30},
        "api_body": {"prompt": "synth pop"},
        "credits": 2,
    }
    fields.update(keys)
    return await store.insert_job(**fields)


async def _walk(store: JobStore, job: Job, *path: JobStatus) -> Job:
    for status in path:
        job = await store.transition(job.id, status, event=f"to {status}")
    return job


async def test_a_job_goes_in_and_comes_back_by_id_and_prefix(store: JobStore) -> None:
    job = await _job(store, source="inbox/night.txt", origin="drop")
    assert job.status is JobStatus.QUEUED and job.origin == "drop"
    assert (await store.get(job.id)).request["lyrics"] == "[Verse]\nneon rain"
    assert (await store.find(job.id[:10].upper())).id == job.id
    with pytest.raises(JobNotFound, match="at least 6"):
        await store.find(job.id[:4])
    with pytest.raises(JobNotFound):
        await store.get("nope")
    assert [e.event for e in await store.history(job.id)] == ["created"]
    assert await store.api_body(job.id) == {"prompt": "synth pop"}


async def test_listings_newest_first_with_filters_summaries_and_counts(store: JobStore) -> None:
    jobs = [await _job(store, title=f"song {n}") for n in range(3)]
    await store.transition(jobs[0].id, JobStatus.CANCELLED, event="cancelled")
    listed = await store.list_jobs()
    assert [j.id for j in listed] == [j.id for j in reversed(jobs)]
    queued = await store.list_jobs([JobStatus.QUEUED], 1, summary=True)
    assert [j.id for j in queued] == [jobs[2].id] and queued[0].request == {}
    assert [j.id for j in await store.list_oldest(JobStatus.QUEUED, 5)] == [
        jobs[1].id,
        jobs[2].id,
    ]
    assert await store.counts() == {"queued": 2, "cancelled": 1}


async def test_search_matches_title_style_and_lyrics_case_insensitively(store: JobStore) -> None:
    await _job(store, title="Alpha", request={"style": "dark Techno", "lyrics": "la"})
    await _job(store, title="Beta 100%", request={"style": "folk", "lyrics": "under the RAIN"})
    found, total = await store.search_jobs("techno", limit=10)
    assert [j.title for j in found] == ["Alpha"] and total == 1
    assert [j.title for j in (await store.search_jobs("rain", limit=10))[0]] == ["Beta 100%"]
    assert [j.title for j in (await store.search_jobs("100%", limit=10))[0]] == ["Beta 100%"]
    assert (await store.search_jobs("", limit=1, offset=1))[1] == 2


async def test_moves_follow_the_table_and_a_lost_race_is_stale(store: JobStore) -> None:
    job = await _job(store)
    with pytest.raises(IllegalMove, match="from queued to done"):
        await store.transition(job.id, JobStatus.DONE, event="done")
    moved = await store.transition(
        job.id, JobStatus.SUBMITTING, event="submitting", expect={JobStatus.QUEUED}, attempts=1
    )
    assert moved.status is JobStatus.SUBMITTING and moved.attempts == 1
    with pytest.raises(StaleTransition):
        await store.transition(
            job.id, JobStatus.SUBMITTING, event="again", expect={JobStatus.QUEUED}
        )
    with pytest.raises(StaleTransition):
        await store.update(job.id, expect={JobStatus.QUEUED}, title="late")
    with pytest.raises(ValueError, match="use transition"):
        await store.update(job.id, status="done")
    history = await store.history(job.id)
    assert (history[-1].from_status, history[-1].to_status) == ("queued", "submitting")


async def test_fields_round_trip_through_update(store: JobStore) -> None:
    job = await _walk(store, await _job(store), JobStatus.SUBMITTING, JobStatus.RUNNING)
    at = utcnow()
    updated = await store.update(
        job.id,
        event="progress",
        progress=0.5,
        eta_seconds=12.5,
        task_id="task-1",
        server="http://gpu-1:8001",
        submitted_at=at,
        warnings=["a warning"],
        result=job.result.but(unknown_polls=2),
    )
    assert (updated.progress, updated.eta_seconds, updated.task_id) == (0.5, 12.5, "task-1")
    assert updated.submitted_at is not None and abs((updated.submitted_at - at).total_seconds()) < 1
    assert updated.warnings == ("a warning",) and updated.result.unknown_polls == 2
    assert [j.id for j in await store.find_by("task_id", "task-1")] == [job.id]
    assert await store.counts_by_server([JobStatus.RUNNING]) == {"http://gpu-1:8001": 1}


async def test_the_commit_hook_sees_the_state_being_committed_and_can_refuse_it(
    store: JobStore,
) -> None:
    job = await _walk(
        store,
        await _job(store),
        JobStatus.SUBMITTING,
        JobStatus.RUNNING,
        JobStatus.DOWNLOADING,
        JobStatus.PROCESSING,
    )

    def refuse(done: Job, history: list[Event]) -> None:
        assert done.status is JobStatus.DONE and history[-1].event == "done"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        await store.transition(job.id, JobStatus.DONE, event="done", before_commit=refuse)
    assert (await store.get(job.id)).status is JobStatus.PROCESSING
    seen: list[Job] = []
    await store.transition(
        job.id, JobStatus.DONE, event="done", before_commit=lambda d, h: seen.append(d)
    )
    assert [j.status for j in seen] == [JobStatus.DONE]


async def test_keys_and_drops_taken_twice_are_our_errors(store: JobStore) -> None:
    await _job(store, idempotency_key="key-1", drop_identity="drop-1", dedupe_key="d")
    with pytest.raises(KeyTaken):
        await _job(store, idempotency_key="key-1")
    with pytest.raises(DropTaken):
        await _job(store, drop_identity="drop-1")
    assert len(await store.find_by("dedupe_key", "d")) == 1


async def test_the_ledger_reserves_refunds_and_sums(store: JobStore) -> None:
    job = await _job(store)
    line = {"job_id": job.id, "model": job.model, "day": "2026-12-07", "month": "2026-12"}
    await store.transition(
        job.id,
        JobStatus.SUBMITTING,
        event="submitting",
        ledger={**line, "credits": 2, "kind": "reserve"},
    )
    assert await store.open_reservation(job.id) == (2, "2026-12-07", "2026-12")
    await store.record_credits(**{**line, "credits": -2, "kind": "refund"})
    assert await store.open_reservation(job.id) == (0, "2026-12-07", "2026-12")
    await store.record_credits(**{**line, "job_id": None, "credits": 5, "kind": "reserve"})
    assert await store.credits_spent(day="2026-12-07") == 5
    assert await store.credits_spent(month="2026-12") == 5
    assert await store.credits_by_model("2026-12") == {"bygheart-melody-fast": 5}
    assert await store.credits_by_day("2026-12-01") == {"2026-12-07": 5}
    assert await store.first_ledger_month() == "2026-12"
    assert await store.job_credit_balance(job.id) == 0
    assert await store.credit_balances([job.id, "other"]) == {job.id: 0}


async def test_named_values_are_set_read_and_taken_once(store: JobStore) -> None:
    await store.set_meta("web-login:abc", "2026-12-07T10:00:00Z")
    await store.set_meta("web-login:abc", "2026-12-07T11:00:00Z")
    await store.set_meta("other", "x")
    assert await store.meta_with_prefix("web-login:") == {"web-login:abc": "2026-12-07T11:00:00Z"}
    assert await store.take_meta("web-login:abc") == "2026-12-07T11:00:00Z"
    assert await store.take_meta("web-login:abc") is None
    await store.set_meta("other", None)
    assert await store.get_meta("other") is None


async def test_the_feed_reads_events_after_a_position(store: JobStore) -> None:
    first = await _job(store, title="first")
    start = await store.event_seq()
    second = await _job(store, title="second")
    await store.add_event(first.id, "note", "a reason")
    feed = await store.events_after(start)
    assert [(e.title, e.event.event) for e in feed] == [("second", "created"), ("first", "note")]
    assert [e.job_id for e in await store.events_after(0, [second.id])] == [second.id]
    assert await store.event_seq(1) == feed[0].seq


async def test_names_of_unfinished_deliveries_are_reserved(store: JobStore) -> None:
    job = await _walk(store, await _job(store), JobStatus.SUBMITTING, JobStatus.RUNNING)
    await store.update(job.id, base_name="night-drive")
    assert await store.reserved_take_stems() == {"night-drive"}
    await store.transition(job.id, JobStatus.FAILED, event="failed")
    assert await store.reserved_take_stems() == set()


async def test_another_process_commit_is_seen_and_changes_the_data_version(
    two_stores: tuple[JobStore, JobStore],
) -> None:
    mine, theirs = two_stores
    await mine.counts()  # open it
    before = await mine.data_version()
    job = await _job(theirs)
    with anyio.fail_after(10):
        while await mine.data_version() == before:  # NOTIFY on PostgreSQL: not instant
            await anyio.sleep(0.02)
    assert (await mine.get(job.id)).status is JobStatus.QUEUED


async def test_two_processes_making_one_move_at_once_make_it_once(
    two_stores: tuple[JobStore, JobStore],
) -> None:
    first, second = two_stores
    job = await _job(first)
    outcomes: list[str] = []

    async def move(store: JobStore) -> None:
        try:
            await store.transition(
                job.id, JobStatus.SUBMITTING, event="submitting", expect={JobStatus.QUEUED}
            )
            outcomes.append("moved")
        except StaleTransition:
            outcomes.append("stale")

    async with anyio.create_task_group() as tasks:
        for store in (first, second, first, second):
            tasks.start_soon(move, store)
    assert sorted(outcomes) == ["moved", "stale", "stale", "stale"]
    moves = [e for e in await first.history(job.id) if e.to_status == "submitting"]
    assert len(moves) == 1


async def test_reservations_past_a_cap_are_refused_however_many_processes_race(
    two_stores: tuple[JobStore, JobStore],
) -> None:
    first, second = two_stores
    jobs = [await _job(first) for _ in range(8)]
    caps = CreditCaps(day="2026-12-07", month="2026-12", daily=10, monthly=100)
    outcomes: list[str] = []

    async def reserve(store: JobStore, job: Job) -> None:
        line = {"job_id": job.id, "model": None, "credits": 2, "kind": "reserve"}
        try:
            await store.transition(
                job.id,
                JobStatus.SUBMITTING,
                event="submitting",
                ledger={**line, "day": caps.day, "month": caps.month},
                caps=caps,
            )
            outcomes.append("reserved")
        except OverBudget as exc:
            assert "daily credit cap reached" in str(exc)
            outcomes.append("refused")

    async with anyio.create_task_group() as tasks:
        for n, job in enumerate(jobs):
            tasks.start_soon(reserve, (first, second)[n % 2], job)
    assert sorted(outcomes) == ["refused"] * 3 + ["reserved"] * 5
    assert await first.credits_spent(day=caps.day) == 10
    assert (await first.counts()) == {"queued": 3, "submitting": 5}
