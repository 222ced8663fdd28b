"""The song view in a real browser, as an MCP Apps host shows it: a host page puts the view in
a sandboxed iframe and answers its bridge requests (`ui/initialize`, `tools/call`,
`resources/read`) by forwarding them to the real server through the official MCP client.
The takes play from the take resources, "keep this take" changes the keeper as the store
(and so the CLI) sees it, "make again" queues a new song, and nothing leaves the page.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest
from _browser import browser_fixture
from conftest import REPO, MakeConfig
from mcp import Client
from playwright.sync_api import Browser, FrameLocator, Page, expect

from bygheartd.mcp.server import build_server
from bygheartd.mcp.view import song_view_html
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator

__all__ = ["browser_fixture"]

LYRICS = "[Verse]\nStreetlights hum a quiet tune\n\n[Chorus]\nStay until the morning"

# The host page: a sandboxed iframe for the view and the host's side of the bridge.
HOST_PAGE = (REPO / "mcp-app" / "test-host.html").read_text(encoding="utf-8")


class Bridge:
    """The real server behind the host page: a runtime on the simulator and an in-memory
    official client, in an event loop of their own (the browser test is synchronous)."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, runtime: Runtime) -> None:
        self.portal = portal
        self.runtime = runtime
        self.client = portal.wrap_async_context_manager(Client(build_server(runtime.service)))
        self.session = self.client.__enter__()
        self.calls: list[str] = []

    def close(self) -> None:
        self.client.__exit__(None, None, None)

    def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = self.portal.call(self.session.call_tool, name, arguments)
        dumped: dict[str, Any] = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        return dumped

    def handle(self, method: str, params_json: str) -> str:
        """`window.mcp(method, params)`: one bridge request, answered as JSON."""
        params = json.loads(params_json)
        if method == "tools/call":
            self.calls.append(params["name"])
            return json.dumps(self.call_tool(params["name"], params.get("arguments") or {}))
        self.calls.append(f"read {params['uri']}")
        read = self.portal.call(self.session.read_resource, params["uri"])
        return json.dumps(read.model_dump(mode="json", by_alias=True, exclude_none=True))

    def job(self, job_id: str) -> Any:
        return self.portal.call(self.runtime.service.get, job_id)

    def count(self) -> int:
        return len(self.portal.call(self.runtime.service.list))


@pytest.fixture
def bridge(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Bridge]:
    monkeypatch.delenv("BYGHEARTD_LOAD_PLUGINS")  # the first-party quality plugin judges takes
    config = make_config(
        simulator,
        plugins={"enabled": ["quality"]},
        folders={"keepers": str(tmp_path / "keepers")},
    )
    with anyio.from_thread.start_blocking_portal() as portal:
        runtime_cm = portal.wrap_async_context_manager(
            Runtime(config, role=EngineRole.MCP, engine=True, release_when_idle=30.0)
        )
        runtime = runtime_cm.__enter__()
        try:
            bridge = Bridge(portal, runtime)
            try:
                yield bridge
            finally:
                bridge.close()
        finally:
            runtime_cm.__exit__(None, None, None)


def open_view(
    browser: Browser, bridge: Bridge, tool_input: dict[str, Any], result: Any
) -> tuple[Page, list[str]]:
    """The host page with the view in it; the second value collects every http(s) request
    the page makes (there must be none: the view loads nothing)."""
    context = browser.new_context()
    page = context.new_page()
    page.expose_function("mcp", bridge.handle)
    outside: list[str] = []
    page.on(
        "request",
        lambda request: (
            outside.append(request.url) if request.url.startswith(("http:", "https:")) else None
        ),
    )
    page.set_content(
        HOST_PAGE.format(
            srcdoc=html.escape(song_view_html(), quote=True),
            tool_input=json.dumps({"arguments": tool_input}),
            tool_result=json.dumps(result),
        )
    )
    return page, outside


def view(page: Page) -> FrameLocator:
    return page.frame_locator("#view")


def test_the_view_plays_the_takes_keeps_one_and_makes_the_song_again(
    browser: Browser, bridge: Bridge
) -> None:
    args = {"lyrics": LYRICS, "title": "Streetlights", "takes": 2, "wait_seconds": 40}
    result = bridge.call_tool("generate_song", args)
    song = result["structuredContent"]
    assert song["status"] == "done" and len(song["files"]) == 2
    page, outside = open_view(browser, bridge, args, result)
    frame = view(page)

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
    assert {f"read bygheart://songs/{song['id']}/takes/{n}" for n in (1, 2)} <= set(bridge.calls)
    # The quality verdicts and the gate's keeper.
    expect(frame.locator(".badge.pass, .badge.fail")).to_have_count(2)
    keeper = song["keeper"]["take"]
    other = 3 - keeper
    expect(frame.locator("li.take.keeper")).to_have_attribute("data-take", str(keeper))

    # Keep the other take: the store says so, the keepers folder holds it.
    frame.locator(f"button[data-keep='{other}']").click()
    expect(frame.locator("li.take.keeper")).to_have_attribute("data-take", str(other))
    expect(frame.locator("li.take.keeper .badge.keeper")).to_have_text("keeper (your choice)")
    job = bridge.job(song["id"])
    assert job.result.keeper == Path(song["files"][other - 1]["path"]).name
    assert job.result.keeper_by == "person"
    assert job.result.keeper_copy and Path(job.result.keeper_copy["path"]).is_file()

    # Make again: a new job, followed in the view until it is done.
    before = bridge.count()
    frame.locator("button[data-again]").click()
    expect(frame.locator(".meta")).not_to_contain_text(song["id"], timeout=15_000)
    expect(frame.locator(".status")).to_have_attribute("data-status", "done", timeout=60_000)
    assert bridge.count() == before + 1
    assert "generate_song" in bridge.calls
    expect(frame.locator("h1")).to_have_text("Streetlights")

    assert outside == []
    page.context.close()


def test_the_view_follows_a_song_while_it_is_made(browser: Browser, bridge: Bridge) -> None:
    args = {"lyrics": LYRICS, "title": "Slow Burn"}
    result = bridge.call_tool("generate_song", args)
    assert result["structuredContent"]["status"] != "done"
    page, outside = open_view(browser, bridge, args, result)
    frame = view(page)
    expect(frame.locator("h1")).to_have_text("Slow Burn", timeout=15_000)
    expect(frame.locator(".status")).to_have_attribute("data-status", "done", timeout=60_000)
    expect(frame.locator("audio[src^='blob:']")).to_have_count(1, timeout=15_000)
    assert "get_song" in bridge.calls
    assert outside == []
    page.context.close()


def test_an_error_result_is_shown_as_text(browser: Browser, bridge: Bridge) -> None:
    result = bridge.call_tool("get_song", {"job_id": "nosuchjob99"})
    assert result["isError"]
    page, _ = open_view(browser, bridge, {"job_id": "nosuchjob99"}, result)
    expect(view(page).locator(".error")).to_contain_text("list_songs", timeout=15_000)
    page.context.close()
