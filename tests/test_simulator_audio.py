"""Simulated takes are real audio files, served by /v1/audio like the real server: content
types by extension, Range, ETag, 403/404, and all three `file` forms."""

from __future__ import annotations

import io
from urllib.parse import quote, unquote

import httpx
import pytest
import soundfile as sf
from test_simulator_support import first_file, simulator, submit, wait_final


def _download(client: httpx.Client, file: str) -> httpx.Response:
    reply = client.get(file)
    assert reply.status_code == 200, reply.text
    return reply


@pytest.mark.parametrize(
    ("requested", "suffix", "content_type", "subtype"),
    [
        ("mp3", ".mp3", "audio/mpeg", "MPEG_LAYER_III"),
        ("wav", ".wav", "audio/wav", "PCM_16"),
        ("wav32", ".wav", "audio/wav", "FLOAT"),
        ("flac", ".flac", "audio/flac", "PCM_16"),
        ("ogg", ".flac", "audio/flac", "PCM_16"),
        ("opus", ".opus", "audio/mpeg", "OPUS"),
    ],
)
def test_requested_format_gives_a_decodable_file_with_the_servers_content_type(
    requested: str, suffix: str, content_type: str, subtype: str
) -> None:
    with simulator() as (_, client):
        file = first_file(client, audio_format=requested)
        reply = _download(client, file)
    assert unquote(file).endswith(suffix)
    assert reply.headers["content-type"] == content_type
    info = sf.info(io.BytesIO(reply.content))
    assert info.subtype == subtype and info.channels == 2


def test_aac_is_served_as_audio_mpeg_under_its_own_suffix() -> None:
    with simulator() as (_, client):
        file = first_file(client, audio_format="aac")
        reply = _download(client, file)
    assert unquote(file).endswith(".aac")
    assert reply.headers["content-type"] == "audio/mpeg"
    assert sf.info(io.BytesIO(reply.content)).format == "MP3"


def test_audio_length_follows_the_requested_duration_times_the_scale() -> None:
    with simulator(audio_scale=0.02) as (_, client):
        file = first_file(client, audio_format="wav", audio_duration=60)
        data, rate = sf.read(io.BytesIO(_download(client, file).content))
    assert rate == 48000
    assert data.shape == (int(60 * 0.02 * 48000), 2)


def test_auto_duration_means_thirty_seconds_before_scaling() -> None:
    with simulator(audio_scale=0.05) as (_, client):
        file = first_file(client, audio_format="flac")
        info = sf.info(io.BytesIO(_download(client, file).content))
    assert info.duration == pytest.approx(1.5, abs=0.01)


def test_mp3_length_is_close_to_the_request() -> None:
    with simulator(audio_scale=0.02) as (_, client):
        file = first_file(client, audio_format="mp3", audio_duration=50)
        data, rate = sf.read(io.BytesIO(_download(client, file).content))
    assert len(data) / rate == pytest.approx(1.0, abs=0.1)


def test_download_headers_match_the_real_server() -> None:
    with simulator() as (_, client):
        reply = _download(client, first_file(client))
    headers = reply.headers
    assert headers["accept-ranges"] == "bytes"
    assert int(headers["content-length"]) == len(reply.content)
    assert headers["etag"].startswith('"') and len(headers["etag"]) == 34
    assert headers["last-modified"].endswith(" GMT")
    assert reply.content[:2] == b"\xff\xfb"  # an MPEG audio frame, as the real server writes


def test_range_request_gets_206_with_content_range() -> None:
    with simulator() as (_, client):
        file = first_file(client)
        full = _download(client, file).content
        head = client.get(file, headers={"Range": "bytes=0-99"})
        tail = client.get(file, headers={"Range": "bytes=100-"})
    assert head.status_code == 206 and head.content == full[:100]
    assert head.headers["content-range"] == f"bytes 0-99/{len(full)}"
    assert tail.status_code == 206 and tail.content == full[100:]


def test_range_past_the_end_is_416() -> None:
    with simulator() as (_, client):
        file = first_file(client)
        reply = client.get(file, headers={"Range": "bytes=999999999-"})
    assert reply.status_code == 416


def test_path_outside_the_audio_dir_is_403() -> None:
    with simulator() as (_, client):
        reply = client.get("/v1/audio", params={"path": "/etc/passwd"})
        sneaky = client.get(
            "/v1/audio", params={"path": f"{client.get('/_sim/stats').json()['audio_dir']}/../x"}
        )
    assert reply.status_code == 403
    assert reply.json() == {"detail": "Access denied: path outside allowed directory"}
    assert sneaky.status_code == 403


def test_missing_file_inside_the_audio_dir_is_404() -> None:
    with simulator() as (_, client):
        audio_dir = client.get("/_sim/stats").json()["audio_dir"]
        reply = client.get("/v1/audio", params={"path": f"{audio_dir}/does-not-exist.mp3"})
    assert reply.status_code == 404 and reply.json() == {"detail": "Audio file not found"}


def test_download_needs_the_header_key() -> None:
    with simulator() as (_, client):
        file = first_file(client)
        anonymous = httpx.get(f"{client.base_url}{file}")
        raw_key = httpx.get(f"{client.base_url}{file}", headers={"Authorization": "bgh_raw_key"})
    assert anonymous.status_code == 401
    assert anonymous.json() == {"detail": "Missing Authorization header"}
    assert raw_key.status_code == 200


def test_relative_file_form_is_appended_to_the_base_url() -> None:
    with simulator(file_form="relative", path_prefix="/bygheartsong/api") as (handle, client):
        file = first_file(client)
        assert handle.base_url.endswith("/bygheartsong/api")
        assert file.startswith("/v1/audio?path=")
        assert httpx.get(handle.base_url + file, headers=client.headers).status_code == 200


def test_absolute_url_file_form_points_at_the_server() -> None:
    with simulator(file_form="absolute_url", path_prefix="/api") as (handle, client):
        file = first_file(client)
        assert file.startswith(handle.base_url + "/v1/audio?path=")
        assert httpx.get(file, headers=client.headers).status_code == 200


def test_raw_path_file_form_is_a_server_path() -> None:
    with simulator(file_form="raw_path") as (_, client):
        file = first_file(client)
        assert file.startswith("/") and "?" not in file
        assert _download(client, "/v1/audio?path=" + quote(file, safe="")).content


def test_mixed_file_form_uses_every_form() -> None:
    with simulator(file_form="mixed") as (_, client):
        entry = wait_final(client, submit(client, batch_size=3))
    files = [element["file"] for element in entry["result"]]
    assert sum(f.startswith("/v1/audio?path=") for f in files) == 1
    assert sum(f.startswith("http://") for f in files) == 1
    assert sum(f.startswith("/") and "?" not in f for f in files) == 1


def test_files_are_removed_when_the_simulator_stops() -> None:
    with simulator() as (handle, client):
        first_file(client)
        audio_dir = handle.sim.audio_dir
        assert any(audio_dir.iterdir())
    assert not audio_dir.exists()
