"""The song view in a real browser, as an MCP Apps host shows it. The host is the real thing:
mcp-app/test-host/host.bundle.js, built from the official TypeScript client and ext-apps'
`AppBridge` (`npm run build:host`; committed, so nothing is built here). Chromium loads it
from the test's MCP listener on loopback (`McpHttpServer`, bearer token and Host/Origin checks
as the daemon runs it); the host connects to /mcp over streamable HTTP, calls `get_song`,
reads the view resource and renders it through the bridge in a sandboxed iframe, which
forwards the view's `tools/call` and `resources/read` to the server. The takes play from the
take resources, "keep this take" changes the keeper as the CLI sees it, "make again" queues a
new song, a host without Apps shows the text, and nothing leaves loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest
from _browser import browser_fixture
from _mcp_host import HOST_SETTLED, host_routes, host_url
from conftest import MakeConfig
from mcp import Client
from playwright.sync_api import Browser, FrameLocator, Page, expect

from bygheartd.config import Config
from bygheartd.mcp.http import McpHttpServer
from bygheartd.mcp.server import build_server
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator

__all__ = ["browser_fixture"]

LYRICS = "[Verse]\nStreetlights hum a quiet tune\n\n[Chorus]\nStay until the morning"
TOKEN = "browser-host-token-5d1c8e07a2"


class Served:
    """The runtime on the simulator and its MCP listener, in an event loop of their own (the
    browser test is synchronous)."""

    def __init__(
        self,
        portal: anyio.from_thread.BlockingPortal,
        runtime: Runtime,
        server: McpHttpServer,
        config_path: Path,
    ) -> None:
        self.portal = portal
        self.runtime = runtime
        self.server = server
        self.config_path = config_path

    def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """A tool call as an agent makes it, before the host shows the song (through the
        official Python client, in memory)."""

        async def call() -> dict[str, Any]:
            async with Client(build_server(self.runtime.service)) as client:
                result = await client.call_tool(name, arguments)
            dumped: dict[str, Any] = result.model_dump(
                mode="json", by_alias=True, exclude_none=True
            )
            return dumped

        return self.portal.call(call)

    def job(self, job_id: str) -> Any:
        return self.portal.call(self.runtime.service.get, job_id)

    def count(self) -> int:
        return len(self.portal.call(self.runtime.service.list))


@pytest.fixture
def served(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Served]:
    monkeypatch.delenv("BYGHEARTD_LOAD_PLUGINS")  # the first-party quality plugin judges takes
    token_file = tmp_path / "mcp-token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    config: Config = make_config(
        simulator,
        plugins={"enabled": ["quality"]},
        folders={"keepers": str(tmp_path / "keepers")},
        mcp={"http": True, "port": 0, "token_file": str(token_file)},
    )
    with anyio.from_thread.start_blocking_portal() as portal:
        runtime_cm = portal.wrap_async_context_manager(
            Runtime(config, role=EngineRole.MCP, engine=True, release_when_idle=30.0)
        )
        runtime = runtime_cm.__enter__()
        try:
            server = McpHttpServer(runtime.service, extra_routes=host_routes)
            portal.call(server.start)
            try:
                assert config.source_path is not None
                yield Served(portal, runtime, server, config.source_path)
            finally:
                portal.call(server.stop)
        finally:
            runtime_cm.__exit__(None, None, None)


def cli_show(served: Served, job_id: str) -> dict[str, Any]:
    """`bygheartd show ID --json` in a subprocess: the song as the CLI sees it."""
    command = [sys.executable, "-m", "bygheartd", "--config", str(served.config_path)]
    shown = subprocess.run(
        [*command, "show", job_id, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    record: dict[str, Any] = json.loads(shown.stdout)
    return record


class Opened:
    """The host page in its own browser context, and every request the page made."""

    def __init__(self, page: Page, requests: list[tuple[str, bool]]) -> None:
        self.page = page
        self.requests = requests  # (url, made by the view's frame)

    def view_requests(self) -> list[str]:
        """The server requests the view made through the host's bridge, in order."""
        requests: list[str] = self.page.evaluate("window.testHost.viewRequests")
        return requests

    def assert_only_loopback(self, origin: str) -> None:
        """The host's own fetches go to the MCP listener; the view fetches nothing at all."""
        urls = [url for url, _ in self.requests]
        assert urls and all(url.startswith(origin + "/") for url in urls), urls
        assert not [url for url, by_view in self.requests if by_view]

    def close(self) -> None:
        self.page.context.close()


def open_host(
    browser: Browser, served: Served, tool: str, arguments: dict[str, Any], *, apps: bool = True
) -> Opened:
    """The host page, calling `tool` itself and showing its result as it would in a chat."""
    context = browser.new_context()
    page = context.new_page()
    requests: list[tuple[str, bool]] = []

    def seen(request: Any) -> None:
        if request.url.startswith(("http:", "https:")):
            requests.append((request.url, request.frame != page.main_frame))

    page.on("request", seen)
    page.goto(host_url(served.server.base_url, tool, arguments, apps=apps))
    page.wait_for_function(HOST_SETTLED, timeout=20_000)
    state = page.evaluate("window.testHost")
    assert state["phase"] == "shown", f"the host failed: {state['error']}"
    return Opened(page, requests)


def view(page: Page) -> FrameLocator:
    return page.frame_locator("#view")


def test_the_view_plays_the_takes_keeps_one_and_makes_the_song_again(
    browser: Browser, served: Served
) -> None:
    args = {"lyrics": LYRICS, "title": "Streetlights", "takes": 2, "wait_seconds": 40}
    song = served.call_tool("generate_song", args)["structuredContent"]
    assert song["status"] == "done" and len(song["files"]) == 2
    opened = open_host(browser, served, "get_song", {"job_id": song["id"]})
    frame = view(opened.page)
    assert opened.page.locator("#view").get_attribute("sandbox") == "allow-scripts"

    expect(frame.locator("h1")).to_have_text("Streetlights", timeout=15_000)
    takes = frame.locator("li.take")
    expect(takes).to_have_count(2)
    # Both takes play from blob: URLs made of the take resources read through the bridge.
    players = frame.locator("audio[src^='blob:']")
    expect(players).to_have_count(2, timeout=15_000)
    for n in (0, 1):
        durations = players.nth(n).evaluate(
            """(audio) => new Promise((resolve) => {
                if (audio.readyState >= 1) resolve(audio.duration);
                audio.addEventListener("loadedmetadata", () => resolve(audio.duration));
                audio.addEventListener("error", () => resolve(-1));
            })"""
        )
        assert durations > 0, f"take {n + 1} does not play"
    reads = {f"read bygheart://songs/{song['id']}/takes/{n}" for n in (1, 2)}
    assert reads <= set(opened.view_requests())
    # The quality verdicts and the gate's keeper.
    expect(frame.locator(".badge.pass, .badge.fail")).to_have_count(2)
    keeper = song["keeper"]["take"]
    other = 3 - keeper
    expect(frame.locator("li.take.keeper")).to_have_attribute("data-take", str(keeper))

    # Keep the other take: the CLI says so, the keepers folder holds it.
    frame.locator(f"button[data-keep='{other}']").click()
    expect(frame.locator("li.take.keeper")).to_have_attribute("data-take", str(other))
    expect(frame.locator("li.take.keeper .badge.keeper")).to_have_text("keeper (your choice)")
    assert "keep_take" in opened.view_requests()
    shown = cli_show(served, song["id"])
    assert shown["keeper"]["take"] == other and shown["keeper"]["by"] == "person"
    job = served.job(song["id"])
    assert job.result.keeper == Path(song["files"][other - 1]["path"]).name
    assert job.result.keeper_copy and Path(job.result.keeper_copy["path"]).is_file()

    # Make again: a new job, followed in the view until it is done.
    before = served.count()
    frame.locator("button[data-again]").click()
    expect(frame.locator(".meta")).not_to_contain_text(song["id"], timeout=15_000)
    expect(frame.locator(".status")).to_have_attribute("data-status", "done", timeout=60_000)
    assert served.count() == before + 1
    assert "generate_song" in opened.view_requests()
    expect(frame.locator("h1")).to_have_text("Streetlights")

    opened.assert_only_loopback(served.server.base_url)
    opened.close()


def test_the_view_follows_a_song_while_it_is_made(
    browser: Browser, served: Served, simulator: RunningSimulator
) -> None:
    # Long enough that the song is still being made when the view opens, whatever the load.
    simulator.set_faults(latency=6.0)
    args = {"lyrics": LYRICS, "title": "Slow Burn"}
    made = served.call_tool("generate_song", args)["structuredContent"]
    assert made["status"] != "done"
    opened = open_host(browser, served, "get_song", {"job_id": made["id"]})
    frame = view(opened.page)
    expect(frame.locator("h1")).to_have_text("Slow Burn", timeout=15_000)
    expect(frame.locator(".status")).to_have_attribute("data-status", "done", timeout=60_000)
    expect(frame.locator("audio[src^='blob:']")).to_have_count(1, timeout=15_000)
    assert "get_song" in opened.view_requests()  # the view's own follow-up calls
    opened.assert_only_loopback(served.server.base_url)
    opened.close()


def test_an_error_result_is_shown_as_text(browser: Browser, served: Served) -> None:
    opened = open_host(browser, served, "get_song", {"job_id": "nosuchjob99"})
    expect(view(opened.page).locator(".error")).to_contain_text("list_songs", timeout=15_000)
    opened.close()


def test_a_host_without_apps_shows_the_text_and_no_view(browser: Browser, served: Served) -> None:
    args = {"lyrics": LYRICS, "title": "Plain Words", "wait_seconds": 40}
    song = served.call_tool("generate_song", args)["structuredContent"]
    assert song["status"] == "done"
    opened = open_host(browser, served, "get_song", {"job_id": song["id"]}, apps=False)
    text = opened.page.locator("#text")
    expect(text).to_contain_text("Plain Words")
    expect(text).to_contain_text(song["id"])
    assert opened.page.locator("#view").count() == 0  # the view is never read, nor shown
    assert opened.page.locator("body").get_attribute("data-error") == "false"
    opened.assert_only_loopback(served.server.base_url)
    opened.close()
