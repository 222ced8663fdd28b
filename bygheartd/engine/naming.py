"""Output naming (DESIGN.md "Naming"): a free base per job, takes as base.takeN.ext.

A base is free when no `base.json`, no `base.*` (takes `base.takeN.*` included) and, from
earlier versions that named takes `base-N.*`, no such file exists, and no other active job
has reserved it; the engine decides under one lock, so two jobs never share.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from bygheartd.jobs import take_stems
from bygheartd.songs.request import slugify


def _taken(output: Path, base: str) -> bool:
    if (output / f"{base}.json").exists():
        return True
    pattern = re.compile(rf"^{re.escape(base)}(-\d+)?(\.[^.]+)+$")
    try:
        names = [p.name for p in output.iterdir()]
    except FileNotFoundError:
        return False
    return any(pattern.match(name) for name in names)


def choose_base(
    output: Path,
    title: str,
    job_id: str,
    reserved: Iterable[str],
    takes: int = 1,
    *,
    source: str | None = None,
) -> str:
    """The first free base for a job of `takes` takes.

    `reserved` holds the take stems of deliveries not finished yet (their files may not
    exist yet), as `Store.reserved_take_stems` lists them.
    """
    # The title, else the song file's name (a title of only symbols), else the job id.
    stem = Path(source).stem if source else ""
    slug = slugify(title) or slugify(stem) or f"song-{job_id[:8]}"
    reserved = set(reserved)
    n = 1
    while True:
        base = slug if n == 1 else f"{slug}-{n}"
        if reserved.isdisjoint(take_stems(base, takes)) and not _taken(output, base):
            return base
        n += 1


def take_stem(output: Path, base: str, index: int) -> Path:
    """`base` for the first take, `base.take2`, `base.take3`, ... for the others."""
    return output / take_stems(base, index + 1)[index]
