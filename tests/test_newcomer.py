"""What a new user tripped on (issue 29): usage errors that say what was meant, notes that
say how to fix, messages that name the right command."""

from __future__ import annotations

import json
import os
import pty
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MakeConfig
from test_cli_extras import bgh, write

from bygheartd.simulator import RunningSimulator


@pytest.fixture
def offline_cfg(make_config: MakeConfig) -> Path:
    config = make_config(None)
    assert config.source_path is not None
    return config.source_path


def test_a_mistyped_status_is_a_usage_error_with_the_nearest_status(offline_cfg: Path) -> None:
    result = bgh("list", "--status", "faild", config=offline_cfg)
    assert result.returncode == 2, result.stderr
    assert "unknown status 'faild': did you mean 'failed'?" in result.stderr


def test_a_shortened_key_is_matched_to_the_key_it_starts(offline_cfg: Path, tmp_path: Path) -> None:
    song = write(tmp_path, "short.txt", "---\ndur: 30\nstyle: pop\n---\n[Verse]\nla\n")
    result = bgh("submit", "--dry-run", str(song), config=offline_cfg)
    assert "unknown key 'dur': did you mean 'duration'?" in result.stderr, result.stderr
    odd = write(tmp_path, "odd.txt", "---\nzzqqx: 30\n---\n[Verse]\nla\n")
    result = bgh("submit", "--dry-run", str(odd), config=offline_cfg)
    # Nothing near: the usual keys, not all fifty.
    assert "the usual keys are title, style, lyrics" in result.stderr, result.stderr
    assert "repaint_crossfade_frames" not in result.stderr


def test_a_word_where_a_number_belongs_says_how_to_write_it(
    offline_cfg: Path, tmp_path: Path
) -> None:
    song = write(tmp_path, "fast.toml", 'bpm = "fast"\nlyrics = "[Verse]\\nla"\n')
    result = bgh("submit", "--dry-run", str(song), config=offline_cfg)
    assert "bpm must be a number, not 'fast': write a plain number" in result.stderr


def test_a_wait_that_times_out_points_at_follow(offline_cfg: Path, tmp_path: Path) -> None:
    song = write(tmp_path, "slow.txt", "---\nstyle: pop\n---\n[Verse]\nla\n")
    result = bgh("submit", "--wait", "--timeout", "1", str(song), config=offline_cfg)
    assert "after the timeout; they keep going: `bygheartd follow ID` follows one" in (
        result.stderr
    ), result.stderr


@pytest.mark.parametrize(("code", "rc"), [(3, 1), (0, 0)])
def test_open_says_when_the_desktop_opener_fails(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path, code: int, rc: int
) -> None:
    config = make_config(simulator).source_path
    assert config is not None
    song = write(tmp_path, "paper.txt", "---\nstyle: pop\n---\n[Verse]\nla\n")
    [record] = json.loads(bgh("submit", str(song), "--wait", "--json", config=config).stdout)
    tools = tmp_path / "bin"
    tools.mkdir()
    opener = tools / "xdg-open"
    opener.write_text(f"#!/bin/sh\nexit {code}\n")
    opener.chmod(0o755)
    env = {"DISPLAY": ":0", "PATH": f"{tools}:{os.environ['PATH']}"}
    result = bgh("open", record["id"], config=config, env=env)
    assert result.returncode == rc, result.stderr
    path = record["files"][0]["path"]
    if code:
        assert "xdg-open could not open it (exit 3)" in result.stderr
        assert result.stdout.strip() == path  # what the user needs instead
    else:
        assert result.stdout.strip() == f"opening {path}"


def test_guide_on_a_terminal_goes_through_the_pager(tmp_path: Path) -> None:
    paged = tmp_path / "paged.txt"
    pager = tmp_path / "pager"
    pager.write_text(f"#!/bin/sh\ncat > {paged}\n")
    pager.chmod(0o755)
    main, secondary = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bygheartd", "guide"],
            stdin=secondary,
            stdout=secondary,
            stderr=subprocess.PIPE,
            env={**os.environ, "PAGER": str(pager), "MANPAGER": str(pager), "TERM": "xterm"},
            timeout=60,
        )
    finally:
        os.close(secondary)
        os.close(main)
    assert done.returncode == 0, done.stderr
    assert "songwriting guide" in paged.read_text(encoding="utf-8")  # the guide, paged


def test_a_dry_run_in_json_warns_as_submit_does(offline_cfg: Path, tmp_path: Path) -> None:
    song = write(tmp_path, "plain.txt", "[Verse]\nno style anywhere\n")
    [row] = json.loads(bgh("submit", "--dry-run", "--json", str(song), config=offline_cfg).stdout)
    [record] = json.loads(bgh("submit", "--json", str(song), config=offline_cfg).stdout)
    assert row["warnings"] == record["warnings"] and any("style" in w for w in row["warnings"])
    described = bgh(
        "submit", "--dry-run", "--json", "--describe", "a rainy night", config=offline_cfg
    )
    [entry] = json.loads(described.stdout)
    assert entry["file"] is None  # no file: not the option's name


def test_wide_output_into_a_pipe_has_no_padding(offline_cfg: Path, tmp_path: Path) -> None:
    lyrics = "[Verse]\n" + "a long line of lyrics that makes show wide " * 4 + "\n"
    song = write(tmp_path, "wide.txt", "---\nstyle: pop\n---\n" + lyrics)
    [record] = json.loads(bgh("submit", "--json", str(song), config=offline_cfg).stdout)
    for args in (("show", record["id"], "--wide"), ("list", "--wide")):
        out = bgh(*args, config=offline_cfg).stdout
        assert record["id"] in out
        assert all(line == line.rstrip() for line in out.splitlines()), args


def test_show_gives_what_the_model_sang_with_units(
    simulator: RunningSimulator, make_config: MakeConfig
) -> None:
    config = make_config(simulator).source_path
    assert config is not None
    made = bgh("submit", "--describe", "a rainy night", "--wait", "--json", config=config)
    [record] = json.loads(made.stdout)
    shown = bgh("show", record["id"], config=config).stdout
    assert re.search(r"sung duration\s+\d+(\.\d+)? s\b", shown), shown
    if "sung bpm" in shown:
        assert re.search(r"sung bpm\s+\d+ bpm", shown), shown


def test_store_check_counts_one_job_in_the_singular(offline_cfg: Path, tmp_path: Path) -> None:
    bgh("submit", str(write(tmp_path, "one.txt", "---\nstyle: pop\n---\nla\n")), config=offline_cfg)
    checked = bgh("store", "check", config=offline_cfg)
    assert "integrity check passed: 1 job," in checked.stdout, checked.stdout


def test_config_check_reports_every_problem_at_once(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "config.toml",
        '[defaults]\ntakes = 9\nbpm = 120\nlanguage = 5\n[queue]\nmax_in_flight = "x"\n'
        'poll_min_seconds = "y"\n',
    )
    checked = bgh("config", "check", config=config)
    assert checked.returncode == 1
    for problem in (
        "unknown key 'defaults.bpm'",
        "defaults.takes: must be a whole number of at most 8 (got 9)",
        "defaults.language: must be text",
        "queue.max_in_flight: must be a whole number (got 'x')",
        "queue.poll_min_seconds: must be a number (got 'y')",
    ):
        assert problem in checked.stdout + checked.stderr, checked


@pytest.mark.anyio
async def test_follow_prints_prefixes_that_show_accepts_for_jobs_made_together(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    from bygheartd.cli.commands import opened_service
    from bygheartd.cli.follow import Prefixes
    from bygheartd.store.store import DB_NAME

    config = make_config(None)
    assert config.source_path is not None
    songs = [write(tmp_path, f"twin-{n}.txt", "---\nstyle: pop\n---\nla\n") for n in (1, 2)]
    first, second = json.loads(
        bgh("submit", "--json", *map(str, songs), config=config.source_path).stdout
    )
    # Two jobs made in the same millisecond share their first nine characters and more.
    twin = first["id"][:10] + "zzzz"
    with sqlite3.connect(config.state_dir / DB_NAME) as db:
        db.execute("PRAGMA foreign_keys = OFF")
        db.execute("UPDATE events SET job_id = ? WHERE job_id = ?", (twin, second["id"]))
        db.execute("UPDATE jobs SET id = ? WHERE id = ?", (twin, second["id"]))
    async with opened_service(config) as service:
        prefixes = Prefixes(service)
        shown = [await prefixes.of(first["id"]), await prefixes.of(twin)]
    assert [len(p) for p in shown] == [11, 11]
    for prefix, job_id in zip(shown, (first["id"], twin), strict=True):
        record = json.loads(bgh("show", prefix, "--json", config=config.source_path).stdout)
        assert record["id"] == job_id


def test_list_at_80_columns_keeps_titles_and_gives_reasons_their_own_lines(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    from bygheartd.store.store import DB_NAME

    config = make_config(None)
    assert config.source_path is not None
    songs = [
        write(tmp_path, f"m{n}.txt", f"---\ntitle: Midnight God Mode {n}\nstyle: pop\n---\nla\n")
        for n in (1, 2)
    ]
    first, _ = json.loads(
        bgh("submit", "--json", *map(str, songs), config=config.source_path).stdout
    )
    reason = (
        "the server failed the task without a reason (HTTP 200, status 2): try again, or pick "
        "another model"
    )
    with sqlite3.connect(config.state_dir / DB_NAME) as db:
        db.execute(
            "UPDATE jobs SET status = 'failed', reason = ? WHERE id = ?", (reason, first["id"])
        )
    listed = bgh("list", config=config.source_path, env={"COLUMNS": "80"}).stdout
    assert all(len(line) <= 80 for line in listed.splitlines()), listed
    assert "Midnight God Mode" in listed  # the titles keep their room
    assert " ".join(listed.split()).count(reason) == 1, listed  # the reason whole, once


def test_at_80_columns_paths_and_events_wrap_whole(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(simulator).source_path
    assert config is not None
    title = "Rooftop Static in the Long Summer Evening Light"
    song = write(tmp_path, "r.txt", f"---\ntitle: {title}\nstyle: pop\ntakes: 2\n---\nla\n")
    narrow = {"COLUMNS": "80"}
    made = bgh("submit", "--wait", str(song), config=config, env=narrow).stdout
    [record] = json.loads(bgh("list", "--json", config=config).stdout)
    shown = bgh("show", record["id"], config=config, env=narrow).stdout
    assert all(len(line) <= 80 for line in shown.splitlines()), shown
    for out in (made, shown):
        joined = "".join(line.strip() for line in out.splitlines())
        for file in record["files"]:
            assert Path(file["path"]).name in joined, out  # folded, never cut
    assert "post-processed" in shown and record["task_id"] in shown
