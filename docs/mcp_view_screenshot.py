"""Make docs/screenshots/mcp-view.png: the song view as an MCP Apps host shows it inline.

Offline like the tests: the simulator on loopback, the MCP server over streamable HTTP on
loopback, and Debian's chromium (driven by Playwright, never downloaded) showing the view in
the test host of mcp-app/ (`mcp-app/test-host/`: the official TypeScript client plus ext-apps'
`AppBridge`, served by tests/_mcp_host.py), which calls `get_song` and renders its view.

    .venv/bin/python docs/mcp_view_screenshot.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import anyio.from_thread

REPO = Path(__file__).resolve().parent.parent
KEY = "bgh_pro_screenshots_key_0001"
CONFIG = """[api]
base_url = "{base}"

[folders]
inbox = "{root}/inbox"
output = "{root}/output"
archive = "{root}/archive"
failed = "{root}/failed"
drafts = "{root}/drafts"
state = "{root}/state"
keepers = "{root}/keepers"

[queue]
poll_min_seconds = 0.1
poll_max_seconds = 0.3

[budget]
plan = "pro"

[mcp]
http = true
port = 0
token_file = "{token_file}"

[plugins]
enabled = ["quality"]

[plugins.quality]
min_duration_ratio = 0  # the simulator's takes are short on purpose
"""
SONG = {
    "title": "Harbour Lights",
    "style": "dreamy synth pop, female vocal",
    "lyrics": "[Verse]\nThe ferries hum below\n\n[Chorus]\nAnd we sing it back to the night",
    "takes": 2,
    "wait_seconds": 45,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "screenshots")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed: apt-get install chromium")
    from mcp import Client
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(REPO / "tests"))
    from _mcp_host import HOST_SETTLED, host_routes, host_url

    from bygheartd.config import load_config
    from bygheartd.mcp.http import McpHttpServer
    from bygheartd.mcp.server import build_server
    from bygheartd.runtime import EngineRole, Runtime
    from bygheartd.simulator import SimulatorSettings, run_in_thread

    os.environ["BYGHEART_API_KEY"] = KEY
    os.environ.pop("BYGHEARTD_LOAD_PLUGINS", None)
    workdir = Path(tempfile.mkdtemp(prefix="bygheartd-mcp-view-"))
    os.environ["XDG_STATE_HOME"] = str(workdir / "xdg")
    root = workdir / "music"
    for name in ("inbox", "output", "archive", "failed", "drafts", "state", "keepers"):
        (root / name).mkdir(parents=True)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "mcp-view.png"
    settings = SimulatorSettings(latency=0.2, audio_scale=0.1, seed=21)
    with run_in_thread(settings) as sim, anyio.from_thread.start_blocking_portal() as portal:
        config_path = root / "config.toml"
        token_file = workdir / "mcp-token"
        token_file.write_text("screenshot-host-token-" + os.urandom(8).hex(), encoding="utf-8")
        config_path.write_text(
            CONFIG.format(base=sim.base_url, root=root, token_file=token_file), encoding="utf-8"
        )
        config = load_config(config_path)
        runtime = Runtime(config, role=EngineRole.MCP, engine=True)
        with portal.wrap_async_context_manager(runtime) as rt:

            async def make_song() -> str:
                async with Client(build_server(rt.service)) as client:
                    made = await client.call_tool("generate_song", SONG)
                return str((made.structured_content or {})["id"])

            job_id = portal.call(make_song)
            server = McpHttpServer(rt.service, extra_routes=host_routes)
            portal.call(server.start)
            try:
                with sync_playwright() as playwright:
                    browser = playwright.chromium.launch(
                        executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
                    )
                    page = browser.new_page(viewport={"width": 760, "height": 620})
                    page.goto(host_url(server.base_url, "get_song", {"job_id": job_id}))
                    page.wait_for_function(HOST_SETTLED, timeout=30_000)
                    state = page.evaluate("window.testHost")
                    if state["phase"] != "shown":
                        raise SystemExit(f"the test host failed: {state['error']}")
                    frame = page.frame_locator("#view")
                    frame.locator("audio[src^='blob:']").nth(1).wait_for(timeout=30_000)
                    page.locator("#view").evaluate("f => { f.style.height = '400px'; }")
                    page.locator("#view").screenshot(path=str(target))
                    browser.close()
            finally:
                portal.call(server.stop)
    shutil.rmtree(workdir, ignore_errors=True)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
