"""The server pool (issue 15): several simulated ACE-Step servers as real processes on
loopback ports, driven as one; a server that is down, one restarted mid-run, and the rules
that make a lost task again exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from _daemon import cli
from _jobs import song
from _simprocs import SimProcess, free_port
from conftest import TEST_KEY, MakeConfig

from bygheartd.config import Config, parse_config
from bygheartd.errors import ConfigError
from bygheartd.jobs import Job, JobStatus
from bygheartd.service.runtime import Runtime

pytestmark = pytest.mark.anyio

MODEL = "acestep-v15-turbo"


def pool_config(make_config: MakeConfig, *urls: str, **queue: Any) -> Config:
    return make_config(
        api={"backend": "acestep", "servers": [{"url": u, "max_in_flight": 2} for u in urls]},
        queue={"poll_min_seconds": 0.1, "poll_max_seconds": 0.3, **queue},
    )


async def enqueue(runtime: Runtime, folder: Path, n: int, start: int = 0) -> list[Job]:
    jobs = [
        runtime.service.enqueue_file(
            song(folder, f"song{i}.txt", title=f"Pool song {i}", model=MODEL)
        )
        for i in range(start, start + n)
    ]
    runtime.wake()
    return jobs


async def finish(runtime: Runtime, jobs: list[Job], timeout: float = 60) -> list[Job]:
    return [await runtime.service.wait(j.id, timeout=timeout, interval=0.05) for j in jobs]


async def until(predicate: Any, timeout: float = 30) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


def events(runtime: Runtime, job: Job) -> list[str]:
    return [e.event for e in runtime.service.history(job)]


def downloads_on_disk(config: Config) -> list[Path]:
    return sorted(p for p in config.folders.output.iterdir() if p.suffix != ".json")


# -- configuration --------------------------------------------------------------------


def test_pool_config_errors_say_what_to_do() -> None:
    with pytest.raises(ConfigError, match=r"base_url and \[\[api.servers\]\] both"):
        parse_config(
            {
                "api": {
                    "backend": "acestep",
                    "base_url": "http://127.0.0.1:8001",
                    "servers": [{"url": "http://127.0.0.1:8002"}],
                }
            }
        )
    with pytest.raises(ConfigError, match='backend = "acestep"'):
        parse_config({"api": {"servers": [{"url": "http://127.0.0.1:8002"}]}})
    with pytest.raises(ConfigError, match="could pay for it twice"):
        parse_config({"queue": {"resubmit_lost": True}})
    with pytest.raises(ConfigError, match="twice: list it once"):
        parse_config(
            {
                "api": {
                    "backend": "acestep",
                    "servers": [{"url": "http://a:1"}, {"url": "http://a:1/"}],
                }
            }
        )
    pool = parse_config({"api": {"backend": "acestep", "servers": [{"url": "http://gpu1:8001/"}]}})
    assert pool.api.servers[0].url == "http://gpu1:8001"
    assert pool.api.servers[0].max_in_flight == 2
    assert pool.resubmit_lost is True
    assert parse_config({}).resubmit_lost is False  # the hosted API: never
    off = parse_config({"api": {"backend": "acestep"}, "queue": {"resubmit_lost": False}})
    assert off.resubmit_lost is False


def test_config_check_shows_every_server_and_never_a_key(tmp_path: Path) -> None:
    key_file = tmp_path / "gpu2.key"
    key_file.write_text("secret-gpu2-key\n")
    key_file.chmod(0o600)
    config = tmp_path / "config.toml"
    config.write_text(
        '[api]\nbackend = "acestep"\n'
        '[[api.servers]]\nurl = "http://127.0.0.1:9"\n'
        f'[[api.servers]]\nurl = "http://127.0.0.1:10"\napi_key_file = "{key_file}"\n'
        "max_in_flight = 3\n"
        '[[api.servers]]\nurl = "http://127.0.0.1:11"\napi_key_file = "/nonexistent/key"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "bygheartd", "--config", str(config), "config", "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = done.stdout
    assert "servers: a pool of 3" in out
    assert "http://127.0.0.1:9: max_in_flight 2" in out
    assert f"http://127.0.0.1:10: max_in_flight 3, key from key file {key_file}" in out
    assert "http://127.0.0.1:11: ERROR" in out and "does not exist" in out
    assert "resubmit lost tasks: on" in out
    assert "secret-gpu2-key" not in out + done.stderr
    assert done.returncode == 1  # the missing key file


def test_config_check_online_probes_every_server(tmp_path: Path) -> None:
    with SimProcess(tmp_path / "sim", latency=0.1) as up:
        up.start()
        down = f"http://127.0.0.1:{free_port()}"
        config = tmp_path / "config.toml"
        config.write_text(
            f'[api]\nbackend = "acestep"\n[[api.servers]]\nurl = "{up.url}"\n'
            f'[[api.servers]]\nurl = "{down}"\n'
        )
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bygheartd",
                "--config",
                str(config),
                "config",
                "check",
                "--online",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert f"{up.url} server: reachable at {up.url}" in done.stdout
    assert f"{down} server: ERROR: cannot reach {down}" in done.stdout
    assert done.returncode == 1


# -- dispatch -------------------------------------------------------------------------


async def test_a_pool_makes_songs_in_parallel_and_records_each_server(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    sims = [SimProcess(tmp_path / f"sim{i}", latency=0.4).start() for i in range(3)]
    try:
        config = pool_config(make_config, *(s.url for s in sims))
        async with Runtime(config, owner="test") as runtime:
            # The first submits fill every server before any server gets a third task.
            jobs = await enqueue(runtime, tmp_path, 9)
            await until(
                lambda: sum(runtime.store.counts_by_server([JobStatus.RUNNING]).values()) >= 6
            )
            busy = runtime.store.counts_by_server([JobStatus.RUNNING])
            assert busy == {s.url: 2 for s in sims}
            done = await finish(runtime, jobs)
            await until(lambda: all(r["avg_seconds"] for r in runtime.service.servers()))
            status = runtime.service.servers()
        stats = [s.stats() for s in sims]
    finally:
        for s in sims:
            s.kill()
    assert all(j.status is JobStatus.DONE for j in done), [j.reason for j in done]
    per_server = Counter(j.server for j in done)
    assert set(per_server) == {s.url for s in sims}
    assert sum(st["submits"] for st in stats) == 9  # no take made twice
    assert sum(st["downloads"] for st in stats) == 9  # and none downloaded twice
    for sim, st in zip(sims, stats, strict=True):
        assert st["submits"] == st["downloads"] == per_server[sim.url]
    assert len(downloads_on_disk(config)) == 9
    records = [j.as_record() for j in done]
    assert {r["server"] for r in records} == {s.url for s in sims}
    sidecar = json.loads((config.folders.output / f"{done[0].base_name}.json").read_text())
    assert sidecar["server"] == done[0].server
    assert config.source_path is not None
    listed = json.loads(cli(config.source_path, "list", "--json").stdout)
    assert {r["id"]: r["server"] for r in listed} == {j.id: j.server for j in done}
    shown = cli(config.source_path, "show", done[0].id).stdout
    assert "server" in shown and str(done[0].server) in shown
    assert [r["url"] for r in status] == [s.url for s in sims]
    assert all(r["healthy"] is True and r["live"] for r in status)
    assert sum(r["done"] for r in status) == 9
    assert all(r["in_flight"] == 0 and r["avg_seconds"] > 0 for r in status)


async def test_a_server_that_is_down_gets_nothing_until_it_answers(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    up = SimProcess(tmp_path / "up", latency=0.2).start()
    late = SimProcess(tmp_path / "late", latency=0.2)  # not started: refuses connections
    try:
        config = pool_config(make_config, up.url, late.url)
        async with Runtime(config, owner="test") as runtime:
            first = await finish(runtime, await enqueue(runtime, tmp_path, 4))
            assert {j.server for j in first} == {up.url}
            [down] = [r for r in runtime.service.servers() if r["url"] == late.url]
            assert down["healthy"] is False and "connect" in (down["reason"] or "").lower()
            status = cli(config.source_path or Path(), "status")
            assert f"{late.url}: DOWN" in status.stdout
            late.start()
            await until(lambda: all(r["healthy"] for r in runtime.service.servers()))
            second = await finish(runtime, await enqueue(runtime, tmp_path, 4, start=4))
            as_json = json.loads(cli(config.source_path or Path(), "status", "--json").stdout)
    finally:
        up.kill()
        late.kill()
    assert all(j.status is JobStatus.DONE for j in first + second)
    assert late.url in {j.server for j in second}
    assert [s["url"] for s in as_json["servers"]] == [up.url, late.url]
    assert all(s["healthy"] for s in as_json["servers"])
    assert TEST_KEY not in json.dumps(as_json)


# -- lost tasks -----------------------------------------------------------------------


async def test_a_server_killed_mid_run_has_its_lost_tasks_made_again_once(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    steady = SimProcess(tmp_path / "steady", latency=0.2).start()
    # Slow enough that nothing finishes on it before it dies.
    doomed = SimProcess(tmp_path / "doomed", latency=60).start()
    try:
        config = pool_config(make_config, steady.url, doomed.url)
        async with Runtime(config, owner="test") as runtime:
            jobs = await enqueue(runtime, tmp_path, 8)
            await until(
                lambda: runtime.store.counts_by_server([JobStatus.RUNNING]).get(doomed.url) == 2
            )
            lost = {
                j.id for j in runtime.store.list_jobs([JobStatus.RUNNING]) if j.server == doomed.url
            }
            doomed.kill()
            doomed.start(latency=0.2)  # back at once, knowing nothing: its tasks answer "[]"
            done = await finish(runtime, jobs)
            histories = {j.id: runtime.service.history(j) for j in done}
        stats = [steady.stats(), doomed.stats()]
    finally:
        steady.kill()
        doomed.kill()
    assert all(j.status is JobStatus.DONE for j in done), [j.reason for j in done]
    made_again = {j.id for j in done if j.resubmits}
    assert made_again == lost
    for job in done:
        names = [e.event for e in histories[job.id]]
        assert names.count("resubmitted") == (1 if job.id in lost else 0)
        assert names.count("generated") == 1  # downloaded once
    reasons = [e.reason or "" for j in lost for e in histories[j] if e.event == "resubmitted"]
    assert all(f"lost on {doomed.url}" in r and "answered '[]'" in r for r in reasons)
    # The killed process took its counters along: the survivors' never exceed one a song.
    assert sum(s["downloads"] for s in stats) <= 8
    assert len(downloads_on_disk(config)) == 8
    assert not list(config.folders.output.glob("*.part"))


async def test_a_single_server_restart_freezes_its_running_task_which_is_made_again(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """ACE-Step after a restart: the running task stays at status 0 with its progress
    frozen, the queued one answers "[]"; /v1/stats says nothing runs. Both are made again
    once, on the same server (a pool of one), and nothing is downloaded twice."""
    with SimProcess(tmp_path / "sim", latency=60) as sim:
        sim.start()
        config = make_config(
            api={"backend": "acestep", "base_url": sim.url},
            queue={"max_in_flight": 2, "poll_min_seconds": 0.1, "poll_max_seconds": 0.3},
        )
        async with Runtime(config, owner="test") as runtime:
            jobs = await enqueue(runtime, tmp_path, 2)
            await until(
                lambda: (
                    len(runtime.store.list_jobs([JobStatus.RUNNING])) == 2
                    and any(
                        (j.progress or 0) > 0 for j in runtime.store.list_jobs([JobStatus.RUNNING])
                    )
                )
            )
            assert sim.post("/_sim/restart") == {"frozen": 1, "kept": 1}
            sim.post("/_sim/faults", {"latency": 0.2})
            done = await finish(runtime, jobs)
            histories = {j.id: runtime.service.history(j) for j in done}
        stats = sim.stats()
    assert all(j.status is JobStatus.DONE for j in done), [j.reason for j in done]
    assert [j.resubmits for j in done] == [1, 1]
    reasons = sorted(
        e.reason or "" for j in done for e in histories[j.id] if e.event == "resubmitted"
    )
    assert any("0 running" in r and "unchanged" in r for r in reasons), reasons
    assert any("answered '[]'" in r for r in reasons), reasons
    assert stats["submits"] == 4  # two lost, each made again exactly once
    assert stats["downloads"] == 2  # one download per song
    assert len(downloads_on_disk(config)) == 2
    assert all(j.server == sim.url for j in done)
