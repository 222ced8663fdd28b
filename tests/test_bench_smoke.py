"""The benchmarks still run: each one's `--quick` end to end, in seconds (the shared-store
one skipped outside CI when Debian's postgresql is missing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def quick(
    tmp_path: Path, bench: str, *, timeout: float = 180
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`bench/<bench>.py --quick` as a user runs it (no API key: each brings its own), and
    where it wrote its JSON."""
    out = tmp_path / f"{bench}.json"
    env = {k: v for k, v in os.environ.items() if k != "BYGHEART_API_KEY"}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / f"{bench}.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tmp_path,
    )
    return done, out


def test_quick_engine_benchmark_runs_and_writes_every_figure(tmp_path: Path) -> None:
    done, out = quick(tmp_path, "engine")
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
    spread = results["spread"]
    for client in ("ours", "reference"):
        figures = spread[client]
        assert figures["tasks"] == figures["songs"]  # every song's lag was measured
        assert figures["requests"]["download"] == figures["songs"]
        assert 0 <= figures["lag_p50"] <= figures["lag_p95"] <= figures["lag_max"]
    assert "completion lag p50" in done.stdout and "every task every" in done.stdout
    capture = results["capture"]  # (f): the same songs against the capture-shaped fake
    assert capture["done"] == capture["songs"] == capture["tasks"]
    assert capture["requests"]["download"] == capture["songs"]
    assert 0 <= capture["lag_p50"] <= capture["lag_p95"] <= capture["lag_max"]
    assert 1 <= capture["poll_floor_at_lag_goal"] <= capture["songs"]
    jump = results["jump"]  # (g): generation times that jump, a lag per phase
    assert jump["done"] == jump["songs"] and len(jump["phases"]) == 3
    assert all(phase["tasks"] == phase["songs"] for phase in jump["phases"])
    assert "capture-shaped fake" in done.stdout and "phase (p50/max)" in done.stdout


def test_quick_store_benchmark_runs_and_writes_every_figure(tmp_path: Path) -> None:
    done, out = quick(tmp_path, "store")
    assert done.returncode == 0, done.stderr
    assert "list --json (default limit)" in done.stdout
    results = json.loads(out.read_text())
    assert [s["jobs"] for s in results["sizes"]] == [50, 200]
    for size in results["sizes"]:
        assert size["list_json"]["median"] > 0 and size["mcp_list_songs"]["median"] > 0


def test_quick_pool_benchmark_survives_a_server_restart(tmp_path: Path) -> None:
    done, out = quick(tmp_path, "pool", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "songs/min" in done.stdout
    results = json.loads(out.read_text())
    for row in results["scaling"].values():
        assert row["done"] == row["songs"] and row["downloaded_twice"] == 0
    restart = results["restart"]
    assert restart["every_song_finished"] and restart["nothing_downloaded_twice"]
    assert restart["lost_made_again_exactly_once"] and restart["made_again"] >= 1


def test_quick_store_lock_benchmark_measures_every_window(tmp_path: Path) -> None:
    done, out = quick(tmp_path, "store_lock", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "during 1 s lock" in done.stdout
    results = json.loads(out.read_text())
    assert results["lock"]["held_seconds"] >= 1.0
    assert results["daemon_imports"] == str(REPO / "bygheartd" / "__init__.py")
    for window in results["windows"].values():
        assert window["n"] > 0 and window["errors"] == 0
        assert 0 < window["p50_ms"] <= window["p95_ms"] <= window["max_ms"]
    assert "the daemon's event loop" in done.stdout
    for loop in results["loop_lag"].values():  # the daemon's own ticker, every window
        assert loop["ticks"] > 0 and 0 <= loop["p50_ms"] <= loop["p95_ms"] <= loop["max_ms"]
    assert results["jobs_first"] and results["jobs_last"]


def test_quick_quality_benchmark_prints_both_tables_and_meets_its_goals(tmp_path: Path) -> None:
    done, out = quick(tmp_path, "quality")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CPU s per minute of audio" in done.stdout and "precision" in done.stdout
    results = json.loads(out.read_text())
    for figures in results["cost"]["formats"].values():
        assert (
            0 < figures["cpu_seconds_per_minute"] < figures["cpu_seconds_per_minute_with_tempo_key"]
        )
    found = results["accuracy"]
    assert set(found["codes"]) == {
        "undecodable", "cut_short", "cut_off", "silent", "clipped", "off_tempo", "off_key"
    }  # fmt: skip
    assert all(c["recall"] == 1 and c["false_positives"] == 0 for c in found["codes"].values())
    assert found["wrong"] == [] and results["goals"]["every_defect_found"]
    assert results["goals"]["no_good_take_failed"]


@pytest.mark.timeout(200)  # PostgreSQL, a simulator and five engine processes start
def test_quick_shared_store_benchmark_makes_every_song_once_on_every_engine(
    tmp_path: Path,
) -> None:
    done, out = quick(tmp_path, "shared_store")
    if done.returncode == 2 and not os.environ.get("CI"):
        pytest.skip("Debian's postgresql is not installed (make system-deps)")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ratio" in done.stdout and "claim latency" in done.stdout
    results = json.loads(out.read_text())
    assert results["failed_checks"] == []
    for n, row in results["scaling"].items():
        assert row["done"] == row["songs"] and row["requests"]["submit"] == row["songs"]
        assert len(row["songs_by_engine"]) <= int(n)
        assert 0 <= row["claim"]["p50_ms"] <= row["claim"]["p95_ms"]
    assert set(results["pace"]) == {"postgresql", "sqlite"}
    assert all(p["songs_per_minute"] > 0 for p in results["pace"].values())


def test_quick_submit_benchmark_runs_and_writes_every_figure(tmp_path: Path) -> None:
    done, out = quick(tmp_path, "submit")
    assert done.returncode == 0, done.stderr
    assert "plain ms/file" in done.stdout
    results = json.loads(out.read_text())
    assert [size["jobs"] for size in results["sizes"]] == [0, 2_000]
    for size in results["sizes"]:
        assert size["plain"]["ms_per_file"] > 0 and size["json"]["ms_per_file"] > 0
