"""Albums end to end (issue 26): an album file dropped into the inbox with its `NAME.album/`
folder of song files becomes a job per track and lands as one folder (numbered, tagged
tracks, a playlist of the keepers, album.json); a bad album is refused whole with every
problem; the CLI says the whole cost before anything is spent; MCP `make_album`."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from _daemon import Daemon, cli, wait_for
from conftest import MakeConfig
from mcp import Client
from mutagen.id3 import ID3

from bygheartd import catalog
from bygheartd.config import Config
from bygheartd.engine.lock import EngineRole
from bygheartd.errors import SongFileError
from bygheartd.mcp.server import build_server
from bygheartd.runtime import Runtime
from bygheartd.simulator import RunningSimulator
from bygheartd.songs.albums import parse_album_file

ALBUM = """\
album: Night Drive
artist: The Night Shift
style: synthwave, analog pads, gated drums
duration: 20
tracks:
  - title: Neon On
    style: female vocal
    lyrics: |
      [Verse]
      Neon on, the city hums
  - title: Overpass
    description: an instrumental interlude with arpeggios
  - file: last-exit.txt
"""
LAST_EXIT = "---\ntitle: Last Exit\nbpm: 110\n---\n[Verse]\nOne more mile\n"

BAD_ALBUM = """\
album: Broken
bpm: 900
tempo: 120
tracks:
  - title: One
    lyrics: la
    key: Q minor
  - title: Two
    lyrics: la
    description: also a description
  - file: missing.txt
  - file: bad-track.txt
"""
BAD_TRACK = "---\nduration: 9999\n---\nla\n"


def write_album(folder: Path, name: str = "night-drive") -> Path:
    songs = folder / f"{name}.album"
    songs.mkdir(parents=True, exist_ok=True)
    (songs / "last-exit.txt").write_text(LAST_EXIT, encoding="utf-8")
    album = folder / f"{name}.album.yaml"
    album.write_text(ALBUM, encoding="utf-8")
    return album


def config_path(config: Config) -> Path:
    assert config.source_path is not None
    return config.source_path


# -- the album file ----------------------------------------------------------------------


def test_an_album_file_gives_each_track_the_album_sound_and_defaults(tmp_path: Path) -> None:
    album = parse_album_file(write_album(tmp_path))
    assert (album.title, album.artist) == ("Night Drive", "The Night Shift")
    titles = [t.title for t in album.tracks]
    assert titles == ["Neon On", "Overpass", "Last Exit"]
    first, second, third = (t.request for t in album.tracks)
    assert first.style == "synthwave, analog pads, gated drums, female vocal"
    assert second.style == "synthwave, analog pads, gated drums" and second.simple_mode
    assert third.bpm == 110 and third.lyrics.startswith("[Verse]")
    assert {r.duration for r in (first, second, third)} == {20.0}
    assert album.tracks[2].file == (tmp_path / "night-drive.album" / "last-exit.txt").resolve()
    assert album.credit_cost("bygheart") == 3 * catalog.credit_cost(None, 1, "bygheart")


def test_a_toml_album_with_tracks_as_tables_reads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "night.album.toml"
    path.write_text(
        'album = "Night"\nstyle = "synthwave"\n\n[[tracks]]\ntitle = "One"\nlyrics = "la"\n\n'
        '[[tracks]]\ntitle = "Two"\nbpm = 999\nlyrics = "la"\n',
        encoding="utf-8",
    )
    with pytest.raises(SongFileError) as refused:
        parse_album_file(path)
    assert refused.value.line == 10 and refused.value.key == "bpm"
    assert "track 2: bpm 999" in str(refused.value)


def test_a_bad_album_is_refused_whole_with_every_problem_located(tmp_path: Path) -> None:
    path = tmp_path / "broken.album.yaml"
    path.write_text(BAD_ALBUM, encoding="utf-8")
    (tmp_path / "bad-track.txt").write_text(BAD_TRACK, encoding="utf-8")
    with pytest.raises(SongFileError) as refused:
        parse_album_file(path)
    problems = [(p.line, p.key, p.reason) for p in refused.value.problems]
    assert len(problems) == 6, str(refused.value)
    assert problems[0][:2] == (2, "bpm") and "900" in problems[0][2]
    assert problems[1][:2] == (3, "tempo")
    assert problems[2][:2] == (7, "key") and problems[2][2].startswith("track 1: ")
    assert problems[3][:2] == (10, "description") and problems[3][2].startswith("track 2: ")
    assert problems[4][:2] == (11, "file") and "missing.txt" in problems[4][2]
    assert problems[5][1] == "duration" and "track 4 (bad-track.txt, line 2)" in problems[5][2]
    assert all(p.hint for p in refused.value.problems)


def test_album_file_tracks_stay_inside_the_album_folder(tmp_path: Path) -> None:
    path = tmp_path / "a.album.yaml"
    path.write_text("album: A\ntracks:\n  - file: ../elsewhere.txt\n", encoding="utf-8")
    with pytest.raises(SongFileError, match="outside the album's folder"):
        parse_album_file(path)


# -- the drop folder, end to end ------------------------------------------------------------


@pytest.fixture
def album_daemon(
    make_config: MakeConfig, simulator: RunningSimulator, tmp_path: Path
) -> Iterator[tuple[Daemon, Config]]:
    config = make_config(
        simulator, plugins={"enabled": ["tags", "loudnorm"]}, watch={"settle_seconds": 0.2}
    )
    env = {**os.environ, "BYGHEARTD_LOAD_PLUGINS": "tags,loudnorm"}
    daemon = Daemon(config_path(config), tmp_path / "daemon.log", env).start()
    try:
        yield daemon, config
    finally:
        daemon.stop()


def test_a_dropped_album_lands_as_one_folder_with_playlist_album_json_and_tags(
    album_daemon: tuple[Daemon, Config],
) -> None:
    daemon, config = album_daemon
    folders = config.folders
    # The folder of song files first, as a person copies them: never taken alone.
    songs = folders.inbox / "night-drive.album"
    songs.mkdir()
    (songs / "last-exit.txt").write_text(LAST_EXIT, encoding="utf-8")
    (folders.inbox / "night-drive.album.yaml").write_text(ALBUM, encoding="utf-8")

    album_dir = folders.output / "night-drive"
    document = album_dir / "album.json"

    def finished() -> bool:
        if not document.exists():
            return False
        data = json.loads(document.read_text(encoding="utf-8"))
        # The album gain comes once every track is done (on_album_complete): wait for it.
        return all(t["status"] == "done" for t in data["tracks"]) and "plugins" in data

    wait_for(finished, what="every track of the album", timeout=60, proc=daemon)
    data = json.loads(document.read_text(encoding="utf-8"))
    assert (data["title"], data["artist"], data["track_count"]) == (
        "Night Drive",
        "The Night Shift",
        3,
    )
    keepers = [t["keeper"] for t in data["tracks"]]
    assert keepers == ["01-neon-on.mp3", "02-overpass.mp3", "03-last-exit.mp3"]
    assert all(t["job_id"] and t["seconds"] for t in data["tracks"])
    assert data["seconds"] == pytest.approx(sum(t["seconds"] for t in data["tracks"]))
    for name in keepers:
        assert (album_dir / name).stat().st_size > 0
        assert (album_dir / name.replace(".mp3", ".json")).exists()  # each track's sidecar

    playlist = (album_dir / "night-drive.m3u8").read_text(encoding="utf-8").splitlines()
    assert playlist[0] == "#EXTM3U" and playlist[1] == "#PLAYLIST:Night Drive"
    assert [line for line in playlist if not line.startswith("#")] == keepers
    assert playlist[2].startswith("#EXTINF:") and playlist[2].endswith(",The Night Shift - Neon On")

    # One album gain (loudnorm's album mode), and every track's records follow the disk.
    gain = data["plugins"]["loudnorm"]
    assert set(gain["tracks"]) == set(keepers) and isinstance(gain["gain_db"], float)
    for track in data["tracks"]:
        sidecar = json.loads((album_dir / f"{Path(track['keeper']).stem}.json").read_text())
        entry = sidecar["files"][0]
        body = (album_dir / entry["path"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(body).hexdigest()
        assert sidecar["plugins"]["loudnorm"][track["keeper"]]["album"]

    tags = ID3(album_dir / "02-overpass.mp3")
    assert str(tags["TALB"]) == "Night Drive"
    assert str(tags["TPE2"]) == "The Night Shift"
    assert str(tags["TRCK"]) == "2/3"
    assert str(tags["TIT2"]) == "Overpass"

    # The album file and its folder were archived together; nothing is left in the inbox.
    assert (folders.archive / "night-drive.album.yaml").read_text(encoding="utf-8") == ALBUM
    assert (folders.archive / "night-drive.album" / "last-exit.txt").exists()
    assert sorted(os.listdir(folders.inbox)) == [".bygheartd.lock"]

    # Seen as an album: list, show (by title), show --json, and the job records.
    listed = cli(config_path(config), "list")
    assert "albums" in listed.stdout and "Night Drive (The Night Shift)  3/3 done" in listed.stdout
    shown = cli(config_path(config), "show", "night drive")
    assert shown.returncode == 0, shown.stderr
    assert "status: done (3 of 3 tracks done" in shown.stdout
    assert " 3. Last Exit " in shown.stdout and "03-last-exit.mp3" in shown.stdout
    record = json.loads(cli(config_path(config), "show", data["album_id"], "--json").stdout)
    assert [t["track"] for t in record["track_jobs"]] == [1, 2, 3]
    assert record["playlist"] == str(album_dir / "night-drive.m3u8")
    jobs = json.loads(cli(config_path(config), "list", "--json").stdout)
    assert sorted((j["track"], j["album"]) for j in jobs) == [
        (n, data["album_id"]) for n in (1, 2, 3)
    ]

    # `follow` of an album follows its tracks and ends when they have all ended.
    follow = cli(config_path(config), "follow", "night drive")
    assert follow.returncode == 0 and "Last Exit" in follow.stdout


def test_a_bad_album_dropped_is_refused_whole_and_nothing_is_queued(
    album_daemon: tuple[Daemon, Config],
) -> None:
    daemon, config = album_daemon
    folders = config.folders
    songs = folders.inbox / "broken.album"
    songs.mkdir()
    (songs / "bad-track.txt").write_text(BAD_TRACK, encoding="utf-8")
    (folders.inbox / "broken.album.yaml").write_text(BAD_ALBUM, encoding="utf-8")
    note = folders.failed / "broken.album.yaml.error.txt"
    wait_for(note.exists, what="the album's error note", timeout=30, proc=daemon)
    text = note.read_text(encoding="utf-8")
    assert "What is wrong: 6 problems" in text
    for expected in (
        "Where: line 2, key 'bpm'",
        "track 1: key 'Q minor'",
        "track 2: description and lyrics",
        "track 3: file 'missing.txt'",
        "track 4 (broken.album/bad-track.txt, line 2): duration 9999",
    ):
        assert expected in text, text
    assert "Nothing was spent" in text
    assert json.loads(cli(config_path(config), "list", "--json").stdout) == []
    # Its song files are the album's: left for the fixed album, never made alone.
    assert (songs / "bad-track.txt").exists()


# -- the CLI and MCP ------------------------------------------------------------------------


def test_submit_of_an_album_says_the_whole_cost_before_anything_is_spent(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(None)
    path = write_album(tmp_path / "songs")
    each = catalog.credit_cost(None, 1, "bygheart")
    dry = cli(config_path(config), "submit", "--dry-run", str(path))
    assert dry.returncode == 0, dry.stderr
    assert f"album 'Night Drive', 3 tracks, {3 * each} credits" in dry.stdout
    done = cli(config_path(config), "submit", str(path))
    assert done.returncode == 0, done.stderr
    first_line = done.stdout.splitlines()[0]
    assert first_line.startswith(f"album 'Night Drive': 3 tracks, {3 * each} credits, ")
    assert f"{30 - 3 * each} left today" in first_line
    jobs = json.loads(cli(config_path(config), "list", "--json").stdout)
    assert sorted(j["track"] for j in jobs) == [1, 2, 3]
    assert {j["status"] for j in jobs} == {"queued"}  # no daemon: nothing spent yet


def test_a_bad_album_submitted_from_the_cli_queues_nothing(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(None)
    path = tmp_path / "broken.album.yaml"
    path.write_text(BAD_ALBUM, encoding="utf-8")
    (tmp_path / "bad-track.txt").write_text(BAD_TRACK, encoding="utf-8")
    done = cli(config_path(config), "submit", str(path))
    assert done.returncode == 1
    assert "6 problems" in done.stderr and "track 4 (bad-track.txt, line 2)" in done.stderr
    assert json.loads(cli(config_path(config), "list", "--json").stdout) == []


@pytest.mark.anyio
async def test_mcp_make_album_queues_every_track_and_says_the_cost(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(None)
    async with (
        Runtime(config, role=EngineRole.MCP, engine=False) as runtime,
        Client(build_server(runtime.service)) as client,
    ):
        inline = ALBUM.split("  - file:")[0]
        result = await client.call_tool("make_album", {"album": inline})
        assert not result.is_error, result.content
        data: dict[str, Any] = result.structured_content or {}
        each = catalog.credit_cost(None, 1, "bygheart")
        assert data["title"] == "Night Drive" and data["cost"] == 2 * each
        assert [t["track"] for t in data["tracks"]] == [1, 2]
        assert data["tracks"][0]["album"] == data["album"]
        assert data["credits_left_today"] == 30 - 2 * each
        song = await client.call_tool("get_song", {"job_id": data["tracks"][1]["id"]})
        record = song.structured_content or {}
        assert (record["album_title"], record["track"]) == ("Night Drive", 2)

        # From a file in the drafts folder, with its song files beside it.
        write_album(config.folders.drafts)
        from_file = await client.call_tool("make_album", {"album_file": "night-drive.album.yaml"})
        assert not from_file.is_error, from_file.content
        assert len((from_file.structured_content or {})["tracks"]) == 3

        refused = await client.call_tool("make_album", {"album": BAD_ALBUM})
        assert refused.is_error
        text = refused.content[0].text  # type: ignore[union-attr]
        assert "bpm 900" in text and "track 2: description and lyrics" in text
        listed = await client.call_tool("list_songs", {"limit": 50})
        assert len((listed.structured_content or {})["jobs"]) == 5  # the bad one added none


def test_the_example_album_is_valid(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    album = parse_album_file(repo / "examples" / "albums" / "night-drive.album.yaml")
    assert len(album.tracks) == 3 and album.tracks[2].file is not None


@pytest.mark.anyio
async def test_the_playlist_and_album_json_follow_a_keeper_a_person_chooses(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(simulator)
    path = tmp_path / "two.album.yaml"
    path.write_text(
        "album: Two Takes\nduration: 10\ntracks:\n  - title: First\n    lyrics: la\n"
        "  - title: Second\n    lyrics: la la\n    takes: 2\n",
        encoding="utf-8",
    )
    async with Runtime(config, role=EngineRole.MCP, engine=True) as runtime:
        service = runtime.service
        view = await service.submit_album_file(path)
        for job in view.tracks:
            await service.wait(job.id, timeout=30)
        view = await service.album(view.album.id)
        assert view.status == "done" and view.done == 2
        playlist = view.playlist(config.folders.output)
        document = playlist.parent / "album.json"

        def written() -> bool:  # the album's files follow just after the last `done`
            if not document.exists():
                return False
            tracks = json.loads(document.read_text(encoding="utf-8"))["tracks"]
            return all(t["status"] == "done" for t in tracks)

        with anyio.fail_after(30):
            while not written():
                await anyio.sleep(0.02)
        assert playlist.read_text(encoding="utf-8").splitlines()[-1] == "02-second.mp3"
        await service.keep(view.tracks[1].id, 2)
        assert playlist.read_text(encoding="utf-8").splitlines()[-1] == "02-second.take2.mp3"
        data = json.loads(document.read_text(encoding="utf-8"))
        assert data["tracks"][1]["keeper"] == "02-second.take2.mp3"
        # What the album web page reads: the album, its tracks in order, keepers, length, cost.
        again = await service.album("two takes")
        assert [k["take"] for k in again.keepers() if k] == [1, 2]
        assert again.seconds and again.cost == sum(j.credits for j in again.tracks)
        assert [v.album.id for v in await service.albums()] == [view.album.id]


def test_an_album_of_more_than_50_tracks_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.album.yaml"
    tracks = "".join(f"  - title: T{n}\n    lyrics: la\n" for n in range(51))
    path.write_text(f"album: Long\ntracks:\n{tracks}", encoding="utf-8")
    with pytest.raises(SongFileError, match="51 tracks is more than the 50"):
        parse_album_file(path)


@pytest.mark.anyio
async def test_the_intake_takes_an_album_once_and_refuses_a_track_beside_it(
    make_config: MakeConfig,
) -> None:
    from bygheartd.runtime import open_service
    from bygheartd.watch.intake import Intake

    config = make_config(None)
    inbox = config.folders.inbox
    service = open_service(config)
    try:
        intake = Intake(config, service)
        album = write_album(inbox)
        song = inbox / "night-drive.album" / "last-exit.txt"
        assert (await intake.process(song)).kind == "ignored"  # never taken alone
        taken = await intake.process(album)
        assert taken.kind == "accepted" and taken.job_id is not None
        view = await service.album((await service.get(taken.job_id)).album or "")
        assert [j.track for j in view.tracks] == [1, 2, 3]
        # The `file:` track's song file is found in the archive from now on.
        archived = config.folders.archive / "night-drive.album" / "last-exit.txt"
        assert await service.source_path(view.tracks[2].id) == str(archived)
        # The same album again (a sync tool re-delivering it) is not paid twice.
        again = write_album(inbox)
        skipped = await intake.process(again)
        assert skipped.kind == "rejected" and "exactly the same content" in skipped.message
        assert len(await service.albums()) == 1
        # A `file:` track beside the album file would also be made alone: refused.
        (inbox / "beside.txt").write_text(LAST_EXIT, encoding="utf-8")
        beside = inbox / "beside.album.yaml"
        beside.write_text("album: Beside\ntracks:\n  - file: beside.txt\n", encoding="utf-8")
        refused = await intake.process(beside)
        assert refused.kind == "rejected" and "beside.album/" in (
            config.folders.failed / "beside.album.yaml.error.txt"
        ).read_text(encoding="utf-8")
    finally:
        await service.close()
