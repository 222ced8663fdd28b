"""The README's own steps, followed as a new user would: the offline quick start on the
simulator, and service steps that say the same as docs/service.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from bygheartd.config import parse_config
from bygheartd.simulator import RunningSimulator

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SERVICE_DOC = (ROOT / "docs" / "service.md").read_text(encoding="utf-8")

SIMULATOR_LINE = 'base_url = "http://127.0.0.1:8001"'


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    following = re.search(r"^## ", text[start + len(heading) :], flags=re.M)
    return text[start : start + len(heading) + following.start()] if following else text[start:]


def _bgh(home: Path, *args: str, key: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BYGHEARTD_CONFIG", "BYGHEART_API_KEY")}
    env |= {"HOME": str(home), "XDG_CONFIG_HOME": "", "XDG_STATE_HOME": "", "COLUMNS": "80"}
    env = {k: v for k, v in env.items() if v}
    if key:
        env["BYGHEART_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "bygheartd", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=90,
    )


def test_the_offline_quick_start_works_as_written(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    quick = _section(README, "## Quick start")
    assert "pipx install ." in quick and "mkdir -p ~/.local/bin" in quick
    assert "bygheartd simulator --port 8001" in quick and SIMULATOR_LINE in quick
    home = tmp_path / "home"
    home.mkdir()
    made = _bgh(home, "init")
    assert made.returncode == 0, made.stderr
    config = home / ".config" / "bygheartd" / "config.toml"
    text = config.read_text(encoding="utf-8")
    # The line the README says to uncomment is there, commented, under [api].
    assert f"# {SIMULATOR_LINE}" in text
    assert text.index(f"# {SIMULATOR_LINE}") < text.index("[folders]")
    port = simulator.base_url.rsplit(":", 1)[1]
    config.write_text(
        text.replace(f"# {SIMULATOR_LINE}", SIMULATOR_LINE.replace("8001", port)),
        encoding="utf-8",
    )
    key = "bgh_try_it_offline"
    assert f"BYGHEART_API_KEY={key}" in quick
    checked = _bgh(home, "config", "check", key=key)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    made_song = _bgh(home, "submit", "examples/midnight-god-mode.txt", "--wait", key=key)
    assert made_song.returncode == 0, made_song.stderr
    assert "done" in made_song.stdout
    assert list((home / "Music" / "Bygheart" / "output").glob("*.mp3"))
    assert key not in made_song.stdout + made_song.stderr


def test_the_system_service_steps_match_docs_service_md() -> None:
    steps = _section(README, "## Running as a service")
    for fragment in (
        "useradd --system --user-group --home-dir /var/lib/bygheartd",
        'usermod -aG bygheartd "$USER"',
        "/opt/bygheartd/venv/bin/pip install",
        "sudo chown root:bygheartd /etc/bygheartd/config.toml",
        "chmod 0640 /etc/bygheartd/config.toml",
        "install -m 0600 -o root -g root /dev/null /etc/bygheartd/api-key",
        "install -d -o bygheartd -g bygheartd -m 2770 /var/lib/bygheartd/inbox",
        "sudo -u bygheartd bygheartd --config /etc/bygheartd/config.toml list",
        'state   = "/var/lib/bygheartd/state"',
    ):
        assert fragment in steps, f"README lacks {fragment!r}"
        assert fragment in SERVICE_DOC, f"docs/service.md lacks {fragment!r}"


def test_the_system_service_config_is_valid_and_keeps_everything_under_var_lib() -> None:
    block = _section(README, "## Running as a service")
    body = block.split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    config = parse_config(tomllib.loads(body), source="README")
    folders = config.as_record()["folders"]
    assert folders["state"] is not None
    for name, folder in folders.items():
        if folder:  # None or "" (keepers): not used
            assert str(folder).startswith("/var/lib/bygheartd/"), name


def test_the_user_service_steps_take_the_key_from_a_file() -> None:
    for text in (_section(README, "## Running as a service"), SERVICE_DOC):
        assert 'api_key_file = "~/.config/bygheartd/api-key"' in text
        assert "does not" in text and "exported" in text  # why an exported key is not enough
    unit = (ROOT / "systemd" / "bygheartd-user.service").read_text(encoding="utf-8")
    assert "ExecStart=%h/.local/bin/bygheartd run" in unit  # where pipx puts it
