"""`bygheartd simulator` as a newcomer runs it: a port already taken is one clear line, and
the requests it answers stay out of the terminal unless asked for with --log-level debug."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest


def _simulator(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bygheartd", "simulator", "--audio-dir", str(tmp_path / "a"),
         "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


@pytest.mark.parametrize("command", [["bygheartd", "simulator"], ["bygheartd.simulator"]])
def test_a_port_in_use_is_one_clear_line_without_a_traceback(command: list[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", *command, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"port {port} on 127.0.0.1 is in use" in done.stderr
    assert "--port 0" in done.stderr


@pytest.mark.parametrize("level", ["info", "debug"])
def test_requests_are_logged_only_at_debug(tmp_path: Path, level: str) -> None:
    proc = _simulator(tmp_path, "--log-level", level)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert httpx.get(url + "/v1/models", timeout=10).status_code in (200, 401)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "bygheartd simulator: backend=" in err  # its own start line, whatever the level
    assert ('"GET /' in err) is (level == "debug"), err


@pytest.mark.parametrize("command", [["bygheartd", "simulator"], ["bygheartd.simulator"]])
def test_an_unknown_log_level_is_a_usage_error(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *command, "--port", "0", "--log-level", "bogus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "'bogus'" in done.stderr and "debug" in done.stderr
