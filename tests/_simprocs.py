"""Simulated ACE-Step servers as real processes on loopback ports, for the pool tests: each
can be killed (its in-memory tasks die with it, as a real server's do) and started again
on the same port, and its counters are read through `/_sim/stats`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SimProcess:
    """`bygheartd simulator --backend acestep --workers 1` in a child process."""

    def __init__(
        self,
        audio_dir: Path,
        *,
        latency: float,
        port: int | None = None,
        api_key: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.api_key = api_key  # None: it asks for no key (as ACE-Step without one set)
        self.audio_dir = audio_dir
        self.latency = latency
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, latency: float | None = None, timeout: float = 20) -> SimProcess:
        if latency is not None:
            self.latency = latency
        self.audio_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bygheartd",
                "simulator",
                "--backend",
                "acestep",
                "--workers",
                "1",
                "--latency",
                str(self.latency),
                "--seed",
                "1",
                "--audio-dir",
                str(self.audio_dir),
                "--audio-scale",  # short takes: the tests are about the pool, not audio
                "0.02",
                "--port",
                str(self.port),
                *(["--api-key", self.api_key] if self.api_key else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulator on port {self.port} exited: {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"simulator on port {self.port} did not start")

    def kill(self) -> None:
        """SIGKILL: every task in memory is gone, like a crashed or restarted server."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(self.url + "/_sim/stats", timeout=5).json()
        return data

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return httpx.post(self.url + path, json=body or {}, timeout=5).json()

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
