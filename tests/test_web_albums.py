"""The album page, its downloads and the song page's edit forms as the daemon serves them:
a real uvicorn, service and engine against the simulator, httpx as the browser (the
browser itself: tests/test_web_album_browser.py).
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import anyio
import pytest
from test_web import HTML, Web, finished, web  # noqa: F401 - the `web` fixture

from bygheartd.jobs import JobStatus
from bygheartd.service.albums import AlbumView

pytestmark = pytest.mark.anyio

ALBUM = """\
album: Night <Drive>
artist: The "Night" Shift
style: synthwave, analog pads
model: bygheart-melody-fast
duration: 20
tracks:
  - title: Neon <b>On</b>
    lyrics: |
      [Verse]
      Neon on, the city hums
  - title: Overpass
    lyrics: |
      [Verse]
      Over the pass
  - title: Last Exit
    lyrics: |
      [Verse]
      One more mile
"""


async def made_album(web: Web, tmp_path: Path) -> AlbumView:  # noqa: F811
    """The album above, every track done and its files written; its view."""
    path = tmp_path / "night.album.yaml"
    path.write_text(ALBUM, encoding="utf-8")
    queued = await web.service.submit_album_file(path)
    for job in queued.tracks:
        done = await web.service.wait(job.id, timeout=30, interval=0.05)
        assert done.status is JobStatus.DONE, done.reason
    root = web.service.config.folders.output
    with anyio.fail_after(10):
        while True:  # the album's files follow its last track
            view = await web.service.album(queued.album.id)
            if view.status == "done" and (view.folder(root) / "album.json").is_file():
                return view
            await anyio.sleep(0.05)


async def test_the_album_page_shows_the_tracks_in_order_with_keepers_length_cost_and_status(
    web: Web,  # noqa: F811
    tmp_path: Path,
) -> None:
    view = await made_album(web, tmp_path)
    async with web.client() as http:
        await web.login(http)
        page = await http.get(f"/albums/{view.album.id}", headers=HTML)
        library = await http.get("/", headers=HTML)
    assert page.status_code == 200
    html = page.text
    # Escaped everywhere: the title and the artist are text, never markup.
    assert "Night &lt;Drive&gt;" in html and "<Drive>" not in html
    assert "Neon &lt;b&gt;On&lt;/b&gt;" in html and "<b>On</b>" not in html
    assert "The &#34;Night&#34; Shift" in html
    ids = re.findall(r'data-testid="job-row"', html)
    rows = re.findall(r'<article class="job[^"]*" id="job-([0-9a-z]+)"', html)
    assert len(ids) == 3 and rows == [j.id for j in view.tracks]  # in track order
    assert [int(n) for n in re.findall(r'data-field="track">(\d+)\.<', html)] == [1, 2, 3]
    # One player per track: its keeper's take.
    for job in view.tracks:
        keeper = job.keeper_record()
        assert keeper is not None
        players = re.findall(rf'data-job-id="{job.id}" data-take="(\d+)"', html)
        assert players == [str(keeper["take"])]
    assert 'id="album-status" data-testid="album-status">done<' in html
    assert view.seconds is not None
    minutes, seconds = divmod(round(view.seconds), 60)
    assert f"{minutes}:{seconds:02d} long" in html
    assert f"costs {view.cost} credits" in html and view.cost > 0
    assert f'href="/albums/{view.album.id}/album.zip"' in html
    assert f'href="/albums/{view.album.id}/playlist.m3u8"' in html
    # The library lists the album, and each track's row links to it.
    assert f'href="/albums/{view.album.id}" data-testid="album-page-link"' in library.text
    assert library.text.count(f'href="/albums/{view.album.id}" data-testid="album-link"') == 3


async def test_the_zip_holds_only_the_recorded_files_and_a_playlist_that_works_unzipped(
    web: Web,  # noqa: F811
    tmp_path: Path,
) -> None:
    view = await made_album(web, tmp_path)
    root = web.service.config.folders.output
    folder = view.folder(root)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the browser", encoding="utf-8")
    (folder / "planted.mp3").symlink_to(secret)  # a link planted in the album folder
    (folder / "stray.mp3").write_bytes(b"ID3 not recorded for any job")
    async with web.client() as http:
        await web.login(http)
        zipped = await http.get(f"/albums/{view.album.id}/album.zip")
        playlist = await http.get(f"/albums/{view.album.id}/playlist.m3u8")
        stray = await http.get(f"/albums/{view.album.id}/files/stray.mp3")
        planted = await http.get(f"/albums/{view.album.id}/files/planted.mp3")
        document = await http.get(f"/albums/{view.album.id}/files/album.json")
        anonymous = await web.client().__aenter__()
        refused = await anonymous.get(f"/albums/{view.album.id}/album.zip")
        await anonymous.aclose()
    assert zipped.status_code == 200 and zipped.headers["content-type"] == "application/zip"
    assert f'filename="{view.album.folder}.zip"' in zipped.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(zipped.content))
    assert archive.testzip() is None
    recorded = [f.path for job in view.tracks for f in job.files]
    names = archive.namelist()
    playlist_name = f"{view.album.folder}.m3u8"
    expected = [f"{view.album.folder}/{p.name}" for p in recorded]
    assert names == [
        *expected,
        f"{view.album.folder}/album.json",
        f"{view.album.folder}/{playlist_name}",
    ]
    for path in recorded:
        assert archive.read(f"{view.album.folder}/{path.name}") == path.read_bytes()
    assert not any("planted" in n or "stray" in n for n in names)
    # The playlist names the keepers in track order, beside it: it plays once unzipped.
    text = archive.read(f"{view.album.folder}/{playlist_name}").decode("utf-8")
    assert text == playlist.text
    entries = [line for line in text.splitlines() if line and not line.startswith("#")]
    keepers = [job.keeper_record() for job in view.tracks]
    assert entries == [Path(k["path"]).name for k in keepers if k]
    unzipped = tmp_path / "unzipped"
    archive.extractall(unzipped)
    assert all((unzipped / view.album.folder / entry).is_file() for entry in entries)
    assert "#EXTINF:" in text and 'The "Night" Shift - Neon <b>On</b>' in text
    assert playlist.headers["content-type"].startswith("audio/x-mpegurl")
    assert stray.status_code == 404 and planted.status_code == 404
    assert "not for the browser" not in planted.text
    assert document.status_code == 200 and document.json()["album_id"] == view.album.id
    assert refused.status_code == 401


async def test_the_song_page_offers_extend_and_stems_with_their_cost_first(
    web: Web,  # noqa: F811
) -> None:
    job = await finished(web, "Harbour")
    async with web.client() as http:
        csrf = await web.login(http)
        page = await http.get(f"/songs/{job.id}", headers=HTML)
        no_token = await http.post(f"/songs/{job.id}/extend", data={"seconds": "4"}, headers=HTML)
        extended = await http.post(
            f"/songs/{job.id}/extend",
            data={"seconds": "4", "where": "before", "take": "1", "csrf": csrf},
            headers=HTML,
        )
        stems = await http.post(
            f"/songs/{job.id}/stems",
            data={"tracks": ["vocals", "drums"], "take": "1", "csrf": csrf},
            headers=HTML,
        )
        bad = await http.post(
            f"/songs/{job.id}/extend",
            data={"seconds": "9000", "csrf": csrf},
            headers=HTML,
        )
        nothing = await http.post(
            f"/songs/{job.id}/stems", data={"take": "1", "csrf": csrf}, headers=HTML
        )
    html = page.text
    assert 'id="extend-form"' in html and 'id="stems-form"' in html
    for form in ("extend-form", "stems-form"):  # each carries the CSRF token
        found = re.search(rf'id="{form}".*?</form>', html, re.S)
        assert found is not None and 'name="csrf" value="' in found.group(0)
    extend_cost = re.search(r'id="extend-cost"[^>]*data-credits="(\d+)"[^>]*>Cost: ([^<]*)<', html)
    stems_cost = re.search(r'id="stems-cost"[^>]*data-per-stem="(\d+)"[^>]*>Cost: ([^<]*)<', html)
    assert extend_cost is not None and stems_cost is not None
    assert no_token.status_code == 403
    assert extended.status_code == 303
    new_id = extended.headers["location"].removeprefix("/songs/")
    longer = await web.service.get(new_id)
    assert longer.title == "Harbour (extended)" and longer.request["task_type"] == "repaint"
    assert float(longer.request["repainting_start"]) < 0  # before its start
    # The cost said before submitting is what the new job costs (the hosted simulator).
    assert longer.credits > 0 and int(extend_cost.group(1)) == longer.credits
    assert extend_cost.group(2).startswith(f"{longer.credits} credit")
    assert stems.status_code == 303 and stems.headers["location"] == f"/songs/{job.id}#stems"
    split = [j for j in await web.service.list() if j.request.get("task_type") == "extract"]
    assert sorted(j.request["track_name"] for j in split) == ["drums", "vocals"]
    assert sorted(j.title for j in split) == ["Harbour (drums)", "Harbour (vocals)"]
    per_stem = int(stems_cost.group(1))
    assert [j.credits for j in split] == [per_stem, per_stem]  # the three ticked: 3 of them
    assert stems_cost.group(2).startswith(f"{3 * per_stem} credits")
    assert bad.status_code == 409 and "give 0.5 to 600" in bad.text
    assert nothing.status_code == 409 and "tick at least one track" in nothing.text
    assert len(await web.service.list()) == 4  # the song, the extended one, two stems: no more
