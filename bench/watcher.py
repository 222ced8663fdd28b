"""Drop-folder benchmark: drop -> job queued latency past settle_seconds, and a 1,000-file burst.

Run: `.venv/bin/python bench/watcher.py` (no simulator or key needed: jobs are only queued).
Prints a table and writes bench/results/watcher.json.
"""

from __future__ import annotations

import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bygheartd.config import Config, parse_config
from bygheartd.service.service import SongService
from bygheartd.store.store import Store
from bygheartd.watch.watcher import InboxWatcher

SETTLE = 0.5
SAMPLES = 25
BURST = 1000
SONG = "---\ntitle: Bench {n}\n---\nla la la {n}\n"


def make_config(root: Path, poll: float) -> Config:
    folders = {
        n: str(root / n) for n in ("inbox", "output", "archive", "failed", "drafts", "state")
    }
    for path in folders.values():
        Path(path).mkdir(parents=True, exist_ok=True)
    return parse_config(
        {
            "folders": folders,
            "watch": {"settle_seconds": SETTLE, "poll_interval_seconds": poll, "rescan_seconds": 0},
        }
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def wait_archived(archive: Path, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for _ in archive.iterdir()) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {sum(1 for _ in archive.iterdir())} of {count} archived")
        await asyncio.sleep(0.002)


async def bench(observer: str, poll: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp), poll)
        store = Store.open(config.state_dir)
        service = SongService(config, store)
        watcher = InboxWatcher(config, service)
        await watcher.start()
        inbox, archive = config.folders.inbox, config.folders.archive
        try:
            past: list[float] = []
            for n in range(SAMPLES):
                (inbox / f"s{n}.txt").write_text(SONG.format(n=n))
                written = time.time()
                await wait_archived(archive, n + 1)
                job = service.list(limit=1)[0]
                past.append((job.created_at.timestamp() - written - SETTLE) * 1000)
                await asyncio.sleep(0.05)
            before = sum(1 for _ in archive.iterdir())
            lags: list[float] = []
            probe = asyncio.create_task(loop_lag(lags))
            start = time.monotonic()
            for n in range(BURST):
                (inbox / f"b{n:04d}.txt").write_text(SONG.format(n=f"burst {n}"))
            written_at = time.monotonic()
            await wait_archived(archive, before + BURST)
            done = time.monotonic()
            probe.cancel()
        finally:
            await watcher.stop()
            store.close()
    return {
        "observer": observer,
        "poll_interval_seconds": poll,
        "settle_seconds": SETTLE,
        "samples": SAMPLES,
        "latency_past_settle_ms": {
            "p50": round(statistics.median(past), 1),
            "p95": round(pct(past, 0.95), 1),
            "max": round(max(past), 1),
        },
        "burst_files": BURST,
        "burst_write_seconds": round(written_at - start, 3),
        "burst_accept_seconds": round(done - start, 3),
        "burst_accept_past_settle_seconds": round(done - written_at - SETTLE, 3),
        "burst_files_per_second": round(BURST / (done - written_at - SETTLE), 1),
        # How long the event loop went without running other work during the burst: what
        # reading, hashing and moving 1000 files cost the loop (they run in threads).
        "burst_loop_lag_ms": {
            "p50": round(statistics.median(lags) * 1000, 1) if lags else None,
            "max": round(max(lags) * 1000, 1) if lags else None,
        },
    }


async def loop_lag(lags: list[float], tick: float = 0.01) -> None:
    """Sleep `tick` over and over; anything beyond it is time the loop was busy."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(tick)
        lags.append(max(0.0, loop.time() - before - tick))


async def main() -> None:
    results = [await bench("native", 0.0), await bench("polling 0.25s", 0.25)]
    print(
        f"{'observer':<15} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} "
        f"{'1000 files s':>13} {'files/s':>9} {'loop lag max ms':>16}"
    )
    for r in results:
        lat = r["latency_past_settle_ms"]
        print(
            f"{r['observer']:<15} {lat['p50']:>8} {lat['p95']:>8} {lat['max']:>8} "
            f"{r['burst_accept_seconds']:>13} {r['burst_files_per_second']:>9} "
            f"{r['burst_loop_lag_ms']['max']!s:>16}"
        )
    print(
        f"(latency = job created - file written - settle {SETTLE}s; "
        "burst = first write to all archived)"
    )
    out = Path(__file__).resolve().parent / "results" / "watcher.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": sys.version.split()[0], "platform": platform.platform()}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    asyncio.run(main())
