"""A `kill -9` of `bygheartd run` while a retake is made never loses the earlier takes and
never pays twice: the retake's task is polled again (not resubmitted), its takes join the
job's, and a retake caught in its submit gets the usual crash rule (DESIGN.md)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _daemon import Daemon, Jobs, cli, list_json, submit, wait_for

from bygheartd.config import Config
from bygheartd.simulator import RunningSimulator, SimulatorSettings

MakeConfig = Callable[..., Config]

SONG = """---
title: Crash Retake {n}
style: synth pop, marker-retake-{n} [sim:cut_short, times=1]
model: bygheart-melody-fast
duration: 30
---
[Verse]
made again, whatever happens
"""


@pytest.fixture
def sim_settings() -> SimulatorSettings:
    return SimulatorSettings(latency=0.3, audio_scale=0.1, seed=3)


@pytest.fixture
def setup(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Config, Path, Daemon, Jobs]]:
    monkeypatch.delenv("BYGHEARTD_LOAD_PLUGINS")  # the daemon runs the quality gate
    config = make_config(
        simulator,
        queue={"poll_min_seconds": 0.1, "poll_max_seconds": 0.3},
        plugins={"enabled": ["quality"]},
        retakes={"max": 1},
        **{"plugins.quality": {"min_duration_ratio": 0.05}},
    )
    config_path = tmp_path / "config.toml"
    daemon = Daemon(config_path, tmp_path / "daemon.log")
    jobs = Jobs(config)
    try:
        yield config, config_path, daemon, jobs
    finally:
        daemon.stop()
        jobs.close()


def song(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"retake-{n}.txt"
    path.write_text(SONG.format(n=n), encoding="utf-8")
    return path


def tasks_for(sim: RunningSimulator, marker: str) -> int:
    return sum(marker in task.params.prompt for task in list(sim.sim.tasks.values()))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def retaking(jobs: Jobs, job_id: str, status: str) -> bool:
    job = jobs.store.get(job_id)
    return bool(job.result.retakes) and job.status.value == status


def test_kill_while_the_retake_runs_keeps_the_first_take_and_pays_once_more(
    simulator: RunningSimulator, setup: tuple[Config, Path, Daemon, Jobs], tmp_path: Path
) -> None:
    config, config_path, daemon, jobs = setup
    daemon.start()
    [record] = submit(config_path, [song(tmp_path / "songs", 1)])
    job_id = record["id"]
    simulator.set_faults(latency=2.0)  # the retake stays `running` long enough to be caught
    wait_for(lambda: retaking(jobs, job_id, "running"), what="the retake running", proc=daemon)
    first = jobs.store.get(job_id).takes()[0].path
    before = sha(first)
    daemon.kill9()
    simulator.set_faults(latency=0.3)

    daemon.start()
    wait_for(lambda: jobs.all_in([job_id], {"done", "failed"}), what="the job", proc=daemon)
    [done] = [r for r in list_json(config_path) if r["id"] == job_id]
    assert done["status"] == "done", done
    names = [Path(f["path"]).name for f in done["files"]]
    assert names == ["crash-retake-1.mp3", "crash-retake-1.take2.mp3"]
    assert sha(first) == before  # the earlier take, untouched
    assert tasks_for(simulator, "marker-retake-1") == 2  # the first task and one retake
    show = json.loads(cli(config_path, "show", "--json", job_id).stdout)
    assert show["keeper"]["take"] == 2 and show["credits"] == 2
    submits = [e for e in show["history"] if e["to"] == "submitting"]
    assert len(submits) == 2, show["history"]
    assert not list(config.folders.output.glob("*.part"))


def test_kill_during_the_retakes_submit_ends_the_song_with_the_takes_it_had(
    simulator: RunningSimulator, setup: tuple[Config, Path, Daemon, Jobs], tmp_path: Path
) -> None:
    config, config_path, daemon, jobs = setup
    daemon.start()
    [record] = submit(config_path, [song(tmp_path / "songs", 2)])
    job_id = record["id"]
    wait_for(lambda: jobs.all_in([job_id], {"running"}), what="the first task", proc=daemon)
    simulator.set_faults(slow_reply_seconds=3.0)  # the retake's submit hangs before its reply
    wait_for(lambda: retaking(jobs, job_id, "submitting"), what="the retake's submit", proc=daemon)
    first = jobs.store.get(job_id).takes()[0].path
    before = sha(first)
    daemon.kill9()
    simulator.set_faults(slow_reply_seconds=0.0)

    daemon.start()
    wait_for(lambda: jobs.all_in([job_id], {"done", "failed"}), what="the crash rule", proc=daemon)
    # The retake's outcome is unknown (never sent again), and the song is not failed for
    # it: it ends with the take it had, named its keeper, the retake's failure said.
    [done] = [r for r in list_json(config_path) if r["id"] == job_id]
    assert done["status"] == "done", done
    assert [Path(f["path"]).name for f in done["files"]] == ["crash-retake-2.mp3"]
    assert done["keeper"] is not None and done["keeper"]["take"] == 1
    assert any(
        w.startswith("the retake failed: submission outcome unknown") for w in done["warnings"]
    ), done["warnings"]
    events = [e.event for e in jobs.store.history(job_id)]
    assert events.count("retake failed") == 1 and events[-1] == "done"
    assert sha(first) == before  # never sent again, and what it had is still there
    assert tasks_for(simulator, "marker-retake-2") <= 2
    assert not list(config.folders.output.glob("*.part"))


def test_a_dropped_song_cut_short_ends_with_the_passing_retake_in_the_keepers_folder(
    simulator: RunningSimulator,
    setup: tuple[Config, Path, Daemon, Jobs],
    make_config: MakeConfig,
    tmp_path: Path,
) -> None:
    """The issue's "done when": nobody listens, and the keepers folder gets a whole song."""
    _, config_path, daemon, jobs = setup
    keepers = tmp_path / "keepers"
    config = make_config(
        simulator,
        queue={"poll_min_seconds": 0.1, "poll_max_seconds": 0.3},
        plugins={"enabled": ["quality", "tags"]},
        retakes={"max": 1},
        folders={"keepers": str(keepers)},
        **{"plugins.quality": {"min_duration_ratio": 0.05}},
    )
    daemon.start()
    song(tmp_path / "songs", 3).rename(config.folders.inbox / "dropped.txt")
    wait_for(lambda: any(config.folders.archive.iterdir()), what="the drop taken", proc=daemon)
    [record] = list_json(config_path)
    wait_for(lambda: jobs.all_in([record["id"]], {"done", "failed"}), what="done", proc=daemon)
    show = json.loads(cli(config_path, "show", "--json", record["id"]).stdout)
    assert show["status"] == "done"
    assert [Path(f["path"]).name for f in show["files"]] == [
        "crash-retake-3.mp3",
        "crash-retake-3.take2.mp3",
    ]
    assert show["keeper"]["take"] == 2 and show["keeper"]["by"] == "gate"
    [copy] = keepers.iterdir()
    assert copy.name == "crash-retake-3.mp3"
    assert sha(copy) == sha(Path(show["keeper"]["path"]))
    assert [e["event"] for e in show["history"]].count("retake") == 1
    assert "is made again: retake 1 of 1" in daemon.log()
