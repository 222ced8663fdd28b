"""`bygheartd config check`: unknown plugin names, and `--online` asking the backend itself
(reachable, key accepted, health, models), run as the real CLI against the simulator.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_KEY, write_config

from bygheartd.simulator import RunningSimulator, SimulatorSettings, run_in_thread

ACE_KEY = "ace-local-secret-42"


def config_file(tmp_path: Path, base_url: str, **sections: dict[str, Any]) -> Path:
    folders = {n: str(tmp_path / n) for n in ("inbox", "output", "archive", "failed", "drafts")}
    folders["state"] = str(tmp_path / "state")
    for folder in folders.values():
        Path(folder).mkdir(parents=True, exist_ok=True)
    merged: dict[str, dict[str, Any]] = {
        "api": {"base_url": base_url},
        "folders": folders,
        "plugins": {"enabled": []},
    }
    for name, values in sections.items():
        merged.setdefault(name, {}).update(values)
    return write_config(tmp_path / "config.toml", merged)


def check(config: Path, key: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BYGHEARTD_LOAD_PLUGINS"}
    env.pop("BYGHEART_API_KEY", None)
    if key is not None:
        env["BYGHEART_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "bygheartd", "config", "check", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def acestep() -> Iterator[RunningSimulator]:
    with run_in_thread(SimulatorSettings(backend="acestep", api_key=ACE_KEY, seed=1)) as sim:
        yield sim


def test_an_unknown_plugin_name_is_a_problem_with_the_nearest_name(tmp_path: Path) -> None:
    cfg = config_file(tmp_path, "http://127.0.0.1:9", plugins={"enabled": ["tag"]})
    result = check(cfg, TEST_KEY)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "unknown plugin 'tag' in [plugins] enabled: did you mean 'tags'?" in result.stdout
    assert "NOT READY" in result.stdout


def test_an_unknown_name_in_plugins_disabled_is_caught_too(tmp_path: Path) -> None:
    cfg = config_file(tmp_path, "http://127.0.0.1:9", plugins={"disabled": ["webhok"]})
    result = check(cfg, TEST_KEY)
    assert result.returncode == 1
    assert "unknown plugin 'webhok' in [plugins] disabled: did you mean 'webhook'?" in (
        result.stdout
    )


def test_known_plugin_names_pass(tmp_path: Path) -> None:
    cfg = config_file(tmp_path, "http://127.0.0.1:9", plugins={"enabled": ["tags"]})
    result = check(cfg, TEST_KEY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unknown plugin" not in result.stdout


def test_online_on_the_hosted_api_with_a_good_key(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    result = check(config_file(tmp_path, simulator.base_url), TEST_KEY, "--online")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"server: reachable at {simulator.base_url}" in result.stdout
    assert "key: accepted" in result.stdout
    assert "health: ok" in result.stdout
    assert "bygheart-studio-pro" in result.stdout.split("models:")[1]
    assert TEST_KEY not in result.stdout + result.stderr


def test_online_on_the_hosted_api_with_a_wrong_key(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    result = check(config_file(tmp_path, simulator.base_url), "not-a-bygheart-key", "--online")
    assert result.returncode == 1
    assert "key: ERROR: refused" in result.stdout and "401" in result.stdout


def test_online_on_the_hosted_api_with_a_free_plan_key(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    result = check(config_file(tmp_path, simulator.base_url), "bgh_free_abc123", "--online")
    assert result.returncode == 1
    assert "key: ERROR: refused for this plan" in result.stdout


def test_online_on_acestep_with_a_good_key(tmp_path: Path, acestep: RunningSimulator) -> None:
    cfg = config_file(
        tmp_path, acestep.base_url, api={"backend": "acestep"}, defaults={"model": ""}
    )
    result = check(cfg, ACE_KEY, "--online")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "key: accepted" in result.stdout
    assert "health: ok (ACE-Step API" in result.stdout
    assert "models: acestep-v15-turbo" in result.stdout
    assert ACE_KEY not in result.stdout + result.stderr


def test_online_on_acestep_warns_when_the_default_model_is_not_there(
    tmp_path: Path, acestep: RunningSimulator
) -> None:
    cfg = config_file(
        tmp_path, acestep.base_url, api={"backend": "acestep"}, defaults={"model": "other"}
    )
    result = check(cfg, ACE_KEY, "--online")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "models: warning: [defaults] model 'other' is not among them" in result.stdout


def test_online_on_acestep_with_a_wrong_key(tmp_path: Path, acestep: RunningSimulator) -> None:
    cfg = config_file(tmp_path, acestep.base_url, api={"backend": "acestep"})
    result = check(cfg, "wrong", "--online")
    assert result.returncode == 1
    assert "key: ERROR: refused" in result.stdout


def test_online_with_nobody_listening_says_so_and_fails(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    cfg = config_file(tmp_path, url, api={"backend": "acestep"})
    result = check(cfg, ACE_KEY, "--online")
    assert result.returncode == 1
    assert f"server: ERROR: cannot reach {url}" in result.stdout
    assert "check [api] base_url" in result.stdout
    assert "Traceback" not in result.stderr


def test_online_gives_a_silent_server_the_check_timeout_not_the_engines(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        cfg = config_file(tmp_path, url, api={"backend": "acestep", "timeout_seconds": 300})
        result = check(cfg, ACE_KEY, "--online", "--timeout", "0.5")
    assert result.returncode == 1
    assert f"online ({url}; up to 0.5 s for each answer):" in result.stdout
    assert f"server: ERROR: cannot reach {url}" in result.stdout, result.stdout
    assert "Traceback" not in result.stderr


def test_without_online_the_backend_is_not_asked(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = check(config_file(tmp_path, url), TEST_KEY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "online (" not in result.stdout and "server:" not in result.stdout
