"""Who may use the library page: a session cookie from a one-time `bygheartd web` link, or
the MCP bearer token for scripts; and a CSRF token bound to the session for every change.

Sessions live in the daemon's memory only: a restart logs every browser out (run
`bygheartd web` again), and nothing that could open a session is ever written to disk.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from starlette.requests import Request

__all__ = ["COOKIE", "CSRF_FIELD", "CSRF_HEADER", "Access", "Sessions"]

COOKIE = "bygheartd_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Access:
    """How a request got in: `session` (a browser, CSRF checked on changes) or `bearer`
    (a script: no cookie is involved, so there is nothing to forge)."""

    kind: str
    csrf: str = ""


@dataclass
class Sessions:
    """Random session tokens mapped to their CSRF token and expiry (monotonic clock)."""

    lifetime_seconds: float
    bearer: str | None = None
    _live: dict[str, tuple[str, float]] = field(default_factory=dict)

    def open(self) -> str:
        """A new session (after a good login code); returns the cookie value."""
        now = time.monotonic()
        for token, (_, expires) in list(self._live.items()):
            if expires <= now:
                del self._live[token]
        token = secrets.token_urlsafe(32)
        self._live[token] = (secrets.token_urlsafe(24), now + self.lifetime_seconds)
        return token

    def close(self, token: str) -> None:
        self._live.pop(token, None)

    def access(self, request: Request) -> Access | None:
        """The request's access, or None when it has neither a live session nor the token."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if self.bearer is not None and scheme.lower() == "bearer":
            if hmac.compare_digest(value.strip().encode(), self.bearer.encode()):
                return Access("bearer")
            return None
        token = request.cookies.get(COOKIE, "")
        entry = self._live.get(token) if token else None
        if entry is None:
            return None
        csrf, expires = entry
        if expires <= time.monotonic():
            del self._live[token]
            return None
        return Access("session", csrf)

    @staticmethod
    def csrf_ok(access: Access, sent: str | None) -> bool:
        """A change is allowed from a script, or from a session that sent its own token."""
        if access.kind == "bearer":
            return True
        return bool(sent) and hmac.compare_digest((sent or "").encode(), access.csrf.encode())
