"""Issue 25 item 4: one progress figure a person trusts. `show`, the `submit --wait` bars and
the library page all show `bygheartd.service.progress.estimate`; it rises with time and
through the stages, and a display that follows a job (its `Ratchet`) never moves back, even
when the ETA grows."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bygheartd.cli.display import status_text
from bygheartd.cli.waiting import shown
from bygheartd.jobs import Job, JobStatus
from bygheartd.service.progress import RUNNING_CEILING, Ratchet, estimate
from bygheartd.store.store import Store

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def running(
    *, eta: float | None, written: float, progress: float | None = None, submitted: float = 0.0
) -> Job:
    """A running job as the poller leaves it: written `written` s after T0 with an ETA."""
    return Job(
        id="J1",
        status=JobStatus.RUNNING,
        title="t",
        model=None,
        request={},
        created_at=T0,
        updated_at=T0 + timedelta(seconds=written),
        submitted_at=T0 + timedelta(seconds=submitted),
        progress=progress,
        eta_seconds=eta,
        attempts=1,
    )


def at(seconds: float) -> float:
    return (T0 + timedelta(seconds=seconds)).timestamp()


def test_percent_and_time_left_agree_share_of_the_expected_wait() -> None:
    job = running(eta=60.0, written=30.0, progress=0.2)
    found = estimate(job, now=at(40))
    # 40 s passed, 50 s left: 40 / 90 of the wait.
    assert found.remaining == 50.0
    assert abs(found.fraction - 40 / 90) < 1e-9
    assert found.text() == "44 %, ~50 s left"


def test_one_snapshot_only_rises_as_time_passes_and_never_claims_done() -> None:
    job = running(eta=20.0, written=5.0, progress=0.3)
    figures = [estimate(job, now=at(5 + t / 2)).fraction for t in range(0, 200)]
    assert figures == sorted(figures)
    assert figures[-1] == RUNNING_CEILING
    assert estimate(job, now=at(500)).left == "any moment"
    assert estimate(job, now=at(500)).percent < 100


def test_before_any_eta_the_servers_own_progress_stands_in() -> None:
    job = running(eta=None, written=5.0, progress=0.37)
    assert estimate(job, now=at(50)).percent == 37
    assert estimate(replace(job, progress=None), now=at(50)).text() == ""


def test_each_stage_shows_more_than_the_one_before() -> None:
    job = running(eta=1.0, written=1.0)
    stages = [
        estimate(replace(job, status=JobStatus.QUEUED), now=at(0)).fraction,
        estimate(job, now=at(100)).fraction,  # running, long overdue: the ceiling
        estimate(replace(job, status=JobStatus.DOWNLOADING), now=at(100)).fraction,
        estimate(replace(job, status=JobStatus.PROCESSING), now=at(100)).fraction,
        estimate(replace(job, status=JobStatus.DONE), now=at(100)).fraction,
    ]
    assert stages == sorted(set(stages))
    assert estimate(replace(job, status=JobStatus.DONE)).percent == 100


def test_the_ratchet_holds_when_the_eta_grows_then_moves_on() -> None:
    """The trial's case: the bar was at 86 % when a new ETA made the estimate 83 %."""
    ratchet = Ratchet()
    optimistic = running(eta=10.0, written=50.0)  # 50 s in, 10 s left: 83 %
    first = ratchet.see(optimistic, now=at(56))
    assert first.percent == 93  # 56 / 60
    slower = running(eta=60.0, written=57.0)  # the server slowed down: 57 / 117 = 49 %
    assert estimate(slower, now=at(57)).percent == 48
    held = ratchet.see(slower, now=at(57))
    assert held.fraction == first.fraction  # never back
    assert held.left == "~60 s left"  # the time left stays honest
    bar = Ratchet()  # a `submit --wait` bar holds the same way
    assert shown(optimistic, now=at(56), ratchet=bar).fraction == first.fraction
    assert shown(slower, now=at(57), ratchet=bar).fraction == first.fraction
    later = ratchet.see(slower, now=at(116))  # the estimate passes the held figure again
    assert later.fraction > first.fraction
    assert later.fraction == estimate(slower, now=at(116)).fraction


def test_a_new_making_of_the_same_job_starts_from_zero() -> None:
    ratchet = Ratchet()
    ratchet.see(running(eta=1.0, written=50.0), now=at(51))
    again = running(eta=100.0, written=200.0, submitted=200.0)  # a retry: a new submission
    assert ratchet.see(again, now=at(201)).percent == 1  # 1 s of 100: not the old 95 %
    queued = replace(again, status=JobStatus.QUEUED)
    assert ratchet.see(queued).fraction == 0.0


snapshots = st.lists(
    st.tuples(
        st.floats(min_value=0.1, max_value=30),  # seconds since the last write
        st.one_of(st.none(), st.floats(min_value=0, max_value=600)),  # the new ETA
        st.one_of(st.none(), st.floats(min_value=0, max_value=1)),  # the server's progress
        st.sampled_from(["running"] * 6 + ["downloading", "processing", "held"]),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(snapshots)
def test_whatever_the_store_says_next_a_followed_figure_never_falls(
    steps: list[tuple[float, float | None, float | None, str]],
) -> None:
    ratchet = Ratchet()
    clock = 0.0
    status = JobStatus.RUNNING
    shown_before = 0.0
    order = [JobStatus.RUNNING, JobStatus.DOWNLOADING, JobStatus.PROCESSING]
    for gap, eta, progress, name in steps:
        clock += gap
        wanted = JobStatus(name)
        # The lifecycle only moves forward through these (held may come from downloading).
        if wanted is not JobStatus.HELD and order.index(wanted) >= order.index(
            status if status in order else JobStatus.DOWNLOADING
        ):
            status = wanted
        elif wanted is JobStatus.HELD and status is JobStatus.DOWNLOADING:
            status = JobStatus.HELD
        job = replace(running(eta=eta, written=clock, progress=progress), status=status)
        for look in (0.0, gap / 3, gap / 2):
            figure = ratchet.see(job, now=at(clock + look)).fraction
            assert figure >= shown_before
            assert 0.0 <= figure < 1.0
            shown_before = figure
        if status is JobStatus.HELD:
            status = JobStatus.DOWNLOADING  # the hold is over: the download resumes


def test_show_and_the_wait_bar_print_the_same_figure(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "state")
    try:
        job = store.insert_job(title="t", model=None, request={}, api_body={}, credits=1)
        store.transition(job.id, JobStatus.SUBMITTING, event="submitting")
        store.transition(job.id, JobStatus.RUNNING, event="submitted")
        job = store.update(job.id, eta_seconds=30.0, progress=0.54)
    finally:
        store.close()
    figure = estimate(job)
    bar = shown(job, now=job.updated_at.timestamp())
    assert status_text(job).startswith(f"running {figure.percent} %")
    assert int(bar.fraction * 100) == figure.percent
    assert "~30 s left" in status_text(job)
