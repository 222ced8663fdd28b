"""Which inbox paths are song files, which are someone else's temporaries, which are neither.

The built-in rules (DESIGN.md, "Drop folder") cover editors, browsers and sync tools that
write partial files or metadata next to real ones; `[watch] ignore` adds patterns.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Final

from bygheartd import catalog
from bygheartd.songs.songfile import SUPPORTED_SUFFIXES

# Matched case-insensitively against every component of the path relative to the inbox,
# so that a file inside `@eaDir/` or `.stversions/` is ignored like the folder itself.
BUILTIN_IGNORE: Final = (
    ".*",  # dotfiles and dot-folders: .~lock*, ._*, .stfolder, .stversions, our lock file
    "*~",  # editor backups
    "*.tmp",
    "*.part",  # browsers, rsync --partial, our own downloads
    "*.swp",  # vim
    "*.crdownload",  # Chrome
    ".~lock*",  # LibreOffice
    "._*",  # macOS resource forks on foreign file systems
    ".stfolder",
    ".stversions",  # Syncthing
    "@eaDir",  # Synology thumbnails
    "__MACOSX",  # zip files made on macOS
    "thumbs.db",
    "desktop.ini",  # Windows Explorer
    "*.sync-conflict-*",  # Syncthing conflict copies: the user must pick one first
    "*.error.txt",  # our own notes, dragged back with a fixed file: never lyrics
)

# Audio beside a song file is its `source_audio` (cover, repaint): left in the inbox,
# never consumed and never rejected, so the song file that names it can still find it.
AUDIO_SUFFIXES: Final = (*catalog.AUDIO_SUFFIXES, ".aif", ".aiff")


# `NAME.album/` beside `NAME.album.yaml` holds the album's song files (DESIGN.md "Albums").
ALBUM_FOLDER_SUFFIX: Final = ".album"


class PathKind(enum.Enum):
    SONG = "song"  # a supported extension: becomes a job or a rejection
    IGNORED = "ignored"  # an ignore rule matched: never touched
    AUDIO = "audio"  # source audio for a song file: left alone
    OTHER = "other"  # anything else: rejected to failed/ with the supported formats


class IgnoreRules:
    """Classify paths relative to the inbox; `extra` patterns extend the built-in ones.

    An extra pattern containing `/` is matched against the whole relative path
    (`drafts/*`), otherwise against each component (`*.bak`).
    """

    def __init__(self, extra: Iterable[str] = ()) -> None:
        extra = [p.strip() for p in extra if p.strip()]
        self.component_patterns = tuple(
            p.lower() for p in (*BUILTIN_IGNORE, *extra) if "/" not in p
        )
        self.path_patterns = tuple(p.lower().strip("/") for p in extra if "/" in p)

    def is_ignored(self, relative: PurePosixPath) -> bool:
        parts = [p.lower() for p in relative.parts]
        if any(p.endswith(ALBUM_FOLDER_SUFFIX) for p in parts[:-1]):
            return True  # a song file of an album: the album takes it, never alone
        for part in parts:
            if any(fnmatch.fnmatchcase(part, pat) for pat in self.component_patterns):
                return True
        whole = "/".join(parts)
        return any(fnmatch.fnmatchcase(whole, pat) for pat in self.path_patterns)

    def classify(self, relative: PurePosixPath) -> PathKind:
        if not relative.parts or self.is_ignored(relative):
            return PathKind.IGNORED
        suffix = relative.suffix.lower()
        if suffix in SUPPORTED_SUFFIXES:
            return PathKind.SONG
        if suffix in AUDIO_SUFFIXES:
            return PathKind.AUDIO
        return PathKind.OTHER

    def skips_folder(self, relative: PurePosixPath) -> bool:
        """A folder the scan need not enter (everything inside it is ignored)."""
        return relative.name.lower().endswith(ALBUM_FOLDER_SUFFIX) or self.is_ignored(relative)
