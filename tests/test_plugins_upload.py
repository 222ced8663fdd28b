"""First-party `upload`: a local library by path template (never overwriting) and real S3 (moto)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plugin_fixtures.factories import first_party, make_job, write_audio

from bygheartd.hooks.host import PluginHost, PluginSettings

pytestmark = pytest.mark.anyio

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def upload_host(**table: Any) -> PluginHost:
    host = PluginHost.load(
        PluginSettings(enabled=["upload"], tables={"upload": table}, load_env=None)
    )
    assert host.active == ["upload"]
    return host


@pytest.fixture
def song(tmp_path: Path) -> Path:
    (tmp_path / "output").mkdir()
    return write_audio(tmp_path / "output" / "midnight-god-mode.mp3", seconds=0.5)


async def test_the_library_path_uses_the_artist_and_album_the_tags_plugin_wrote(
    tmp_path: Path, song: Path
) -> None:
    from plugin_fixtures.factories import first_party

    library = tmp_path / "library"
    host = first_party(
        ["tags", "upload"],
        tags={"artist": "Night Choir", "album": "Harbour Lights"},
        upload={"library": str(library)},
    )
    outcome = await host.on_complete(make_job(), [song])
    assert outcome.failures == []
    [copied] = list(library.rglob("*.mp3"))
    assert copied.relative_to(library).parts[:2] == ("Night Choir", "Harbour Lights")


async def test_files_are_copied_by_the_default_template(tmp_path: Path, song: Path) -> None:
    library = tmp_path / "library"
    outcome = await upload_host(library=str(library)).on_complete(make_job(), [song])
    assert outcome.failures == []
    copy = library / "Bygheart" / "bygheartd" / "Midnight God Mode.mp3"
    assert copy.read_bytes() == song.read_bytes()
    assert outcome.sidecar["upload"] == {"library": [str(copy)]}
    assert outcome.added_files == []
    assert sorted(p.name for p in copy.parent.iterdir()) == ["Midnight God Mode.mp3"]


async def test_an_existing_file_is_never_overwritten(tmp_path: Path, song: Path) -> None:
    library = tmp_path / "library"
    taken = library / "2025" / "midnight-god-mode.mp3"
    taken.parent.mkdir(parents=True)
    taken.write_bytes(b"someone else's song")
    host = upload_host(library=str(library), template="{year}/{slug}{ext}")
    await host.on_complete(make_job(), [song])
    await host.on_complete(make_job(), [song])
    assert taken.read_bytes() == b"someone else's song"
    assert sorted(p.name for p in taken.parent.iterdir()) == [
        "midnight-god-mode-2.mp3",
        "midnight-god-mode-3.mp3",
        "midnight-god-mode.mp3",
    ]


async def test_template_fields_cannot_escape_the_library(tmp_path: Path, song: Path) -> None:
    library = tmp_path / "library"
    job = make_job(title="../../etc/passwd: a/b", model="m")
    host = upload_host(library=str(library), template="{model}/{date}/{take}-{title}{ext}")
    outcome = await host.on_complete(job, [song])
    [copied] = outcome.sidecar["upload"]["library"]
    assert Path(copied).parent == library / "m" / "2025-05-17"
    assert Path(copied).name == "1-_.._etc_passwd_ a_b.mp3"  # one path component


async def test_an_unknown_template_field_is_a_clear_failure(tmp_path: Path, song: Path) -> None:
    host = upload_host(library=str(tmp_path / "lib"), template="{artsit}/{title}{ext}")
    [failure] = (await host.on_complete(make_job(), [song])).failures
    assert "template uses unknown field(s) ['artsit']" in failure.error


async def test_upload_gives_library_copies_the_permissions_of_the_song(tmp_path: Path) -> None:
    song = write_audio(tmp_path / "song.mp3", seconds=0.5)
    song.chmod(0o644)
    library = tmp_path / "library"
    outcome = await first_party(["upload"], upload={"library": str(library)}).on_complete(
        make_job(), [song]
    )
    assert outcome.failures == []
    [copy] = outcome.sidecar["upload"]["library"]
    assert stat.S_IMODE(Path(copy).stat().st_mode) == 0o644


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


async def test_files_are_uploaded_to_s3_with_secret_indirection(
    tmp_path: Path, song: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="songs")
    s3.put_object(Bucket="songs", Key="music/Bygheart/bygheartd/Midnight God Mode.mp3", Body=b"x")
    monkeypatch.setenv("UPLOAD_SECRET", "testing")
    (tmp_path / "access").write_text("testing\n")
    table = {
        "bucket": "songs",
        "prefix": "music/",
        "endpoint_url": s3_endpoint,
        "region": "us-east-1",
        "access_key": {"file": str(tmp_path / "access")},
        "secret_key": {"env": "UPLOAD_SECRET"},
    }
    outcome = await upload_host(**table).on_complete(make_job(), [song])
    assert outcome.failures == []
    key = "music/Bygheart/bygheartd/Midnight God Mode-2.mp3"
    assert outcome.sidecar["upload"] == {"s3": [f"s3://songs/{key}"]}
    assert s3.get_object(Bucket="songs", Key=key)["Body"].read() == song.read_bytes()
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
