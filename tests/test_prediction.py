"""The poll planner's predictions (engine/prediction.py), driven with made-up times: where a
task's finish is expected from its history and from the progress the server reports, and
when one batched poll for every in-flight task goes out.
"""

from __future__ import annotations

import math
import random

import pytest

from bygheartd.engine.prediction import (
    Finish,
    GenerationHistory,
    Predictor,
    combine,
    duration_bucket,
    poll_delay,
)

MODEL = "bygheart-melody-fast"


def server_progress(elapsed: float, total: float) -> float:
    """What a server reports: rounded to 0.01, never 0 or 1 while running."""
    return round(min(0.99, max(0.01, elapsed / total)), 2)


def test_nothing_known_means_no_prediction() -> None:
    predictor = Predictor()
    predictor.submitted("a", 100.0, model=MODEL, duration=30)
    assert predictor.estimate("a") is None
    assert predictor.plan(100.0, ["a"]) == (None, 0)


def test_history_is_per_model_and_duration_then_falls_back() -> None:
    history = GenerationHistory()
    for seconds in (10.0, 11.0, 12.0):
        history.add(MODEL, 30, seconds)
    history.add("other-model", 200, 100.0)
    short = history.typical(MODEL, 25)
    assert short is not None and short[0] == pytest.approx(11.0)
    # no long songs of this model yet: its other lengths, not another model's
    longer = history.typical(MODEL, 200)
    assert longer is not None and longer[0] == pytest.approx(11.0)
    unknown = history.typical("never-seen", None)
    assert unknown is not None and unknown[0] == pytest.approx(33.25)
    assert duration_bucket(25) != duration_bucket(200) and duration_bucket(None) == "auto"


def test_the_servers_average_serves_until_we_have_our_own_history() -> None:
    predictor = Predictor(server_average=40.0)
    predictor.submitted("a", 0.0, model=MODEL)
    first = predictor.estimate("a")
    assert first is not None and first.expected == pytest.approx(40.0)
    predictor.history.add(MODEL, None, 20.0)
    second = predictor.estimate("a")
    assert second is not None and second.expected == pytest.approx(20.0)


def test_a_queue_position_moves_the_expected_finish_back() -> None:
    """The real server's `queue_position` counts the task itself: an idle server answers 1
    (API-TRANSCRIPTS.md step 2), the task behind one waiting task 2."""
    predictor = Predictor(server_average=30.0)
    predictor.submitted("first", 0.0, queue_position=1)
    predictor.submitted("third", 0.0, queue_position=3)
    first, third = predictor.estimate("first"), predictor.estimate("third")
    assert first is not None and third is not None
    assert first.expected == pytest.approx(30.0)  # nothing ahead of it: it starts at once
    assert third.expected == pytest.approx(first.expected + 60.0)
    assert third.spread > first.spread


def test_progress_pins_the_finish_far_tighter_than_history() -> None:
    predictor = Predictor()
    predictor.history.add(MODEL, 30, 10.0)
    predictor.history.add(MODEL, 30, 30.0)
    predictor.submitted("a", 0.0, model=MODEL, duration=30)
    before = predictor.estimate("a")
    predictor.sighted("a", server_progress(6.0, 24.0), "step 2/8", 6.0)
    after = predictor.estimate("a")
    assert before is not None and after is not None
    assert after.spread < before.spread / 5
    assert after.expected == pytest.approx(24.0, abs=3 * after.spread)


def test_two_sightings_measure_the_rate_when_the_start_is_unknown() -> None:
    """Seen queued, then running: when it started is unsure, the rate between sightings
    is not."""
    predictor = Predictor()
    predictor.submitted("a", 0.0)
    predictor.sighted("a", 0.0, "queued", 5.0)
    started, total = 12.0, 20.0  # it really started at 12 s
    for at in (14.0, 22.0):
        predictor.sighted("a", server_progress(at - started, total), "running", at)
    estimate = predictor.estimate("a")
    assert estimate is not None
    assert estimate.expected == pytest.approx(started + total, abs=1.0)


def test_a_success_teaches_the_history_when_it_really_finished() -> None:
    """Found done by a poll well after it finished: the history keeps the predicted
    finish (within the window the polls allow), not the late poll's time."""
    predictor = Predictor()
    predictor.submitted("a", 0.0, model=MODEL, duration=30)
    predictor.sighted("a", server_progress(10.0, 20.0), "running", 10.0)
    predictor.finished("a", 35.0)
    typical = predictor.history.typical(MODEL, 30)
    assert typical is not None and typical[0] == pytest.approx(20.0, abs=0.5)
    assert "a" not in predictor.tracks


def test_one_poll_gathers_the_tasks_finishing_close_together() -> None:
    predictor = Predictor()
    for key, total in (("soon", 10.0), ("just-after", 10.4), ("later", 25.0)):
        predictor.submitted(key, 0.0)
        predictor.sighted(key, server_progress(5.0, total), "running", 5.0)
    delay, caught = predictor.plan(5.0, ["soon", "just-after", "later"], gather_seconds=1.0)
    assert delay is not None and caught == 2
    soon, after = predictor.estimate("soon"), predictor.estimate("just-after")
    assert soon is not None and after is not None
    assert 5.0 + delay >= after.expected  # late enough for both
    alone, caught_alone = predictor.plan(5.0, ["soon", "just-after", "later"], gather_seconds=0)
    assert caught_alone == 1 and alone is not None and alone < delay


def test_poll_delay_keeps_the_bounds_and_backs_off_after_misses() -> None:
    assert poll_delay(0.0, None, floor=0.5, ceiling=30) == 0.5
    assert poll_delay(100.0, None, floor=0.5, ceiling=30) == 30
    assert poll_delay(None, 3.0, floor=0.5, ceiling=30) == 3.0
    assert poll_delay(8.0, 3.0, floor=0.5, ceiling=30) == 3.0  # an unpredicted task waits less
    assert poll_delay(None, None, floor=0.5, ceiling=30) == 30
    backed = [poll_delay(0.1, None, floor=0.5, ceiling=30, misses=n) for n in range(12)]
    assert backed == sorted(backed) and backed[0] == 0.5 and backed[-1] == 30


def test_combine_weighs_the_surer_estimate() -> None:
    both = combine([Finish(10.0, 0.1), Finish(20.0, 10.0)])
    assert both is not None and both.expected == pytest.approx(10.0, abs=0.01)
    assert combine([]) is None
    assert Finish(10.0, 1.0).done_by(10.0) == pytest.approx(0.5)


def test_planned_polls_find_spread_out_songs_at_about_one_poll_each() -> None:
    """Eight songs in flight, generations of 10 to 30 s, the server's rounded progress:
    polling when the plan says finds each song soon after it finished, with about one
    poll per song (a poll that catches none is a miss; the first poll is blind)."""
    rng = random.Random(16)
    predictor = Predictor()
    finish = {f"t{n}": rng.uniform(10, 30) for n in range(8)}
    for key in finish:
        predictor.submitted(key, 0.0)
    now, polls, lags = 3.0, 0, []
    while finish:
        polls += 1
        for key, total in list(finish.items()):
            if now >= total:
                lags.append(now - total)
                predictor.finished(key, now)
                del finish[key]
            else:
                predictor.sighted(key, server_progress(now, total), "running", now)
        if not finish:
            break
        delay, _ = predictor.plan(now, list(finish), confidence=0.98, gather_seconds=1.0)
        assert delay is not None
        now += poll_delay(delay, None, floor=0.5, ceiling=30)
    assert polls <= 9
    # Readings this fresh are what no real server gives (the captured one's are up to a
    # step old): the margin every progress-based finish keeps for that costs some lag here.
    assert sorted(lags)[len(lags) // 2] < 1.0


# -- what the captured server says (API-TRANSCRIPTS.md), and predictions it contradicts ---

STEPS_PER_SECOND = 4  # the captured stub: 1 s of diffusion in 4 steps, 6 s in 24
FILES_SECONDS = 0.3  # written after the last step: no progress covers them


def captured_progress(elapsed: float, diffusion: float) -> float | None:
    """The progress the captured server holds `elapsed` s after a task started: step k of
    N written as k / (N + 1) when it starts, unchanged until the next; None once the
    result is there."""
    if elapsed >= diffusion + FILES_SECONDS:
        return None
    steps = max(1, round(diffusion * STEPS_PER_SECOND))
    return min(steps, math.floor(elapsed / (diffusion / steps)) + 1) / (steps + 1)


def learned(seconds: float, times: int = 10) -> Predictor:
    predictor = Predictor()
    for n in range(times):
        predictor.history.add(MODEL, 30, seconds * (1 + 0.01 * (n % 3 - 1)))
    return predictor


def test_progress_that_contradicts_the_history_replaces_it_at_once() -> None:
    """History says 3 s; 3.2 s in, the server reports step 13 of 180 (45 s of diffusion):
    the next poll is planned for the 45 s the progress says, not an average with 3 s."""
    predictor = learned(3.0)
    predictor.submitted("a", 0.0, model=MODEL, duration=30)
    before = predictor.estimate("a")
    assert before is not None and before.expected == pytest.approx(3.0, abs=0.1)
    progress = captured_progress(3.2, 45.0)
    assert progress is not None
    predictor.sighted("a", progress, "stub diffusion step 13/180", 3.2)
    after = predictor.estimate("a")
    assert after is not None and after.expected == pytest.approx(45.3, abs=3 * after.spread)
    delay, _ = predictor.plan(3.2, ["a"], confidence=0.98)
    assert delay is not None and delay > 30


def test_progress_that_says_sooner_than_the_history_wins_too() -> None:
    """The other way: history says 45 s, the first look 3 s in finds the last step."""
    predictor = learned(45.0)
    predictor.submitted("a", 0.0, model=MODEL, duration=30)
    progress = captured_progress(3.0, 3.0)
    assert progress is not None
    predictor.sighted("a", progress, "stub diffusion step 12/12", 3.0)
    after = predictor.estimate("a")
    assert after is not None and after.expected < 4.0


def test_running_well_past_the_history_drops_it_for_that_task() -> None:
    """No progress at all, but still running long after the history's likely finish: the
    history no longer predicts this task (it waits on the plain growing interval)."""
    predictor = learned(3.0)
    predictor.submitted("a", 0.0, model=MODEL, duration=30)
    predictor.sighted("a", None, None, 2.0)
    assert predictor.estimate("a") is not None  # not contradicted yet
    predictor.sighted("a", None, None, 10.0)
    assert predictor.estimate("a") is None


def test_a_history_starts_again_when_the_server_changes_speed() -> None:
    history = GenerationHistory()
    for _ in range(5):
        history.add(MODEL, 30, 3.0)
    history.add(MODEL, 30, 45.0)
    typical = history.typical(MODEL, 30)
    assert typical is not None and typical[0] == pytest.approx(45.0)
    spread_out = GenerationHistory()  # times that merely vary are kept, however far apart
    for seconds in (10.0, 30.0, 20.0, 11.0, 29.0, 15.0, 25.0, 10.5):
        spread_out.add(MODEL, 30, seconds)
    assert len(spread_out) == 8


def test_a_task_known_only_from_history_is_looked_at_soon_after_its_submit() -> None:
    predictor = learned(45.0)
    predictor.submitted("a", 0.0, model=MODEL, duration=30)
    delay, caught = predictor.plan(0.0, ["a"], confidence=0.98, look_after=3.0)
    assert delay == pytest.approx(3.0) and caught == 0
    alone, _ = predictor.plan(0.0, ["a"], confidence=0.98)
    assert alone is not None and alone > 40  # without the look: the history's finish
    # A poll already due inside the look's window (3 to 6 s) serves as the look.
    predictor.submitted("b", -20.0, model=MODEL, duration=30)
    predictor.sighted("b", 0.8, "running", -1.0)
    b = predictor.estimate("b")
    assert b is not None and 3.0 < b.expected < 5.0
    delay, caught = predictor.plan(0.0, ["a", "b"], confidence=0.98, look_after=3.0)
    assert delay is not None and delay > 3.0 and caught == 1
    predictor.sighted("a", captured_progress(3.0, 45.0), "running", 3.0)
    delay, _ = predictor.plan(3.0, ["a"], confidence=0.98, look_after=3.0)
    assert delay is not None and delay > 30  # looked at: its progress sets the time


def drive(phases: list[list[float]], *, look_after: float = 3.0) -> tuple[int, list[float]]:
    """The poll loop against the captured server's progress: each phase's tasks submitted
    together once the phase before has ended; (polls, lag of each task)."""
    predictor = Predictor()
    now, polls, lags, misses, n = 0.0, 0, [], 0, 0
    for phase in phases:
        running: dict[str, tuple[float, float]] = {}
        for diffusion in phase:
            key, n = f"t{n}", n + 1
            predictor.submitted(key, now, model=MODEL, duration=30)
            running[key] = (now, diffusion)
        while running:
            delay, expected = predictor.plan(
                now, list(running), confidence=0.98, gather_seconds=1.0, look_after=look_after
            )
            unpredicted = (
                look_after if any(predictor.estimate(k) is None for k in running) else None
            )
            now += poll_delay(delay, unpredicted, floor=0.5, ceiling=30, misses=misses)
            polls += 1
            found = 0
            for key, (start, diffusion) in list(running.items()):
                progress = captured_progress(now - start, diffusion)
                if progress is None:
                    lags.append(now - (start + diffusion + FILES_SECONDS))
                    predictor.finished(key, now)
                    del running[key]
                    found += 1
                else:
                    predictor.sighted(key, progress, "running", now)
            misses = misses + 1 if expected and not found else 0
    return polls, lags


def test_when_generation_times_jump_the_lag_stays_short() -> None:
    """3 s, then 45 s, then 3 s again (bench/engine.py (g)): every song is fetched soon
    after the server has it; before, the first 3 s song after the 45 s ones waited for a
    poll the 45 s history had put 27 s late."""
    polls, lags = drive([[3.0, 3.1, 2.9, 3.05], [45.0, 44.0, 46.0, 45.5], [3.0, 3.1, 2.9, 3.05]])
    assert len(lags) == 12
    assert max(lags) < 1.5
    assert polls <= 3 * 12


def test_planned_polls_on_the_captured_progress_find_songs_soon() -> None:
    """Eight songs of 10 to 30 s at once, the captured server's step-wise progress: about
    one poll per song, each song found soon after it finished."""
    rng = random.Random(16)
    polls, lags = drive([[rng.uniform(10, 30) for _ in range(8)]])
    assert polls <= 9  # songs finishing close together share one
    assert sorted(lags)[len(lags) // 2] < 0.75 and max(lags) < 2.0
