"""The song view for MCP Apps hosts, song subscriptions and completions, through the
official client: in memory in both protocol modes, and over the daemon's HTTP.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from conftest import MakeConfig
from mcp import Client
from mcp.client import advertise
from mcp.client.streamable_http import streamable_http_client
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.subscriptions import ResourceUpdated
from mcp.types import (
    CallToolResult,
    PromptReference,
    ResourceTemplateReference,
    ResourceUpdatedNotification,
    TextResourceContents,
)

from bygheartd.jobs import JobStatus
from bygheartd.mcp.http import McpHttpServer
from bygheartd.mcp.server import build_server
from bygheartd.mcp.view import SONG_VIEW_URI, song_view_html
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator

pytestmark = pytest.mark.anyio

MODES = ["legacy", "auto"]
LYRICS = "[Verse]\nPaper lanterns on the river\n\n[Chorus]\nCarry us home"
TOKEN = "view-token-5d1c0a7e93b24f68"
APPS = advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})
# Strings in the bundled ext-apps/zod code that look like URLs but are never fetched: JSON
# Schema dialect identifiers, a credit line and a documentation example. Anything else that
# looks like a URL fails the test (the CSP would block it anyway).
INERT_URLS = {
    "http://json-schema.org/draft-04/schema#",
    "http://json-schema.org/draft-07/schema#",
    "http://json-schema.org/draft/2019-09/schema",
    "https://json-schema.org/draft/2019-09/schema",
    "https://json-schema.org/draft/2020-12/schema",
    "https://github.com/cfworker",
    "https://*.example.com",
}


@pytest.fixture
async def runtime(simulator: RunningSimulator, make_config: MakeConfig) -> AsyncIterator[Runtime]:
    config = make_config(simulator)
    async with Runtime(config, role=EngineRole.MCP, engine=True, release_when_idle=30.0) as rt:
        yield rt


@pytest.fixture
async def idle_runtime(make_config: MakeConfig) -> AsyncIterator[Runtime]:
    async with Runtime(make_config(None), role=EngineRole.MCP, engine=False) as rt:
        yield rt


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if c.type == "text")


# -- the view -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_the_song_view_is_a_ui_resource_with_a_csp_that_allows_nothing_else(
    idle_runtime: Runtime, mode: str
) -> None:
    async with Client(build_server(idle_runtime.service), mode=mode) as client:
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        read = await client.read_resource(SONG_VIEW_URI)
        capabilities = client.server_capabilities
    view = listed[SONG_VIEW_URI]
    assert view.mime_type == APP_MIME_TYPE
    if mode == "auto":  # the 2025-11-25 handshake has no place for extensions: hosts there
        # find the view through the tools' `_meta.ui.resourceUri` alone
        assert capabilities.extensions is not None and EXTENSION_ID in capabilities.extensions
    content = read.contents[0]
    assert isinstance(content, TextResourceContents) and content.mime_type == APP_MIME_TYPE
    meta = (content.meta or {}).get("ui") or (view.meta or {}).get("ui")
    assert meta is not None
    # No domain of any kind: the host's CSP for the view lets nothing in from outside.
    assert all(v == [] for v in meta["csp"].values()), meta
    html = content.text
    assert html == song_view_html()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert csp is not None
    policy = dict(
        (part.split()[0], part.split()[1:]) for part in csp.group(1).split(";") if part.strip()
    )
    assert policy["default-src"] == ["'none'"]
    assert policy["connect-src"] == ["'none'"]
    assert policy["media-src"] == ["blob:"]  # the takes, read through the bridge
    assert all("http" not in " ".join(sources) for sources in policy.values())


def test_the_bundle_loads_nothing_from_the_internet() -> None:
    html = song_view_html()
    urls = set(re.findall(r"""https?://[^\s"'`)<>\\]+""", html))
    assert urls - INERT_URLS - {u for u in urls if u.startswith("http://[$")} == set()
    # Nothing in a position that loads: no external script, link, import or url().
    assert not re.search(r"""<(script|link|img|iframe)[^>]+(src|href)=["']?https?:""", html)
    assert not re.search(r"""(@import|url\()\s*["']?https?:""", html)
    assert html.count("<script") == 1 and "</script>" in html
    assert "@modelcontextprotocol/ext-apps" not in html.split("<script>", 1)[0]


def test_the_view_is_shipped_in_the_package() -> None:
    """Built once from mcp-app/ and committed: installing or testing never builds it."""
    import bygheartd.mcp

    built = Path(bygheartd.mcp.__file__).parent / "ui" / "song.html"
    assert built.is_file() and built.read_text(encoding="utf-8") == song_view_html()
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert '"bygheartd.mcp.ui" = ["*.html"]' in pyproject
    lock = json.loads((Path(__file__).parent.parent / "mcp-app" / "package-lock.json").read_text())
    assert "node_modules/@modelcontextprotocol/ext-apps" in lock["packages"]


@pytest.mark.parametrize("mode", MODES)
async def test_get_song_and_generate_song_are_bound_to_the_view(
    idle_runtime: Runtime, mode: str
) -> None:
    async with Client(build_server(idle_runtime.service), mode=mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    for name in ("get_song", "generate_song"):
        meta = tools[name].meta or {}
        assert meta["ui"]["resourceUri"] == SONG_VIEW_URI, name
        assert meta["ui/resourceUri"] == SONG_VIEW_URI, name
    others = [n for n in tools if n not in ("get_song", "generate_song")]
    assert all("ui" not in (tools[n].meta or {}) for n in others)


def _comparable(result: CallToolResult) -> dict[str, Any]:
    """A result without its envelope `_meta` (the SDK stamps the server's identity there)."""
    return result.model_dump(mode="json", exclude={"meta"})


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_without_apps_gets_exactly_the_same_results(
    runtime: Runtime, mode: str
) -> None:
    server = build_server(runtime.service)
    async with Client(server, mode=mode) as plain:
        made = await plain.call_tool(
            "generate_song", {"lyrics": LYRICS, "title": "Lanterns", "wait_seconds": 30}
        )
        assert not made.is_error, text_of(made)
        job_id = (made.structured_content or {})["id"]
        plain_get = await plain.call_tool("get_song", {"job_id": job_id})
    async with Client(server, mode=mode, extensions=[APPS]) as apps:
        apps_get = await apps.call_tool("get_song", {"job_id": job_id})
    assert (plain_get.structured_content or {})["status"] == "done"
    assert _comparable(apps_get) == _comparable(plain_get)


# -- subscriptions ------------------------------------------------------------------------------


async def test_a_legacy_client_hears_of_each_status_change_until_the_song_ends(
    simulator: RunningSimulator, make_config: MakeConfig
) -> None:
    """Subscribed while the song is queued (no engine yet), then an engine starts on the same
    store, as a daemon would: every status change reaches the client, the last one `done`."""
    config = make_config(simulator)
    updates: list[str] = []
    ended = anyio.Event()

    async with Runtime(config, role=EngineRole.MCP, engine=False) as front:

        async def on_message(message: Any) -> None:
            root = getattr(message, "root", message)
            if isinstance(root, ResourceUpdatedNotification):
                updates.append(str(root.params.uri))
                job = await front.service.get(str(root.params.uri).rsplit("/", 1)[1])
                if job.status.is_final:
                    ended.set()

        server = build_server(front.service, feed_seconds=0.05)
        async with Client(server, mode="legacy", message_handler=on_message) as client:
            assert client.server_capabilities.resources is not None
            assert client.server_capabilities.resources.subscribe is True
            made = await client.call_tool("generate_song", {"lyrics": LYRICS, "title": "Subbed"})
            song = made.structured_content or {}
            assert song["status"] == "queued"
            uri = f"bygheart://songs/{song['id']}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.subscribe_resource(uri)
            async with Runtime(config, role=EngineRole.DAEMON, engine=True):
                with anyio.fail_after(30):
                    await ended.wait()
            history = await front.service.history(await front.service.get(song["id"]))
            # Every change after the one that created the job (which came before the
            # subscription). The song may be done before the last few notifications arrive.
            changes = [
                e for e in history if e.from_status and e.to_status not in (None, e.from_status)
            ]
            with anyio.fail_after(10):
                while len(updates) < len(changes):
                    await anyio.sleep(0.02)
    assert changes[-1].to_status == JobStatus.DONE.value and len(changes) >= 3
    assert updates == [uri] * len(changes)  # one per change, none after the end


async def test_a_subscription_ends_with_the_song(idle_runtime: Runtime) -> None:
    """Cancelled is an end: the change is told, a later retry is not."""
    updates: list[str] = []

    async def on_message(message: Any) -> None:
        root = getattr(message, "root", message)
        if isinstance(root, ResourceUpdatedNotification):
            updates.append(str(root.params.uri))

    service = idle_runtime.service
    server = build_server(service, feed_seconds=0.02)
    async with Client(server, mode="legacy", message_handler=on_message) as client:
        made = await client.call_tool("generate_song", {"lyrics": LYRICS, "title": "Ended"})
        job_id = (made.structured_content or {})["id"]
        uri = f"bygheart://songs/{job_id}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.subscribe_resource(uri)
        await client.call_tool("cancel_song", {"job_id": job_id})
        with anyio.fail_after(10):
            while not updates:
                await anyio.sleep(0.02)
        # A second song, subscribed, marks where the feed is: its cancel comes after the
        # retry, and the feed tells changes in the order they happened.
        other = await client.call_tool("generate_song", {"lyrics": LYRICS + "\nMore"})
        other_id = (other.structured_content or {})["id"]
        other_uri = f"bygheart://songs/{other_id}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.subscribe_resource(other_uri)
        await client.call_tool("retry_song", {"job_id": job_id})
        await client.call_tool("cancel_song", {"job_id": other_id})
        with anyio.fail_after(10):
            while other_uri not in updates:
                await anyio.sleep(0.02)
    assert updates == [uri, other_uri]


async def test_subscribing_to_an_unknown_song_is_refused_and_to_the_rest_is_a_no_op(
    idle_runtime: Runtime,
) -> None:
    """A song id that names no job is a mistake worth telling; any other resource never
    changes, so its subscription is honoured and never fires (as the SDK's listen does)."""
    async with Client(build_server(idle_runtime.service), mode="legacy") as client:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            with pytest.raises(MCPError, match="list_songs shows the known jobs"):
                await client.subscribe_resource("bygheart://songs/nosuchjob99")
            await client.subscribe_resource("bygheart://guide")
            await client.unsubscribe_resource("bygheart://guide")


async def test_a_2026_client_listens_to_a_song(runtime: Runtime) -> None:
    server = build_server(runtime.service, feed_seconds=0.05)
    async with Client(server, mode="auto") as client:
        assert client.protocol_version == "2026-07-28"
        made = await client.call_tool("generate_song", {"lyrics": LYRICS, "title": "Listened"})
        uri = f"bygheart://songs/{(made.structured_content or {})['id']}"
        seen: list[str] = []
        with anyio.fail_after(30):
            async with client.listen(resource_subscriptions=[uri]) as subscription:
                async for event in subscription:
                    assert isinstance(event, ResourceUpdated)
                    seen.append(event.uri)
                    read = await client.read_resource(uri)
                    first = read.contents[0]
                    assert isinstance(first, TextResourceContents)
                    if json.loads(first.text)["status"] == "done":
                        break
    assert seen and set(seen) == {uri}


# -- completions ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_completions_offer_job_ids_takes_styles_models_and_languages(
    idle_runtime: Runtime, mode: str
) -> None:
    service = idle_runtime.service
    async with Client(build_server(service), mode=mode) as client:
        assert client.server_capabilities.completions is not None
        made = await client.call_tool("generate_song", {"lyrics": LYRICS, "title": "Completed"})
        job_id = (made.structured_content or {})["id"]
        song = ResourceTemplateReference(type="ref/resource", uri="bygheart://songs/{job_id}")
        ids = await client.complete(song, {"name": "job_id", "value": job_id[:4]})
        none = await client.complete(song, {"name": "job_id", "value": "zzzz"})
        prompt = PromptReference(type="ref/prompt", name="write_song")
        genres = await client.complete(prompt, {"name": "genre", "value": "s"})
        moods = await client.complete(prompt, {"name": "mood", "value": ""})
        models = await client.complete(prompt, {"name": "model", "value": ""})
        languages = await client.complete(prompt, {"name": "language", "value": "Ja"})
        codes = await client.complete(prompt, {"name": "language", "value": "e"})
    assert job_id in ids.completion.values
    assert none.completion.values == []
    assert genres.completion.values == ["synthwave"]
    assert "melancholic" in moods.completion.values
    assert "acestep-v15-turbo" in models.completion.values or models.completion.values
    assert "Japanese" in languages.completion.values
    assert "en" in codes.completion.values and "es" in codes.completion.values


async def test_take_numbers_complete_for_a_finished_song(runtime: Runtime) -> None:
    async with Client(build_server(runtime.service)) as client:
        made = await client.call_tool(
            "generate_song", {"lyrics": LYRICS, "takes": 2, "wait_seconds": 30}
        )
        song = made.structured_content or {}
        assert song["status"] == "done", text_of(made)
        take = ResourceTemplateReference(
            type="ref/resource", uri="bygheart://songs/{job_id}/takes/{n}"
        )
        numbers = await client.complete(
            take, {"name": "n", "value": ""}, context_arguments={"job_id": song["id"]}
        )
    assert numbers.completion.values == [str(n) for n in range(1, len(song["files"]) + 1)]


# -- over HTTP ----------------------------------------------------------------------------------


@pytest.fixture
async def served(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> AsyncIterator[McpHttpServer]:
    token_file = tmp_path / "mcp-token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    config = make_config(simulator, mcp={"http": True, "port": 0, "token_file": str(token_file)})
    async with Runtime(config, role=EngineRole.MCP, engine=True) as runtime:
        server = McpHttpServer(runtime.service)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()


def http_client(
    server: McpHttpServer, mode: str, **kwargs: Any
) -> tuple[httpx2.AsyncClient, Client]:
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=httpx2.Timeout(30, read=60)
    )
    return http, Client(streamable_http_client(server.url, http_client=http), mode=mode, **kwargs)


@pytest.mark.parametrize("mode", MODES)
async def test_over_http_the_view_is_served_and_results_stay_the_same(
    served: McpHttpServer, mode: str
) -> None:
    http, client = http_client(served, mode)
    async with http, client:
        assert client.protocol_version == {"legacy": "2025-11-25", "auto": "2026-07-28"}[mode]
        if mode == "auto":  # `server/discover`, the 2026-07-28 way to learn about a server
            found = await client.session.discover()
            assert "2026-07-28" in found.supported_versions
            assert found.capabilities.extensions and EXTENSION_ID in found.capabilities.extensions
            assert found.capabilities.resources and found.capabilities.resources.subscribe
            assert found.capabilities.completions is not None
        read = await client.read_resource(SONG_VIEW_URI)
        tools = {t.name: t for t in (await client.list_tools()).tools}
        made = await client.call_tool(
            "generate_song", {"lyrics": LYRICS, "title": "Wired", "wait_seconds": 30}
        )
        job_id = (made.structured_content or {})["id"]
        plain = await client.call_tool("get_song", {"job_id": job_id})
        ids = await client.complete(
            ResourceTemplateReference(type="ref/resource", uri="bygheart://songs/{job_id}"),
            {"name": "job_id", "value": job_id[:6]},
        )
    http2, apps = http_client(served, mode, extensions=[APPS])
    async with http2, apps:
        with_apps = await apps.call_tool("get_song", {"job_id": job_id})
    content = read.contents[0]
    assert isinstance(content, TextResourceContents) and content.mime_type == APP_MIME_TYPE
    assert tools["get_song"].meta and tools["get_song"].meta["ui"]["resourceUri"] == SONG_VIEW_URI
    assert ids.completion.values == [job_id]
    assert _comparable(with_apps) == _comparable(plain)


async def test_over_http_a_2026_client_listens_and_a_legacy_subscribe_says_what_to_do(
    served: McpHttpServer,
) -> None:
    http, client = http_client(served, "auto")
    async with http, client:
        made = await client.call_tool("generate_song", {"lyrics": LYRICS, "title": "Streamed"})
        uri = f"bygheart://songs/{(made.structured_content or {})['id']}"
        with anyio.fail_after(30):
            async with client.listen(resource_subscriptions=[uri]) as subscription:
                async for event in subscription:
                    assert isinstance(event, ResourceUpdated) and event.uri == uri
                    read = await client.read_resource(uri)
                    first = read.contents[0]
                    assert isinstance(first, TextResourceContents)
                    if json.loads(first.text)["status"] == "done":
                        break
    http2, legacy = http_client(served, "legacy")
    async with http2, legacy:
        with warnings.catch_warnings(), pytest.raises(MCPError, match="subscriptions/listen"):
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await legacy.subscribe_resource(uri)
