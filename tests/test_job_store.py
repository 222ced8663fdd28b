"""One suite for every store behind the boundary (`JobStore`): SQLite in a state folder and
a real PostgreSQL database (Debian's server, started by the tests) must behave the same."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from bygheartd.jobs import Event, Job, JobStatus, utcnow
from bygheartd.store.boundary import JobStore
from bygheartd.store.columns import CreditCaps
from bygheartd.store.engines import EngineInfo
from bygheartd.store.errors import (
    DropTaken,
    IllegalMove,
    JobNotFound,
    KeyTaken,
    OverBudget,
    ServerFull,
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


# -- albums (issue 26) -------------------------------------------------------------------


def _new_album(title: str = "Night Drive", tracks: int = 3, **keys: Any) -> Any:
    from bygheartd.store.albums import NewAlbum, NewTrack

    return NewAlbum(
        title=title,
        artist="The Night Shift",
        slug="night-drive",
        tracks=[
            NewTrack(
                title=f"Track {n}",
                model="bygheart-melody-fast",
                request={"style": "synthwave", "lyrics": f"[Verse]\nline {n}"},
                api_body={"prompt": "synthwave"},
                credits=2,
            )
            for n in range(1, tracks + 1)
        ],
        output="/music/out",
        source="night-drive.album.yaml",
        **keys,
    )


async def test_an_album_goes_in_whole_with_a_job_per_track_in_order(store: JobStore) -> None:
    album, jobs = await store.insert_album(_new_album())
    assert (album.title, album.artist, album.tracks, album.folder) == (
        "Night Drive",
        "The Night Shift",
        3,
        "night-drive",
    )
    assert album.credits == 6
    assert [j.track for j in jobs] == [1, 2, 3]
    assert all(j.status is JobStatus.QUEUED and j.album == album.id for j in jobs)
    assert jobs[0].album_title == "Night Drive" and jobs[0].album_tracks == 3
    assert jobs[0].as_record()["album"] == album.id and jobs[0].as_record()["track"] == 1
    tracks = await store.album_jobs(album.id)
    assert [j.id for j in tracks] == [j.id for j in jobs]
    listed = await store.list_jobs(summary=True)
    assert {j.track for j in listed} == {1, 2, 3}  # summaries carry album and track too
    assert (await store.get_album(album.id)) == album
    assert [a.id for a in await store.find_albums("night drive")] == [album.id]
    assert [a.id for a in await store.find_albums(album.id[:7])] == [album.id]
    assert (await store.history(jobs[1].id))[0].reason == (
        "from cli: track 2 of 3 of 'Night Drive'"
    )


async def test_albums_of_one_title_get_folders_of_their_own(store: JobStore) -> None:
    first, _ = await store.insert_album(_new_album())
    second, _ = await store.insert_album(_new_album())
    third, _ = await store.insert_album(_new_album(taken={"night-drive-3"}))
    assert [first.folder, second.folder, third.folder] == [
        "night-drive",
        "night-drive-2",
        "night-drive-4",
    ]
    assert [a.id for a in await store.list_albums()] == [third.id, second.id, first.id]
    assert [a.id for a in await store.list_albums(1)] == [third.id]


async def test_an_unknown_album_is_not_found(store: JobStore) -> None:
    with pytest.raises(JobNotFound, match="no album"):
        await store.get_album("0000000000000")
    assert await store.find_albums("no such album") == []


async def _engine(store: JobStore, name: str, lease_seconds: float = 30) -> str:
    info = replace(EngineInfo.new("test", lease_seconds), id=name)
    await store.register_engine(info, lease_seconds)
    return name


async def test_claims_take_the_oldest_queued_jobs_for_one_engine_until_given_back(
    store: JobStore,
) -> None:
    jobs = [await _job(store, title=f"song {n}") for n in range(3)]
    a, b = await _engine(store, "engine-a"), await _engine(store, "engine-b")
    claimed = await store.claim_queued(a, 2)
    assert [j.id for j in claimed] == [jobs[0].id, jobs[1].id]
    assert all(j.engine == a and j.status is JobStatus.QUEUED for j in claimed)
    assert [j.id for j in await store.claim_queued(b, 5)] == [jobs[2].id]  # a's are not b's
    # An engine's own claims come back to it (a tick cut off before it sent them).
    assert [j.id for j in await store.claim_queued(a, 5)] == [jobs[0].id, jobs[1].id]
    assert await store.release_claims(a, [jobs[0].id]) == 1
    assert [j.id for j in await store.claim_queued(b, 5)] == [jobs[0].id, jobs[2].id]
    assert await store.release_claims(a) == 1  # all of a's: jobs[1]
    assert (await store.get(jobs[1].id)).engine is None
    assert await store.claim_queued(a, 0) == []


async def test_a_claim_lapses_with_its_engines_lease(store: JobStore) -> None:
    job = await _job(store)
    gone = await _engine(store, "engine-gone", lease_seconds=0)  # its lease ends at once
    live = await _engine(store, "engine-live")
    assert [j.id for j in await store.claim_queued(gone, 1)] == [job.id]
    await anyio.sleep(0.01)
    taken = await store.claim_queued(live, 1)
    assert [(j.id, j.engine) for j in taken] == [(job.id, live)]


async def test_two_engines_claiming_at_once_never_get_one_job_and_never_lose_a_move(
    two_stores: tuple[JobStore, JobStore],
) -> None:
    first, second = two_stores
    jobs = [await _job(first, title=f"song {n}") for n in range(24)]
    took: dict[str, list[str]] = {"engine-1": [], "engine-2": []}
    stale: list[str] = []
    await _engine(first, "engine-1")
    await _engine(second, "engine-2")

    async def work(store: JobStore, engine: str) -> None:
        while claimed := await store.claim_queued(engine, 3):
            for job in claimed:
                try:
                    await store.transition(
                        job.id,
                        JobStatus.SUBMITTING,
                        event="submitting",
                        expect={JobStatus.QUEUED},
                        engine=engine,
                    )
                except StaleTransition:
                    stale.append(job.id)
                took[engine].append(job.id)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(work, first, "engine-1")
        tasks.start_soon(work, second, "engine-2")
    assert stale == []  # nobody prepared a job another engine had
    assert not set(took["engine-1"]) & set(took["engine-2"])
    assert sorted(took["engine-1"] + took["engine-2"]) == sorted(j.id for j in jobs)
    assert await first.counts() == {"submitting": 24}


async def test_a_server_limit_holds_however_many_processes_submit_to_it(
    two_stores: tuple[JobStore, JobStore],
) -> None:
    first, second = two_stores
    jobs = [await _job(first) for _ in range(6)]
    outcomes: list[str] = []

    async def submit(store: JobStore, job: Job) -> None:
        try:
            await store.transition(
                job.id,
                JobStatus.SUBMITTING,
                event="submitting",
                server="http://gpu-1:8001",
                server_limit=2,
            )
            outcomes.append("sent")
        except ServerFull as exc:
            assert "2 of 2 songs in flight" in str(exc)
            outcomes.append("full")

    async with anyio.create_task_group() as tasks:
        for n, job in enumerate(jobs):
            tasks.start_soon(submit, (first, second)[n % 2], job)
    assert sorted(outcomes) == ["full"] * 4 + ["sent"] * 2
    assert await first.counts_by_server([JobStatus.SUBMITTING]) == {"http://gpu-1:8001": 2}


async def test_a_lease_is_measured_with_the_stores_clock_not_the_hosts(
    two_stores: tuple[JobStore, JobStore],
) -> None:
    first, second = two_stores
    job = await _walk(first, await _job(first), JobStatus.SUBMITTING, JobStatus.RUNNING)
    # A host whose clock runs an hour behind registers with a 30 s lease: its own idea of
    # the time makes the lease look long over; the store's clock says it is live.
    behind = utcnow() - timedelta(hours=1)
    info = EngineInfo("slow-clock", "host-b", 1, "test", behind, behind + timedelta(seconds=30))
    await first.register_engine(info, 30)
    await first.update(job.id, engine="slow-clock")
    assert await second.adopt_jobs("other-engine") == []
    renewed = await first.renew_engine("slow-clock", 30)
    assert renewed is not None and abs((renewed - utcnow()).total_seconds() - 30) < 5
    assert await first.renew_engine("no-such-engine", 30) is None
    await first.renew_engine("slow-clock", 0)  # now it runs out (on the store's clock)
    await anyio.sleep(0.01)
    adopted = await second.adopt_jobs("other-engine")
    assert [(j.id, j.engine) for j in adopted] == [(job.id, "other-engine")]


async def test_one_process_at_a_time_holds_a_duty(
    two_stores: tuple[JobStore, JobStore],
) -> None:
    first, second = two_stores
    assert await first.lead("pool-snapshot")
    assert await first.lead("pool-snapshot")  # held, and still held
    if isinstance(first, SqliteJobStore):  # one engine per SQLite store: it holds them all
        assert await second.lead("pool-snapshot")
        return
    assert not await second.lead("pool-snapshot")
    assert await second.lead("daily-release")  # one lock per duty
    await first.close()  # the holder stops: the next to ask takes the duty
    with anyio.fail_after(10):  # (once the server has ended the holder's session)
        while not await second.lead("pool-snapshot"):
            await anyio.sleep(0.02)


async def test_only_work_for_engines_wakes_them(two_stores: tuple[JobStore, JobStore]) -> None:
    mine, theirs = two_stores
    kinds: list[str] = []
    if not mine.on_work(kinds.append):
        assert isinstance(mine, SqliteJobStore)  # polled through data_version instead
        return
    await mine.counts()  # opens the store and its listener
    with anyio.fail_after(10):
        while "reconnected" not in kinds:
            await anyio.sleep(0.01)
    kinds.clear()
    engine = await _engine(theirs, "engine-x")
    job = await _job(theirs)  # queued: work
    await theirs.claim_queued(engine, 1)  # no one else's business
    await theirs.update(job.id, title="renamed")
    await theirs.set_meta("k", "v")
    await theirs.release_claims(engine)  # back in the queue: work
    moved = await theirs.transition(job.id, JobStatus.SUBMITTING, event="submitting")
    await theirs.transition(moved.id, JobStatus.RUNNING, event="submitted")
    await theirs.transition(job.id, JobStatus.CANCELLED, event="cancelled")  # work
    await theirs.retire_engine(engine)  # its jobs are free: work
    with anyio.fail_after(10):
        while len(kinds) < 4:
            await anyio.sleep(0.01)
    assert kinds == ["queued", "queued", "cancelled", "engines"]  # in commit order


async def test_names_are_claimed_under_a_lock_per_output_folder(
    postgres_server: Any, tmp_path: Path
) -> None:
    import psycopg

    url = postgres_server.new_database()
    store = PostgresJobStore(url)
    try:
        jobs = []
        for n in range(2):
            job = await _job(store, title=f"song {n}")
            path = (JobStatus.SUBMITTING, JobStatus.RUNNING, JobStatus.DOWNLOADING)
            jobs.append(await _walk(store, job, *path))
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as other:
            # Another host holds the name lock of /nas/a for as long as it likes...
            await other.execute("SELECT pg_advisory_lock(hashtext('bygheartd-names:/nas/a'))")
            with anyio.fail_after(10):  # ...a delivery into /nas/b does not wait for it
                assert await store.claim_base_name(jobs[0].id, "night", 1, "/nas/b")
            await other.execute("SELECT pg_advisory_unlock_all()")
        with anyio.fail_after(10):
            assert not await store.claim_base_name(jobs[1].id, "night", 1, "/nas/a")
            assert await store.claim_base_name(jobs[1].id, "night-2", 1, "/nas/a")
    finally:
        await store.close()


async def test_search_keeps_jobs_with_a_warning_that_starts_with_the_prefix(
    store: JobStore,
) -> None:
    """The library's "failed the gate": a store-side match on the warnings, exact prefix,
    with text and status filters and paging."""
    plain = await _job(store, title="Plain")
    gated = await _job(store, title="Gated rain", request={"style": "folk", "lyrics": "rain"})
    other = await _job(store, title="Other rain", request={"style": "folk", "lyrics": "rain"})
    tricky = await _job(store, title="Tricky")
    later = await _job(store, title="Later")
    await store.update(plain.id, warnings=["tags: no cover"])
    await store.update(gated.id, warnings=["tags: x", "quality: take 1 is cut short"])
    await store.update(other.id, warnings=['server said "quality: fine" 100%_'])
    await store.update(tricky.id, warnings=["Quality: upper case is another prefix"])
    await store.update(later.id, warnings=["quality: take 2 is silent"])
    found, total = await store.search_jobs("", limit=10, warning_prefix="quality: ")
    assert [j.title for j in found] == ["Later", "Gated rain"] and total == 2
    assert found[1].warnings == ("tags: x", "quality: take 1 is cut short")
    page, total = await store.search_jobs("", limit=1, offset=1, warning_prefix="quality: ")
    assert [j.title for j in page] == ["Gated rain"] and total == 2
    found, total = await store.search_jobs("FOLK", limit=10, warning_prefix="quality: ")
    assert [j.title for j in found] == ["Gated rain"] and total == 1
    assert await store.search_jobs("", [JobStatus.DONE], limit=10, warning_prefix="quality: ") == (
        [],
        0,
    )
    found, _ = await store.search_jobs("", limit=10, warning_prefix='server said "')
    assert [j.title for j in found] == ["Other rain"]


async def test_jobs_made_from_a_songs_files_are_found_from_that_song_on(store: JobStore) -> None:
    """A finished song's stems and edits record the take they were made from as their
    `source`: found by those files, oldest first, reading only jobs newer than the song."""
    older = await _job(store, title="older", source="/out/song.mp3")  # before the song
    await anyio.sleep(0.002)  # ids sort by the millisecond they were made in
    song = await _job(store, title="song")
    await anyio.sleep(0.002)
    vocals = await _job(store, title="song (vocals)", source="/out/song.mp3")
    await anyio.sleep(0.002)
    elsewhere = await _job(store, title="other", source="/out/other.mp3")
    await anyio.sleep(0.002)
    second = await _job(store, title="song (drums)", source="/out/song-2.mp3")
    takes = ["/out/song.mp3", "/out/song-2.mp3"]
    found = await store.jobs_made_from(takes, song.id)
    assert [j.id for j in found] == [vocals.id, second.id]
    assert found[0].source == "/out/song.mp3" and found[0].title == "song (vocals)"
    assert [j.id for j in await store.jobs_made_from(takes, vocals.id)] == [second.id]
    assert [j.id for j in await store.jobs_made_from(["/out/other.mp3"], song.id)] == [elsewhere.id]
    assert await store.jobs_made_from([], song.id) == []
    assert older.id not in {j.id for j in await store.jobs_made_from(takes, song.id)}
