"""Subprocess helpers for tests of `bygheartd run` as users run it: the daemon in a child
process with its stderr in a file, the CLI, song files, and cheap reads of the job store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bygheartd.config import Config
from bygheartd.store.store import Store

READY_LINE = "bygheartd is running"


class Daemon:
    """`python -m bygheartd run` in a child process, its stderr in a file we can read."""

    def __init__(self, config_path: Path, log_path: Path, env: dict[str, str] | None = None):
        self.config_path = config_path
        self.log_path = log_path
        self.env = env if env is not None else dict(os.environ)
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0

    def start(self, *, wait_ready: bool = True) -> Daemon:
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bygheartd", "--config", str(self.config_path), "run"],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=self.env,
            )
        if wait_ready:
            wait_for(lambda: READY_LINE in self.log(), what="the daemon to be ready", proc=self)
        return self

    def log(self) -> str:
        """What this run (not earlier ones) wrote on stderr."""
        with self.log_path.open("rb") as fh:
            fh.seek(self._offset)
            return fh.read().decode("utf-8", "replace")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Clean-up: SIGTERM, then SIGKILL if it does not go in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def wait_for(
    condition: Callable[[], object],
    *,
    what: str,
    timeout: float = 15.0,
    proc: Daemon | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.proc is not None and proc.proc.poll() is not None:
            raise AssertionError(
                f"daemon exited ({proc.proc.returncode}) waiting for {what}:\n{proc.log()}"
            )
        if time.monotonic() > deadline:
            log = proc.log() if proc is not None else ""
            raise AssertionError(f"timed out waiting for {what}\n{log}")
        time.sleep(0.02)


def cli(config_path: Path, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bygheartd", "--config", str(config_path), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


def list_json(config_path: Path) -> list[dict[str, Any]]:
    done = cli(config_path, "list", "--json", "--all")
    assert done.returncode == 0, done.stderr
    records: list[dict[str, Any]] = json.loads(done.stdout)
    return records


def write_songs(folder: Path, count: int, *, tag: str = "crash") -> list[Path]:
    """Song files whose style carries a unique marker, to find each one on the server."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        path = folder / f"{tag}-{n}.txt"
        path.write_text(
            "---\n"
            f"title: {tag.title()} Song {n}\n"
            f"style: synth pop, marker-{tag}-{n}\n"
            "model: bygheart-melody-fast\n"
            "duration: 10\n"
            "---\n"
            "[Verse]\nla la la\n[Chorus]\noh oh oh\n",
            encoding="utf-8",
        )
        paths.append(path)
    return paths


def submit(config_path: Path, files: list[Path]) -> list[dict[str, Any]]:
    done = cli(config_path, "submit", "--json", *map(str, files))
    assert done.returncode == 0, done.stderr
    records: list[dict[str, Any]] = json.loads(done.stdout)
    return records


class Jobs:
    """Reads job statuses straight from the store: cheap enough to poll every few ms."""

    def __init__(self, config: Config) -> None:
        self.store = Store.open(config.state_dir)

    def statuses(self, ids: list[str]) -> list[str]:
        return [self.store.get(i).status.value for i in ids]

    def all_in(self, ids: list[str], wanted: set[str]) -> bool:
        return all(s in wanted for s in self.statuses(ids))

    def close(self) -> None:
        self.store.close()
