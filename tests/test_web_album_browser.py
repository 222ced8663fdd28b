"""The album page and the song page's edit forms in a real browser (issue 25 item 3, issue 27
items 1-2): `bygheartd run` in a child process with the simulator, Debian's chromium through
Playwright (the daemon, the browser and the helpers of tests/test_web_browser.py).
"""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from _browser import browser_fixture  # noqa: F401 - the `browser` fixture
from _daemon import wait_for
from test_web_browser import (  # noqa: F401 - the `site` and `context` fixtures
    PHONE,
    WAIT_MS,
    Site,
    audio_duration,
    context,
    logged_in,
    mark,
    not_reloaded,
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
    # The song's own page, at its stems: the stems only (not the extended song).
    page.wait_for_url(f"**/songs/{site.finished}#stems")
    shown = page.locator("#stems [data-testid=job-link]")
    assert sorted(shown.nth(n).inner_text() for n in range(shown.count())) == [
        f"{title} (drums)",
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


# --- following the making live ----------------------------------------------------------

LIVE_ALBUM = """\
album: Low <Water>
artist: The Ferries
style: dreamy synth pop
model: bygheart-melody-fast
duration: 20
tracks:
  - title: Slack Tide
    lyrics: |
      [Verse]
      the boats lie on their sides
  - title: Mud <Flats>
    lyrics: |
      [Verse]
      the gulls walk where we swam
"""

# A bar shown in each row (per job id) and the highest figure it reached, kept by the page
# itself every 50 ms: proof the bars moved without anything read again by the test.
WATCH_BARS = (
    "sel => { window.__bars = {}; setInterval(() => {"
    " document.querySelectorAll(sel + ' article.job').forEach((row) => {"
    " const bar = row.querySelector('progress');"
    " if (bar) window.__bars[row.dataset.jobId] = Math.max(window.__bars[row.dataset.jobId] || 0,"
    " Number(bar.value)); }); }, 50); }"
)


def fits_a_phone(browser: Browser, site: Site, path: str) -> None:  # noqa: F811
    """`path` has no sideways scroll at 390 px."""
    phone = browser.new_context(base_url=site.base, viewport=PHONE, is_mobile=True)
    phone.set_default_timeout(WAIT_MS)
    try:
        page = logged_in(phone, site)
        page.goto(path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (path, width)
    finally:
        phone.close()


def test_the_album_page_shows_each_track_turning_done_and_playable_without_a_reload(
    browser: Browser,
    context: BrowserContext,  # noqa: F811
    site: Site,  # noqa: F811
) -> None:
    path = site.config.folders.drafts / "low-water.album.yaml"
    path.write_text(LIVE_ALBUM, encoding="utf-8")
    site.sim.set_faults(latency=4)  # the page opens while the tracks are being made
    try:
        done = subprocess.run(
            [*site.command, "submit", "--json", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            env=site.env,
        )
        assert done.returncode == 0, done.stderr
        tracks = [str(r["id"]) for r in json.loads(done.stdout)]
        album_id = json.loads(done.stdout)[0]["album"]
        page = logged_in(context, site)
        page.goto(f"/albums/{album_id}")
        mark(page)
        page.evaluate(WATCH_BARS, "#tracks")
        # Nothing made yet: no player, no downloads, the album still being made.
        assert page.locator("#album-status").inner_text() == "making"
        assert page.locator("#tracks audio").count() == 0
        assert page.locator("#album-nothing-yet").is_visible()
        assert page.locator("#play-all").is_hidden()
        fits_a_phone(browser, site, f"/albums/{album_id}")  # with its bars and badges
        # Each track turns done and playable on the page as it is, then the totals.
        for job_id in tracks:
            page.wait_for_selector(f"#job-{job_id}[data-status=done] audio[data-testid=player]")
        until(page, "() => document.querySelector('#album-status').textContent === 'done'")
    finally:
        site.sim.set_faults(latency=0.3)
    assert not_reloaded(page)
    assert page.locator("#album-done").inner_text() == "2 of 2 tracks done"
    assert "long" in page.locator("#album-length").inner_text()
    assert (
        page.locator("#album-zip").is_visible() and page.locator("#album-nothing-yet").count() == 0
    )
    rows = page.locator("#tracks [data-testid=job-row]")
    assert [rows.nth(n).get_attribute("data-job-id") for n in range(2)] == tracks  # in order
    assert rows.nth(1).locator("[data-testid=job-link]").inner_text() == "Mud <Flats>"
    assert audio_duration(page, f"#job-{tracks[0]} audio[data-testid=player]") > 0
    bars = page.evaluate("window.__bars")
    assert any(value > 0 for value in bars.values()), bars  # the bars moved meanwhile
    # The tracks made meanwhile play on as the album, from the first.
    assert page.locator("#play-all").is_visible()
    page.click("#play-all")
    until(page, "t => document.querySelector('#now-title').textContent === t", "Slack Tide")
    page.click("#play-stop")
    fits_a_phone(browser, site, f"/albums/{album_id}")


def test_the_stems_form_lands_on_the_songs_stems_which_turn_playable_without_a_reload(
    browser: Browser,
    context: BrowserContext,  # noqa: F811
    site: Site,  # noqa: F811
) -> None:
    song = site.submit("Tide <Bells>", "the bells ring under water")
    wait_for(lambda: site.status(song) == "done", what="the song to split", timeout=60)
    page = logged_in(context, site)
    page.goto(f"/songs/{song}")
    assert page.locator("#stems").is_hidden()  # none yet
    page.uncheck("#stem-bass")
    site.sim.set_faults(latency=4)  # the stems are listed while being made
    try:
        page.click("#stems-submit")
        page.wait_for_url(f"**/songs/{song}#stems")
        mark(page)
        page.evaluate(WATCH_BARS, "#stems")
        assert page.locator("#stems").is_visible()
        shown = page.locator("#stems [data-testid=job-link]")
        assert sorted(shown.nth(n).inner_text() for n in range(shown.count())) == [
            "Tide <Bells> (drums)",
            "Tide <Bells> (vocals)",
        ]
        assert page.locator("#stems-count").inner_text() == "0 of 2 stems done"
        assert page.locator("#stems audio").count() == 0
        stems = [
            str(page.locator("#stems article.job").nth(n).get_attribute("data-job-id"))
            for n in range(2)
        ]
        fits_a_phone(browser, site, f"/songs/{song}")  # with the stems being made
        for job_id in stems:
            page.wait_for_selector(f"#stems #job-{job_id}[data-status=done] audio")
    finally:
        site.sim.set_faults(latency=0.3)
    until(page, "() => document.querySelector('#stems-count').textContent === '2 of 2 stems done'")
    assert not_reloaded(page)
    assert audio_duration(page, f"#job-{stems[0]} audio[data-testid=player]") > 0
    assert any(value > 0 for value in page.evaluate("window.__bars").values())
    assert page.locator("#deck-audio").count() == 1  # the song's own deck is still there
    fits_a_phone(browser, site, f"/songs/{song}")
