"""`bygheartd run` as a real process: drops become audio or failed notes, and a SIGKILL in
the middle of a burst never makes a second job for any file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bygheartd.config import Config
from bygheartd.simulator import RunningSimulator

SONG = "---\ntitle: {title}\nmodel: bygheart-melody-fast\nduration: 10\n---\n[Verse]\nla la {n}\n"


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Daemon:
    def __init__(self, config: Config, tmp_path: Path) -> None:
        self.config = config
        self.config_path = tmp_path / "config.toml"
        self.log = tmp_path / "daemon.log"
        self.env = {**os.environ, "BYGHEARTD_LOAD_PLUGINS": ""}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bygheartd", "run", "--config", str(self.config_path)],
                env=self.env,
                stdout=log,
                stderr=log,
            )
        lock = self.config.folders.inbox / ".bygheartd.lock"
        wait_for(lambda: _lock_pid(lock) == self.proc.pid, 15, "the daemon to watch the inbox")  # type: ignore[union-attr]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(20)
        self.proc = None

    def jobs(self) -> list[dict[str, Any]]:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bygheartd",
                "list",
                "--json",
                "--all",
                "--config",
                str(self.config_path),
            ],
            env=self.env,
            capture_output=True,
            check=True,
        )
        records: list[dict[str, Any]] = json.loads(out.stdout)
        return records


def _lock_pid(lock: Path) -> int | None:
    try:
        return int(json.loads(lock.read_text() or "{}").get("pid", 0)) or None
    except (OSError, ValueError):
        return None


@pytest.fixture
def daemon(make_config: Any, simulator: RunningSimulator, tmp_path: Path) -> Iterator[Daemon]:
    config = make_config(simulator, watch={"settle_seconds": 0.2})
    d = Daemon(config, tmp_path)
    yield d
    d.stop(signal.SIGKILL)


def test_run_turns_a_valid_drop_into_audio_and_an_invalid_one_into_a_note(daemon: Daemon) -> None:
    daemon.start()
    folders = daemon.config.folders
    (folders.inbox / "good.txt").write_text(SONG.format(title="Good Song", n=1))
    (folders.inbox / "bad.txt").write_text("---\nbpm: 999\n---\nla\n")
    sidecar = folders.output / "good-song.json"
    wait_for(sidecar.exists, 30, "the sidecar")
    data = json.loads(sidecar.read_text())
    assert data["status"] == "done" and data["source"] == "good.txt"
    assert data["archived_as"] == "good.txt"
    audio = [
        f for f in folders.output.iterdir() if f.name.startswith("good-song.") and f != sidecar
    ]
    assert audio and audio[0].stat().st_size > 0
    note = folders.failed / "bad.txt.error.txt"
    wait_for(note.exists, 10, "the error note")
    assert "bpm 999 is above the maximum of 200" in note.read_text()
    assert sorted(os.listdir(folders.inbox)) == [".bygheartd.lock"]
    daemon.stop()


def test_sigkill_in_the_middle_of_a_burst_never_makes_a_second_job(daemon: Daemon) -> None:
    folders = daemon.config.folders
    names = [f"burst-{n:03d}.txt" for n in range(120)]
    bad = {names[n] for n in range(0, 120, 10)}
    daemon.start()
    for n, name in enumerate(names):
        text = "---\ntakes: 99\n---\nla\n" if name in bad else SONG.format(title=name, n=n)
        (folders.inbox / name).write_text(text)
        if n == 60:
            time.sleep(0.3)  # let the first half settle and start being taken
    wait_for(lambda: len(os.listdir(folders.archive)) >= 10, 20, "some files to be archived")
    daemon.stop(signal.SIGKILL)
    left = [n for n in os.listdir(folders.inbox) if not n.startswith(".")]
    assert left, "the burst finished before the kill: nothing was tested"
    daemon.start()

    def settled() -> bool:
        return not [n for n in os.listdir(folders.inbox) if not n.startswith(".")]

    wait_for(settled, 30, "the inbox to empty after the restart")
    daemon.stop()
    jobs = daemon.jobs()
    sources = [job["source"] for job in jobs]
    assert sorted(sources) == sorted(set(names) - bad), "each valid file has exactly one job"
    archived = set(os.listdir(folders.archive))
    failed = {n for n in os.listdir(folders.failed) if not n.endswith(".error.txt")}
    assert archived | failed == set(names)
    # A job killed mid-submit fails as "outcome unknown" (never paid twice) and its file is
    # put in failed/ beside the archived copy; every other file is in exactly one place.
    cut_off = {
        job["source"]
        for job in jobs
        if job["status"] == "failed" and "submission outcome unknown" in job["reason"]
    }
    assert archived & failed == cut_off
    assert failed - cut_off == bad


def test_a_second_daemon_on_the_same_inbox_refuses_clearly(daemon: Daemon, tmp_path: Path) -> None:
    daemon.start()
    other = tmp_path / "other.toml"
    state = str(daemon.config.state_dir)
    other.write_text(daemon.config_path.read_text().replace(state, state + "-other"))
    result = subprocess.run(
        [sys.executable, "-m", "bygheartd", "run", "--config", str(other)],
        env=daemon.env,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert b"already watched by another bygheartd" in result.stderr
    assert daemon.proc is not None
    assert f"pid {daemon.proc.pid}".encode() in result.stderr
