"""Shared fixtures: the anyio backend, the real simulator on loopback, configs in tmp dirs.

`make_config(...)` writes a real TOML file (the way users configure bygheartd) pointing
at a fresh simulator, with short intervals so tests never sleep for long.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from bygheartd.config import Config, load_config
from bygheartd.simulator import RunningSimulator, SimulatorSettings, run_in_thread

# Property tests explore the same examples on every run: CI must be deterministic.
settings.register_profile("bygheartd", derandomize=True, deadline=None)
settings.load_profile("bygheartd")

TEST_KEY = "bgh_pro_test_key_5f3a9c1e"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sim_settings() -> SimulatorSettings:
    """Override in a test module to change latency or faults from the start."""
    return SimulatorSettings(latency=0.2, audio_scale=0.02, seed=1)


@pytest.fixture
def simulator(sim_settings: SimulatorSettings) -> Iterator[RunningSimulator]:
    with run_in_thread(sim_settings) as sim:
        yield sim


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("BYGHEART_API_KEY", TEST_KEY)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("BYGHEARTD_CONFIG", raising=False)
    monkeypatch.setenv("BYGHEARTD_LOAD_PLUGINS", "")
    return TEST_KEY


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        tables = {k: v for k, v in values.items() if _is_table_list(v)}
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if k not in tables]
        lines.append("")
        for key, entries in tables.items():  # a list of tables: [[section.key]]
            for entry in entries:
                lines.append(f"[[{section}.{key}]]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items()]
                lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


MakeConfig = Callable[..., Config]


@pytest.fixture
def make_config(tmp_path: Path, api_key: str) -> MakeConfig:
    """`make_config(sim, queue={"max_in_flight": 2}, ...)`: a config file in tmp_path."""

    def make(sim: RunningSimulator | None = None, **overrides: dict[str, Any]) -> Config:
        root = tmp_path / "bgh"
        sections: dict[str, dict[str, Any]] = {
            "api": {"base_url": sim.base_url if sim else "http://127.0.0.1:9"},
            "folders": {
                name: str(root / name)
                for name in ("inbox", "output", "archive", "failed", "drafts", "state")
            },
            "watch": {"settle_seconds": 0.2, "rescan_seconds": 60},
            "queue": {
                "poll_min_seconds": 0.1,
                "poll_max_seconds": 0.5,
                "retry_base_seconds": 0.1,
                "retry_max_seconds": 0.5,
                "unknown_grace_seconds": 1.0,
            },
            "budget": {"plan": "pro"},
            "plugins": {"enabled": []},
            # Off unless a test turns them on (tests/test_retakes.py), like plugins: a test
            # of a defective take's verdict must not get a retake it did not ask for.
            "retakes": {"max": 0},
        }
        for section, values in overrides.items():
            sections.setdefault(section, {}).update(values)
        if sections["api"].get("servers"):  # a pool names its servers instead of base_url
            sections["api"].pop("base_url", None)
        for name in ("inbox", "output", "archive", "failed", "drafts", "state"):
            Path(sections["folders"][name]).mkdir(parents=True, exist_ok=True)
        return load_config(write_config(tmp_path / "config.toml", sections))

    return make


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never read the developer's own config or state."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    os.environ.pop("JOURNAL_STREAM", None)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """One PostgreSQL per test worker (Debian's server, in a temporary folder)."""
    from _postgres import running_postgres

    with running_postgres() as server:
        if server is None:
            if os.environ.get("CI"):
                pytest.fail("Debian's postgresql is not installed: `make test` installs it")
            pytest.skip("Debian's postgresql is not installed (make system-deps)")
        yield server


@pytest.fixture
def postgres_url(postgres_server: Any) -> str:
    """A fresh, empty database of its own for this test (the URL carries the password)."""
    return str(postgres_server.new_database())
