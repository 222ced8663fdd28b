"""Store-lock benchmark: does `bygheartd run` keep answering while another process holds
the job store's write lock?

Starts the simulator and the real daemon (`[web] enabled`, so its listener serves /health)
as child processes on 127.0.0.1, queues songs with `bygheartd submit` so the engine writes
to the store throughout, and fires GET /health every 20 ms (each on time, answered or not):
a baseline, then while a helper process holds `BEGIN IMMEDIATE` on `<state>/jobs.sqlite3`
with plain sqlite3 (5 s), then after. /health's latency is the daemon's event-loop
responsiveness seen from outside; a probe pending at any moment of the lock counts in
"during". The loop's lag is also read from inside: /health carries the daemon's own 0.1 s
ticker (`loop_lag_ms`), and each tick's lateness is counted once. Prints two tables,
writes bench/results/store_lock.json (`--quick`: a 1 s lock, store_lock-quick.json).
Usage: `.venv/bin/python bench/store_lock.py [--quick] [--out PATH]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import select
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "store_lock.json"
BENCH_KEY = "bgh_ult_bench_key_0c9e"  # bgh_ult* is the Ultimate plan: no credit cap
PROBE_EVERY = 0.02
CLIENT_TIMEOUT = 10.0
MAX_PENDING = 1000  # probes waiting at once (a 10 s stall holds 500)
STALL = 1.0  # a /health answer slower than this (or none) is a stall
WINDOWS = ("baseline", "during lock", "after")
# A probe: when it started (monotonic), its latency (None: timed out), outcome, job counts,
# and the daemon's loop ticker as /health reported it: (ticks so far, last tick's lateness
# in ms), None from a daemon without one (before issue 22).
Sample = tuple[float, float | None, str, dict[str, int], tuple[int, float] | None]


@dataclass(frozen=True)
class Sizes:
    """Songs, the simulator's generation seconds (+ uniform jitter), the engine's in-flight
    limit, and the three windows' seconds: the songs outlast the windows."""

    songs: int
    latency: float
    jitter: float
    in_flight: int
    baseline: float
    lock: float
    after: float


FULL = Sizes(40, 2.0, 1.0, 8, 3.0, 5.0, 2.0)
QUICK = Sizes(16, 1.0, 0.5, 4, 1.0, 1.0, 1.0)


def hold_lock(db: str, at: float, seconds: float) -> None:
    """The helper process: at monotonic time `at`, BEGIN IMMEDIATE, hold, ROLLBACK."""
    conn = sqlite3.connect(db, timeout=30.0, isolation_level=None)
    time.sleep(max(0.0, at - time.monotonic()))
    asked = time.monotonic()
    conn.execute("BEGIN IMMEDIATE")
    print(f"locked {time.monotonic()} {asked}", flush=True)
    time.sleep(seconds)
    conn.execute("ROLLBACK")
    print(f"released {time.monotonic()}", flush=True)
    conn.close()


def child_env(root: Path) -> dict[str, str]:
    """Children import this tree's bygheartd (PYTHONPATH), with no plugins or user config."""
    drop = ("BYGHEARTD_CONFIG", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "STATE_DIRECTORY")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env |= {"BYGHEART_API_KEY": BENCH_KEY, "BYGHEARTD_LOAD_PLUGINS": ""}
    env |= {"XDG_CONFIG_HOME": str(root / "xdg"), "XDG_STATE_HOME": str(root / "xdg")}
    return env


def write_config(root: Path, base_url: str, sizes: Sizes) -> Path:
    """Folders under `root`; the listener on 127.0.0.1 at an ephemeral port, library on."""
    lines = ["[api]", f'base_url = "{base_url}"', "[folders]"]
    for name in ("inbox", "output", "archive", "failed", "drafts", "state"):
        (root / name).mkdir(parents=True, exist_ok=True)
        lines.append(f'{name} = "{root / name}"')
    lines += ["[queue]", "poll_min_seconds = 0.2", "poll_max_seconds = 1.0"]
    lines += [f"max_in_flight = {sizes.in_flight}", "[budget]", 'plan = "ultimate"']
    lines += ["[mcp]", "http = false", 'host = "127.0.0.1"', "port = 0"]
    lines += ["[web]", "enabled = true", "[plugins]", "enabled = []", ""]
    (root / "config.toml").write_text("\n".join(lines), encoding="utf-8")
    return root / "config.toml"


def wait_until(
    what: str, check: Callable[[], bool], proc: subprocess.Popen[Any], log: Path
) -> None:
    """Look for up to 30 s, while `proc` runs, until `check()` is true."""
    deadline = time.monotonic() + 30.0
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"no {what} (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it does not go in 15 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def probe(http: httpx.AsyncClient, url: str, samples: list[Sample]) -> None:
    started, jobs, loop = time.monotonic(), dict[str, int](), None
    try:
        reply = await http.get(url)
        outcome = "ok" if reply.status_code == 200 else str(reply.status_code)
        body = reply.json() if outcome == "ok" else {}
        jobs = body.get("jobs", {})
        if "loop_lag_ms" in body:
            loop = (int(body["loop_lag_ms"]["ticks"]), float(body["loop_lag_ms"]["last_ms"]))
    except httpx.HTTPError as exc:
        outcome = "timeout" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__
    latency = None if outcome == "timeout" else time.monotonic() - started
    samples.append((started, latency, outcome, jobs, loop))


async def probe_all(url: str, lines: list[str], after: float, hard_end: float) -> list[Sample]:
    """A GET every 20 ms, each fired on time whether or not earlier ones were answered (a
    stall shows in every probe it holds up), until `after` s past the helper's release."""
    samples: list[Sample] = []
    pending: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=MAX_PENDING, max_keepalive_connections=20)
    headers = {"Host": url.split("/")[2]}  # 127.0.0.1:PORT, a loopback name the daemon takes
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT, limits=limits, headers=headers) as http:
        tick = time.monotonic()
        while (now := time.monotonic()) < hard_end and len(samples) + len(pending) < 20_000:
            ends = [float(ln.split()[1]) for ln in lines if ln.startswith("released")]
            if ends and now >= ends[0] + after:
                break
            task = asyncio.create_task(probe(http, url, samples))
            pending.add(task)
            task.add_done_callback(pending.discard)
            tick = max(tick + PROBE_EVERY, now)
            await asyncio.sleep(tick - time.monotonic())
        await asyncio.gather(*pending)  # each ends within CLIENT_TIMEOUT
    return sorted(samples, key=lambda s: s[0])


def health_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def summarize(samples: list[Sample]) -> dict[str, Any]:
    """n, nearest-rank p50/p95 and max of the answered probes, stalls, timeouts, errors."""
    ms = sorted(s[1] * 1000 for s in samples if s[1] is not None and s[2] == "ok") or [0.0]
    return {
        "n": len(samples),
        "p50_ms": round(ms[max(0, math.ceil(0.5 * len(ms)) - 1)], 1),
        "p95_ms": round(ms[max(0, math.ceil(0.95 * len(ms)) - 1)], 1),
        "max_ms": round(ms[-1], 1),
        "stalls_over_1s": sum(1 for s in samples if s[1] is None or s[1] > STALL),
        "timeouts": sum(1 for s in samples if s[2] == "timeout"),
        "errors": sum(1 for s in samples if s[2] not in ("ok", "timeout")),
    }


def summarize_loop(samples: list[Sample], seen: set[int]) -> dict[str, Any] | None:
    """The daemon's own loop ticker over a window: each tick once (the first probe that
    reported it), nearest-rank p50/p95 and max lateness; `ticks_missed` counts ticks that
    came and went between two answers (their lateness unseen). `seen` carries across
    windows. None when the daemon reports no ticker."""
    reported = [s[4] for s in samples if s[4] is not None]
    if not reported:
        return None
    lags, last = [], None
    for ticks, lag in sorted(reported):
        if ticks not in seen:
            seen.add(ticks)
            lags.append(lag)
        last = ticks
    first = min(t for t, _ in reported)
    ms = sorted(lags) or [0.0]
    return {
        "ticks": len(lags),
        "ticks_missed": max(0, (last or first) - first + 1 - len({t for t, _ in reported})),
        "p50_ms": round(ms[max(0, math.ceil(0.5 * len(ms)) - 1)], 1),
        "p95_ms": round(ms[max(0, math.ceil(0.95 * len(ms)) - 1)], 1),
        "max_ms": round(ms[-1], 1),
    }


def measure(url: str, db: Path, env: dict[str, str], sizes: Sizes) -> dict[str, Any]:
    """Probe /health every 20 ms; a helper holds the write lock from `baseline` s on."""
    at = time.monotonic() + sizes.baseline
    cmd = [sys.executable, __file__, "--hold-lock", str(db), repr(at), repr(sizes.lock)]
    helper = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(helper.stdout or ()), daemon=True).start()
    hard_end = at + sizes.lock + sizes.after + 30.0  # bounded even if the helper hangs
    try:
        samples = asyncio.run(probe_all(url, lines, sizes.after, hard_end))
        helper.wait(max(1.0, hard_end - time.monotonic()))
    finally:
        stop(helper)
    marks = {ln.split()[0]: ln.split()[1:] for ln in lines}
    if "locked" not in marks or "released" not in marks:
        raise RuntimeError(f"the lock helper did not report (exit {helper.returncode}): {lines}")
    start, end = float(marks["locked"][0]), float(marks["released"][0])
    parts: dict[str, list[Sample]] = {w: [] for w in WINDOWS}
    for s in samples:  # "during": a probe pending at any moment of the lock
        answered = s[0] + (CLIENT_TIMEOUT if s[1] is None else s[1])
        window = "baseline" if answered < start else "during lock" if s[0] < end else "after"
        parts[window].append(s)
    counts = [s[3] for s in samples if s[3]] or [{}]
    seen: set[int] = set()
    return {
        "lock": {
            "requested_seconds": sizes.lock,
            "held_seconds": round(end - start, 3),
            "wait_to_acquire_ms": round((start - float(marks["locked"][1])) * 1000, 1),
        },
        "windows": {w: summarize(parts[w]) for w in WINDOWS},
        "loop_lag": {w: summarize_loop(parts[w], seen) for w in WINDOWS},
        "jobs_first": counts[0],
        "jobs_last": counts[-1],
        "songs_pending_at_end": sum(
            n for k, n in counts[-1].items() if k not in ("done", "failed", "cancelled")
        ),
    }


def run(sizes: Sizes) -> dict[str, Any]:
    """Simulator, daemon, songs, measurement; every child is stopped whatever happens."""
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bygheartd-bench-")))
        env = child_env(root)
        sim_cmd = [sys.executable, "-m", "bygheartd.simulator", "--port", "0", "--seed", "7"]
        sim_cmd += ["--latency", str(sizes.latency), "--latency-jitter", str(sizes.jitter)]
        sim_cmd += ["--audio-scale", "0.01", "--log-level", "warning"]
        sim_log = stack.enter_context((root / "simulator.log").open("wb"))
        sim = subprocess.Popen(sim_cmd, stdout=subprocess.PIPE, stderr=sim_log, text=True, env=env)
        stack.callback(stop, sim)
        if sim.stdout is None or not select.select([sim.stdout], [], [], 30)[0]:
            raise RuntimeError("the simulator printed no URL in 30 s")
        config = write_config(root, stack.enter_context(sim.stdout).readline().strip(), sizes)
        log = root / "daemon.log"
        cli = [sys.executable, "-m", "bygheartd", "--config", str(config)]
        daemon_log = stack.enter_context(log.open("wb"))
        daemon = subprocess.Popen(
            [*cli, "run"], stdout=subprocess.DEVNULL, stderr=daemon_log, env=env
        )
        stack.callback(stop, daemon)
        mark = "the library page at "
        wait_until("the web listener", lambda: mark in log.read_text(errors="replace"), daemon, log)
        url = log.read_text(errors="replace").split(mark, 1)[1].split()[0].rstrip("/") + "/health"
        wait_until("/health", lambda: health_ok(url), daemon, log)
        imports = [sys.executable, "-c", "import bygheartd; print(bygheartd.__file__)"]
        module = subprocess.run(imports, capture_output=True, text=True, env=env, timeout=60)
        songs = [str(root / f"lock-{n}.txt") for n in range(sizes.songs)]
        for n, song in enumerate(songs):
            head = f"---\ntitle: Lock Song {n}\nstyle: synth pop, lock {n}\nduration: 10\n"
            Path(song).write_text(f"{head}model: bygheart-melody-fast\n---\nla\n", "utf-8")
        done = subprocess.run(
            [*cli, "submit", "--json", *songs], capture_output=True, text=True, env=env, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"bygheartd submit failed:\n{done.stderr}")
        figures = measure(url, root / "state" / "jobs.sqlite3", env, sizes)
    return {"daemon_imports": module.stdout.strip(), **figures}


def table(results: dict[str, Any]) -> str:
    lock = results["lock"]
    head = ("window", "n", "p50 ms", "p95 ms", "max ms", ">1 s", "timeouts")
    rows = ["{:<18} {:>5} {:>8} {:>8} {:>8} {:>5} {:>8}".format(*head)]
    for name, w in results["windows"].items():
        label = f"during {lock['requested_seconds']:g} s lock" if name == "during lock" else name
        rows.append(
            f"{label:<18} {w['n']:>5} {w['p50_ms']:>8.1f} {w['p95_ms']:>8.1f} "
            f"{w['max_ms']:>8.1f} {w['stalls_over_1s']:>5} {w['timeouts']:>8}"
        )
    rows.append(
        f"(GET /health every {PROBE_EVERY * 1000:g} ms; lock held {lock['held_seconds']} s, "
        f"acquired {lock['wait_to_acquire_ms']} ms after asking; jobs {results['jobs_first']}"
        f" -> {results['jobs_last']}; {results['songs_pending_at_end']} songs unfinished at"
        " the end)"
    )
    loop = results.get("loop_lag") or {}
    if any(loop.values()):
        rows.append("\nthe daemon's event loop (its own 0.1 s ticker, read through /health):")
        rows.append(
            "{:<18} {:>5} {:>8} {:>8} {:>8} {:>7}".format(
                "window", "ticks", "p50 ms", "p95 ms", "max ms", "missed"
            )
        )
        for name, w in loop.items():
            if w is None:
                continue
            label = (
                f"during {lock['requested_seconds']:g} s lock" if name == "during lock" else name
            )
            rows.append(
                f"{label:<18} {w['ticks']:>5} {w['p50_ms']:>8.1f} {w['p95_ms']:>8.1f} "
                f"{w['max_ms']:>8.1f} {w['ticks_missed']:>7}"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a 1 s lock, 16 songs: a smoke run")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON output (default {RESULTS})")
    parser.add_argument("--hold-lock", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hold_lock is not None:
        hold_lock(args.hold_lock[0], float(args.hold_lock[1]), float(args.hold_lock[2]))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: the children stop
    sizes = QUICK if args.quick else FULL
    results = {
        "quick": args.quick,
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sizes": asdict(sizes),
        "probe_every_ms": PROBE_EVERY * 1000,
        "client_timeout_seconds": CLIENT_TIMEOUT,
        **run(sizes),
    }
    print(table(results))
    out = args.out or (RESULTS.with_name("store_lock-quick.json") if args.quick else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
