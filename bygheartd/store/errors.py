"""The store's errors: each says what went wrong with the job store and what to do."""

from __future__ import annotations

from bygheartd.errors import BygheartdError


class StoreError(BygheartdError):
    """The store cannot be used (schema too new, database unreadable)."""


class StaleTransition(BygheartdError):
    """A job was no longer in the expected status (another process moved it first)."""


class JobNotFound(BygheartdError):
    pass
