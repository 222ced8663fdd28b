"""`bygheartd inspire --album`: the backend's language model drafts a whole album file
(DESIGN.md "Albums"), and nothing is generated or spent.

The real servers have no album helper, so the album is composed from the song helper they
do have (`/v1/create_sample`): one call for the album's sound, then one per track asking
for that track of that album. A track keeps only the style tags the album's sound lacks
(the album's `style:` is put before each track's own), and the written file is parsed back
with the album parser before it is handed out, so every draft queues as it is.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import replace

import yaml

from bygheartd import catalog
from bygheartd.api.client import BygheartClient, Draft, RetryPolicy
from bygheartd.api.factory import make_client
from bygheartd.config import Config
from bygheartd.errors import RequestError
from bygheartd.service.album_draft_file import AlbumDraft, TrackDraft
from bygheartd.service.drafts import SongDraft, _draft_from
from bygheartd.service.errors import ServiceError
from bygheartd.songs import fields
from bygheartd.songs.albums import MAX_TRACKS
from bygheartd.songs.request import title_from_description

__all__ = ["AlbumDraft", "Progress", "TrackDraft", "inspire_album"]

# Called before each helper call: (step, of): step 0 is the album's sound, then each track.
Progress = Callable[[int, int], None]


# -- from the model's answers to a valid album -----------------------------------------


def _clean(text: str) -> str:
    """Model text as file text: no control characters but newlines and tabs, no lone
    surrogates (a JSON reply may carry "\\ud800", which no file can hold)."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    return "".join(
        ch
        for ch in text.replace("\r\n", "\n").replace("\r", "\n")
        if ch in "\n\t" or unicodedata.category(ch) != "Cc"
    )


def _tags(style: str) -> list[str]:
    return [t.strip() for t in re.split(r"[,\n]", style) if t.strip()]


def _album_style(answer: Draft, backend: str, notes: list[str]) -> str:
    """The album's sound: the model's style for the album as a whole, cut at a tag (never
    inside one) when it is over the style limit."""
    tags = _tags(_clean(answer.style or ""))
    while tags:
        try:
            return fields.style(", ".join(tags), backend)
        except RequestError:
            tags.pop()
            if not notes or not notes[-1].startswith("the album's style"):
                notes.append("the album's style was over the limit: its last tags are left out")
    return ""


def _own_style(album_style: str, track_style: str | None) -> str | None:
    """The track's tags that the album's sound does not already say, cut to what fits
    after it (the album's style is put before each track's own)."""
    said = {t.lower() for t in _tags(album_style)}
    own: list[str] = []
    for tag in _tags(_clean(track_style or "")):
        if tag.lower() not in said:
            said.add(tag.lower())
            own.append(tag)
    while own:
        joined = ", ".join(own)
        total = len(album_style) + len(", ") + len(joined) if album_style else len(joined)
        if total <= catalog.STYLE_MAX_CHARS:
            return joined
        own.pop()
    return None


def _track_query(description: str, number: int, count: int, title: str, style: str) -> str:
    """The description leads (it is what the track is about); where it sits in the album
    and the album's sound follow, so the tracks differ and still belong together."""
    sound = f" The album's sound: {style}." if style else ""
    return f'{description.rstrip(".")}. Track {number} of {count} of the album "{title}".{sound}'


def _unique(title: str, taken: dict[str, int]) -> str:
    """Two tracks of an album do not share a title: the second becomes "Title (2)"."""
    key = title.casefold()
    seen = taken.get(key, 0)
    taken[key] = seen + 1
    if not seen:
        return title
    while f"{title} ({seen + 1})".casefold() in taken:
        seen += 1
    numbered = f"{title} ({seen + 1})"
    taken[numbered.casefold()] = 1
    return numbered


def _track(
    answer: Draft,
    *,
    number: int,
    description: str,
    album_style: str,
    backend: str,
    instrumental: bool,
    language: str | None,
) -> tuple[TrackDraft, list[str]]:
    lyrics = _clean(answer.lyrics or "")
    if not (lyrics.strip() or (answer.style or "").strip()):
        # Nothing to write down: the model writes this one as it makes it (Simple mode).
        note = f"track {number}: the model wrote nothing; it is a description (Simple mode)"
        title = title_from_description(description) or f"Track {number}"
        return TrackDraft(title, description=description), [note]
    own = _own_style(album_style, answer.style)
    shaped = Draft(
        style=own,
        lyrics=lyrics or None,
        bpm=answer.bpm,
        key=answer.key,
        duration=answer.duration,
        time_signature=answer.time_signature,
        language=language or answer.language,
    )
    song: SongDraft = _draft_from(shaped, backend=backend, instrumental=instrumental)
    meta = dict(song.meta)
    if song.instrumental:
        meta.pop("language", None)  # nothing is sung
    title = song.title
    if song.instrumental:  # no sung line to name it: its own sound does
        title = title_from_description(" ".join(_tags(own or "")[:2])) or f"Track {number}"
    notes = [f"track {number}: {note}" for note in song.notes]
    return TrackDraft(title, song.lyrics, meta, song.instrumental), notes


def _hoisted_language(tracks: list[TrackDraft]) -> tuple[str | None, list[TrackDraft]]:
    """A language every sung track shares is said once, at the top."""
    sung = [t for t in tracks if not t.instrumental and t.description is None]
    languages = {t.meta.get("language") for t in sung}
    if len(languages) != 1 or None in languages:
        return None, tracks
    out = [replace(t, meta={k: v for k, v in t.meta.items() if k != "language"}) for t in tracks]
    return str(next(iter(languages))), out


def _misread(draft: AlbumDraft) -> set[int]:
    """Tracks whose lyrics do not read back from the YAML exactly as the model wrote them."""
    loaded = yaml.safe_load(draft.text())
    listed = loaded["tracks"]
    return {
        number
        for number, track in enumerate(draft.tracks, start=1)
        if track.lyrics
        and not track.instrumental
        and track.description is None
        and listed[number - 1].get("lyrics") != track.lyrics
    }


def _checked(draft: AlbumDraft, backend: str) -> AlbumDraft:
    """Parse the draft back with the album parser, and make sure every lyric reads back as
    the model wrote it (a literal block that would not is written quoted instead)."""
    try:
        if misread := _misread(draft):
            draft = replace(draft, quoted=frozenset(misread))
            if again := _misread(draft):
                raise ServiceError(f"the lyrics of track {min(again)} do not read back")
        draft.parsed(backend)
    except (yaml.YAMLError, RequestError, ServiceError, KeyError, TypeError) as exc:
        raise ServiceError(
            f"the model's album draft is not a valid album file ({exc}): try again"
        ) from None
    return draft


def _client(config: Config) -> BygheartClient:
    client = make_client(config)
    client.retry = RetryPolicy(attempts=2, base_delay=0.5, max_delay=2.0)
    return client


async def inspire_album(
    config: Config,
    description: str,
    tracks: int,
    *,
    instrumental: bool = False,
    language: str | None = None,
    progress: Progress | None = None,
) -> AlbumDraft:
    """An album file drafted by the model from `description`: its title and sound, and
    `tracks` tracks with titles and lyrics, in `tracks + 1` calls of `/v1/create_sample`.
    Spends nothing; a backend without the helpers raises `LmUnavailable` on the first."""
    backend = config.backend
    text = " ".join(_clean(description).split())
    if not text:
        raise ServiceError("describe the album: inspire --album needs a description")
    if not 1 <= tracks <= MAX_TRACKS:
        raise ServiceError(f"an album has 1 to {MAX_TRACKS} tracks, not {tracks}")
    if language is not None:
        try:
            language = fields.NORMALISERS["language"](language, backend)
        except RequestError as exc:
            raise ServiceError(f"language: {exc}") from None
    notes: list[str] = []
    title = (title_from_description(text) or "Untitled album")[:200]
    drafted: list[TrackDraft] = []
    taken: dict[str, int] = {}
    async with _client(config) as client:
        if progress is not None:
            progress(0, tracks)
        answer = await client.create_sample(text, instrumental=instrumental, language=language)
        style = _album_style(answer, backend, notes)
        for number in range(1, tracks + 1):
            if progress is not None:
                progress(number, tracks)
            query = _track_query(text, number, tracks, title, style)
            reply = await client.create_sample(query, instrumental=instrumental, language=language)
            track, said = _track(
                reply,
                number=number,
                description=text,
                album_style=style,
                backend=backend,
                instrumental=instrumental,
                language=language,
            )
            notes += said
            drafted.append(replace(track, title=_unique(track.title, taken)))
    shared, drafted = _hoisted_language(drafted)
    draft = AlbumDraft(
        title=title,
        style=style,
        tracks=tuple(drafted),
        language=shared,  # what --language asked for, unless nothing is sung
        instrumental=instrumental,
        source=text,
        notes=notes,
    )
    return _checked(draft, backend)
