"""Where a song says it came from: a CLI submit records the song file's absolute path, so a
sidecar read later (from another folder) still points at it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import MakeConfig


def test_a_cli_submit_of_a_relative_path_records_the_absolute_source(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    make_config()
    songs = tmp_path / "songs"
    songs.mkdir()
    (songs / "tokyo.txt").write_text("---\ntitle: 東京の夜\nstyle: city pop\n---\nla la\n")
    config = str(tmp_path / "config.toml")
    done = subprocess.run(
        [sys.executable, "-m", "bygheartd", "--config", config, "submit", "--json", "tokyo.txt"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=songs,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    [record] = json.loads(done.stdout)
    assert record["source"] == str(songs / "tokyo.txt")
    assert record["title"] == "東京の夜"
