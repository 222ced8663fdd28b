"""Store benchmark: how the read commands scale with the number of jobs (1,000 and 10,000).

Builds job stores of each size in a temporary folder (through `SongService.enqueue` and the
store's own transitions: nine in ten jobs `done` with a file and a history, the rest
queued), then times `bygheartd list --json` (the default limit and `--limit N`), `show`,
`status` as subprocesses (median of several runs, wall-clock) and the MCP `list_songs`
tool in process. Prints a table and writes bench/results/store.json. See bench/README.md.
Usage: `.venv/bin/python bench/store.py [--quick] [--out PATH]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "store.json"
BENCH_KEY = "bgh_ult_bench_key_0c9e"
LIST_GOAL = 0.3
FULL_SIZES = (1_000, 10_000)
QUICK_SIZES = (50, 200)


def _setup_env() -> None:
    os.environ["BYGHEART_API_KEY"] = BENCH_KEY
    os.environ["BYGHEARTD_LOAD_PLUGINS"] = ""
    for name in ("BYGHEARTD_CONFIG", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "STATE_DIRECTORY"):
        os.environ.pop(name, None)


def write_config(root: Path) -> Path:
    """A config whose API nobody answers: nothing here talks to a server."""
    lines = ["[api]", 'base_url = "http://127.0.0.1:9"', "", "[folders]"]
    for name in ("inbox", "output", "archive", "failed", "drafts", "state"):
        (root / name).mkdir(parents=True, exist_ok=True)
        lines.append(f'{name} = "{root / name}"')
    lines += ["", "[budget]", 'plan = "ultimate"', "", "[plugins]", "enabled = []", ""]
    path = root / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def fill_store(config_path: Path, count: int) -> tuple[float, str]:
    """`count` jobs, nine in ten finished with a file; returns (seconds, a done job's id)."""
    from bygheartd.config import load_config
    from bygheartd.jobs import JobFile, JobStatus, utcnow
    from bygheartd.service.service import SongService
    from bygheartd.store.store import Store
    from bygheartd.store.threaded import SqliteJobStore

    config = load_config(config_path)
    store = Store.open(config.state_dir)
    # The store fsyncs every commit (a power cut must not lose a `submitting` mark); for
    # building a throw-away store that only costs time.
    store._db.execute("PRAGMA synchronous = OFF")
    # Only for its request rules (no store work): the jobs go straight into the file.
    service = SongService(config, SqliteJobStore.open(config.state_dir))
    started = time.perf_counter()
    some_done = ""
    for n in range(count):
        request = service.build_request(
            {
                "title": f"Store song {n}",
                "style": f"synth pop, store {n}",
                "model": "bygheart-melody-fast",
                "duration": 30,
                "lyrics": "[Verse]\nla la la\n[Chorus]\noh oh oh\n" * 4,
            }
        )
        job = store.insert_job(
            title=request.display_title(""),
            model=request.model,
            request=request.model_dump(mode="json", exclude_none=True),
            api_body=request.to_api_body(),
            credits=request.credit_cost(config.backend),
            source=f"store-{n}.txt",
        )
        if n % 10 == 9:
            continue
        store.transition(job.id, JobStatus.SUBMITTING, event="submitting", attempts=1)
        store.transition(
            job.id,
            JobStatus.RUNNING,
            event="submitted",
            task_id=f"task-{n}",
            submitted_at=utcnow(),
            progress=0.0,
        )
        store.transition(job.id, JobStatus.DOWNLOADING, event="generated", progress=1.0)
        store.transition(job.id, JobStatus.PROCESSING, event="downloaded")
        path = config.folders.output / f"store-song-{n}.mp3"
        store.transition(
            job.id,
            JobStatus.DONE,
            event="done",
            files=(JobFile(path=str(path), size=480_000, sha256="0" * 64),),
            base_name=f"store-song-{n}",
            completed_at=utcnow(),
        )
        some_done = job.id
    elapsed = time.perf_counter() - started
    store.close()
    service.store.close_sync()  # type: ignore[attr-defined]
    return elapsed, some_done


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "bygheartd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bygheartd"]


def _cli_env(cache: Path) -> dict[str, str]:
    """As installed: pip compiles the modules, so the commands run from bytecode. Without
    `PYTHONDONTWRITEBYTECODE` (set in some shells and CI) and with a private cache folder,
    the warm-up run writes it and the timed runs read it."""
    env = os.environ.copy()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def time_cli(config_path: Path, args: list[str], runs: int) -> dict[str, float]:
    """Wall-clock seconds of `bygheartd ARGS` as a subprocess: median and min of `runs`,
    after one warm-up run (page cache, bytecode)."""
    times = []
    env = _cli_env(config_path.parent.parent / "pycache")
    command = [*_cli(), "--config", str(config_path), *args]
    subprocess.run(command, capture_output=True, env=env)
    cpu = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, env=env)
        times.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if done.returncode != 0:
            raise RuntimeError(f"bygheartd {' '.join(args)} failed:\n{done.stderr.decode()}")
        if "--json" in args:
            json.loads(done.stdout)
    return {
        "median": round(statistics.median(times), 4),
        "min": round(min(times), 4),
        # CPU seconds of the child: what the command costs, less swayed by a busy machine
        "cpu_median": round(statistics.median(cpu), 4),
    }


async def time_mcp_list(config_path: Path, runs: int) -> dict[str, float]:
    """`list_songs` (default limit 20) through a real MCP client, in process, no engine."""
    from mcp import Client

    from bygheartd.config import load_config
    from bygheartd.mcp.server import build_server
    from bygheartd.runtime import EngineRole, Runtime

    config = load_config(config_path)
    times = []
    async with (
        Runtime(config, role=EngineRole.MCP, engine=False) as runtime,
        Client(build_server(runtime.service)) as client,
    ):
        await client.call_tool("list_songs", {})
        for _ in range(runs):
            started = time.perf_counter()
            result = await client.call_tool("list_songs", {})
            times.append(time.perf_counter() - started)
            if result.is_error:
                raise RuntimeError(f"list_songs failed: {result.content}")
    return {"median": round(statistics.median(times), 4), "min": round(min(times), 4)}


def bench_size(work: Path, count: int, runs: int) -> dict[str, Any]:
    config_path = write_config(work / f"jobs-{count}")
    fill_seconds, done_id = fill_store(config_path, count)
    return {
        "jobs": count,
        "fill_seconds": round(fill_seconds, 2),
        "help": time_cli(config_path, ["--help"], runs),
        "list_json": time_cli(config_path, ["list", "--json"], runs),
        "list_json_all": time_cli(config_path, ["list", "--json", "--limit", str(count)], runs),
        "list_table": time_cli(config_path, ["list"], runs),
        "show_json": time_cli(config_path, ["show", done_id, "--json"], runs),
        "show_prefix": time_cli(config_path, ["show", done_id[:10]], runs),
        "status_json": time_cli(config_path, ["status", "--json"], runs),
        "mcp_list_songs": asyncio.run(time_mcp_list(config_path, runs * 3)),
    }


ROWS = (
    ("--help", "help"),
    ("list --json (default limit)", "list_json"),
    ("list --json --limit N (all)", "list_json_all"),
    ("list (table)", "list_table"),
    ("show ID --json", "show_json"),
    ("show PREFIX (table)", "show_prefix"),
    ("status --json", "status_json"),
    ("MCP list_songs (in process)", "mcp_list_songs"),
)


def table(results: dict[str, Any]) -> str:
    """Wall-clock median / min / CPU seconds of each command, one column per store size."""
    sizes = results["sizes"]
    head = ["command (s: median / min / cpu)", *(f"{s['jobs']} jobs" for s in sizes)]
    rows = [head]
    for label, key in ROWS:
        rows.append(
            [
                label,
                *(
                    f"{s[key]['median']:.3f} / {s[key]['min']:.3f} / "
                    f"{s[key].get('cpu_median', 0.0):.3f}"
                    for s in sizes
                ),
            ]
        )
    rows.append(["fill (not timed as a goal)", *(f"{s['fill_seconds']:.1f}" for s in sizes)])
    width = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(width[i]) for i, c in enumerate(r)) for r in rows]
    biggest = sizes[-1]
    verdict = "ok" if biggest["list_json"]["median"] <= LIST_GOAL else "MISSED"
    lines.append(
        f"goal: list --json <= {LIST_GOAL} s at {biggest['jobs']} jobs: "
        f"{biggest['list_json']['median']:.3f} s ({verdict})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON output (default {RESULTS})")
    parser.add_argument("--runs", type=int, default=None, help="runs per command (default 5)")
    args = parser.parse_args(argv)
    _setup_env()
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    runs = args.runs or (2 if args.quick else 5)
    with tempfile.TemporaryDirectory(prefix="bygheartd-bench-store-") as tmp:
        results = {
            "quick": args.quick,
            "python": platform.python_version(),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "runs": runs,
            "goal_list_json_seconds": LIST_GOAL,
            "sizes": [bench_size(Path(tmp), n, runs) for n in sizes],
        }
    print(table(results))
    out = args.out or (RESULTS.with_name("store-quick.json") if args.quick else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
