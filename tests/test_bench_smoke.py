"""The engine benchmark still runs: `bench/engine.py --quick` end to end, in seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_quick_engine_benchmark_runs_and_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "engine.json"
    env = {k: v for k, v in os.environ.items() if k != "BYGHEART_API_KEY"}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "engine.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "requests/song" in done.stdout
    results = json.loads(out.read_text())
    for key in ("max_in_flight_40", "max_in_flight_8"):
        burst = results["burst"][key]
        assert burst["done"] == burst["songs"]
        assert burst["requests_per_song"] >= 2.0  # a submit and a download at the least
    assert results["throughput"]["done"] == results["throughput"]["songs"]
    assert results["large_queue"]["rss_after_start_mb"] > 0
    assert results["cold_start"]["median_seconds"] > 0
