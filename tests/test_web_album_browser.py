"""The album page and the song page's edit forms in a real browser (issue 25 item 3, issue 27
items 1-2): `bygheartd run` in a child process with the simulator, Debian's chromium through
Playwright (the daemon, the browser and the helpers of tests/test_web_browser.py).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest
from _browser import browser_fixture  # noqa: F401 - the `browser` fixture
from _daemon import wait_for
from test_web_browser import (  # noqa: F401 - the `site` and `context` fixtures
    PHONE,
    WAIT_MS,
    Site,
    context,
    logged_in,
    site,
    until,
)

from bygheartd.store.store import Store

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

ALBUM = """\
album: Harbour <Nights>
artist: The Ferries
style: dreamy synth pop
model: bygheart-melody-fast
duration: 20
tracks:
  - title: First Light
    lyrics: |
      [Verse]
      the first light on the water
  - title: Second Wind
    lyrics: |
      [Verse]
      a second wind across the bay
  - title: Third Bell
    lyrics: |
      [Verse]
      the third bell rings us home
"""
TITLES = ["First Light", "Second Wind", "Third Bell"]


@pytest.fixture(scope="module")
def album(site: Site) -> dict[str, Any]:  # noqa: F811
    """The album above, dropped into the inbox and made whole: its album.json."""
    (site.config.folders.inbox / "harbour-nights.album.yaml").write_text(ALBUM, "utf-8")
    document = site.config.folders.output / "harbour-nights" / "album.json"

    def finished() -> bool:
        if not document.is_file():
            return False
        data = json.loads(document.read_text(encoding="utf-8"))
        return len(data["tracks"]) == 3 and all(t["status"] == "done" for t in data["tracks"])

    wait_for(finished, what="every track of the album", timeout=90)
    return dict(json.loads(document.read_text(encoding="utf-8")))


def now_playing(page: Page) -> dict[str, Any]:
    return dict(
        page.evaluate(
            "() => { const row = document.querySelector('#tracks article.job.now');"
            " const a = row ? row.querySelector('audio') : null;"
            " return {title: document.querySelector('#now-title').textContent,"
            " row: row ? row.dataset.jobId : null, playing: !!a && !a.paused,"
            " rows: document.querySelectorAll('#tracks article.job.now').length}; }"
        )
    )


def test_the_album_page_plays_its_tracks_in_order_showing_the_current_one(
    context: BrowserContext,  # noqa: F811
    site: Site,  # noqa: F811
    album: dict[str, Any],
) -> None:
    page = logged_in(context, site)
    assert page.locator(f"a[href='/albums/{album['album_id']}']").count() >= 1  # the library
    page.click("[data-testid=album-page-link]")
    page.wait_for_selector("#album-body")
    assert page.locator("#album-title").inner_text() == "Harbour <Nights>"  # text, not markup
    rows = page.locator("#tracks [data-testid=job-row]")
    assert [rows.nth(n).locator("[data-testid=job-link]").inner_text() for n in range(3)] == TITLES
    assert [t["job_id"] for t in album["tracks"]] == [
        rows.nth(n).get_attribute("data-job-id") for n in range(3)
    ]
    assert page.locator("#tracks audio[data-testid=player]").count() == 3  # each its keeper
    assert page.locator("#album-status").inner_text() == "done"
    assert "long" in page.locator("#album-length").inner_text()
    assert page.locator("#album-cost").inner_text().startswith("costs ")
    # Play the album: each track ends by itself and the next plays, shown as it plays.
    page.click("#play-all")
    for n, title in enumerate(TITLES):
        until(
            page,
            "t => { const r = document.querySelector('#tracks article.job.now');"
            " const a = r && r.querySelector('audio');"
            " return document.querySelector('#now-title').textContent === t && a && !a.paused; }",
            title,
        )
        state = now_playing(page)
        assert state["row"] == album["tracks"][n]["job_id"] and state["rows"] == 1
    until(page, "() => document.querySelector('#now-playing').dataset.ended === 'yes'")
    # Starting a track's own player plays on from there too.
    page.locator("#tracks audio").nth(1).evaluate("a => { a.currentTime = 0; a.play(); }")
    until(page, "t => document.querySelector('#now-title').textContent === t", TITLES[1])
    until(page, "t => document.querySelector('#now-title').textContent === t", TITLES[2])
    page.click("#play-stop")
    assert page.locator("#now-playing").is_hidden()


def test_the_album_downloads_as_a_zip_or_its_playlist_and_files(
    context: BrowserContext,  # noqa: F811
    site: Site,  # noqa: F811
    album: dict[str, Any],
    tmp_path: Path,
) -> None:
    page = logged_in(context, site)
    page.goto(f"/albums/{album['album_id']}")
    with page.expect_download() as zipped:
        page.click("#album-zip")
    assert zipped.value.suggested_filename == "harbour-nights.zip"
    archive = zipfile.ZipFile(io.BytesIO(Path(zipped.value.path()).read_bytes()))
    folder = site.config.folders.output / "harbour-nights"
    store = Store.open(site.config.state_dir)
    try:
        recorded = [f.path for t in album["tracks"] for f in store.get(t["job_id"]).files]
    finally:
        store.close()
    assert archive.namelist() == [
        *(f"harbour-nights/{p.name}" for p in recorded),
        "harbour-nights/album.json",
        "harbour-nights/harbour-nights.m3u8",
    ]
    assert all(p.parent == folder for p in recorded)
    archive.extractall(tmp_path / "unzipped")
    playlist = (tmp_path / "unzipped" / "harbour-nights" / "harbour-nights.m3u8").read_text()
    entries = [ln for ln in playlist.splitlines() if ln and not ln.startswith("#")]
    assert entries == [t["keeper"] for t in album["tracks"]]  # relative: beside it
    assert all((tmp_path / "unzipped" / "harbour-nights" / e).is_file() for e in entries)
    # The playlist and the files one by one, under the names the playlist uses.
    with page.expect_download() as listed:
        page.click("#album-playlist")
    assert listed.value.suggested_filename == "harbour-nights.m3u8"
    assert Path(listed.value.path()).read_text(encoding="utf-8") == playlist
    links = page.locator("[data-testid=album-file]")
    names = [links.nth(n).inner_text() for n in range(links.count())]
    assert names == [*(p.name for p in recorded), "album.json"]
    with page.expect_download() as first:
        links.nth(0).click()
    assert first.value.suggested_filename == recorded[0].name
    assert Path(first.value.path()).read_bytes() == recorded[0].read_bytes()


def test_extend_and_stems_from_the_song_page_queue_the_right_jobs(
    context: BrowserContext,  # noqa: F811
    site: Site,  # noqa: F811
) -> None:
    page = logged_in(context, site)
    page.goto(f"/songs/{site.finished}")
    title = page.locator("#song-title").inner_text()
    # The cost is there before anything is queued; the stems' follows the tracks ticked.
    extend_cost = page.locator("#extend-cost")
    assert "credit" in extend_cost.inner_text()
    stems_cost = page.locator("#stems-cost")
    per = int(stems_cost.get_attribute("data-per-stem") or 0)
    assert per > 0 and f"{3 * per} credits" in stems_cost.inner_text()
    page.uncheck("#stem-bass")
    assert f"{2 * per} credits for 2 stems" in stems_cost.inner_text()
    before = site.job_count()
    page.fill("#extend-seconds", "4")
    page.click("#extend-submit")
    page.wait_for_url("**/songs/*")
    new_id = urlsplit(page.url).path.rsplit("/", 1)[1]
    assert new_id != site.finished
    assert page.locator("#song-title").inner_text() == f"{title} (extended)"
    page.go_back()
    page.wait_for_selector("#stems-form")
    page.uncheck("#stem-bass")
    page.click("#stems-submit")
    page.wait_for_url("**/?q=*")
    assert parse_qs(urlsplit(page.url).query)["q"] == [f"{title} ("]
    shown = page.locator("[data-testid=job-link]")
    assert sorted(shown.nth(n).inner_text() for n in range(shown.count())) == [
        f"{title} (drums)",
        f"{title} (extended)",
        f"{title} (vocals)",
    ]
    assert site.job_count() == before + 3
    store = Store.open(site.config.state_dir)
    try:
        jobs = [j for j in store.list_jobs(None, 3)]
    finally:
        store.close()
    kinds = sorted((j.request["task_type"], j.request.get("track_name")) for j in jobs)
    assert kinds == [("extract", "drums"), ("extract", "vocals"), ("repaint", None)]
    # They run on the simulator like any song.
    for job in jobs:
        wait_for(lambda j=job.id: site.status(j) == "done", what=f"job {job.id}", timeout=60)


def test_the_album_page_and_the_edit_forms_fit_a_phone(
    browser: Browser,
    site: Site,  # noqa: F811
    album: dict[str, Any],
) -> None:
    phone = browser.new_context(base_url=site.base, viewport=PHONE, is_mobile=True)
    phone.set_default_timeout(WAIT_MS)
    try:
        page = logged_in(phone, site)
        for path in ("/", f"/albums/{album['album_id']}", f"/songs/{site.finished}"):
            page.goto(path)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (path, width)
        for selector in ("#extend-submit", "#stems-submit", "#stem-backing_vocals"):
            box = page.locator(selector).bounding_box()
            assert box is not None and box["x"] + box["width"] <= 390, (selector, box)
    finally:
        phone.close()
