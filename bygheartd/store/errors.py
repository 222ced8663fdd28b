"""The store's errors: each says what went wrong with the job store and what to do.

The store lets no driver error out (no `sqlite3.Error`, no `psycopg.Error`): whatever store
is behind the boundary, callers catch these.

    BygheartdError
     ├── StoreError          the store cannot be used now (damaged, too new, locked too long)
     │    ├── StoreDamaged
     │    └── StoreBusy
     ├── StaleTransition     the job is not where the caller expected (lost a race)
     │    └── IllegalMove    the lifecycle has no such move (ALLOWED_MOVES)
     ├── JobNotFound
     ├── KeyTaken            an idempotency key names a job already
     ├── DropTaken           another process made a job of this exact drop just now
     └── OverBudget          a reservation would pass a credit cap (another daemon spent)
"""

from __future__ import annotations

from bygheartd.errors import BygheartdError


class StoreError(BygheartdError):
    """The store cannot be used (schema too new, database unreadable)."""


class StaleTransition(BygheartdError):
    """A job was no longer in the expected status (another process moved it first)."""


class IllegalMove(StaleTransition):
    """A move the lifecycle does not have (`jobs.ALLOWED_MOVES`): refused, naming both
    statuses. A subclass of `StaleTransition` because a stage that meets it has lost a race
    (the job was cancelled or finished meanwhile) and must leave the job alone."""

    def __init__(self, job_id: str, current: str, to: str) -> None:
        super().__init__(f"job {job_id} cannot move from {current} to {to}")
        self.current = current
        self.to = to


class JobNotFound(BygheartdError):
    pass


class DropTaken(BygheartdError):
    """Another process stored a job for the same drop identity between our lookup and our
    insert: the file is being taken care of there."""


class StoreBusy(StoreError):
    """Another process held the store's write lock longer than the store waits for it."""


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


class OverBudget(BygheartdError):
    """A reservation would pass the daily or monthly cap: checked in the transaction that
    would make it, under one lock per account, so daemons sharing a store never overspend."""


class ServerFull(BygheartdError):
    """A pool server already has its `max_in_flight` songs in flight (counted over every
    engine on the store, under one lock per server): the submit goes elsewhere or waits."""
