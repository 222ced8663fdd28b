"""Request-level faults and counters: an ASGI middleware that counts every request and
status, delays replies, and answers bursts of 429s, 5xx pages and in-envelope errors.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .state import Simulator

JOB_PATHS = ("/release_task", "/query_result")
FAULT_PATHS = (*JOB_PATHS, "/v1/audio")
# Counted by name; anything else is "(other)" so that stray paths cannot grow the counters.
COUNTED_PATHS = frozenset(
    (*FAULT_PATHS, "/health", "/v1/stats", "/v1/models", "/v1/model_inventory")
)
_GATEWAY_PAGES = {
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
}


def retry_after_value(seconds: float, as_http_date: bool) -> str:
    """Retry-After in delta-seconds (rounded up) or as an HTTP date."""
    if as_http_date:
        return email.utils.formatdate(time.time() + math.ceil(seconds), usegmt=True)
    return str(max(0, math.ceil(seconds)))


async def _reply(
    send: Send, status: int, body: bytes, content_type: str, extra: list[tuple[bytes, bytes]]
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class FaultMiddleware:
    """Wraps the whole app; admin paths (`/_sim/...`) are counted but never faulted."""

    def __init__(self, app: ASGIApp, sim: Simulator) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sim = self.sim
        prefix = sim.settings.path_prefix
        path: str = scope["path"]
        local = path[len(prefix) :] if prefix and path.startswith(prefix) else path
        admin = local.startswith("/_sim/")
        known = local in COUNTED_PATHS or admin
        sim.stats.http_requests[local if known else "(other)"] += 1

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                sim.stats.status_codes[int(message["status"])] += 1
                if not admin:
                    message["headers"] = [*message.get("headers", []), (b"vary", b"Origin")]
            await send(message)

        if not admin and local in FAULT_PATHS and await self._inject(local, counting_send):
            return
        await self.app(scope, receive, counting_send)

    async def _inject(self, path: str, send: Send) -> bool:
        """Answer with a fault instead of the real handler; True when one fired."""
        s = self.sim.settings
        if s.slow_reply_seconds > 0:
            await asyncio.sleep(s.slow_reply_seconds)
        fired = self.sim.stats.faults_fired
        if s.rate_limit_burst > 0:
            s.rate_limit_burst -= 1
            fired["rate_limit"] += 1
            body: dict[str, Any] = {
                "error": "rate_limited",
                "message": "Too many requests; slow down.",
            }
            retry = retry_after_value(s.retry_after, s.retry_after_http_date)
            await _reply(
                send, 429, _json(body), "application/json", [(b"retry-after", retry.encode())]
            )
            return True
        if s.error_burst > 0:
            s.error_burst -= 1
            fired["error"] += 1
            status = s.error_status
            if status == 500:
                await _reply(send, 500, b"Internal Server Error", "text/plain; charset=utf-8", [])
            else:
                title = _GATEWAY_PAGES.get(status, f"{status} Error")
                page = (
                    f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
                    f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
                    "</body>\r\n</html>\r\n"
                )
                await _reply(send, status, page.encode(), "text/html", [])
            return True
        if s.envelope_error_burst > 0 and path in JOB_PATHS:
            s.envelope_error_burst -= 1
            fired["envelope_error"] += 1
            body = {
                "data": None,
                "code": 500,
                "error": "Internal error: the generation service is temporarily unavailable",
                "timestamp": int(time.time() * 1000),
                "extra": None,
            }
            await _reply(send, 200, _json(body), "application/json", [])
            return True
        return False


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
