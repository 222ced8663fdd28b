"""The stability tracker decides when a dropped file is finished, on an injected clock."""

from __future__ import annotations

from pathlib import Path

from bygheartd.watch.stability import FileStabilityTracker, Signature

P = Path("/inbox/song.txt")
A = Signature(10, 1000)
B = Signature(20, 2000)


def test_a_new_event_asks_for_a_stat_at_once() -> None:
    tracker = FileStabilityTracker(2.0)
    tracker.event(P, 100.0)
    assert tracker.to_check(100.0) == [P]
    assert tracker.next_check(100.0) == 100.0


def test_file_is_ready_after_settle_with_no_events_and_the_same_signature() -> None:
    tracker = FileStabilityTracker(2.0)
    tracker.event(P, 100.0)
    assert not tracker.observe(P, A, 100.0)
    assert tracker.to_check(101.9) == []
    assert tracker.next_check(101.0) == 102.0
    assert tracker.observe(P, A, 102.0)
    assert P not in tracker


def test_a_growing_file_is_never_ready() -> None:
    tracker = FileStabilityTracker(2.0)
    tracker.event(P, 100.0)
    tracker.observe(P, A, 100.0)
    assert not tracker.observe(P, B, 102.0)  # grew without an event (a network share)
    assert tracker.next_check(102.0) == 104.0
    assert tracker.observe(P, B, 104.0)


def test_each_event_restarts_the_settle_time() -> None:
    tracker = FileStabilityTracker(2.0)
    tracker.event(P, 100.0)
    tracker.observe(P, A, 100.0)
    tracker.event(P, 101.5)  # touched, same size and mtime (a scanner reopening it)
    tracker.observe(P, A, 101.5)
    assert not tracker.observe(P, A, 102.0)
    assert tracker.observe(P, A, 103.5)


def test_a_vanished_file_is_forgotten_not_ready() -> None:
    tracker = FileStabilityTracker(2.0)
    tracker.event(P, 100.0)
    assert not tracker.observe(P, None, 100.0)
    assert len(tracker) == 0
    assert tracker.next_check(100.0) is None


def test_observing_an_unknown_path_is_harmless() -> None:
    tracker = FileStabilityTracker(2.0)
    assert not tracker.observe(P, A, 1.0)


def test_zero_settle_needs_two_equal_stats() -> None:
    tracker = FileStabilityTracker(0.0)
    tracker.event(P, 5.0)
    assert not tracker.observe(P, A, 5.0)
    assert tracker.to_check(5.0) == [P]
    assert tracker.observe(P, A, 5.0)


def test_next_check_is_the_earliest_deadline() -> None:
    tracker = FileStabilityTracker(1.0)
    other = Path("/inbox/b.txt")
    tracker.event(P, 10.0)
    tracker.observe(P, A, 10.0)
    tracker.event(other, 10.4)
    tracker.observe(other, B, 10.4)
    assert tracker.next_check(10.5) == 11.0
    assert tracker.to_check(11.0) == [P]
