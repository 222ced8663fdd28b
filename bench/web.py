"""Library-page benchmark: the server time of `/` over a store of 10,000 jobs.

Run: `.venv/bin/python bench/web.py` (no simulator or key needed: the jobs are written
straight through the store API). Prints a table and writes bench/results/web.json;
`--quick` uses 500 jobs (the test suite runs it so the script never rots).

Each figure is the full request through the ASGI app the daemon serves (Host check, auth,
the store query, each row's measured take length from its sidecar, the template), in process
over `httpx.ASGITransport`: no socket, so what is measured is the server's own time. Every
done job has a sidecar with `quality` figures (200 peaks), as the quality plugin writes
them; "first page, sidecars unread" is page 1 with every one of its 25 sidecars new (all
read and parsed, as after a restart or a change), the other figures are repeated views (a
`stat` per sidecar, the lengths kept in memory).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bygheartd.config import Config, parse_config
from bygheartd.jobs import JobFile, JobStatus
from bygheartd.mcp.http import McpHttpServer
from bygheartd.service.service import open_service
from bygheartd.store.store import Store
from bygheartd.web.app import web_routes

TOKEN = "bench-token-3f9a1c7e5b2d"
RUNS = 25
STYLES = ["synth pop", "ambient drone", "folk ballad", "drum and bass", "jazz trio"]
CASES = {
    "first page": "/",
    "search (rare word)": "/?q=kazoo",
    "search (common word)": "/?q=synth",
    "filter status=failed": "/?status=failed",
    "page 100": "/?page=100",
    "show keepers only": "/?show=keepers",
    "show failed the gate": "/?show=failed",
}


def make_config(root: Path) -> Config:
    folders = {
        n: str(root / n) for n in ("inbox", "output", "archive", "failed", "drafts", "state")
    }
    for path in folders.values():
        Path(path).mkdir(parents=True, exist_ok=True)
    return parse_config({"folders": folders, "web": {"enabled": True}})


def fill(store: Store, output: Path, count: int) -> float:
    """`count` jobs, 90 % done with one take, the rest failed; one in 500 mentions a kazoo;
    one done job in 20 has a take that failed the quality gate (its finding a warning)."""
    started = time.perf_counter()
    for n in range(count):
        status = JobStatus.FAILED if n % 10 == 9 else JobStatus.DONE
        style = STYLES[n % len(STYLES)] + (", kazoo solo" if n % 500 == 0 else "")
        request = {
            "title": f"Bench Song {n}",
            "style": style,
            "lyrics": f"[Verse]\nline {n} of the bench\n[Chorus]\nla la la",
            "model": "bygheart-melody-fast",
            "duration": 30.0,
        }
        job = store.insert_job(
            title=f"Bench Song {n}",
            model="bygheart-melody-fast",
            request=request,
            api_body={},
            credits=1,
            status=status,
            origin="cli",
        )
        if status is JobStatus.DONE:
            take = output / f"bench-song-{n}.mp3"
            warnings = [f"quality: {take.name} is cut short"] if n % 20 == 0 else []
            store.update(
                job.id,
                base_name=take.stem,
                files=[JobFile(take, 1000, "0" * 64)],
                warnings=warnings,
            )
            # The sidecar as the quality plugin leaves it: the rows read each take's length.
            quality = {"take": 1, "duration": 29.5, "requested_duration": 30.0}
            quality["peaks"] = [round((i % 17) / 17, 3) for i in range(200)]
            sidecar = {"id": job.id, "request": request, "quality": {take.name: quality}}
            (output / f"{take.stem}.json").write_text(json.dumps(sidecar), encoding="utf-8")
    return time.perf_counter() - started


async def measure(config: Config) -> dict[str, dict[str, float]]:
    token_file = Path(config.state_dir) / "token"
    token_file.write_text(TOKEN, encoding="utf-8")
    service = open_service(config)
    server = McpHttpServer(service, mcp=False, extra_routes=lambda t: web_routes(service, TOKEN))
    app = server.app(None)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/html"}
    results: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://127.0.0.1:8765", headers=headers
    ) as http:
        # Each run finds page 1's 25 sidecars changed (a new mtime), so it reads them all.
        jobs, _ = await service.search("", None, limit=25)
        sidecars = [config.folders.output / f"{j.base_name}.json" for j in jobs if j.base_name]
        reply = await http.get("/")  # warm-up (templates compiled)
        cold = []
        for run in range(RUNS):
            for path in sidecars:
                os.utime(path, ns=(time.time_ns(), time.time_ns() + run + 1))
            started = time.perf_counter()
            reply = await http.get("/")
            cold.append(time.perf_counter() - started)
            assert reply.status_code == 200
        cold_sorted = sorted(cold)
        results["first page, sidecars unread"] = {
            "median_ms": round(statistics.median(cold) * 1000, 2),
            "p95_ms": round(
                cold_sorted[min(len(cold) - 1, round(0.95 * (len(cold) - 1)))] * 1000, 2
            ),
            "bytes": len(reply.content),
        }
        for name, path in CASES.items():
            reply = await http.get(path)  # warm-up (templates compiled, pages cached)
            assert reply.status_code == 200, (path, reply.status_code, reply.text[:200])
            times = []
            for _ in range(RUNS):
                started = time.perf_counter()
                reply = await http.get(path)
                times.append(time.perf_counter() - started)
                assert reply.status_code == 200
            ordered = sorted(times)
            results[name] = {
                "median_ms": round(statistics.median(times) * 1000, 2),
                "p95_ms": round(
                    ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000, 2
                ),
                "bytes": len(reply.content),
            }
    await service.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 jobs instead of 10,000")
    parser.add_argument("--jobs", type=int, default=None, help="how many jobs to create")
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON")
    args = parser.parse_args()
    count = args.jobs or (500 if args.quick else 10_000)
    out = args.out or Path(__file__).parent / "results" / (
        "web-quick.json" if args.quick else "web.json"
    )
    # A tmpfs makes the store's per-job fsync cheap: the fill is set-up, not the figure.
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        config = make_config(Path(tmp))
        store = Store.open(config.state_dir)
        fill_seconds = fill(store, config.folders.output, count)
        store.close()
        figures = asyncio.run(measure(config))
    print(f"library page server time over {count:,} jobs ({RUNS} runs each, 25 jobs a page)")
    print(f"{'request':<24} {'median ms':>10} {'p95 ms':>10} {'KiB':>8}")
    for name, row in figures.items():
        kib = row["bytes"] / 1024
        print(f"{name:<24} {row['median_ms']:>10.2f} {row['p95_ms']:>10.2f} {kib:>8.1f}")
    print(f"(store filled in {fill_seconds:.1f} s)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "jobs": count,
                "runs": RUNS,
                "requests": figures,
                "fill_seconds": round(fill_seconds, 2),
                "machine": platform.platform(),
                "python": sys.version.split()[0],
                "cpus": os.cpu_count(),
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
