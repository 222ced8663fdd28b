"""What an album draft is and how it is written: an album file (DESIGN.md "Albums") in
YAML that reads (and edits) like one a person wrote, which the album parser reads back
exactly, saved without ever replacing a file the user did not name.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bygheartd.service.drafts import META_FIELDS, ready_for_drafts, write_exact
from bygheartd.service.errors import ServiceError
from bygheartd.songs.albums import AlbumRequest, parse_album_bytes
from bygheartd.songs.request import RequestRules, slugify

__all__ = [
    "AlbumDraft",
    "TrackDraft",
    "album_draft_name",
    "write_album_to_drafts",
    "write_named_draft",
]

# The track keys written after the title, in this order (lyrics or description last).
_TRACK_META: Final = tuple(name for name in META_FIELDS if name != "language")
# Characters YAML may carry literally (its "printable" set); others are escaped.
_YAML_UNPRINTABLE: Final = re.compile(
    "[^\t\n\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
_LINE_BREAKS: Final = frozenset("\x85\u2028\u2029")


@dataclass(frozen=True)
class TrackDraft:
    """One track: lyrics, or none (instrumental), or a description (Simple mode) when the
    model wrote neither lyrics nor style for it."""

    title: str
    lyrics: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # its own style, bpm, key, ...
    instrumental: bool = False
    description: str | None = None


@dataclass(frozen=True)
class AlbumDraft:
    """A complete album file's content: `text()` is what `parse_album_bytes` reads back."""

    title: str
    style: str
    tracks: tuple[TrackDraft, ...]
    language: str | None = None  # said once at the top when every track shares it
    instrumental: bool = False  # asked for: `instrumental: true` for every track
    source: str = ""  # the description it was drafted from
    notes: list[str] = field(default_factory=list)
    # Tracks (numbers) whose lyrics a literal block would not carry exactly: quoted.
    quoted: frozenset[int] = frozenset()

    def text(self) -> str:
        """YAML: strings double-quoted (a colon or `#` in a title stays text), lyrics as
        literal blocks so they read (and edit) as they are sung."""
        return _album_yaml(self)

    def parsed(self, backend: str) -> AlbumRequest:
        """The draft as the album parser reads it (what `submit` would queue)."""
        return parse_album_bytes(
            self.text().encode("utf-8"),
            RequestRules(backend=backend),
            name=album_draft_name(self),
            base_dir=None,
        )


def album_draft_name(draft: AlbumDraft, number: int = 1) -> str:
    """`night-drive.album.yaml`, then `night-drive-2.album.yaml`: the number goes before
    the double suffix, or the file would no longer be an album file."""
    slug = slugify(draft.title) or "album"
    return f"{slug}.album.yaml" if number == 1 else f"{slug}-{number}.album.yaml"


# -- writing the YAML ----------------------------------------------------------------------


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar of `text`, whatever it holds."""
    out = ['"']
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch in _LINE_BREAKS or _YAML_UNPRINTABLE.match(ch):
            out.append(_escape(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return _quoted(str(value))


def _block(text: str, indent: str) -> list[str] | None:
    """`text` as a literal block (`|-`), or None when a block cannot carry it exactly
    (a first line that starts with a space, characters YAML escapes)."""
    if not text or text[0] in " \t" or _YAML_UNPRINTABLE.search(text):
        return None
    if any(ch in _LINE_BREAKS for ch in text) or "\r" in text:
        return None
    return ["|-"] + [indent + line if line else "" for line in text.split("\n")]


def _one_line(text: str) -> str:
    """User text for a comment line: no line breaks or control characters."""
    return "".join(" " if unicodedata.category(ch).startswith(("C", "Z")) else ch for ch in text)


def _album_yaml(draft: AlbumDraft) -> str:
    lines = [
        "# An album drafted by the model (`bygheartd inspire --album`)"
        + (f" from: {_one_line(draft.source)[:200]}" if draft.source.strip() else ""),
        "# Edit it (add `artist:` for the tags, any song-file key as a default for every",
        "# track), then queue it: `bygheartd submit FILE`, or drop it into the inbox.",
        f"album: {_quoted(draft.title)}",
    ]
    if draft.style:
        lines.append(f"style: {_quoted(draft.style)}")
    if draft.language:
        lines.append(f"language: {_quoted(draft.language)}")
    if draft.instrumental:
        lines.append("instrumental: true")
    lines.append("tracks:")
    for number, track in enumerate(draft.tracks, start=1):
        lines.append(f"  - title: {_quoted(track.title)}")
        for name in _TRACK_META:
            if (value := track.meta.get(name)) is not None:
                lines.append(f"    {name}: {_scalar(value)}")
        if track.meta.get("language") is not None:
            lines.append(f"    language: {_scalar(track.meta['language'])}")
        if track.instrumental and not draft.instrumental:
            lines.append("    instrumental: true")
        if track.description is not None:
            lines.append(f"    description: {_quoted(track.description)}")
        elif track.lyrics and not track.instrumental:
            block = None if number in draft.quoted else _block(track.lyrics, " " * 6)
            if block is None:
                lines.append(f"    lyrics: {_quoted(track.lyrics)}")
            else:
                lines.append(f"    lyrics: {block[0]}")
                lines += block[1:]
    return "\n".join(lines) + "\n"


def write_album_to_drafts(draft: AlbumDraft, directory: Path) -> Path:
    """Write the draft to a fresh file in `directory`, named after the album; an existing
    file is never replaced, even by a writer racing this one."""
    ready_for_drafts(directory)
    text = draft.text()
    for number in itertools.count(1):
        path = directory / album_draft_name(draft, number)
        try:
            with path.open("x", encoding="utf-8") as handle:
                handle.write(text)
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")  # pragma: no cover


def write_named_draft(text: str, path: Path, *, overwrite: bool) -> Path:
    """Write `text` to `path` (an `-o FILE` the user named); an existing file only with
    `overwrite`, and then whole or not at all (a temporary file renamed over it)."""
    if not overwrite:
        try:
            return write_exact(text, path)
        except ServiceError:
            if path.exists():
                raise ServiceError(
                    f"{path} exists already: name another file, or add --force to replace it"
                ) from None
            raise
    if path.is_dir():
        raise ServiceError(f"{path} is a folder: name a file (in it, or elsewhere)")
    if not path.parent.is_dir():
        raise ServiceError(f"{path.parent} does not exist: create it, or name another file")
    temporary = path.with_name(f".{path.name}.part")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
    return path
