"""The daemon's event-loop ticker: a blocked loop shows in its figures and in one log line."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from bygheartd.daemon.looplag import LoopLag

pytestmark = pytest.mark.anyio


async def _ticks_past(lag: LoopLag, count: int) -> None:
    while lag.figures().ticks < count:
        await asyncio.sleep(0.005)


async def test_a_blocked_loop_shows_in_the_figures_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lag = LoopLag(every=0.01, blocked=0.2)
    ticker = asyncio.create_task(lag.run())
    try:
        await _ticks_past(lag, 3)
        calm = lag.figures()
        assert calm.max_ms < 200
        with caplog.at_level(logging.WARNING, logger="bygheartd.daemon.looplag"):
            time.sleep(0.3)  # what a blocking call made on the loop does to everyone
            await _ticks_past(lag, calm.ticks + 2)
            time.sleep(0.3)  # a second block soon after: not logged again
            await _ticks_past(lag, calm.ticks + 4)
        after = lag.figures()
        assert after.max_ms >= 290 and after.p95_ms >= 290
        assert after.ticks >= calm.ticks + 4
        blocked = [r for r in caplog.records if "event loop was blocked" in r.getMessage()]
        assert len(blocked) == 1 and "0.3 s" in blocked[0].getMessage()
    finally:
        ticker.cancel()


def test_old_ticks_leave_the_window() -> None:
    lag = LoopLag(window=10.0)
    now = time.monotonic()
    lag.note(now - 20, 2.0)
    lag.note(now, 0.01)
    figures = lag.figures()
    assert figures.max_ms == 10.0 and figures.last_ms == 10.0 and figures.ticks == 2


def test_no_ticks_yet_reads_as_zero() -> None:
    figures = LoopLag().figures()
    assert (figures.ticks, figures.last_ms, figures.p95_ms, figures.max_ms) == (0, 0, 0, 0)
