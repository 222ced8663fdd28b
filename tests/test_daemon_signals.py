"""`bygheartd run` as systemd sees it: SIGHUP reloads (good and broken configs) and the
sd_notify conversation (READY, STATUS, WATCHDOG, RELOADING, STOPPING) over a real socket.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _daemon import READY_LINE, Daemon, Jobs, list_json, submit, wait_for, write_songs
from test_crash import QUEUE, MakeConfig

from bygheartd.simulator import RunningSimulator, SimulatorSettings


@pytest.fixture
def sim_settings() -> SimulatorSettings:
    return SimulatorSettings(latency=0.5, audio_scale=0.05, seed=5)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    running = Daemon(tmp_path / "config.toml", tmp_path / "daemon.log")
    try:
        yield running
    finally:
        running.stop()


# -- SIGHUP ------------------------------------------------------------------------------


def test_sighup_with_a_changed_setting_logs_the_change_and_keeps_every_job(
    simulator: RunningSimulator, make_config: MakeConfig, daemon: Daemon, tmp_path: Path
) -> None:
    config = make_config(simulator, queue=QUEUE)
    simulator.set_faults(latency=1.5)
    daemon.start()
    jobs = Jobs(config)
    try:
        ids = [r["id"] for r in submit(daemon.config_path, write_songs(tmp_path / "s", 2))]
        wait_for(lambda: jobs.all_in(ids, {"running"}), what="running", proc=daemon)
        make_config(
            simulator, queue={**QUEUE, "poll_max_seconds": 0.4}, watch={"rescan_seconds": 99}
        )
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: "reloaded config" in daemon.log(), what="the reload", proc=daemon)
        log = daemon.log()
        assert "these changes wait for a restart: watch.rescan_seconds" in log
        # Said once: the applied list names only what was applied.
        assert "reloaded config: queue.poll_max_seconds\n" in log + "\n", log
        wait_for(lambda: jobs.all_in(ids, {"done", "failed"}), what="the jobs", proc=daemon)
    finally:
        jobs.close()
    assert [r["status"] for r in list_json(daemon.config_path)] == ["done", "done"]
    assert simulator.sim.stats.submits == 2


def test_sighup_rereads_the_key_file_and_releases_jobs_held_for_a_bad_key(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    daemon: Daemon,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BYGHEART_API_KEY")
    key_file = tmp_path / "api-key"
    key_file.write_text("bgh_free_tier_key_0001\n")  # the free plan: 403 pro_tier_required
    config = make_config(simulator, queue=QUEUE, api={"api_key_file": str(key_file)})
    daemon.env = dict(os.environ)
    daemon.start()
    jobs = Jobs(config)
    try:
        [job_id] = [r["id"] for r in submit(daemon.config_path, write_songs(tmp_path / "s", 1))]
        wait_for(lambda: jobs.statuses([job_id]) == ["held"], what="an auth hold", proc=daemon)
        key_file.write_text("bgh_pro_second_key_0002\n")
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: "reloaded config" in daemon.log(), what="the reload", proc=daemon)
        wait_for(lambda: jobs.statuses([job_id]) == ["done"], what="the job", proc=daemon)
    finally:
        jobs.close()
    log = daemon.log()
    assert "key re-read" in log
    assert "bgh_pro_second_key_0002" not in log and "bgh_free_tier_key_0001" not in log
    assert simulator.sim.stats.submits == 1  # the 403 created nothing; one real submit


def test_sighup_reloads_plugins_and_the_next_song_uses_them(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BYGHEARTD_LOAD_PLUGINS"}
    config = make_config(simulator, queue=QUEUE, plugins={"enabled": []})
    daemon = Daemon(tmp_path / "config.toml", tmp_path / "plugins.log", env=env)
    try:
        daemon.start()
        make_config(simulator, queue=QUEUE, plugins={"enabled": ["tags"]})
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: "plugins reloaded: tags" in daemon.log(), what="reload", proc=daemon)
        [record] = submit(daemon.config_path, write_songs(tmp_path / "s", 1))
        jobs = Jobs(config)
        try:
            wait_for(lambda: jobs.all_in([record["id"]], {"done"}), what="the song", proc=daemon)
        finally:
            jobs.close()
    finally:
        daemon.stop()
    from mutagen.id3 import ID3

    [song] = list(config.folders.output.glob("*.mp3"))
    assert str(ID3(str(song))["TIT2"])  # tagged by the plugin loaded on reload


def test_sighup_with_a_broken_config_refuses_and_keeps_running(
    simulator: RunningSimulator, make_config: MakeConfig, daemon: Daemon, tmp_path: Path
) -> None:
    config = make_config(simulator, queue=QUEUE)
    good = tmp_path / "good.toml"  # for `submit`, which needs a readable config
    good.write_text(daemon.config_path.read_text())
    daemon.start()
    daemon.config_path.write_text("[queue\npoll_min_seconds = = 1\n")  # not TOML
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in daemon.log(), what="the refusal", proc=daemon)
    assert "invalid TOML" in daemon.log()
    jobs = Jobs(config)
    try:  # the daemon still works with the config it had
        ids = [r["id"] for r in submit(good, write_songs(tmp_path / "s", 1))]
        wait_for(lambda: jobs.all_in(ids, {"done"}), what="the job", proc=daemon)
    finally:
        jobs.close()
    assert daemon.proc is not None and daemon.proc.poll() is None


# -- sd_notify ---------------------------------------------------------------------------


class NotifySocket:
    """A service manager's notify socket: collects every datagram on a thread."""

    def __init__(self) -> None:
        self.address = f"@bygheartd-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode().split("\n")))

    def lines(self) -> list[str]:
        return [line for _, message in list(self.messages) for line in message]

    def first(self, line: str) -> int:
        """Index of the first datagram that carries `line`."""
        return next(i for i, (_, m) in enumerate(list(self.messages)) if line in m)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def test_sd_notify_ready_status_watchdog_reloading_and_stopping(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    daemon: Daemon,
    notify_socket: NotifySocket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_config(simulator, queue=QUEUE)
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 0.2 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    daemon.env = dict(os.environ)
    daemon.start(wait_ready=False)
    wait_for(lambda: "READY=1" in notify_socket.lines(), what="READY=1", proc=daemon)
    # READY comes once the engine runs (its lock is taken) and the faces are up
    assert "engine started" in daemon.log()
    ready = notify_socket.messages[notify_socket.first("READY=1")][1]
    assert any(line.startswith("STATUS=jobs:") for line in ready)
    wait_for(
        lambda: notify_socket.lines().count("WATCHDOG=1") >= 3, what="watchdog pings", proc=daemon
    )

    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "RELOADING=1" in notify_socket.lines(), what="RELOADING=1", proc=daemon)
    reloading = notify_socket.messages[notify_socket.first("RELOADING=1")][1]
    assert any(line.startswith("MONOTONIC_USEC=") for line in reloading)
    wait_for(
        lambda: notify_socket.lines().count("READY=1") >= 2, what="READY after reload", proc=daemon
    )

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0
    lines = notify_socket.lines()
    assert "STOPPING=1" in lines
    assert notify_socket.first("STOPPING=1") > notify_socket.first("RELOADING=1")
    assert READY_LINE in daemon.log()
