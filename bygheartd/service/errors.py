"""Errors a face gets back from the service: each one a user can act on."""

from __future__ import annotations

from bygheartd.errors import BygheartdError


class ServiceError(BygheartdError):
    """A request a face made that cannot be done (unknown job, wrong status)."""


class NoApiKey(BygheartdError):
    pass
