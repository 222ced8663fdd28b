"""The command line as users and scripts call it: real `python -m bygheartd` subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEST_KEY, MakeConfig

from bygheartd.simulator import RunningSimulator

SONG = """---
title: Paper Moon
style: warm indie folk, male vocal
model: bygheart-melody-fast
duration: 20
---
[Verse]
paper moon above the harbour
"""


def bgh(
    *args: str, config: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BYGHEART_API_KEY": TEST_KEY,
        "BYGHEARTD_LOAD_PLUGINS": "",
        "COLUMNS": "250",  # wide tables: no folded cells to match across
    }
    cmd = [sys.executable, "-m", "bygheartd", *args]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture
def cfg(simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path) -> Path:
    config = make_config(simulator)
    assert config.source_path is not None
    return config.source_path


@pytest.fixture
def song_file(tmp_path: Path) -> Path:
    path = tmp_path / "paper-moon.txt"
    path.write_text(SONG, encoding="utf-8")
    return path


def test_submit_wait_makes_the_song_and_prints_json_records(cfg: Path, song_file: Path) -> None:
    result = bgh("submit", str(song_file), "--wait", "--json", config=cfg)
    assert result.returncode == 0, result.stderr
    [record] = json.loads(result.stdout)
    assert record["status"] == "done" and record["title"] == "Paper Moon"
    assert set(record) >= {
        "id",
        "status",
        "title",
        "model",
        "task_id",
        "reason",
        "resumes_at",
        "progress",
        "eta_seconds",
        "files",
        "credits",
        "created_at",
        "updated_at",
    }
    [file] = record["files"]
    assert Path(file["path"]).is_file() and file["uri"].startswith("file://")
    assert record["created_at"].endswith("Z")
    assert TEST_KEY not in result.stdout + result.stderr


def test_submit_without_daemon_queues_and_says_how_to_start_one(cfg: Path, song_file: Path) -> None:
    result = bgh("submit", str(song_file), config=cfg)
    assert result.returncode == 0
    assert "queued" in result.stdout
    assert "bygheartd run" in result.stderr
    listed = json.loads(bgh("list", "--json", "--status", "queued", config=cfg).stdout)
    assert [r["title"] for r in listed] == ["Paper Moon"]


def test_dry_run_validates_and_shows_the_cost(cfg: Path, song_file: Path) -> None:
    result = bgh("submit", "--dry-run", str(song_file), config=cfg)
    assert result.returncode == 0
    assert "1 credit," in result.stdout and "1 credits" not in result.stdout
    assert "29 left today after this job" in result.stdout and "nothing was spent" in result.stdout
    assert json.loads(bgh("list", "--json", config=cfg).stdout) == []


def test_invalid_song_file_gives_file_key_and_fix(cfg: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("---\ntitle: X\ntempo_bpm: 120\n---\nla la\n")
    result = bgh("submit", str(bad), config=cfg)
    assert result.returncode == 1
    assert "tempo_bpm" in result.stderr and "did you mean 'bpm'" in result.stderr


def test_show_cancel_and_retry_accept_an_id_prefix(cfg: Path, song_file: Path) -> None:
    [record] = json.loads(bgh("submit", str(song_file), "--json", config=cfg).stdout)
    prefix = record["id"][:8]
    shown = json.loads(bgh("show", prefix, "--json", config=cfg).stdout)
    assert shown["id"] == record["id"] and shown["history"][0]["event"] == "created"
    assert bgh("cancel", prefix, config=cfg).returncode == 0
    assert json.loads(bgh("show", prefix, "--json", config=cfg).stdout)["status"] == "cancelled"
    assert bgh("retry", prefix, config=cfg).returncode == 0
    assert json.loads(bgh("show", prefix, "--json", config=cfg).stdout)["status"] == "queued"
    missing = bgh("show", "zzzzzzzz", config=cfg)
    assert missing.returncode == 1 and "no job matches" in missing.stderr


def test_options_work_before_and_after_the_subcommand(cfg: Path) -> None:
    env = {**os.environ, "BYGHEART_API_KEY": TEST_KEY}
    before = subprocess.run(
        [sys.executable, "-m", "bygheartd", "--config", str(cfg), "credits", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    after = bgh("credits", "--json", config=cfg)
    assert before.returncode == after.returncode == 0
    assert json.loads(before.stdout)["plan"] == json.loads(after.stdout)["plan"] == "pro"


def test_usage_errors_exit_2(cfg: Path) -> None:
    assert bgh("list", "--bogus", config=cfg).returncode == 2
    assert bgh("frobnicate").returncode == 2


def test_unknown_status_filter_lists_the_valid_ones(cfg: Path) -> None:
    result = bgh("list", "--status", "finished", config=cfg)
    assert result.returncode == 2 and "use one of queued" in result.stderr  # a usage error


def test_run_without_a_key_refuses_and_suggests_the_demo(cfg: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BYGHEART_API_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "bygheartd", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert "BYGHEART_API_KEY" in result.stderr and "bygheartd demo" in result.stderr


def test_list_does_not_import_mcp_or_the_simulator(cfg: Path) -> None:
    # pydantic too: building its models was most of a cold `list` (bench/store.py); and
    # asyncio: on SQLite a read-only command runs without an event loop.
    heavy = (
        "mcp",
        "starlette",
        "uvicorn",
        "watchdog",
        "apscheduler",
        "httpx",
        "pydantic",
        "asyncio",
    )
    code = "\n".join(
        [
            "import sys",
            f"sys.argv = ['bygheartd', 'list', '--json', '--config', {str(cfg)!r}]",
            "import bygheartd.cli.main as c",
            "try:",
            "    c.main()",
            "except SystemExit:",
            "    pass",
            f"print([m for m in sys.modules if m.split('.')[0] in {heavy!r}], file=sys.stderr)",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stderr.strip().splitlines()[-1] == "[]", result.stderr


def test_plugins_command_lists_sources_hooks_and_load_errors(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    folder = tmp_path / "my-plugins"
    folder.mkdir()
    (folder / "shout.py").write_text(
        "from bygheartd import hookimpl\n\n@hookimpl\ndef on_failed(reason):\n    print(reason)\n"
    )
    (folder / "broken.py").write_text("import no_such_module_here\n")
    config = make_config(simulator, plugins={"enabled": ["tags", "tagz"], "paths": [str(folder)]})
    env = {k: v for k, v in os.environ.items() if k != "BYGHEARTD_LOAD_PLUGINS"}
    run = [sys.executable, "-m", "bygheartd", "plugins", "--config", str(config.source_path)]
    result = subprocess.run([*run, "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["tags"]["enabled"] and "on_complete" in plugins["tags"]["hooks"]
    assert plugins["shout"]["source"].startswith("path:") and plugins["shout"]["hooks"] == [
        "on_failed"
    ]
    assert "no_such_module_here" in plugins["broken"]["error"]
    assert "did you mean 'tags'" in plugins["tagz"]["error"]
    human = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60)
    assert "broken [error]" in human.stdout and "tags [on]" in human.stdout


def test_wait_timeout_says_the_jobs_keep_going(
    simulator: RunningSimulator, cfg: Path, song_file: Path
) -> None:
    simulator.set_faults(latency=5.0)
    result = bgh("submit", str(song_file), "--wait", "--timeout", "0.5", config=cfg)
    assert result.returncode == 1
    assert "after the timeout; they keep going" in result.stderr


def test_list_shows_why_a_job_failed(
    simulator: RunningSimulator, cfg: Path, tmp_path: Path
) -> None:
    failing = tmp_path / "fails.txt"
    failing.write_text(SONG.replace("warm indie folk", "FAIL indie folk"), encoding="utf-8")
    assert bgh("submit", str(failing), "--wait", config=cfg).returncode == 1
    listed = bgh("list", config=cfg)
    assert "why" in listed.stdout and "failed on the server" in listed.stdout
    [record] = json.loads(bgh("list", "--json", config=cfg).stdout)
    assert record["status"] == "failed" and "failed on the server" in record["reason"]


def test_tab_completion_offers_job_ids(cfg: Path, song_file: Path) -> None:
    [record] = json.loads(bgh("submit", str(song_file), "--json", config=cfg).stdout)
    env = {
        **os.environ,
        "BYGHEARTD_CONFIG": str(cfg),
        "COMP_WORDS": f"bygheartd show {record['id'][:3]}",
        "COMP_CWORD": "2",
        "_BYGHEARTD_COMPLETE": "bash_complete",
    }
    script = Path(sys.executable).parent / "bygheartd"  # completion keys on the program name
    result = subprocess.run([str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert f"plain,{record['id']}" in result.stdout.splitlines()


def test_help_lists_the_simulator_by_its_own_summary_without_importing_it() -> None:
    from bygheartd.cli.main import SIMULATOR_SUMMARY
    from bygheartd.simulator.cli import simulator_command

    assert simulator_command.get_short_help_str(limit=10_000) == SIMULATOR_SUMMARY
    code = (
        "import sys; from bygheartd.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('bygheartd.simulator', 'asyncio', 'numpy', 'starlette') "
        "if m in sys.modules]\n"
        "print('LOADED', heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "simulator" in done.stdout and "LOADED []" in done.stdout, done.stdout + done.stderr
