"""MCP over streamable HTTP as the daemon serves it: a real uvicorn on a free loopback port in
the test's own loop, a bearer token, Host checks, /health, and progress over SSE.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from conftest import TEST_KEY, MakeConfig
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import BlobResourceContents, ResourceLink

from bygheartd.config import Config
from bygheartd.errors import ConfigError
from bygheartd.mcp.http import HostRules, McpHttpServer
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator

pytestmark = pytest.mark.anyio

TOKEN = "test-token-0b7f3e9a51c24d8e"
LYRICS = "[Verse]\nWires hum across the city\n\n[Chorus]\nWe are the signal"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def http_config(make_config: MakeConfig, sim: RunningSimulator | None, tmp_path: Path) -> Config:
    token_file = tmp_path / "mcp-token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    return make_config(
        sim,
        mcp={
            "http": True,
            "port": 0,
            "token_file": str(token_file),
            "allowed_hosts": ["studio.local"],
        },
    )


@pytest.fixture
async def served(
    simulator: RunningSimulator, make_config: MakeConfig, tmp_path: Path
) -> AsyncIterator[McpHttpServer]:
    config = http_config(make_config, simulator, tmp_path)
    async with Runtime(config, role=EngineRole.MCP, engine=True) as runtime:
        server = McpHttpServer(runtime.service)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()


def origin(server: McpHttpServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def token_client(server: McpHttpServer, mode: str) -> tuple[httpx2.AsyncClient, Client]:
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=httpx2.Timeout(30, read=60)
    )
    return http, Client(streamable_http_client(server.url, http_client=http), mode=mode)


async def test_health_needs_no_token_and_shows_no_secret(served: McpHttpServer) -> None:
    async with httpx.AsyncClient() as http:
        reply = await http.get(origin(served) + "/health")
    assert reply.status_code == 200
    assert reply.json()["status"] == "ok" and reply.json()["engine"] is True
    assert TOKEN not in reply.text and TEST_KEY not in reply.text


@pytest.mark.parametrize("auth", [None, "Bearer wrong-token-123456789", f"Basic {TOKEN}"])
async def test_mcp_without_the_right_token_is_401(served: McpHttpServer, auth: str | None) -> None:
    headers = dict(MCP_HEADERS) | ({"Authorization": auth} if auth else {})
    async with httpx.AsyncClient() as http:
        reply = await http.post(served.url, json=INIT, headers=headers)
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert TOKEN not in reply.text
    assert "'Authorization: Bearer TOKEN'" in reply.json()["detail"]


async def test_a_foreign_host_header_is_refused(served: McpHttpServer) -> None:
    headers = MCP_HEADERS | {"Authorization": f"Bearer {TOKEN}", "Host": "evil.example"}
    async with httpx.AsyncClient() as http:
        reply = await http.post(served.url, json=INIT, headers=headers)
    assert reply.status_code == 421


@pytest.mark.parametrize("host", ["studio.local", "localhost", "127.0.0.1"])
async def test_loopback_and_configured_hosts_are_accepted(served: McpHttpServer, host: str) -> None:
    headers = MCP_HEADERS | {"Authorization": f"Bearer {TOKEN}", "Host": f"{host}:{served.port}"}
    async with httpx.AsyncClient() as http:
        reply = await http.post(served.url, json=INIT, headers=headers)
    assert reply.status_code == 200, reply.text


# Each starts with an accepted name, which the SDK's prefix match (`localhost:*`) let through.
LOOKALIKE_HOSTS = [
    "localhost:80@evil.example",
    "localhost:{port}.evil.example",
    "127.0.0.1:{port}.evil.example",
    "[::1]:{port}.evil.example",
    "[::1]:{port}@evil.example",
    "[::1]evil.example",
    "[::1:{port}",
    "::1",
    "studio.local:{port}:1",
    "localhost:",
    "localhost:99999",
    "localhost:+80",
    "localhost.evil.example:{port}",
    "evil.example",
]


@pytest.mark.parametrize("host", LOOKALIKE_HOSTS)
async def test_a_host_that_only_starts_like_an_accepted_one_is_refused(
    served: McpHttpServer, host: str
) -> None:
    headers = MCP_HEADERS | {
        "Authorization": f"Bearer {TOKEN}",
        "Host": host.format(port=served.port),
    }
    async with httpx.AsyncClient() as http:
        reply = await http.post(served.url, json=INIT, headers=headers)
        health = await http.get(origin(served) + "/health", headers={"Host": headers["Host"]})
    assert reply.status_code == 421, reply.text
    assert reply.text.startswith("Invalid Host header")
    # /health obeys the same rule: no job counts for a page on a rebound name.
    assert health.status_code == 421 and "jobs" not in health.text


@pytest.mark.parametrize(
    "host", ["localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}", "localhost", "[::1]"]
)
async def test_loopback_names_with_or_without_a_numeric_port_are_accepted(
    served: McpHttpServer, host: str
) -> None:
    headers = MCP_HEADERS | {
        "Authorization": f"Bearer {TOKEN}",
        "Host": host.format(port=served.port),
    }
    async with httpx.AsyncClient() as http:
        reply = await http.post(served.url, json=INIT, headers=headers)
        health = await http.get(origin(served) + "/health", headers={"Host": headers["Host"]})
    assert reply.status_code == 200, reply.text
    assert health.status_code == 200 and health.json()["status"] == "ok"


@pytest.mark.parametrize(
    "value",
    [
        "http://evil.example",
        "http://localhost:80@evil.example",
        "http://localhost:{port}.evil.example",
        "https://[::1]:{port}.evil.example",
        "http://localhost:{port}/",
        "ftp://localhost:{port}",
        "null",
    ],
)
async def test_a_foreign_origin_is_refused_on_every_route(
    served: McpHttpServer, value: str
) -> None:
    bad = {"Origin": value.format(port=served.port)}
    headers = MCP_HEADERS | {"Authorization": f"Bearer {TOKEN}"} | bad
    async with httpx.AsyncClient() as http:
        reply = await http.post(served.url, json=INIT, headers=headers)
        health = await http.get(origin(served) + "/health", headers=bad)
    assert reply.status_code == 403 and reply.text == "Invalid Origin header"
    assert health.status_code == 403 and "jobs" not in health.text


@pytest.mark.parametrize(
    "value", ["http://localhost:{port}", "https://127.0.0.1:{port}", "http://studio.local"]
)
async def test_an_origin_on_an_accepted_host_is_let_through(
    served: McpHttpServer, value: str
) -> None:
    good = {"Origin": value.format(port=served.port)}
    headers = MCP_HEADERS | {"Authorization": f"Bearer {TOKEN}"} | good
    async with httpx.AsyncClient() as http:
        reply = await http.post(served.url, json=INIT, headers=headers)
        health = await http.get(origin(served) + "/health", headers=good)
    assert reply.status_code == 200, reply.text
    assert health.status_code == 200


def test_a_configured_port_is_the_only_one_accepted_for_that_name(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(
        None, mcp={"allowed_hosts": ["Music.Example.org:443", "fe80::1", "studio.local:*"]}
    )
    rules = HostRules.of(config)
    assert rules.host_ok("music.example.org:443") and rules.host_ok("music.example.org")
    assert not rules.host_ok("music.example.org:8443")
    assert rules.host_ok("[fe80::1]:8765") and rules.host_ok("studio.local:1")
    assert rules.origin_ok("https://music.example.org")
    assert not rules.origin_ok("https://music.example.org:8443")
    # The SDK's own check behind ours is given the same names.
    sdk = rules.transport_security()
    assert "music.example.org:443" in sdk.allowed_hosts
    assert "music.example.org:*" not in sdk.allowed_hosts
    assert "[fe80::1]:*" in sdk.allowed_hosts


@pytest.mark.parametrize("entry", ["http://studio.local", "studio.local/mcp", "a b", "x:port"])
async def test_an_allowed_hosts_entry_that_is_no_host_refuses_to_start(
    make_config: MakeConfig, tmp_path: Path, entry: str
) -> None:
    token_file = tmp_path / "mcp-token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    config = make_config(
        None, mcp={"http": True, "port": 0, "token_file": str(token_file), "allowed_hosts": [entry]}
    )
    async with Runtime(config, role=EngineRole.MCP, engine=False) as runtime:
        server = McpHttpServer(runtime.service)
        with pytest.raises(ConfigError, match="allowed_hosts"):
            await server.start()
        await server.stop()


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_song_is_generated_over_http_with_progress(
    served: McpHttpServer, mode: str
) -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    http, client = token_client(served, mode)
    async with http, client:
        result = await client.call_tool(
            "generate_song",
            {"lyrics": LYRICS, "title": "Signal", "wait_seconds": 30},
            progress_callback=on_progress,
        )
    assert not result.is_error
    song: dict[str, Any] = result.structured_content or {}
    assert song["status"] == "done" and Path(song["files"][0]["path"]).is_file()
    assert progress and progress == sorted(set(progress))
    assert TEST_KEY not in result.model_dump_json() and TOKEN not in result.model_dump_json()


async def test_http_refuses_to_start_without_a_token(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(None, mcp={"http": True, "port": 0})
    async with Runtime(config, role=EngineRole.MCP, engine=False) as runtime:
        server = McpHttpServer(runtime.service)
        with pytest.raises(ConfigError, match="token_file"):
            await server.start()
        await server.stop()


async def test_an_empty_token_file_is_refused(make_config: MakeConfig, tmp_path: Path) -> None:
    empty = tmp_path / "empty-token"
    empty.write_text("\n", encoding="utf-8")
    config = make_config(None, mcp={"http": True, "port": 0, "token_file": str(empty)})
    async with Runtime(config, role=EngineRole.MCP, engine=False) as runtime:
        with pytest.raises(ConfigError, match="no usable token"):
            await McpHttpServer(runtime.service).start()


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_finished_song_over_http_links_takes_that_read_as_audio(
    served: McpHttpServer, mode: str
) -> None:
    """An assistant on another machine cannot open a local path: the take's resource is."""
    http, client = token_client(served, mode)
    async with http, client:
        result = await client.call_tool(
            "generate_song", {"lyrics": LYRICS, "title": "Linked", "wait_seconds": 30}
        )
        song: dict[str, Any] = result.structured_content or {}
        assert song["status"] == "done", result
        links = [c for c in result.content if isinstance(c, ResourceLink)]
        read = await client.read_resource(str(links[0].uri))
    assert str(links[0].uri) == f"bygheart://songs/{song['id']}/takes/1"
    blob = read.contents[0]
    assert isinstance(blob, BlobResourceContents) and blob.mime_type == links[0].mime_type
    assert base64.b64decode(blob.blob) == Path(song["files"][0]["path"]).read_bytes()
