"""The watcher with real files and real observers: a file is taken once, and only when done."""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import MakeConfig
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from bygheartd.config import Config
from bygheartd.engine.ticker import Ticker
from bygheartd.runtime import open_service, open_store
from bygheartd.service.service import EngineControl, SongService
from bygheartd.watch.errors import InboxBusy
from bygheartd.watch.watcher import InboxWatcher

pytestmark = pytest.mark.anyio

SONG = b"---\ntitle: Night Drive\n---\nlights on the highway\n"
STYLED_SONG = b"---\ntitle: Night Drive\nstyle: synthwave\n---\n[Verse]\nlights on the highway\n"


async def until(
    cond: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0, what: str = ""
) -> None:
    """Wait for `cond` (a plain or an async check) to hold."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        held = cond()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.02)


class Harness:
    def __init__(self, config: Config, engine: EngineControl | None = None) -> None:
        self.config = config
        self.service = (
            open_service(config)
            if engine is None
            else SongService(config, open_store(config), engine=engine)
        )
        self.inbox = config.folders.inbox
        self.archive = config.folders.archive
        self.failed = config.folders.failed

    async def jobs(self) -> int:
        return len(await self.service.list())

    async def has_jobs(self, n: int) -> bool:
        return await self.jobs() == n

    def archived(self) -> list[str]:
        return sorted(p.name for p in self.archive.rglob("*") if p.is_file())


class SchedulerOnly:
    """The part of an engine the watcher uses: its apscheduler ticker, and no generation."""

    engine_running = True
    engine_error = None

    def __init__(self, ticker: Ticker) -> None:
        self.ticker = ticker

    def wake(self) -> None:
        pass

    def every(self, name: str, seconds: float, func: Any) -> bool:
        self.ticker.every(name, seconds, func, start_now=False)
        return True

    def cancel(self, name: str) -> None:
        self.ticker.cancel(name)


@pytest.fixture
async def harness(make_config: Any) -> AsyncIterator[Callable[..., Any]]:
    """`await start(watch={...}, **watcher_kwargs)` -> (Harness, running InboxWatcher)."""
    started: list[tuple[Harness, InboxWatcher]] = []

    async def start(
        watch: dict[str, Any] | None = None, **kwargs: Any
    ) -> tuple[Harness, InboxWatcher]:
        config = make_config(watch={"settle_seconds": 0.2, **(watch or {})})
        ticker = kwargs.pop("ticker", None)
        # With a ticker: the engine's scheduler, which runs the periodic rescan.
        h = Harness(config, SchedulerOnly(ticker) if ticker is not None else None)
        watcher = InboxWatcher(config, h.service, **kwargs)
        try:
            await watcher.start()
        except BaseException:
            await h.service.close()
            raise
        started.append((h, watcher))
        return h, watcher

    yield start
    for h, watcher in started:
        await watcher.stop()
        await h.service.close()


@pytest.fixture
async def watched(make_config: MakeConfig) -> AsyncIterator[tuple[Config, SongService, Any]]:
    config = make_config(watch={"settle_seconds": 0.1, "rescan_seconds": 600})
    service = open_service(config)
    watcher = InboxWatcher(config, service, health_seconds=0.05)
    try:
        await watcher.start()
        try:
            yield config, service, watcher
        finally:
            await watcher.stop()
    finally:
        await service.close()


OBSERVERS = [
    pytest.param({}, id="native"),
    pytest.param({"poll_interval_seconds": 0.1}, id="polling"),
]


@pytest.mark.parametrize("watch", OBSERVERS)
async def test_file_written_in_place_becomes_one_job(harness: Any, watch: dict[str, Any]) -> None:
    h, _ = await harness(watch)
    (h.inbox / "song.txt").write_bytes(SONG)
    await until(lambda: h.archived() == ["song.txt"], what="archive")
    assert await h.jobs() == 1
    assert not (h.inbox / "song.txt").exists()


@pytest.mark.parametrize("watch", OBSERVERS)
async def test_slow_writer_is_not_taken_while_the_file_grows(
    harness: Any, watch: dict[str, Any]
) -> None:
    h, _ = await harness({"settle_seconds": 0.3, **watch})
    path = h.inbox / "slow.txt"
    written = b""
    with open(path, "wb") as fh:
        for n in range(10):
            chunk = f"line {n} of a song that arrives slowly\n".encode()
            fh.write(chunk)
            fh.flush()
            written += chunk
            await asyncio.sleep(0.1)
            assert await h.jobs() == 0, "taken while still growing"
    await until(lambda: h.archived() == ["slow.txt"], what="archive")
    assert await h.jobs() == 1
    assert (h.archive / "slow.txt").read_bytes() == written
    assert (await h.service.list())[0].request["lyrics"].count("line") == 10


async def test_atomic_rename_from_part_is_taken_once(harness: Any) -> None:
    h, _ = await harness()
    part = h.inbox / "song.txt.part"
    part.write_bytes(SONG)
    await asyncio.sleep(0.3)
    assert part.exists() and await h.jobs() == 0  # *.part is someone else's temporary
    part.rename(h.inbox / "song.txt")
    # the job is committed before the file moves: wait for the move, then count
    await until(lambda: h.archived() == ["song.txt"], what="archive")
    assert await h.jobs() == 1


async def test_file_moved_in_from_another_folder_is_taken(harness: Any, tmp_path: Path) -> None:
    h, _ = await harness()
    outside = tmp_path / "elsewhere.txt"
    outside.write_bytes(SONG)
    os.utime(outside, (1_000_000, 1_000_000))  # an old mtime, as `mv` keeps it
    outside.rename(h.inbox / "moved.txt")
    await until(lambda: h.archived() == ["moved.txt"])


async def test_copied_file_keeping_its_mtime_is_taken(harness: Any, tmp_path: Path) -> None:
    h, _ = await harness()
    source = tmp_path / "source.lyrics"
    source.write_bytes(SONG)
    shutil.copy2(source, h.inbox / "copy.lyrics")
    await until(lambda: h.archived() == ["copy.lyrics"])
    assert await h.jobs() == 1


async def test_file_touched_repeatedly_is_taken_once_it_rests(harness: Any) -> None:
    h, _ = await harness({"settle_seconds": 0.3})
    path = h.inbox / "touched.txt"
    path.write_bytes(SONG)
    for _ in range(10):
        await asyncio.sleep(0.1)
        path.touch()
        assert await h.jobs() == 0
    await until(lambda: h.has_jobs(1))
    await asyncio.sleep(0.3)
    assert await h.jobs() == 1


async def test_burst_of_500_files_all_become_jobs_without_blocking_the_loop(
    harness: Any,
) -> None:
    h, _ = await harness({"settle_seconds": 0.1})
    seen: list[int] = []

    async def probe() -> None:
        # Another coroutine, looking at the store between the watcher's steps.
        while True:
            await asyncio.sleep(0.02)
            seen.append(sum((await h.service.counts()).values()))

    task = asyncio.create_task(probe())
    for n in range(500):
        (h.inbox / f"song-{n:03d}.txt").write_bytes(SONG + f"take {n}\n".encode())
    await until(lambda: len(h.archived()) == 500, timeout=30, what="500 archived")
    task.cancel()
    assert await h.jobs() == 500
    # Reading, hashing and moving run in threads, so the loop keeps serving other work while
    # the burst is taken: the probe saw the queue partly filled, many times. Work done on the
    # loop would hold it for the whole burst (the probe would see only 0 and 500). How long
    # the loop waited is a figure of bench/watcher.py, not a test.
    partial = {count for count in seen if 0 < count < 500}
    assert len(partial) >= 5, sorted(set(seen))


async def test_files_present_at_start_are_taken_by_the_startup_scan(
    make_config: Any,
) -> None:
    config = make_config()
    (config.folders.inbox / "demo").mkdir()
    (config.folders.inbox / "early.txt").write_bytes(SONG)
    (config.folders.inbox / "demo" / "early.txt").write_bytes(SONG)
    h = Harness(config)
    watcher = InboxWatcher(config, h.service)
    try:
        await watcher.start()
        try:
            note = h.failed / "demo" / "early.txt.error.txt"  # there is no [presets.demo]
            await until(lambda: h.archived() == ["early.txt"] and note.exists())
        finally:
            await watcher.stop()
    finally:
        await h.service.close()


async def test_periodic_rescan_finds_files_whose_events_were_lost(harness: Any) -> None:
    ticker = Ticker()
    ticker.start()
    try:
        # A polling observer that never polls in time: only the rescan can see the file.
        h, _ = await harness({"poll_interval_seconds": 600, "rescan_seconds": 0.3}, ticker=ticker)
        (h.inbox / "missed.txt").write_bytes(SONG)
        await until(lambda: h.has_jobs(1), what="the rescan")
    finally:
        ticker.shutdown()


async def test_folder_moved_in_brings_its_files(harness: Any, tmp_path: Path) -> None:
    h, _ = await harness()
    album = tmp_path / "album"
    album.mkdir()
    for n in range(3):
        (album / f"{n}.txt").write_bytes(SONG + bytes([65 + n]))
    album.rename(h.inbox / "album")
    await until(lambda: len(list((h.failed / "album").glob("*.error.txt"))) == 3)


async def test_other_extension_goes_to_failed_with_a_note(harness: Any) -> None:
    h, _ = await harness()
    (h.inbox / "Song.DOCX").write_bytes(b"PK\x03\x04")
    await until(lambda: (h.failed / "Song.DOCX.error.txt").exists())
    assert "song files end in .txt" in (h.failed / "Song.DOCX.error.txt").read_text()


LONG_NAMES = [  # 255 bytes each: the longest name the file system takes
    pytest.param("s" * 250 + ".docx", id="ascii"),
    pytest.param("東" * 83 + "é" + ".txt", id="multibyte"),
]


@pytest.mark.parametrize("name", LONG_NAMES)
async def test_a_rejected_255_byte_name_gets_a_shortened_note_and_a_true_log_line(
    harness: Any, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    assert len(name.encode()) == 255
    caplog.set_level(logging.INFO, "bygheartd.watch")
    h, _ = await harness()
    (h.inbox / name).write_bytes(b"---\ntitl: Night Drive\n---\nlights on the highway\n")
    await until(lambda: any(h.failed.glob("*.error.txt")), what="the error note")
    (note,) = h.failed.glob("*.error.txt")
    assert (h.failed / name).exists() and not (h.inbox / name).exists()
    # It fits, it is valid UTF-8 (no character cut in half), and it still says which file.
    raw = os.fsencode(note.name)
    assert len(raw) <= 255 and raw.decode("utf-8") == note.name
    suffix = os.path.splitext(name)[1]
    start, _, end = note.name.partition("…")
    assert end == suffix + ".error.txt" and name.startswith(start) and len(start) > 70
    assert name in note.read_text(encoding="utf-8")
    line = f"rejected {name} -> {h.failed / name}, note shortened to {note.name}: "

    def logged() -> list[str]:
        return [r.getMessage() for r in caplog.records]

    # The note is written before the line is logged (off the event loop): wait for the line.
    await until(lambda: line in "\n".join(logged()), what="the rejection's log line")
    assert not any("stays in the inbox" in m for m in logged())


async def test_vanished_inbox_pauses_and_resumes_without_losing_files(
    harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    h, watcher = await harness(health_seconds=0.05)
    away = h.inbox.with_name("inbox-unmounted")
    h.inbox.rename(away)
    await until(lambda: watcher.status_text is not None, what="pause")
    assert "paused" in (watcher.status_text or "")
    (away / "waiting.txt").write_bytes(SONG)
    await asyncio.sleep(0.3)
    assert await h.jobs() == 0 and (away / "waiting.txt").exists()
    away.rename(h.inbox)
    await until(lambda: h.has_jobs(1), what="resume")
    assert watcher.status_text is None
    paused = [r for r in caplog.records if "paused" in r.getMessage()]
    assert len(paused) == 1, "the pause is logged once, not on every retry"


async def test_an_inbox_replaced_between_health_checks_is_watched_and_locked_again(
    watched: tuple[Config, SongService, Any],
) -> None:
    from bygheartd.watch.errors import InboxBusy
    from bygheartd.watch.inbox import InboxLock

    config, service, _watcher = watched
    inbox = config.folders.inbox
    inbox.rename(inbox.with_name("inbox-old"))  # a share remounted, a folder re-created
    inbox.mkdir()
    (inbox / "after.txt").write_bytes(STYLED_SONG)  # written in place: native events only

    async def taken() -> bool:
        return len(await service.list()) == 1

    await until(taken, what="the file in the new inbox")
    with pytest.raises(InboxBusy):  # and no second daemon may take the new inbox
        InboxLock(inbox).acquire()


async def test_inotify_running_out_of_watches_falls_back_to_polling(
    harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Exhausted(Observer):  # type: ignore[misc,valid-type]
        def start(self) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    def factory(interval: float) -> BaseObserver:
        return Exhausted()

    caplog.set_level(logging.ERROR, "bygheartd.watch")
    h, watcher = await harness(observer_factory=factory)
    assert (watcher.observer_kind or "").startswith("polling")
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "fs.inotify.max_user_watches" in message and "poll_interval_seconds" in message
    (h.inbox / "still-works.txt").write_bytes(SONG)
    await until(lambda: h.has_jobs(1), timeout=8)


async def test_second_watcher_on_the_same_inbox_refuses(harness: Any) -> None:
    h, _ = await harness()
    second = InboxWatcher(h.config, h.service)
    with pytest.raises(InboxBusy, match="already watched by another bygheartd"):
        await second.start()
    await second.stop()


async def test_stop_releases_the_inbox_for_the_next_watcher(harness: Any) -> None:
    h, watcher = await harness()
    await watcher.stop()
    again = InboxWatcher(h.config, h.service)
    await again.start()
    (h.inbox / "after.txt").write_bytes(SONG)
    await until(lambda: h.has_jobs(1))
    await again.stop()
