"""BygheartClient.download against a real HTTP server on 127.0.0.1: the three `file`
forms, Range resume, audio checks, and the no-overwrite move into place."""

from __future__ import annotations

import hashlib
import io
import random
import wave
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from _scripted import (  # noqa: F401 - the server, api and origin fixtures
    audio_ref,
    scripted_api_fixture,
    scripted_client,
    scripted_origin_fixture,
    scripted_server_fixture,
)
from _servers import PREFIX, TRANSCRIPT, Reply, ScriptedApi

from bygheartd.api.client import (
    BygheartClient,
    ProtocolError,
    RejectedError,
    TransientError,
)
from bygheartd.api.download import resolve_audio_url, sniff_audio_ext

pytestmark = pytest.mark.anyio

KEY = "bgh_download_test_key"
MP3 = b"\xff\xfb\x94\x64" + random.Random(1).randbytes(32640 - 4)  # the transcript's size


def tiny_wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x01" * 800)
    return buffer.getvalue()


def make_client(origin: str, **kwargs: Any) -> BygheartClient:
    return scripted_client(origin + PREFIX, KEY, **kwargs)


# -- the three file forms -----------------------------------------------------------


async def test_relative_file_form_is_appended_to_the_base_url(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    server_path = api.add_audio("4136e2ad-020f-0170-6577-265d7b9b85ef.mp3", MP3)
    async with make_client(origin) as client:
        got = await client.download(audio_ref(server_path), tmp_path / "midnight")
        assert client.requests_made["download"] == 1
    assert got.path == tmp_path / "midnight.mp3" and got.path.read_bytes() == MP3
    assert (got.size, got.ext, got.content_type) == (len(MP3), ".mp3", "audio/mpeg")
    assert got.sha256 == hashlib.sha256(MP3).hexdigest()
    assert not (tmp_path / "midnight.part").exists()
    [call] = api.requests
    assert call.path == PREFIX + "/v1/audio"
    assert (
        call.query == "path=%2Fsrv%2Facestep%2Fapi_audio%2F4136e2ad-020f-0170-6577-265d7b9b85ef.mp3"
    )
    assert call.headers["authorization"] == f"Bearer {KEY}"


async def test_raw_server_path_form_is_requested_through_v1_audio(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    flac = b"fLaC\x00\x00\x00\x22" + bytes(200)
    server_path = api.add_audio("298c9fc1 jazz.flac", flac)
    async with make_client(origin) as client:
        got = await client.download(server_path, tmp_path / "jazz")
    assert (got.path.name, got.content_type) == ("jazz.flac", "audio/flac")
    assert api.requests[0].query == "path=" + quote(server_path, safe="")


async def test_absolute_url_on_the_api_host_is_used_as_is(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    server_path = api.add_audio("abs.wav", tiny_wav())
    async with make_client(origin) as client:
        got = await client.download(origin + PREFIX + audio_ref(server_path), tmp_path / "abs")
    assert got.ext == ".wav" and got.path.read_bytes() == tiny_wav()


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:{port}/v1/audio?path=%2Fx.mp3",
        "http://127.0.0.1:1/v1/audio?path=%2Fx.mp3",
        "https://127.0.0.1:{port}/v1/audio?path=%2Fx.mp3",
        "http://evil.example/v1/audio?path=%2Fx.mp3",
    ],
    ids=["other-host-name", "other-port", "other-scheme", "elsewhere"],
)
async def test_absolute_url_elsewhere_is_refused_before_sending_the_key(
    api: ScriptedApi, origin: str, tmp_path: Path, url: str
) -> None:
    port = origin.rsplit(":", 1)[1]
    async with make_client(origin) as client:
        with pytest.raises(ProtocolError, match="refusing to send the API key"):
            await client.download(url.format(port=port), tmp_path / "x")
        assert client.requests_made["download"] == 0
    assert api.requests == []


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (
            "/v1/audio?path=%2Fsrv%2Fapi_audio%2Fab12.mp3",
            "https://iamvision.tech/bygheartsong/api/v1/audio?path=%2Fsrv%2Fapi_audio%2Fab12.mp3",
        ),
        (
            "/srv/api_audio/a b.mp3",
            "https://iamvision.tech/bygheartsong/api/v1/audio?path=%2Fsrv%2Fapi_audio%2Fa%20b.mp3",
        ),
        (
            "https://iamvision.tech:443/bygheartsong/api/v1/audio?path=%2Fa.mp3",
            "https://iamvision.tech/bygheartsong/api/v1/audio?path=%2Fa.mp3",
        ),
    ],
)
def test_file_forms_resolve_against_the_hosted_base_path(ref: str, expected: str) -> None:
    assert str(resolve_audio_url("https://iamvision.tech/bygheartsong/api", ref)) == expected


@pytest.mark.parametrize("ref", ["", "relative/file.mp3", "ftp://iamvision.tech/a.mp3"])
def test_unknown_file_forms_are_protocol_errors(ref: str) -> None:
    with pytest.raises(ProtocolError):
        resolve_audio_url("https://iamvision.tech/bygheartsong/api", ref)


# -- resume -------------------------------------------------------------------------------


async def test_dropped_body_is_resumed_with_range(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    server_path = api.add_audio("drop.mp3", MP3)
    api.expect("GET", "/v1/audio", Reply(200, MP3, media_type="audio/mpeg", truncate_at=10_000))
    async with make_client(origin) as client:
        got = await client.download(audio_ref(server_path), tmp_path / "drop")
        assert client.requests_made["download"] == 2
    assert got.path.read_bytes() == MP3 and got.sha256 == hashlib.sha256(MP3).hexdigest()
    assert api.requests[1].headers["range"] == "bytes=10000-"


async def test_an_existing_part_file_is_resumed(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    server_path = api.add_audio("resume.mp3", MP3)
    (tmp_path / "song.part").write_bytes(MP3[:5000])
    async with make_client(origin) as client:
        got = await client.download(audio_ref(server_path), tmp_path / "song")
    assert api.requests[0].headers["range"] == "bytes=5000-"
    assert got.path.read_bytes() == MP3 and got.sha256 == hashlib.sha256(MP3).hexdigest()


async def test_a_full_reply_to_a_range_request_restarts_the_part(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    (tmp_path / "song.part").write_bytes(b"stale bytes of another file")
    api.expect("GET", "/v1/audio", Reply(200, MP3, media_type="audio/mpeg"))
    async with make_client(origin) as client:
        got = await client.download("/srv/acestep/api_audio/x.mp3", tmp_path / "song")
    assert "range" in api.requests[0].headers
    assert got.path.read_bytes() == MP3 and got.size == len(MP3)


def take_wav(level: int, frames: int = 8000) -> bytes:
    """A WAV take whose every sample is `level`: two takes of other levels differ in every
    byte of audio, so a splice of the two is never either one."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(level.to_bytes(2, "little", signed=True) * frames)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("first", "other", "etag", "why"),
    [
        (take_wav(8000), take_wav(-8000), '"take-v2-other"', "ETag '\"take-v2-other\"'"),
        (take_wav(8000), take_wav(-8000), None, "no ETag"),
        (take_wav(8000), take_wav(-8000, 12000), '"take-v1"', "24044 bytes in all"),
    ],
    ids=["another-etag", "no-etag", "another-total"],
)
async def test_a_resume_answered_from_another_file_starts_over_never_splices(
    api: ScriptedApi,
    origin: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    first: bytes,
    other: bytes,
    etag: str | None,
    why: str,
) -> None:
    """The server ignores If-Range: the resume's 206 carries the rest of another file (its
    own ETag, or none, or another total in Content-Range). The part is discarded and the
    take fetched whole again: the file kept is the other file, never half of each."""
    half = len(first) // 2
    resumed = {"Content-Range": f"bytes {half}-{len(other) - 1}/{len(other)}"}
    if etag is not None:
        resumed["ETag"] = etag
    api.expect(
        "GET",
        "/v1/audio",
        Reply(200, first, {"ETag": '"take-v1"'}, media_type="audio/wav", truncate_at=half),
        Reply(206, other[half:], resumed, media_type="audio/wav"),
        Reply(200, other, {"ETag": etag or '"take-v2"'}, media_type="audio/wav"),
    )
    with caplog.at_level("WARNING", logger="bygheartd"):
        async with make_client(origin) as client:
            got = await client.download("/srv/acestep/api_audio/x.wav", tmp_path / "take")
    assert [r.headers.get("range") for r in api.requests] == [None, f"bytes={half}-", None]
    assert api.requests[1].headers["if-range"] == '"take-v1"'
    assert got.path.read_bytes() == other
    assert got.sha256 == hashlib.sha256(other).hexdigest() and got.size == len(other)
    [restarted] = [r.getMessage() for r in caplog.records if "another file" in r.getMessage()]
    assert why in restarted and "the download starts over" in restarted


async def test_a_resume_from_the_same_file_is_kept(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    """The same ETag and total: the 206 continues the part (one GET for each half)."""
    take = take_wav(8000)
    half = len(take) // 2
    same = {"ETag": '"take-v1"', "Content-Range": f"bytes {half}-{len(take) - 1}/{len(take)}"}
    api.expect(
        "GET",
        "/v1/audio",
        Reply(200, take, {"ETag": '"take-v1"'}, media_type="audio/wav", truncate_at=half),
        Reply(206, take[half:], same, media_type="audio/wav"),
    )
    async with make_client(origin) as client:
        got = await client.download("/srv/acestep/api_audio/x.wav", tmp_path / "take")
    assert len(api.requests) == 2 and got.path.read_bytes() == take


async def test_a_full_reply_to_a_resume_restarts_from_zero_never_appends(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    """The server ignores Range and answers 200 with the whole (other) file: it replaces
    the part instead of being appended to it."""
    first, other = take_wav(8000), take_wav(-8000)
    half = len(first) // 2
    api.expect(
        "GET",
        "/v1/audio",
        Reply(200, first, {"ETag": '"take-v1"'}, media_type="audio/wav", truncate_at=half),
        Reply(200, other, {"ETag": '"take-v2"'}, media_type="audio/wav"),
    )
    async with make_client(origin) as client:
        got = await client.download("/srv/acestep/api_audio/x.wav", tmp_path / "take")
    assert api.requests[1].headers["range"] == f"bytes={half}-"
    assert got.path.read_bytes() == other and got.sha256 == hashlib.sha256(other).hexdigest()


async def test_repeated_drops_give_up_and_keep_the_part_for_later(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    drops = [Reply(200, MP3, media_type="audio/mpeg", truncate_at=1000) for _ in range(3)]
    api.expect("GET", "/v1/audio", *drops)
    async with make_client(origin) as client:
        with pytest.raises(TransientError):
            await client.download("/srv/acestep/api_audio/x.mp3", tmp_path / "song")
    assert (tmp_path / "song.part").read_bytes() == MP3[:1000]
    assert not list(tmp_path.glob("song.mp3"))


# -- checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        (Reply(403, TRANSCRIPT["audio_forbidden"]), "outside allowed directory"),
        (Reply(404, TRANSCRIPT["audio_not_found"]), "Audio file not found"),
    ],
)
async def test_403_and_404_are_rejected_without_retry(
    api: ScriptedApi, origin: str, tmp_path: Path, reply: Reply, text: str
) -> None:
    api.expect("GET", "/v1/audio", reply, reply, reply)
    async with make_client(origin) as client:
        with pytest.raises(RejectedError, match=text) as info:
            await client.download("/srv/acestep/api_audio/x.mp3", tmp_path / "x")
    assert info.value.status == reply.status and len(api.requests) == 1


async def test_server_403_for_paths_outside_its_audio_dir(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    async with make_client(origin) as client:
        with pytest.raises(RejectedError, match="HTTP 403"):
            await client.download("/etc/passwd", tmp_path / "x")


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, "<html>login</html>", media_type="text/html"),
        Reply(200, b"", media_type="audio/mpeg"),
    ],
    ids=["html", "empty"],
)
async def test_bodies_that_are_not_audio_are_refused(
    api: ScriptedApi, origin: str, tmp_path: Path, reply: Reply
) -> None:
    api.expect("GET", "/v1/audio", reply)
    async with make_client(origin) as client:
        with pytest.raises(ProtocolError):
            await client.download("/srv/acestep/api_audio/x.mp3", tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


async def test_extension_comes_from_the_bytes_not_the_content_type(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    opus = b"OggS\x00\x02" + bytes(22) + b"OpusHead" + bytes(100)
    api.expect("GET", "/v1/audio", Reply(200, opus, media_type="audio/mpeg"))
    async with make_client(origin) as client:
        got = await client.download("/srv/acestep/api_audio/x.opus", tmp_path / "take")
    assert (got.path.name, got.content_type) == ("take.opus", "audio/mpeg")


async def test_an_existing_target_is_never_overwritten(
    api: ScriptedApi, origin: str, tmp_path: Path
) -> None:
    server_path = api.add_audio("x.mp3", MP3)
    (tmp_path / "song.mp3").write_bytes(b"mine")
    async with make_client(origin) as client:
        with pytest.raises(FileExistsError):
            await client.download(audio_ref(server_path), tmp_path / "song")
    assert (tmp_path / "song.mp3").read_bytes() == b"mine"


@pytest.mark.parametrize(
    ("head", "ext"),
    [
        (b"ID3\x03\x00\x00\x00\x00\x00\x00", ".mp3"),
        (b"\xff\xfb\x94\x64", ".mp3"),
        (b"\xff\xf3\x64\xc4", ".mp3"),
        (b"\xff\xf1\x50\x80\x02\x1f\xfc", ".aac"),
        (b"\xff\xf9\x50\x80", ".aac"),
        (b"RIFF\x24\x08\x00\x00WAVEfmt ", ".wav"),
        (b"fLaC\x00\x00\x00\x22", ".flac"),
        (b"OggS\x00\x02" + bytes(22) + b"\x01vorbis", ".ogg"),
        (b"OggS\x00\x02" + bytes(22) + b"OpusHead", ".opus"),
        (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00", ".m4a"),
        (b"<html>", None),
        (b"\xff\xe0", None),
        (b"RIFF\x00\x00\x00\x00AVI ", None),
        (b"", None),
    ],
)
def test_audio_is_recognised_by_its_magic_bytes(head: bytes, ext: str | None) -> None:
    assert sniff_audio_ext(head) == ext
