"""What bygheartd records agrees with the disk after plugins ran, a plugin cannot stop the
daemon whatever it raises, and a fixed key is used at once (issue 11, points 1, 3 and 5).

Real simulator on loopback, real plugins from a folder, `bygheartd run` as a child process
where the promise is about the daemon.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from _daemon import Daemon, Jobs, cli, list_json, submit, wait_for, write_songs

from bygheartd.config import Config, parse_config
from bygheartd.jobs import JobStatus
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator, SimulatorSettings

MakeConfig = Callable[..., Config]
anyio = pytest.mark.anyio

SONG = """---
title: Record Song
style: bright synth pop, female vocal
model: bygheart-melody-fast
duration: 30
takes: 2
---
[Verse]
the record and the disk
[Chorus]
agree on every byte
"""

# Writes a note beside the takes and returns it; `sweeper` (after it by name) removes it.
EXTRA = """
from bygheartd import hookimpl

@hookimpl
def on_complete(job, files):
    note = files[0].with_name(files[0].stem + ".notes.txt")
    note.write_text("liner notes")
    return [note]
"""
SWEEPER = """
from bygheartd import hookimpl

@hookimpl
def on_complete(job, files):
    for path in files:
        if path.name.endswith(".notes.txt"):
            path.unlink()
"""


@pytest.fixture
def sim_settings() -> SimulatorSettings:
    return SimulatorSettings(latency=0.2, audio_scale=0.05, seed=21)


class Receiver(ThreadingHTTPServer):
    """A webhook receiver that notes, as each POST arrives, whether the sidecar exists."""

    def __init__(self, sidecar: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.sidecar = sidecar
        self.events: list[tuple[dict[str, Any], bool]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.events.append((json.loads(body), self.server.sidecar.exists()))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver_for(tmp_path: Path) -> Iterator[Callable[[Path], Receiver]]:
    servers: list[Receiver] = []

    def start(sidecar: Path) -> Receiver:
        server = Receiver(sidecar)
        threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@anyio
async def test_every_record_describes_the_files_as_plugins_left_them(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    receiver_for: Callable[[Path], Receiver],
) -> None:
    monkeypatch.delenv("BYGHEARTD_LOAD_PLUGINS")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "extra.py").write_text(EXTRA)
    (folder / "sweeper.py").write_text(SWEEPER)
    config = make_config(simulator, plugins={"enabled": ["tags", "webhook"]})
    receiver = receiver_for(config.folders.output / "record-song.json")
    raw = config.as_record()
    raw["plugins"]["paths"] = [str(folder)]
    raw["plugins"]["webhook"] = {"url": receiver.url}
    config = parse_config(raw)
    song = tmp_path / "record-song.txt"
    song.write_text(SONG)
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        job = await runtime.service.submit_file(song)
        job = await runtime.service.wait(job.id, timeout=60)
        for _ in range(400):  # the webhook is sent by a task of this loop: wait async
            if receiver.events:
                break
            await asyncio.sleep(0.05)
    assert job.status is JobStatus.DONE, job.reason

    # The tags plugin rewrote both takes: the store describes them as they are now.
    assert [f.path.name for f in job.files] == ["record-song.mp3", "record-song.take2.mp3"]
    for f in job.files:
        assert (f.size, f.sha256) == (f.path.stat().st_size, digest(f.path))
    # ... and so does the sidecar.
    sidecar = json.loads((config.folders.output / "record-song.json").read_text())
    on_disk = {
        (f["path"], f["size"], f["sha256"])
        for f in sidecar["files"]
        if (config.folders.output / f["path"]).exists()
    }
    assert on_disk == {(f.path.name, f.size, f.sha256) for f in job.files}
    assert len(sidecar["files"]) == 2
    # The note one plugin added and another removed is not handed out as a path.
    assert not list(config.folders.output.glob("*.notes.txt"))
    assert any("record-song.notes.txt was removed" in w for w in job.warnings), job.warnings
    assert any("record-song.notes.txt was removed" in w for w in sidecar["warnings"])

    # The webhook's `complete` went out after the sidecar, with the finished record.
    [(payload, sidecar_existed)] = receiver.events
    assert payload["event"] == "complete" and sidecar_existed
    assert payload["job"]["status"] == "done"
    assert [f["path"] for f in payload["job"]["files"]] == [str(f.path) for f in job.files]


PANICKING = """
from bygheartd import hookimpl

@hookimpl
def after_submit(job, task_id):
    raise KeyboardInterrupt("a plugin pressed Ctrl-C")

@hookimpl
async def on_complete(job, files):
    raise SystemExit(3)
"""


def test_a_plugin_raising_keyboardinterrupt_or_systemexit_does_not_stop_the_daemon(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "panicking.py").write_text(PANICKING)
    config = make_config(
        simulator,
        plugins={"enabled": [], "paths": [str(folder)]},
        queue={"poll_min_seconds": 0.1, "poll_max_seconds": 0.3},
    )
    env = {k: v for k, v in os.environ.items() if k != "BYGHEARTD_LOAD_PLUGINS"}
    daemon = Daemon(tmp_path / "config.toml", tmp_path / "daemon.log", env=env)
    jobs = Jobs(config)
    try:
        daemon.start()
        ids = [r["id"] for r in submit(daemon.config_path, write_songs(tmp_path / "s", 2))]
        wait_for(lambda: jobs.all_in(ids, {"done", "failed"}), what="both jobs", proc=daemon)
        assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
        records = list_json(daemon.config_path)
        assert [r["status"] for r in records] == ["done", "done"]
        assert all(r["task_id"] for r in records)  # stored before any hook could fail
        for record in records:
            show = json.loads(cli(daemon.config_path, "show", "--json", record["id"]).stdout)
            events = " ".join(f"{e['event']} {e['reason']}" for e in show["history"])
            assert "plugin panicking after_submit raised KeyboardInterrupt" in events
            assert any("on_complete raised SystemExit" in w for w in record["warnings"])
    finally:
        daemon.stop()
        jobs.close()


def _key_daemon(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path, key: str
) -> tuple[Path, Daemon, Jobs]:
    key_file = tmp_path / "api-key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    config = make_config(simulator, api={"api_key_file": str(key_file)})
    env = {k: v for k, v in os.environ.items() if k != "BYGHEART_API_KEY"}
    daemon = Daemon(tmp_path / "config.toml", tmp_path / "daemon.log", env=env)
    return key_file, daemon, Jobs(config)


def _held_for_the_key(jobs: Jobs, ids: list[str]) -> bool:
    return jobs.all_in(ids, {"held"})


def test_a_key_fixed_while_stopped_is_used_as_soon_as_the_daemon_starts(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path, api_key: str
) -> None:
    key_file, daemon, jobs = _key_daemon(simulator, make_config, tmp_path, "not-a-bygheart-key-77")
    try:
        daemon.start()
        ids = [r["id"] for r in submit(daemon.config_path, write_songs(tmp_path / "s", 1))]
        wait_for(lambda: _held_for_the_key(jobs, ids), what="the auth hold", proc=daemon)
        [held] = list_json(daemon.config_path)
        assert "key" in held["reason"].lower()
        daemon.stop()
        key_file.write_text(api_key + "\n")  # the user fixes the key and restarts
        daemon.start()
        # Without the fix the hold lasts 10 minutes from the 401: far past this wait.
        wait_for(lambda: jobs.all_in(ids, {"done"}), timeout=30, what="done", proc=daemon)
    finally:
        daemon.stop()
        jobs.close()


def test_a_key_file_rewritten_while_running_releases_the_held_jobs(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path, api_key: str
) -> None:
    key_file, daemon, jobs = _key_daemon(simulator, make_config, tmp_path, "not-a-bygheart-key-77")
    try:
        daemon.start()
        ids = [r["id"] for r in submit(daemon.config_path, write_songs(tmp_path / "s", 2))]
        wait_for(lambda: _held_for_the_key(jobs, ids), what="the auth holds", proc=daemon)
        key_file.write_text(api_key + "\n")  # no SIGHUP, no restart
        wait_for(lambda: jobs.all_in(ids, {"done"}), timeout=30, what="done", proc=daemon)
        assert "the API key changed" in daemon.log()
        assert api_key not in daemon.log() and "not-a-bygheart-key-77" not in daemon.log()
    finally:
        daemon.stop()
        jobs.close()
