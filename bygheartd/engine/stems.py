"""Where stems land: `output/<group>-stems/<group>.<track>.<ext>` (DESIGN.md "Edit tasks").

A stems request is one extract job per track (the server makes one stem per task), each
carrying the same `stem_group` (the song's slug) and its `track_name`; delivery puts them
together in one folder, named by track, instead of choosing a base from each job's title.
Nothing else about the jobs differs: each is queued, routed, retried and delivered alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bygheartd.jobs import take_stems

__all__ = ["stem_base", "stems_folder"]


def stems_folder(output: Path, request: Mapping[str, Any]) -> Path | None:
    """The stems folder of a stem job (None for any other job)."""
    group = request.get("stem_group")
    if not isinstance(group, str) or not group or "/" in group or group.startswith("."):
        return None
    return output / f"{group}-stems"


def _taken(folder: Path, base: str) -> bool:
    try:
        names = [p.name for p in folder.iterdir()]
    except FileNotFoundError:
        return False
    return any(name.startswith(f"{base}.") for name in names)


def stem_base(folder: Path, request: Mapping[str, Any], reserved: Iterable[str], takes: int) -> str:
    """`<group>.<track>`, else `<group>.<track>-2`, ... when that stem is there already
    (the same song split again) or reserved by a delivery not finished yet."""
    group = str(request.get("stem_group"))
    track = str(request.get("track_name") or "stem")
    held = set(reserved)
    n = 1
    while True:
        base = f"{group}.{track}" if n == 1 else f"{group}.{track}-{n}"
        if held.isdisjoint(take_stems(base, takes)) and not _taken(folder, base):
            return base
        n += 1
