"""The drop folder: watches the inbox and turns each stable file into a job or a rejection.

Watchdog's thread only forwards events to the loop; a checker task decides when a file is
stable (`FileStabilityTracker`) and `Intake` (off the loop) does the exactly-once work.
A startup scan and a periodic rescan pick up whatever events were lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from watchdog.observers.api import BaseObserver

from bygheartd.config import Config, LiveConfig
from bygheartd.folders.moves import FolderUnavailable, folder_available
from bygheartd.service.service import SongService
from bygheartd.watch.errors import InboxBusy
from bygheartd.watch.inbox import (
    InboxLock,
    ObserverFactory,
    RawEvent,
    default_observer,
    probe_inbox,
    scan_inbox,
    start_observer,
    stat_signatures,
    stop_observer,
)
from bygheartd.watch.intake import Intake, Outcome
from bygheartd.watch.stability import FileStabilityTracker

log = logging.getLogger(__name__)

RESCAN_JOB = "inbox-rescan"
BATCH = 64  # files taken per round of the intake loop


class InboxWatcher:
    """`InboxWatcher(config, service)`; `await start()`, `await stop()`.

    The periodic rescan runs on the engine's scheduler through the service, so it runs
    where the engine runs (the daemon) and nowhere else.

    `health_seconds` is how often a missing or unreachable inbox, and an unavailable
    archive or failed folder (an unmounted share), is looked for again;
    `observer_factory` chooses the watchdog observer (tests use it to simulate inotify
    running out of watches).
    """

    def __init__(
        self,
        config: Config | LiveConfig,
        service: SongService,
        *,
        health_seconds: float = 2.0,
        observer_factory: ObserverFactory = default_observer,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._live = LiveConfig.of(config)
        self.service = service
        # The folder and the timings are fixed for a watcher's life: changing them needs a
        # restart (the daemon says so on reload).
        self.inbox = self.config.folders.inbox
        self.settle = self.config.watch.settle_seconds
        self.health_seconds = health_seconds
        self.intake = Intake(self._live, service)
        self.tracker = FileStabilityTracker(self.settle)
        self.lock = InboxLock(self.inbox, self.config.state_dir)
        self.outcomes: list[Outcome] = []  # the latest outcomes, newest last (bounded)
        self.observer_kind: str | None = None
        self.paused_reason: str | None = None
        # Folders that files must move to and that are unavailable (an unmounted share):
        # the files that need one stay in the inbox until it is back. Folder -> why.
        self.waiting: dict[Path, str] = {}
        self._observer_factory = observer_factory
        self._clock = clock
        self._observer: BaseObserver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._ready: asyncio.Queue[Path] = asyncio.Queue()
        self._in_flight: set[Path] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = threading.Event()
        self._errors_logged: set[tuple[Path, str]] = set()
        self._rescanning = False
        self._side_tasks: set[asyncio.Future[None]] = set()
        self._inbox_id: tuple[int, int] | None = None  # (st_dev, st_ino) being watched

    @property
    def config(self) -> Config:
        return self._live.current

    # -- life cycle ---------------------------------------------------------------------

    @property
    def status_text(self) -> str | None:
        """A STATUS= line for sd_notify while the drop folder is not working normally."""
        parts = [f"drop folder paused: {self.paused_reason}"] if self.paused_reason else []
        parts += [
            f"drop folder intake waits for the {self._folder_name(folder)} folder: {why}"
            for folder, why in self.waiting.items()
        ]
        return "; ".join(parts) or None

    def _folder_name(self, folder: Path) -> str:
        return "failed" if folder == self.config.folders.failed else "archive"

    def now(self) -> float:
        if self._clock is not None:
            return self._clock()
        assert self._loop is not None
        return self._loop.time()

    async def start(self) -> None:
        """Lock the inbox, start the observer, scan; a missing inbox pauses (and retries)."""
        self._loop = asyncio.get_running_loop()
        self._stopping.clear()
        for problem in await asyncio.to_thread(self._folder_problems):
            log.error("drop folder: %s", problem)
        for folder in (self.config.folders.archive, self.config.folders.failed):
            if not await asyncio.to_thread(folder_available, folder):
                self._wait_for(folder, str(FolderUnavailable(folder)))
        reason = await asyncio.to_thread(probe_inbox, self.inbox)
        if reason is None:
            await self._resume(raise_busy=True)
        else:
            await self._pause(reason)
        self._tasks = [
            asyncio.create_task(self._check_loop(), name="inbox-checker"),
            asyncio.create_task(self._intake_loop(), name="inbox-intake"),
            asyncio.create_task(self._health_loop(), name="inbox-health"),
        ]
        rescan = self.config.watch.rescan_seconds
        if rescan > 0:
            self.service.every(RESCAN_JOB, rescan, self.rescan)

    async def stop(self) -> None:
        """Finish the file in hand, stop watching, release the inbox lock."""
        self._stopping.set()
        self.service.cancel_every(RESCAN_JOB)
        intake_task = self._tasks[1] if len(self._tasks) > 1 else None
        for task in self._tasks:
            if task is not intake_task:
                task.cancel()
        if intake_task is not None:
            self._ready.put_nowait(Path())  # wake it: it sees `_stopping` and ends
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(intake_task), 30)
            intake_task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._stop_observer()
        await asyncio.to_thread(self.lock.release)

    def _folder_problems(self) -> list[str]:
        problems = []
        for name in ("archive", "failed"):
            folder: Path = getattr(self.config.folders, name)
            if folder.exists() and not os.access(folder, os.W_OK | os.X_OK):
                problems.append(
                    f"the {name} folder {folder} is not writable by this user: dropped files "
                    "cannot leave the inbox until it is (fix its permissions)"
                )
        return problems

    async def _resume(self, *, raise_busy: bool = False) -> bool:
        """(Re)start watching a reachable inbox; then scan it, since events were missed."""
        try:
            await asyncio.to_thread(self.lock.acquire)
        except InboxBusy as exc:
            if raise_busy:
                raise
            await self._pause(str(exc))
            return False
        except OSError as exc:
            await self._pause(f"cannot lock the inbox: {exc.strerror or exc}")
            return False
        await self._stop_observer()
        self._inbox_id = await asyncio.to_thread(_identity, self.inbox)
        assert self._loop is not None
        try:
            self._observer, self.observer_kind = await asyncio.to_thread(
                start_observer,
                self.inbox,
                self._loop,
                self._on_raw_event,
                self.config.watch.poll_interval_seconds,
                max(1.0, self.settle),
                self._observer_factory,
            )
        except OSError as exc:
            await self._pause(f"cannot watch the inbox: {exc.strerror or exc}")
            return False
        if self.paused_reason is not None:
            log.warning("the inbox %s is back: watching again", self.inbox)
        self.paused_reason = None
        log.info("watching %s (%s, settle %gs)", self.inbox, self.observer_kind, self.settle)
        await self.rescan()
        return True

    async def _pause(self, reason: str) -> None:
        """Stop taking files; nothing pending is treated as deleted, only forgotten."""
        if reason != self.paused_reason:
            log.warning(
                "%s: the drop folder is paused and retries every %gs", reason, self.health_seconds
            )
        self.paused_reason = reason
        self.tracker.clear()
        await asyncio.to_thread(self.lock.release)  # a hung share must not block the loop

    def _wait_for(self, folder: Path, reason: str, path: Path | None = None) -> None:
        """Files that must move to `folder` stay in the inbox, untouched, until the health
        check sees it again; said once, not for every file or retry."""
        if path is not None and (path, reason) not in self._errors_logged:
            self._errors_logged.add((path, reason))
            log.info(
                "%s stays in the inbox until the %s folder is available",
                path,
                self._folder_name(folder),
            )
        if folder not in self.waiting:
            log.warning(
                "%s: dropped files that must move to the %s folder stay in the inbox; "
                "looked for again every %gs",
                reason,
                self._folder_name(folder),
                self.health_seconds,
            )
        self.waiting[folder] = reason

    async def _look_for_waited_folders(self) -> None:
        """The folders intake waits for that are back: the files that waited are scanned."""
        back = [f for f in list(self.waiting) if await asyncio.to_thread(folder_available, f)]
        for folder in back:
            reason = self.waiting.pop(folder)
            self._errors_logged = {e for e in self._errors_logged if e[1] != reason}
            log.warning(
                "the %s folder %s is available again: taking the files that waited",
                self._folder_name(folder),
                folder,
            )
        if back:
            await self.rescan()

    async def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            await asyncio.to_thread(stop_observer, observer)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_seconds)
            reason = await asyncio.to_thread(probe_inbox, self.inbox)
            if reason is not None:
                if self.paused_reason is None:
                    await self._stop_observer()
                await self._pause(reason)
            elif self.paused_reason is not None:
                await self._resume()
            elif self._observer is not None and not self._observer.is_alive():
                log.warning("the inbox observer stopped: starting it again")
                await self._resume()
            elif await asyncio.to_thread(_identity, self.inbox) != self._inbox_id:
                # Replaced between two checks (a remount, a re-created folder): the
                # observer and the lock still hold the old folder.
                log.warning("the inbox %s was replaced: watching the new folder", self.inbox)
                self.tracker.clear()
                await asyncio.to_thread(self.lock.release)
                await self._resume()
            if self.waiting:
                await self._look_for_waited_folders()

    # -- events and scans ---------------------------------------------------------------

    def _on_raw_event(self, raw: RawEvent) -> None:
        """On the loop: note which paths changed; the checker decides the rest."""
        kind, src, dest, is_dir = raw
        now = self.now()
        if kind in ("moved", "deleted"):
            self.tracker.forget(Path(src))
        target = dest if kind == "moved" else (None if kind == "deleted" else src)
        if target is None or self.paused_reason is not None:
            return
        path = Path(target)
        if is_dir:
            if kind in ("created", "moved"):  # a folder moved in brings its files along
                task = asyncio.ensure_future(self._scan_folder(path))
                self._side_tasks.add(task)
                task.add_done_callback(self._side_tasks.discard)
            return
        if self._wanted(path):
            self.tracker.event(path, now)
            self._wake.set()

    def _wanted(self, path: Path) -> bool:
        try:
            relative = path.relative_to(self.inbox)
        except ValueError:
            return False
        return not self.intake.rules.is_ignored(PurePosixPath(relative.as_posix()))

    async def _scan_folder(self, folder: Path) -> None:
        try:
            found = await asyncio.to_thread(scan_inbox, folder, self.intake.rules)
        except OSError:
            return
        now = self.now()
        for path in found:
            if self._wanted(path):
                self.tracker.event(path, now)
        self._wake.set()

    async def rescan(self) -> None:
        """A full scan: at start, on resume and every `rescan_seconds` (events get lost)."""
        if self.paused_reason is not None or self._rescanning:
            return
        self._rescanning = True
        try:
            found = await asyncio.to_thread(scan_inbox, self.inbox, self.intake.rules)
        except OSError as exc:
            await self._stop_observer()
            await self._pause(f"the inbox {self.inbox} cannot be listed: {exc.strerror or exc}")
            return
        finally:
            self._rescanning = False
        now = self.now()
        for path in found:
            if path not in self.tracker and path not in self._in_flight:
                self.tracker.event(path, now)
        if found:
            log.debug("inbox scan found %d file(s)", len(found))
        self._wake.set()

    # -- deciding readiness -------------------------------------------------------------

    async def _check_loop(self) -> None:
        """Stat what is due (off the loop) and hand stable files to intake.

        It sleeps until the earliest settle deadline (never longer than settle/4, so a
        growing file is noticed early) or until an event arrives; with nothing pending
        it sleeps until an event arrives.
        """
        while True:
            now = self.now()
            due = self.tracker.next_check(now)
            self._wake.clear()
            if due is None:
                await self._wake.wait()
                continue
            if due > now:
                cap = max(0.005, self.settle / 4)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(due - now, cap))
                continue
            paths = self.tracker.to_check(now)
            results = await asyncio.to_thread(stat_signatures, paths)
            now = self.now()
            for path, signature in results:
                if self.tracker.observe(path, signature, now):
                    if path in self._in_flight:
                        self.tracker.event(path, now)  # look again once intake is done
                    else:
                        self._in_flight.add(path)
                        self._ready.put_nowait(path)

    async def _intake_loop(self) -> None:
        while not self._stopping.is_set():
            first = await self._ready.get()
            batch = [first]
            while len(batch) < BATCH and not self._ready.empty():
                batch.append(self._ready.get_nowait())
            batch = [p for p in batch if p != Path()]
            if not batch or self._stopping.is_set():
                break
            try:
                outcomes = await self._process_batch(batch)
            finally:
                self._in_flight.difference_update(batch)
            now = self.now()
            for outcome in outcomes:
                if outcome.kind == "unstable":
                    self.tracker.event(outcome.path, now)
                    self._wake.set()
                elif outcome.kind == "waiting" and outcome.waits_for is not None:
                    self._wait_for(outcome.waits_for, outcome.message, outcome.path)
            self.outcomes = (self.outcomes + outcomes)[-2000:]

    async def _process_batch(self, batch: list[Path]) -> list[Outcome]:
        """One file after the other (their disk work on worker threads), stopping early
        on shutdown."""
        outcomes = []
        for path in batch:
            if self._stopping.is_set():
                break
            try:
                outcomes.append(await self.intake.process(path))
            except OSError as exc:
                self._log_once(path, f"cannot move it out of the inbox: {exc}")
            except Exception:
                log.exception("unexpected error taking %s; it stays in the inbox", path)
        return outcomes

    def _log_once(self, path: Path, message: str) -> None:
        """A file that cannot be moved stays; the rescan retries it without log spam."""
        if (path, message) not in self._errors_logged:
            self._errors_logged.add((path, message))
            log.error(
                "%s: %s; it stays in the inbox and is retried at the next rescan", path, message
            )


def _identity(folder: Path) -> tuple[int, int] | None:
    """Which folder a path names now: (st_dev, st_ino), or None when it cannot be seen."""
    try:
        info = os.stat(folder)
    except OSError:
        return None
    return info.st_dev, info.st_ino
