"""`bygheartd demo`: the whole pipeline offline, on the simulator, with a throwaway key.

It writes into `./bygheartd-demo/` (config, inbox, output, state) so that people can look
at the sidecars and tagged audio afterwards and re-run `bygheartd --config
bygheartd-demo/config.toml list` against the same store.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bygheartd.config import parse_config
from bygheartd.jobs import Job, JobStatus

if TYPE_CHECKING:
    from bygheartd.service.service import SongService

DEMO_KEY = "bgh_demo_offline_key"


def _command_name() -> str:
    """`bygheartd` when it is on PATH, else the path that ran us (e.g. `.venv/bin/bygheartd`)."""
    import shutil

    if shutil.which("bygheartd"):
        return "bygheartd"
    script = Path(sys.argv[0])
    if script.name == "bygheartd":
        try:
            return str(script.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(script)
    return f"{sys.executable} -m bygheartd"


def find_examples() -> list[Path]:
    package = Path(__file__).resolve().parent.parent  # bygheartd/
    # A checkout has examples/ beside the package; a wheel ships them as bygheartd.examples.
    for folder in (package.parent / "examples", package / "examples"):
        if folder.is_dir():
            found = sorted(
                p
                for p in folder.iterdir()
                if p.suffix in {".txt", ".md", ".yaml", ".yml", ".toml", ".json"}
            )
            if found:
                return found
    return []


def demo_config_text(root: Path, base_url: str) -> str:
    return f"""\
# Written by `bygheartd demo`: the simulator at {base_url} with a throwaway key.
[api]
base_url = "{base_url}"

[folders]
inbox = "{root}/inbox"
output = "{root}/output"
archive = "{root}/archive"
failed = "{root}/failed"
drafts = "{root}/drafts"
state = "{root}/state"

[queue]
poll_min_seconds = 0.5
poll_max_seconds = 2
max_in_flight = 8

[budget]
plan = "ultimate"

[plugins]
enabled = ["quality", "tags"]
"""


async def retake_lines(service: SongService, jobs: list[Job]) -> list[str]:
    """What the quality gate did to the demo's songs: each retake (why) and the keeper."""
    from bygheartd.cli.display import shown

    lines = []
    for job in jobs:
        if not job.result.retakes:
            continue
        for event in await service.history(job):
            if event.event == "retake":
                lines.append(f"retake  {job.id}  {shown(job.title)}: {shown(event.reason or '')}")
        keeper = job.keeper_record()
        if keeper is not None:
            by = "the quality gate" if keeper["by"] == "gate" else "a person"
            name = Path(str(keeper["path"])).name
            lines.append(
                f"keeper  {job.id}  {shown(job.title)}: take {keeper['take']}, "
                f"{shown(name)} (chosen by {by})"
            )
    return lines


async def run_demo(directory: Path) -> int:
    from rich.console import Console

    from bygheartd.cli.display import print_files_table
    from bygheartd.runtime import EngineRole, Runtime
    from bygheartd.simulator import SimulatorSettings, run_in_thread

    console = Console(stderr=True, highlight=False)
    examples = find_examples()
    if not examples:
        console.print("no example song files found (examples/ in the repository)")
        return 1
    root = directory.resolve()
    root.mkdir(parents=True, exist_ok=True)
    # Takes of the requested length, so the quality gate judges them as it would real ones;
    # the first task comes back cut short, so the demo shows a retake and its keeper.
    settings = SimulatorSettings(
        latency=1.5, audio_scale=1.0, seed=7, defect="cut_short", defect_burst=1
    )
    console.print(f"[bold]bygheartd demo[/]: {len(examples)} example songs, offline, in {root}")
    started = time.monotonic()
    with run_in_thread(settings) as sim:
        console.print(f"simulator listening on {sim.base_url} (no internet, throwaway key)")
        config_file = root / "config.toml"
        config_file.write_text(demo_config_text(root, sim.base_url), encoding="utf-8")
        import tomllib

        config = parse_config(
            tomllib.loads(config_file.read_text()), source=str(config_file), path=config_file
        )
        os.environ["BYGHEART_API_KEY"] = DEMO_KEY
        async with Runtime(config, role=EngineRole.DEMO) as runtime:
            if not runtime.service.engine_running:
                console.print(f"cannot start the engine: {runtime.engine_error or 'lock held'}")
                return 1
            jobs = []
            for path in examples:
                job = await runtime.service.submit_file(path)
                console.print(f"  queued {job.id}  {job.title}  ({path.name})")
                jobs.append(job)
            finished = [await runtime.service.wait(j.id, timeout=120) for j in jobs]
            retakes = await retake_lines(runtime.service, finished)
    print_files_table(Console(highlight=False), finished)
    for line in retakes:
        console.print(line, soft_wrap=True)
    ok = all(j.status is JobStatus.DONE for j in finished)
    elapsed = time.monotonic() - started
    console.print(
        f"{sum(j.status is JobStatus.DONE for j in finished)}/{len(finished)} songs done in "
        f"{elapsed:.1f} s. Output: {root / 'output'}\n"
        f"Look around: {_command_name()} --config {config_file} list",
        soft_wrap=True,  # a command to paste: never broken into lines
    )
    sys.stdout.flush()
    return 0 if ok else 1
