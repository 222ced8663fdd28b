"""The inbox as the watcher sees it: its lock file, full scans and the watchdog observer.

Everything here runs on threads (watchdog's, or `asyncio.to_thread`): events reach the
event loop only through `loop.call_soon_threadsafe`, scans and stats never block it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from bygheartd.watch.errors import InboxBusy
from bygheartd.watch.ignore import IgnoreRules
from bygheartd.watch.stability import Signature

log = logging.getLogger(__name__)

LOCK_NAME = ".bygheartd.lock"  # a dotfile: the ignore rules skip it
INOTIFY_LIMIT_ERRNOS = (errno.ENOSPC, errno.EMFILE)  # 28: watches, 24: instances

# (event type, path, destination of a move or None, is a directory)
RawEvent = tuple[str, str, str | None, bool]
ObserverFactory = Callable[[float], BaseObserver]


class InboxLock:
    """`inbox/.bygheartd.lock` under `flock`: two daemons never consume one inbox.

    The lock dies with its process, so a `kill -9` leaves nothing stale behind.
    """

    def __init__(self, inbox: Path, state_dir: Path | None = None) -> None:
        self.path = inbox / LOCK_NAME
        self.state_dir = state_dir
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise `InboxBusy` naming the holder; OSError if unreachable."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise InboxBusy(
                f"the inbox {self.path.parent} is already watched by another bygheartd "
                f"(pid {holder.get('pid', '?')}, state folder {holder.get('state', '?')}): "
                "two daemons must not consume one inbox; stop the other one or give this one "
                "another [folders] inbox"
            ) from None
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "since": time.time(), "state": str(self.state_dir or "?")}
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(fd)


def _read_holder(fd: int) -> dict[str, object]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def scan_inbox(inbox: Path, rules: IgnoreRules) -> list[Path]:
    """Every file in the inbox that is not ignored; ignored folders are not entered.

    Raises OSError when the inbox itself cannot be listed (a share that went away), so
    the caller pauses instead of thinking every file was deleted.
    """
    os.listdir(inbox)  # fail loudly for the root; subfolder errors are only logged
    found: list[Path] = []
    for root, dirs, files in os.walk(inbox, onerror=_walk_error):
        base = Path(root)
        rel_root = PurePosixPath(base.relative_to(inbox).as_posix())
        dirs[:] = [d for d in dirs if not rules.skips_folder(_join(rel_root, d))]
        found += [base / f for f in files if not rules.is_ignored(_join(rel_root, f))]
    return found


def _join(root: PurePosixPath, name: str) -> PurePosixPath:
    return PurePosixPath(name) if root == PurePosixPath(".") else root / name


def _walk_error(exc: OSError) -> None:
    log.warning("cannot list %s: %s", exc.filename, exc.strerror)


def stat_signatures(paths: list[Path]) -> list[tuple[Path, Signature | None]]:
    """(size, mtime_ns) for each path (lstat: links are not followed); None when gone."""
    out: list[tuple[Path, Signature | None]] = []
    for path in paths:
        try:
            info = os.lstat(path)
        except OSError:
            out.append((path, None))
        else:
            out.append((path, Signature(info.st_size, info.st_mtime_ns)))
    return out


def probe_inbox(inbox: Path) -> str | None:
    """None when the inbox is usable; else why not (missing, not a folder, no access)."""
    try:
        info = os.stat(inbox)
    except FileNotFoundError:
        return f"the inbox {inbox} does not exist (an unmounted share?)"
    except OSError as exc:
        return f"the inbox {inbox} cannot be reached: {exc.strerror or exc}"
    if not os.path.isdir(inbox) or info.st_nlink == 0:
        return f"the inbox {inbox} is not a folder"
    if not os.access(inbox, os.R_OK | os.W_OK | os.X_OK):
        return f"the inbox {inbox} is not readable and writable by this user"
    try:
        with os.scandir(inbox) as entries:
            next(entries, None)
    except OSError as exc:
        return f"the inbox {inbox} cannot be listed: {exc.strerror or exc}"
    return None


class _Forwarder(FileSystemEventHandler):
    """Runs on watchdog's thread: hands each event to the loop and does nothing else."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sink: Callable[[RawEvent], None]) -> None:
        self._loop = loop
        self._sink = sink

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        dest = os.fsdecode(event.dest_path) if event.dest_path else None
        raw: RawEvent = (event.event_type, os.fsdecode(event.src_path), dest, event.is_directory)
        with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
            self._loop.call_soon_threadsafe(self._sink, raw)


def default_observer(poll_interval: float) -> BaseObserver:
    """Native events (inotify) by default; polling for network shares, where none arrive."""
    if poll_interval > 0:
        return PollingObserver(timeout=poll_interval)
    return Observer()


def start_observer(
    inbox: Path,
    loop: asyncio.AbstractEventLoop,
    sink: Callable[[RawEvent], None],
    poll_interval: float,
    fallback_interval: float,
    factory: ObserverFactory = default_observer,
) -> tuple[BaseObserver, str]:
    """Start an observer on the inbox; fall back to polling when inotify runs out.

    Returns the observer and a description ("native", "polling every 2s").
    """
    handler = _Forwarder(loop, sink)
    observer = factory(poll_interval)
    try:
        observer.schedule(handler, str(inbox), recursive=True)
        observer.start()
    except OSError as exc:
        if exc.errno not in INOTIFY_LIMIT_ERRNOS:
            raise
        stop_observer(observer)
        what = "watches" if exc.errno == errno.ENOSPC else "instances"
        log.error(
            "the system ran out of inotify %s (%s) watching %s: raise the limit with "
            "`sysctl fs.inotify.max_user_watches=524288` (and fs.inotify.max_user_instances), "
            "or set [watch] poll_interval_seconds > 0 to poll instead; polling every %gs now",
            what,
            exc.strerror or exc,
            inbox,
            fallback_interval,
        )
        observer = PollingObserver(timeout=fallback_interval)
        observer.schedule(handler, str(inbox), recursive=True)
        observer.start()
        return observer, f"polling every {fallback_interval:g}s (inotify limit reached)"
    kind = f"polling every {poll_interval:g}s" if poll_interval > 0 else "native events"
    return observer, kind


def stop_observer(observer: BaseObserver, timeout: float = 5.0) -> None:
    with contextlib.suppress(Exception):
        observer.stop()
    if observer.is_alive():
        observer.join(timeout)
