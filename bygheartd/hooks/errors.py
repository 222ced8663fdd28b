"""Plugin set-up errors (the hook failures themselves are `PluginError` in bygheartd.errors)."""

from __future__ import annotations

from bygheartd.errors import BygheartdError


class SecretError(BygheartdError):
    """A `{ env = ... }` / `{ file = ... }` indirection could not be resolved."""
