"""The `on_retake` hook (a song made again spends credits, so plugins hear of it), the
webhook's `retake` event, and the quality plugin's note in `bygheartd plugins`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from plugin_fixtures.factories import make_job
from test_plugins_webhook import Receiver, receiver, webhook_host  # noqa: F401 (a fixture)

from bygheartd.hooks.host import PluginHost, PluginSettings
from bygheartd.jobs import JobStatus

pytestmark = pytest.mark.anyio

REASON = "retake 1 of 1, 2 credits: song.mp3 is 1.2 s long, 4% of the requested 30 s"


async def test_hook_on_retake_runs_sync_implementations_off_the_event_loop(
    tmp_path: Path,
) -> None:
    plugin = tmp_path / "plugins" / "listener.py"
    plugin.parent.mkdir()
    plugin.write_text(
        "import threading\n"
        "from bygheartd import hookimpl\n"
        "calls = []\n"
        "@hookimpl\n"
        "def on_retake(job, reason):\n"
        "    calls.append((job.status.value, reason, threading.get_ident()))\n"
    )
    host = PluginHost.load(PluginSettings(paths=[plugin.parent], load_env=None))
    assert host.describe()[0].hooks == ("on_retake",)
    assert await host.on_retake(make_job(status=JobStatus.QUEUED), REASON) == []
    module = sys.modules[next(m for m in sys.modules if m.endswith("listener"))]
    [(status, reason, thread)] = module.calls
    assert (status, reason) == ("queued", REASON)
    assert thread != threading.get_ident()


async def test_hook_on_retake_is_posted_by_the_webhook_by_default(receiver: Receiver) -> None:  # noqa: F811
    job = make_job(status=JobStatus.QUEUED)
    assert await webhook_host(url=receiver.url).on_retake(job, REASON) == []
    [(headers, body)] = receiver.requests
    assert headers["x-bygheartd-event"] == "retake"
    payload: dict[str, Any] = json.loads(body)
    assert (payload["event"], payload["reason"]) == ("retake", REASON)
    assert payload["job"]["status"] == "queued"
    quiet = webhook_host(url=receiver.url, events=["complete", "failed"])
    assert await quiet.on_retake(job, REASON) == []
    assert len(receiver.requests) == 1  # left out of `events`: not posted


def test_plugins_shows_whether_the_quality_gate_measures_tempo_and_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[plugins]\nenabled = ["quality"]\n')
    env = {**os.environ, "BYGHEARTD_CONFIG": str(config)}
    env.pop("BYGHEARTD_LOAD_PLUGINS", None)
    shown = subprocess.run(
        [sys.executable, "-m", "bygheartd", "plugins", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    [quality] = [p for p in json.loads(shown.stdout) if p["name"] == "quality"]
    assert quality["note"].startswith("judges takes: undecodable, cut_short")
    import importlib.util

    if importlib.util.find_spec("librosa") is None:
        assert (
            "tempo and key are not measured (pip install 'bygheartd[analysis]')"
            in (quality["note"])
        )
    else:
        assert "tempo and key measured with librosa" in quality["note"]
