"""Entry-point discovery through a real installed distribution (pip-installed into a temp dir)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from plugin_fixtures.factories import FIXTURES, build_wheel, make_job

from bygheartd.hooks.host import PluginHost, PluginSettings

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install` a wheel of the fixture distribution into a folder of its own."""
    root = tmp_path_factory.mktemp("dist")
    wheel = build_wheel(FIXTURES / "entrypoint_dist", root)
    target = root / "site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    command += ["--disable-pip-version-check", "--target", str(target), str(wheel)]
    subprocess.run(command, check=True, capture_output=True)
    return target


@pytest.fixture
def installed(site_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(site_dir))
    yield site_dir
    sys.modules.pop("bygheartd_example_plugin", None)


def test_the_fixture_is_a_real_distribution(installed: Path) -> None:
    dist = importlib.metadata.distribution("bygheartd-example-plugin")
    assert dist.version == "1.2.3"
    names = {ep.name for ep in dist.entry_points.select(group="bygheartd")}
    assert names == {"example", "example_broken"}


async def test_entry_point_plugin_is_discovered_and_called(installed: Path) -> None:
    host = PluginHost.load(PluginSettings(load_env=None))
    [example] = [i for i in host.describe() if i.name == "example"]
    assert (example.source, example.version, example.enabled) == (
        "entry-point:bygheartd-example-plugin",
        "1.2.3",
        True,
    )
    assert example.hooks == ("after_submit",)
    assert await host.after_submit(make_job(), "task-7") == []
    assert sys.modules["bygheartd_example_plugin"].seen == [("01JVX3K9TESTJOB", "task-7")]


def test_a_broken_entry_point_is_disabled_and_the_others_load(installed: Path) -> None:
    host = PluginHost.load(PluginSettings(load_env=None))
    [broken] = [i for i in host.describe() if i.name == "example_broken"]
    assert not broken.enabled
    assert "No module named 'bygheartd_example_plugin_missing'" in (broken.error or "")
    assert "example" in host.active


def test_disabled_keeps_an_installed_plugin_off(installed: Path) -> None:
    host = PluginHost.load(PluginSettings(disabled=["example", "example_broken"], load_env=None))
    assert host.active == []
