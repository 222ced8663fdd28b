"""Engine benchmark: HTTP requests per song, throughput, a 10,000-job queue, CLI start-up,
polls timed to predicted finishes against a client that polls every task every 5 s, and
the same against a fake shaped like the real server's captures (bench/capture_fake.py).

Runs the simulator on a thread and the engine in this process (a child process for the
memory figure), prints a table and writes bench/results/engine.json. See bench/README.md.
Usage: `.venv/bin/python bench/engine.py [--quick] [--spread-only | --capture-only] [--out PATH]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "engine.json"
BENCH_KEY = "bgh_ult_bench_key_0c9e"  # bgh_ult* is the Ultimate plan: no credit cap
MODEL = "bygheart-melody-fast"
RPS_GOAL = 2.1
BURST_40_GOAL = 2.05
COLD_START_GOAL = 0.35
SPREAD_RPS_GOAL = 3.0
SPREAD_LAG_GOAL = 0.5
CAPTURE_RPS_GOAL = 2.75


@dataclass(frozen=True)
class Sizes:
    """Workload sizes; `--quick` shrinks every one so a smoke run takes seconds."""

    burst_songs: int
    burst_latency: float
    burst_poll_min: float
    burst_poll_max: float
    throughput_songs: int
    queued_jobs: int
    cold_runs: int
    # (e): songs, generation mean +- half (uniform), the engine's [queue] (empty: the
    # shipped defaults), the reference client's poll period and in-flight limit.
    spread_songs: int = 16
    spread_mean: float = 20.0
    spread_half: float = 10.0
    spread_queue: tuple[tuple[str, float], ...] = ()
    reference_every: float = 5.0
    spread_in_flight: int = 8
    # (g): generation seconds of each phase (+-5 %), songs per phase (all in flight).
    jump_seconds: tuple[float, ...] = (3.0, 45.0, 3.0)
    jump_songs: int = 4


FULL = Sizes(40, 2.0, 3.0, 30.0, 1000, 10_000, 10)
# Quick: the same shape at a twentieth of the time (defaults scaled alike).
QUICK = Sizes(
    6,
    0.3,
    0.2,
    1.0,
    20,
    200,
    3,
    spread_songs=6,
    spread_mean=1.0,
    spread_half=0.5,
    spread_queue=(("poll_min_seconds", 0.15), ("poll_max_seconds", 1.5)),
    reference_every=0.25,
    spread_in_flight=3,
    jump_seconds=(0.3, 2.0, 0.3),
    jump_songs=2,
)


def _setup_env() -> None:
    os.environ["BYGHEART_API_KEY"] = BENCH_KEY
    os.environ["BYGHEARTD_LOAD_PLUGINS"] = ""
    for name in ("BYGHEARTD_CONFIG", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "STATE_DIRECTORY"):
        os.environ.pop(name, None)


def write_config(
    root: Path, base_url: str, queue: dict[str, float | int], backend: str = "bygheart"
) -> Path:
    """A real TOML config, as a user writes it; folders live under `root`."""
    lines = ["[api]", f'base_url = "{base_url}"', f'backend = "{backend}"', "", "[folders]"]
    for name in ("inbox", "output", "archive", "failed", "drafts", "state"):
        (root / name).mkdir(parents=True, exist_ok=True)
        lines.append(f'{name} = "{root / name}"')
    lines += ["", "[queue]", *(f"{k} = {v!r}" for k, v in queue.items())]
    lines += ["", "[budget]", 'plan = "ultimate"', "", "[plugins]", "enabled = []", ""]
    path = root / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _request_data(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "title": f"Bench song {n}",
        "style": f"synth pop, bench {n}",
        "model": MODEL,
        "duration": 10,
        "lyrics": "[Verse]\nla la la\n[Chorus]\noh oh oh",
        **extra,
    }


async def _enqueue(service: Any, count: int, start: int = 0, **extra: Any) -> list[str]:
    from bygheartd.jobs import Origin
    from bygheartd.service.submission import Submission

    ids = []
    for n in range(start, start + count):
        request = service.build_request(_request_data(n, **extra))
        submission = Submission(request, Origin.CLI, source=f"bench-{n}.txt")
        ids.append((await service.submit(submission)).job.id)
    return ids


async def _wait_all_final(store: Any, total: int, timeout: float) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        counts: dict[str, int] = await store.counts()
        final = sum(counts.get(s, 0) for s in ("done", "failed", "cancelled"))
        if final >= total:
            return counts
        if loop.time() > deadline:
            raise TimeoutError(f"jobs not finished after {timeout:.0f} s: {counts}")
        await asyncio.sleep(0.05)


def _http_counts(stats: dict[str, Any]) -> dict[str, int]:
    requests = stats["http_requests"]
    return {
        "submit": int(requests.get("/release_task", 0)),
        "poll": int(requests.get("/query_result", 0)),
        "download": int(requests.get("/v1/audio", 0)),
    }


# -- (a) and (b): songs through the engine ---------------------------------------------


async def _run_songs(
    sim: Any, root: Path, songs: int, queue: dict[str, float | int]
) -> dict[str, Any]:
    from bygheartd.config import load_config
    from bygheartd.runtime import EngineRole, Runtime

    config = load_config(write_config(root, sim.base_url, queue))
    httpx.post(f"{sim.base_url}/_sim/reset", json={}, timeout=10)
    async with Runtime(config, role=EngineRole.SUBMIT) as runtime:
        assert runtime.engine_running, runtime.engine_error
        started = time.perf_counter()
        await _enqueue(runtime.service, songs)
        counts = await _wait_all_final(runtime.store, songs, timeout=600)
        wall = time.perf_counter() - started
    stats = httpx.get(f"{sim.base_url}/_sim/stats", timeout=10).json()
    http = _http_counts(stats)
    done = counts.get("done", 0)
    ids = [int(n) for n in stats["ids_per_poll"]]
    return {
        "songs": songs,
        "done": done,
        "queue": queue,
        "wall_seconds": round(wall, 2),
        "requests": http,
        "requests_per_song": round(sum(http.values()) / max(1, done), 3),
        "polls": http["poll"],
        "ids_per_poll_mean": round(statistics.fmean(ids), 1) if ids else 0.0,
        "ids_per_poll_max": max(ids) if ids else 0,
        "songs_per_minute": round(done / wall * 60, 1) if wall else 0.0,
    }


async def bench_burst(sim: Any, work: Path, sizes: Sizes) -> dict[str, Any]:
    """(a) N songs at once with a generation latency: requests per finished song."""
    sim.set_faults(latency=sizes.burst_latency)
    out: dict[str, Any] = {"generation_seconds": sizes.burst_latency}
    for in_flight in (40, 8):
        queue = {
            "poll_min_seconds": sizes.burst_poll_min,
            "poll_max_seconds": sizes.burst_poll_max,
            "max_in_flight": in_flight,
        }
        result = await _run_songs(sim, work / f"burst-{in_flight}", sizes.burst_songs, queue)
        # Songs that finish together come in waves of max_in_flight: each wave needs a poll.
        waves = math.ceil(sizes.burst_songs / in_flight)
        result["one_poll_per_wave_floor"] = round(2 + waves / sizes.burst_songs, 3)
        out[f"max_in_flight_{in_flight}"] = result
    return out


async def bench_throughput(sim: Any, work: Path, sizes: Sizes) -> dict[str, Any]:
    """(b) songs with zero generation latency: the engine's own pace."""
    sim.set_faults(latency=0.0)
    queue = {"poll_min_seconds": 0.2, "poll_max_seconds": 1.0, "max_in_flight": 50}
    return await _run_songs(sim, work / "throughput", sizes.throughput_songs, queue)


# -- (e): spread-out completions: predicted polls against a 5-second poller ---------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


def _lags(sim: Any) -> dict[str, float]:
    """Server has the audio -> the client's first download request, from the simulator."""
    tasks = httpx.get(f"{sim.base_url}/_sim/tasks", timeout=10).json()["tasks"]
    lags = [
        t["first_download_at"] - t["finished_at"]
        for t in tasks
        if t.get("finished_at") is not None and t.get("first_download_at") is not None
    ]
    return {
        "tasks": len(lags),
        "lag_p50": round(_percentile(lags, 0.5), 3),
        "lag_p95": round(_percentile(lags, 0.95), 3),
        "lag_max": round(max(lags, default=0.0), 3),
        "lag_mean": round(statistics.fmean(lags), 3) if lags else 0.0,
    }


async def _reference_client(sim: Any, songs: int, in_flight: int, every: float) -> float:
    """ACE-Step's own way: submit, then ask for each task alone every `every` seconds."""
    from bygheartd.songs.request import RequestRules, SongRequest

    rules = RequestRules(backend="bygheart", max_job_credits=None)
    bodies = [SongRequest.build(_request_data(n), rules).to_api_body() for n in range(songs)]
    slots = asyncio.Semaphore(in_flight)
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}

    async def one(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        async with slots:
            reply = await client.post("/release_task", json=body)
            reply.raise_for_status()
            task_id = reply.json()["data"]["task_id"]
            while True:
                await asyncio.sleep(every)
                reply = await client.post("/query_result", json={"task_id_list": [task_id]})
                entry = reply.json()["data"][0]
                if entry["status"] == 2:
                    raise RuntimeError(f"reference task {task_id} failed")
                if entry["status"] == 1:
                    for take in json.loads(entry["result"]):
                        (await client.get(take["file"])).raise_for_status()
                    return

    started = time.perf_counter()
    # Idle connections closed before uvicorn's 5 s keep-alive ends them under a request.
    limits = httpx.Limits(keepalive_expiry=1.0)
    async with httpx.AsyncClient(
        base_url=sim.base_url, headers=headers, timeout=30, limits=limits
    ) as client:
        await asyncio.gather(*(one(client, body) for body in bodies))
    return time.perf_counter() - started


async def bench_spread(sim: Any, work: Path, sizes: Sizes) -> dict[str, Any]:
    """(e) songs whose generations take mean +- half seconds (uniform), `max_in_flight`
    of them at once: requests per song and completion lag, ours and a reference client's."""
    low, high = sizes.spread_mean - sizes.spread_half, sizes.spread_mean + sizes.spread_half
    sim.set_faults(latency=low, latency_jitter=high - low)
    queue: dict[str, float | int] = dict(sizes.spread_queue)
    queue["max_in_flight"] = sizes.spread_in_flight
    httpx.post(f"{sim.base_url}/_sim/reset", json={"tasks": True}, timeout=10)
    ours = await _run_songs(sim, work / "spread", sizes.spread_songs, queue)
    ours.update(_lags(sim))
    httpx.post(f"{sim.base_url}/_sim/reset", json={"tasks": True}, timeout=10)
    wall = await _reference_client(
        sim, sizes.spread_songs, sizes.spread_in_flight, sizes.reference_every
    )
    stats = httpx.get(f"{sim.base_url}/_sim/stats", timeout=10).json()
    http = _http_counts(stats)
    reference = {
        "songs": sizes.spread_songs,
        "poll_every_seconds": sizes.reference_every,
        "wall_seconds": round(wall, 2),
        "requests": http,
        "requests_per_song": round(sum(http.values()) / sizes.spread_songs, 3),
        "polls": http["poll"],
        **_lags(sim),
    }
    return {
        "generation_seconds": f"{sizes.spread_mean} +- {sizes.spread_half} (uniform)",
        "max_in_flight": sizes.spread_in_flight,
        # One poll per completion when completions are spread out: 2 + 1 per song.
        "one_poll_per_song_floor": 3.0,
        "ours": ours,
        "reference": reference,
    }


# -- (f) and (g): a fake shaped like the real server's captures ---------------------------


def poll_floor(finishes: list[float], lag: float) -> int:
    """The fewest polls that find every one of these finishes within `lag` seconds: what
    an oracle that knew every finish time would need (the greedy cover is optimal)."""
    polls, covered_until = 0, -math.inf
    for finish in sorted(finishes):
        if finish > covered_until:
            polls += 1
            covered_until = finish + lag
    return polls


def _lag_figures(lags: list[float]) -> dict[str, float]:
    return {
        "tasks": len(lags),
        "lag_p50": round(_percentile(lags, 0.5), 3),
        "lag_p95": round(_percentile(lags, 0.95), 3),
        "lag_max": round(max(lags, default=0.0), 3),
    }


async def _run_on_fake(
    fake: Any,
    root: Path,
    phases: tuple[tuple[float, float, int], ...],
    queue: dict[str, float | int],
) -> dict[str, Any]:
    """Phases of (low, high, songs) one after the other through the engine, against the
    capture-shaped fake as a self-hosted ACE-Step server; each phase's songs are queued
    when the one before has ended, their generations `uniform(low, high)` seconds."""
    from bygheartd.config import load_config
    from bygheartd.runtime import EngineRole, Runtime

    config = load_config(write_config(root, fake.base_url, queue, backend="acestep"))
    fake.reset()
    out: list[dict[str, Any]] = []
    total = 0
    async with Runtime(config, role=EngineRole.SUBMIT) as runtime:
        assert runtime.engine_running, runtime.engine_error
        started = time.perf_counter()
        for low, high, songs in phases:
            fake.set_generation(low, high)
            before = set(fake.tasks)
            await _enqueue(
                runtime.service, songs, start=total, audio_format="wav", model="acestep-v15-turbo"
            )
            total += songs
            counts = await _wait_all_final(runtime.store, total, timeout=600)
            lags = fake.lags(exclude=before)
            out.append({"generation_seconds": [low, high], "songs": songs, **_lag_figures(lags)})
        wall = time.perf_counter() - started
    requests = {
        "submit": fake.requests["/release_task"],
        "poll": fake.requests["/query_result"],
        "download": fake.requests["/v1/audio"],
    }
    done = counts.get("done", 0)
    floor = poll_floor(fake.finishes(), SPREAD_LAG_GOAL)
    return {
        "songs": total,
        "done": done,
        "queue": queue,
        "wall_seconds": round(wall, 2),
        "requests": requests,
        "other_requests": {
            k: n
            for k, n in fake.requests.items()
            if k not in ("/release_task", "/query_result", "/v1/audio")
        },
        "requests_per_song": round(sum(requests.values()) / max(1, done), 3),
        "polls": requests["poll"],
        "ids_per_poll_max": max(fake.ids_per_poll, default=0),
        "poll_floor_at_lag_goal": floor,
        "requests_per_song_floor": round(
            (requests["submit"] + requests["download"] + floor) / max(1, done), 3
        ),
        **_lag_figures(fake.lags()),
        "phases": out,
    }


async def bench_capture(work: Path, sizes: Sizes) -> dict[str, Any]:
    """(f) scenario (e)'s songs against a fake that answers as the captured real server
    does (bench/capture_fake.py): requests per song and completion lag."""
    from capture_fake import CaptureFake

    low, high = sizes.spread_mean - sizes.spread_half, sizes.spread_mean + sizes.spread_half
    queue: dict[str, float | int] = dict(sizes.spread_queue)
    queue["max_in_flight"] = sizes.spread_in_flight
    fake = CaptureFake(low=low, high=high, key=BENCH_KEY, seed=7)
    with fake.serve():
        result = await _run_on_fake(
            fake, work / "capture", ((low, high, sizes.spread_songs),), queue
        )
    result["generation_seconds"] = f"{sizes.spread_mean} +- {sizes.spread_half} (uniform)"
    result["max_in_flight"] = sizes.spread_in_flight
    return result


async def bench_jump(work: Path, sizes: Sizes) -> dict[str, Any]:
    """(g) generation times that jump (3 s, then 45 s, then 3 s) on the capture-shaped fake:
    how late each phase's songs are fetched while the predictions catch up."""
    from capture_fake import CaptureFake

    queue: dict[str, float | int] = dict(sizes.spread_queue)
    queue["max_in_flight"] = sizes.jump_songs
    phases = tuple((s * 0.95, s * 1.05, sizes.jump_songs) for s in sizes.jump_seconds)
    fake = CaptureFake(low=1.0, high=1.0, key=BENCH_KEY, seed=11)
    with fake.serve():
        result = await _run_on_fake(fake, work / "jump", phases, queue)
    result["generation_seconds"] = " then ".join(f"{s:g}" for s in sizes.jump_seconds)
    return result


# -- (c): a large queue ------------------------------------------------------------------


def _fill_store(config_path: Path, count: int) -> float:
    from bygheartd.config import load_config
    from bygheartd.service.service import open_service

    config = load_config(config_path)

    async def fill() -> float:
        service = open_service(config)
        started = time.perf_counter()
        await _enqueue(service, count)
        elapsed = time.perf_counter() - started
        await service.close()
        return elapsed

    return asyncio.run(fill())


def _resume_child(config_path: Path) -> None:
    """In a fresh process: RSS and the time Engine.start takes with a full queue."""
    import psutil  # type: ignore[import-untyped]

    from bygheartd.config import load_config
    from bygheartd.runtime import EngineRole, Runtime

    proc = psutil.Process()
    config = load_config(config_path)
    result: dict[str, Any] = {"rss_before_mb": proc.memory_info().rss / 2**20}

    async def main() -> None:
        runtime = Runtime(config, role=EngineRole.SUBMIT)
        started = time.perf_counter()
        await runtime.__aenter__()
        result["runtime_start_seconds"] = time.perf_counter() - started
        engine = runtime.engine
        assert engine is not None, runtime.engine_error
        result["rss_after_start_mb"] = proc.memory_info().rss / 2**20
        tick = time.perf_counter()
        await engine.submit_due()
        await engine.poller.poll_due()
        result["first_ticks_seconds"] = time.perf_counter() - tick
        await asyncio.sleep(2.0)
        result["rss_after_2s_mb"] = proc.memory_info().rss / 2**20
        await runtime.stop_engine(drain_seconds=5)
        # Engine.start alone, on the same store (the lock is free again)
        from bygheartd.engine.engine import Engine
        from bygheartd.runtime import make_client

        client = make_client(config)
        engine2 = Engine(config, runtime.store, client, None)
        started = time.perf_counter()
        await engine2.start()
        result["engine_start_seconds"] = time.perf_counter() - started
        await engine2.stop(drain_seconds=5)
        await client.aclose()
        await runtime.__aexit__(None, None, None)

    asyncio.run(main())
    print(json.dumps(result))


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "bygheartd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bygheartd"]


def _time_cli(config_path: Path, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(
            [*_cli(), "--config", str(config_path), "list", "--json"],
            capture_output=True,
            check=True,
            env=os.environ.copy(),
        )
        times.append(time.perf_counter() - started)
        json.loads(done.stdout)
    return times


async def bench_large_queue(sim: Any, work: Path, sizes: Sizes) -> dict[str, Any]:
    """(c) N queued jobs: insert rate, engine memory, resume time, `list --json` latency."""
    sim.set_faults(latency=2.0)
    root = work / "large"
    config_path = write_config(root, sim.base_url, {"poll_min_seconds": 3.0})
    insert_seconds = await asyncio.to_thread(_fill_store, config_path, sizes.queued_jobs)
    list_times = await asyncio.to_thread(_time_cli, config_path, 3)
    child = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, __file__, "--resume-child", str(config_path)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    if child.returncode != 0:
        raise RuntimeError(f"resume child failed:\n{child.stderr}")
    resume = json.loads(child.stdout.strip().splitlines()[-1])
    return {
        "jobs": sizes.queued_jobs,
        "insert_seconds": round(insert_seconds, 2),
        "inserts_per_second": round(sizes.queued_jobs / insert_seconds, 1),
        "list_json_seconds_median": round(statistics.median(list_times), 3),
        **{k: round(v, 4) for k, v in resume.items()},
    }


# -- (d): CLI cold start -----------------------------------------------------------------


async def bench_cold_start(sim: Any, work: Path, sizes: Sizes) -> dict[str, Any]:
    """(d) `bygheartd list --json` on a small store, started cold N times."""
    root = work / "cold"
    config_path = write_config(root, sim.base_url, {})
    await asyncio.to_thread(_fill_store, config_path, 5)
    await asyncio.to_thread(_time_cli, config_path, 1)  # warm the OS page cache once
    times = await asyncio.to_thread(_time_cli, config_path, sizes.cold_runs)
    return {
        "runs": sizes.cold_runs,
        "median_seconds": round(statistics.median(times), 3),
        "min_seconds": round(min(times), 3),
        "max_seconds": round(max(times), 3),
        "goal_seconds": COLD_START_GOAL,
    }


# -- report ------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []
    burst = results["burst"]
    for key in ("max_in_flight_40", "max_in_flight_8"):
        r = burst[key]
        label = f"(a) {r['songs']} songs, {burst['generation_seconds']} s gen, {key}"
        goal = BURST_40_GOAL if key == "max_in_flight_40" else RPS_GOAL
        verdict = "ok" if r["requests_per_song"] <= goal else "MISSED"
        rows += [
            (label, "requests/song", f"{r['requests_per_song']} (goal <= {goal}: {verdict})"),
            ("", "floor at one poll per wave", f"{r['one_poll_per_wave_floor']}"),
            ("", "submit/poll/download", "{submit}/{poll}/{download}".format(**r["requests"])),
            ("", "ids per poll (mean/max)", f"{r['ids_per_poll_mean']}/{r['ids_per_poll_max']}"),
            ("", "wall time", f"{r['wall_seconds']} s"),
        ]
    t = results["throughput"]
    rows += [
        (f"(b) {t['songs']} songs, 0 s gen", "songs/minute", f"{t['songs_per_minute']}"),
        ("", "requests/song", f"{t['requests_per_song']}"),
    ]
    q = results["large_queue"]
    rows += [
        (f"(c) {q['jobs']} queued", "enqueue rate", f"{q['inserts_per_second']} jobs/s"),
        ("", "engine RSS after start", f"{q['rss_after_start_mb']:.1f} MiB"),
        ("", "Runtime start (resume)", f"{q['runtime_start_seconds']} s"),
        ("", "Engine.start alone", f"{q['engine_start_seconds']} s"),
        ("", "first submit+poll tick", f"{q['first_ticks_seconds']} s"),
        ("", "list --json (median)", f"{q['list_json_seconds_median']} s"),
    ]
    c = results["cold_start"]
    verdict = "ok" if c["median_seconds"] <= COLD_START_GOAL else "MISSED"
    rows += [
        (
            f"(d) list --json x{c['runs']}",
            "median / min",
            f"{c['median_seconds']} / {c['min_seconds']} s (goal <= {COLD_START_GOAL}: {verdict})",
        )
    ]
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"{a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in rows)


def spread_table(results: dict[str, Any]) -> str:
    """(e) side by side: our predicted polls and the reference client's 5-second ones."""
    e = results["spread"]
    ours, ref = e["ours"], e["reference"]
    rps_ok = "ok" if ours["requests_per_song"] <= SPREAD_RPS_GOAL else "MISSED"
    lag_ok = "ok" if ours["lag_p50"] <= SPREAD_LAG_GOAL else "MISSED"
    every = ref["poll_every_seconds"]
    rows = [
        (
            f"(e) {ours['songs']} songs, {e['generation_seconds']} s gen, "
            f"max_in_flight {e['max_in_flight']}",
            "bygheartd",
            f"every task every {every} s",
        ),
        (
            "requests/song",
            f"{ours['requests_per_song']} (goal <= {SPREAD_RPS_GOAL}: {rps_ok})",
            f"{ref['requests_per_song']}",
        ),
        (
            "submit/poll/download",
            "{submit}/{poll}/{download}".format(**ours["requests"]),
            "{submit}/{poll}/{download}".format(**ref["requests"]),
        ),
        (
            "completion lag p50",
            f"{ours['lag_p50']} s (goal <= {SPREAD_LAG_GOAL}: {lag_ok})",
            f"{ref['lag_p50']} s",
        ),
        ("completion lag p95", f"{ours['lag_p95']} s", f"{ref['lag_p95']} s"),
        ("completion lag max", f"{ours['lag_max']} s", f"{ref['lag_max']} s"),
        ("completion lag mean", f"{ours['lag_mean']} s", f"{ref['lag_mean']} s"),
        ("wall time", f"{ours['wall_seconds']} s", f"{ref['wall_seconds']} s"),
    ]
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"{a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in rows)


def capture_table(results: dict[str, Any]) -> str:
    """(f) and (g): against the capture-shaped fake."""
    rows: list[tuple[str, str, str]] = []
    if "capture" in results:
        f = results["capture"]
        rps_ok = "ok" if f["requests_per_song"] <= CAPTURE_RPS_GOAL else "MISSED"
        lag_ok = "ok" if f["lag_p95"] <= SPREAD_LAG_GOAL else "MISSED"
        rows += [
            (
                f"(f) {f['songs']} songs, {f['generation_seconds']} s gen, max_in_flight "
                f"{f['max_in_flight']}, capture-shaped fake",
                "requests/song",
                f"{f['requests_per_song']} (goal <= {CAPTURE_RPS_GOAL}: {rps_ok})",
            ),
            ("", "submit/poll/download", "{submit}/{poll}/{download}".format(**f["requests"])),
            (
                "",
                "completion lag p50/p95/max",
                f"{f['lag_p50']} / {f['lag_p95']} / {f['lag_max']} s "
                f"(goal p95 <= {SPREAD_LAG_GOAL}: {lag_ok})",
            ),
            (
                "",
                f"oracle floor at lag <= {SPREAD_LAG_GOAL} s",
                f"{f['poll_floor_at_lag_goal']} polls "
                f"({f['requests_per_song_floor']} requests/song)",
            ),
            ("", "wall time", f"{f['wall_seconds']} s"),
        ]
    if "jump" in results:
        g = results["jump"]
        rows.append(
            (
                f"(g) generation {g['generation_seconds']} s, {g['phases'][0]['songs']} songs each",
                "requests/song",
                f"{g['requests_per_song']} ({g['polls']} polls)",
            )
        )
        for phase in g["phases"]:
            low, high = phase["generation_seconds"]
            rows.append(
                (
                    "",
                    f"lag, {low:g}-{high:g} s phase (p50/max)",
                    f"{phase['lag_p50']} / {phase['lag_max']} s",
                )
            )
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"{a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in rows)


async def run_capture_only(sizes: Sizes, quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bygheartd-bench-") as tmp:
        return {
            "quick": quick,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "load_average": os.getloadavg(),
            "capture": await bench_capture(Path(tmp), sizes),
            "jump": await bench_jump(Path(tmp), sizes),
        }


async def run_all(sizes: Sizes, quick: bool) -> dict[str, Any]:
    from bygheartd.simulator import SimulatorSettings, run_in_thread

    settings = SimulatorSettings(latency=0.0, audio_scale=0.01, seed=7, max_tasks_kept=20_000)
    with (
        tempfile.TemporaryDirectory(prefix="bygheartd-bench-") as tmp,
        run_in_thread(settings) as sim,
    ):
        work = Path(tmp)
        return {
            "quick": quick,
            "python": platform.python_version(),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "burst": await bench_burst(sim, work, sizes),
            "throughput": await bench_throughput(sim, work, sizes),
            "large_queue": await bench_large_queue(sim, work, sizes),
            "cold_start": await bench_cold_start(sim, work, sizes),
            "spread": await bench_spread(sim, work, sizes),
            "capture": await bench_capture(work, sizes),
            "jump": await bench_jump(work, sizes),
            "load_average": os.getloadavg(),
        }


async def run_spread_only(sizes: Sizes, quick: bool) -> dict[str, Any]:
    from bygheartd.simulator import SimulatorSettings, run_in_thread

    settings = SimulatorSettings(latency=0.0, audio_scale=0.01, seed=7)
    with (
        tempfile.TemporaryDirectory(prefix="bygheartd-bench-") as tmp,
        run_in_thread(settings) as sim,
    ):
        return {
            "quick": quick,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "load_average": os.getloadavg(),
            "spread": await bench_spread(sim, Path(tmp), sizes),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON output (default {RESULTS})")
    parser.add_argument(
        "--spread-only",
        action="store_true",
        help="only (e), the spread-out completions against the 5 s poller (engine-spread.json)",
    )
    parser.add_argument(
        "--capture-only",
        action="store_true",
        help="only (f) and (g), against the capture-shaped fake (engine-capture.json)",
    )
    parser.add_argument("--resume-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _setup_env()
    logging.basicConfig(level=logging.ERROR)
    if args.resume_child is not None:
        _resume_child(args.resume_child)
        return 0
    sizes = QUICK if args.quick else FULL
    if args.spread_only:
        results = asyncio.run(run_spread_only(sizes, args.quick))
        print(spread_table(results))
        out = args.out or RESULTS.with_name("engine-spread.json")
        out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {out}")
        return 0
    if args.capture_only:
        results = asyncio.run(run_capture_only(sizes, args.quick))
        print(capture_table(results))
        out = args.out or RESULTS.with_name("engine-capture.json")
        out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {out}")
        return 0
    results = asyncio.run(run_all(sizes, args.quick))
    print(table(results))
    print()
    print(spread_table(results))
    print()
    print(capture_table(results))
    out = args.out or (RESULTS.with_name("engine-quick.json") if args.quick else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
