"""Inspiration and polish: the backend's language model writes or rewrites a song file,
and nothing is generated or spent (`/v1/create_sample`, `/create_random_sample`,
`/format_input`).

What the model proposes is checked field by field with the song-file rules: a value a
song file would refuse (a bpm out of range, an unknown key) is left out with a note, so
that every draft written here parses and queues as it is.
"""

from __future__ import annotations

import difflib
import json
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bygheartd.api.client import BygheartClient, Draft, RetryPolicy
from bygheartd.api.factory import make_client
from bygheartd.config import Config
from bygheartd.errors import RequestError, SongFileError
from bygheartd.folders.moves import FolderUnavailable, prepare_folder, unique_path
from bygheartd.safetext import visible
from bygheartd.service.errors import ServiceError
from bygheartd.songs import fields
from bygheartd.songs.request import RequestRules, SongRequest, slugify, title_from_description
from bygheartd.songs.songfile import parse_song_file, parse_song_text

__all__ = [
    "META_FIELDS",
    "Polished",
    "SongDraft",
    "inspire",
    "polish",
    "polish_request",
    "write_draft",
]

# The song-file keys a draft carries besides title and lyrics, in the order written.
META_FIELDS: Final[tuple[str, ...]] = (
    "style",
    "bpm",
    "key",
    "duration",
    "time_signature",
    "language",
)
_TEXT_SUFFIXES: Final = (".md", ".txt", ".lyrics")
_TITLE_WORDS: Final = 6
_TRAILING: Final = frozenset(
    ("a", "an", "the", "of", "to", "in", "on", "and", "or", "for", "with", "at", "by", "from")
)


@dataclass(frozen=True)
class SongDraft:
    """A complete song file's content: `text()` is what `parse_song_text` reads back."""

    title: str
    lyrics: str
    meta: dict[str, Any]
    instrumental: bool = False
    notes: list[str] = field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        """The song-file keys of this draft (what MCP returns and `generate_song` takes)."""
        data: dict[str, Any] = {"title": self.title, **self.meta}
        if self.instrumental:
            data["instrumental"] = True
        else:
            data["lyrics"] = self.lyrics
        return data

    def text(self) -> str:
        """YAML front matter (strings in double quotes, so `key: F# minor` or a colon in the
        title stay text) and the lyrics after it."""
        lines = ["---", f"title: {_quoted(self.title)}"]
        for name in META_FIELDS:
            value = self.meta.get(name)
            if value is None:
                continue
            lines.append(f"{name}: {_quoted(value) if isinstance(value, str) else _number(value)}")
        if self.instrumental:
            lines.append("instrumental: true")
        lines.append("---")
        # The model's lyrics are data: a control character in them is written as a visible
        # escape, so `cat`ing the draft never runs it (the front matter is quoted already).
        body = "[Instrumental]" if self.instrumental else visible(self.lyrics.strip("\n"))
        return "\n".join(lines) + "\n" + body + "\n"


@dataclass(frozen=True)
class Polished:
    """A song file and the model's rewrite of it."""

    source: Path | None
    before: SongDraft
    after: SongDraft

    def changes(self, width: int = 80) -> str:
        """What changed, readable at `width` columns: each changed key before and after,
        then a unified diff of the lyrics; "" when nothing changed."""
        out: list[str] = []
        for name in META_FIELDS:
            old, new = self.before.meta.get(name), self.after.meta.get(name)
            if old == new or new is None:
                continue
            if name == "style":
                out.append("style:")
                out += _wrapped("- ", old or "(none)", width)
                out += _wrapped("+ ", str(new), width)
            else:
                out.append(f"{name}: {_shown(old)} -> {_shown(new)}")
        if self.before.lyrics.strip() != self.after.lyrics.strip():
            diff = difflib.unified_diff(
                self.before.lyrics.strip("\n").splitlines(),
                self.after.lyrics.strip("\n").splitlines(),
                "lyrics (before)",
                "lyrics (after)",
                lineterm="",
                n=1,
            )
            out += [_cut(line, width) for line in diff]
        return "\n".join(out)


def _quoted(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted one


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _shown(value: Any) -> str:
    return "(none)" if value is None else str(value)


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


def _wrapped(mark: str, text: str, width: int) -> list[str]:
    lines = textwrap.wrap(text, width - len(mark)) or [""]
    return [mark + lines[0], *("  " + line for line in lines[1:])]


# -- from the model's answer to a valid draft --------------------------------------------


def _title_from(description: str | None, lyrics: str, style: str | None) -> str:
    """A title from the description's words (as a Simple-mode song's title is made, so a
    draft and a song from the same words share a name), else the first sung line, else the
    style."""
    if description and (made := title_from_description(description)):
        return made
    for text in (_first_sung_line(lyrics), style):
        clause = re.split(r"[,.;:!?\n]", (text or "").strip(), maxsplit=1)[0]
        words = re.findall(r"[^\W_][\w'’-]*", clause)
        words = words[:_TITLE_WORDS]
        while len(words) > 1 and words[-1].lower() in _TRAILING:
            words.pop()  # "about leaving a" reads as cut off
        if words:
            title = " ".join(words)
            return title[:1].upper() + title[1:]
    return "Untitled draft"


def _first_sung_line(lyrics: str) -> str:
    for line in lyrics.splitlines():
        line = line.strip()
        if line and not (line.startswith("[") and line.endswith("]")):
            return line
    return ""


def _valid_meta(draft: Draft, backend: str) -> tuple[dict[str, Any], list[str]]:
    """The draft's metas that a song file accepts, as the file will spell them."""
    meta: dict[str, Any] = {}
    notes: list[str] = []
    raw = draft.as_dict()
    for name in META_FIELDS:
        value = raw.get(name)
        if value is None:
            continue
        try:
            clean = fields.NORMALISERS[name](value, backend)
        except RequestError as exc:
            notes.append(f"left out {name} {value!r} from the model: {exc.reason}")
            continue
        if clean is None or clean == "auto":
            continue
        meta[name] = clean
    return meta, notes


def _draft_from(
    answer: Draft,
    *,
    backend: str,
    title: str | None = None,
    description: str | None = None,
    instrumental: bool = False,
) -> SongDraft:
    meta, notes = _valid_meta(answer, backend)
    lyrics = (answer.lyrics or "").strip("\n")
    no_vocals = instrumental or lyrics.strip().lower() in ("", "[inst]", "[instrumental]")
    draft = SongDraft(
        title=(title or _title_from(description, lyrics, answer.style))[:200],
        lyrics="" if no_vocals else lyrics,
        meta=meta,
        instrumental=no_vocals,
        notes=notes,
    )
    return _checked(draft, backend)


def _checked(draft: SongDraft, backend: str) -> SongDraft:
    """Parse the draft's text as a song file; a key it refuses is left out (with a note)
    until it parses, so a written draft always queues."""
    rules = RequestRules(backend=backend)
    for _ in range(len(META_FIELDS) + 1):
        try:
            parse_song_text(draft.text(), rules, name="draft.md")
            return draft
        except SongFileError as exc:
            problems = exc.problems or [exc]
            keys = {p.key for p in problems if p.key in draft.meta}
            if not keys:
                raise ServiceError(f"the model's draft is not a valid song file: {exc}") from None
            meta = {k: v for k, v in draft.meta.items() if k not in keys}
            notes = draft.notes + [f"left out {k} {draft.meta[k]!r}: {exc}" for k in sorted(keys)]
            draft = SongDraft(draft.title, draft.lyrics, meta, draft.instrumental, notes)
    raise ServiceError("the model's draft is not a valid song file")  # pragma: no cover


# -- the calls ---------------------------------------------------------------------------


def _client(config: Config) -> BygheartClient:
    client = make_client(config)
    client.retry = RetryPolicy(attempts=2, base_delay=0.5, max_delay=2.0)
    return client


async def inspire(
    config: Config,
    description: str | None = None,
    *,
    instrumental: bool = False,
    language: str | None = None,
) -> SongDraft:
    """A complete draft from the model: from a description (`/v1/create_sample`), or one
    of the server's examples without one (`/create_random_sample`). Spends nothing."""
    backend = config.backend
    if language is not None:
        try:
            language = fields.NORMALISERS["language"](language, backend)
        except RequestError as exc:
            raise ServiceError(f"language: {exc}") from None
    text = (description or "").strip() or None
    async with _client(config) as client:
        if text is not None:
            answer = await client.create_sample(text, instrumental=instrumental, language=language)
        else:
            answer = await client.create_random_sample("custom_mode")
    if not (answer.lyrics or answer.style):
        raise ServiceError("the model answered without style or lyrics: try again")
    draft = _draft_from(answer, backend=backend, description=text, instrumental=instrumental)
    if language and draft.meta.get("language") != language and not draft.instrumental:
        draft = _checked(
            SongDraft(
                draft.title,
                draft.lyrics,
                {**draft.meta, "language": language},
                draft.instrumental,
                draft.notes,
            ),
            backend,
        )
    return draft


def _draft_of_request(request: SongRequest, title: str) -> SongDraft:
    meta: dict[str, Any] = {}
    for name in META_FIELDS:
        value = getattr(request, name)
        if value is not None and value != "" and value != "auto":
            meta[name] = value
    return SongDraft(title, request.lyrics, meta, request.instrumental)


def _param_obj(request: SongRequest) -> dict[str, Any]:
    duration = request.duration if isinstance(request.duration, int | float) else None
    params: Mapping[str, Any] = {
        "bpm": request.bpm,
        "duration": duration,
        "key_scale": request.key,
        "time_signature": request.time_signature,
        "language": request.language,
    }
    return {k: v for k, v in params.items() if v is not None}


async def polish(config: Config, path: Path) -> Polished:
    """The model's rewrite of a song file's style and lyrics (`/format_input`), with the
    file's bpm, duration, key, time signature and language as hints. Spends nothing."""
    request = parse_song_file(Path(path), RequestRules(backend=config.backend))
    return await polish_request(
        config, request, title=request.title or Path(path).stem, where=str(path), source=path
    )


async def polish_request(
    config: Config,
    request: SongRequest,
    *,
    title: str,
    where: str = "the song",
    source: Path | None = None,
) -> Polished:
    """The model's rewrite of a request's style and lyrics (what `polish` does for a file
    and MCP `polish_song` for its arguments)."""
    backend = config.backend
    if request.description and not request.lyrics.strip():
        raise ServiceError(
            f"{where} is a Simple-mode song (a description, no lyrics): there is nothing to "
            "polish; inspiration (`bygheartd inspire`, suggest_song) writes a draft from a "
            "description"
        )
    if not request.style.strip() and not request.lyrics.strip():
        raise ServiceError(f"{where} has neither style nor lyrics to polish")
    before = _draft_of_request(request, title)
    async with _client(config) as client:
        answer = await client.format_input(
            request.style, request.lyrics, params=_param_obj(request)
        )
    after = _draft_from(answer, backend=backend, title=title, instrumental=request.instrumental)
    # What the model left unsaid stays as the song had it.
    merged = {**before.meta, **after.meta}
    if merged != after.meta:
        meta: dict[str, Any] = {n: merged[n] for n in META_FIELDS if n in merged}
        after = _checked(
            SongDraft(after.title, after.lyrics, meta, after.instrumental, after.notes), backend
        )
    return Polished(source, before, after)


# -- writing -----------------------------------------------------------------------------


def draft_name(draft: SongDraft) -> str:
    return f"{slugify(draft.title) or 'draft'}.md"


def polished_name(source: Path) -> str:
    suffix = source.suffix.lower() if source.suffix.lower() in _TEXT_SUFFIXES else ".md"
    return f"{source.stem}.polished{suffix}"


def write_draft(text: str, directory: Path, name: str) -> Path:
    """Write `text` to a fresh file `name` in `directory` (`name-2`, ... when taken); an
    existing file is never replaced, even by a writer racing this one."""
    ready_for_drafts(directory)
    while True:
        path = unique_path(directory, name)
        try:
            with path.open("x", encoding="utf-8") as handle:
                handle.write(text)
        except FileExistsError:
            continue
        return path


def ready_for_drafts(directory: Path) -> None:
    """Make the drafts folder if its parent is there: one on a share that is not mounted
    is never made inside the bare mount point (folders/moves.py `prepare_folder`)."""
    try:
        prepare_folder(directory)
    except FolderUnavailable as exc:
        raise ServiceError(
            f"{exc}; or write the draft elsewhere with -o FILE (- for the terminal)"
        ) from None


def write_exact(text: str, path: Path) -> Path:
    """Write `text` to `path`, which must not exist yet (an `-o FILE` the user named)."""
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise ServiceError(
            f"{path} exists already: name another file, or remove it first"
        ) from None
    except FileNotFoundError:
        raise ServiceError(
            f"{path.parent} does not exist: create it, or name another file"
        ) from None
    return path
