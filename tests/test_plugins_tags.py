"""First-party `tags`: ID3 for MP3/WAV, Vorbis comments for FLAC/Ogg, read back with mutagen."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from mutagen.flac import FLAC
from mutagen.id3 import ID3
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE
from plugin_fixtures.factories import make_job, write_audio

from bygheartd.hooks.host import PluginHost, PluginSettings

pytestmark = pytest.mark.anyio


def tags_host(**table: Any) -> PluginHost:
    settings = PluginSettings(enabled=["tags"], tables={"tags": table}, load_env=None)
    host = PluginHost.load(settings)
    assert host.active == ["tags"]
    return host


def tiny_png(path: Path) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize(
    ("style", "genre"),
    [
        ("dark dance pop, female lead vocal", "dark dance pop"),
        ("female lead vocal, synth pop", ""),
        ("Hip Hop, boom bap", "Hip Hop"),
        ("drum and bass, rolling", "drum and bass"),
        ("120 bpm, ambient", ""),
        ("", ""),
    ],
)
def test_a_genre_is_written_only_when_the_first_style_item_is_one(style: str, genre: str) -> None:
    from bygheartd_plugins.tags import genre_of

    assert genre_of(style) == genre


async def test_mp3_gets_id3_v23_with_lyrics_provenance_and_seeds(tmp_path: Path) -> None:
    take1 = write_audio(tmp_path / "midnight-god-mode.mp3")
    take2 = write_audio(tmp_path / "midnight-god-mode-2.mp3")
    outcome = await tags_host().on_complete(make_job(), [take1, take2])
    assert outcome.failures == []
    assert outcome.sidecar["tags"]["tagged"] == [take1.name, take2.name]
    tags = ID3(take1)
    assert tags.version == (2, 3, 0)
    assert str(tags["TIT2"]) == "Midnight God Mode"
    assert str(tags["TPE1"]) == "Bygheart"
    assert str(tags["TALB"]) == "bygheartd"
    assert str(tags["TCON"]) == "dark dance pop"
    assert tags.getall("USLT")[0].text == "[Verse]\nI got a new face in the rearview"
    assert tags.getall("COMM")[0].text == ["dark dance pop, female lead vocal, stadium anthem"]
    assert str(tags["TXXX:BYGHEART_JOB_ID"]) == "01JVX3K9TESTJOB"
    assert str(tags["TXXX:BYGHEART_MODEL"]) == "bygheart-studio-pro"
    assert str(tags["TXXX:BYGHEART_SEED"]) == "42"
    assert "AI-generated" in str(tags["TXXX:AI_GENERATED"])
    assert str(ID3(take2)["TXXX:BYGHEART_SEED"]) == "43"


async def test_id3_version_4_artist_album_and_cover_are_configurable(tmp_path: Path) -> None:
    song = write_audio(tmp_path / "song.mp3")
    cover = tiny_png(tmp_path / "cover.png")
    host = tags_host(id3_version=4, artist="Night Shift", album="Demos", cover=str(cover))
    assert (await host.on_complete(make_job(), [song])).failures == []
    tags = ID3(song)
    assert tags.version == (2, 4, 0)
    assert (str(tags["TPE1"]), str(tags["TALB"])) == ("Night Shift", "Demos")
    apic = tags.getall("APIC")[0]
    assert (apic.mime, apic.type, apic.data) == ("image/png", 3, cover.read_bytes())


async def test_flac_gets_vorbis_comments_and_a_picture(tmp_path: Path) -> None:
    song = write_audio(tmp_path / "song.flac")
    cover = tiny_png(tmp_path / "cover.png")
    host = tags_host(cover=str(cover))
    assert (await host.on_complete(make_job(), [song])).failures == []
    flac = FLAC(song)
    assert flac["TITLE"] == ["Midnight God Mode"]
    assert flac["ARTIST"] == ["Bygheart"]
    assert flac["GENRE"] == ["dark dance pop"]
    assert flac["LYRICS"] == ["[Verse]\nI got a new face in the rearview"]
    assert flac["BYGHEART_SEED"] == ["42"]
    assert flac["BYGHEART_JOB_ID"] == ["01JVX3K9TESTJOB"]
    assert flac.pictures[0].data == cover.read_bytes()


async def test_ogg_gets_vorbis_comments(tmp_path: Path) -> None:
    song = write_audio(tmp_path / "song.ogg")
    assert (await tags_host().on_complete(make_job(), [song])).failures == []
    ogg = OggVorbis(song)
    assert ogg["TITLE"] == ["Midnight God Mode"]
    assert ogg["COMMENT"] == ["dark dance pop, female lead vocal, stadium anthem"]
    assert ogg["BYGHEART_MODEL"] == ["bygheart-studio-pro"]


async def test_wav_gets_an_id3_chunk(tmp_path: Path) -> None:
    song = write_audio(tmp_path / "song.wav")
    assert (await tags_host().on_complete(make_job(), [song])).failures == []
    tags = WAVE(song).tags
    assert tags is not None
    assert str(tags["TIT2"]) == "Midnight God Mode"
    assert str(tags["TXXX:BYGHEART_JOB_ID"]) == "01JVX3K9TESTJOB"


async def test_other_files_are_skipped_and_an_instrumental_has_no_lyrics(tmp_path: Path) -> None:
    song = write_audio(tmp_path / "song.mp3")
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    job = make_job(request={"style": "ambient", "instrumental": True}, result={})
    outcome = await tags_host().on_complete(job, [song, notes])
    assert outcome.sidecar["tags"] == {"tagged": ["song.mp3"], "skipped": ["notes.txt"]}
    tags = ID3(song)
    assert tags.getall("USLT") == [] and tags.getall("TXXX:BYGHEART_SEED") == []
    assert notes.read_text() == "x"


async def test_a_bad_option_is_a_hook_failure_naming_it(tmp_path: Path) -> None:
    song = write_audio(tmp_path / "song.mp3")
    outcome = await tags_host(id3_version=5).on_complete(make_job(), [song])
    [failure] = outcome.failures
    assert failure.error == "ValueError: id3_version must be 3 or 4, not 5"
