"""When each in-flight task should finish, with how sure we are, and so when the next
batched poll is worth its request.

Pure bookkeeping (no I/O, no clock of its own: every call says what time it is), so the
poller feeds it what it learns and the tests drive it with made-up times.

Each task's finish is estimated from what is known about it, every source an expected
finish with a spread (one standard deviation), combined by inverse-variance weighting:

- the generation times we observed for its model and duration bucket (kept here, and read
  from the store's finished jobs at start), else the server's own average (`/v1/stats`
  `avg_job_seconds` on ACE-Step), shifted by the `queue_position` it was given at submit;
- the `progress` the server reports on running entries: elapsed / progress from when it
  started generating, and, once two sightings are far enough apart, the rate between them
  (which does not depend on when the server started it). A reading is the last value the
  server's model wrote, at least 0.01 apart, up to a step old, and the files come after the
  last one (API-TRANSCRIPTS.md): that is where most of the spread comes from.

One poll carries every in-flight id, so the plan is one time for all: when the first task
is likely done (its expected finish plus `z` spreads), moved later by up to `gather_seconds`
when that also catches the next tasks predicted to finish just after: one request for two
or three songs instead of one each.

What a server says about one task outranks what other tasks taught: the history is a guess
about a typical task, so once a poll contradicts it (the task still runs well past the
history's likely finish, or its progress points far from it) it is dropped for that task
rather than averaged in, and a history that suddenly stops fitting (the server got slower or
faster) starts again from the new times. And a task predicted from history alone is looked
at once soon after its submit (`look_after`): a server that got faster is seen then, not at
a finish the old history put far too late.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from statistics import NormalDist, fmean, pstdev

# The real server writes a progress once it has moved 0.01 or more (its callback's
# throttle): a reading is never finer than that.
PROGRESS_STEP = 0.01
# How much a generation time may differ from its model's history when we know nothing
# else (relative, as one standard deviation): a guess until the history says better.
PRIOR_RELATIVE_SPREAD = 0.3
# Always some spread: clocks, network, the server writing the files after the last step.
MIN_SPREAD_SECONDS = 0.05
# Progress may not be linear in time; trust its extrapolation a little less the further.
PROGRESS_MODEL_ERROR = 0.02
# What a progress reading cannot say (one standard deviation): how old the last write is
# (the captured server wrote one a step, 4 a second; the real one throttles them to 0.5 s)
# and the files written after the last one (0.3 s in the captures).
UNREPORTED_SECONDS = 0.2
HISTORY_PER_KEY = 50
DURATION_BUCKETS = (30.0, 60.0, 120.0, 240.0)
# An estimate this many spreads from what a poll reported is contradicted by it.
CONTRADICTED_Z = 3.0
# A new generation time this many times longer than the longest of its history, or shorter
# than the shortest, means the server changed: the history starts again from it.
CHANGED_FACTOR = 2.0


def duration_bucket(duration: float | None) -> str:
    """Generation time grows with the requested length: similar lengths share a history."""
    if duration is None or duration <= 0:
        return "auto"
    for edge in DURATION_BUCKETS:
        if duration <= edge:
            return f"<={edge:.0f}s"
    return f">{DURATION_BUCKETS[-1]:.0f}s"


@dataclass(frozen=True)
class Finish:
    """An expected finish time (epoch seconds) and its spread (one standard deviation)."""

    expected: float
    spread: float

    def done_by(self, when: float) -> float:
        """The probability that the task has finished at `when`."""
        return NormalDist(self.expected, max(self.spread, 1e-9)).cdf(when)

    def likely_by(self, z: float) -> float:
        """When the task is done with the probability that `z` stands for."""
        return self.expected + z * self.spread

    def within(self, low: float, high: float) -> float:
        """The expected finish, knowing it lies between `low` and `high` (the mean of the
        normal cut to that window; its edge when the window lies far out in a tail)."""
        if high <= low:
            return high
        unit = NormalDist()
        spread = max(self.spread, 1e-9)
        a, b = (low - self.expected) / spread, (high - self.expected) / spread
        mass = unit.cdf(b) - unit.cdf(a)
        if mass < 1e-9:
            return low if self.expected < low else high
        return self.expected + spread * (unit.pdf(a) - unit.pdf(b)) / mass


def combine(estimates: Iterable[Finish]) -> Finish | None:
    """Several independent estimates of one finish: their inverse-variance weighted mean."""
    parts = [e for e in estimates if math.isfinite(e.expected) and e.spread > 0]
    if not parts:
        return None
    weights = [1.0 / (e.spread * e.spread) for e in parts]
    total = sum(weights)
    expected = sum(w * e.expected for w, e in zip(weights, parts, strict=True)) / total
    return Finish(expected, max(MIN_SPREAD_SECONDS, math.sqrt(1.0 / total)))


class GenerationHistory:
    """Observed generation seconds (submit to result), per model and duration bucket."""

    def __init__(self, per_key: int = HISTORY_PER_KEY) -> None:
        self._per_key = per_key
        self._seconds: dict[tuple[str, str], deque[float]] = {}

    def add(self, model: str | None, duration: float | None, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds <= 0:
            return
        key = (model or "", duration_bucket(duration))
        kept = self._seconds.setdefault(key, deque(maxlen=self._per_key))
        if (
            len(kept) >= 3
            and not min(kept) / CHANGED_FACTOR <= seconds <= max(kept) * CHANGED_FACTOR
        ):
            kept.clear()  # a server that got slower or faster: its old times mislead
        kept.append(seconds)

    def __len__(self) -> int:
        return sum(len(v) for v in self._seconds.values())

    def typical(self, model: str | None, duration: float | None) -> tuple[float, float] | None:
        """(mean, spread) of the closest history: this model and bucket, else this model,
        else every model; None with no history at all."""
        model = model or ""
        exact = self._seconds.get((model, duration_bucket(duration)))
        for pool in (
            list(exact or ()),
            [s for (m, _), v in self._seconds.items() if m == model for s in v],
            [s for v in self._seconds.values() for s in v],
        ):
            if pool:
                return summary(pool)
        return None


def summary(pool: list[float]) -> tuple[float, float]:
    """(mean, spread) of some generation times. Few samples say little about the spread:
    it leans on the prior guess then."""
    mean = fmean(pool)
    guess = PRIOR_RELATIVE_SPREAD * mean
    measured = pstdev(pool) if len(pool) > 1 else guess
    weight = min(1.0, (len(pool) - 1) / 10)
    spread = weight * measured + (1 - weight) * guess
    return mean, max(MIN_SPREAD_SECONDS, spread)


@dataclass(frozen=True)
class Sighting:
    progress: float
    at: float


@dataclass
class Track:
    """What we know of one in-flight task."""

    submitted_at: float
    model: str | None = None
    duration: float | None = None
    queue_position: int | None = None
    # When the server last said it was still queued (it starts generating after that).
    queued_seen: float | None = None
    first: Sighting | None = None
    last: Sighting | None = None
    # The last poll that found it still running: it finished after that.
    running_seen: float | None = None


@dataclass
class Predictor:
    """Tracks every in-flight task and says when the next poll should go out."""

    history: GenerationHistory = field(default_factory=GenerationHistory)
    server_average: float | None = None
    tracks: dict[str, Track] = field(default_factory=dict)

    # -- what we learn ---------------------------------------------------------------

    def submitted(
        self,
        key: str,
        at: float,
        *,
        model: str | None = None,
        duration: float | None = None,
        queue_position: int | None = None,
    ) -> Track:
        track = Track(at, model, duration, queue_position)
        self.tracks[key] = track
        return track

    def ensure(
        self, key: str, at: float, *, model: str | None = None, duration: float | None = None
    ) -> Track:
        """A task we did not see submitted (a restart): known from its stored submit time."""
        track = self.tracks.get(key)
        if track is None or abs(track.submitted_at - at) > 1e-3:
            track = self.submitted(key, at, model=model, duration=duration)
        return track

    def sighted(self, key: str, progress: float | None, stage: str | None, at: float) -> None:
        """A poll answered "still running" (or queued), maybe with a progress."""
        track = self.tracks.get(key)
        if track is None:
            return
        track.running_seen = at
        if stage == "queued" or (progress is not None and progress <= 0):
            track.queued_seen = at
            track.first = None  # the rate is measured from the first sighting while running
            return
        if progress is None or not 0 < progress < 1:
            return
        if track.last is not None and progress == track.last.progress:
            return  # the same write, read again: its first reading is the closer to it
        sighting = Sighting(progress, at)
        if track.first is None:
            track.first = sighting
        track.last = sighting

    def finished(self, key: str, at: float, *, succeeded: bool = True) -> None:
        """A task left the server: a success adds its generation time to the history.

        The poll that finds it done comes after the fact: it finished between the last
        poll that saw it running and `at`, where its prediction says when it lies there."""
        track = self.tracks.pop(key, None)
        if track is None or not succeeded:
            return
        done = at
        estimate = self.estimate_track(track)
        if estimate is not None:
            done = estimate.within(track.running_seen or track.submitted_at, at)
        self.history.add(track.model, track.duration, done - track.submitted_at)

    def forget(self, key: str) -> None:
        self.tracks.pop(key, None)

    def keep_only(self, keys: Iterable[str]) -> None:
        """Drop the tracks of tasks no longer in flight (cancelled, failed elsewhere)."""
        wanted = set(keys)
        for key in [k for k in self.tracks if k not in wanted]:
            del self.tracks[key]

    # -- what we expect --------------------------------------------------------------

    def typical(self, model: str | None, duration: float | None) -> tuple[float, float] | None:
        """(mean, spread) of a generation: our history first, the server's average else."""
        known = self.history.typical(model, duration)
        if known is not None:
            return known
        if self.server_average is not None and self.server_average > 0:
            return self.server_average, PRIOR_RELATIVE_SPREAD * self.server_average
        return None

    def estimate(self, key: str) -> Finish | None:
        track = self.tracks.get(key)
        return None if track is None else self.estimate_track(track)

    def estimate_track(self, track: Track) -> Finish | None:
        observed = [] if track.last is None else self._from_progress(track, track.last)
        guess = self._from_history(track)
        if guess is not None and not self._contradicted(track, guess, observed):
            observed.append(guess)
        return combine(observed)

    def _from_history(self, track: Track) -> Finish | None:
        typical = self.typical(track.model, track.duration)
        if typical is None:
            return None
        mean, spread = typical
        # The tasks waiting ahead of it, each about as long; none once a poll saw it running.
        # A server's `queue_position` counts the task itself (an idle server answers 1).
        waits = 0 if track.last is not None else max(0, (track.queue_position or 0) - 1)
        start = track.submitted_at + waits * mean
        if track.queued_seen is not None:
            start = max(start, track.queued_seen)
        return Finish(start + mean, spread * math.sqrt(1 + waits))

    @staticmethod
    def _contradicted(track: Track, guess: Finish, observed: list[Finish]) -> bool:
        """The history's guess for this task, against what the polls said of it: still
        running well past the guess, or a progress that points far from it."""
        seen = track.running_seen
        if seen is not None and seen > guess.likely_by(CONTRADICTED_Z):
            return True
        told = combine(observed)
        if told is None:
            return False
        return abs(told.expected - guess.expected) > CONTRADICTED_Z * math.hypot(
            told.spread, guess.spread
        )

    def _from_progress(self, track: Track, last: Sighting) -> list[Finish]:
        """Extrapolations of the server's progress: from the start, and between sightings.

        A reading is not the progress at the moment of the poll: the server's model writes
        it when a step starts, a poll reads the last write, and the files are written after
        the last one (API-TRANSCRIPTS.md). Hence UNREPORTED_SECONDS in every spread."""
        half = PROGRESS_STEP / 2
        out: list[Finish] = []
        # A value read again and again unchanged: this server writes no more often than
        # that, and the next write (or the finish) may come as late.
        unchanged = max(0.0, (track.running_seen or last.at) - last.at)
        unreported = math.hypot(UNREPORTED_SECONDS, unchanged / math.sqrt(3))
        # From when it started generating: the submit, unless it was seen queued after it.
        start = track.queued_seen if track.queued_seen is not None else track.submitted_at
        elapsed = last.at - start
        if elapsed > 0:
            total = elapsed / last.progress
            left = total - elapsed
            rounding = total * (half / math.sqrt(3)) / last.progress
            # Seen queued: it started somewhere between then and the sighting.
            unsure_start = elapsed / math.sqrt(12) if track.queued_seen is not None else 0.0
            # Seconds of work the reading is off by weigh more the earlier it was taken (up to
            # 1 / progress times); the square root is what suited the captured progress best.
            spread = math.hypot(
                rounding,
                unsure_start,
                PROGRESS_MODEL_ERROR * left,
                unreported / math.sqrt(last.progress),
            )
            out.append(Finish(start + total, spread))
        first = track.first
        if first is not None and last.progress - first.progress >= 5 * PROGRESS_STEP:
            rate = (last.progress - first.progress) / (last.at - first.at)
            if rate > 0:
                left = (1 - last.progress) / rate
                relative = math.sqrt(2) * (half / math.sqrt(3)) / (last.progress - first.progress)
                between = last.at - first.at
                spread = math.hypot(
                    left * relative,
                    half / math.sqrt(3) / rate,
                    PROGRESS_MODEL_ERROR * left,
                    left * math.sqrt(2) * unreported / between,  # both readings' age
                    unreported,
                )
                out.append(Finish(last.at + left, max(MIN_SPREAD_SECONDS, spread)))
        return out

    # -- when to poll ----------------------------------------------------------------

    def plan(
        self,
        now: float,
        keys: Iterable[str],
        *,
        confidence: float = 0.8,
        gather_seconds: float = 0.5,
        look_after: float | None = None,
    ) -> tuple[float | None, int]:
        """Seconds from `now` until the poll that the predictions call for, and how many
        tasks it is expected to find done; (None, 0) when no task has a prediction.

        The first task likely done (`confidence`) sets the time; a poll that waits up to
        `gather_seconds` longer and so also catches the next ones is one request saved for
        each of them, at a small lag for the first.

        With `look_after`, a task that no poll has seen yet is looked at between
        `look_after` and twice that after its submit, whatever its history predicts: the
        history may be wrong about it (a server that got faster), and its progress says so.
        A poll planned within that window serves as the look; one is added otherwise."""
        z = NormalDist().inv_cdf(min(0.999, max(0.5, confidence)))
        wanted = list(keys)
        targets = sorted(
            finish.likely_by(z) for key in wanted if (finish := self.estimate(key)) is not None
        )
        if not targets:
            return None, 0
        first = targets[0]
        chosen = first
        for target in targets[1:]:
            if target - first > gather_seconds:
                break
            chosen = target
        look = self._look_window(wanted, look_after)
        if look is not None and look[1] < chosen:
            chosen = look[0]
        caught = sum(1 for t in targets if t <= chosen)
        return max(0.0, chosen - now), caught

    def _look_window(self, keys: list[str], look_after: float | None) -> tuple[float, float] | None:
        """(earliest, latest) time for the first look at the predicted tasks no poll has
        seen yet; None when there are none."""
        if look_after is None:
            return None
        unseen = [
            track.submitted_at
            for key in keys
            if (track := self.tracks.get(key)) is not None
            and track.running_seen is None
            and self.estimate_track(track) is not None
        ]
        if not unseen:
            return None
        return min(unseen) + look_after, min(unseen) + 2 * look_after


def poll_delay(
    predicted: float | None,
    unpredicted: float | None,
    *,
    floor: float,
    ceiling: float,
    misses: int = 0,
) -> float:
    """Seconds until the next poll.

    `predicted`: what the predictions call for; `unpredicted`: the plain interval (short
    after a submit, growing) that tasks without a prediction need. Never past `ceiling`
    (`poll_max_seconds`), never sooner than `floor`; and after `misses` polls in a row that
    found nothing the predictions said would be done (a task stuck at 99%, a server slower
    than its history), the predicted time backs off from `floor` by 1.5x per miss, so a
    wrong prediction never turns into a poll every `floor` seconds.
    """
    candidates = [d for d in (predicted, unpredicted) if d is not None]
    if not candidates:
        return ceiling
    delay = min(candidates)
    if predicted is not None and delay == predicted and misses:
        delay = max(delay, floor * 1.5**misses)
    return min(ceiling, max(floor, delay))
