"""The engine lock: exactly one engine per state folder, and who holds it.

An advisory `flock` dies with its process, so a `kill -9` never leaves a stale lock.
A `bygheartd run` that wants the lock leaves a hand-over request that an in-process
engine (MCP, `submit --wait`) honours at its next tick.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

LOCK_NAME = "engine.lock"
HANDOVER_NAME = "engine.handover"


class EngineRole(enum.StrEnum):
    """Who holds the engine lock; the value is what the lock file and `status` show."""

    DAEMON = "bygheartd run"
    SUBMIT = "bygheartd submit --wait"
    MCP = "bygheartd mcp"
    DEMO = "bygheartd demo"
    RESTORE = "bygheartd store restore"

    @property
    def keeps_engine(self) -> bool:
        """Only the daemon keeps the engine when asked for it; every other face hands it
        over to a daemon (DESIGN.md "Hand-over")."""
        return self is EngineRole.DAEMON


def holder_role(holder: dict[str, Any] | None) -> EngineRole | None:
    """The role in a `holder()` record, or None (free, or a holder this version does not
    know, such as an older release's)."""
    if holder is None:
        return None
    try:
        return EngineRole(str(holder.get("owner")))
    except ValueError:
        return None


class EngineLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self.handover_path = state_dir / HANDOVER_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self, role: EngineRole) -> bool:
        if self._fd is not None:
            return True
        # Its folder is made (never with its parents) before the store opens:
        # store/state_folder.py; mkdir here only when the parent exists.
        self.path.parent.mkdir(exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        info = {"pid": os.getpid(), "owner": role.value, "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock (pid, owner), or None when it is free."""
        if self._fd is not None:
            return {"pid": os.getpid(), "owner": "this process"}
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raw = os.pread(fd, 4096, 0)
                try:
                    info: dict[str, Any] = json.loads(raw or b"{}")
                except ValueError:
                    info = {}
                return info or {"pid": None, "owner": "unknown"}
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def request_handover(self) -> None:
        self.handover_path.parent.mkdir(exist_ok=True)
        self.handover_path.write_text(str(os.getpid()))

    def handover_requested(self) -> bool:
        return self.handover_path.exists()

    def clear_handover(self) -> None:
        self.handover_path.unlink(missing_ok=True)
