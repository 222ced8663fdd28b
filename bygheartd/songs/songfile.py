"""Song files: bytes on disk -> `SongRequest`, or a `SongFileError` that names the file, the
line, the key and the fix. Text files carry optional YAML (`---`) or TOML (`+++`) front
matter and then the lyrics; `.yaml/.yml/.toml/.json` files are the front matter alone.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Final

import yaml

from bygheartd.errors import RequestError, SongFileError
from bygheartd.songs import fields
from bygheartd.songs.audiolength import audio_seconds
from bygheartd.songs.edits import expand_edit_keys
from bygheartd.songs.request import DEFAULT_RULES, RequestRules, SongRequest

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SUPPORTED_SUFFIXES",
    "parse_song_bytes",
    "parse_song_file",
    "parse_song_text",
    "read_song_keys",
]

SUPPORTED_SUFFIXES: Final = (".txt", ".md", ".lyrics", ".yaml", ".yml", ".toml", ".json")
DEFAULT_MAX_BYTES: Final = 256 * 1024
_STRUCTURED: Final = {".yaml": "YAML", ".yml": "YAML", ".toml": "TOML", ".json": "JSON"}
_FENCES: Final = {"---": "YAML", "+++": "TOML"}
# Installed packages carry no docs/ folder: point at the command that prints the format.
_SEE_DOCS: Final = "`bygheartd guide` shows the format"


@dataclass
class _Parsed:
    """The keys of a song file as written, and the line each one is on."""

    data: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, key: str | None) -> int | None:
        return self.lines.get(key) if key is not None else None

    def key_for(self, canonical: str) -> str | None:
        """The key as written in the file for a canonical field name."""
        names = (k for k in self.data if fields.CANONICAL.get(fields.key_name(k)) == canonical)
        return next(names, None)


def parse_song_file(
    path: Path,
    rules: RequestRules = DEFAULT_RULES,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    display_name: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SongRequest:
    """Read and validate one song file. The size is checked before a byte is read.

    `display_name` (e.g. `inbox/song.txt`) is what errors call the file; `source_audio`
    must exist beside it. `overrides` (keys given beside the file, as MCP does) win over
    the file's own keys, and the merged request is validated once.
    """
    name = display_name or str(path)
    if os.path.isdir(path):  # before the extension: a folder has none, and is no song
        raise SongFileError(
            "is a folder, not a song file", source=name, hint="give the song files in it"
        )
    suffix = path.suffix.lower()
    _check_suffix(suffix, name)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise SongFileError("is not a regular file", source=name)
        if info.st_size > max_bytes:
            raise _too_big(name, info.st_size, max_bytes)
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)  # it may have grown since the stat
    except FileNotFoundError:
        raise SongFileError("does not exist", source=name) from None
    except PermissionError:
        raise SongFileError(
            "cannot be read (permission denied)", source=name, hint="check its permissions"
        ) from None
    except OSError as exc:
        raise SongFileError(f"cannot be read: {exc.strerror or exc}", source=name) from None
    if len(data) > max_bytes:
        raise _too_big(name, len(data), max_bytes)
    return parse_song_bytes(
        data,
        rules,
        name=name,
        suffix=suffix,
        base_dir=path.parent,
        overrides=overrides,
    )


def parse_song_bytes(
    data: bytes,
    rules: RequestRules = DEFAULT_RULES,
    *,
    name: str,
    suffix: str | None = None,
    base_dir: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SongRequest:
    """Decode UTF-8 (with or without BOM) and parse; binary and other encodings are errors."""
    return parse_song_text(
        _decoded(data, name),
        rules,
        name=name,
        suffix=suffix,
        base_dir=base_dir,
        overrides=overrides,
    )


def read_song_keys(
    data: bytes, *, name: str, suffix: str | None = None
) -> tuple[dict[str, Any], dict[str, int]]:
    """A song file's keys as written (the lyrics under `lyrics`) and the line of each,
    not yet validated: for an album (songs/albums.py), which puts its own defaults under
    them before the request is built."""
    parsed = _keys_of_text(_decoded(data, name), name, suffix)
    return parsed.data, parsed.lines


def _decoded(data: bytes, name: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SongFileError("is UTF-16 text", source=name, hint="save it as UTF-8")
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise SongFileError(
            "looks like a binary file (it contains NUL bytes)",
            source=name,
            line=line,
            hint="song files are UTF-8 text; " + _SEE_DOCS,
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SongFileError(
            f"is not valid UTF-8 (byte 0x{data[exc.start]:02x})",
            source=name,
            line=line,
            hint="save it as UTF-8",
        ) from None
    return text


def parse_song_text(
    text: str,
    rules: RequestRules = DEFAULT_RULES,
    *,
    name: str,
    suffix: str | None = None,
    base_dir: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SongRequest:
    """Parse a song file's text. The format follows `suffix`, else `name`'s extension, else
    a text file (front matter optional)."""
    parsed = _keys_of_text(text, name, suffix)
    data = _merged(parsed.data, overrides) if overrides else parsed.data
    try:
        # extend, stems, add_layer, accompany: plain request keys (songs/edits.py).
        data = expand_edit_keys(data, _measure(base_dir, name), rules.backend)
        request = SongRequest.build(data, rules, source=name)
    except RequestError as exc:
        raise _located(exc, parsed, name) from None
    for field_name in ("source_audio", "reference_audio"):
        audio = getattr(request, field_name)
        if base_dir is not None and audio is not None and not (base_dir / audio).is_file():
            key = parsed.key_for(field_name)
            raise SongFileError(
                f"{field_name} {audio!r} does not exist next to the song file",
                source=name,
                key=key,
                line=parsed.line_of(key),
                hint="put the audio file in the same folder, or fix the name",
            )
    return request


def _keys_of_text(text: str, name: str, suffix: str | None) -> _Parsed:
    """The keys of a song file's text as written, with their lines."""
    if suffix is None:
        suffix = PurePath(name).suffix.lower()
        suffix = suffix if suffix in SUPPORTED_SUFFIXES else ".txt"
    suffix = suffix.lower()
    _check_suffix(suffix, name)
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise SongFileError("contains a NUL character", source=name, line=line, hint="remove it")
    if not text.strip():
        raise SongFileError(
            "is empty", source=name, hint="write lyrics, or front matter and lyrics; " + _SEE_DOCS
        )
    fmt = _STRUCTURED.get(suffix)
    return _load(fmt, text, name, 0) if fmt else _split_text_file(text, name)


def _measure(base_dir: Path | None, name: str) -> Callable[[str], float] | None:
    """Reads the length of an audio file beside the song file (None: no folder to look in)."""
    if base_dir is None:
        return None

    def seconds(audio: str) -> float:
        path = base_dir / audio
        if not path.is_file():
            raise RequestError(
                f"source_audio {audio!r} does not exist next to the song file",
                key="source_audio",
                hint="put the audio file in the same folder, or fix the name",
            )
        return audio_seconds(path)

    return seconds


def _located(exc: RequestError, parsed: _Parsed, name: str) -> SongFileError:
    """The request's problem(s) with the file's line numbers added; several problems stay
    one error, in the order of the file's lines (problems without a line last)."""
    if not exc.problems:
        return SongFileError(
            exc.reason, source=name, key=exc.key, line=parsed.line_of(exc.key), hint=exc.hint
        )
    located = [_located(problem, parsed, name) for problem in exc.problems]
    located.sort(key=lambda p: (p.line is None, p.line or 0))
    return SongFileError.collect(located, source=name)


def _merged(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The file's keys with `overrides` on top; a key given in any spelling (`prompt` for
    `style`) replaces the file's key of the same meaning instead of clashing with it."""
    given = {fields.CANONICAL.get(k, k) for k in overrides}
    kept = {k: v for k, v in data.items() if fields.CANONICAL.get(k, k) not in given}
    return {**kept, **overrides}


def _check_suffix(suffix: str, name: str) -> None:
    if suffix not in SUPPORTED_SUFFIXES:
        what = f"extension {suffix!r}" if suffix else "no extension"
        raise SongFileError(
            f"is not a song file ({what})",
            source=name,
            hint=f"song files end in {', '.join(SUPPORTED_SUFFIXES)}",
        )


def _too_big(name: str, size: int, max_bytes: int) -> SongFileError:
    return SongFileError(
        f"is {size} bytes, over the limit of {max_bytes} bytes",
        source=name,
        hint="song files are small text files; raise [watch] max_file_kib if this one is right",
    )


def _split_text_file(text: str, name: str) -> _Parsed:
    """Front matter (if the first non-blank line is a fence) and the lyrics body."""
    lines = text.split("\n")
    first = next(i for i, line in enumerate(lines) if line.strip())
    fence = lines[first].strip()
    if fence not in _FENCES:
        return _Parsed({"lyrics": text}, {"lyrics": first + 1})
    close = next((i for i in range(first + 1, len(lines)) if lines[i].strip() == fence), None)
    if close is None:
        raise SongFileError(
            f"the front matter opened with {fence!r} has no closing {fence!r} line",
            source=name,
            line=first + 1,
            hint=f"add a line {fence} after the last key, before the lyrics",
        )
    parsed = _load(_FENCES[fence], "\n".join(lines[first + 1 : close]), name, first + 1)
    body = lines[close + 1 :]
    if any(line.strip() for line in body):
        lyrics_keys = [k for k in parsed.data if fields.key_name(k) == "lyrics"]
        if lyrics_keys:
            raise SongFileError(
                "lyrics are given twice: in the front matter and after it",
                source=name,
                key=lyrics_keys[0],
                line=parsed.lines.get(lyrics_keys[0]),
                hint="keep one of them",
            )
        parsed.data["lyrics"] = "\n".join(body)
        parsed.lines["lyrics"] = close + 2 + next(i for i, line in enumerate(body) if line.strip())
    return parsed


def _load(fmt: str, text: str, name: str, offset: int) -> _Parsed:
    """Parse front matter `text` whose first line is line `offset + 1` of the file."""
    loader = {"YAML": _load_yaml, "TOML": _load_toml, "JSON": _load_json}[fmt]
    try:
        return loader(text, name, offset)
    except RecursionError:
        raise SongFileError(
            f"the {fmt} is nested too deeply", source=name, hint="song keys are simple values"
        ) from None


def _label(offset: int) -> str:
    """Front matter starts after its fence (offset >= 1); a .yaml/.toml/.json file at 0."""
    return "the front matter" if offset else "the file"


def _not_a_table(label: str, what: str, name: str, line: int | None) -> SongFileError:
    return SongFileError(
        f"{label} must be a table of `key: value` lines, not {what}",
        source=name,
        line=line,
        hint="write one key per line, e.g. `title: My Song`; " + _SEE_DOCS,
    )


# PyYAML's contexts of a construct left open: its context_mark is where it was opened.
_OPENED: Final = ("while parsing a flow", "while scanning a quoted scalar")


def _load_yaml(text: str, name: str, offset: int) -> _Parsed:
    """YAML read node by node so that scalars keep their spelling: `language: no` stays
    "no" (Norwegian, not false), `key: F# minor` and `duration: 3:30` stay text."""
    parsed = _Parsed()
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # the reader checks characters here already
        node = loader.get_single_node()
        if node is None:
            return parsed
        if not isinstance(node, yaml.MappingNode):
            what = "a list" if isinstance(node, yaml.SequenceNode) else "plain text"
            raise _not_a_table(_label(offset), what, name, node.start_mark.line + 1 + offset)
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1 + offset
            if not isinstance(key_node, yaml.ScalarNode):
                raise SongFileError("a key must be a plain name", source=name, line=line)
            key = key_node.value
            if key in parsed.lines:
                raise SongFileError(
                    f"duplicate key {key!r} (also on line {parsed.lines[key]})",
                    source=name,
                    key=key,
                    line=line,
                    hint="keep one of them",
                )
            parsed.lines[key] = line
            parsed.data[key] = _yaml_value(loader, value_node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark is not None and (exc.context or "").startswith(_OPENED):
            # An unclosed `[`, `{` or quote is noticed where the next line (or the end)
            # begins; the line to fix is the one that opened it.
            mark = exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise SongFileError(
            f"{_label(offset)} is not valid YAML: {problem}",
            source=name,
            line=mark.line + 1 + offset if mark else None,
            hint="put values that contain ': ', ' #' or start with [ { * & ! | > ' \" % @ in"
            ' quotes, e.g. title: "Me: Myself"',
        ) from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1 + offset
        raise SongFileError(
            f"{_label(offset)} contains a control character (U+{exc.character:04X})"
            " that YAML does not allow",
            source=name,
            line=line,
            hint="remove it, or write the value in double quotes with an escape",
        ) from None
    except yaml.YAMLError as exc:
        raise SongFileError(
            f"{_label(offset)} is not valid YAML: {exc}".split("\n")[0], source=name
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    return parsed


_PLAIN_TAGS: Final = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "timestamp")
)


def _yaml_value(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode) and node.tag in _PLAIN_TAGS:
        if node.style is None and node.tag == "tag:yaml.org,2002:null":
            return None
        return node.value  # as written; the field decides what it means
    if isinstance(node, yaml.SequenceNode) and all(
        isinstance(item, yaml.ScalarNode) for item in node.value
    ):
        return [_yaml_value(loader, item) for item in node.value]
    return loader.construct_object(node, deep=True)


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column \d+\)$|\s*\(at end of document\)$")
_TOML_KEY = re.compile(r"""^\s*(?:"([^"]+)"|'([^']+)'|([A-Za-z0-9_-]+))\s*=""")


def _load_toml(text: str, name: str, offset: int) -> _Parsed:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = _TOML_POSITION.search(message)
        line = int(m.group(1)) + offset if m and m.group(1) else None
        problem = _TOML_POSITION.sub("", message) or "invalid TOML"
        raise SongFileError(
            f"{_label(offset)} is not valid TOML: {problem}",
            source=name,
            line=line,
            hint='write key = value, with text in quotes: title = "My Song"',
        ) from None
    lines: dict[str, int] = {}
    for number, row in enumerate(text.split("\n"), start=1):
        if row.lstrip().startswith("["):
            break  # a [table]: its keys are not song keys
        if m := _TOML_KEY.match(row):
            lines.setdefault(next(g for g in m.groups() if g), number + offset)
    return _Parsed(dict(data), lines)


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _load_json(text: str, name: str, offset: int) -> _Parsed:
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise SongFileError(
            f"the file is not valid JSON: {exc.msg} (column {exc.colno})",
            source=name,
            line=exc.lineno + offset,
            hint='check the commas and quotes near there: {"title": "My Song", "lyrics": "..."}',
        ) from None
    except _DuplicateKey as exc:
        raise SongFileError(
            f"duplicate key {exc.key!r}", source=name, key=exc.key, hint="keep one of them"
        ) from None
    if not isinstance(data, dict):
        what = "a list" if isinstance(data, list) else "a single value"
        raise _not_a_table(_label(offset), what, name, None)
    lines: dict[str, int] = {}
    for key in data:
        pattern = re.escape(json.dumps(key, ensure_ascii=False)) + r"\s*:"
        if m := re.search(pattern, text):
            lines[key] = text[: m.start()].count("\n") + 1 + offset
    return _Parsed(data, lines)
