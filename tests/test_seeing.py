"""Issue 12, "Seeing what happens": the daemon's log lines per song, `bygheartd follow`,
and tables that stay readable at 80 columns. Everything runs as users run it: the CLI and
`bygheartd run` as subprocesses, the simulator on loopback.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _daemon import Daemon, cli, submit, wait_for, write_songs
from conftest import MakeConfig

from bygheartd.jobs import JobStatus
from bygheartd.simulator import RunningSimulator, SimulatorSettings
from bygheartd.store.store import Store

LONG_TITLE = "An Extraordinarily Long Song Title That Would Never Fit Into One Table Cell"


@pytest.fixture
def sim_settings() -> SimulatorSettings:
    # One 429 on the first submit: the daemon holds that job once, then finishes it.
    return SimulatorSettings(
        latency=0.2, audio_scale=0.02, seed=5, rate_limit_burst=1, retry_after=0.2
    )


@pytest.fixture
def columns_80(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")


def config_path(tmp_path: Path) -> Path:
    return tmp_path / "config.toml"


def fill_store(state: Path, count: int) -> list[str]:
    """`count` jobs straight into the store (no server needed to list them)."""
    store = Store.open(state)
    try:
        ids = []
        for n in range(count):
            job = store.insert_job(
                title=LONG_TITLE if n == count - 1 else f"Song {n}",
                model="bygheart-studio-pro",
                request={},
                api_body={},
                credits=4,
            )
            ids.append(job.id)
        store.transition(
            ids[-1],
            JobStatus.HELD,
            event="held (rate)",
            reason="the server answered 429 because its queue is full; trying again later on",
        )
        return ids
    finally:
        store.close()


# -- the daemon's log -------------------------------------------------------------------


def test_the_daemon_logs_one_line_per_finished_song_and_per_hold(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    make_config(simulator)
    daemon = Daemon(config_path(tmp_path), tmp_path / "daemon.log").start()
    try:
        [path] = write_songs(tmp_path / "songs", 1, tag="logline")
        [job] = submit(config_path(tmp_path), [path])
        wait_for(
            lambda: f"job {job['id']} done" in daemon.log(),
            what="the done line",
            proc=daemon,
            timeout=30,
        )
    finally:
        daemon.stop()
    log = daemon.log()
    [held] = [line for line in log.splitlines() if f"job {job['id']} ({job['title']}) held" in line]
    assert "held (rate) until" in held and "INFO" in held
    [done] = [line for line in log.splitlines() if f"job {job['id']} done" in line]
    assert "INFO" in done and "'Logline Song 0'" in done
    assert "1 file (logline-song-0.mp3)" in done
    assert done.endswith("s from submit to done")


def test_the_mcp_http_session_lines_stay_out_of_the_log_at_info(tmp_path: Path) -> None:
    """ "Terminating session: None" came four times per MCP-over-HTTP call."""
    code = (
        "import logging, sys\n"
        "from bygheartd.logs import setup_logging\n"
        "setup_logging('info')\n"
        "logging.getLogger('mcp.server.streamable_http').info('Terminating session: None')\n"
        "logging.getLogger('bygheartd.engine').info('still here')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "still here" in done.stderr
    assert "Terminating session" not in done.stderr


def test_ctrl_c_stops_the_simulator_quietly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bygheartd", "simulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("http://")
        assert proc.stderr is not None
        # Serving once its startup line is out: then a Ctrl-C is uvicorn's to handle.
        while "Application startup complete" not in proc.stderr.readline():
            pass
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode in (0, 130)
    assert "Aborted" not in err and "Traceback" not in err
    assert err.rstrip().splitlines()[-1] == "bygheartd simulator: stopped"


# -- bygheartd follow --------------------------------------------------------------------


def test_follow_of_one_job_streams_its_events_and_ends_when_it_is_done(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path, columns_80: None
) -> None:
    make_config(simulator)
    daemon = Daemon(config_path(tmp_path), tmp_path / "daemon.log").start()
    try:
        [path] = write_songs(tmp_path / "songs", 1, tag="followed")
        [job] = submit(config_path(tmp_path), [path])
        done = cli(config_path(tmp_path), "follow", job["id"][:8], timeout=60)
        as_json = cli(config_path(tmp_path), "follow", "--json", job["id"], timeout=60)
    finally:
        daemon.stop()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert all(job["id"][:8] in line and "Followed Song 0" in line for line in lines)
    assert "created → queued" in lines[0]
    assert "held (rate) submitting → held" in done.stdout
    assert "done processing → done" in lines[-1]
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert as_json.returncode == 0
    assert len(records) == len(lines)
    assert records[0] | {"at": None, "seq": None} == {
        "seq": None,
        "job_id": job["id"],
        "title": "Followed Song 0",
        "at": None,
        "event": "created",
        "from": None,
        "to": "queued",
        "reason": "from cli",
    }
    assert records[-1]["to"] == "done"
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)


def test_follow_exits_1_when_a_followed_job_is_cancelled(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config()
    ids = fill_store(config.state_dir, 2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bygheartd", "--config", str(config_path(tmp_path)), "follow", *ids],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = [proc.stdout.readline() for _ in range(3)]  # created, created, held
        assert cli(config_path(tmp_path), "cancel", ids[0]).returncode == 0
        assert cli(config_path(tmp_path), "cancel", ids[1]).returncode == 0
        rest, err = proc.communicate(timeout=30)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 1, err
    assert sum("cancelled" in line for line in rest.splitlines()) == 2
    prefix = seen[0].split()[1]  # 8 characters, more when another job shares them
    assert len(prefix) >= 8 and ids[0].startswith(prefix)


def test_follow_without_jobs_shows_new_events_of_every_job_until_ctrl_c(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config()
    ids = fill_store(config.state_dir, 1)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bygheartd",
            "--config",
            str(config_path(tmp_path)),
            "follow",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        recent = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert [r["event"] for r in recent] == ["created", "held (rate)"]
        assert cli(config_path(tmp_path), "cancel", ids[0]).returncode == 0
        assert json.loads(proc.stdout.readline())["event"] == "cancelled"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 130
    assert err == ""


# -- tables at 80 columns ----------------------------------------------------------------


def test_list_fits_80_columns_cutting_long_cells_with_an_ellipsis(
    make_config: MakeConfig, tmp_path: Path, columns_80: None
) -> None:
    config = make_config()
    fill_store(config.state_dir, 3)
    done = cli(config_path(tmp_path), "list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    [row] = [line for line in lines if line.split()[1:2] == ["held"]]
    assert "An Extra" in row and "…" in row and LONG_TITLE not in done.stdout
    assert "studio-pro" in done.stdout and "bygheart-studio-pro" not in done.stdout
    assert len(row.split()[0]) == 14  # the id stays whole, to paste into `show`

    wide = cli(config_path(tmp_path), "list", "--wide")
    assert LONG_TITLE in wide.stdout and "bygheart-studio-pro" in wide.stdout
    assert "…" not in wide.stdout


def test_show_fits_80_columns(make_config: MakeConfig, tmp_path: Path, columns_80: None) -> None:
    config = make_config()
    ids = fill_store(config.state_dir, 1)
    done = cli(config_path(tmp_path), "show", ids[0])
    assert done.returncode == 0, done.stderr
    assert all(len(line) <= 80 for line in done.stdout.splitlines()), done.stdout
    assert "…" not in done.stdout  # the hold's reason wraps, whole (issue 29)


def test_show_wide_keeps_long_values_whole(
    make_config: MakeConfig, tmp_path: Path, columns_80: None
) -> None:
    config = make_config()
    source = str(tmp_path / ("a-folder-with-a-very-long-name-" * 3) / "song-file.md")
    reason = "the server answered 500 three times in a row; " * 3
    store = Store.open(config.state_dir)
    try:
        job = store.insert_job(
            title=LONG_TITLE, model=None, request={}, api_body={}, credits=4, source=source
        )
        store.transition(job.id, JobStatus.FAILED, event="failed", reason=reason.strip())
    finally:
        store.close()

    fitted = cli(config_path(tmp_path), "show", job.id)
    assert all(len(line) <= 80 for line in fitted.stdout.splitlines()), fitted.stdout
    assert source not in fitted.stdout

    wide = cli(config_path(tmp_path), "show", job.id, "--wide")
    assert wide.returncode == 0, wide.stderr
    assert "…" not in wide.stdout
    lines = wide.stdout.splitlines()
    assert any(source in line for line in lines)  # on one line, to copy
    assert sum(reason.strip() in line for line in lines) == 2  # the facts and the history


def test_list_has_a_default_limit_and_says_so(
    make_config: MakeConfig, tmp_path: Path, columns_80: None
) -> None:
    config = make_config()
    fill_store(config.state_dir, 53)
    done = cli(config_path(tmp_path), "list", "--json")
    assert len(json.loads(done.stdout)) == 50
    assert done.stderr.strip() == "50 of 53 jobs shown: --limit N or --all"
    table = cli(config_path(tmp_path), "list", "--limit", "3")
    rows = table.stdout.split("\nwhy")[0].splitlines()  # reasons, if any, come below
    assert len(rows) == 4  # header and three jobs
    assert "3 of 53 jobs shown" in table.stderr
    everything = cli(config_path(tmp_path), "list", "--all", "--json")
    assert len(json.loads(everything.stdout)) == 53 and everything.stderr == ""


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_list_rejects_a_limit_below_one(
    make_config: MakeConfig, tmp_path: Path, limit: str
) -> None:
    make_config()
    done = cli(config_path(tmp_path), "list", "--limit", limit)
    assert done.returncode == 2
    assert "--limit" in done.stderr and "Traceback" not in done.stderr


def test_follow_lines_fit_in_terminal_cells_with_wide_characters() -> None:
    """東京 takes four cells, not two: a line cut by characters overflows the terminal."""
    from rich.cells import cell_len

    from bygheartd.cli.follow import TITLE_WIDTH, event_line
    from bygheartd.jobs import Event, utcnow
    from bygheartd.store.store import JobEvent

    event = Event(utcnow(), "held (rate)", "queued", "held", "the server answered 429 " * 4)
    for title in ("東京の夜に降る雨の歌をずっと歌い続けるための長い題名", "Short", "東京"):
        item = JobEvent(seq=1, job_id="1m8tabcdefgh", title=title, event=event)
        line = event_line(item, width=80)
        assert cell_len(line) <= 80 and line.endswith("…"), line
        # The event starts in the same column whatever the title's script.
        whole = event_line(item)
        prefix = whole[: whole.index(" held (rate)")]
        assert cell_len(prefix) == len("00:00:00 1m8tabcd ") + TITLE_WIDTH, prefix
