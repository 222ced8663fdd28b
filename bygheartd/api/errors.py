"""Errors the API client raises, and the rules that turn HTTP replies into them.

One place decides what a status code, an envelope or a transport failure means, so that
the engine can act on the exception type alone (hold, fail, retry) and no message leaks the key.
"""

from __future__ import annotations

import json
import math
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from bygheartd.api.jsonsafe import read_json
from bygheartd.errors import BygheartdError

_MAX_MESSAGE_CHARS = 300

# A server's `Retry-After` is data, bounded here and nowhere else (F3/F4 of the audit:
# ten years paused every submission, 1e12 overflowed `datetime`). Parsed values stop at
# RETRY_AFTER_PARSE_LIMIT, which any `timedelta`/`datetime` holds; each use then waits at
# most its own ceiling (`bounded_wait`) and says so when the server asked for longer.
RETRY_AFTER_PARSE_LIMIT = 10 * 366 * 86400.0
# A plain rate limit, a full queue or a busy download: at most an hour.
MAX_RETRY_AFTER_SECONDS = 3600.0
# `credit_limit_reached`: the server's cap resets at 00:00 UTC (daily) or on the 1st of the
# month (monthly, API.md / docs/simulator.md), so a month and a day at most.
MAX_CREDIT_WAIT_SECONDS = 32 * 86400.0
# Polls are free: a rate-limited poll waits a few minutes at most (`poll_pause_ceiling`).
MAX_POLL_PAUSE_SECONDS = 300.0
POLL_PAUSE_FACTOR = 4.0


class ApiError(BygheartdError):
    """Base of every error that comes from talking to the API."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message


class AuthError(ApiError):
    """401: the key is missing or wrong; nothing was created, every submit would fail too."""


class PlanError(AuthError):
    """403 on a job endpoint: the key's plan may not use the API (Free keys are blocked)."""


class RateLimited(ApiError):
    """429: rate limit, credit cap or a full queue; nothing was created, wait and try again."""

    def __init__(
        self,
        message: str,
        status: int | None = 429,
        *,
        retry_after: float | None = None,
        reason: str = "rate_limited",
    ) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after
        self.reason = reason


class TransientError(ApiError):
    """A gateway error, timeout or dropped connection: the same request may work later.

    `outcome_unknown` is true when a submit was sent but its reply was lost: the server may
    have created (and charged for) a task, so resubmitting is the caller's decision.
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        *,
        outcome_unknown: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status)
        self.outcome_unknown = outcome_unknown
        self.retry_after = retry_after


class TimedOut(TransientError):
    """An exchange ran past one of its time limits, so it was cut off.

    A reply that drips a byte at a time never trips a per-read timeout; these limits bound
    the exchange as a whole. `limit` names the config key that set the limit, so that the
    log and the job's reason say which one was hit and which one to raise.
    """

    def __init__(self, message: str, *, limit: str, outcome_unknown: bool = False) -> None:
        super().__init__(message, None, outcome_unknown=outcome_unknown)
        self.limit = limit


class RejectedError(ApiError):
    """The server refused this request for good (400, 415, 500, 403/404 on audio)."""


class ProtocolError(ApiError):
    """The reply does not have the shape API.md promises (bad JSON, wrong types, bad audio)."""


class RefusedAudioUrl(ProtocolError, RejectedError):
    """An audio location bygheartd will not fetch, now or on any retry: a `file` URL or a
    redirect to another host (the request carries the key, which never goes elsewhere), or
    a `file` in none of API.md's forms.

    Both a protocol error (the reply breaks API.md section 3) and a rejection (final): the
    stored result gives the same location every time, so retrying could never succeed and
    the job fails once instead of being held again and again.
    """


class DownloadTooLarge(RefusedAudioUrl):
    """A download that ran past the most its take can be (decoded): a compression bomb, or
    a server streaming without end. Refused at once, the partial file deleted; final like
    any refused audio location (the stored result gives the same file every time), so the
    job fails once with a reason that says what the server sent, never fills the disk.
    """


def redact(text: str, secret: str | None) -> str:
    """Remove the key from text that came from outside (a server may echo what it got)."""
    if secret:
        text = text.replace(secret, "***")
    return text


def server_message(response: httpx.Response) -> tuple[str, Any]:
    """The human-readable message of an error reply, whatever its shape, and the JSON body."""
    body: Any = None
    try:
        body = read_json(response.content) if response.content else None
    except ValueError:  # not JSON, or nested too deep to use: the text is the message
        body = None
    text = ""
    if isinstance(body, dict):
        parts: list[str] = []
        for name in ("error", "message", "detail"):
            value = body.get(name)
            if value is None or value == "":
                continue
            parts.append(value if isinstance(value, str) else json.dumps(value, default=str))
        text = ": ".join(parts)
    elif body is not None:
        text = json.dumps(body, default=str)
    if not text:
        text = response.content.decode("utf-8", "replace").strip()
    if not text:
        text = response.reason_phrase or "no message"
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[: _MAX_MESSAGE_CHARS - 3] + "..."
    return text, body


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; else None."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            return None
        return min(max(0.0, seconds), RETRY_AFTER_PARSE_LIMIT)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - current), RETRY_AFTER_PARSE_LIMIT)


def duration_words(seconds: float) -> str:
    """`45 s`, `12 min`, `3 h`, `3650 days`: how long a wait is, for a reason."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def bounded_wait(asked: float | None, ceiling: float) -> tuple[float | None, str]:
    """The server's `Retry-After` (None: it gave none) kept within `ceiling` seconds, and a
    note for the reason when it asked for longer (empty otherwise): a hostile or broken
    server may ask for years, and no wait it names may pause the daemon past `ceiling`."""
    if asked is None:
        return None, ""
    if not math.isfinite(asked) or asked > ceiling:
        if not math.isfinite(asked) or asked >= RETRY_AFTER_PARSE_LIMIT:
            shown = f"over {duration_words(RETRY_AFTER_PARSE_LIMIT)}"
        else:
            shown = duration_words(asked)
        return ceiling, (
            f"the server asked to wait {shown} (Retry-After); waiting at most "
            f"{duration_words(ceiling)}"
        )
    return max(0.0, asked), ""


def poll_pause_ceiling(poll_max_seconds: float) -> float:
    """The longest a poll's 429 pauses polling: a few poll intervals, never over five
    minutes (the tasks keep running on the server, and their deadline keeps counting)."""
    return max(1.0, min(MAX_POLL_PAUSE_SECONDS, POLL_PAUSE_FACTOR * poll_max_seconds))


def _rate_limit_reason(body: Any, message: str) -> str:
    if isinstance(body, dict):
        for name in ("error", "reason", "detail", "message"):
            value = body.get(name)
            if isinstance(value, str) and value:
                return value
    return message or "rate_limited"


def error_for_status(
    status: int,
    message: str,
    *,
    what: str,
    body: Any = None,
    retry_after: str | None = None,
    audio: bool = False,
) -> ApiError:
    """Classify a failed reply: the exception type tells the engine what to do next."""
    text = f"{what}: HTTP {status}: {message}"
    if status == 401:
        return AuthError(text + " (check the API key)", status)
    if status == 403 and not audio:
        return PlanError(
            text + ": this key's plan cannot use the API; upgrade your plan (Pro or higher)",
            status,
        )
    if status == 429:
        return RateLimited(
            text,
            status,
            retry_after=parse_retry_after(retry_after),
            reason=_rate_limit_reason(body, message),
        )
    if status in (408, 502, 503, 504):
        return TransientError(text, status, retry_after=parse_retry_after(retry_after))
    return RejectedError(text, status)


def redirect_target(response: httpx.Response) -> httpx.URL | None:
    """Where a 3xx reply points (resolved against the request), or None without a Location."""
    location = response.headers.get("location", "").strip()
    if not location:
        return None
    try:
        return response.url.join(location)
    except httpx.InvalidURL:
        return None


def host_label(url: httpx.URL) -> str:
    """`host` or `host:port`, as a reason names a host (never the path or query)."""
    return f"{url.host}:{url.port}" if url.port else url.host


def error_for_response(
    response: httpx.Response, *, what: str, secret: str | None, audio: bool = False
) -> ApiError:
    """The ApiError for a non-2xx reply (any body shape)."""
    if 300 <= response.status_code < 400:
        # Never followed on API calls (httpx does not by default, and the key would go
        # along): say where it pointed instead of echoing an empty or HTML body.
        target = redirect_target(response)
        where = f"to {host_label(target)}" if target is not None else "without a Location"
        return RejectedError(
            f"{what}: HTTP {response.status_code}: the server redirected the request {where}; "
            "API requests are never redirected (check [api] base_url, e.g. http vs https)",
            response.status_code,
        )
    message, body = server_message(response)
    return error_for_status(
        response.status_code,
        redact(message, secret),
        what=what,
        body=body,
        retry_after=response.headers.get("retry-after"),
        audio=audio,
    )


def error_for_transport(
    exc: httpx.HTTPError, *, what: str, secret: str | None, submit: bool = False
) -> TransientError | ProtocolError:
    """Wrap an httpx failure without its request (whose headers carry the key).

    Connect failures and pool timeouts never sent anything; any later failure of a submit
    may have created a task, so it is marked `outcome_unknown`.
    """
    name = type(exc).__name__
    detail = redact(str(exc), secret) or name
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return ProtocolError(f"{what}: {name}: {detail}")
    never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    if never_sent:
        return TransientError(f"{what}: {name}: {detail} (no connection was made)")
    if submit:
        return TransientError(
            f"{what}: {name}: {detail} (the request was sent and its reply lost: "
            "the task may or may not exist)",
            outcome_unknown=True,
        )
    return TransientError(f"{what}: {name}: {detail}")


SIMPLE_MODE_HINT = (
    "use Simple mode instead: a song file with `description:` and no lyrics, "
    '`bygheartd submit --describe "TEXT"`, or generate_song with `description`'
)


class LmUnavailable(ApiError):
    """The backend offers no language-model helpers (inspiration, polish): the endpoint is
    missing (404) or the server runs without its language model (503 "LLM not initialized").

    Final for this backend: asking again gives the same answer, so nothing retries it, and
    the message points at Simple mode, which needs no helper endpoint.
    """
