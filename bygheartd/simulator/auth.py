"""Who may call: ACE-Step's rules (body `ai_token` first, header with or without `Bearer `,
auth off without a key) and the hosted wrapper's `bgh_` keys with their plans.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from .plans import Plan, plan_for_key
from .settings import SimulatorSettings

MISSING_JOB = "Missing ai_token or Authorization header"
MISSING_HEADER = "Missing Authorization header"
UPGRADE_MESSAGE = (
    "The Bygheart Music API needs a Pro or Ultimate plan; this key belongs to a Free "
    "account. Upgrade your plan to use the API."
)


@dataclass(frozen=True)
class Caller:
    """An authenticated caller; `key` and `plan` are None when auth is off."""

    key: str | None
    plan: Plan | None


def _header_token(headers: Headers) -> str | None:
    raw = headers.get("authorization")
    if raw is None or not raw.strip():
        return None
    raw = raw.strip()
    if raw[:7].lower() == "bearer ":
        return raw[7:].strip()
    return raw


def _unauthorized(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=401)


def authenticate(
    settings: SimulatorSettings,
    headers: Headers,
    body_token: str | None = None,
    *,
    header_only: bool = False,
) -> Caller | JSONResponse:
    """Return the caller, or the 401/403 response the real server would send."""
    if settings.backend == "acestep" and settings.api_key is None:
        return Caller(None, None)
    from_body = body_token is not None and not header_only
    token = body_token if from_body else _header_token(headers)
    if token is None:
        return _unauthorized(MISSING_HEADER if header_only else MISSING_JOB)
    invalid = "Invalid ai_token" if from_body else "Invalid API key"
    if settings.backend == "acestep":
        assert settings.api_key is not None
        if not hmac.compare_digest(token.encode(), settings.api_key.encode()):
            return _unauthorized(invalid)
        return Caller(token, None)
    plan = plan_for_key(token)
    if plan is None:
        return _unauthorized(invalid)
    if plan is Plan.FREE:
        return JSONResponse(
            {"error": "pro_tier_required", "message": UPGRADE_MESSAGE}, status_code=403
        )
    return Caller(token, plan)
