"""`bygheartd submit DIR/`: a folder given where song files go (audit F14).

A folder has no extension, so the song-file reader said "is not a song file (no
extension)", which told a newcomer neither what was wrong nor what to type. This says it is
a folder and gives the two ways on: the song files in it, as a shell pattern built from the
extensions the folder really holds, or the inbox that `bygheartd run` watches.
"""

from __future__ import annotations

import os
import shlex
from collections import Counter
from itertools import islice
from pathlib import Path

from bygheartd.config import Config
from bygheartd.errors import SongFileError
from bygheartd.songs.songfile import SUPPORTED_SUFFIXES

# A folder of thousands of files: its first entries tell which extension to suggest.
_LOOKED_AT = 500


def _song_suffix(folder: Path) -> str:
    """The song-file extension most files directly in `folder` have (`.md` when none do)."""
    counts: Counter[str] = Counter()
    try:
        for entry in islice(folder.iterdir(), _LOOKED_AT):
            suffix = entry.suffix.lower()
            if suffix in SUPPORTED_SUFFIXES and entry.is_file():
                counts[suffix] += 1
    except OSError:
        pass  # unreadable: the suggestion still holds
    return counts.most_common(1)[0][0] if counts else ".md"


def folder_refusal(path: Path, config: Config) -> SongFileError | None:
    """Why a folder given to `submit` is refused, with what to type instead; None for
    anything that is not a folder (the song-file reader has its own words for those)."""
    if not os.path.isdir(path):  # never raises: an unreadable path is the reader's to say
        return None
    pattern = shlex.quote(str(path)) + "/*" + _song_suffix(path)
    return SongFileError(
        "is a folder, not a song file",
        source=str(path),
        hint=(
            f"give the song files in it (`bygheartd submit {pattern}`), or drop them into the "
            f"inbox ({config.folders.inbox}), where `bygheartd run` queues them"
        ),
    )
