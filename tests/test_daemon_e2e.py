"""The whole daemon as a user runs it: `python -m bygheartd run` in a child process, the
simulator in this one, real folders, the CLI, and the official MCP client over HTTP and stdio.

Each test checks one promise of README.md end to end; the unit tests check the parts.
"""

# mutagen has no annotations on its constructors and tag methods.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sys
import threading
import time as clock
from collections.abc import Iterator
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import httpx2
import pytest
from _daemon import Daemon, Jobs, cli, list_json, submit, wait_for
from conftest import TEST_KEY, write_config
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mutagen.id3 import ID3

from bygheartd.config import Config, load_config
from bygheartd.engine.lock import EngineLock
from bygheartd.jobs import parse_iso
from bygheartd.simulator import RunningSimulator, SimulatorSettings

LYRICS = "[Verse]\nneon on the water\n[Chorus]\nwe light the harbour up"
FOLDERS = ("inbox", "output", "archive", "failed", "drafts")


@pytest.fixture
def sim_settings() -> SimulatorSettings:
    return SimulatorSettings(latency=0.3, audio_scale=0.02, seed=11)


def song_text(title: str, *, style: str = "synth pop", model: str = "bygheart-melody-fast") -> str:
    return (
        f"---\ntitle: {title}\nstyle: {style}\nmodel: {model}\nduration: 10\n---\n"
        f"[Verse]\n{title} walks in the rain\n[Chorus]\n{title} sings it again\n"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Setup:
    """One user's installation: a config file, its folders, and the daemon (not yet started)."""

    def __init__(self, tmp_path: Path, sim: RunningSimulator, **overrides: dict[str, Any]):
        root = tmp_path / "music"
        root.mkdir()
        sections: dict[str, dict[str, Any]] = {
            "api": {"base_url": sim.base_url},
            "folders": {name: str(root / name) for name in FOLDERS}
            | {"state": str(tmp_path / "state")},
            "watch": {"settle_seconds": 0.2, "rescan_seconds": 60},
            "queue": {
                "poll_min_seconds": 0.1,
                "poll_max_seconds": 0.3,
                "retry_base_seconds": 0.1,
                "retry_max_seconds": 0.5,
            },
            "budget": {"plan": "pro"},
            "plugins": {"enabled": []},
        }
        for section, values in overrides.items():
            sections.setdefault(section, {}).update(values)
        self.config_path = write_config(tmp_path / "config.toml", sections)
        self.config: Config = load_config(self.config_path)
        self.daemon = Daemon(self.config_path, tmp_path / "daemon.log", env=dict(os.environ))
        self.jobs: Jobs | None = None

    def store(self) -> Jobs:
        """The store exists once the daemon has started: open it only then."""
        if self.jobs is None:
            self.jobs = Jobs(self.config)
        return self.jobs

    def close(self) -> None:
        self.daemon.stop()
        if self.jobs is not None:
            self.jobs.close()


@pytest.fixture
def installs(tmp_path: Path, api_key: str) -> Iterator[list[Setup]]:
    made: list[Setup] = []
    yield made
    for setup in made:
        setup.close()


def install(installs: list[Setup], tmp_path: Path, sim: RunningSimulator, **kw: Any) -> Setup:
    setup = Setup(tmp_path, sim, **kw)
    installs.append(setup)
    return setup


def with_mcp_http(tmp_path: Path) -> tuple[str, dict[str, Any]]:
    token = secrets.token_hex(16)
    token_file = tmp_path / "mcp-token"
    token_file.write_text(token + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    return token, {
        "http": True,
        "host": "127.0.0.1",
        "port": free_port(),
        "token_file": str(token_file),
    }


def mcp_url(setup: Setup) -> str:
    return f"http://127.0.0.1:{setup.config.mcp.port}/mcp"


def sidecars(output: Path) -> dict[str, dict[str, Any]]:
    found = (json.loads(p.read_text(encoding="utf-8")) for p in output.glob("*.json"))
    return {s["job_id"]: s for s in found}


# -- one daemon, three faces -------------------------------------------------------------


@pytest.mark.anyio
async def test_a_dropped_file_a_cli_submit_and_an_mcp_call_all_become_tagged_songs(
    simulator: RunningSimulator,
    installs: list[Setup],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BYGHEARTD_LOAD_PLUGINS")  # the config alone picks the plugins
    token, mcp = with_mcp_http(tmp_path)
    setup = install(installs, tmp_path, simulator, mcp=mcp, plugins={"enabled": ["tags"]})
    folders = setup.config.folders
    setup.daemon.start()
    assert "plugins: tags" in setup.daemon.log()

    dropped = song_text("Dropped Song")
    (folders.inbox / "dropped.txt").write_text(dropped, encoding="utf-8")
    given = tmp_path / "songs" / "given.txt"
    given.parent.mkdir()
    given.write_text(song_text("Given Song"), encoding="utf-8")
    [queued] = submit(setup.config_path, [given])
    assert queued["source"] == str(given)

    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=60)
    )
    async with http, Client(streamable_http_client(mcp_url(setup), http_client=http)) as client:
        result = await client.call_tool(
            "generate_song",
            {"lyrics": LYRICS, "title": "Asked Song", "style": "synth pop", "wait_seconds": 15},
        )
    assert not result.is_error, result.content
    reply: dict[str, Any] = result.structured_content or {}
    assert reply["status"] == "done", reply
    for file in reply["files"]:
        path = Path(file["path"])
        assert path.is_absolute() and path.parent == folders.output and path.is_file()
        assert file["uri"] == path.as_uri()
    assert TEST_KEY not in result.model_dump_json() and token not in result.model_dump_json()

    store = setup.store()
    wait_for(
        lambda: (
            len(store.store.list_jobs()) == 3
            and store.all_in([j.id for j in store.store.list_jobs()], {"done", "failed"})
        ),
        what="all three jobs to end",
        proc=setup.daemon,
    )
    records = {r["title"]: r for r in list_json(setup.config_path)}
    assert {t: r["status"] for t, r in records.items()} == dict.fromkeys(
        ("Dropped Song", "Given Song", "Asked Song"), "done"
    )
    assert records["Dropped Song"]["source"] == "dropped.txt"
    assert records["Given Song"]["source"] == str(given)
    assert records["Asked Song"]["source"] is None  # lyrics given inline: no song file
    assert records["Asked Song"]["id"] == reply["id"]

    assert (folders.archive / "dropped.txt").read_text(encoding="utf-8") == dropped
    assert sorted(os.listdir(folders.inbox)) == [".bygheartd.lock"]
    notes = sidecars(folders.output)
    for title, record in records.items():
        assert notes[record["id"]]["status"] == "done"
        assert "tags" in notes[record["id"]]["plugins"]
        [audio] = [Path(f["path"]) for f in record["files"]]
        assert audio.parent == folders.output and audio.suffix == ".mp3"
        tags = ID3(str(audio))
        assert str(tags["TIT2"]) == title
        [lyrics] = tags.getall("USLT")
        chorus = "we light the harbour up" if title == "Asked Song" else f"{title} sings it again"
        assert chorus in lyrics.text
    assert notes[records["Dropped Song"]["id"]]["archived_as"] == "dropped.txt"


async def _call(url: str, token: str, tool: str, args: dict[str, Any]) -> Any:
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=60)
    )
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        return await client.call_tool(tool, args)


@pytest.mark.anyio
async def test_a_budget_reload_reaches_every_face_of_the_running_daemon(
    simulator: RunningSimulator, installs: list[Setup], tmp_path: Path
) -> None:
    token, mcp = with_mcp_http(tmp_path)
    setup = install(installs, tmp_path, simulator, mcp=mcp)
    setup.daemon.start()
    before = (await _call(mcp_url(setup), token, "get_credits", {})).structured_content
    assert before["limits"] == {"daily_credits": 30, "monthly_credits": 200, "rollover_max": 60}

    text = setup.config_path.read_text(encoding="utf-8")
    setup.config_path.write_text(
        text.replace(
            '[budget]\nplan = "pro"\n',
            '[budget]\nplan = "pro"\ndaily_credits = 3\nmonthly_credits = 150\nrollover_max = 5\n',
        ),
        encoding="utf-8",
    )
    setup.daemon.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded config" in setup.daemon.log(), what="the reload", proc=setup.daemon)
    assert "budget.daily_credits" in setup.daemon.log()

    # MCP over HTTP: the plan limits and the credit figures beside them are both new.
    after = (await _call(mcp_url(setup), token, "get_credits", {})).structured_content
    assert after["limits"] == {"daily_credits": 3, "monthly_credits": 150, "rollover_max": 5}
    assert after["today"]["cap"] == 3 and after["today"]["left"] == 3
    assert after["month"]["allowance"] == 150
    # The CLI reads the same file.
    assert json.loads(cli(setup.config_path, "credits", "--json").stdout)["today"]["cap"] == 3
    # The request rules: a job above the new daily cap can never run, so it is refused.
    refused = await _call(
        mcp_url(setup),
        token,
        "generate_song",
        {"lyrics": LYRICS, "style": "pop", "model": "bygheart-studio-max"},
    )
    assert refused.is_error and "3" in refused.content[0].text, refused.content
    # The engine's budget: 2 credits fit in 3; a second job of 2 waits for tomorrow.
    args = {"lyrics": LYRICS, "style": "pop", "model": "bygheart-studio-pro", "wait_seconds": 20}
    first = await _call(mcp_url(setup), token, "generate_song", {**args, "title": "One"})
    assert first.structured_content["status"] == "done", first.content
    second = await _call(
        mcp_url(setup), token, "generate_song", {**args, "title": "Two", "wait_seconds": 3}
    )
    assert second.structured_content["status"] == "held", second.content
    assert simulator.sim.stats.submits == 1


def test_health_answers_without_a_token_and_mcp_without_one_is_401(
    simulator: RunningSimulator, installs: list[Setup], tmp_path: Path
) -> None:
    token, mcp = with_mcp_http(tmp_path)
    setup = install(installs, tmp_path, simulator, mcp=mcp)
    setup.daemon.start()
    origin = f"http://127.0.0.1:{setup.config.mcp.port}"
    with httpx.Client(timeout=10) as http:
        health = http.get(origin + "/health")
        # The loop's own ticker (every 0.1 s) is counted in /health: it moves on.
        ticks = health.json()["loop_lag_ms"]["ticks"]
        deadline = clock.monotonic() + 10
        while http.get(origin + "/health").json()["loop_lag_ms"]["ticks"] <= ticks:
            assert clock.monotonic() < deadline, "the loop-lag ticker never ticked"
            clock.sleep(0.05)
        refused = http.post(
            mcp_url(setup),
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["engine"] is True
    lag = health.json()["loop_lag_ms"]
    assert set(lag) == {"ticks", "last_ms", "p95_ms", "max_ms", "window_seconds"}
    assert 0 <= lag["last_ms"] <= lag["max_ms"] and lag["window_seconds"] == 60
    assert token not in health.text and TEST_KEY not in health.text
    assert refused.status_code == 401
    assert token not in refused.text
    assert token not in setup.daemon.log() and TEST_KEY not in setup.daemon.log()


# -- folder trouble at start -------------------------------------------------------------


class NotifySocket:
    """What systemd listens on: READY/STATUS datagrams, read without blocking."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[list[str]] = []

    def drain(self) -> list[list[str]]:
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode().split("\n"))
            except BlockingIOError:
                return self.messages

    def ready(self) -> list[str] | None:
        return next((m for m in self.drain() if "READY=1" in m), None)


def start_with_unmounted_output(
    installs: list[Setup], tmp_path: Path, sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> tuple[Setup, Path, list[str]]:
    share = tmp_path / "share"  # not there: an unmounted network share
    output = share / "output"
    setup = install(installs, tmp_path, sim, folders={"output": str(output)})
    notify = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    setup.daemon.env = dict(os.environ)
    try:
        setup.daemon.start(wait_ready=False)
        wait_for(lambda: notify.ready() is not None, what="READY=1", proc=setup.daemon)
        ready = notify.ready()
    finally:
        notify.sock.close()
    assert ready is not None
    assert not share.exists()  # nothing invented a share
    return setup, output, ready


def test_a_missing_output_share_still_starts_and_holds_the_job_naming_the_folder(
    simulator: RunningSimulator,
    installs: list[Setup],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup, output, ready = start_with_unmounted_output(installs, tmp_path, simulator, monkeypatch)
    [status] = [line for line in ready if line.startswith("STATUS=")]
    assert "folder problem" in status and f"output folder {output}" in status
    assert f"output folder {output}" in setup.daemon.log()

    song = tmp_path / "songs" / "share.txt"
    song.parent.mkdir()
    song.write_text(song_text("Share Song"), encoding="utf-8")
    [job] = submit(setup.config_path, [song])
    store = setup.store()
    wait_for(
        lambda: store.statuses([job["id"]]) == ["held"], what="the job held", proc=setup.daemon
    )
    [held] = list_json(setup.config_path)
    assert held["status"] == "held" and str(output) in held["reason"]
    assert held["resumes_at"] is not None
    assert not output.parent.exists()


def test_a_held_job_completes_without_a_restart_once_the_output_share_appears(
    simulator: RunningSimulator,
    installs: list[Setup],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup, output, _ = start_with_unmounted_output(installs, tmp_path, simulator, monkeypatch)
    song = tmp_path / "songs" / "share.txt"
    song.parent.mkdir()
    song.write_text(song_text("Share Song"), encoding="utf-8")
    [job] = submit(setup.config_path, [song])
    store = setup.store()
    wait_for(
        lambda: store.statuses([job["id"]]) == ["held"], what="the job held", proc=setup.daemon
    )
    output.parent.mkdir()  # the share is mounted again
    wait_for(
        lambda: store.statuses([job["id"]]) == ["done"],
        what="the job to finish",
        timeout=8,
        proc=setup.daemon,
    )
    assert (output / "share-song.json").is_file()


# -- a drop that fails later --------------------------------------------------------------


def test_a_dropped_song_that_fails_generation_lands_in_failed_with_a_note(
    simulator: RunningSimulator, installs: list[Setup], tmp_path: Path
) -> None:
    setup = install(installs, tmp_path, simulator)
    folders = setup.config.folders
    setup.daemon.start()
    text = song_text("Doomed Song", style="synth pop FAIL")
    (folders.inbox / "doomed.txt").write_text(text, encoding="utf-8")
    note = folders.failed / "doomed.txt.error.txt"
    wait_for(note.exists, what="the failure note", proc=setup.daemon)
    [record] = list_json(setup.config_path)
    assert record["status"] == "failed" and record["source"] == "doomed.txt"
    assert (folders.failed / "doomed.txt").read_text(encoding="utf-8") == text
    assert (folders.archive / "doomed.txt").read_text(encoding="utf-8") == text
    explained = note.read_text(encoding="utf-8")
    assert "accepted" in explained and "failed later" in explained
    assert record["id"] in explained and record["reason"] in explained
    assert f"bygheartd retry {record['id']}" in explained
    assert TEST_KEY not in explained
    assert not list(folders.output.iterdir())


# -- the credit cap ----------------------------------------------------------------------


def next_midnight(zone: ZoneInfo) -> datetime:
    today = datetime.now(zone).date()
    return datetime.combine(today + timedelta(days=1), time(0), tzinfo=zone)


def test_the_daily_cap_finishes_one_song_and_holds_the_next_until_local_midnight(
    simulator: RunningSimulator, installs: list[Setup], tmp_path: Path
) -> None:
    zone_name = "America/New_York"
    setup = install(
        installs, tmp_path, simulator, budget={"daily_credits": 2, "timezone": zone_name}
    )
    setup.daemon.start()
    songs = tmp_path / "songs"
    songs.mkdir()
    paths = []
    for n in (1, 2):
        paths.append(songs / f"pro-{n}.txt")
        paths[-1].write_text(song_text(f"Pro {n}", model="bygheart-studio-pro"), "utf-8")
    zone = ZoneInfo(zone_name)
    midnights = {next_midnight(zone)}
    ids = [r["id"] for r in submit(setup.config_path, paths)]
    store = setup.store()
    wait_for(
        lambda: sorted(store.statuses(ids)) == ["done", "held"],
        what="one done, one held",
        proc=setup.daemon,
    )
    midnights.add(next_midnight(zone))
    records = {r["status"]: r for r in list_json(setup.config_path)}
    assert records["done"]["credits"] == 2 and records["held"]["credits"] == 2
    held = records["held"]
    assert "daily credit cap" in held["reason"]
    assert parse_iso(held["resumes_at"]) in midnights
    assert simulator.sim.stats.submits == 1

    credits = json.loads(cli(setup.config_path, "credits", "--json").stdout)
    assert credits["timezone"] == zone_name
    today = credits["today"]
    assert (today["spent"], today["cap"], today["left"]) == (2, 2, 0)
    assert parse_iso(credits["next_daily_release"]) in midnights

    status = json.loads(cli(setup.config_path, "status", "--json").stdout)
    assert status["engine"]["owner"] == "bygheartd run"
    assert status["engine"]["pid"] == setup.daemon.pid
    assert status["counts"] == {"done": 1, "held": 1}


# -- `bygheartd mcp` next to a running daemon --------------------------------------------


@pytest.mark.anyio
async def test_mcp_over_stdio_with_a_daemon_running_uses_the_daemons_engine(
    simulator: RunningSimulator, installs: list[Setup], tmp_path: Path
) -> None:
    setup = install(installs, tmp_path, simulator)
    setup.daemon.start()
    lock = EngineLock(setup.config.state_dir)
    holders: list[object] = []
    stop = threading.Event()

    def watch_lock() -> None:
        while not stop.is_set():
            holder = lock.holder()
            holders.append(holder.get("pid") if holder else None)
            stop.wait(0.02)

    watcher = threading.Thread(target=watch_lock, daemon=True)
    env = {
        "BYGHEART_API_KEY": TEST_KEY,
        "BYGHEARTD_CONFIG": str(setup.config_path),
        "BYGHEARTD_LOAD_PLUGINS": "",
        "XDG_CONFIG_HOME": os.environ["XDG_CONFIG_HOME"],
        "XDG_STATE_HOME": os.environ["XDG_STATE_HOME"],
    }
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "bygheartd", "mcp", "--log-level", "info"], env=env
    )
    stderr_path = tmp_path / "mcp-stderr.log"
    watcher.start()
    try:
        with stderr_path.open("w", encoding="utf-8") as errlog:
            async with Client(stdio_client(params, errlog=errlog)) as client:
                result = await client.call_tool(
                    "generate_song",
                    {"lyrics": LYRICS, "title": "Stdio Song", "wait_seconds": 15},
                )
    finally:
        stop.set()
        watcher.join(2)
    assert not result.is_error, result.content
    song: dict[str, Any] = result.structured_content or {}
    assert song["status"] == "done" and Path(song["files"][0]["path"]).is_file()
    assert simulator.sim.stats.submits == 1
    assert holders and set(holders) == {setup.daemon.pid}, set(holders)
    stderr = stderr_path.read_text(encoding="utf-8")
    assert "engine running in this process" not in stderr
    assert TEST_KEY not in stderr
    status = json.loads(cli(setup.config_path, "status", "--json").stdout)
    assert status["engine"]["pid"] == setup.daemon.pid
    [record] = list_json(setup.config_path)
    assert record["id"] == song["id"] and record["status"] == "done"
