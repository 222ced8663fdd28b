"""The library page in a real browser: `bygheartd run` in a child process with the web on,
the real simulator, and Debian's chromium driven by Playwright.

One daemon and one browser serve the whole module (each test has its own browser context,
so its own cookies); intervals are short through the config, and every wait is for a
condition on the page, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from _browser import browser_fixture  # noqa: F401 - the `browser` fixture
from _daemon import Daemon, wait_for
from conftest import TEST_KEY, write_config

from bygheartd.config import Config, load_config
from bygheartd.runtime import open_service
from bygheartd.simulator import RunningSimulator, SimulatorSettings, run_in_thread
from bygheartd.store.store import Store

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

WAIT_MS = 30_000  # the longest any condition may take before the test fails
FOREIGN_HOST = "rebind.test"  # chromium resolves it to 127.0.0.1 (see _browser.py)

SONG = """---
title: {title}
style: dreamy synth pop, female vocal
model: bygheart-melody-fast
duration: 20
---
[Verse]
{line}
[Chorus]
we light the harbour up tonight
"""


def new_login_code(config: Config) -> str:
    """A one-time login code for the library page, made through the service."""

    async def make() -> str:
        service = open_service(config)
        try:
            return await service.logins.new_code()
        finally:
            await service.close()

    # Its own thread: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, make()).result()


@dataclass
class Site:
    """The daemon serving the library, its simulator, and a finished song to look at."""

    base: str
    config_path: Path
    config: Config
    sim: RunningSimulator
    env: dict[str, str]
    finished: str  # id of a song that is done

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "bygheartd", "--config", str(self.config_path)]

    def login_link(self) -> str:
        """What `bygheartd web --no-open` prints: a one-time login link, alone on stdout."""
        done = subprocess.run(
            [*self.command, "web", "--no-open"],
            capture_output=True,
            text=True,
            timeout=30,
            env=self.env,
        )
        assert done.returncode == 0, done.stderr
        [link] = done.stdout.splitlines()
        assert link.startswith(f"{self.base}/login?code="), link
        return link

    def quick_login_link(self) -> str:
        """The same link, made in this process (as `bygheartd web` does): no CLI start-up."""
        return f"{self.base}/login?code={new_login_code(self.config)}"

    def job_count(self) -> int:
        store = Store.open(self.config.state_dir)
        try:
            return sum(store.counts().values())
        finally:
            store.close()

    def status(self, job_id: str) -> str:
        store = Store.open(self.config.state_dir)
        try:
            return store.get(job_id).status.value
        finally:
            store.close()

    def submit(self, title: str, line: str) -> str:
        """A song file submitted with the CLI, as a user would; returns its job id."""
        song = self.config.folders.drafts / f"{title.lower().replace(' ', '-')}.txt"
        song.write_text(SONG.format(title=title, line=line), encoding="utf-8")
        done = subprocess.run(
            [*self.command, "submit", "--json", str(song)],
            capture_output=True,
            text=True,
            timeout=30,
            env=self.env,
        )
        assert done.returncode == 0, done.stderr
        [record] = json.loads(done.stdout)
        return str(record["id"])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("web-browser")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("BYGHEARTD_LOAD_PLUGINS", "NOTIFY_SOCKET", "BYGHEARTD_CONFIG")
    }
    env |= {
        "BYGHEART_API_KEY": TEST_KEY,
        "XDG_CONFIG_HOME": str(root / "xdg-config"),
        "XDG_STATE_HOME": str(root / "xdg-state"),
    }
    settings = SimulatorSettings(latency=0.3, audio_scale=0.1, seed=11)  # 2 s takes
    with run_in_thread(settings) as sim:
        folders = {
            name: str(root / name)
            for name in ("inbox", "output", "archive", "failed", "drafts", "state")
        }
        for folder in folders.values():
            Path(folder).mkdir()
        config_path = write_config(
            root / "config.toml",
            {
                "api": {"base_url": sim.base_url},
                "folders": folders,
                "watch": {"settle_seconds": 0.2, "rescan_seconds": 60},
                "queue": {
                    "poll_min_seconds": 0.1,
                    "poll_max_seconds": 0.3,
                    "retry_base_seconds": 0.1,
                    "retry_max_seconds": 0.5,
                    "unknown_grace_seconds": 1.0,
                },
                "budget": {"plan": "pro"},
                "mcp": {"http": False, "port": 0},
                "web": {"enabled": True},
                # Every take here is short of its request: no retakes, which would spend
                # the day's credits on songs the tests only look at.
                "retakes": {"max": 0},
                "plugins": {"enabled": ["quality", "tags"]},
                # The simulator's takes are a tenth of the requested length: each take gets
                # the quality plugin's "much shorter than requested" warning, to be shown.
                "plugins.quality": {"min_duration_ratio": 0.5},
            },
        )
        config = load_config(config_path)
        daemon = Daemon(config_path, root / "daemon.log", env=env).start()
        try:
            wait_for(lambda: "the library page at" in daemon.log(), what="the web", proc=daemon)
            line = next(ln for ln in daemon.log().splitlines() if "the library page at" in ln)
            base = line.split("the library page at ", 1)[1].split()[0].rstrip("/")
            site = Site(base, config_path, config, sim, env, finished="")
            site.finished = site.submit("Harbour Lights", "the ferries hum below")
            wait_for(lambda: site.status(site.finished) == "done", what="the first song")
            yield site
        finally:
            daemon.stop()


@pytest.fixture
def context(browser: Browser, site: Site) -> Iterator[BrowserContext]:
    made = browser.new_context(base_url=site.base)
    made.set_default_timeout(WAIT_MS)
    try:
        yield made
    finally:
        made.close()


def logged_in(context: BrowserContext, site: Site) -> Page:
    page = context.new_page()
    reply = page.goto(site.quick_login_link())
    assert reply is not None and reply.ok, reply and reply.status
    assert urlsplit(page.url).path == "/"
    return page


def mark(page: Page) -> None:
    """Leave a value in the page's JS state: a reload would lose it."""
    page.evaluate("window.__notReloaded = 'yes'")


def not_reloaded(page: Page) -> bool:
    return bool(page.evaluate("window.__notReloaded === 'yes'"))


def until(page: Page, script: str, arg: Any = None) -> Any:
    """Evaluate `script` in the page until it returns something truthy; that value.

    Not `page.wait_for_function`: it evaluates strings with eval(), which the page's
    Content-Security-Policy rightly forbids. `page.evaluate` goes through the debugger.
    """
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        value = page.evaluate(script, arg)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {script!r} on {page.url}")
        page.wait_for_timeout(50)  # lets the page's own events run between looks


def audio_duration(page: Page, selector: str) -> float:
    """Wait until the <audio> element has loaded its metadata; its duration in seconds."""
    return float(
        until(
            page,
            "sel => { const a = document.querySelector(sel); return a && a.duration > 0"
            " && isFinite(a.duration) ? a.duration : 0; }",
            selector,
        )
    )


# --- logging in, hearing a song -------------------------------------------------------


def test_the_one_time_link_logs_in_once_and_a_finished_song_plays(
    context: BrowserContext, site: Site, browser: Browser
) -> None:
    link = site.login_link()
    page = context.new_page()
    page.goto(link)
    assert urlsplit(page.url).path == "/"  # the code is not left in the address bar
    [cookie] = [c for c in context.cookies() if c["name"] == "bygheartd_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "bygheartd_session" not in page.evaluate("document.cookie")

    row = page.locator(f"#job-{site.finished}")
    assert row.get_attribute("data-status") == "done"
    assert "Harbour Lights" in row.inner_text()
    assert audio_duration(page, f"#job-{site.finished} audio[data-testid=player]") > 0

    row.locator("[data-testid=job-link]").first.click()
    page.wait_for_url(f"**/songs/{site.finished}")
    assert page.locator("#song-title").inner_text() == "Harbour Lights"
    assert "the ferries hum below" in page.locator("#song-lyrics").inner_text()
    duration = audio_duration(page, "#deck-audio")
    assert duration == pytest.approx(2.0, abs=0.2)  # the simulator's 2 s take
    page.eval_on_selector("#deck-audio", "a => a.play()")
    until(page, "() => document.querySelector('#deck-audio').currentTime > 0")
    # The quality plugin's figures, and the waveform drawn from its peaks.
    assert page.locator("#waveform-1 path").get_attribute("d")
    recorded = float(page.locator("#quality-1 [data-quality=duration]").inner_text())
    assert recorded == pytest.approx(duration, abs=0.05)
    # Its verdict: the 2 s take of a 20 s request is cut short (a finding, not a warning),
    # and, the only take, it is the gate's keeper.
    assert page.locator("#verdict-1").inner_text() == "Failed the quality gate"
    finding = page.locator("#findings-1 [data-finding=cut_short]").inner_text()
    assert "harbour-lights.mp3" in finding and "of the requested 20 s" in finding
    assert "quality gate" in page.locator("#take-1 [data-testid=keeper]").inner_text()

    # The link worked once: another browser cannot use it again.
    other = browser.new_context(base_url=site.base)
    try:
        again = other.new_page()
        reply = again.goto(link)
        assert reply is not None and reply.status == 403
        assert again.locator("#login-needed").count() == 1
        assert not [c for c in other.cookies() if c["name"] == "bygheartd_session"]
    finally:
        other.close()


# --- making a song and watching it arrive ----------------------------------------------


def test_a_song_made_with_the_form_arrives_live_on_the_library_and_its_page(
    context: BrowserContext, site: Site
) -> None:
    library = logged_in(context, site)
    mark(library)
    page = context.new_page()
    page.goto("/new")
    page.fill("#field-title", "Paper Boats")
    page.fill("#field-style", "warm indie folk, male vocal")
    page.fill("#field-lyrics", "[Verse]\nwe fold the evening into paper boats")
    if not page.locator("#field-duration").is_visible():
        page.click("#group-general > summary")
    page.fill("#field-duration", "20")
    page.wait_for_selector("#estimate[data-cost]:not([data-cost=''])")
    page.click("#submit")
    page.wait_for_url("**/songs/*")
    job_id = urlsplit(page.url).path.rsplit("/", 1)[1]
    mark(page)
    # The song page follows the job to the end by itself, and then it can be heard.
    page.wait_for_selector("#song-body[data-status=done]")
    assert not_reloaded(page)
    assert audio_duration(page, "#deck-audio") > 0
    assert page.locator("#song-title").inner_text() == "Paper Boats"
    # The library, open all along in another tab, shows the new song done, unreloaded.
    library.wait_for_selector(f"#job-{job_id}[data-status=done]")
    assert not_reloaded(library)
    assert audio_duration(library, f"#job-{job_id} audio[data-testid=player]") > 0


def test_a_form_error_is_shown_beside_its_field_and_nothing_is_queued(
    context: BrowserContext, site: Site
) -> None:
    page = logged_in(context, site)
    before = site.job_count()
    page.goto("/new")
    page.fill("#field-lyrics", "[Verse]\nla la la")
    if not page.locator("#field-duration").is_visible():
        page.click("#group-general > summary")
    page.fill("#field-duration", "700")
    page.click("#submit")
    error = page.locator("#error-duration .error")
    error.wait_for()
    assert "duration" in error.inner_text() and "600" in error.inner_text()
    assert site.job_count() == before


def test_a_running_song_is_cancelled_and_retried_from_its_page(
    context: BrowserContext, site: Site
) -> None:
    site.sim.set_faults(latency=120)  # long enough to be cancelled while it runs
    try:
        job_id = site.submit("Slow Tide", "the water takes its time")
        page = logged_in(context, site)
        page.goto(f"/songs/{job_id}")
        page.wait_for_selector("#song-body[data-status=running]")
        page.click("#cancel")
        page.wait_for_selector("#song-body[data-status=cancelled]")
        assert site.status(job_id) == "cancelled"
    finally:
        site.sim.set_faults(latency=0.3)
    mark(page)  # the retry's form reloads the page; from then on it is followed live
    page.click("#retry")
    page.wait_for_selector("#song-body[data-status=done]")
    mark(page)
    assert site.status(job_id) == "done"
    assert audio_duration(page, "#deck-audio") > 0


# --- what is refused ---------------------------------------------------------------------


def test_without_the_cookie_pages_and_audio_are_refused(
    context: BrowserContext, site: Site
) -> None:
    page = context.new_page()
    reply = page.goto(f"/songs/{site.finished}")
    assert reply is not None and reply.status == 401
    assert page.locator("#login-needed").count() == 1
    assert "bygheartd web" in page.locator("body").inner_text()
    audio = context.request.get(f"/songs/{site.finished}/takes/1")
    assert audio.status == 401
    posted = context.request.post(f"/songs/{site.finished}/retry", form={"csrf": "x"})
    assert posted.status in (401, 403)


def test_a_wrong_csrf_token_is_refused_and_changes_nothing(
    context: BrowserContext, site: Site
) -> None:
    page = logged_in(context, site)
    before = site.job_count()
    page.goto("/new")
    page.fill("#field-title", "Forged")
    page.fill("#field-lyrics", "[Verse]\nnot from this page")
    page.eval_on_selector_all(
        "form#new-song input[type=hidden]",
        "inputs => inputs.forEach(i => { if (i.value.length > 10) i.value = 'forged-token'; })",
    )
    with page.expect_response(
        lambda r: r.request.method == "POST" and urlsplit(r.url).path == "/new"
    ) as posted:
        page.click("#submit")
    assert posted.value.status == 403
    assert site.job_count() == before
    # The same through a script with the cookie but no token, on a song's action.
    reply = context.request.post(f"/songs/{site.finished}/retry", form={"csrf": "forged"})
    assert reply.status == 403
    assert site.status(site.finished) == "done"


def test_a_foreign_host_name_is_refused(context: BrowserContext, site: Site) -> None:
    """DNS rebinding: a name that resolves to the daemon's address gets nothing."""
    logged_in(context, site)
    port = urlsplit(site.base).port
    page = context.new_page()
    reply = page.goto(f"http://{FOREIGN_HOST}:{port}/songs/{site.finished}")
    assert reply is not None and reply.status == 421
    assert "Harbour Lights" not in page.content()


def test_only_files_recorded_for_the_job_are_served(context: BrowserContext, site: Site) -> None:
    logged_in(context, site)
    output = site.config.folders.output
    (output / "stray.mp3").write_bytes(b"ID3 not this job's")
    take = context.request.get(f"/songs/{site.finished}/takes/1", headers={"Range": "bytes=0-99"})
    assert take.status == 206
    assert take.headers["content-type"].startswith("audio/mpeg")
    assert len(take.body()) == 100
    refused: list[tuple[str, Any]] = []
    for path in (
        f"/songs/{site.finished}/files/stray.mp3",
        f"/songs/{site.finished}/files/..%2Fconfig.toml",
        f"/songs/{site.finished}/files/%2Fetc%2Fpasswd",
        f"/songs/{site.finished}/files/..%2F..%2Fconfig.toml",
        f"/songs/{site.finished}/takes/9",
        "/songs/NOSUCHJOB000/takes/1",
    ):
        reply = context.request.get(path)
        if reply.status not in (400, 403, 404):
            refused.append((path, reply.status))
        assert b"[api]" not in reply.body() and b"root:" not in reply.body()
    assert refused == []


def test_without_javascript_the_library_a_song_and_the_form_work(
    browser: Browser, site: Site
) -> None:
    context = browser.new_context(base_url=site.base, java_script_enabled=False)
    context.set_default_timeout(WAIT_MS)
    try:
        page = logged_in(context, site)
        page.wait_for_selector(f"#job-{site.finished}[data-status=done]")
        page.click(f"#job-{site.finished} [data-testid=job-link]")
        assert page.locator("#song-title").inner_text() == "Harbour Lights"
        assert page.locator("#deck-audio").count() == 1
        # A plain form post: refused beside the field, the page a normal 400 result.
        before = site.job_count()
        page.goto("/new")
        page.fill("#field-lyrics", "[Verse]\nno script here")
        page.fill("#field-style", "lo-fi piano")
        page.fill("#field-duration", "700")  # General is open by default
        with page.expect_response(
            lambda r: r.request.method == "POST" and urlsplit(r.url).path == "/new"
        ) as posted:
            page.click("#submit")
        assert posted.value.status == 400
        assert "600" in page.locator("#error-duration .error").inner_text()
        assert page.locator("#field-duration").get_attribute("aria-invalid") == "true"
        assert site.job_count() == before
        # Fixed and posted again: the song page of the new job.
        page.fill("#field-duration", "20")
        page.click("#submit")
        page.wait_for_selector("#song-body")
        assert urlsplit(page.url).path.startswith("/songs/")
        assert site.job_count() == before + 1
    finally:
        context.close()


def test_after_a_daemon_restart_the_page_says_to_log_in_again(
    browser: Browser, site: Site, tmp_path: Path
) -> None:
    """A daemon of its own on a fixed port (the shared one keeps running): the page's
    event stream reconnects to the restarted daemon, which knows no session any more."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folders = {
        name: str(tmp_path / name)
        for name in ("inbox", "output", "archive", "failed", "drafts", "state")
    }
    for folder in folders.values():
        Path(folder).mkdir()
    config_path = write_config(
        tmp_path / "config.toml",
        {
            "api": {"base_url": site.sim.base_url},
            "folders": folders,
            "budget": {"plan": "pro"},
            "mcp": {"http": False, "port": port},
            "web": {"enabled": True},
            "plugins": {"enabled": []},
        },
    )
    config = load_config(config_path)
    base = f"http://127.0.0.1:{port}"
    daemon = Daemon(config_path, tmp_path / "daemon.log", env=site.env).start()
    context = browser.new_context(base_url=base)
    context.set_default_timeout(WAIT_MS)
    try:
        code = new_login_code(config)
        page = context.new_page()
        page.goto(f"{base}/login?code={code}")
        assert urlsplit(page.url).path == "/"
        mark(page)
        open_state = "window.bygheartdEvents && window.bygheartdEvents.readyState"
        wait_for(lambda: page.evaluate(open_state) == 1, what="the event stream")
        assert page.locator("#session-ended").is_hidden()
        daemon.stop()
        page.wait_for_selector("#offline", state="visible")
        daemon.start()
        page.wait_for_selector("#session-ended", state="visible")
        assert "bygheartd web" in page.locator("#session-ended").inner_text()
        assert page.locator("#offline").is_hidden()
        assert not_reloaded(page)
    finally:
        context.close()
        daemon.stop()


# --- the listening room (issue 25) ----------------------------------------------------------

THREE_TAKES = """---
title: {title}
style: dreamy synth pop, female vocal
model: bygheart-melody-fast
duration: 60
takes: 3
---
[Verse]
{line}
"""


def three_takes(site: Site, title: str) -> str:
    """A finished song of three 6 s takes of the simulator's real audio; its job id."""
    song = site.config.folders.drafts / f"{title.lower().replace(' ', '-')}.txt"
    song.write_text(THREE_TAKES.format(title=title, line="three ways to say it"), "utf-8")
    done = subprocess.run(
        [*site.command, "submit", "--json", str(song)],
        capture_output=True,
        text=True,
        timeout=30,
        env=site.env,
    )
    assert done.returncode == 0, done.stderr
    [record] = json.loads(done.stdout)
    wait_for(
        lambda: site.status(record["id"]) in ("done", "failed", "held"),
        what="the three takes",
        timeout=60,
    )
    assert site.status(record["id"]) == "done"
    return str(record["id"])


@pytest.fixture(scope="module")
def trio(site: Site) -> str:
    return three_takes(site, "Three Ways")


def deck_state(page: Page) -> dict[str, Any]:
    return dict(
        page.evaluate(
            "() => { const a = document.querySelector('#deck-audio');"
            " return {take: a.dataset.take, src: a.currentSrc || a.src, time: a.currentTime,"
            " paused: a.paused, ready: a.readyState,"
            " shown: document.querySelector('#waveform-' + a.dataset.take).classList"
            ".contains('current')}; }"
        )
    )


def settled_on(page: Page, take: int) -> dict[str, Any]:
    """Wait until the deck has loaded take `take`; its state."""
    until(
        page,
        "n => { const a = document.querySelector('#deck-audio'); return a.dataset.take == n"
        " && (a.currentSrc || a.src).endsWith('/takes/' + n) && a.readyState >= 1"
        " && !a.seeking; }",
        take,
    )
    return deck_state(page)


def test_switching_takes_keeps_the_position_with_clicks_and_keys(
    context: BrowserContext, site: Site, trio: str
) -> None:
    page = logged_in(context, site)
    page.goto(f"/songs/{trio}")
    assert page.locator("[data-testid=player]").count() == 1  # one player for the song
    assert page.locator("[data-testid=switch]").count() == 3
    duration = audio_duration(page, "#deck-audio")
    assert duration == pytest.approx(6.0, abs=0.3)
    start = int(deck_state(page)["take"])  # the keeper's take
    # Paused at 3.2 s: each switch lands on the same moment of the other take.
    page.eval_on_selector("#deck-audio", "a => { a.currentTime = 3.2; }")
    until(page, "() => Math.abs(document.querySelector('#deck-audio').currentTime - 3.2) < 0.01")
    other = 2 if start != 2 else 3
    page.click(f"#switch-{other}")
    state = settled_on(page, other)
    assert state["time"] == pytest.approx(3.2, abs=0.05) and state["paused"] and state["shown"]
    assert page.locator(f"#switch-{other}").get_attribute("aria-current") == "true"
    assert urlsplit(page.url).query == f"take={other}"  # a reload opens the same take
    page.keyboard.press("1")
    state = settled_on(page, 1)
    assert state["time"] == pytest.approx(3.2, abs=0.05)
    assert page.locator("#deck-take").inner_text() == "1"
    # Space plays; switching while playing goes on playing from where it was.
    page.keyboard.press("Space")
    until(page, "() => document.querySelector('#deck-audio').currentTime > 3.5")
    assert not deck_state(page)["paused"]
    page.keyboard.press("3")
    state = settled_on(page, 3)
    assert state["time"] >= 3.4  # not back to the start of the take
    until(page, "() => !document.querySelector('#deck-audio').paused")
    page.keyboard.press("Space")
    until(page, "() => document.querySelector('#deck-audio').paused")
    # A key for a take the song does not have changes nothing.
    page.keyboard.press("8")
    assert deck_state(page)["take"] == "3"


def test_the_waveform_seeks_where_clicked_and_loops_a_stretch(
    context: BrowserContext, site: Site, trio: str
) -> None:
    page = logged_in(context, site)
    page.goto(f"/songs/{trio}?take=2")
    duration = audio_duration(page, "#deck-audio")
    assert deck_state(page)["take"] == "2"
    assert page.locator("#waveform-2 path").get_attribute("d")  # drawn from the peaks
    wave = page.locator("#deck-wave")
    box = wave.bounding_box()
    assert box is not None
    wave.click(position={"x": box["width"] * 0.5, "y": box["height"] / 2})
    until(page, "() => document.querySelector('#deck-audio').currentTime > 0")
    assert deck_state(page)["time"] == pytest.approx(duration / 2, abs=0.15)
    head = float(page.locator("#deck-head").get_attribute("x1") or 0)
    assert head == pytest.approx(300, abs=12)  # the play head is drawn there
    # A loop from 1 s to 2 s: playing never passes its end, and comes round again.
    page.eval_on_selector("#deck-audio", "a => { a.currentTime = 1.0; }")
    until(page, "() => Math.abs(document.querySelector('#deck-audio').currentTime - 1) < 0.01")
    page.click("#loop-start")
    page.eval_on_selector("#deck-audio", "a => { a.currentTime = 2.0; }")
    until(page, "() => Math.abs(document.querySelector('#deck-audio').currentTime - 2) < 0.01")
    page.click("#loop-end")
    assert page.locator("#deck-audio").get_attribute("data-loop") == "1.00-2.00"
    assert "looping 0:01–0:02" in page.locator("#loop-text").inner_text()
    page.evaluate(
        "() => { const a = document.querySelector('#deck-audio'); window.__seen = [];"
        " a.addEventListener('timeupdate', () => window.__seen.push(a.currentTime)); a.play(); }"
    )
    until(
        page,
        "() => { const s = window.__seen; const i = s.findIndex(t => t > 1.7);"
        " return i >= 0 && s.slice(i).some(t => t < 1.4); }",
    )
    assert max(page.evaluate("window.__seen")) < 2.35
    # The loop stays when the take changes (the same stretch of another take).
    page.keyboard.press("1")
    settled_on(page, 1)
    assert page.locator("#deck-audio").get_attribute("data-loop") == "1.00-2.00"
    page.click("#loop-clear")
    assert page.locator("#deck-audio").get_attribute("data-loop") == ""


def test_keep_changes_the_keeper_as_the_cli_sees_it_without_stopping_the_music(
    context: BrowserContext, site: Site
) -> None:
    job_id = three_takes(site, "Pick The Second")
    page = logged_in(context, site)
    page.goto(f"/songs/{job_id}?take=2")
    audio_duration(page, "#deck-audio")
    mark(page)
    page.keyboard.press("Space")
    until(page, "() => document.querySelector('#deck-audio').currentTime > 0.3")
    if page.locator("#keep-2").count() == 0:  # the gate chose take 2 already: keep 1 first
        page.click("#keep-1")
        page.wait_for_selector("#take-1 [data-testid=keeper][data-keeper-by=person]")
    page.click("#keep-2")
    badge = page.locator("#take-2 [data-testid=keeper]")
    badge.wait_for()
    assert badge.get_attribute("data-keeper-by") == "person"
    assert "Your keeper" in badge.inner_text()
    assert page.locator("#switch-2 .switch-keeper").count() == 1
    assert page.locator("#keep-2").count() == 0 and page.locator("#keep-1").count() == 1
    assert not_reloaded(page) and not deck_state(page)["paused"]  # the music played on
    shown = subprocess.run(
        [*site.command, "show", "--json", job_id],
        capture_output=True,
        text=True,
        timeout=30,
        env=site.env,
    )
    assert shown.returncode == 0, shown.stderr
    keeper = json.loads(shown.stdout)["keeper"]
    assert keeper["take"] == 2 and keeper["by"] == "person"
    # The library plays the keeper first and says it is the person's choice.
    page.goto("/")
    row = page.locator(f"#job-{job_id}")
    assert row.locator("audio[data-testid=player]").first.get_attribute("data-take") == "2"
    assert row.locator("[data-field=keeper]").inner_text() == "your keeper"


def test_the_library_filters_keepers_only_and_failed_the_gate(
    context: BrowserContext, site: Site, trio: str
) -> None:
    page = logged_in(context, site)
    page.select_option("#show-filter", "keepers")
    page.click("#search-button")
    page.wait_for_url("**show=keepers*")
    rows = page.locator("[data-testid=job-row]")
    assert rows.count() >= 2
    for n in range(rows.count()):
        row = rows.nth(n)
        assert row.get_attribute("data-status") == "done"
        assert row.locator("audio[data-testid=player]").count() == 1
    trio_row = page.locator(f"#job-{trio}")
    keeper = trio_row.locator("audio").get_attribute("data-take")
    assert keeper == str(site_keeper(site, trio))
    # Every song of this site asked for 20 s or 60 s and got a tenth: each failed the gate.
    page.select_option("#show-filter", "failed")
    page.click("#search-button")
    page.wait_for_url("**show=failed*")
    assert page.locator(f"#job-{site.finished}").count() == 1
    assert page.locator(f"#job-{site.finished} [data-field=verdict]").count() >= 1
    assert "found" in page.locator("#job-count").inner_text()


def site_keeper(site: Site, job_id: str) -> int:
    store = Store.open(site.config.state_dir)
    try:
        record = store.get(job_id).keeper_record()
    finally:
        store.close()
    assert record is not None
    return int(record["take"])


def test_the_library_plays_on_from_song_to_song_showing_the_current_one(
    context: BrowserContext, site: Site, trio: str
) -> None:
    page = logged_in(context, site)
    page.goto("/?show=keepers")
    rows = page.locator("[data-testid=job-row]")
    assert rows.count() >= 2
    first_title, second_title = (
        rows.nth(n).locator("[data-testid=job-link]").inner_text() for n in (0, 1)
    )
    # One song a page: playing on past the first fetches the next page's song and plays it.
    page.goto("/?show=keepers&per=1")
    assert rows.count() == 1
    page.click("#play-all")
    page.wait_for_selector("#now-playing:not([hidden])")
    assert page.locator("#now-title").inner_text() == first_title
    until(page, "() => !document.querySelector('article.job.now audio').paused")
    # Near the end of the first: when it ends, the second plays and is shown.
    page.evaluate(
        "() => { const a = document.querySelector('article.job.now audio');"
        " a.currentTime = Math.max(0, a.duration - 0.3); }"
    )
    until(
        page,
        "t => document.querySelector('#now-title').textContent === t"
        " && !document.querySelector('article.job.now audio').paused",
        second_title,
    )
    second = rows.nth(1)  # added to the list from page 2
    assert "now" in (second.get_attribute("class") or "").split()
    assert page.locator("article.job.now").count() == 1
    assert page.locator("#page-number").inner_text().startswith("page 2 of ")
    page.click("#play-next")
    until(
        page,
        "t => document.querySelector('#now-title').textContent !== t"
        " || document.querySelector('#now-playing').dataset.ended === 'yes'",
        second_title,
    )
    page.click("#play-stop")
    assert page.locator("#now-playing").is_hidden()
    assert page.evaluate("() => [...document.querySelectorAll('audio')].every(a => a.paused)")


def test_a_running_songs_progress_never_moves_back_and_shows_a_percentage_and_time_left(
    context: BrowserContext, site: Site
) -> None:
    site.sim.set_faults(latency=6)
    try:
        job_id = site.submit("Slow Bloom", "it opens as the day goes")
        page = logged_in(context, site)
        page.goto(f"/songs/{job_id}")
        page.wait_for_selector("#song-progress")
        page.evaluate(
            "() => { window.__bars = []; window.__texts = [];"
            " setInterval(() => { const b = document.querySelector('#song-progress');"
            " const t = document.querySelector('#song-progress-text');"
            " if (b) window.__bars.push(Number(b.value));"
            " if (t) window.__texts.push(t.textContent); }, 50); }"
        )
        page.wait_for_selector("#song-body[data-status=done]", timeout=60_000)
        bars = page.evaluate("window.__bars")
        texts = page.evaluate("window.__texts")
    finally:
        site.sim.set_faults(latency=0.3)
    assert len(bars) > 20
    assert bars == sorted(bars), bars  # never backwards
    assert bars[-1] > bars[0]
    assert any("%" in t and "left" in t for t in texts), texts[-5:]


PHONE = {"width": 390, "height": 844}


def test_no_page_scrolls_sideways_on_a_phone(browser: Browser, site: Site, trio: str) -> None:
    context = browser.new_context(base_url=site.base, viewport=PHONE, is_mobile=True)
    context.set_default_timeout(WAIT_MS)
    try:
        page = logged_in(context, site)
        # A song whose file names and parameters are long: they must wrap, not widen.
        for path in ("/", f"/songs/{trio}", f"/songs/{site.finished}", "/new", "/guide"):
            page.goto(path)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (path, width)
            for link in ("#nav-library", "#nav-new", "#nav-guide", "#logout"):
                box = page.locator(link).bounding_box()
                assert box is not None and box["x"] + box["width"] <= 390, (path, link, box)
        page.goto("/")
        box = page.locator("#search-button").bounding_box()
        assert box is not None and box["x"] + box["width"] <= 390
    finally:
        context.close()
