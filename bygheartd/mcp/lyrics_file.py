"""Which song files an assistant may name as `lyrics_file`: the drafts, archive and output
folders, never the inbox (the watcher owns it), with links resolved before the check.
"""

from __future__ import annotations

import os
from pathlib import Path

from bygheartd.config import Config
from bygheartd.mcp.errors import LyricsFileRefused


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_song_file(config: Config, raw: str) -> tuple[Path, str]:
    """The real path of a `lyrics_file` and its display name (`drafts/song.md`).

    Only the drafts, archive and output folders may be read; the inbox never (the watcher
    owns it). Relative names are taken from the drafts folder. Symlinks are resolved first,
    so a link cannot lead outside.
    """
    folders = config.folders
    try:
        candidate = Path(raw.strip()).expanduser()
        if not candidate.is_absolute():
            candidate = folders.drafts.expanduser() / candidate
        real = Path(os.path.realpath(candidate))
    except (ValueError, RuntimeError) as exc:  # a NUL byte; `~user` of an unknown user
        raise LyricsFileRefused(
            f"lyrics_file {raw!r} is not a usable path ({exc}): give a file name in the "
            f"drafts folder {folders.drafts}"
        ) from None
    if _inside(real, Path(os.path.realpath(folders.inbox.expanduser()))):
        raise LyricsFileRefused(
            f"lyrics_file {raw!r} is in the inbox, which the drop-folder watcher owns: save "
            f"the song in the drafts folder {folders.drafts} and pass that path instead"
        )
    roots = {"drafts": folders.drafts, "archive": folders.archive, "output": folders.output}
    for name, root in roots.items():
        real_root = Path(os.path.realpath(root.expanduser()))
        if _inside(real, real_root):
            if not real.is_file():
                raise LyricsFileRefused(f"lyrics_file {raw!r} does not exist (looked for {real})")
            return real, f"{name}/{real.relative_to(real_root).as_posix()}"
    raise LyricsFileRefused(
        f"lyrics_file {raw!r} is outside the folders MCP may read: save it in the drafts "
        f"folder {folders.drafts} (the archive and output folders are allowed too)"
    )
