"""Issue 12, `submit --wait`: ids first, bars that move on the ETA, a closing table that
reads at 80 columns, and a Ctrl-C that stops the wait but never the jobs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from _daemon import Daemon, list_json, wait_for
from conftest import TEST_KEY, MakeConfig

from bygheartd.cli.waiting import shown
from bygheartd.jobs import JobStatus, utcnow
from bygheartd.simulator import RunningSimulator
from bygheartd.store.store import Store

SONG = """---
title: {title}
style: warm indie folk, male vocal
model: bygheart-melody-fast
duration: 20
---
[Verse]
paper moon above the harbour {n}
"""

LONG = "A Remarkably Long Title For A Song That Cannot Fit Beside Its File Name"


def _env() -> dict[str, str]:
    return {**os.environ, "BYGHEART_API_KEY": TEST_KEY, "COLUMNS": "80"}


def _song(folder: Path, title: str, n: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"song-{n}.txt"
    path.write_text(SONG.format(title=title, n=n), encoding="utf-8")
    return path


def _submit_wait(config: Path, *files: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bygheartd", "--config", str(config), "submit", "--wait"]
        + [str(f) for f in files],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def test_the_bar_moves_on_the_eta_between_polls(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "state")
    try:
        job = store.insert_job(title="t", model=None, request={}, api_body={}, credits=1)
        store.transition(job.id, JobStatus.SUBMITTING, event="submitting")
        job = store.transition(job.id, JobStatus.RUNNING, event="submitted")
        job = store.update(job.id, eta_seconds=10.0)
    finally:
        store.close()
    submitted = (job.submitted_at or job.updated_at).timestamp()
    at_start = shown(job, now=job.updated_at.timestamp())
    assert at_start.status == "running" and at_start.left == "~10 s left"
    later = shown(job, now=job.updated_at.timestamp() + 5)
    assert later.left == "~5 s left"
    elapsed = job.updated_at.timestamp() + 5 - submitted
    assert abs(later.fraction - elapsed / (elapsed + 5)) < 1e-6
    overdue = shown(job, now=job.updated_at.timestamp() + 60)
    assert overdue.left == "any moment" and overdue.fraction < 1.0  # only the store says done
    held = shown(replace(job, status=JobStatus.HELD, resumes_at=utcnow() + timedelta(seconds=90)))
    assert held.left.startswith("held ")


def test_ids_come_first_and_the_closing_table_fits_80_columns(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(simulator)
    assert config.source_path is not None
    songs = [_song(tmp_path / "songs", LONG, 0), _song(tmp_path / "songs", "Short", 1)]
    proc = _submit_wait(config.source_path, *songs)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("queued ") and lines[1].startswith("queued ")
    ids = [line.split()[1] for line in lines[:2]]
    table = lines[2:]
    # Rows fit; the folder line stays whole (a path to copy), however long the tmp path is.
    assert all(len(line) <= 80 for line in table if not line.startswith("files in ")), table
    assert any(ids[1] in line and "short.mp3" in line for line in table), table
    # The long title is cut with an ellipsis, never folded onto a second line mid-word.
    [row] = [line for line in table if ids[0] in line]
    assert "…" in row
    folder_lines = [line for line in table if line.startswith("files in ")]
    assert folder_lines and Path(folder_lines[0].removeprefix("files in ")).resolve() == (
        config.folders.output.resolve()
    )


def test_ctrl_c_without_a_daemon_keeps_the_jobs_and_says_how_to_go_on(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    simulator.set_faults(latency=60.0)
    config = make_config(simulator)
    assert config.source_path is not None
    proc = _submit_wait(config.source_path, _song(tmp_path / "songs", "Long Wait"))
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith("queued "), first
    job_id = first.split()[1]
    wait_for(
        lambda: [j["status"] for j in list_json(config.source_path)] == ["running"],  # type: ignore[arg-type]
        what="the job to be submitted",
    )
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "stopped waiting: 1 job stays in the queue" in err
    assert f"bygheartd follow {job_id}" in err and "`bygheartd run` finishes it" in err
    [record] = list_json(config.source_path)
    assert record["status"] == "running"  # paid for and still generating: not cancelled


def test_ctrl_c_with_a_daemon_running_says_the_daemon_carries_on(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    simulator.set_faults(latency=1.5)
    config = make_config(simulator)
    assert config.source_path is not None
    daemon = Daemon(config.source_path, tmp_path / "daemon.log", env=_env()).start()
    try:
        proc = _submit_wait(config.source_path, _song(tmp_path / "songs", "Carried On"))
        assert proc.stdout is not None
        job_id = proc.stdout.readline().split()[1]
        wait_for(
            lambda: any(j["status"] == "running" for j in list_json(config.source_path)),  # type: ignore[arg-type]
            what="the daemon to submit the job",
        )
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "the daemon carries on with 1 job;" in err
        assert f"bygheartd follow {job_id}" in err
        wait_for(
            lambda: list_json(config.source_path)[0]["status"] == "done",  # type: ignore[arg-type]
            what="the daemon to finish the job",
            proc=daemon,
        )
    finally:
        daemon.stop()
