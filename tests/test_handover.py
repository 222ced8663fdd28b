"""Hand-over: an engine inside `submit --wait` gives the lock to a starting `bygheartd run`,
and the waiting command still sees its song finish (DESIGN.md, "Hand-over").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import TEST_KEY, MakeConfig

from bygheartd.engine.lock import EngineLock
from bygheartd.simulator import RunningSimulator

SONG = "---\ntitle: Hand Over\nstyle: calm piano\nmodel: bygheart-melody-fast\n---\n[Verse]\nla\n"


def _env() -> dict[str, str]:
    return {**os.environ, "BYGHEART_API_KEY": TEST_KEY, "BYGHEARTD_LOAD_PLUGINS": ""}


def _wait_for(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_submit_wait_hands_the_engine_to_a_starting_daemon(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    simulator.set_faults(latency=2.0)
    config = make_config(simulator)
    cfg = str(config.source_path)
    song = tmp_path / "hand-over.txt"
    song.write_text(SONG)
    lock = EngineLock(config.state_dir)
    waiting = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bygheartd",
            "submit",
            str(song),
            "--wait",
            "--json",
            "--config",
            cfg,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    daemon = None
    try:
        _wait_for(lambda: (lock.holder() or {}).get("owner") == "bygheartd submit --wait")
        _wait_for(lambda: simulator.sim.stats.submits == 1)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "bygheartd", "run", "--config", cfg],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        _wait_for(lambda: (lock.holder() or {}).get("owner") == "bygheartd run")
        out, err = waiting.communicate(timeout=30)
        assert waiting.returncode == 0, err
        [record] = json.loads(out)
        assert record["status"] == "done"
        assert simulator.sim.stats.submits == 1  # handed over, never resubmitted
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            _, daemon_err = daemon.communicate(timeout=30)
            assert daemon.returncode == 0, daemon_err
