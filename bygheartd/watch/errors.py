"""The drop folder's errors: why a file is refused, and an inbox already in use."""

from __future__ import annotations

from bygheartd.errors import BygheartdError, RequestError


class InboxBusy(BygheartdError):
    """Another bygheartd already consumes this inbox."""


class Rejection(Exception):
    """Why a dropped file cannot become a job: the `RequestError` its error note explains
    (what is wrong, where, how to fix it)."""

    def __init__(self, error: RequestError, *, redrop: str | None = None) -> None:
        super().__init__(error.reason)
        self.error = error
        # Where in the inbox the fixed file belongs, when not where it was dropped (a file
        # in the folder of a preset that does not exist goes to the right preset's folder).
        self.redrop = redrop

    @classmethod
    def because(
        cls,
        reason: str,
        *,
        hint: str | None = None,
        key: str | None = None,
        redrop: str | None = None,
    ) -> Rejection:
        """A rejection of the drop folder's own (a link, a preset, a duplicate)."""
        return cls(RequestError(reason, hint=hint, key=key), redrop=redrop)

    @property
    def reason(self) -> str:
        return self.error.reason

    @property
    def full(self) -> str | None:
        """The parser's whole message (file, line, reason, hint), when it came from one."""
        return str(self.error) if self.error.source else None


class Unstable(Exception):
    """The file changed while it was read: it goes back to the stability tracker."""
