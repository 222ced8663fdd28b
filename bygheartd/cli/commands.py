"""What the CLI commands do, apart from parsing arguments (main.py) and drawing (display.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from bygheartd.catalog import counted, credits_phrase
from bygheartd.cli.albums import albums_lines, is_album_path, print_album, submit_album
from bygheartd.cli.display import (
    credits_text,
    poll_trouble,
    print_files_table,
    print_job_detail,
    print_jobs_table,
    print_json,
)
from bygheartd.config import Config
from bygheartd.errors import BygheartdError, RequestError
from bygheartd.jobs import FINAL_STATUSES, Job, JobStatus, Origin, iso
from bygheartd.service.progress import WAITING, record_eta

if TYPE_CHECKING:  # imported when used: `bygheartd list` must start fast
    from rich.console import Console

    from bygheartd.service.service import SongService
    from bygheartd.songs.request import SongRequest


@dataclass(frozen=True)
class Described:
    """`submit --describe`: a song from a description and no file (Simple mode)."""

    data: Mapping[str, Any]

    def __str__(self) -> str:
        return "--describe"


SongSource = Path | Described
T = TypeVar("T")


def _parse_source(service: SongService, item: SongSource, preset: str | None) -> SongRequest:
    if isinstance(item, Described):
        return service.build_request(item.data, preset=preset, source="--describe")
    return service.parse_file(item, preset=preset, display=str(item))


async def _submit_source(service: SongService, item: SongSource, preset: str | None) -> Job:
    """A file like the inbox's (its stem a fallback title), or a description, whose title
    is then `--title` or one made from the description."""
    if isinstance(item, Described):
        from bygheartd.service.submission import Submission

        request = _parse_source(service, item, preset)
        return (await service.submit(Submission(request, Origin.CLI))).job
    return await service.submit_file(item, preset=preset)


def _console() -> Console:
    from rich.console import Console

    return Console(stderr=False, highlight=False)


def _err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@asynccontextmanager
async def opened_service(config: Config) -> AsyncIterator[SongService]:
    """The service over the store, without an engine, closed when the command is done.
    A command is alone in its process, so a SQLite store answers inline (no threads)."""
    from bygheartd.service.service import open_service

    service = open_service(config, inline=True)
    try:
        yield service
    finally:
        await service.close()


def run_read(config: Config, command: Coroutine[Any, Any, T]) -> T:
    """Run a command that only talks to the store. On SQLite (inline) its coroutine never
    waits, so it is driven to the end without an event loop: importing asyncio was most
    of a cold `bygheartd list`. A PostgreSQL store needs the loop."""
    if config.store.shared:
        import asyncio

        return asyncio.run(command)
    try:
        command.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    command.close()
    raise RuntimeError("a store command waited on something: it needs an event loop")


def parse_statuses(text: str | None) -> list[JobStatus] | None:
    if not text:
        return None
    wanted = []
    for name in text.split(","):
        try:
            wanted.append(JobStatus(name.strip().lower()))
        except ValueError:
            import click

            from bygheartd.songs.values import suggest

            hint = suggest(name.strip().lower(), [s.value for s in JobStatus])
            # A usage error (exit 2), like any other bad option value.
            raise click.BadParameter(
                f"unknown status {name!r}: {hint}", param_hint="'--status'"
            ) from None
    return wanted


async def recent_jobs(config: Config, limit: int) -> list[Job]:
    """The newest jobs, summaries only (tab completion of job ids)."""
    async with opened_service(config) as service:
        return await service.list(limit=limit, summary=True)


async def list_command(
    config: Config, status: str | None, limit: int | None, as_json: bool, *, wide: bool = False
) -> None:
    statuses = parse_statuses(status)
    async with opened_service(config) as service:
        jobs = await service.list(statuses, limit, summary=True)
        charged = await service.charged(jobs)
        counts = await service.counts() if limit is not None and len(jobs) == limit else {}
        albums = await service.albums(limit) if not as_json and statuses is None else []
        waiting = as_json and any(j.status in WAITING for j in jobs)
        queue = await service.line() if waiting else None
    if as_json:
        print_json(
            [
                j.as_record() | {"charged": charged[j.id], "eta_seconds": record_eta(j, queue)}
                for j in jobs
            ]
        )
    elif not jobs:
        print("no jobs yet: `bygheartd submit song.txt` or drop a song file into the inbox")
    else:
        print_jobs_table(_console(), jobs, charged=charged, wide=wide)
    if not as_json and statuses is None and (lines := albums_lines(list(albums))):
        print("\nalbums (`bygheartd show ALBUM` lists the tracks):")
        for line in lines:
            print(f"  {line}")
    if limit is not None and len(jobs) == limit:
        wanted = None if statuses is None else {s.value for s in statuses}
        total = sum(n for s, n in counts.items() if wanted is None or s in wanted)
        if total > limit:  # on stderr: `--json` stays one valid document
            print(f"{limit} of {total} jobs shown: --limit N or --all", file=sys.stderr)


async def show_command(config: Config, ref: str, as_json: bool, *, wide: bool = False) -> None:
    from bygheartd.service.errors import ServiceError

    async with opened_service(config) as service:
        try:
            job = await service.get(ref)
        except ServiceError as not_a_job:
            try:  # an album (its id or title)
                view = await service.album(ref)
            except ServiceError:
                raise ServiceError(f"{not_a_job} (and no album has that id or title)") from None
            if as_json:
                print_json(view.as_record(config.folders.output))
            else:
                print_album(_console(), view, config.folders.output)
            return
        history = await service.history(job)
        charged = (await service.charged([job]))[job.id]
        line = await service.line() if job.status in WAITING else None
        sent = await service.sent(job) if as_json else None
    if as_json:
        record = job.as_record()
        record["eta_seconds"] = record_eta(job, line)
        record["charged"] = charged
        record["request"] = job.request
        record["sent"] = sent  # the body its last submission POSTed (null before one)
        if (generated := job.generated()) is not None:
            record["generated"] = generated  # what the model wrote, when it differs
        record["history"] = [e.as_record() for e in history]
        if (polls := poll_trouble(job)) is not None:
            record["polls"] = polls  # polls failing since when, and why
        print_json(record)
    else:
        print_job_detail(_console(), job, history, charged=charged, wide=wide, line=line)


async def change_command(config: Config, ref: str, action: str) -> None:
    async with opened_service(config) as service:
        job: Job = await (service.cancel(ref) if action == "cancel" else service.retry(ref))
    print(f"{job.id} {job.status.value}: {job.reason or ''}".rstrip(": "))


async def keep_command(config: Config, ref: str, take: int) -> None:
    async with opened_service(config) as service:
        job = await service.keep(ref, take)
    record = job.keeper_record() or {}
    print(f"{job.id}: keeping take {record.get('take')} ({record.get('path')})")


async def credits_command(config: Config, as_json: bool) -> None:
    async with opened_service(config) as service:
        summary = await service.credits()
    if as_json:
        print_json(summary)
    else:
        print(credits_text(summary))


async def status_command(config: Config, as_json: bool) -> None:
    async with opened_service(config) as service:
        holder = service.engine_holder()
        summary = await service.credits()
        counts = await service.counts()
        servers = await service.servers()
        engines = await service.engines()
    if holder and isinstance(holder.get("since"), int | float):
        # The lock file keeps epoch seconds; every JSON output speaks ISO-8601 UTC.
        from datetime import UTC, datetime

        holder = {**holder, "since": iso(datetime.fromtimestamp(holder["since"], UTC))}
    data = {
        "engine": holder,
        "engines": engines,
        "counts": counts,
        "state_dir": str(config.state_dir),
        "store": config.store.display_url() or str(config.state_dir / "jobs.sqlite3"),
        "next_daily_release": summary["next_daily_release"],
        "servers": servers,
    }
    if as_json:
        print_json(data)
        return
    if holder:
        print(f"engine: running ({holder.get('owner')}, pid {holder.get('pid')})")
    else:
        print("engine: not running (start it with `bygheartd run`)")
    if config.store.shared:
        print(f"store: {data['store']} (shared), {counted(len(engines), 'engine')}:")
        for engine in engines:
            lease = "lease live" if engine["live"] else "lease expired"
            print(
                f"  {engine['id']} on {engine['host']} (pid {engine['pid']}, {engine['role']}), "
                f"{counted(engine['jobs_held'], 'job')} held, {lease} until {engine['lease_until']}"
            )
    listed = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no jobs"
    print(f"jobs: {listed}")
    from bygheartd.service.servers import server_line

    print("servers:" if len(data["servers"]) > 1 else "server:")
    for record in data["servers"]:
        print(server_line(record))
    if summary["next_daily_release"]:
        print(f"next daily credit release: {summary['next_daily_release']}")


def plugins_command(config: Config, as_json: bool) -> None:
    from bygheartd.runtime import describe_plugins
    from bygheartd.safetext import visible

    infos = describe_plugins(config)
    if as_json:
        print_json([i.as_record() for i in infos])
        return
    if not infos:
        print("no plugins")
    for info in infos:
        state = "error" if info.error else ("on" if info.enabled else "off")
        print(f"{info.name} [{state}] {info.source} {info.version or ''}".rstrip())
        if info.hooks:
            print(f"  hooks: {', '.join(info.hooks)}")
        if info.note:  # the plugin's own text: shown, never interpreted
            print(f"  note: {visible(info.note, one_line=True)}")
        if info.error:
            print(f"  error: {info.error}")


async def submit_files(
    config: Config,
    files: Sequence[SongSource],
    *,
    wait: bool,
    timeout: float | None,
    as_json: bool,
    dry_run: bool,
    preset: str | None,
) -> int:
    from bygheartd.cli.folder_args import folder_refusal  # reads song files: not for `list`
    from bygheartd.cli.waiting import print_queued, stopped_waiting, wait_all
    from bygheartd.runtime import EngineRole, Runtime

    if preset is not None and preset not in config.presets:
        near = config.nearest_preset(preset)
        hint = f": did you mean {near!r}?" if near else ""
        raise BygheartdError(f"no [presets.{preset}] in the config{hint}")
    if dry_run:
        async with opened_service(config) as service:
            return await _dry_run(service, files, preset, as_json)
    async with Runtime(config, role=EngineRole.SUBMIT, engine=wait) as runtime:
        # One bad file refuses that file only: the good ones are queued, every bad one is
        # reported (with all its problems), and the exit status says something was refused.
        jobs: list[Job] = []
        refused: list[dict[str, Any]] = []
        for path in files:
            if isinstance(path, Path) and (folder := folder_refusal(path, config)):
                refused.append(refuse(path, folder, as_json=as_json))
                continue
            try:
                if isinstance(path, Path) and is_album_path(path):  # a job per track
                    jobs.extend(await submit_album(runtime.service, path, preset, as_json=as_json))
                    continue
                job = await _submit_source(runtime.service, path, preset)
            except BygheartdError as exc:
                refused.append(refuse(path, exc, as_json=as_json))
                continue
            jobs.append(job)
            if not as_json:
                for warning in job.warnings:
                    print(f"warning: {path}: {warning}", file=sys.stderr)
        failed = 1 if refused else 0
        if not as_json:
            await print_queued(runtime.service, jobs)
        if not wait or not jobs:
            if as_json:
                print_json([j.as_record() for j in jobs])
            else:
                if jobs and runtime.service.engine_holder() is None and not wait:
                    print(
                        "no daemon is running: start one with `bygheartd run`, or use "
                        "`bygheartd submit --wait`",
                        file=sys.stderr,
                    )
                if refused:
                    print(_refused_line(len(refused), files), file=sys.stderr)
            return failed
        problem = runtime.service.generation_blocked()
        if problem:
            print(f"error: {problem}", file=sys.stderr)
        import asyncio  # only the commands that wait import it: `list` starts fast

        try:
            finished = await wait_all(
                runtime.service, jobs, timeout, console=None if as_json else _err_console()
            )
        except asyncio.CancelledError:  # Ctrl-C: the wait ends here, the jobs do not
            ran_engine = runtime.service.engine_running
            stopped = await stopped_waiting(runtime.service, jobs, ran_engine=ran_engine)
            print(stopped, file=sys.stderr)
            return 130
    if as_json:
        print_json([j.as_record() for j in finished])
    else:
        print_files_table(_console(), finished)
        if refused:
            print(_refused_line(len(refused), files), file=sys.stderr)
        unfinished = [j for j in finished if j.status not in FINAL_STATUSES]
        if unfinished:
            states = ", ".join(sorted({j.status.value for j in unfinished}))
            print(
                f"{counted(len(unfinished), 'job')} still {states} after the timeout; they keep "
                "going: `bygheartd follow ID` follows one, `bygheartd show ID` shows where it is",
                file=sys.stderr,
            )
    return 0 if not failed and all(j.status is JobStatus.DONE for j in finished) else 1


def source_file(source: SongSource) -> str | None:
    """The `file` of a `--json` entry: the song file, or null for `--describe` (no file)."""
    return str(source) if isinstance(source, Path) else None


def refusal(path: SongSource, exc: BygheartdError) -> dict[str, Any]:
    """A refused file for scripts: `file` and `error` (the whole message), and `problems`
    (line, key, message, hint of each)."""
    entry: dict[str, Any] = {"file": source_file(path), "error": str(exc)}
    if isinstance(exc, RequestError):
        entry["problems"] = [
            {"line": p.line, "key": p.key, "message": p.reason, "hint": p.hint}
            for p in (exc.problems or (exc,))
        ]
    return entry


def refuse(path: SongSource, exc: BygheartdError, *, as_json: bool) -> dict[str, Any]:
    """Say on stderr that `path` was refused (errors never go to stdout, which holds only
    job records): the `error:` text, or with `--json` the `refusal` as one JSON line."""
    entry = refusal(path, exc)
    if as_json:
        print(json.dumps(entry, ensure_ascii=False), file=sys.stderr)
    else:
        print(f"error: {exc}", file=sys.stderr)
    return entry


def _refused_line(refused: int, sources: Sequence[SongSource]) -> str:
    if any(isinstance(s, Described) for s in sources):
        return "nothing was queued: fix the description or the options and submit again"
    files = f"{len(sources)} file{'s' if len(sources) != 1 else ''}"
    them = "it" if refused == 1 else "them"
    return f"{refused} of {files} refused: fix {them} and submit {them} again"


async def _dry_run(
    service: SongService, files: Sequence[SongSource], preset: str | None, as_json: bool
) -> int:
    from bygheartd.cli.folder_args import folder_refusal

    config = service.config
    rows: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    ahead = 0  # the files before this one would be paid first
    for path in files:
        if isinstance(path, Path) and (folder := folder_refusal(path, config)):
            refused.append(refuse(path, folder, as_json=as_json))
            continue
        if isinstance(path, Path) and is_album_path(path):
            try:
                album = service.parse_album(path, preset=preset, display=str(path))
            except BygheartdError as exc:
                refused.append(refuse(path, exc, as_json=as_json))
                continue
            cost = album.credit_cost(config.backend)
            outlook = await service.budget_outlook(cost, ahead=ahead)
            ahead += cost
            rows.append(
                {
                    "file": str(path),
                    "title": album.title,
                    "album": album.title,
                    "tracks": len(album.tracks),
                    "model": None,
                    "credits": cost,
                    "credits_left_today": outlook.left_today,
                    "will_wait_until": iso(outlook.hold.resumes_at) if outlook.hold else None,
                    "budget": outlook.text(),
                }
            )
            continue
        try:
            request = _parse_source(service, path, preset)
        except BygheartdError as exc:  # checked like submit: every file, every problem
            refused.append(refuse(path, exc, as_json=as_json))
            continue
        if not as_json:
            for warning in request.warnings():
                print(f"warning: {path}: {warning}", file=sys.stderr)
        cost = request.credit_cost(config.backend)
        outlook = await service.budget_outlook(cost, ahead=ahead)
        ahead += cost
        rows.append(
            {
                "file": source_file(path),
                "title": request.display_title(path.stem if isinstance(path, Path) else ""),
                "model": request.model,
                "takes": request.takes,
                "credits": cost,
                "credits_left_today": outlook.left_today,
                "will_wait_until": iso(outlook.hold.resumes_at) if outlook.hold else None,
                "budget": outlook.text(),
                # What `submit` would warn about (no style, ...), as `submit --json` records it.
                "warnings": list(request.warnings()),
                "request": request.model_dump(mode="json", exclude_none=True),
            }
        )
    if as_json:
        print_json(rows)
    else:
        for row in rows:
            if "album" in row:
                print(
                    f"ok {row['file']}: album {row['title']!r}, {row['tracks']} tracks, "
                    f"{row['budget']}"
                )
                continue
            print(f"ok {row['file']}: {row['title']!r}, {row['model']}, {row['budget']}")
        total = sum(int(str(r["credits"])) for r in rows)
        print(f"total: {credits_phrase(total)} (nothing was spent)")
        if refused:
            print(_refused_line(len(refused), files), file=sys.stderr)
    return 1 if refused else 0


def config_check_command(
    path: Path | None, *, online: bool = False, timeout: float | None = None
) -> int:
    from bygheartd.cli.config_commands import check_config

    return check_config(path, online=online, timeout=timeout)


def init_command(path: Path | None, force: bool) -> int:
    from bygheartd.cli.config_commands import write_starter_config

    return write_starter_config(path, force)
