"""Shared-store benchmark: 1, 2 and 4 engines on one PostgreSQL job store against one
simulator, the claim latency, and one engine's own pace on PostgreSQL beside SQLite.

Starts its own PostgreSQL (Debian's server: initdb + pg_ctl in a temporary folder, 127.0.0.1
on an ephemeral port, the server's durable defaults), one hosted-API simulator process
(generations of a fixed length, no jitter, no limit on tasks generating at once) and every
engine as its own `python -m bygheartd --config C run` process with its own folders, so
the engines run on separate interpreters (no shared GIL) as they do on separate hosts.
Songs are queued from this process through `SongService` into the shared store; figures
come from the store's history (event times) and the simulator's counters. Prints tables
and writes bench/results/shared_store.json (`--quick`: shared_store-quick.json). Exits 2
when PostgreSQL is not installed. See bench/README.md.
Usage: `.venv/bin/python bench/shared_store.py [--quick] [--out PATH]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import math
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "shared_store.json"
BENCH_KEY = "bgh_ult_bench_key_0c9e"  # bgh_ult* is the Ultimate plan: no credit cap
MODEL = "bygheart-melody-fast"
ROLE = "bygheartd"
LINEAR_GOAL = 0.9
READY_LINE = "bygheartd is running"
START_SECONDS = 60.0  # an engine, the simulator or the server must be up within this
MAX_WAIT_SECONDS = 300.0  # no run waits longer than this for its songs


@dataclass(frozen=True)
class Sizes:
    """(a) `songs_per_engine` x N songs for N engines (the same number of waves for every
    N); (b) `trickle_songs` queued one every `trickle_gap` s; (c) `pace_songs` at latency 0."""

    engines: tuple[int, ...]
    songs_per_engine: int
    generation_seconds: float
    max_in_flight: int
    poll_min: float
    poll_max: float
    trickle_songs: int
    trickle_gap: float
    pace_songs: int
    pace_in_flight: int


FULL = Sizes((1, 2, 4), 24, 2.0, 4, 0.25, 1.0, 12, 0.8, 300, 50)
QUICK = Sizes((1, 2), 4, 0.3, 2, 0.1, 0.5, 3, 0.3, 20, 10)


# -- processes: PostgreSQL, the simulator, engines ------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pg_bindir() -> Path | None:
    """The folder of Debian's `initdb` and `pg_ctl` (off PATH there), or None."""
    found = shutil.which("pg_ctl")
    if found and (Path(found).resolve().parent / "initdb").exists():
        return Path(found).resolve().parent
    versions = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    versions.sort(key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


class Postgres:
    """A throw-away cluster: trust auth on a private socket folder and 127.0.0.1 only, the
    server's own defaults otherwise (fsync and synchronous_commit on, like a real install).
    As root the cluster belongs to the `postgres` user (initdb refuses root)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="bygheartd-bench-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.port = _free_port()
        self.as_postgres = os.geteuid() == 0
        self.started = False

    def _run(self, *args: str) -> None:
        command = list(args)
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=START_SECONDS)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed:\n{done.stdout}{done.stderr}")

    def start(self) -> Postgres:
        self.sockets.mkdir()
        if self.as_postgres:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sockets, "postgres")
        self._run(
            *(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres"),
            *("--auth=trust", "-E", "UTF8", "--locale=C"),
        )
        options = f"-k {self.sockets} -p {self.port} -c listen_addresses=127.0.0.1"
        self.started = True  # from here on, stop() has something to stop
        self._run(
            *(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options),
            *("-l", str(self.root / "server.log"), "-w", "-t", "60", "start"),
        )
        self.admin(f"CREATE ROLE {ROLE} LOGIN")
        return self

    def admin(self, statement: str) -> Any:
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            host=str(self.sockets), port=self.port, user="postgres", dbname="postgres"
        ) as conn:
            conn.autocommit = True
            # Our own fixed statements and generated names only (never user input).
            cursor = conn.execute(sql.SQL(statement))
            return cursor.fetchone() if cursor.description else None

    def version(self) -> str:
        row = self.admin("SHOW server_version")
        return str(row[0]) if row else "?"

    def new_database(self, name: str) -> str:
        self.admin(f"CREATE DATABASE {name} OWNER {ROLE}")
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{name}"

    def transactions(self, database: str) -> tuple[int, int]:
        """(committed, rolled back) transactions of `database` so far (as the server's
        statistics have them: a backend reports at the latest when it ends)."""
        row = self.admin(
            f"SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = '{database}'"
        )
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def sample_lock_waits(self, database: str, done: asyncio.Event) -> dict[str, Any]:
        """Every 20 ms until `done`: how many of `database`'s backends wait for a lock (a
        row another engine is moving, the budget's advisory lock): engines waiting on each
        other, seen from the server. Sampled, so waits of a few ms are mostly missed."""
        import psycopg

        samples, seen, peak, kinds = 0, 0, 0, Counter[str]()
        async with await psycopg.AsyncConnection.connect(
            host=str(self.sockets), port=self.port, user="postgres", dbname="postgres"
        ) as conn:
            await conn.set_autocommit(True)
            while not done.is_set() and samples < 30_000:  # 10 min at 20 ms
                cursor = await conn.execute(
                    "SELECT wait_event FROM pg_stat_activity "
                    "WHERE datname = %s AND wait_event_type = 'Lock'",
                    (database,),
                )
                waiting = [str(r[0]) for r in await cursor.fetchall()]
                samples += 1
                seen += bool(waiting)
                peak = max(peak, len(waiting))
                kinds.update(waiting)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 0.02)
        return {
            "samples": samples,
            "samples_with_a_wait": seen,
            "share": round(seen / samples, 3) if samples else 0.0,
            "most_waiting_at_once": peak,
            "by_lock": dict(kinds),
        }

    def stop(self) -> None:
        try:
            if self.started:
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self._run(
                        *(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast"),
                        *("-w", "-t", "30", "stop"),
                    )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def child_env(root: Path) -> dict[str, str]:
    """Children import this tree's bygheartd, with the bench key, no plugins, no user config."""
    drop = ("BYGHEARTD_CONFIG", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "STATE_DIRECTORY")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env |= {"BYGHEART_API_KEY": BENCH_KEY, "BYGHEARTD_LOAD_PLUGINS": ""}
    env |= {"XDG_CONFIG_HOME": str(root / "xdg"), "XDG_STATE_HOME": str(root / "xdg")}
    return env


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it does not go in 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Simulator:
    """`bygheartd simulator` (the hosted API) in a child process: no limit on tasks
    generating at once (`--workers` unset), so it is never the bottleneck."""

    def __init__(self, root: Path, env: dict[str, str], latency: float) -> None:
        self.root, self.env, self.latency = root, env, latency
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> Simulator:
        command = [sys.executable, "-m", "bygheartd", "simulator", "--port", "0"]
        command += ["--latency", str(self.latency), "--latency-jitter", "0", "--seed", "7"]
        command += ["--audio-scale", "0.01", "--max-tasks-kept", "20000"]
        command += ["--audio-dir", str(self.root / "sim-audio"), "--log-level", "warning"]
        with (self.root / "simulator.log").open("wb") as log:
            self.proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, text=True, env=self.env
            )
        assert self.proc.stdout is not None
        if not select.select([self.proc.stdout], [], [], START_SECONDS)[0]:
            raise RuntimeError(f"the simulator printed no URL in {START_SECONDS:.0f} s")
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the simulator did not start: {self.url!r}")
        return self

    def faults(self, **changes: float) -> None:
        httpx.post(f"{self.url}/_sim/faults", json=changes, timeout=10).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.url}/_sim/reset", json={"tasks": True}, timeout=10).raise_for_status()

    def requests(self) -> dict[str, int]:
        stats = httpx.get(f"{self.url}/_sim/stats", timeout=10).json()
        counted = stats["http_requests"]
        return {
            "submit": int(counted.get("/release_task", 0)),
            "poll": int(counted.get("/query_result", 0)),
            "download": int(counted.get("/v1/audio", 0)),
        }

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


@dataclass
class EngineProc:
    """One `bygheartd run` with its own folders (its own state folder and engine lock)."""

    home: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    cpu_seconds: float = 0.0

    @property
    def config(self) -> Path:
        return self.home / "config.toml"

    @property
    def log_path(self) -> Path:
        return self.home / "engine.log"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bygheartd", "--config", str(self.config), "run"],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=self.env,
            )

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise RuntimeError(f"engine {self.home.name} exited ({code}):\n{self.log()[-3000:]}")

    def read_cpu(self) -> None:
        """User + system CPU seconds of the process so far (Linux /proc; 0 elsewhere)."""
        if self.proc is None:
            return
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            self.cpu_seconds = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None:
            self.read_cpu()
            stop_process(self.proc)

    def problems(self) -> list[str]:
        """Warnings, errors and tracebacks the engine logged (what looked wrong)."""
        marks = ("WARNING", "ERROR", "CRITICAL", "Traceback")
        return [ln for ln in self.log().splitlines() if any(m in ln for m in marks)]


def write_config(home: Path, sim_url: str, store_url: str, queue: dict[str, float]) -> Path:
    lines = ["[api]", f'base_url = "{sim_url}"', "", "[folders]"]
    for name in ("inbox", "output", "archive", "failed", "drafts", "state"):
        (home / name).mkdir(parents=True, exist_ok=True)
        lines.append(f'{name} = "{home / name}"')
    lines += ["", "[queue]", *(f"{k} = {v!r}" for k, v in queue.items())]
    lines += ["", "[budget]", 'plan = "ultimate"', "", "[plugins]", "enabled = []", ""]
    if store_url:
        lines += ["[store]", f'url = "{store_url}"', ""]
    path = home / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@contextlib.contextmanager
def engines_running(engines: list[EngineProc]) -> Iterator[None]:
    """Start every engine at once, wait until each says it runs; stop them all after."""
    try:
        for engine in engines:
            engine.start()
        deadline = time.monotonic() + START_SECONDS
        for engine in engines:
            while READY_LINE not in engine.log():
                engine.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"engine {engine.home.name} not ready:\n{engine.log()}")
                time.sleep(0.05)
        yield
    finally:
        for engine in engines:
            if engine.proc is not None and engine.proc.poll() is None:
                engine.read_cpu()
                engine.proc.send_signal(signal.SIGTERM)  # all at once, then wait for each
        for engine in engines:
            engine.stop()


def cpu_busy() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine so far (Linux), for a busy fraction."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def busy_between(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]), 3)


# -- songs in, history out ---------------------------------------------------------------


def _request(n: int, tag: str) -> dict[str, Any]:
    return {
        "title": f"Shared {tag} {n}",
        "style": f"synth pop, shared {tag} {n}",
        "model": MODEL,
        "duration": 10,
        "lyrics": "[Verse]\nla la la\n[Chorus]\noh oh oh",
    }


async def enqueue(service: Any, count: int, tag: str, gap: float = 0.0) -> list[str]:
    """Queue `count` songs, one every `gap` seconds (0: as fast as the store takes them)."""
    from bygheartd.jobs import Origin
    from bygheartd.service.submission import Submission

    ids = []
    started = time.monotonic()
    for n in range(count):
        if gap:
            await asyncio.sleep(max(0.0, started + n * gap - time.monotonic()))
        request = service.build_request(_request(n, tag))
        submission = Submission(request, Origin.CLI, source=f"{tag}-{n}.txt")
        ids.append((await service.submit(submission)).job.id)
    return ids


async def wait_final(store: Any, ids: list[str], engines: list[EngineProc]) -> dict[str, int]:
    """Until every job of `ids` is final (bounded), checking the engines still run."""
    from bygheartd.jobs import FINAL_STATUSES

    finals = {s.value for s in FINAL_STATUSES}
    deadline = time.monotonic() + MAX_WAIT_SECONDS
    wanted = set(ids)
    while True:
        jobs = [j for j in await store.list_jobs(summary=True) if j.id in wanted]
        counts = Counter(j.status.value for j in jobs)
        if len(jobs) == len(wanted) and all(j.status.value in finals for j in jobs):
            return dict(counts)
        for engine in engines:
            engine.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"songs not finished after {MAX_WAIT_SECONDS:.0f} s: {counts}")
        await asyncio.sleep(0.1)


def _percentile(values: list[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Histories:
    """What the store's history says about a set of jobs."""

    created: list[datetime] = field(default_factory=list)
    claims: list[float] = field(default_factory=list)  # created -> first submitting, s
    first_submitting: list[datetime] = field(default_factory=list)
    done_at: list[datetime] = field(default_factory=list)
    by_engine: Counter[str] = field(default_factory=Counter)
    submitted_more_than_once: int = 0
    taken_over: int = 0
    done: int = 0
    # Per song, seconds: submitting -> running (the POST), running -> downloading (the
    # generation and the poll that saw it done), downloading -> done (the delivery).
    phases: dict[str, list[float]] = field(
        default_factory=lambda: {"submit": [], "generate_and_poll": [], "deliver": []}
    )

    def first_fill(self, slots: int) -> float:
        """Seconds from the first song queued until `slots` songs were claimed: how fast
        the engines together filled every free slot at the start of a burst."""
        claimed = sorted(self.first_submitting)
        if not claimed or not self.created:
            return 0.0
        return (claimed[min(slots, len(claimed)) - 1] - min(self.created)).total_seconds()

    def phase_p50s(self) -> dict[str, float]:
        return {name: round(_percentile(v, 0.5), 3) for name, v in self.phases.items()}


async def read_histories(store: Any, ids: list[str]) -> Histories:
    out = Histories()
    for job_id in ids:
        history = await store.history(job_id)
        created = next(e.at for e in history if e.event == "created")
        claims = [e for e in history if e.to_status == "submitting"]
        out.created.append(created)
        if claims:
            out.claims.append((claims[0].at - created).total_seconds())
            out.first_submitting.append(claims[0].at)
            out.by_engine[(claims[0].reason or "?").removeprefix("by engine ")] += 1
        out.submitted_more_than_once += len(claims) > 1
        out.taken_over += sum(1 for e in history if e.event == "taken over")
        done = [e.at for e in history if e.to_status == "done"]
        if done:
            out.done += 1
            out.done_at.append(done[-1])
        moves = {"submitting": claims[0].at if claims else None}
        for event in history:
            if event.to_status in ("running", "downloading") and event.to_status not in moves:
                moves[event.to_status] = event.at
        moves["done"] = done[-1] if done else None
        steps = [
            ("submit", "submitting", "running"),
            ("generate_and_poll", "running", "downloading"),
        ]
        for name, start, end in [*steps, ("deliver", "downloading", "done")]:
            begun, ended = moves.get(start), moves.get(end)
            if begun is not None and ended is not None:
                out.phases[name].append((ended - begun).total_seconds())
    return out


def ms(values: list[float], q: float) -> float:
    return round(_percentile(values, q) * 1000, 1)


def audio_files(homes: list[Path]) -> int:
    skip = (".json", ".part", ".txt")
    return sum(
        1
        for home in homes
        for p in (home / "output").rglob("*")
        if p.is_file() and p.suffix not in skip
    )


# -- (a) and (b): N engines on one store ----------------------------------------------------


async def run_engines(
    count: int, sizes: Sizes, work: Path, sim: Simulator, pg: Postgres, env: dict[str, str]
) -> dict[str, Any]:
    from bygheartd.config import load_config
    from bygheartd.service.service import open_service
    from bygheartd.store.opening import open_store

    database = f"shared_{count}"
    url = pg.new_database(database)
    queue = {
        "poll_min_seconds": sizes.poll_min,
        "poll_max_seconds": sizes.poll_max,
        "max_in_flight": sizes.max_in_flight,
    }
    homes = [work / f"n{count}-engine{i}" for i in range(count)]
    engines = [EngineProc(h, env) for h in homes]
    for engine in engines:
        write_config(engine.home, sim.url, url, queue)
    config = load_config(engines[0].config)  # this process queues into the same store
    service = open_service(config)
    store = open_store(config)
    songs = sizes.songs_per_engine * count
    try:
        with engines_running(engines):
            sim.reset()
            cpu_before = cpu_busy()
            burst_over = asyncio.Event()
            sampler = asyncio.create_task(pg.sample_lock_waits(database, burst_over))
            try:
                started = time.monotonic()
                ids = await enqueue(service, songs, f"burst{count}")
                enqueue_seconds = time.monotonic() - started
                counts = await wait_final(store, ids, engines)
                cpu_after = cpu_busy()
            finally:
                burst_over.set()
                lock_waits = await sampler
            requests = sim.requests()
            burst = await read_histories(store, ids)
            on_disk = audio_files(homes)
            # (b) songs one at a time into idle engines: the claim alone, no slot to wait for
            sim.reset()
            trickle_ids = await enqueue(
                service, sizes.trickle_songs, f"trickle{count}", sizes.trickle_gap
            )
            trickle_counts = await wait_final(store, trickle_ids, engines)
            trickle_requests = sim.requests()
            trickle = await read_histories(store, trickle_ids)
            engine_rows = await store.list_engines()
    finally:
        await service.close()
        await store.close()
    await asyncio.sleep(1.0)  # the engines' backends have ended and reported
    committed, rolled_back = pg.transactions(database)
    wall = (max(burst.done_at) - min(burst.created)).total_seconds() if burst.done_at else 0.0
    cpu = [round(e.cpu_seconds, 2) for e in engines]
    problems = {e.home.name: e.problems()[:10] for e in engines if e.problems()}
    return {
        "engines": count,
        "store": url.rsplit("/", 1)[1],
        "songs": songs,
        "statuses": counts,
        "done": burst.done,
        "wall_seconds": round(wall, 2),
        "enqueue_seconds": round(enqueue_seconds, 2),
        "songs_per_minute": round(burst.done / wall * 60, 1) if wall else 0.0,
        "ideal_songs_per_minute": round(
            count * sizes.max_in_flight * 60 / sizes.generation_seconds, 1
        ),
        "requests": requests,
        "requests_per_song": round(sum(requests.values()) / max(1, burst.done), 3),
        "songs_by_engine": sorted(burst.by_engine.values(), reverse=True),
        "engines_registered_at_end": len(engine_rows),
        "first_fill_seconds": round(burst.first_fill(count * sizes.max_in_flight), 3),
        "phase_p50_seconds": burst.phase_p50s(),
        "queue_wait_p50_seconds": round(_percentile(burst.claims, 0.5), 3),
        "queue_wait_p95_seconds": round(_percentile(burst.claims, 0.95), 3),
        "submitted_more_than_once": burst.submitted_more_than_once,
        "taken_over": burst.taken_over,
        "audio_files_on_disk": on_disk,
        "machine_cpu_busy": busy_between(cpu_before, cpu_after),
        "lock_waits": lock_waits,
        "engine_cpu_seconds": cpu,
        # (a) and (b) together, every process's: a move refused inside its transaction
        # (another engine moved the job first) is rolled back.
        "transactions_committed": committed,
        "transactions_rolled_back": rolled_back,
        "claim": {
            "songs": sizes.trickle_songs,
            "gap_seconds": sizes.trickle_gap,
            "statuses": trickle_counts,
            "p50_ms": ms(trickle.claims, 0.5),
            "p95_ms": ms(trickle.claims, 0.95),
            "max_ms": ms(trickle.claims, 1.0),
            "songs_by_engine": sorted(trickle.by_engine.values(), reverse=True),
            "requests": trickle_requests,
            "submitted_more_than_once": trickle.submitted_more_than_once,
        },
        "engine_log_problems": problems,
    }


# -- (c): one engine's own pace, PostgreSQL beside SQLite -------------------------------------


async def run_pace(
    kind: str, sizes: Sizes, work: Path, sim: Simulator, pg: Postgres, env: dict[str, str]
) -> dict[str, Any]:
    """`pace_songs` queued first, then one engine started: from its first `submitting` to
    its last `done`, the engine's own pace (store, scheduling, HTTP, files), not the
    server's (latency 0)."""
    from bygheartd.config import load_config
    from bygheartd.service.service import open_service
    from bygheartd.store.opening import open_store

    url = pg.new_database("pace") if kind == "postgresql" else ""
    queue = {
        "poll_min_seconds": 0.2,
        "poll_max_seconds": 1.0,
        "max_in_flight": sizes.pace_in_flight,
    }
    engine = EngineProc(work / f"pace-{kind}", env)
    config = load_config(write_config(engine.home, sim.url, url, queue))
    service = open_service(config)
    try:
        ids = await enqueue(service, sizes.pace_songs, f"pace-{kind}")
    finally:
        await service.close()  # SQLite: the engine is the only writer while it runs
    store = open_store(config)
    try:
        sim.reset()
        with engines_running([engine]):
            counts = await wait_final(store, ids, [engine])
            requests = sim.requests()
        found = await read_histories(store, ids)
    finally:
        await store.close()
    first = min(found.first_submitting) if found.first_submitting else None
    wall = (max(found.done_at) - first).total_seconds() if first and found.done_at else 0.0
    return {
        "store": kind,
        "songs": sizes.pace_songs,
        "max_in_flight": sizes.pace_in_flight,
        "statuses": counts,
        "done": found.done,
        "wall_seconds": round(wall, 2),
        "songs_per_minute": round(found.done / wall * 60, 1) if wall else 0.0,
        "requests": requests,
        "requests_per_song": round(sum(requests.values()) / max(1, found.done), 3),
        "submitted_more_than_once": found.submitted_more_than_once,
        "engine_cpu_seconds": round(engine.cpu_seconds, 2),
        "engine_cpu_ms_per_song": round(engine.cpu_seconds / max(1, found.done) * 1000, 1),
        "engine_log_problems": engine.problems()[:10],
    }


async def bench(sizes: Sizes, work: Path, pg: Postgres) -> dict[str, Any]:
    env = child_env(work)
    sim = Simulator(work, env, sizes.generation_seconds)
    scaling: dict[str, Any] = {}
    try:
        sim.start()
        base: float | None = None
        for count in sizes.engines:
            row = await run_engines(count, sizes, work, sim, pg, env)
            base = row["songs_per_minute"] if base is None else base
            linear = base * count
            row["linear_songs_per_minute"] = round(linear, 1)
            row["ratio_to_linear"] = round(row["songs_per_minute"] / linear, 3) if linear else 0.0
            scaling[str(count)] = row
            print(
                f"  {count} engine(s): {row['songs_per_minute']} songs/min, claim p50 "
                f"{row['claim']['p50_ms']} ms",
                flush=True,
            )
        sim.faults(latency=0.0)
        pace = {}
        for kind in ("postgresql", "sqlite"):
            pace[kind] = await run_pace(kind, sizes, work, sim, pg, env)
            print(f"  pace on {kind}: {pace[kind]['songs_per_minute']} songs/min", flush=True)
    finally:
        sim.stop()
    return {"scaling": scaling, "pace": pace}


# -- report ------------------------------------------------------------------------------


def checks(results: dict[str, Any]) -> list[str]:
    """Every song made exactly once: anything else is a failure of the run (exit 1)."""
    failed = []
    for n, row in results["scaling"].items():
        songs, claim = row["songs"], row["claim"]
        if row["done"] != songs:
            failed.append(f"{n} engine(s): {row['done']}/{songs} songs done")
        if row["requests"]["submit"] != songs or claim["requests"]["submit"] != claim["songs"]:
            failed.append(f"{n} engine(s): {row['requests']['submit']} submits for {songs} songs")
        if row["requests"]["download"] != songs:
            failed.append(f"{n} engine(s): {row['requests']['download']} downloads for {songs}")
        if row["submitted_more_than_once"] or claim["submitted_more_than_once"]:
            failed.append(f"{n} engine(s): a job moved to submitting twice")
        if row["audio_files_on_disk"] != songs:
            failed.append(f"{n} engine(s): {row['audio_files_on_disk']} audio files for {songs}")
    for kind, row in results["pace"].items():
        if row["done"] != row["songs"] or row["requests"]["submit"] != row["songs"]:
            failed.append(f"pace on {kind}: {row['done']} done, {row['requests']} requests")
    return failed


def lock_waits(found: dict[str, Any]) -> str:
    """`3.1 % (max 2)`: share of the samples in which a backend waited for a lock."""
    return f"{found['share'] * 100:.1f} % (max {found['most_waiting_at_once']})"


def tables(results: dict[str, Any]) -> str:
    s = results["sizes"]
    lines = [
        f"(a) {s['songs_per_engine']} songs per engine, {s['generation_seconds']:g} s "
        f"generations, max_in_flight {s['max_in_flight']} per engine, PostgreSQL "
        f"{results['postgresql']} (ideal: {s['max_in_flight']} x 60 / "
        f"{s['generation_seconds']:g} s = "
        f"{s['max_in_flight'] * 60 / s['generation_seconds']:g} songs/min per engine)",
    ]
    head = ("engines", "songs", "wall s", "songs/min", "linear", "ratio", "req/song")
    head2 = ("songs by engine", "wait p50/p95 s", "cpu busy")
    lines.append(
        "{:>7} {:>5} {:>7} {:>9} {:>7} {:>14} {:>8}  {:<15} {:>14} {:>8}".format(*head, *head2)
    )
    for n, r in results["scaling"].items():
        ok = "ok" if r["ratio_to_linear"] >= LINEAR_GOAL else "MISSED"
        busy = "?" if r["machine_cpu_busy"] is None else f"{r['machine_cpu_busy'] * 100:.0f} %"
        wait = f"{r['queue_wait_p50_seconds']:.2f}/{r['queue_wait_p95_seconds']:.2f}"
        lines.append(
            f"{n:>7} {r['songs']:>5} {r['wall_seconds']:>7} {r['songs_per_minute']:>9} "
            f"{r['linear_songs_per_minute']:>7} {r['ratio_to_linear']:>5} {f'({ok})':>8} "
            f"{r['requests_per_song']:>8}  {'/'.join(map(str, r['songs_by_engine'])):<15} "
            f"{wait:>14} {busy:>8}"
        )
    lines.append(f"(ratio = songs/min / (N x the 1-engine rate); goal >= {LINEAR_GOAL})")
    lines += [
        "",
        "(a) where the time went, per song (p50), and the first N x max_in_flight claims",
        "{:>7} {:>13} {:>9} {:>13} {:>11}".format(
            "engines", "first fill s", "POST ms", "gen+poll s", "deliver ms"
        ),
    ]
    for n, r in results["scaling"].items():
        p = r["phase_p50_seconds"]
        lines.append(
            f"{n:>7} {r['first_fill_seconds']:>13} {p['submit'] * 1000:>9.0f} "
            f"{p['generate_and_poll']:>13} {p['deliver'] * 1000:>11.0f}"
        )
    lines += [
        "",
        f"(b) claim latency: {s['trickle_songs']} songs queued one every "
        f"{s['trickle_gap']:g} s into idle engines, created -> submitting",
        "{:>7} {:>8} {:>8} {:>8}  {:<10} {:>19} {:>20}".format(
            "engines",
            "p50 ms",
            "p95 ms",
            "max ms",
            "taken by",
            "lock waits in (a)",
            "rolled back tx (a+b)",
        ),
    ]
    for n, r in results["scaling"].items():
        c = r["claim"]
        lines.append(
            f"{n:>7} {c['p50_ms']:>8} {c['p95_ms']:>8} {c['max_ms']:>8}  "
            f"{'/'.join(map(str, c['songs_by_engine'])):<10} "
            f"{lock_waits(r['lock_waits']):>19} "
            f"{r['transactions_rolled_back']:>8} of {r['transactions_committed']:>6}"
        )
    kinds = [
        f"{n} engine(s): "
        + (", ".join(f"{k} {v}" for k, v in sorted(r["lock_waits"]["by_lock"].items())) or "none")
        for n, r in results["scaling"].items()
    ]
    lines += [
        f"(lock waits seen, by lock: {'; '.join(kinds)}. object: the commit-order lock every "
        "NOTIFY takes; transactionid/tuple: a row another transaction is moving; advisory: "
        "the store's advisory locks (output names, the budget))"
    ]
    lines += [
        "",
        f"(c) one engine's own pace: {s['pace_songs']} songs, 0 s generations, max_in_flight "
        f"{s['pace_in_flight']} (first submitting -> last done)",
        "{:<11} {:>7} {:>9} {:>8} {:>12}".format(
            "store", "wall s", "songs/min", "req/song", "cpu ms/song"
        ),
    ]
    for kind, r in results["pace"].items():
        lines.append(
            f"{kind:<11} {r['wall_seconds']:>7} {r['songs_per_minute']:>9} "
            f"{r['requests_per_song']:>8} {r['engine_cpu_ms_per_song']:>12}"
        )
    problems = {
        f"{n} engine(s) {name}": found
        for n, r in results["scaling"].items()
        for name, found in r["engine_log_problems"].items()
    }
    problems |= {
        f"pace {kind}": r["engine_log_problems"]
        for kind, r in results["pace"].items()
        if r["engine_log_problems"]
    }
    if problems:
        lines += ["", "engine logs (warnings and errors):"]
        for where, found in problems.items():
            lines += [f"  {where}: {line}" for line in found]
    return "\n".join(lines)


def source_state() -> str:
    """The commit measured, `+changes` when bygheartd/ differs from it (a work tree)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "bygheartd"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return f"{head or '?'}{' +changes' if changed else ''}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON output (default {RESULTS})")
    args = parser.parse_args(argv)
    bindir = pg_bindir()
    if bindir is None:
        print(
            "bench/shared_store.py needs PostgreSQL's server programs (initdb, pg_ctl), not "
            "found on PATH or in /usr/lib/postgresql/*/bin: install Debian's `postgresql` "
            "(make system-deps)",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: the children stop
    os.environ["BYGHEART_API_KEY"] = BENCH_KEY
    os.environ["BYGHEARTD_LOAD_PLUGINS"] = ""
    import logging

    logging.basicConfig(level=logging.ERROR)
    sizes = QUICK if args.quick else FULL
    started = time.monotonic()
    load = os.getloadavg()  # other work on the machine sways every figure
    pg = Postgres(bindir)
    try:
        with tempfile.TemporaryDirectory(prefix="bygheartd-bench-shared-") as tmp:
            pg.start()
            figures = asyncio.run(bench(sizes, Path(tmp), pg))
            version = pg.version()
    finally:
        pg.stop()
    results = {
        "quick": args.quick,
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "postgresql": version,
        "source": source_state(),
        "sizes": asdict(sizes),
        "linear_goal": LINEAR_GOAL,
        "load_average_at_start": [round(x, 2) for x in load],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "total_seconds": round(time.monotonic() - started, 1),
        **figures,
    }
    failed = checks(results)
    results["failed_checks"] = failed
    print(tables(results))
    out = args.out or (RESULTS.with_name("shared_store-quick.json") if args.quick else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(
        f"\nwrote {out} ({results['total_seconds']} s; {results['machine']}, load average "
        f"{load[0]:.2f} at the start, {results['load_average_at_end'][0]:.2f} at the end)"
    )
    for problem in failed:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
