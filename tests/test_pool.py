"""The server pool (issue 15): several simulated ACE-Step servers as real processes on
loopback ports, driven as one; a server that is down, one restarted mid-run, and the rules
that make a lost task again exactly once."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from _daemon import cli
from _jobs import song
from _misbehaving import MisbehavingProxy, Rule
from _simprocs import SimProcess, free_port
from conftest import TEST_KEY, MakeConfig

from bygheartd.config import Config, parse_config
from bygheartd.engine.lost import ONE_HOUR_REASON
from bygheartd.errors import ConfigError
from bygheartd.jobs import Job, JobStatus, utcnow
from bygheartd.runtime import EngineRole, Runtime

pytestmark = pytest.mark.anyio

MODEL = "acestep-v15-turbo"


def pool_config(make_config: MakeConfig, *urls: str, **queue: Any) -> Config:
    return make_config(
        api={"backend": "acestep", "servers": [{"url": u, "max_in_flight": 2} for u in urls]},
        queue={"poll_min_seconds": 0.1, "poll_max_seconds": 0.3, **queue},
    )


async def enqueue(runtime: Runtime, folder: Path, n: int, start: int = 0) -> list[Job]:
    return [
        await runtime.service.submit_file(
            song(folder, f"song{i}.txt", title=f"Pool song {i}", model=MODEL)
        )
        for i in range(start, start + n)
    ]


async def finish(runtime: Runtime, jobs: list[Job], timeout: float = 60) -> list[Job]:
    return [await runtime.service.wait(j.id, timeout=timeout, interval=0.05) for j in jobs]


async def until(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 30) -> None:
    """Until `predicate` (a plain or an async function) holds."""
    with anyio.fail_after(timeout):
        while True:
            holds = predicate()
            if inspect.isawaitable(holds):
                holds = await holds
            if holds:
                return
            await anyio.sleep(0.02)


async def events(runtime: Runtime, job: Job) -> list[str]:
    return [e.event for e in await runtime.service.history(job)]


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
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            # The first submits fill every server before any server gets a third task.
            jobs = await enqueue(runtime, tmp_path, 9)

            async def six_running() -> bool:
                running = await runtime.store.counts_by_server([JobStatus.RUNNING])
                return sum(running.values()) >= 6

            await until(six_running)
            busy = await runtime.store.counts_by_server([JobStatus.RUNNING])
            assert busy == {s.url: 2 for s in sims}
            done = await finish(runtime, jobs)

            async def all_timed() -> bool:
                return all(r["avg_seconds"] for r in await runtime.service.servers())

            await until(all_timed)
            status = await runtime.service.servers()
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
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            first = await finish(runtime, await enqueue(runtime, tmp_path, 4))
            assert {j.server for j in first} == {up.url}
            [down] = [r for r in await runtime.service.servers() if r["url"] == late.url]
            assert down["healthy"] is False and "connect" in (down["reason"] or "").lower()
            status = cli(config.source_path or Path(), "status")
            assert f"{late.url}: DOWN" in status.stdout
            late.start()

            async def all_healthy() -> bool:
                return all(r["healthy"] for r in await runtime.service.servers())

            await until(all_healthy)
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
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            jobs = await enqueue(runtime, tmp_path, 8)

            async def two_on_doomed() -> bool:
                running = await runtime.store.counts_by_server([JobStatus.RUNNING])
                return running.get(doomed.url) == 2

            await until(two_on_doomed)
            lost = {
                j.id
                for j in await runtime.store.list_jobs([JobStatus.RUNNING])
                if j.server == doomed.url
            }
            doomed.kill()
            doomed.start(latency=0.2)  # back at once, knowing nothing: its tasks answer "[]"
            done = await finish(runtime, jobs)
            histories = {j.id: await runtime.service.history(j) for j in done}
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
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            jobs = await enqueue(runtime, tmp_path, 2)

            async def both_running_one_progressing() -> bool:
                running = await runtime.store.list_jobs([JobStatus.RUNNING])
                return len(running) == 2 and any((j.progress or 0) > 0 for j in running)

            await until(both_running_one_progressing)
            assert sim.post("/_sim/restart") == {"frozen": 1, "kept": 1}
            sim.post("/_sim/faults", {"latency": 0.2})
            done = await finish(runtime, jobs)
            histories = {j.id: await runtime.service.history(j) for j in done}
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


async def test_a_task_the_server_ended_at_its_one_hour_limit_fails_and_is_not_made_again(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """ACE-Step reports a task unfinished an hour after submission as failed (status 2),
    which a restart that froze it also ends in: the job fails with that reason, unrefunded,
    and is not submitted again (it may have been generated and paid)."""
    with SimProcess(tmp_path / "sim", latency=600) as sim:
        sim.start()
        config = pool_config(make_config, sim.url)
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            [job] = await enqueue(runtime, tmp_path, 1)

            async def running() -> bool:
                return (await runtime.store.get(job.id)).status is JobStatus.RUNNING

            await until(running)
        # The engine stopped an hour ago, as it were: the job was submitted 59 minutes ago,
        # and the server's own limit has passed for its task.
        async with Runtime(config, role=EngineRole.MCP, engine=False) as offline:
            await offline.store.update(
                job.id,
                expect={JobStatus.RUNNING},
                submitted_at=utcnow() - timedelta(minutes=59),
            )
        sim.post("/_sim/faults", {"task_timeout_seconds": 0})
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            [failed] = await finish(runtime, [job])
            names = await events(runtime, failed)
        stats = sim.stats()
    assert failed.status is JobStatus.FAILED
    assert ONE_HOUR_REASON in (failed.reason or "")
    assert failed.resubmits == 0 and "resubmitted" not in names
    assert stats["submits"] == 1  # made once, never paid for twice
    assert stats["failed"] == 1


# -- a server's own key file ------------------------------------------------------------


async def test_a_server_whose_key_file_is_missing_is_down_until_the_file_appears(
    make_config: MakeConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only that server is down, with the fix as its reason (in status, and once in the
    log); the others make songs; once the file is there it comes up at its next probe."""
    open_sim = SimProcess(tmp_path / "open", latency=0.2).start()
    locked = SimProcess(tmp_path / "locked", latency=0.2, api_key="gpu2-secret").start()
    key_file = tmp_path / "gpu2.key"
    garbled = tmp_path / "gpu3.key"
    garbled.write_bytes(b"\xff\xfe not a key\n")
    unreadable = f"http://127.0.0.1:{free_port()}"  # never asked: its key cannot be read
    try:
        config = make_config(
            api={
                "backend": "acestep",
                "servers": [
                    {"url": open_sim.url},
                    {"url": locked.url, "api_key_file": str(key_file)},
                    {"url": unreadable, "api_key_file": str(garbled)},
                ],
            },
            queue={"poll_min_seconds": 0.1, "poll_max_seconds": 0.3},
        )
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            assert runtime.service.engine_running
            first = await finish(runtime, await enqueue(runtime, tmp_path, 3))
            by_url = {r["url"]: r for r in await runtime.service.servers()}
            shown = cli(config.source_path or Path(), "status")
            as_json = json.loads(cli(config.source_path or Path(), "status", "--json").stdout)
            key_file.write_text("gpu2-secret\n")
            key_file.chmod(0o600)

            async def locked_up() -> bool:
                return (await runtime.service.servers())[1]["healthy"] is True

            await until(locked_up)
            second = await finish(runtime, await enqueue(runtime, tmp_path, 4, start=3))
            later = {r["url"]: r for r in await runtime.service.servers()}
        locked_stats = locked.stats()
    finally:
        open_sim.kill()
        locked.kill()
    assert all(j.status is JobStatus.DONE for j in first + second)
    assert {j.server for j in first} == {open_sim.url}
    missing = by_url[locked.url]
    assert missing["healthy"] is False
    assert "does not exist" in missing["reason"] and "chmod 600" in missing["reason"]
    assert "remove the key to use the global one" in missing["reason"]
    garbled_reason = by_url[unreadable]["reason"]
    assert "cannot be read" in garbled_reason and "chmod 600" in garbled_reason
    assert f"{locked.url}: DOWN: " in shown.stdout and "does not exist" in shown.stdout
    json_servers = {s["url"]: s for s in as_json["servers"]}
    assert json_servers[locked.url]["reason"] == missing["reason"]
    assert json_servers[open_sim.url]["healthy"] is True
    assert locked.url in {j.server for j in second}
    assert locked_stats["submits"] == locked_stats["downloads"] >= 1
    assert later[unreadable]["healthy"] is False  # still unreadable, still down
    said = [r.getMessage() for r in caplog.records if "is down" in r.getMessage()]
    assert sum(locked.url in line for line in said) == 1
    assert sum(unreadable in line for line in said) == 1
    assert "gpu2-secret" not in caplog.text + shown.stdout + json.dumps(as_json)


def test_a_pool_whose_every_key_file_is_missing_does_not_start(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    urls = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    config = make_config(
        api={
            "backend": "acestep",
            "servers": [
                {"url": u, "api_key_file": str(tmp_path / f"gone{i}.key")}
                for i, u in enumerate(urls)
            ],
        },
    )
    done = cli(config.source_path or Path(), "run", timeout=60)
    assert done.returncode == 1
    assert "no server of [[api.servers]] can be used" in done.stderr
    assert all(u in done.stderr for u in urls)
    assert "does not exist" in done.stderr


# -- poll chunks ------------------------------------------------------------------------


async def test_a_poll_chunk_whose_reply_hangs_does_not_hold_back_the_others(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """One id a chunk (poll_batch 1): every poll of the first task stalls after its reply's
    headers until the test lifts the rule, so nothing of it can finish; the second task,
    submitted later and finished later on the server, is done meanwhile, its chunk going
    beside the hanging one (which the whole-exchange limit cuts off each round)."""
    stall = Rule("/query_result", "stall", first_body_only=True)
    with SimProcess(tmp_path / "sim", latency=0.2) as sim:
        sim.start()
        with MisbehavingProxy(sim.url, stall) as proxy:
            config = make_config(
                api={"backend": "acestep", "base_url": proxy.origin, "timeout_seconds": 0.5},
                queue={
                    "max_in_flight": 2,
                    "poll_batch": 1,
                    "poll_min_seconds": 0.1,
                    "poll_max_seconds": 0.3,
                },
            )
            async with Runtime(config, role=EngineRole.MCP) as runtime:
                [slow] = await enqueue(runtime, tmp_path, 1)
                await until(lambda: stall.hits > 0)  # its polls hang from now on
                [fast] = await enqueue(runtime, tmp_path, 1, start=1)
                [fast_done] = await finish(runtime, [fast])
                slow_then = await runtime.store.get(slow.id)
                proxy.rules.clear()
                [slow_done] = await finish(runtime, [slow])
    assert fast_done.status is JobStatus.DONE
    assert slow_then.status is JobStatus.RUNNING  # no reply of its ever came through
    assert slow_done.status is JobStatus.DONE
    assert stall.pinned is not None and (slow_done.task_id or "?") in stall.pinned


async def test_status_shows_the_hosted_apis_health_live_while_an_engine_runs(
    simulator: Any, make_config: MakeConfig
) -> None:
    async with Runtime(make_config(simulator), role=EngineRole.MCP) as runtime:

        async def live() -> bool:
            servers = await runtime.service.servers()
            return bool(servers and servers[0]["live"] and servers[0]["healthy"] is not None)

        await until(live)
        [server] = await runtime.service.servers()
    assert server["url"] == simulator.base_url and server["healthy"] is True
