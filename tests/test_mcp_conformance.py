"""The official MCP conformance suite (`@modelcontextprotocol/conformance`) against the MCP
server over streamable HTTP, for every server scenario that needs none of the suite's own
fixture tools, prompts or resources.

The suite needs Node 22 and comes from the npm registry, which tests never reach: `make
test` (its `node-tools` step) installs both into build/node-tools once, where this module
finds them (or in BYGHEARTD_CONFORMANCE_DIR); without them the module is skipped. The
server is served without a bearer token here (the suite sends none): the token layer has
tests of its own.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import uvicorn
from conftest import MakeConfig
from starlette.applications import Starlette
from starlette.routing import Mount

from bygheartd.mcp.server import build_server
from bygheartd.runtime import EngineRole, Runtime

pytestmark = pytest.mark.anyio

SCENARIOS = [
    "server-initialize",
    "ping",
    "tools-list",
    "tools-call-error",
    "resources-list",
    "resources-subscribe",
    "resources-unsubscribe",
    "prompts-list",
    "completion-complete",
    "dns-rebinding-protection",
]


NODE_TOOLS = Path(__file__).resolve().parent.parent / "build" / "node-tools"


def suite() -> Path:
    folder = os.environ.get("BYGHEARTD_CONFORMANCE_DIR", "")
    if not folder and (NODE_TOOLS / "node_modules" / ".bin" / "conformance").exists():
        folder = str(NODE_TOOLS)  # installed by `make test` / `make node-tools`
    if not folder:
        pytest.skip("the conformance suite is not installed here: `make node-tools` installs it")
    root = Path(folder)
    for needed in ("node_modules/.bin/node", "node_modules/.bin/conformance"):
        if not (root / needed).exists():
            pytest.fail(f"{root / needed} is missing: run `make conformance` again")
    return root


@pytest.fixture
async def url(make_config: MakeConfig) -> AsyncIterator[str]:
    async with Runtime(make_config(None), role=EngineRole.MCP, engine=False) as runtime:
        server = build_server(runtime.service)
        mcp_app = server.streamable_http_app(
            stateless_http=True, json_response=False, host="127.0.0.1"
        )

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            async with server.session_manager.run():
                yield

        app = Starlette(routes=[Mount("/", app=mcp_app)], lifespan=lifespan)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: uv.serve(sockets=[sock]))
            with anyio.fail_after(20):
                while not uv.started:
                    await anyio.sleep(0.05)
            try:
                yield f"http://127.0.0.1:{port}/mcp"
            finally:
                uv.should_exit = True
        sock.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_the_server_passes_the_conformance_suite(url: str) -> None:
    root = suite()
    failures = []
    for scenario in SCENARIOS:
        done = await anyio.run_process(
            [
                str(root / "node_modules/.bin/node"),
                str(root / "node_modules/.bin/conformance"),
                "server",
                "--url",
                url,
                "--scenario",
                scenario,
            ],
            cwd=root,
            check=False,
        )
        output = (done.stdout + done.stderr).decode(errors="replace")
        passed = re.search(r"Passed: (\d+)/(\d+), (\d+) failed", output)
        if passed is None or passed.group(1) != passed.group(2) or passed.group(3) != "0":
            failures.append(f"{scenario}:\n{output[-2000:]}")
    assert not failures, "\n\n".join(failures)
