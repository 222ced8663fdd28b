"""The exceptions bygheartd raises on purpose, each carrying a message a user can act on.

Request and song-file errors know where the problem is (file, line, key) and how to fix it;
`str(error)` is what the CLI, MCP replies and `NAME.error.txt` show: one line, or one line
per problem when a request has several (all are reported at once, never one per attempt).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self


class BygheartdError(Exception):
    """Base of every error we raise on purpose: callers catch this, not `Exception`."""


class RequestError(BygheartdError):
    """A song request that cannot be sent: `source: line N: message: hint`.

    `reason` is the bare message; `source`, `line`, `key` and `hint` say where and how to fix it,
    so that the CLI, MCP and the drop folder can all point at the same spot. When a request has
    several problems, `problems` holds each (with its own line, key and hint): see `collect`.
    """

    def __init__(
        self,
        reason: str,
        *,
        source: str | None = None,
        key: str | None = None,
        line: int | None = None,
        hint: str | None = None,
        problems: Sequence[RequestError] = (),
    ) -> None:
        self.reason = reason
        self.source = source
        self.key = key
        self.line = line
        self.hint = hint
        self.problems: tuple[RequestError, ...] = tuple(problems)
        super().__init__(self._format())

    @classmethod
    def collect(cls, problems: Sequence[RequestError], *, source: str | None = None) -> Self:
        """One error for every problem found, so that a user fixes a file in one round.

        A single problem is returned as itself (its wording unchanged); several become one
        error whose `problems` list them, `reason` names them all on one line (for job
        reasons and logs) and `str()` lists them one per line with line, key and fix.
        """
        if not problems:
            raise ValueError("collect() needs at least one problem")
        if len(problems) == 1 and isinstance(problems[0], cls):
            return problems[0]
        reason = f"{len(problems)} problems: " + "; ".join(p.reason for p in problems)
        return cls(reason, source=source, problems=problems)

    def spot(self) -> str:
        """`line 3, key 'bpm'`: where this problem is, or "" when nothing is known."""
        where = [f"line {self.line}" if self.line else "", f"key {self.key!r}" if self.key else ""]
        return ", ".join(w for w in where if w)

    def item(self) -> str:
        """This problem as one line of a list: `line 3, key 'bpm': reason: hint`."""
        parts = [p for p in (self.spot(), self.reason, self.hint) if p]
        return ": ".join(parts)

    def _format(self) -> str:
        if self.problems:
            head = f"{self.source}: " if self.source else ""
            items = "".join(f"\n  {p.item()}" for p in self.problems)
            return f"{head}{len(self.problems)} problems:{items}"
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
