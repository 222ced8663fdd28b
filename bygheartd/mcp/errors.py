"""Errors MCP tools answer with (the assistant shows them to the user)."""

from __future__ import annotations

from bygheartd.errors import BygheartdError


class LyricsFileRefused(BygheartdError):
    """A `lyrics_file` outside the folders MCP may read, or missing."""
