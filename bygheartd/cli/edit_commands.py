"""`bygheartd extend`, `stems`, `describe`, and the server inventory under `models`: the
edit tasks from the command line (DESIGN.md "Edit tasks"; the work is in service/edits.py).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bygheartd import catalog
from bygheartd.cli.display import print_files_table, print_json
from bygheartd.config import Config
from bygheartd.jobs import FINAL_STATUSES, Job, JobStatus, Origin
from bygheartd.safetext import visible

__all__ = ["describe_command", "extend_command", "models_inventory_command", "stems_command"]


async def _finish(
    runtime: Any, jobs: list[Job], wait: bool, timeout: float | None, as_json: bool
) -> int:
    """Print the queued jobs; with `wait`, follow them to the end and show their files."""
    from bygheartd.cli.waiting import print_queued, wait_all

    if not as_json:
        await print_queued(runtime.service, jobs)
    if not wait:
        if as_json:
            print_json([j.as_record() for j in jobs])
        elif runtime.service.engine_holder() is None:
            print(
                "no daemon is running: start one with `bygheartd run`, or add --wait",
                file=sys.stderr,
            )
        return 0
    from rich.console import Console

    finished = await wait_all(
        runtime.service, jobs, timeout, console=None if as_json else Console(stderr=True)
    )
    if as_json:
        print_json([j.as_record() for j in finished])
    else:
        print_files_table(Console(highlight=False), finished)
        for job in finished:
            for warning in job.warnings:
                print(f"warning: {visible(job.title)}: {visible(warning)}", file=sys.stderr)
    unfinished = [j for j in finished if j.status not in FINAL_STATUSES]
    if unfinished and not as_json:
        going = catalog.counted(len(unfinished), "job")
        print(f"{going} still going after the timeout", file=sys.stderr)
    return 0 if all(j.status is JobStatus.DONE for j in finished) else 1


async def extend_command(
    config: Config,
    ref: str,
    *,
    take: int,
    seconds: float,
    before: bool,
    wait: bool,
    timeout: float | None,
    as_json: bool,
) -> int:
    from bygheartd.runtime import EngineRole, Runtime
    from bygheartd.service.edits import extend_job

    async with Runtime(config, role=EngineRole.SUBMIT, engine=wait) as runtime:
        enqueued = await extend_job(
            runtime.service, ref, seconds=seconds, take=take, before=before, origin=Origin.CLI
        )
        return await _finish(runtime, [enqueued.job], wait, timeout, as_json)


async def stems_command(
    config: Config,
    source: str,
    *,
    take: int,
    tracks: Sequence[str],
    model: str | None,
    wait: bool,
    timeout: float | None,
    as_json: bool,
) -> int:
    from bygheartd.runtime import EngineRole, Runtime
    from bygheartd.service.edits import make_stems

    async with Runtime(config, role=EngineRole.SUBMIT, engine=wait) as runtime:
        if not as_json:
            try:
                per = catalog.credit_cost(model, 1, config.backend)
            except KeyError:  # an unknown model: the request check says so below
                per = 0
            count = len(tracks)
            cost = catalog.credits_phrase(per * count) if per else "no credits"
            print(
                f"{count} stem{'s' if count > 1 else ''} ({', '.join(tracks)}): {count}"
                f" generation{'s' if count > 1 else ''}, one per stem, {cost}",
                file=sys.stderr,
            )
        queued = await make_stems(
            runtime.service, source, take=take, tracks=tracks, model=model, origin=Origin.CLI
        )
        return await _finish(runtime, [q.job for q in queued], wait, timeout, as_json)


async def describe_command(
    config: Config, audio: Path, output: str | None, *, force: bool = False
) -> int:
    from bygheartd.cli.drafts import write_song_draft
    from bygheartd.service.edits import describe_audio

    draft = await describe_audio(config, audio)
    return write_song_draft(config, draft, output, force=force, then="make it")


async def models_inventory_command(config: Config, as_json: bool) -> int:
    """Every server's inventory: the models it has, which are loaded, what each can do."""
    from bygheartd.service.edits import inventories

    records = await inventories(config)
    if as_json:
        default = config.defaults.model or ""
        known = [
            {
                "name": m.name,
                "credits": m.credits,
                "purpose": m.purpose,
                "default": m.name == default,
            }
            for m in catalog.backend_models(config.backend)
        ]
        print_json({"backend": config.backend, "models": known, "servers": records})
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False)
    for record in records:
        console.print(f"server {visible(record['url'])}:", markup=False)
        found = record.get("inventory")
        if record.get("error"):
            console.print(f"  inventory not read: {visible(record['error'])}", markup=False)
            continue
        if not found:
            console.print("  no model inventory (not an ACE-Step 1.5 server?)", markup=False)
            continue
        table = Table(box=None, header_style="bold")
        table.add_column("model", no_wrap=True)
        table.add_column("loaded", no_wrap=True)
        table.add_column("tasks", overflow="fold")
        for model in found["models"]:
            name = visible(model["name"]) + (" (default)" if model["default"] else "")
            tasks = visible(", ".join(model["tasks"]))
            # Text, not markup: a name the server sends is data (`[bold]` stays as written).
            table.add_row(Text(name), "yes" if model["loaded"] else "no", Text(tasks))
        console.print(table)
        if found.get("initialized") is False:
            console.print(
                "  not initialised yet: it loads its configured models on its first job "
                "(ACE-Step started with ACESTEP_NO_INIT); until then none shows as loaded",
                markup=False,
            )
        llm = found.get("llm_initialized")
        console.print(
            f"  language model: {'ready' if llm else 'not loaded (describe needs it)'}",
            markup=False,
        )
        # One line, however long its path: folded by the terminal, not cut into pieces.
        console.print(f"  {_lora_line(record.get('lora'))}", markup=False, soft_wrap=True)
    return 0


def _lora_line(lora: dict[str, Any] | None) -> str:
    """The server's LoRA: the one configured for it and the adapters it has loaded."""
    lora = lora or {}
    path = lora.get("path")
    said = "LoRA: " + (f"{path} (configured)" if path else "none configured")
    if lora.get("error"):
        return f"{said}; state not read: {visible(str(lora['error']))}"
    status = lora.get("status") or {}
    adapters = ", ".join(visible(str(a)) for a in status.get("adapters") or ()) or "none"
    if path:
        said += ", loaded" if lora.get("loaded") else ", NOT loaded (the engine loads it)"
    return f"{said}; adapters loaded on the server: {adapters}"
