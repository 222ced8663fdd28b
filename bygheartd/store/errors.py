"""The store's errors: each says what went wrong with the job store and what to do."""

from __future__ import annotations

from bygheartd.errors import BygheartdError


class StoreError(BygheartdError):
    """The store cannot be used (schema too new, database unreadable)."""


class StaleTransition(BygheartdError):
    """A job was no longer in the expected status (another process moved it first)."""


class JobNotFound(BygheartdError):
    pass


class KeyTaken(BygheartdError):
    """Another process stored a job under the same idempotency key between our lookup and
    our insert: the key's job exists now, and is the answer."""


class StoreDamaged(StoreError):
    """The job store file is not a database, or some of its pages are damaged.

    Its own type, so that a face can say "restore a backup" instead of showing SQLite's
    message, and so that nothing mistakes a damaged file for an empty store.
    """

    def __init__(self, message: str, *, detail: str) -> None:
        super().__init__(message)
        self.detail = detail
