"""Errors a face gets back from the service: each one a user can act on."""

from __future__ import annotations

from bygheartd.errors import BygheartdError
from bygheartd.store.errors import DropTaken as DropTaken  # the drop folder meets it


class ServiceError(BygheartdError):
    """A request a face made that cannot be done (unknown job, wrong status)."""


class IdempotencyConflict(ServiceError):
    """An idempotency key sent again with another request. Answering with the key's job
    would tell the caller its new request was queued when it was not; queuing it would break
    the promise that one key is one job. So the caller must choose."""

    def __init__(self, key: str, job_id: str) -> None:
        self.key = key
        self.job_id = job_id
        super().__init__(
            f"idempotency key {key!r} was used for job {job_id} with a different request: "
            "use a new key, or send the same request to get that job back"
        )
