"""Album files (DESIGN.md "Albums"): `NAME.album.yaml` / `.album.toml` -> `AlbumRequest`, a
song request per track, or one `SongFileError` listing every problem of every track.

The album's `style` is put before each track's own; every other song-file key at the top is
a default for every track (a track's own key, or its song file's, wins). A track is given
inline (lyrics, or a description for Simple mode) or as `file:`, a song file relative to the
album file (or inside the `NAME.album/` folder beside it). The album is validated whole:
a user fixes it in one round, and a bad album is refused before anything is spent.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Final

import yaml

from bygheartd.errors import RequestError, SongFileError
from bygheartd.songs import fields
from bygheartd.songs.request import DEFAULT_RULES, RequestRules, SongRequest, slugify
from bygheartd.songs.songfile import SUPPORTED_SUFFIXES, read_song_keys

__all__ = [
    "ALBUM_SUFFIXES",
    "MAX_TRACKS",
    "AlbumRequest",
    "AlbumTrack",
    "album_folder_of",
    "is_album_file",
    "parse_album_bytes",
    "parse_album_file",
]

ALBUM_SUFFIXES: Final = (".album.yaml", ".album.yml", ".album.toml", ".album.json")
MAX_TRACKS: Final = 50
DEFAULT_MAX_BYTES: Final = 256 * 1024
# The album's own keys; every other top-level key is a song-file key (a default per track).
_ALBUM_KEYS: Final = ("album", "artist", "tracks")
# Song-file keys that make no sense for every track at once.
_PER_TRACK: Final = {
    "title": "the album's title is `album:`; give each track its `title:`",
    "lyrics": "give each track its own `lyrics:` (or `description:`)",
    "description": "give each track its own `description:` (or `lyrics:`)",
}
_HOW: Final = "`bygheartd guide` and the README's Albums section show the format"


def is_album_file(name: str | PurePath) -> bool:
    """`night-drive.album.yaml`: an album, not a song (any case)."""
    return str(PurePath(name).name).lower().endswith(ALBUM_SUFFIXES)


def album_folder_of(path: Path) -> Path:
    """`NAME.album/` beside `NAME.album.yaml`: where its song files may wait in the inbox."""
    lower = path.name.lower()
    suffix = next(s for s in ALBUM_SUFFIXES if lower.endswith(s))
    return path.with_name(path.name[: -len(suffix)] + ".album")


@dataclass(frozen=True)
class AlbumTrack:
    """One track: its number (from 1), its validated request, and where it came from."""

    number: int
    request: SongRequest
    # The title when the request has none: the song file's stem, else "Track N".
    fallback_title: str
    # The song file of a `file:` track (absolute), archived with the album.
    file: Path | None = None

    @property
    def title(self) -> str:
        return self.request.display_title(self.fallback_title)


@dataclass(frozen=True)
class AlbumRequest:
    title: str
    artist: str | None
    tracks: tuple[AlbumTrack, ...]
    style: str = ""

    @property
    def slug(self) -> str:
        return slugify(self.title) or "album"

    @property
    def files(self) -> tuple[Path, ...]:
        """The song files its tracks were read from."""
        return tuple(t.file for t in self.tracks if t.file is not None)

    def credit_cost(self, backend: str) -> int:
        """What the whole album costs (every take of every track)."""
        return sum(t.request.credit_cost(backend) for t in self.tracks)


@dataclass
class _Keys:
    """Keys as written and the line of each (in the album file, or in a song file)."""

    data: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    line: int | None = None  # where this table starts


@dataclass
class _Layer:
    """One source of a track's keys: the album's defaults, a song file, the track entry."""

    keys: _Keys
    where: str | None = None  # None: the album file; else the song file's display name
    default: bool = False  # the album's defaults (its top-level keys)


def parse_album_file(
    path: Path,
    rules: RequestRules = DEFAULT_RULES,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    display_name: str | None = None,
) -> AlbumRequest:
    """Read and validate an album file and the song files it names (beside it)."""
    name = display_name or str(path)
    try:
        if path.stat().st_size > max_bytes:
            raise SongFileError(
                f"is {path.stat().st_size} bytes, over the limit of {max_bytes} bytes",
                source=name,
                hint="raise [watch] max_file_kib if this album is right",
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise SongFileError("does not exist", source=name) from None
    except OSError as exc:
        raise SongFileError(f"cannot be read: {exc.strerror or exc}", source=name) from None
    return parse_album_bytes(
        data, rules, name=name, base_dir=path.parent, folder=album_folder_of(path)
    )


def parse_album_bytes(
    data: bytes,
    rules: RequestRules = DEFAULT_RULES,
    *,
    name: str,
    base_dir: Path | None,
    folder: Path | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> AlbumRequest:
    """Validate an album's bytes. `file:` tracks are read relative to `base_dir` (or inside
    `folder`, the `NAME.album/` beside the file); without `base_dir` they are refused."""
    try:
        text = data.decode("utf-8").removeprefix("\ufeff").replace("\r\n", "\n")
    except UnicodeDecodeError:
        raise SongFileError("is not valid UTF-8", source=name, hint="save it as UTF-8") from None
    if not text.strip():
        raise SongFileError("is empty", source=name, hint="write the album's keys; " + _HOW)
    lower = name.lower()
    if lower.endswith(".toml"):
        top, tracks = _load_toml(text, name)
    elif lower.endswith(".json"):
        top, tracks = _load_json(text, name)
    else:
        top, tracks = _load_yaml(text, name)
    return _build(top, tracks, rules, name, base_dir, folder, max_bytes)


# -- reading the file --------------------------------------------------------------------


def _not_a_table(name: str, line: int | None) -> SongFileError:
    return SongFileError(
        "an album file must be a table of keys (album, artist, style, tracks, ...)",
        source=name,
        line=line,
        hint=_HOW,
    )


def _yaml_scalar(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """Scalars as written (the field decides what `no` or `3:30` means), as song files do."""
    if isinstance(node, yaml.ScalarNode):
        if node.style is None and node.tag == "tag:yaml.org,2002:null":
            return None
        return node.value
    if isinstance(node, yaml.SequenceNode) and all(
        isinstance(i, yaml.ScalarNode) for i in node.value
    ):
        return [_yaml_scalar(loader, i) for i in node.value]
    return loader.construct_object(node, deep=True)


def _yaml_table(
    loader: yaml.SafeLoader, node: yaml.MappingNode, name: str, problems: list[RequestError]
) -> tuple[_Keys, dict[str, yaml.Node]]:
    keys = _Keys(line=node.start_mark.line + 1)
    nodes: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
        if key is None:
            problems.append(SongFileError("a key must be a plain name", source=name, line=line))
            continue
        if key in keys.lines:
            problems.append(
                SongFileError(
                    f"duplicate key {key!r} (also on line {keys.lines[key]})",
                    source=name,
                    key=key,
                    line=line,
                    hint="keep one of them",
                )
            )
            continue
        keys.lines[key] = line
        nodes[key] = value_node
        if key != "tracks":
            keys.data[key] = _yaml_scalar(loader, value_node)
    return keys, nodes


def _load_yaml(text: str, name: str) -> tuple[_Keys, list[_Keys | RequestError]]:
    loader = yaml.SafeLoader(text)
    problems: list[RequestError] = []
    try:
        node = loader.get_single_node()
        if not isinstance(node, yaml.MappingNode):
            raise _not_a_table(name, node.start_mark.line + 1 if node else None)
        top, nodes = _yaml_table(loader, node, name, problems)
        tracks: list[_Keys | RequestError] = []
        listed = nodes.get("tracks")
        if listed is not None:
            top.data["tracks"] = listed.value if isinstance(listed, yaml.SequenceNode) else None
            if isinstance(listed, yaml.SequenceNode):
                for item in listed.value:
                    if isinstance(item, yaml.MappingNode):
                        keys, _ = _yaml_table(loader, item, name, problems)
                        tracks.append(keys)
                    else:
                        tracks.append(_not_a_track(name, item.start_mark.line + 1))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise SongFileError(
            f"is not valid YAML: {exc.problem or exc.context or 'invalid YAML'}",
            source=name,
            line=mark.line + 1 if mark else None,
            hint='put values that contain ": " or " #" in quotes, e.g. title: "Me: Myself"',
        ) from None
    except yaml.YAMLError as exc:
        raise SongFileError(f"is not valid YAML: {exc}".split("\n")[0], source=name) from None
    finally:
        loader.dispose()
    if problems:
        raise SongFileError.collect(problems, source=name)
    return top, tracks


def _not_a_track(name: str, line: int | None) -> SongFileError:
    return SongFileError(
        "a track must be a table of keys (title, lyrics or description, or file)",
        source=name,
        line=line,
        hint="write `- title: ...` with the track's keys indented under it",
    )


def _load_toml(text: str, name: str) -> tuple[_Keys, list[_Keys | RequestError]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SongFileError(
            f"is not valid TOML: {exc}",
            source=name,
            hint="write key = value, text in quotes, and each track as a [[tracks]] table",
        ) from None
    # tomllib keeps no positions: the lines come from the text ([[tracks]] tables in order).
    top = _Keys(line=1)
    tables: list[_Keys] = []
    current = top
    for number, row in enumerate(text.split("\n"), start=1):
        stripped = row.strip()
        if stripped.startswith("[[") and stripped.rstrip("]").strip("[ ").strip() == "tracks":
            current = _Keys(line=number)
            tables.append(current)
        elif stripped.startswith("["):
            current = _Keys()  # another table: not ours to locate
        elif "=" in stripped and not stripped.startswith("#"):
            key = stripped.split("=", 1)[0].strip().strip("\"'")
            current.lines.setdefault(key, number)
    top.data = {k: v for k, v in data.items() if k != "tracks"}
    top.data["tracks"] = data.get("tracks")
    if "tracks" in data:
        top.lines.setdefault("tracks", tables[0].line if tables and tables[0].line else 1)
    return top, _tracks_of(data.get("tracks"), tables, name)


def _load_json(text: str, name: str) -> tuple[_Keys, list[_Keys | RequestError]]:
    import json

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SongFileError(
            f"is not valid JSON: {exc.msg}", source=name, line=exc.lineno, hint=_HOW
        ) from None
    if not isinstance(data, dict):
        raise _not_a_table(name, None)
    top = _Keys({k: v for k, v in data.items()}, line=1)
    return top, _tracks_of(data.get("tracks"), [], name)


def _tracks_of(listed: Any, located: Sequence[_Keys], name: str) -> list[_Keys | RequestError]:
    if not isinstance(listed, list):
        return []
    out: list[_Keys | RequestError] = []
    for i, item in enumerate(listed):
        where = located[i] if i < len(located) else _Keys()
        if isinstance(item, dict):
            out.append(_Keys(dict(item), where.lines, where.line))
        else:
            out.append(_not_a_track(name, where.line))
    return out


# -- building the tracks -------------------------------------------------------------------


def _album_problems(top: _Keys, name: str) -> tuple[dict[str, Any], list[RequestError]]:
    """The album's own keys checked; the remaining keys as the defaults of every track."""
    problems: list[RequestError] = []
    defaults: dict[str, Any] = {}
    title = top.data.get("album")
    if not isinstance(title, str) or not title.strip():
        problems.append(
            SongFileError(
                "the album has no title" if title is None else "album must be a title (text)",
                source=name,
                key="album",
                line=top.lines.get("album"),
                hint="add a line `album: Night Drive` at the top",
            )
        )
    artist = top.data.get("artist")
    if artist is not None and not isinstance(artist, str):
        problems.append(
            SongFileError(
                "artist must be a name (text)",
                source=name,
                key="artist",
                line=top.lines.get("artist"),
                hint='write artist: "The Night Shift"',
            )
        )
    tracks = top.data.get("tracks")
    if not isinstance(tracks, list) or not tracks:
        problems.append(
            SongFileError(
                "the album has no tracks" if not tracks else "tracks must be a list",
                source=name,
                key="tracks",
                line=top.lines.get("tracks"),
                hint="add `tracks:` with one `- title: ...` entry per track",
            )
        )
    elif len(tracks) > MAX_TRACKS:
        problems.append(
            SongFileError(
                f"{len(tracks)} tracks is more than the {MAX_TRACKS} an album may have",
                source=name,
                key="tracks",
                line=top.lines.get("tracks"),
                hint="split it into several albums",
            )
        )
    for key, value in top.data.items():
        if key in _ALBUM_KEYS:
            continue
        canon = fields.CANONICAL.get(fields.key_name(key))
        if canon in _PER_TRACK:
            problems.append(
                SongFileError(
                    f"{key!r} is a per-track key",
                    source=name,
                    key=key,
                    line=top.lines.get(key),
                    hint=_PER_TRACK[canon],
                )
            )
            continue
        defaults[key] = value  # unknown keys are reported per track below, once: here
    return defaults, problems


def _build(
    top: _Keys,
    tracks: list[_Keys | RequestError],
    rules: RequestRules,
    name: str,
    base_dir: Path | None,
    folder: Path | None,
    max_bytes: int,
) -> AlbumRequest:
    defaults, problems = _album_problems(top, name)
    # Unknown keys at the top are one problem each, not one per track.
    for key in list(defaults):
        if fields.CANONICAL.get(fields.key_name(key)) is None:
            problems.append(_unknown_top_key(key, top, name))
            del defaults[key]
    # A bad default is said once, for the album, and left out of the tracks: it must not
    # hide what is wrong with a track itself (rules between fields are judged per track).
    for key in list(defaults):
        try:
            SongRequest.build(
                {key: defaults[key]},
                RequestRules(backend=rules.backend, max_job_credits=None),
                source=name,
            )
        except RequestError as exc:
            mine = [p for p in exc.problems or (exc,) if p.key == key]
            for problem in mine:
                problems.append(
                    SongFileError(
                        problem.reason,
                        source=name,
                        key=key,
                        line=top.lines.get(key),
                        hint=problem.hint,
                    )
                )
            if mine:
                del defaults[key]
    problems.sort(key=lambda p: p.line or 0)
    album_style = str(defaults.pop("style", "") or "").strip()
    built: list[AlbumTrack] = []
    for number, entry in enumerate(tracks, start=1):
        if isinstance(entry, RequestError):
            problems.append(_numbered(entry, number, None))
            continue
        try:
            built.append(
                _track(
                    number,
                    entry,
                    defaults,
                    album_style,
                    rules,
                    name,
                    base_dir,
                    folder,
                    top,
                    max_bytes,
                )
            )
        except RequestError as exc:
            problems.extend(exc.problems or (exc,))
    if problems:
        # A bad default is one problem of the album, not one per track.
        unique = {(p.line, p.key, p.reason): p for p in problems}
        raise SongFileError.collect(list(unique.values()), source=name)
    title = str(top.data["album"]).strip()
    artist = top.data.get("artist")
    return AlbumRequest(
        title=title,
        artist=str(artist).strip() or None if artist is not None else None,
        tracks=tuple(built),
        style=album_style,
    )


def _unknown_top_key(key: str, top: _Keys, name: str) -> SongFileError:
    try:
        SongRequest.build({key: None}, source=name)
    except RequestError as exc:
        hint = exc.hint
    else:  # pragma: no cover - an unknown key always fails
        hint = None
    return SongFileError(
        f"unknown key {key!r}",
        source=name,
        key=key,
        line=top.lines.get(key),
        hint=hint or "album keys: album, artist, style, tracks and any song-file key",
    )


def _numbered(exc: RequestError, number: int, where: str | None) -> SongFileError:
    """A track's problem as one item of the album's list: `track 3: ...`, located."""
    if where is None:
        return SongFileError(
            f"track {number}: {exc.reason}",
            source=exc.source,
            key=exc.key,
            line=exc.line,
            hint=exc.hint,
        )
    at = f"{where}, line {exc.line}" if exc.line else where
    return SongFileError(
        f"track {number} ({at}): {exc.reason}", source=exc.source, key=exc.key, hint=exc.hint
    )


def _canonical(key: str) -> str:
    return fields.CANONICAL.get(fields.key_name(key), key)


def _joined_style(album: str, track: Any) -> str:
    own = str(track or "").strip()
    if not album:
        return own
    return f"{album}, {own}" if own else album


def _track(
    number: int,
    entry: _Keys,
    defaults: Mapping[str, Any],
    album_style: str,
    rules: RequestRules,
    name: str,
    base_dir: Path | None,
    folder: Path | None,
    top: _Keys,
    max_bytes: int,
) -> AlbumTrack:
    layers = [_Layer(_Keys(dict(defaults), top.lines), default=True)]
    own = dict(entry.data)
    file_ref = own.pop("file", None)
    song_file: Path | None = None
    fallback = ""
    if file_ref is not None:
        song_file, shown = _song_file(file_ref, number, entry, name, base_dir, folder)
        try:
            if song_file.stat().st_size > max_bytes:
                raise SongFileError(
                    f"track {number}: {shown} is over the limit of {max_bytes} bytes",
                    source=name,
                    key="file",
                    line=entry.lines.get("file"),
                )
            data, lines = read_song_keys(
                song_file.read_bytes(), name=shown, suffix=song_file.suffix.lower()
            )
        except RequestError as exc:
            raise _numbered(exc, number, shown if exc.source == shown else None) from None
        except OSError as exc:
            raise SongFileError(
                f"track {number}: {shown} cannot be read: {exc.strerror or exc}",
                source=name,
                key="file",
                line=entry.lines.get("file"),
            ) from None
        layers.append(_Layer(_Keys(data, lines), shown))
        fallback = song_file.stem
    layers.append(_Layer(_Keys(own, entry.lines, entry.line)))
    merged: dict[str, Any] = {}
    origin: dict[str, _Layer] = {}  # the key as written -> the layer it came from
    track_style: Any = None
    for layer in layers[1:]:
        for key, value in layer.keys.data.items():
            if _canonical(key) == "style":
                track_style = value
    for layer in layers:
        for key, value in layer.keys.data.items():
            canon = _canonical(key)
            if canon == "style":
                continue
            for old in [k for k in merged if _canonical(k) == canon]:
                del merged[old]
                origin.pop(old, None)
            merged[key] = value
            origin[key] = layer
    style = _joined_style(album_style, track_style)
    if style:
        merged["style"] = style
        origin["style"] = next(
            (ly for ly in reversed(layers) if any(_canonical(k) == "style" for k in ly.keys.data)),
            layers[0],
        )
    source = f"{name} track {number}"
    try:
        request = SongRequest.build(merged, rules, source=source)
    except RequestError as exc:
        found = exc.problems or (exc,)
        raise RequestError.collect(
            [_place(p, number, origin, entry, name) for p in found], source=name
        ) from None
    audio_dir = song_file.parent if song_file is not None else base_dir
    for field_name in ("source_audio", "reference_audio"):
        audio = getattr(request, field_name)
        if audio is not None and (audio_dir is None or not (audio_dir / audio).is_file()):
            raise SongFileError(
                f"track {number}: {field_name} {audio!r} does not exist",
                source=name,
                key=field_name,
                line=entry.lines.get(field_name) or entry.line,
                hint="put the audio file beside the song file, or fix the name",
            )
    return AlbumTrack(number, request, fallback or f"Track {number}", song_file)


def _place(
    problem: RequestError,
    number: int,
    origin: Mapping[str, _Layer],
    entry: _Keys,
    name: str,
) -> SongFileError:
    layer = origin.get(problem.key or "")
    if layer is None:
        return SongFileError(
            f"track {number}: {problem.reason}",
            source=name,
            key=problem.key,
            line=entry.line,
            hint=problem.hint,
        )
    line = layer.keys.lines.get(problem.key or "")
    if layer.default:  # the album's own key: said once, for every track
        return SongFileError(
            f"(every track) {problem.reason}",
            source=name,
            key=problem.key,
            line=line,
            hint=problem.hint,
        )
    if layer.where is None:
        return SongFileError(
            f"track {number}: {problem.reason}",
            source=name,
            key=problem.key,
            line=line,
            hint=problem.hint,
        )
    located = RequestError(problem.reason, key=problem.key, line=line, hint=problem.hint)
    return _numbered(located, number, layer.where)


def _song_file(
    ref: Any, number: int, entry: _Keys, name: str, base_dir: Path | None, folder: Path | None
) -> tuple[Path, str]:
    """The song file a `file:` names: beside the album file, or in its `NAME.album/`
    folder; never outside them (an album in the inbox cannot read other folders)."""
    line = entry.lines.get("file")
    if not isinstance(ref, str) or not ref.strip():
        raise SongFileError(
            f"track {number}: file must name a song file", source=name, key="file", line=line
        )
    if base_dir is None:
        raise SongFileError(
            f"track {number}: file {ref!r} cannot be read here",
            source=name,
            key="file",
            line=line,
            hint="give the track inline (lyrics or description), or name the album file "
            "itself so its song files are found beside it",
        )
    relative = PurePath(ref)
    if relative.is_absolute() or ".." in relative.parts:
        raise SongFileError(
            f"track {number}: file {ref!r} is outside the album's folder",
            source=name,
            key="file",
            line=line,
            hint="name a song file beside the album file, or in its NAME.album/ folder",
        )
    if relative.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise SongFileError(
            f"track {number}: file {ref!r} is not a song file",
            source=name,
            key="file",
            line=line,
            hint=f"song files end in {', '.join(SUPPORTED_SUFFIXES)}",
        )
    for root in (base_dir, folder):
        if root is not None and (root / relative).is_file():
            path = (root / relative).resolve()
            if root.resolve() in path.parents:
                shown = str(PurePath(root.name if root == folder else "", relative))
                return path, shown
    inside = f" or in {folder.name}/" if folder is not None else ""
    raise SongFileError(
        f"track {number}: file {ref!r} does not exist",
        source=name,
        key="file",
        line=line,
        hint=f"put it beside the album file{inside}, or fix the name",
    )
