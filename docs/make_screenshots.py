"""Make the screenshots of the library page in docs/screenshots/ (README and docs use them).

Offline like `bygheartd demo`: the simulator on loopback, `bygheartd run` with the web on in
a child process, a few songs made from song files (one of three takes, one with a dropout the
quality gate marks on its waveform), and Debian's chromium (driven by Playwright, never
downloaded) photographing `/`, `/songs/<id>` (the listening deck) and `/new`, and the library
and a song on a phone-sized screen (390 px).

    .venv/bin/python docs/make_screenshots.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bygheartd.config import Config, load_config
from bygheartd.runtime import open_service
from bygheartd.simulator import SimulatorSettings, run_in_thread
from bygheartd.store.store import Store

KEY = "bgh_pro_screenshots_key_0001"  # the simulator's Pro plan: caps to show
SONGS = [
    ("Harbour Lights", "dreamy synth pop, female vocal, 96 bpm", "the ferries hum below", 60),
    ("Paper Boats", "warm indie folk, male vocal, fingerpicked guitar", "we fold the evening", 90),
    ("Neon Rain", "dark synthwave, driving bass, retro drums", "the city blinks in code", 120),
    ("Morning Tide", "ambient piano, soft strings", "", 45),
]
ALBUM = """album: Night Drive
artist: The Night Shift
style: synthwave, analog pads, gated drums
model: bygheart-melody-fast  # 1 credit a track: the day's 30 also pay for the live row
duration: 40
tracks:
  - title: Neon On
    lyrics: "[Verse]\\nNeon on, the city hums"
  - title: Overpass
    lyrics: "[Verse]\\nOver the pass the lights run out"
  - title: Last Exit
    lyrics: "[Verse]\\nOne more mile"
"""
CHROMIUM_ARGS = [
    "--no-sandbox",  # root on the build machines
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
CONFIG = """[api]
base_url = "{base}"

[folders]
inbox = "{root}/inbox"
output = "{root}/output"
archive = "{root}/archive"
failed = "{root}/failed"
drafts = "{root}/drafts"
state = "{root}/state"

[queue]
poll_min_seconds = 0.2
poll_max_seconds = 0.5

[budget]
plan = "pro"

[mcp]
port = 0

[web]
enabled = true

[plugins]
enabled = ["quality", "tags"]

[plugins.quality]
min_duration_ratio = 0  # the simulator's takes are short on purpose
"""


async def login_code(config: Config) -> str:
    """A one-time login code, as `bygheartd web` makes it."""
    service = open_service(config)
    try:
        return await service.logins.new_code()
    finally:
        await service.close()


def song_text(title: str, style: str, line: str, duration: int, takes: int = 2) -> str:
    lyrics = f"[Verse]\n{line}\n[Chorus]\nand we sing it back to the night\n" if line else ""
    instrumental = "instrumental: true\n" if not line else ""
    return (
        f"---\ntitle: {title}\nstyle: {style}\nmodel: bygheart-studio-pro\n"
        f"duration: {duration}\ntakes: {takes}\n{instrumental}---\n{lyrics}"
    )


def wait(condition: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "screenshots")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bygheartd-screenshots-"))
    root = workdir / "music"  # the folder names the pages show
    env = {k: v for k, v in os.environ.items() if k != "BYGHEARTD_LOAD_PLUGINS"}
    env |= {"BYGHEART_API_KEY": KEY, "XDG_STATE_HOME": str(root / "xdg")}
    settings = SimulatorSettings(latency=0.5, audio_scale=0.2, seed=21)
    with run_in_thread(settings) as sim:
        for name in ("inbox", "output", "archive", "failed", "drafts", "state"):
            (root / name).mkdir(parents=True)
        config_path = root / "config.toml"
        config_path.write_text(CONFIG.format(base=sim.base_url, root=root), encoding="utf-8")
        config = load_config(config_path)
        command = [sys.executable, "-m", "bygheartd", "--config", str(config_path)]
        log = (root / "daemon.log").open("wb")
        daemon = subprocess.Popen([*command, "run"], stderr=log, stdout=subprocess.DEVNULL, env=env)
        try:
            store = Store.open(config.state_dir)
            wait(lambda: store.get_meta("web-address"), "the daemon's web address")
            base = str(store.get_meta("web-address")).rstrip("/")
            ids = []
            for n, (title, style, line, duration) in enumerate(SONGS):
                path = root / "drafts" / f"{title.lower().replace(' ', '-')}.txt"
                # The first song: three takes, with a dropout for the waveform to mark.
                sim.set_faults(defect="dropout" if n == 0 else "", defect_burst=0)
                text = song_text(title, style, line, duration, takes=3 if n == 0 else 2)
                path.write_text(text, encoding="utf-8")
                done = subprocess.run(
                    [*command, "submit", "--json", str(path)],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
                ids.append(json.loads(done.stdout)[0]["id"])
            wait(lambda: all(store.get(i).status.value == "done" for i in ids), "the songs")
            # An album of three tracks, dropped into the inbox: its page.
            (root / "inbox" / "night-drive.album.yaml").write_text(ALBUM, encoding="utf-8")
            document = root / "output" / "night-drive" / "album.json"
            wait(
                lambda: (
                    document.is_file()
                    and all(
                        t["status"] == "done" for t in json.loads(document.read_text())["tracks"]
                    )
                ),
                "the album",
            )
            album_id = json.loads(document.read_text())["album_id"]
            sim.set_faults(defect="", latency=600)  # one song still being made: the live row
            path = root / "drafts" / "still-going.txt"
            path.write_text(
                song_text("Still Going", "lo-fi hip hop, vinyl crackle", "", 30, takes=1)
            )
            subprocess.run(
                [*command, "submit", str(path)], env=env, check=True, capture_output=True
            )
            code = asyncio.run(login_code(config))
            phone_code = asyncio.run(login_code(config))  # the phone is another browser
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=chromium,
                    args=CHROMIUM_ARGS,
                )
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"{base}/login?code={code}")
                page.wait_for_selector("#jobs [data-status=running]", timeout=60_000)
                page.screenshot(path=str(args.out / "library.png"))
                page.goto(f"{base}/songs/{ids[0]}?take=2")
                page.wait_for_selector("#waveform-2")
                page.eval_on_selector("#deck-audio", "a => { a.currentTime = 4.2; }")
                page.screenshot(path=str(args.out / "song.png"), full_page=True)
                phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
                phone.goto(f"{base}/login?code={phone_code}")
                phone.wait_for_selector("#jobs [data-status=running]", timeout=60_000)
                phone.screenshot(path=str(args.out / "phone-library.png"))
                phone.goto(f"{base}/songs/{ids[0]}?take=2")
                phone.wait_for_selector("#deck-wave")
                phone.screenshot(path=str(args.out / "phone-song.png"))
                page.goto(f"{base}/albums/{album_id}")
                page.click("#play-all")
                page.wait_for_selector("#now-playing:not([hidden])")
                page.screenshot(path=str(args.out / "album.png"), full_page=True)
                phone.goto(f"{base}/albums/{album_id}")
                phone.wait_for_selector("#tracks")
                phone.screenshot(path=str(args.out / "phone-album.png"))
                page.goto(f"{base}/new?from={ids[2]}&seed=new")
                page.wait_for_selector("#estimate[data-cost]:not([data-cost=''])")
                # The cost bar sticks to the window's bottom: a window as tall as the form
                # shows it there, not across the middle as a full-page capture would.
                height = page.evaluate("document.documentElement.scrollHeight")
                page.set_viewport_size({"width": 1280, "height": int(height)})
                page.screenshot(path=str(args.out / "new.png"))
                browser.close()
            store.close()
        finally:
            daemon.terminate()
            daemon.wait(20)
            log.close()
    shutil.rmtree(workdir, ignore_errors=True)
    for name in ("library", "song", "album", "new", "phone-library", "phone-song", "phone-album"):
        print(args.out / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
