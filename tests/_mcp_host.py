"""The MCP Apps test host, served to Chromium: mcp-app/test-host/host.bundle.js (the official
TypeScript client plus ext-apps' `AppBridge`, built by `npm run build:host` and committed) and
a page that tells it what to call. The routes go on the `McpHttpServer` under test
(`extra_routes`), so the host's fetches to /mcp are same-origin on loopback and need no CORS.

Used by tests/test_mcp_view_browser.py and docs/mcp_view_screenshot.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

HOST_BUNDLE = Path(__file__).resolve().parent.parent / "mcp-app" / "test-host" / "host.bundle.js"
HOST_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>test host</title></head>
<body>
<script type="application/json" id="host-config">{config}</script>
<script src="/test-host/host.js"></script>
</body></html>
"""


def host_routes(token: str | None) -> list[BaseRoute]:
    """`extra_routes` for `McpHttpServer`: the host page at /test-host/ (the tool, its
    arguments and whether the host renders Apps come from the query string, see `host_url`)
    and the bundle at /test-host/host.js."""

    async def page(request: Request) -> Response:
        config = {
            "mcpUrl": "/mcp",
            "token": token,
            "tool": request.query_params["tool"],
            "arguments": json.loads(request.query_params["arguments"]),
            "apps": request.query_params.get("apps") == "1",
        }
        # Inside <script>, only "</" could end the element early.
        text = json.dumps(config).replace("</", "<\\/")
        return HTMLResponse(HOST_PAGE.format(config=text))

    async def bundle(_: Request) -> Response:
        body = HOST_BUNDLE.read_bytes()
        return Response(body, media_type="text/javascript; charset=utf-8")

    return [Route("/test-host/", page), Route("/test-host/host.js", bundle)]


def host_url(base_url: str, tool: str, arguments: dict[str, Any], *, apps: bool = True) -> str:
    """The host page that calls `tool` with `arguments` and shows the result: through the
    tool's view when `apps`, else as the text a client without Apps shows."""
    query = {"tool": tool, "arguments": json.dumps(arguments), "apps": "1" if apps else "0"}
    return f"{base_url}/test-host/?{urlencode(query)}"


# Waits for the host to have shown the result (or failed); `window.testHost` says which.
HOST_SETTLED = "['shown', 'failed'].includes(window.testHost && window.testHost.phase)"
