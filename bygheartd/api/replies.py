"""Reading API replies: streamed, decoded in bounded steps and refused past a size limit
fitting what the endpoint can legitimately carry; parsed as JSON no deeper than any
reply of API.md ever is.

A reply is never read whole before it is counted: a 200 MB poll reply (or 2 MiB of gzip
that inflates to gigabytes) is cut off at its limit, and memory stays bounded by it.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from bygheartd.api.decoding import ContentDecoder
from bygheartd.api.errors import ProtocolError
from bygheartd.api.jsonsafe import MAX_JSON_DEPTH, TooDeep, read_json

__all__ = [
    "MAX_JSON_DEPTH",
    "ReplyLimits",
    "ReplyTooLarge",
    "TooDeep",
    "header_length",
    "read_body",
    "read_json",
    "show_size",
    "with_body",
]

MiB = 1024 * 1024
KiB = 1024
# How much of an error reply (any 3xx to 5xx) is read for its message; the rest is dropped.
ERROR_BYTES = 64 * KiB


def show_size(count: float) -> str:
    """Bytes as a person reads them: "512 KiB", "1.5 MiB", "300 bytes"."""
    if count >= MiB:
        value, unit = count / MiB, "MiB"
    elif count >= KiB:
        value, unit = count / KiB, "KiB"
    else:
        return f"{int(count)} bytes"
    text = f"{value:.1f}".removesuffix(".0")
    return f"{text} {unit}"


@dataclass(frozen=True)
class ReplyLimits:
    """The most each kind of reply may carry, decoded; past it the reply is refused unread.

    Generous for what each one legitimately holds: a submit reply is a task id; one poll
    entry is a task's takes (caption, lyrics and metas, twice over and double-encoded), so a
    poll scales with the ids it asks for; a helper's draft is one song's text; status
    replies (probe, health, stats, models) are a few counters. An error reply is read up to
    `error_bytes` for its message, the rest dropped.
    """

    submit_bytes: int = 1 * MiB
    poll_base_bytes: int = 1 * MiB
    poll_per_id_bytes: int = 512 * KiB
    helper_bytes: int = 4 * MiB
    status_bytes: int = 1 * MiB
    error_bytes: int = ERROR_BYTES

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) <= 0:
                raise ValueError(f"reply limit {name} must be positive")

    def poll(self, ids: int) -> int:
        return self.poll_base_bytes + max(1, ids) * self.poll_per_id_bytes


class ReplyTooLarge(ProtocolError):
    """A reply ran past the size limit of its endpoint and was refused unread."""

    def __init__(self, message: str, status: int | None = None, *, limit: int) -> None:
        super().__init__(message, status)
        self.limit = limit


def _announced(response: httpx.Response) -> int | None:
    if response.headers.get("content-encoding", "identity").strip().lower() != "identity":
        return None
    return header_length(response.headers.get("content-length"))


def header_length(value: str | None) -> int | None:
    """A Content-Length as a number; None for anything but plain ASCII digits."""
    value = (value or "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None


async def read_body(
    response: httpx.Response, *, limit: int, what: str, kind: str, keep_prefix: bool = False
) -> bytes:
    """The decoded body of a streamed reply, at most `limit` bytes.

    Past the limit: ReplyTooLarge naming the limit and `kind` (what the endpoint is, as in
    "a poll of 3 ids"); with `keep_prefix` (an error reply, read for its message) the first
    `limit` bytes instead, and a body that cannot be decoded reads as empty.
    """
    status = response.status_code

    def too_large(seen: str) -> ReplyTooLarge:
        return ReplyTooLarge(
            f"{what}: HTTP {status}: the reply {seen}, over the limit of {show_size(limit)} "
            f"for {kind}: refused unread",
            status,
            limit=limit,
        )

    announced = _announced(response)
    if announced is not None and announced > limit and not keep_prefix:
        raise too_large(f"announces {announced} bytes")
    body = bytearray()
    try:
        decoder = ContentDecoder.for_headers(response.headers, what)
        async for raw in response.aiter_raw():
            for piece in decoder.feed(raw):
                if len(body) + len(piece) > limit:
                    if keep_prefix:
                        body += piece[: limit - len(body)]
                        return bytes(body)
                    raise too_large(f"ran past {show_size(limit)}")
                body += piece
        for piece in decoder.finish():
            if len(body) + len(piece) > limit:
                if keep_prefix:
                    body += piece[: limit - len(body)]
                    return bytes(body)
                raise too_large(f"ran past {show_size(limit)}")
            body += piece
    except ReplyTooLarge:
        raise
    except ProtocolError:
        if keep_prefix:  # an error reply's status still says what happened
            return bytes(body)
        raise
    return bytes(body)


_BODY_HEADERS = ("content-encoding", "content-length", "transfer-encoding")


def with_body(response: httpx.Response, body: bytes) -> httpx.Response:
    """The streamed reply as a complete one holding `body` (read, decoded, within limits)."""
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _BODY_HEADERS]
    kept = {k: v for k, v in response.extensions.items() if k in ("http_version", "reason_phrase")}
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=body,
        request=response.request,
        extensions=kept,
    )
