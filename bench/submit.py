"""Submit benchmark: what `bygheartd submit` costs per file as the store grows.

Builds stores of 0, 10,000 and 100,000 jobs (nine in ten `done`, one in ten `queued`, as
bench/store.py makes them; the larger ones by copying those rows in SQL), then times
`bygheartd submit` of a batch of song files as a subprocess, with and without `--json`
(the plain output prints each job's cost and what it leaves today, which once read the
whole queue per file). The cost per file should stay flat whatever the store holds.
Prints a table and writes bench/results/submit.json. Nothing talks to a server: no daemon
runs, the jobs stay queued.
Usage: `.venv/bin/python bench/submit.py [--quick] [--out PATH]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from store import _cli, _cli_env, _setup_env, fill_store, write_config

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "submit.json"
FULL_SIZES = (0, 10_000, 100_000)
QUICK_SIZES = (0, 2_000)
SEED_JOBS = 1_000


def grow(config_path: Path, count: int) -> float:
    """A store of `count` jobs: `SEED_JOBS` made the real way, then copies of their rows
    under new ids (the index sizes are what matter here, not the variety)."""
    started = time.perf_counter()
    if count == 0:
        return 0.0
    fill_store(config_path, min(count, SEED_JOBS))
    from bygheartd.store.store import DB_NAME

    db = sqlite3.connect(config_path.parent / "state" / DB_NAME)
    columns = [row[1] for row in db.execute("PRAGMA table_info(jobs)")]
    copied = [c for c in columns if c not in ("id", "drop_identity", "idempotency_key")]
    names = ", ".join(copied)
    made = min(count, SEED_JOBS)
    copy = 0
    with db:
        while made < count:
            batch = min(SEED_JOBS, count - made)
            db.execute(
                f"INSERT INTO jobs (id, {names}) SELECT id || '-c{copy}', {names} FROM jobs "
                f"WHERE id NOT LIKE '%-c%' LIMIT {batch}"
            )
            made += batch
            copy += 1
    db.close()
    return time.perf_counter() - started


def song_files(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        path = folder / f"bench-song-{n}.txt"
        path.write_text(f"---\nstyle: synth pop {n}\n---\n[Verse]\nla la la {n}\n")
        paths.append(str(path))
    return paths


def time_submit(config_path: Path, files: list[str], as_json: bool) -> dict[str, float]:
    env = _cli_env(config_path.parent.parent / "pycache")
    command = [*_cli(), "--config", str(config_path), "submit", *(["--json"] if as_json else [])]
    subprocess.run([*command, "--dry-run", files[0]], capture_output=True, env=env)  # warm
    started = time.perf_counter()
    done = subprocess.run([*command, *files], capture_output=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"bygheartd submit failed:\n{done.stderr.decode()}")
    return {"seconds": round(seconds, 3), "ms_per_file": round(seconds / len(files) * 1000, 2)}


def bench_size(work: Path, count: int, batch: int) -> dict[str, Any]:
    root = work / f"jobs-{count}"
    config_path = write_config(root)
    fill_seconds = grow(config_path, count)
    return {
        "jobs": count,
        "fill_seconds": round(fill_seconds, 2),
        "batch": batch,
        "plain": time_submit(config_path, song_files(root / "plain", batch), as_json=False),
        "json": time_submit(config_path, song_files(root / "json", batch), as_json=True),
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        f"submit of {results['batch']} files per run ({results['machine']})",
        f"{'jobs in store':>14}  {'plain ms/file':>14}  {'--json ms/file':>15}",
    ]
    for size in results["sizes"]:
        lines.append(
            f"{size['jobs']:>14,}  {size['plain']['ms_per_file']:>14.2f}  "
            f"{size['json']['ms_per_file']:>15.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON output (default {RESULTS})")
    args = parser.parse_args(argv)
    _setup_env()
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    batch = 100 if args.quick else 500
    with tempfile.TemporaryDirectory(prefix="bygheartd-bench-submit-") as tmp:
        results = {
            "quick": args.quick,
            "python": platform.python_version(),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "batch": batch,
            "sizes": [bench_size(Path(tmp), n, batch) for n in sizes],
        }
    print(table(results))
    out = args.out or (RESULTS.with_name("submit-quick.json") if args.quick else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
