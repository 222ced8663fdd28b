"""`bygheartd follow`: job history as it happens, one line per event (like `journalctl -f`).

It only reads the store, so it works beside any engine (the daemon, a `submit --wait`, an
MCP server) or none. It polls `PRAGMA data_version`, which changes only when another
process commits, and reads the events table only then: a follower costs next to nothing.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

from rich.cells import cell_len, set_cell_size

from bygheartd.config import Config
from bygheartd.jobs import FINAL_STATUSES, JobStatus
from bygheartd.safetext import visible

if TYPE_CHECKING:
    from bygheartd.service.service import JobEvent, SongService

# Without job arguments the feed starts with this many recent events, like `journalctl -f`.
RECENT = 10
POLL_SECONDS = 0.2
TITLE_WIDTH = 24
PREFIX = 8  # id characters shown, more when another job shares them


async def follow_command(
    config: Config, refs: list[str], *, as_json: bool, poll_seconds: float = POLL_SECONDS
) -> int:
    """Print events until every named job is final (0: all done, 1: any failed or
    cancelled), or, with no jobs named, until Ctrl-C (130, quietly)."""
    from bygheartd.cli.commands import opened_service

    async with opened_service(config) as service:
        try:
            return await _follow(service, refs, as_json=as_json, poll_seconds=poll_seconds)
        except BrokenPipeError:  # `bygheartd follow | head`: the reader has seen enough
            # Point stdout at /dev/null so that the interpreter's final flush stays quiet.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0


async def _follow(
    service: SongService, refs: list[str], *, as_json: bool, poll_seconds: float
) -> int:
    import asyncio

    from bygheartd.cli.albums import job_ids_of

    # A job, or an album: its track jobs, followed until every one has ended.
    job_ids = [job_id for ref in refs for job_id in await job_ids_of(service, ref)] or None
    seq = 0 if job_ids else await service.event_seq(RECENT)
    width = _line_width()
    prefixes = Prefixes(service)
    seen_version: int | None = None
    while True:
        version = await service.data_version()
        if version != seen_version:
            seen_version = version
            # Statuses before events: a job's last transition commits with its event,
            # so a final status read here guarantees its last line is read below.
            finished = await _statuses(service, job_ids) if job_ids else None
            seq = await _print_new(
                service, seq, job_ids, as_json=as_json, width=width, prefixes=prefixes
            )
            if finished is not None and all(s in FINAL_STATUSES for s in finished):
                return 0 if all(s is JobStatus.DONE for s in finished) else 1
        await asyncio.sleep(poll_seconds)


async def _statuses(service: SongService, job_ids: list[str]) -> list[JobStatus]:
    return [(await service.get(job_id)).status for job_id in job_ids]


class Prefixes:
    """The shortest id prefix (8 characters or more) that `show` resolves to that job
    alone: jobs made in the same instant share their first 8 to 9 characters."""

    def __init__(self, service: SongService) -> None:
        self.service = service
        self.known: dict[str, str] = {}

    async def of(self, job_id: str) -> str:
        if job_id not in self.known:
            self.known[job_id] = await self._shortest(job_id)
        return self.known[job_id]

    async def _shortest(self, job_id: str) -> str:
        from bygheartd.errors import BygheartdError

        for length in range(PREFIX, len(job_id)):
            try:
                if (await self.service.get(job_id[:length])).id == job_id:
                    return job_id[:length]
            except BygheartdError:
                continue  # several jobs share it: one character more
        return job_id


async def _print_new(
    service: SongService,
    seq: int,
    job_ids: list[str] | None,
    *,
    as_json: bool,
    width: int | None,
    prefixes: Prefixes,
) -> int:
    """Print everything after `seq` (in batches); the new position."""
    while True:
        batch = await service.events_after(seq, job_ids)
        if not batch:
            return seq
        for item in batch:
            if as_json:
                text = json.dumps(item.as_record(), ensure_ascii=False)
            else:
                prefix = await prefixes.of(item.job_id)
                text = event_line(item, width, prefix=prefix)
            sys.stdout.write(text + "\n")
            seq = item.seq
        sys.stdout.flush()


def event_line(item: JobEvent, width: int | None = None, *, prefix: str | None = None) -> str:
    """`14:02:11 0hk3a4bx Midnight God Mode        held (rate) queued → held: 429 ...`:
    local time (a live view, like journalctl), the id prefix `show` accepts, the title cut
    to a column, then what happened; cut to `width` with an ellipsis on a terminal."""
    e = item.event
    # Titles and reasons come from song files and servers: shown, never interpreted.
    title = fit_cells(visible(item.title, one_line=True), TITLE_WIDTH)
    title += " " * (TITLE_WIDTH - cell_len(title))
    shown_id = prefix or item.job_id[:PREFIX]
    text = f"{e.at.astimezone().strftime('%H:%M:%S')} {shown_id} {title} "
    text += visible(e.event, one_line=True)
    if e.to_status:
        text += f" {e.from_status} → {e.to_status}" if e.from_status else f" → {e.to_status}"
    if e.reason:
        text += f": {visible(e.reason, one_line=True)}"
    return text if width is None else fit_cells(text, width)


def fit_cells(text: str, width: int) -> str:
    """`text` cut to `width` terminal cells, ending in "…" when cut: a CJK character takes
    two cells, so counting characters would overflow the line."""
    if cell_len(text) <= width:
        return text
    return set_cell_size(text, width - 1).rstrip() + "…"


def _line_width() -> int | None:
    """The terminal's width, or None when the output goes to a file or a pipe (then lines
    stay whole, for grep); $COLUMNS counts as a terminal, as for every other command."""
    if "COLUMNS" not in os.environ and not sys.stdout.isatty():
        return None
    import shutil

    return shutil.get_terminal_size().columns
