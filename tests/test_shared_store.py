"""Many daemons, one queue: engines on one PostgreSQL store (a real server, started by the
tests) make every song exactly once, take over a killed engine's songs without a second
submit, and share one budget."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from _daemon import Daemon, write_songs
from _jobs import song
from _postgres import PASSWORD
from _simprocs import SimProcess
from conftest import TEST_KEY, write_config

from bygheartd.config import Config, load_config
from bygheartd.engine.pool_snapshot import read_snapshot
from bygheartd.jobs import FINAL_STATUSES, HoldKind, JobStatus
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.service.service import open_service
from bygheartd.simulator import RunningSimulator, SimulatorSettings

pytestmark = pytest.mark.anyio

SONG = "style: synth pop, {marker}\nmodel: bygheart-melody-fast\nduration: 10\n\n[Verse]\nla\n"


@pytest.fixture
def sim_settings() -> SimulatorSettings:
    return SimulatorSettings(latency=1.0, audio_scale=0.02, seed=3)


def _config(
    root: Path,
    name: str,
    sim: RunningSimulator | SimProcess,
    url: str,
    **sections: dict[str, Any],
) -> Path:
    home = root / name
    folders = {
        n: str(home / n) for n in ("inbox", "output", "archive", "failed", "drafts", "state")
    }
    for folder in folders.values():
        Path(folder).mkdir(parents=True, exist_ok=True)
    values: dict[str, dict[str, Any]] = {
        "api": {"base_url": sim.base_url if isinstance(sim, RunningSimulator) else sim.url},
        "folders": folders,
        "watch": {"settle_seconds": 0.2},
        "queue": {
            "poll_min_seconds": 0.2,
            "poll_max_seconds": 0.5,
            "retry_base_seconds": 0.1,
            "retry_max_seconds": 0.5,
            "max_in_flight": 4,
        },
        "budget": {"plan": "pro"},
        "plugins": {"enabled": []},
        "store": {"url": url, "lease_seconds": 2},
    }
    for section, extra in sections.items():
        values.setdefault(section, {}).update(extra)
    if values["api"].get("servers"):  # a pool names its servers instead of base_url
        values["api"].pop("base_url", None)
    return write_config(home / "config.toml", values)


def _submits(sim: RunningSimulator) -> int:
    return int(sim.sim.stats.http_requests.get("/release_task", 0))


async def _all_final(config: Config, count: int, timeout: float = 60) -> list[Any]:
    service = open_service(config)
    try:
        with anyio.fail_after(timeout):
            while True:
                jobs = await service.list()
                if len(jobs) >= count and all(j.status in FINAL_STATUSES for j in jobs):
                    return jobs
                await anyio.sleep(0.1)
    finally:
        await service.close()


async def test_three_engines_on_one_store_make_every_song_exactly_once(
    simulator: RunningSimulator,
    postgres_url: str,
    tmp_path: Path,
    api_key: str,
) -> None:
    configs = [
        load_config(_config(tmp_path, f"host{n}", simulator, postgres_url)) for n in range(3)
    ]
    async with (
        Runtime(configs[0], role=EngineRole.DAEMON) as first,
        Runtime(configs[1], role=EngineRole.DAEMON) as second,
        Runtime(configs[2], role=EngineRole.DAEMON) as third,
    ):
        runtimes = (first, second, third)
        assert all(r.engine is not None for r in runtimes)
        for n in range(12):  # each face queues on its own host, into the one queue
            song = tmp_path / f"song-{n}.txt"
            song.write_text(SONG.format(marker=f"once-{n}"))
            await runtimes[n % 3].service.submit_file(song)
        jobs = await _all_final(configs[0], 12)
        engines = {r.engine.info.id for r in runtimes if r.engine is not None}
        histories = [await first.service.history(job) for job in jobs]
        listed = await first.store.list_engines()
    assert [j.status for j in jobs] == [JobStatus.DONE] * 12
    assert _submits(simulator) == 12  # every song made once, none twice
    submitted_by = {
        (e.reason or "").removeprefix("by engine ")
        for history in histories
        for e in history
        if e.to_status == "submitting"
    }
    assert len(submitted_by) >= 2 and submitted_by <= engines  # the work was shared
    for history in histories:
        assert [e.to_status for e in history].count("submitting") == 1
    assert {e.id for e in listed} == engines  # each engine registered with its lease
    # Each host's songs land in its own output folder.
    for job in jobs:
        assert job.files and all(f.path.exists() for f in job.files)


async def test_a_second_engine_takes_over_a_killed_engines_songs_without_submitting_again(
    simulator: RunningSimulator,
    postgres_url: str,
    tmp_path: Path,
    api_key: str,
) -> None:
    simulator.sim.settings.latency = 3.0  # long enough to kill the daemon mid-generation
    first_path = _config(tmp_path, "host-a", simulator, postgres_url)
    daemon = Daemon(first_path, tmp_path / "a.log")
    songs = write_songs(tmp_path / "songs", 4, tag="takeover")
    try:
        daemon.start()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bygheartd",
                "--config",
                str(first_path),
                "submit",
                *map(str, songs),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ),
        )
        assert done.returncode == 0, done.stderr
        config_a = load_config(first_path)
        service = open_service(config_a)
        try:
            with anyio.fail_after(30):
                while (await service.counts()).get("running", 0) < 4:
                    await anyio.sleep(0.05)
        finally:
            await service.close()
        daemon.kill9()  # mid-generation: its lease runs out in 2 s
        second = load_config(_config(tmp_path, "host-b", simulator, postgres_url))
        async with Runtime(second, role=EngineRole.DAEMON) as runtime:
            jobs = await _all_final(second, 4, timeout=60)
            histories = [await runtime.service.history(job) for job in jobs]
    finally:
        daemon.stop()
    assert [j.status for j in jobs] == [JobStatus.DONE] * 4
    assert _submits(simulator) == 4  # polled and downloaded by the other: never resubmitted
    for history in histories:
        taken = [e for e in history if e.event == "taken over"]
        assert len(taken) == 1 and "from engine" in (taken[0].reason or "")
    assert PASSWORD not in daemon.log()  # the database password in no log


async def test_two_engines_racing_for_the_last_credits_of_the_day_never_overspend(
    simulator: RunningSimulator,
    postgres_url: str,
    tmp_path: Path,
    api_key: str,
) -> None:
    budget = {"plan": "pro", "daily_credits": 10, "monthly_credits": 500}
    configs = [
        load_config(_config(tmp_path, f"racer{n}", simulator, postgres_url, budget=budget))
        for n in range(2)
    ]
    async with (
        Runtime(configs[0], role=EngineRole.DAEMON) as first,
        Runtime(configs[1], role=EngineRole.DAEMON) as second,
    ):
        for n in range(8):  # two credits each: 16 wanted, 10 allowed today
            song = tmp_path / f"race-{n}.txt"
            song.write_text(SONG.format(marker=f"race-{n}"))
            await (first, second)[n % 2].service.submit_file(song)
        counts: dict[str, int] = {}
        with anyio.move_on_after(60):
            while True:
                counts = await first.service.counts()
                if counts.get("done", 0) == 5 and counts.get("held", 0) == 3:
                    break
                await anyio.sleep(0.1)
        assert counts == {"done": 5, "held": 3}, [
            (j.status.value, j.reason) for j in await first.service.list()
        ]
        credits = await first.service.credits()
    assert credits["today"]["spent"] == 10  # never past the cap, however many daemons
    assert _submits(simulator) == 5


async def test_a_database_restart_under_load_loses_nothing_and_pays_nothing_twice(
    simulator: RunningSimulator,
    postgres_server: Any,
    tmp_path: Path,
    api_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = postgres_server.new_database()
    config = load_config(_config(tmp_path, "host", simulator, url))
    async with Runtime(config, role=EngineRole.DAEMON) as runtime:
        for n in range(8):
            song = tmp_path / f"load-{n}.txt"
            song.write_text(SONG.format(marker=f"load-{n}"))
            await runtime.service.submit_file(song)
        with anyio.fail_after(30):
            while (await runtime.service.counts()).get("running", 0) < 2:
                await anyio.sleep(0.05)
        # The server goes away (as in a crash: connections cut) and comes back.
        await anyio.to_thread.run_sync(postgres_server.restart)
        jobs = await _all_final(config, 8, timeout=90)
    assert [j.status for j in jobs] == [JobStatus.DONE] * 8, [j.reason for j in jobs]
    assert _submits(simulator) == 8
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize("case", ["wrong password", "unreachable", "not ours"])
def test_a_store_that_cannot_be_used_is_one_clear_line_at_start_and_in_config_check(
    case: str, postgres_server: Any, tmp_path: Path, api_key: str
) -> None:
    database = postgres_server.new_database().rsplit("/", 1)[1]
    if case == "wrong password":
        url = postgres_server.url(database, password="not-the-password")
        expected = "password authentication failed"
    elif case == "unreachable":
        url = "postgresql://bygheartd:some-pw@127.0.0.1:9/bygheartd"
        expected = "Connection refused"
    else:
        postgres_server.admin("CREATE TABLE invoices (id int)", database=database)
        postgres_server.admin("ALTER TABLE invoices OWNER TO bygheartd", database=database)
        url = postgres_server.url(database)
        expected = "holds other tables (invoices...) and no bygheartd schema"
    home = tmp_path / "home"
    folders = {
        n: str(home / n) for n in ("inbox", "output", "archive", "failed", "drafts", "state")
    }
    for folder in folders.values():
        Path(folder).mkdir(parents=True, exist_ok=True)
    config = write_config(
        tmp_path / "c.toml",
        {"api": {"base_url": "http://127.0.0.1:9"}, "folders": folders, "store": {"url": url}},
    )
    for command in (["run"], ["config", "check"], ["list"]):
        done = subprocess.run(
            [sys.executable, "-m", "bygheartd", "--config", str(config), *command],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ),
        )
        output = done.stdout + done.stderr
        assert done.returncode == 1, output
        assert expected in output and "Traceback" not in output, output
        assert "some-pw" not in output and PASSWORD not in output
        assert "not-the-password" not in output


async def test_hosts_sharing_an_output_folder_never_pick_one_name_and_a_missing_folder_is_said(
    simulator: RunningSimulator,
    postgres_url: str,
    tmp_path: Path,
    api_key: str,
) -> None:
    shared = tmp_path / "nas" / "songs"
    shared.mkdir(parents=True)
    configs = [
        load_config(
            _config(
                tmp_path, f"studio{n}", simulator, postgres_url, folders={"output": str(shared)}
            )
        )
        for n in range(2)
    ]
    # Queued on a laptop whose output folder no daemon here has.
    laptop = load_config(
        _config(tmp_path, "laptop", simulator, postgres_url, folders={"output": "/mnt/laptop/x"})
    )
    queuer = open_service(laptop)
    song = tmp_path / "same.txt"
    song.write_text(SONG.format(marker="same"))
    try:
        away = await queuer.submit_file(song)
    finally:
        await queuer.close()
    async with (
        Runtime(configs[0], role=EngineRole.DAEMON) as first,
        Runtime(configs[1], role=EngineRole.DAEMON) as second,
    ):
        for n in range(8):  # one title for all: every one needs a name of its own
            await (first, second)[n % 2].service.submit_file(song)
        jobs = await _all_final(configs[0], 9)
        history = await first.service.history(await first.service.get(away.id))
    assert [j.status for j in jobs] == [JobStatus.DONE] * 9
    names = sorted(f.path.name for j in jobs for f in j.files)
    assert len(set(names)) == 9 and all(f.path.parent == shared for j in jobs for f in j.files)
    moved = [e for e in history if e.event == "delivered elsewhere"]
    assert len(moved) == 1 and "/mnt/laptop/x is not on this host" in (moved[0].reason or "")


async def test_engines_sharing_a_pool_never_put_more_than_a_servers_limit_on_it(
    postgres_url: str, tmp_path: Path, api_key: str
) -> None:
    with SimProcess(tmp_path / "gpu", latency=0.3) as gpu:
        gpu.start()
        pool = {"backend": "acestep", "servers": [{"url": gpu.url, "max_in_flight": 2}]}
        configs = [
            load_config(_config(tmp_path, f"pool{n}", gpu, postgres_url, api=pool))
            for n in range(2)
        ]
        async with (
            Runtime(configs[0], role=EngineRole.DAEMON) as first,
            Runtime(configs[1], role=EngineRole.DAEMON) as second,
        ):
            for n in range(8):
                path = song(tmp_path, f"pool-{n}.txt", model="acestep-v15-turbo", duration=10)
                await (first, second)[n % 2].service.submit_file(path)
            jobs = await _all_final(configs[0], 8)
            histories = [await first.service.history(job) for job in jobs]
        submits = int(gpu.stats()["http_requests"].get("/release_task", 0))
    assert [j.status for j in jobs] == [JobStatus.DONE] * 8 and submits == 8
    # In flight from the submitting move to the move out of running, by the history's
    # times: each submit counted the others under the server's lock, after their commits.
    edges: list[tuple[Any, int]] = []
    for history in histories:
        start = next(e.at for e in history if e.to_status == "submitting")
        end = next(e.at for e in history if e.from_status == "running")
        edges += [(start, 1), (end, -1)]
    in_flight = peak = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        in_flight += step
        peak = max(peak, in_flight)
    assert peak == 2  # the server's max_in_flight over both engines, and used


async def test_one_engine_at_a_time_writes_the_pool_snapshot(
    simulator: RunningSimulator, postgres_url: str, tmp_path: Path, api_key: str
) -> None:
    configs = [
        load_config(_config(tmp_path, f"snap{n}", simulator, postgres_url)) for n in range(3)
    ]
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(Runtime(configs[0], role=EngineRole.DAEMON))
        assert first.engine is not None
        first_id = first.engine.info.id
        with anyio.fail_after(10):
            while ((await read_snapshot(first.store)) or {}).get("engine") != first_id:
                await anyio.sleep(0.05)
        async with Runtime(configs[1], role=EngineRole.DAEMON) as second:
            assert second.engine is not None
            assert not await second.store.lead("pool-snapshot")  # the first holds the duty
            snapshot = await read_snapshot(second.store) or {}
            assert snapshot.get("engine") == first_id
            # `status` from a third state folder, where no engine runs: the snapshot is
            # another host's engine's, and live all the same while its lease is current.
            async with Runtime(configs[2], role=EngineRole.SUBMIT, engine=False) as third:
                assert third.service.engine_holder() is None
                [server] = await third.service.servers()
            assert server["live"] is True and server["healthy"] is True, server
            await stack.aclose()  # the holder stops: the second takes the duty over
            with anyio.fail_after(20):
                while (await read_snapshot(second.store) or {}).get(
                    "engine"
                ) != second.engine.info.id:
                    await anyio.sleep(0.05)


async def test_a_refused_key_on_one_daemon_holds_only_its_own_songs(
    simulator: RunningSimulator,
    postgres_url: str,
    tmp_path: Path,
    api_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BYGHEART_API_KEY")  # each daemon reads its own key file
    keys = {"good": TEST_KEY, "bad": "not-a-key-anyone-knows"}
    configs = {}
    for name, key in keys.items():
        key_file = tmp_path / f"{name}.key"
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
        configs[name] = load_config(
            _config(tmp_path, name, simulator, postgres_url, api={"api_key_file": str(key_file)})
        )
    async with Runtime(configs["bad"], role=EngineRole.DAEMON) as bad:
        for n in range(8):
            path = tmp_path / f"auth-{n}.txt"
            path.write_text(SONG.format(marker=f"auth-{n}"))
            await bad.service.submit_file(path)
        counts: dict[str, int] = {}
        with anyio.fail_after(30):  # the bad key meets its 401s on the songs it claimed
            while not counts.get("held") or counts.get("submitting"):
                counts = await bad.service.counts()
                await anyio.sleep(0.05)
        held = await bad.service.list([JobStatus.HELD])
        assert 1 <= len(held) <= configs["bad"].queue.max_in_flight, counts
        assert all(j.hold_kind is HoldKind.AUTH for j in held)
        assert counts == {"held": len(held), "queued": 8 - len(held)}  # the rest waits
        refused = _submits(simulator)
        # A daemon with a good key takes the queue, and at its start the songs held for a
        # refused key too (a key may have been fixed: `recheck_auth`).
        async with Runtime(configs["good"], role=EngineRole.DAEMON):
            jobs = await _all_final(configs["good"], 8)
    assert [j.status for j in jobs] == [JobStatus.DONE] * 8
    assert _submits(simulator) == refused + 8
