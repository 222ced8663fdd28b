"""The exceptions bygheartd raises on purpose, each carrying a message a user can act on.

Request and song-file errors know where the problem is (file, line, key) and how to fix it;
`str(error)` is the one line shown in the CLI, MCP replies and `NAME.error.txt`.
"""

from __future__ import annotations


class BygheartdError(Exception):
    """Base of every error we raise on purpose: callers catch this, not `Exception`."""


class RequestError(BygheartdError):
    """A song request that cannot be sent: `source: line N: message: hint`.

    `reason` is the bare message; `source`, `line`, `key` and `hint` say where and how to fix it,
    so that the CLI, MCP and the drop folder can all point at the same spot.
    """

    def __init__(
        self,
        reason: str,
        *,
        source: str | None = None,
        key: str | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.reason = reason
        self.source = source
        self.key = key
        self.line = line
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        parts = [p for p in (self.source, f"line {self.line}" if self.line else None) if p]
        parts.append(self.reason)
        if self.hint:
            parts.append(self.hint)
        return ": ".join(parts)

    def __str__(self) -> str:
        return self._format()


class SongFileError(RequestError):
    """A song file that cannot be read or parsed (or whose request is invalid)."""


class ConfigError(BygheartdError):
    """An invalid configuration: `source: key: message: hint` when those are known."""

    def __init__(
        self,
        reason: str,
        *,
        source: str | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.reason = reason
        self.source = source
        self.key = key
        self.hint = hint
        parts = [p for p in (source, reason, hint) if p]
        super().__init__(": ".join(parts))


class RejectJob(BygheartdError):
    """Raised by a plugin's `before_submit` to fail a job, before anything is spent.

    Plugins raise `RejectJob("reason")`; the plugin host fills in `plugin` with its name.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.plugin: str | None = None


class PluginError(BygheartdError):
    """A plugin failed where a failure must stop the job (`before_submit`: fail safe for money)."""

    def __init__(self, plugin: str, hook: str, message: str) -> None:
        super().__init__(f"plugin {plugin!r} failed in {hook}: {message}")
        self.plugin = plugin
        self.hook = hook
