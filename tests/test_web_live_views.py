"""The album page and a song's stems as they are being made, as the daemon serves them: the
parts the page's script reads again on each event (`/albums/<id>/fragment`,
`/songs/<id>/stems/fragment`), the stems form leading to the song's stems, and the events
that say when to read them. A real uvicorn, service and engine against the simulator;
httpx as the browser (the browser itself: tests/test_web_album_browser.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_web import HTML, Web, finished, web  # noqa: F401 - the `web` fixture

from bygheartd.jobs import Job, JobStatus, Origin
from bygheartd.service import edits
from bygheartd.simulator import RunningSimulator
from bygheartd.web.app import CSP

pytestmark = pytest.mark.anyio

ALBUM = """\
album: Slow <Tide>
artist: The Harbour
style: ambient pop
model: bygheart-melody-fast
duration: 20
tracks:
  - title: Ebb <i>One</i>
    lyrics: |
      [Verse]
      the water leaves the stones
  - title: Flood
    lyrics: |
      [Verse]
      and comes back for them
"""


def track_rows(html: str) -> list[tuple[str, str]]:
    """(job id, status) of each `article.job` row, in page order."""
    return re.findall(
        r'<article class="job[^"]*" id="job-([0-9a-z]+)"[^>]*data-status="(\w+)"', html
    )


async def all_done(web: Web, jobs: list[Job]) -> list[Job]:  # noqa: F811
    done = []
    for job in jobs:
        found = await web.service.wait(job.id, timeout=40, interval=0.05)
        assert found.status is JobStatus.DONE, found.reason
        done.append(found)
    return done


async def test_the_album_fragment_follows_the_tracks_totals_and_downloads_as_they_are_made(
    web: Web,  # noqa: F811
    simulator: RunningSimulator,
    tmp_path: Path,
) -> None:
    simulator.set_faults(latency=2)  # the page is read while the tracks are being made
    path = tmp_path / "slow-tide.album.yaml"
    path.write_text(ALBUM, encoding="utf-8")
    queued = await web.service.submit_album_file(path)
    album_id = queued.album.id
    async with web.client() as http:
        await web.login(http)
        page = await http.get(f"/albums/{album_id}", headers=HTML)
        making = await http.get(f"/albums/{album_id}/fragment", headers=HTML)
        simulator.set_faults(latency=0.05)
        await all_done(web, list(queued.tracks))
        root = web.service.config.folders.output
        with anyio.fail_after(10):
            while True:  # the album's files follow its last track
                view = await web.service.album(album_id)
                if view.status == "done" and (view.folder(root) / "album.json").is_file():
                    break
                await anyio.sleep(0.05)
        made = await http.get(f"/albums/{album_id}/fragment", headers=HTML)
        anonymous = await web.client().__aenter__()
        refused = await anonymous.get(f"/albums/{album_id}/fragment", headers=HTML)
        await anonymous.aclose()
    ids = [j.id for j in queued.tracks]
    # While making: every track in order, none done, no player, no downloads yet.
    assert page.status_code == 200 and making.status_code == 200
    for html in (page.text, making.text):
        assert [row for row, _ in track_rows(html)] == ids
        assert all(status != "done" for _, status in track_rows(html))
        assert 'data-status="making"' in html and ">making<" in html
        assert "0 of 2 tracks done" in html
        assert 'id="album-zip"' not in html and 'id="album-nothing-yet"' in html
        assert "<audio" not in html
    # The fragment is the page's body alone (what the script swaps in), escaped the same.
    body = making.text.strip()
    assert body.startswith('<div id="album-body"') and "<html" not in body
    assert "<script" not in body and making.headers["content-security-policy"] == CSP
    assert "Slow &lt;Tide&gt;" in body and "Ebb &lt;i&gt;One&lt;/i&gt;" in body
    assert "<i>One</i>" not in body
    # Once made: each track done with its keeper's player, the totals and the downloads.
    html = made.text
    assert track_rows(html) == [(j, "done") for j in ids]
    for job_id in ids:
        assert re.search(rf'<audio [^>]*src="/songs/{job_id}/takes/\d"', html)
    assert 'data-status="done"' in html and "2 of 2 tracks done" in html
    assert f'href="/albums/{album_id}/album.zip"' in html
    assert f'href="/albums/{album_id}/playlist.m3u8"' in html
    assert 'id="album-nothing-yet"' not in html
    assert re.search(r'id="album-length" data-seconds="[\d.]+">\d+:\d\d long<', html)
    assert refused.status_code == 401


async def stems_of_page(http: Any, job_id: str) -> str:
    reply = await http.get(f"/songs/{job_id}/stems/fragment", headers=HTML)
    assert reply.status_code == 200, reply.text
    return str(reply.text)


async def test_the_stems_form_leads_to_the_songs_stems_with_status_and_players(
    web: Web,  # noqa: F811
    simulator: RunningSimulator,
) -> None:
    song = await finished(web, "Bell <b>Buoy</b>")
    other = await finished(web, "Bell Buoy")  # the same slug: its stems are its own
    async with web.client() as http:
        csrf = await web.login(http)
        before = await http.get(f"/songs/{song.id}", headers=HTML)
        simulator.set_faults(latency=2)  # the stems are listed while being made
        stems = await http.post(
            f"/songs/{song.id}/stems",
            data={"tracks": ["vocals", "drums"], "take": "1", "csrf": csrf},
            headers=HTML,
        )
        landed = await http.get(stems.headers["location"].split("#")[0], headers=HTML)
        simulator.set_faults(latency=0.05)
        # Not stems of this song: its extended version (made from the same take), and the
        # stems of another song of the same name (made here as the CLI and MCP do).
        longer = await edits.extend_job(web.service, song.id, seconds=4, origin=Origin.WEB)
        elsewhere = await edits.make_stems(web.service, other.id, tracks=["bass"])
        split = [j for j in await web.service.list() if j.request.get("task_type") == "extract"]
        await all_done(web, [*split, longer.job])
        listed = await stems_of_page(http, song.id)
        whole = await http.get(f"/songs/{song.id}/fragment", headers=HTML)
        other_stems = await stems_of_page(http, other.id)
        unfinished = await web.enqueue("Not Yet")
        none_yet = await http.get(f"/songs/{unfinished.id}/stems/fragment", headers=HTML)
    # A finished song without stems has the (empty) list hidden, ready for the first.
    found = re.search(r'<section class="stems" id="stems"[^>]*>', before.text)
    assert found is not None and " hidden" in found.group(0)
    # The form leads to the song's own page, at its stems, listed while they are made.
    assert stems.status_code == 303 and stems.headers["location"] == f"/songs/{song.id}#stems"
    mine = sorted(
        (j for j in split if j.id not in {s.job.id for s in elsewhere}), key=lambda j: j.id
    )
    assert sorted(j.request["track_name"] for j in mine) == ["drums", "vocals"]
    section = landed.text[landed.text.index('id="stems"') :]
    assert re.match(rf'id="stems"[^>]*data-stem-group="{edits.stem_group(song.title)}"', section)
    assert [row for row, _ in track_rows(section)] == [j.id for j in mine]
    assert all(status != "done" for _, status in track_rows(section))
    assert "0 of 2 stems done" in section
    assert "Bell &lt;b&gt;Buoy&lt;/b&gt; (vocals)" in section and "<b>Buoy</b>" not in section
    # Made: each stem done with its player; the extended song and the other's stems are not
    # listed; the song page read again (its script's fragment) lists them too.
    assert track_rows(listed) == [(j.id, "done") for j in mine]
    for job in mine:
        assert re.search(rf'<audio [^>]*src="/songs/{job.id}/takes/1"', listed)
    assert "2 of 2 stems done" in listed and longer.job.id not in listed
    assert listed.strip().startswith('<section class="stems"') and "<html" not in listed
    assert whole.status_code == 200 and all(f'id="job-{j.id}"' in whole.text for j in mine)
    assert track_rows(other_stems) == [(s.job.id, "done") for s in elsewhere]
    assert none_yet.status_code == 404 and "not done" in none_yet.text


async def test_a_stems_events_name_its_group_for_the_song_page_to_read_its_stems_again(
    web: Web,  # noqa: F811
) -> None:
    song = await finished(web, "Quay Song")
    seen: list[dict[str, Any]] = []
    async with web.client() as http:
        await web.login(http)
        async with http.stream("GET", "/events") as stream:
            [queued] = await edits.make_stems(web.service, song.id, tracks=["vocals"])
            with anyio.fail_after(30):
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        if event["id"] == queued.job.id and "stem_group" in event:
                            seen.append(event)
                            if event["status"] == "done":
                                break
    assert seen and all(e["stem_group"] == edits.stem_group("Quay Song") for e in seen)
    assert edits.stem_group("Quay Song") == "quay-song"
