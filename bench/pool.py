"""Server-pool benchmark: 1, 2, 4 and 8 simulated ACE-Step servers as one pool, and a pool
of 4 that loses a server mid-run.

Every server is a real `bygheartd simulator --backend acestep --workers 1` process on a
loopback port (one generation at a time, like one GPU); the engine runs in this process
with `[[api.servers]]`, `max_in_flight = 2` each. It reports songs per minute, the scaling
efficiency against linear (N servers x the one-server rate) and, for the restart run, that
every song finished, the lost ones were made again exactly once and nothing was downloaded
twice. Prints a table and writes bench/results/pool.json. See bench/README.md.
Usage: `.venv/bin/python bench/pool.py [--quick] [--out PATH]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "pool.json"
MODEL = "acestep-v15-turbo"
EFFICIENCY_GOAL = 0.9


@dataclass(frozen=True)
class Sizes:
    songs: int
    generation_seconds: float
    pools: tuple[int, ...]
    restart_pool: int


FULL = Sizes(64, 2.0, (1, 2, 4, 8), 4)
QUICK = Sizes(8, 0.3, (1, 2), 2)


def _setup_env() -> None:
    os.environ["BYGHEARTD_LOAD_PLUGINS"] = ""
    for name in (
        "BYGHEART_API_KEY",
        "BYGHEARTD_CONFIG",
        "CREDENTIALS_DIRECTORY",
        "NOTIFY_SOCKET",
        "STATE_DIRECTORY",
    ):
        os.environ.pop(name, None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One simulated ACE-Step server process; it can be killed and started again."""

    def __init__(self, audio_dir: Path, latency: float) -> None:
        self.port = _free_port()
        self.audio_dir = audio_dir
        self.latency = latency
        self.proc: subprocess.Popen[bytes] | None = None
        # Counters of processes that were killed (their /_sim/stats died with them).
        self.before: Counter[str] = Counter()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.audio_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "bygheartd", "simulator", "--backend", "acestep"),
                *("--workers", "1", "--latency", str(self.latency), "--seed", "7"),
                *("--audio-dir", str(self.audio_dir), "--port", str(self.port)),
                *("--audio-scale", "0.02"),  # the pool's pace, not mp3 encoding
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TimeoutError(f"simulator on {self.url} did not start")

    def counters(self) -> Counter[str]:
        stats = httpx.get(self.url + "/_sim/stats", timeout=5).json()
        return Counter({"submits": stats["submits"], "downloads": stats["downloads"]})

    def kill(self, *, keep_counters: bool = False) -> None:
        if self.proc is None:
            return
        if keep_counters:
            self.before += self.counters()
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None

    def totals(self) -> Counter[str]:
        return self.before + self.counters()


def write_config(root: Path, urls: list[str]) -> Path:
    lines = ["[api]", 'backend = "acestep"', ""]
    for url in urls:
        lines += ["[[api.servers]]", f'url = "{url}"', "max_in_flight = 2", ""]
    lines.append("[folders]")
    for name in ("inbox", "output", "archive", "failed", "drafts", "state"):
        (root / name).mkdir(parents=True, exist_ok=True)
        lines.append(f'{name} = "{root / name}"')
    lines += [
        "",
        "[queue]",
        "poll_min_seconds = 0.25",
        "poll_max_seconds = 1.0",
        "unknown_grace_seconds = 2.0",
        # A submit cut off by the kill has an unknown outcome; on a self-hosted server that
        # is a task lost with the process, so it is made again too.
        "resubmit_uncertain = true",
        "retry_base_seconds = 0.2",
        "retry_max_seconds = 1.0",
        "",
        "[plugins]",
        "enabled = []",
        "",
    ]
    path = root / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


async def _enqueue(service: Any, count: int) -> list[str]:
    from bygheartd.jobs import Origin
    from bygheartd.service.submission import Submission

    ids = []
    for n in range(count):
        request = service.build_request(
            {
                "title": f"Pool song {n}",
                "style": f"synth pop, pool {n}",
                "model": MODEL,
                "duration": 10,
                "lyrics": "[Verse]\nla la la\n[Chorus]\noh oh oh",
            }
        )
        submission = Submission(request, Origin.CLI, source=f"pool-{n}.txt")
        ids.append((await service.submit(submission)).job.id)
    return ids


async def _run(
    work: Path, servers: list[Server], songs: int, kill_after: int | None = None
) -> dict[str, Any]:
    from bygheartd.config import load_config
    from bygheartd.jobs import FINAL_STATUSES, JobStatus
    from bygheartd.runtime import EngineRole, Runtime

    config = load_config(write_config(work, [s.url for s in servers]))
    killed: dict[str, Any] | None = None
    async with Runtime(config, role=EngineRole.SUBMIT) as runtime:
        assert runtime.engine_running, runtime.engine_error
        queued_at = time.perf_counter()
        ids = await _enqueue(runtime.service, songs)
        # The clock starts with the queue full: filling it (one fsynced insert a song) is
        # the same work for any number of servers.
        started = time.perf_counter()
        enqueue_seconds = started - queued_at
        while True:
            counts = await runtime.store.counts()
            finished = sum(counts.get(s.value, 0) for s in FINAL_STATUSES)
            if kill_after is not None and killed is None and counts.get("done", 0) >= kill_after:
                victim = servers[1]
                on_it = await runtime.store.counts_by_server([JobStatus.RUNNING])
                victim.kill(keep_counters=True)
                victim.start()  # at once, knowing nothing: its tasks answer "[]"
                killed = {
                    "server": victim.url,
                    "after_done": counts.get("done", 0),
                    "running_on_it": on_it.get(victim.url, 0),
                    "at_seconds": round(time.perf_counter() - started, 2),
                }
            if finished >= songs:
                break
            if time.perf_counter() - started > 900:
                raise TimeoutError(f"not finished after 900 s: {counts}")
            await asyncio.sleep(0.05)
        wall = time.perf_counter() - started
        jobs = [await runtime.store.get(i) for i in ids]
        histories = {j.id: [e.event for e in await runtime.store.history(j.id)] for j in jobs}
    totals: Counter[str] = Counter()
    for server in servers:
        totals += server.totals()
    done = sum(1 for j in jobs if j.status.value == "done")
    on_disk = [p for p in config.folders.output.iterdir() if p.suffix not in (".json", ".part")]
    result: dict[str, Any] = {
        "servers": len(servers),
        "songs": songs,
        "done": done,
        "wall_seconds": round(wall, 2),
        "enqueue_seconds": round(enqueue_seconds, 2),
        "songs_per_minute": round(done / wall * 60, 2) if wall else 0.0,
        "per_server": dict(Counter(j.server or "?" for j in jobs)),
        "submits": totals["submits"],
        "downloads": totals["downloads"],
        "audio_files_on_disk": len(on_disk),
        "downloaded_twice": sum(1 for h in histories.values() if h.count("generated") > 1),
    }
    if killed is not None:
        made_again = [j for j in jobs if j.resubmits]
        result["killed"] = killed
        result["made_again"] = len(made_again)
        result["made_again_more_than_once"] = sum(1 for j in jobs if j.resubmits > 1)
        result["resubmit_events"] = sum(h.count("resubmitted") for h in histories.values())
        result["uncertain_submits_retried"] = sum(
            1 for h in histories.values() if "held (retry)" in h
        )
    return result


async def bench(sizes: Sizes, work: Path) -> dict[str, Any]:
    scaling: dict[str, Any] = {}
    base_rate: float | None = None
    for count in sizes.pools:
        servers = [
            Server(work / f"audio-{count}-{i}", sizes.generation_seconds).start()
            for i in range(count)
        ]
        try:
            result = await _run(work / f"pool-{count}", servers, sizes.songs)
        finally:
            for server in servers:
                server.kill()
        if base_rate is None:
            base_rate = result["songs_per_minute"]
        linear = (base_rate or 0) * count
        result["linear_songs_per_minute"] = round(linear, 2)
        result["efficiency"] = round(result["songs_per_minute"] / linear, 3) if linear else 0.0
        scaling[str(count)] = result
        print(f"  {count} server(s): {result['songs_per_minute']} songs/min", flush=True)
    count = sizes.restart_pool
    servers = [
        Server(work / f"audio-restart-{i}", sizes.generation_seconds).start() for i in range(count)
    ]
    try:
        restart = await _run(
            work / "restart", servers, sizes.songs, kill_after=max(1, sizes.songs // 3)
        )
    finally:
        for server in servers:
            server.kill()
    restart["every_song_finished"] = restart["done"] == sizes.songs
    restart["lost_made_again_exactly_once"] = (
        restart["made_again_more_than_once"] == 0
        and restart["resubmit_events"] == restart["made_again"]
    )
    restart["nothing_downloaded_twice"] = (
        restart["downloaded_twice"] == 0 and restart["audio_files_on_disk"] == restart["done"]
    )
    return {
        "generation_seconds": sizes.generation_seconds,
        "songs": sizes.songs,
        "max_in_flight_per_server": 2,
        "efficiency_goal": EFFICIENCY_GOAL,
        "scaling": scaling,
        "restart": restart,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }


def print_table(results: dict[str, Any]) -> None:
    print(
        f"\n{results['songs']} songs of {results['generation_seconds']:g} s, "
        "--workers 1 per server, max_in_flight 2"
    )
    print(f"{'servers':>8} {'wall s':>8} {'songs/min':>10} {'linear':>8} {'efficiency':>10}")
    for count, row in results["scaling"].items():
        print(
            f"{count:>8} {row['wall_seconds']:>8} {row['songs_per_minute']:>10} "
            f"{row['linear_songs_per_minute']:>8} {row['efficiency']:>10}"
        )
    r = results["restart"]
    k = r["killed"]
    print(
        f"\nrestart: {r['servers']} servers, {k['server']} killed and restarted after "
        f"{k['after_done']} songs ({k['running_on_it']} of its tasks in flight)"
    )
    print(
        f"  done {r['done']}/{r['songs']}, made again {r['made_again']} (each once: "
        f"{r['lost_made_again_exactly_once']}), submits {r['submits']}, downloads "
        f"{r['downloads']}, audio files {r['audio_files_on_disk']}, downloaded twice: "
        f"{r['downloaded_twice']}, {r['songs_per_minute']} songs/min"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    _setup_env()
    import logging

    logging.basicConfig(level=logging.ERROR)
    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="bygheartd-pool-") as tmp:
        results = asyncio.run(bench(sizes, Path(tmp)))
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    r = results["restart"]
    ok = r["every_song_finished"] and r["lost_made_again_exactly_once"]
    return 0 if ok and r["nothing_downloaded_twice"] else 1


if __name__ == "__main__":
    sys.exit(main())
