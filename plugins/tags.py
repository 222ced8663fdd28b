"""First-party plugin `tags`: writes title, artist, lyrics, style and provenance into the audio.

MP3 and WAV get ID3 (v2.3 by default, for the widest player support); FLAC and Ogg get
Vorbis comments. Other files are left alone.
"""

# mutagen is only partly typed: its constructors and tag methods have no annotations.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from mutagen.flac import FLAC, Picture
from mutagen.id3 import (
    APIC,
    COMM,
    ID3,
    TALB,
    TCON,
    TDRC,
    TIT2,
    TPE1,
    TPE2,
    TRCK,
    TXXX,
    USLT,
    Encoding,
    ID3NoHeaderError,
)
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from bygheartd import hookimpl
from bygheartd.jobs import Job

DEFAULT_PROVENANCE = "AI-generated with the Bygheart Music API (bygheartd)"
DEFAULTS: dict[str, Any] = {
    "artist": "Bygheart",
    "album": "bygheartd",
    "id3_version": 3,
    "cover": "",
    "lyrics": True,
    "provenance": DEFAULT_PROVENANCE,
}
ID3_SUFFIXES = {".mp3", ".wav"}
VORBIS_SUFFIXES = {".flac", ".ogg", ".oga", ".opus"}


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    settings = {**DEFAULTS, **config}
    if settings["id3_version"] not in (3, 4):
        raise ValueError(f"id3_version must be 3 or 4, not {settings['id3_version']!r}")
    return settings


def _seeds(job: Job) -> list[str]:
    seeds = job.result.get("seeds")
    if isinstance(seeds, list | tuple):
        return [str(s) for s in seeds if s is not None]
    if isinstance(seeds, str | int):
        return [s.strip() for s in str(seeds).split(",") if s.strip()]
    seed = job.request.get("seed")
    if isinstance(seed, list):
        return [str(s) for s in seed]
    return [str(seed)] if seed is not None else []


# Names that end a genre ("dark dance pop", "psychedelic rock"); a first style item that
# ends otherwise ("female lead vocal", "120 bpm") is a description, not a genre.
GENRE_WORDS = frozenset(
    [
        "pop",
        "rock",
        "jazz",
        "blues",
        "funk",
        "soul",
        "disco",
        "house",
        "techno",
        "trance",
        "ambient",
        "metal",
        "punk",
        "folk",
        "country",
        "reggae",
        "ska",
        "rap",
        "trap",
        "drill",
        "r&b",
        "rnb",
        "edm",
        "dubstep",
        "dnb",
        "garage",
        "grime",
        "gospel",
        "classical",
        "opera",
        "orchestral",
        "soundtrack",
        "lo-fi",
        "lofi",
        "synthwave",
        "vaporwave",
        "electro",
        "electronic",
        "electronica",
        "idm",
        "chillwave",
        "chillout",
        "downtempo",
        "breakbeat",
        "jungle",
        "hardstyle",
        "samba",
        "salsa",
        "tango",
        "flamenco",
        "afrobeat",
        "afrobeats",
        "amapiano",
        "reggaeton",
        "dancehall",
        "k-pop",
        "j-pop",
        "grunge",
        "emo",
        "shoegaze",
        "indie",
        "bluegrass",
        "americana",
        "swing",
        "bebop",
        "fusion",
        "ballad",
        "lullaby",
        "chanson",
        "bolero",
        "cumbia",
        "bachata",
        "merengue",
        "polka",
        "waltz",
        "dance",
        "hyperpop",
        "phonk",
        "bossa-nova",
        "hip-hop",
        "post-punk",
        "new-wave",
        "trip-hop",
        "drum-and-bass",
    ]
)


def genre_of(style: str) -> str:
    """The style's first item when it names a genre, else "" (then no genre is written)."""
    first = style.split(",")[0].strip()
    words = first.lower().split()
    if not words:
        return ""
    endings = {words[-1], "-".join(words[-2:]), "-".join(words[-3:])}
    return first if endings & GENRE_WORDS else ""


def song_fields(job: Job, settings: dict[str, Any], take: int) -> dict[str, str]:
    """The text fields every format gets; `take` counts from 0. Lyrics and style are what
    the model really used (in Simple mode it wrote them), else what was asked for."""
    generated = job.generated() or {}
    style = str(generated.get("style") or job.request.get("style") or "")
    sung = generated.get("lyrics") or job.request.get("lyrics") or ""
    if str(sung).strip().lower() in ("[instrumental]", "[inst]"):
        sung = ""  # nothing was sung: no lyrics tag
    lyrics = str(sung) if settings["lyrics"] else ""
    seeds = _seeds(job)
    when = job.completed_at or job.created_at
    fields = {
        "title": job.title,
        "artist": str(settings["artist"]),
        "album": str(settings["album"]),
        "genre": genre_of(style),
        "lyrics": lyrics,
        "comment": style,
        "date": f"{when.year:04d}",
        "BYGHEART_JOB_ID": job.id,
        "BYGHEART_MODEL": job.model or "",
        "BYGHEART_SEED": seeds[take] if take < len(seeds) else "",
        "AI_GENERATED": str(settings["provenance"]),
    }
    if job.album_title:  # a track of an album: album, album artist, track n/N
        fields["album"] = job.album_title
        if job.album_artist:
            fields["artist"] = fields["albumartist"] = job.album_artist
        if job.track:
            fields["tracknumber"] = f"{job.track}/{job.album_tracks or job.track}"
    return {k: v for k, v in fields.items() if v}


def _cover(settings: dict[str, Any]) -> tuple[bytes, str] | None:
    if not settings["cover"]:
        return None
    path = Path(str(settings["cover"])).expanduser()
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}.get(
        path.suffix.lower()
    )
    if mime is None:
        raise ValueError(f"cover {path}: use a .png, .jpg or .jpeg image")
    return path.read_bytes(), mime


def _id3_frames(tags: ID3, fields: dict[str, str], cover: tuple[bytes, str] | None) -> None:
    enc = Encoding.UTF16
    simple = {
        "title": TIT2,
        "artist": TPE1,
        "album": TALB,
        "albumartist": TPE2,
        "tracknumber": TRCK,
        "genre": TCON,
        "date": TDRC,
    }
    for key, frame in simple.items():
        if key in fields:
            tags.setall(frame.__name__, [frame(encoding=enc, text=[fields[key]])])
    if "lyrics" in fields:
        tags.setall("USLT", [USLT(encoding=enc, lang="eng", desc="", text=fields["lyrics"])])
    if "comment" in fields:
        tags.setall("COMM", [COMM(encoding=enc, lang="eng", desc="", text=[fields["comment"]])])
    for key, value in fields.items():
        if key.isupper():
            tags.setall(f"TXXX:{key}", [TXXX(encoding=enc, desc=key, text=[value])])
    if cover is not None:
        data, mime = cover
        tags.setall("APIC", [APIC(encoding=enc, mime=mime, type=3, desc="Cover", data=data)])


def _tag_mp3(path: Path, fields: dict[str, str], cover: Any, version: int) -> None:
    try:
        tags = ID3(path)
    except ID3NoHeaderError:
        tags = ID3()
    _id3_frames(tags, fields, cover)
    tags.save(path, v2_version=version)


def _tag_wav(path: Path, fields: dict[str, str], cover: Any, version: int) -> None:
    audio: Any = WAVE(path)
    if audio.tags is None:
        audio.add_tags()
    _id3_frames(audio.tags, fields, cover)
    audio.save(v2_version=version)


def _vorbis_names(fields: dict[str, str]) -> dict[str, str]:
    names = {key.upper(): value for key, value in fields.items()}
    if "TRACKNUMBER" in names:  # Vorbis comments say n and N apart
        number, _, total = names["TRACKNUMBER"].partition("/")
        names["TRACKNUMBER"], names["TRACKTOTAL"] = number, total
    return names


def _tag_vorbis(path: Path, fields: dict[str, str], cover: tuple[bytes, str] | None) -> None:
    suffix = path.suffix.lower()
    audio: Any = FLAC(path) if suffix == ".flac" else None
    if audio is None:
        audio = OggOpus(path) if suffix == ".opus" else OggVorbis(path)
    if audio.tags is None:
        audio.add_tags()
    for key, value in _vorbis_names(fields).items():
        audio[key] = [value]
    if cover is not None:
        picture = Picture()
        picture.data, picture.mime, picture.type, picture.desc = cover[0], cover[1], 3, "Cover"
        if isinstance(audio, FLAC):
            audio.clear_pictures()
            audio.add_picture(picture)
        else:
            audio["METADATA_BLOCK_PICTURE"] = [base64.b64encode(picture.write()).decode("ascii")]
    audio.save()


@hookimpl
def on_complete(job: Job, files: list[Path], config: dict[str, Any]) -> dict[str, Any]:
    """Tag each audio file of the job; returns the names tagged and skipped as sidecar data."""
    settings = _settings(config)
    cover = _cover(settings)
    tagged: list[str] = []
    skipped: list[str] = []
    audio_files = [f for f in files if f.suffix.lower() in ID3_SUFFIXES | VORBIS_SUFFIXES]
    for take, path in enumerate(audio_files):
        fields = song_fields(job, settings, take)
        suffix = path.suffix.lower()
        if suffix == ".mp3":
            _tag_mp3(path, fields, cover, settings["id3_version"])
        elif suffix == ".wav":
            _tag_wav(path, fields, cover, settings["id3_version"])
        else:
            _tag_vorbis(path, fields, cover)
        tagged.append(path.name)
    skipped = [f.name for f in files if f not in audio_files]
    return {"files": [], "sidecar": {"tagged": tagged, "skipped": skipped}}
