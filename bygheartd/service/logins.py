"""One-time login codes for the library page (`bygheartd web`), kept in the store.

Only a code's hash is stored (in the store's meta table, so the daemon can check a code
another process made), with its expiry; a code works once, and expired ones are swept out.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from bygheartd.jobs import iso, parse_iso, utcnow
from bygheartd.store.boundary import JobStore

LOGIN_CODE_SECONDS = 120.0  # how long a `bygheartd web` link stays valid
LOGIN_META = "web-login:"  # + the code's SHA-256: value is the expiry (ISO time)
WEB_ADDRESS_META = "web-address"


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


class WebLogins:
    def __init__(self, store: JobStore) -> None:
        self._store = store

    async def new_code(self, ttl_seconds: float = LOGIN_CODE_SECONDS) -> str:
        """A one-time code for the library page, valid for `ttl_seconds`."""
        now = utcnow()
        for key, value in (await self._store.meta_with_prefix(LOGIN_META)).items():
            expires = parse_iso(value)
            if expires is None or expires <= now:
                await self._store.take_meta(key)
        code = secrets.token_urlsafe(24)
        expires_at = iso(now + timedelta(seconds=ttl_seconds)) or ""
        await self._store.set_meta(LOGIN_META + _code_hash(code), expires_at)
        return code

    async def use_code(self, code: str) -> bool:
        """True once for a code from `new_code` that has not expired; never again."""
        if not code or len(code) > 200:
            return False
        value = await self._store.take_meta(LOGIN_META + _code_hash(code))
        expires = parse_iso(value) if value is not None else None
        return expires is not None and utcnow() < expires

    async def set_address(self, url: str | None) -> None:
        """Where the running daemon serves the library (its real port, even for port 0)."""
        await self._store.set_meta(WEB_ADDRESS_META, url)

    async def address(self) -> str | None:
        """The library's address as the daemon last announced it, or None."""
        return await self._store.get_meta(WEB_ADDRESS_META)
