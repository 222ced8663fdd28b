"""How far along a song is, as one figure every face shows: `show` and `list`, the bars of
`submit --wait`, and the library page all call `estimate` on the same stored job, so they
say the same percentage and time left.

The percentage is the share of the expected wait that has passed: the time since the job
was submitted against that plus the time left (the engine's ETA, which already weighs the
server's own progress and the history of similar songs). Percent and time left therefore
always agree with each other ("60 %, ~40 s left" means a minute has passed). Before there is
an ETA the server's own progress stands in. Each status after `running` has a floor above
anything `running` can show, so the figure rises through the stages.

A figure worked out afresh from each snapshot still drops when the ETA grows (the server
slowed down): a person watching a bar must never see it move backwards, so a display that
follows a job keeps a `Ratchet`, which holds the highest figure shown until the estimate
passes it again (the time left stays honest meanwhile).

A song still waiting (`queued`, `submitting`) has no progress, but it has a time left when
the store knows how long songs take: the engine's history of generation times per model
and length (`engine/prediction.py`, read from the same finished jobs), for the songs in
flight and the songs ahead of it in the queue, spread over the in-flight places. That is
the `Line`: read once per answer, and passed to `estimate`.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bygheartd.config import Config
from bygheartd.engine.prediction import GenerationHistory
from bygheartd.jobs import FINAL_STATUSES, Job, JobStatus
from bygheartd.store.boundary import JobStore

__all__ = [
    "RUNNING_CEILING",
    "WAITING",
    "Estimate",
    "Line",
    "Ratchet",
    "estimate",
    "read_line",
    "record_eta",
    "seconds_text",
]

# An estimate never claims the song is made: only the store can say that. Each later stage
# starts above what running can show, so the figure never falls at a stage change.
RUNNING_CEILING = 0.95
STAGE_FLOORS = {
    JobStatus.DOWNLOADING: 0.96,
    JobStatus.PROCESSING: 0.98,
}
WAITING = frozenset({JobStatus.QUEUED, JobStatus.SUBMITTING})


@dataclass(frozen=True)
class Estimate:
    """One job's progress at one moment: `fraction` 0..1, `remaining` seconds (None when
    unknown), and the status it was worked out for."""

    fraction: float
    remaining: float | None
    status: str
    resumes_in: float | None = None  # held: seconds until it resumes
    final: bool = False

    @property
    def percent(self) -> int:
        """Whole percent, rounded down (99 % is never shown for a song that is at 98.6 %),
        and 100 only once the song is final."""
        return 100 if self.final else min(99, int(self.fraction * 100))

    @property
    def left(self) -> str:
        """The time left as a person reads it: `~40 s left`, `any moment`, `held 3 min`."""
        if self.final:
            return ""
        if self.resumes_in is not None:
            return f"held {seconds_text(self.resumes_in)}"
        if self.remaining is None:
            return ""
        return f"~{seconds_text(self.remaining)} left" if self.remaining >= 1 else "any moment"

    def text(self) -> str:
        """`54 %, ~40 s left`: the one line `show`, the bars and the page agree on; empty for
        a song that is final or has not started."""
        if self.final or (self.fraction <= 0 and self.remaining is None):
            return self.left
        if self.status in ("queued", "submitting"):
            return self.left  # no share of a wait that has not begun: the time alone
        return f"{self.percent} %" + (f", {self.left}" if self.left else "")

    def percent_text(self) -> str:
        """`54 %` alone (a listing's narrow column); empty before anything has moved."""
        return f"{self.percent} %" if self.fraction > 0 and not self.final else ""

    def as_record(self) -> dict[str, object]:
        """For the page's live updates (JSON)."""
        return {
            "fraction": round(self.fraction, 4),
            "percent": self.percent,
            "remaining": None if self.remaining is None else round(self.remaining, 1),
            "left": self.left,
            "text": self.text(),
        }


def seconds_text(seconds: float) -> str:
    """`40 s` under two minutes, else whole minutes: `3 min`."""
    whole = round(max(0.0, seconds))
    return f"{whole} s" if whole < 120 else f"{whole // 60} min"


@dataclass(frozen=True)
class Line:
    """The queue as a waiting song sees it: how long generations take (per model and
    length), the songs in flight and waiting (`jobs`: queued, submitting and running, as
    stored), and how many go at once (`slots`: `[queue] max_in_flight`, or the pool
    servers' together). Generation times run from submit to result, so they include a
    server's own queue: the places are the in-flight ones, not the GPUs."""

    history: GenerationHistory
    jobs: Sequence[Job]
    slots: int

    def typical(self, job: Job) -> float | None:
        """Seconds a generation like `job`'s takes (its model and length), or None with no
        history at all."""
        duration = job.request.get("duration")
        length = float(duration) if isinstance(duration, int | float) else None
        found = self.history.typical(job.model, length)
        return None if found is None else found[0]

    def wait(self, job: Job, now: float) -> float | None:
        """Seconds until a waiting `job` has its song generated: the places free up as the
        songs in flight finish (their own time left), each song queued ahead of it takes
        the first free place for a typical generation, then it does. None without history."""
        # The line's own copy has the request (a listing's summary may not).
        job = next((j for j in self.jobs if j.id == job.id), job)
        own = self.typical(job)
        if own is None:
            return None
        if job.status is JobStatus.SUBMITTING:
            return own  # on its way to the server: it has its place
        left: list[float] = []
        ahead: list[float] = []
        for other in self.jobs:
            if other.id == job.id:
                continue
            typical = self.typical(other) or own
            if other.status is JobStatus.RUNNING:
                found = estimate(other, now=now).remaining
                if found is None:  # no ETA yet: a typical one, from its submit
                    started = other.submitted_at.timestamp() if other.submitted_at else now
                    found = max(0.0, typical - (now - started))
                left.append(found)
            elif other.status is JobStatus.SUBMITTING:
                left.append(typical)
            elif other.status is JobStatus.QUEUED and other.id < job.id:
                ahead.append(typical)  # ids sort by age: the engine takes the oldest first
        slots = max(1, self.slots)
        # When each place is free: the longest `slots` of the songs in flight hold them
        # (more in flight than places: another engine's); a place nobody holds is free now.
        free = ([0.0] * slots + sorted(left))[-slots:]
        heapq.heapify(free)
        for seconds in ahead:
            heapq.heappush(free, heapq.heappop(free) + seconds)
        return free[0] + own


async def read_line(store: JobStore, config: Config) -> Line:
    """The `Line` now, from the store: the finished jobs' generation times (as the engine
    reads them at start) and the songs waiting or in flight."""
    history = GenerationHistory()
    for model, duration, seconds in await store.recent_generations():
        history.add(model, duration, seconds)
    jobs = await store.list_jobs([JobStatus.QUEUED, JobStatus.SUBMITTING, JobStatus.RUNNING])
    servers = config.api.servers
    slots = sum(s.max_in_flight for s in servers) if servers else config.queue.max_in_flight
    return Line(history, tuple(jobs), slots)


def record_eta(job: Job, line: Line | None, *, now: float | None = None) -> float | None:
    """The `eta_seconds` of a job record: the engine's stored ETA while it runs, the
    `Line`'s for a song still waiting (to a tenth of a second), else None."""
    if job.status in WAITING:
        found = estimate(job, now=now, line=line).remaining
        return None if found is None else round(found, 1)
    return job.eta_seconds


def estimate(job: Job, *, now: float | None = None, line: Line | None = None) -> Estimate:
    """The progress of `job` as stored, at `now` (epoch seconds; the clock by default).

    For one stored snapshot it never falls as `now` moves on (the time left runs down,
    the share of the wait rises, up to `RUNNING_CEILING`). A waiting song's time left
    comes from `line` (None without one, or without any history)."""
    status = job.status.value
    if job.status in FINAL_STATUSES:
        return Estimate(1.0, None, status, final=True)
    now = time.time() if now is None else now
    if job.status is JobStatus.HELD:
        resumes = job.resumes_at.timestamp() - now if job.resumes_at is not None else None
        return Estimate(0.0, None, status, resumes_in=max(0.0, resumes) if resumes else None)
    floor = STAGE_FLOORS.get(job.status)
    if floor is not None:
        return Estimate(floor, None, status)
    if job.status is not JobStatus.RUNNING:  # queued, submitting
        return Estimate(0.0, None if line is None else line.wait(job, now), status)
    server = min(RUNNING_CEILING, max(0.0, job.progress or 0.0))
    if job.eta_seconds is None:
        return Estimate(server, None, status)
    # The ETA was true when the job was last written; it has run down since.
    written = job.updated_at.timestamp()
    remaining = max(0.0, job.eta_seconds - (now - written))
    started = job.submitted_at.timestamp() if job.submitted_at else written
    elapsed = max(0.0, now - started)
    total = elapsed + remaining
    share = elapsed / total if total > 0 else 0.0
    return Estimate(min(RUNNING_CEILING, share), remaining, status)


class Ratchet:
    """Keeps what a display has shown of each job, so that its figure never goes back.

    A figure that would fall (the ETA grew) holds where it was until the estimate passes it
    again. A new submission of the same job (a retry, a retake, a lost task made again) is
    a new making with its own figure from zero: the status says so.
    """

    def __init__(self) -> None:
        self._shown: dict[str, tuple[object, float]] = {}

    def see(self, job: Job, *, now: float | None = None) -> Estimate:
        """`estimate(job)`, never below what this display showed of the same making."""
        found = estimate(job, now=now)
        making = (job.submitted_at, job.attempts) if not found.final else None
        before = self._shown.get(job.id)
        if found.final:
            self._shown.pop(job.id, None)
            return found
        if job.status in (JobStatus.QUEUED, JobStatus.SUBMITTING):
            # Waiting again (a retry or a retake on its way): the next making starts at 0.
            self._shown.pop(job.id, None)
            return found
        if before is not None and before[0] == making and before[1] > found.fraction:
            found = Estimate(
                before[1], found.remaining, found.status, found.resumes_in, found.final
            )
        self._shown[job.id] = (making, found.fraction)
        return found

    def forget(self, job_id: str) -> None:
        self._shown.pop(job_id, None)
