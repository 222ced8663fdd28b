"""Crash safety with real processes: `kill -9` of `bygheartd run` in every stage, SIGTERM
drains, and the engine lock between a daemon and other commands (DESIGN.md, "Job lifecycle").

The simulator runs in this process, so the tests read its ledger of submitted tasks directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _daemon import Daemon, Jobs, cli, list_json, submit, wait_for, write_songs

from bygheartd.config import Config
from bygheartd.simulator import RunningSimulator, SimulatorSettings

MakeConfig = Callable[..., Config]
QUEUE = {"poll_min_seconds": 0.1, "poll_max_seconds": 0.3}


@pytest.fixture
def sim_settings() -> SimulatorSettings:
    return SimulatorSettings(latency=0.6, audio_scale=0.1, seed=3)


@pytest.fixture
def setup(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> Iterator[tuple[Config, Path, Daemon, Jobs]]:
    config = make_config(simulator, queue=QUEUE)
    config_path = tmp_path / "config.toml"
    daemon = Daemon(config_path, tmp_path / "daemon.log")
    jobs = Jobs(config)
    try:
        yield config, config_path, daemon, jobs
    finally:
        daemon.stop()
        jobs.close()


def server_submissions(sim: RunningSimulator) -> dict[str, int]:
    """How many tasks the simulator created per song marker (its own ledger)."""
    counts: dict[str, int] = {}
    for task in list(sim.sim.tasks.values()):
        marker = next(w for w in task.params.prompt.split() if w.startswith("marker-"))
        counts[marker] = counts.get(marker, 0) + 1
    return counts


def assert_delivered(config: Config, records: list[dict[str, Any]], sim: RunningSimulator) -> None:
    """Each done job: its audio, byte-identical to the server's, and its sidecar."""
    output = config.folders.output
    assert not list(output.glob("*.part")), "a .part file was left behind"
    for record in records:
        if record["status"] != "done":
            continue
        assert record["files"], record
        server_files = sim.sim.tasks[record["task_id"]].files
        for got, served in zip(record["files"], server_files, strict=True):
            data = Path(got["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == got["sha256"]
            assert data == served.read_bytes()
        sidecars = [json.loads(p.read_text()) for p in output.glob("*.json")]
        mine = [s for s in sidecars if s["job_id"] == record["id"]]
        assert len(mine) == 1 and mine[0]["status"] == "done"
        assert {f["sha256"] for f in mine[0]["files"]} == {f["sha256"] for f in record["files"]}


def assert_submitted_once(sim: RunningSimulator, records: list[dict[str, Any]]) -> None:
    per_marker = server_submissions(sim)
    assert all(n == 1 for n in per_marker.values()), per_marker
    task_ids = [r["task_id"] for r in records if r["task_id"]]
    assert len(set(task_ids)) == len(task_ids)
    assert set(task_ids) <= set(sim.sim.tasks)


# -- kill -9 -----------------------------------------------------------------------------


def test_kill_during_submit_fails_that_job_as_outcome_unknown_and_never_resubmits_it(
    simulator: RunningSimulator,
    setup: tuple[Config, Path, Daemon, Jobs],
    make_config: MakeConfig,
    tmp_path: Path,
) -> None:
    config, config_path, daemon, jobs = setup
    make_config(simulator, queue={**QUEUE, "max_in_flight": 1})  # one submits, one waits
    daemon.start()
    simulator.set_faults(slow_reply_seconds=1.5)  # the submit hangs before its reply
    ids = [r["id"] for r in submit(config_path, write_songs(tmp_path / "songs", 2))]
    wait_for(lambda: "submitting" in jobs.statuses(ids), what="a submit in flight", proc=daemon)
    caught = jobs.statuses(ids)
    assert sorted(caught) == ["queued", "submitting"]
    daemon.kill9()
    simulator.set_faults(slow_reply_seconds=0.0)

    daemon.start()
    wait_for(lambda: jobs.all_in(ids, {"done", "failed"}), what="every job to end", proc=daemon)
    records = {r["id"]: r for r in list_json(config_path)}
    for job_id, before in zip(ids, caught, strict=True):
        record = records[job_id]
        if before == "submitting":
            assert record["status"] == "failed"
            assert "submission outcome unknown" in record["reason"]
            assert record["task_id"] is None
            show = json.loads(cli(config_path, "show", "--json", job_id).stdout)
            tries = [e for e in show["history"] if e["to"] == "submitting"]
            assert len(tries) == 1, show["history"]  # never sent a second time
        else:
            assert record["status"] == "done", record
    # the simulator may or may not have created the orphan (the client hung up before it
    # read the body); either way no song reached it twice
    assert_submitted_once(simulator, list(records.values()))
    assert_delivered(config, list(records.values()), simulator)


def test_kill_while_running_resumes_polling_and_every_job_finishes(
    simulator: RunningSimulator, setup: tuple[Config, Path, Daemon, Jobs], tmp_path: Path
) -> None:
    config, config_path, daemon, jobs = setup
    simulator.set_faults(latency=2.0)
    daemon.start()
    ids = [r["id"] for r in submit(config_path, write_songs(tmp_path / "songs", 3))]
    wait_for(lambda: jobs.all_in(ids, {"running"}), what="all running", proc=daemon)
    daemon.kill9()

    daemon.start()
    wait_for(lambda: jobs.all_in(ids, {"done", "failed"}), what="every job", proc=daemon)
    records = list_json(config_path)
    assert [r["status"] for r in records] == ["done"] * 3
    assert_submitted_once(simulator, records)
    assert simulator.sim.stats.submits == 3
    assert_delivered(config, records, simulator)


def test_kill_while_downloading_resumes_the_part_file_and_leaves_no_part_behind(
    simulator: RunningSimulator, setup: tuple[Config, Path, Daemon, Jobs], tmp_path: Path
) -> None:
    config, config_path, daemon, jobs = setup
    daemon.start()
    ids = [r["id"] for r in submit(config_path, write_songs(tmp_path / "songs", 2))]
    wait_for(lambda: jobs.all_in(ids, {"running"}), what="all running", proc=daemon)
    # every download now breaks off after 2 KiB: the jobs stay in `downloading`
    simulator.set_faults(drop_download_burst=100_000, drop_download_after_bytes=2048)
    output = config.folders.output
    wait_for(
        lambda: jobs.all_in(ids, {"downloading"}) and any(output.glob("*.part")),
        what="a download in progress",
        proc=daemon,
    )
    daemon.kill9()
    assert list(output.glob("*.part"))
    simulator.set_faults(drop_download_burst=0)

    daemon.start()
    wait_for(lambda: jobs.all_in(ids, {"done", "failed"}), what="every job", proc=daemon)
    records = list_json(config_path)
    assert [r["status"] for r in records] == ["done"] * 2
    assert_submitted_once(simulator, records)
    assert_delivered(config, records, simulator)


def test_kill_between_placing_a_take_and_removing_its_part_leaves_no_part_behind(
    simulator: RunningSimulator, setup: tuple[Config, Path, Daemon, Jobs], tmp_path: Path
) -> None:
    config, config_path, daemon, jobs = setup
    daemon.start()
    ids = [r["id"] for r in submit(config_path, write_songs(tmp_path / "songs", 1))]
    wait_for(lambda: jobs.all_in(ids, {"running"}), what="running", proc=daemon)
    simulator.set_faults(drop_download_burst=100_000, drop_download_after_bytes=2048)
    output = config.folders.output
    wait_for(lambda: any(output.glob("*.part")), what="a download in progress", proc=daemon)
    daemon.kill9()
    simulator.set_faults(drop_download_burst=0)
    # the disk as `_place` leaves it when the process dies right after os.link():
    # the verified take under its final name, and the same inode still named .part
    [part] = output.glob("*.part")
    served = simulator.sim.tasks[str(jobs.store.get(ids[0]).task_id)].files[0]
    part.write_bytes(served.read_bytes())
    os.link(part, part.with_suffix(served.suffix))

    daemon.start()
    wait_for(lambda: jobs.all_in(ids, {"done", "failed"}), what="the job", proc=daemon)
    records = list_json(config_path)
    assert [r["status"] for r in records] == ["done"]
    assert_delivered(config, records, simulator)


# -- SIGTERM -----------------------------------------------------------------------------


def test_sigterm_drains_and_exits_zero_with_a_one_line_summary(
    simulator: RunningSimulator, setup: tuple[Config, Path, Daemon, Jobs], tmp_path: Path
) -> None:
    config, config_path, daemon, jobs = setup
    simulator.set_faults(latency=1.5)
    daemon.start()
    ids = [r["id"] for r in submit(config_path, write_songs(tmp_path / "songs", 2))]
    wait_for(lambda: jobs.all_in(ids, {"running"}), what="all running", proc=daemon)
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0
    assert time.monotonic() - started < 10
    summary = [line for line in daemon.log().splitlines() if "shutdown on SIGTERM" in line]
    assert len(summary) == 1, daemon.log()
    counts = re.search(
        r"(\d+) jobs? done ◆ (\d+) failed ◆ (\d+) cancelled ◆ (\d+) still queued or running",
        summary[0],
    )
    assert counts is not None, summary
    done, failed, cancelled, still = map(int, counts.groups())
    assert (done + still, failed, cancelled) == (2, 0, 0)

    daemon.start()  # what was running is picked up again
    wait_for(lambda: jobs.all_in(ids, {"done", "failed"}), what="every job", proc=daemon)
    records = list_json(config_path)
    assert [r["status"] for r in records] == ["done"] * 2
    assert_submitted_once(simulator, records)
    assert_delivered(config, records, simulator)


def test_sigterm_while_downloading_loses_nothing(
    simulator: RunningSimulator, setup: tuple[Config, Path, Daemon, Jobs], tmp_path: Path
) -> None:
    config, config_path, daemon, jobs = setup
    daemon.start()
    ids = [r["id"] for r in submit(config_path, write_songs(tmp_path / "songs", 2))]
    wait_for(lambda: jobs.all_in(ids, {"running"}), what="all running", proc=daemon)
    simulator.set_faults(drop_download_burst=100_000, drop_download_after_bytes=2048)
    output = config.folders.output
    wait_for(
        lambda: jobs.all_in(ids, {"downloading"}) and any(output.glob("*.part")),
        what="a download in progress",
        proc=daemon,
    )
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    # No second engine started while the first drained: two would append the same takes
    # to one .part file, and the resumed take would differ from the server's.
    assert daemon.log().count("engine started") == 1, daemon.log()
    simulator.set_faults(drop_download_burst=0)

    daemon.start()
    wait_for(lambda: jobs.all_in(ids, {"done", "failed"}), what="every job", proc=daemon)
    records = list_json(config_path)
    assert [r["status"] for r in records] == ["done"] * 2
    assert_submitted_once(simulator, records)
    assert_delivered(config, records, simulator)


# -- the engine lock ---------------------------------------------------------------------


def test_a_second_run_on_the_same_state_folder_refuses_with_a_clear_message(
    setup: tuple[Config, Path, Daemon, Jobs],
) -> None:
    config, config_path, daemon, _ = setup
    daemon.start()
    second = cli(config_path, "run", timeout=20)
    assert second.returncode == 1
    assert "another `bygheartd run`" in second.stderr
    assert f"pid {daemon.pid}" in second.stderr
    assert str(config.state_dir) in second.stderr
    assert daemon.proc is not None and daemon.proc.poll() is None  # the first one is unharmed


def test_submit_wait_with_a_daemon_running_uses_the_daemons_engine(
    simulator: RunningSimulator, setup: tuple[Config, Path, Daemon, Jobs], tmp_path: Path
) -> None:
    config, config_path, daemon, _ = setup
    daemon.start()
    song = write_songs(tmp_path / "songs", 1)
    done = cli(config_path, "--log-level", "info", "submit", "--wait", "--json", str(song[0]))
    assert done.returncode == 0, done.stderr
    [record] = json.loads(done.stdout)
    assert record["status"] == "done"
    assert "engine running in this process" not in done.stderr
    assert simulator.sim.stats.submits == 1
    status = json.loads(cli(config_path, "status", "--json").stdout)
    assert status["engine"]["pid"] == daemon.pid
    assert_delivered(config, [record], simulator)
