"""The song view that MCP Apps hosts show inline (DESIGN.md "MCP: an inline player for
assistants"): one self-contained HTML file, built from mcp-app/ and shipped in the wheel,
served as `ui://bygheartd/song.html` through the SDK's Apps extension and bound to the tools
that return a song. The tools' results stay the same for every client: a host without the
extension simply never reads this resource.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from mcp.server.apps import Apps, ResourceCsp

__all__ = ["SONG_VIEW_URI", "song_view", "song_view_html", "view_meta"]

SONG_VIEW_URI = "ui://bygheartd/song.html"


@functools.cache
def song_view_html() -> str:
    """The built view (read once: it does not change while the process runs)."""
    return (resources.files("bygheartd.mcp") / "ui" / "song.html").read_text(encoding="utf-8")


def view_meta() -> dict[str, Any]:
    """A tool's `_meta` binding it to the view: the extension's `ui.resourceUri`, plus the
    flat `ui/resourceUri` key that hosts built on the first draft of the extension read."""
    return {"ui": {"resourceUri": SONG_VIEW_URI}, "ui/resourceUri": SONG_VIEW_URI}


def song_view() -> Apps:
    """The Apps extension carrying the view. Its CSP lists no domain at all: the view loads
    nothing (script and styles are inline, the audio comes through the host bridge)."""
    apps = Apps()
    apps.add_html_resource(
        SONG_VIEW_URI,
        song_view_html(),
        name="song view",
        title="Song",
        description="A song's progress, then its takes with players, quality verdicts and "
        "the keeper, with buttons to keep another take or make it again.",
        csp=ResourceCsp(connect_domains=[], resource_domains=[], frame_domains=[]),
        prefers_border=True,
    )
    return apps
