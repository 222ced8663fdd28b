"""Audio downloads: where a result's `file` points, resumable streaming to NAME.part,
the time limits of one attempt, the checks a finished file must pass, and the
no-overwrite move into place.

The client owns the retry loop; this module owns one attempt and the state between attempts.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from bygheartd.api.audiocheck import impossible, incomplete
from bygheartd.api.decoding import ACCEPT_ENCODING, ContentDecoder
from bygheartd.api.errors import (
    DownloadTooLarge,
    ProtocolError,
    RefusedAudioUrl,
    TimedOut,
    TransientError,
    error_for_response,
    error_for_transport,
    host_label,
    redirect_target,
)
from bygheartd.api.replies import (
    ERROR_BYTES,
    MiB,
    header_length,
    read_body,
    show_size,
    with_body,
)
from bygheartd.folders.moves import fsync_dir

_DEFAULT_PORTS = {"http": 80, "https": 443}
_CONTENT_RANGE = re.compile(
    r"bytes\s+(\d{1,18})-(\d{1,18})/(\d{1,18}|\*)", re.ASCII | re.IGNORECASE
)
_HEAD_BYTES = 64
_HASH_BLOCK = 1 << 20
# Redirects on the API's own origin are followed (the key stays there), a few at most.
MAX_REDIRECTS = 5
# The most a take can be, decoded: uncompressed WAV at the highest rate a server plausibly
# writes (96 kHz, 32-bit float, stereo: twice ACE-Step's 48 kHz) with half as much again for
# headroom, for the duration the server reported (a minute's worth at least); and never more
# than MAX_DOWNLOAD_BYTES, which holds the API's longest take (600 s) at that rate (439 MiB).
WAV_HIGHEST_BYTES_PER_SECOND = 96_000 * 2 * 4
CEILING_HEADROOM = 1.5
CEILING_MIN_SECONDS = 60.0
MAX_DOWNLOAD_BYTES = 512 * MiB


@dataclass(frozen=True)
class DownloadedFile:
    """A verified audio file in its final place."""

    path: Path
    size: int
    sha256: str
    content_type: str | None
    ext: str


@dataclass(frozen=True)
class DownloadLimits:
    """How long one download attempt may take once its reply has begun, and how large the
    file may grow.

    A per-read timeout never ends a server that drips a byte a second, and a delivery slot
    held forever stops other songs; so an attempt ends when no byte came for
    `stall_seconds`, or when it runs past `[api] timeout_seconds + size /
    min_bytes_per_second` (the whole exchange limit is the grace before the rate counts).
    The client retries a cut attempt, resuming the `.part` with Range.

    What the file decodes to is bounded by `ceiling()`: `bytes_per_reported_second` for
    the duration the server reported (at least `min_ceiling_seconds`), and `max_bytes`
    whatever it reported; past it the download stops at once (DownloadTooLarge).
    """

    stall_seconds: float = 30.0
    min_bytes_per_second: float = 16384.0
    max_bytes: int = MAX_DOWNLOAD_BYTES
    bytes_per_reported_second: float = WAV_HIGHEST_BYTES_PER_SECOND * CEILING_HEADROOM
    min_ceiling_seconds: float = CEILING_MIN_SECONDS

    def __post_init__(self) -> None:
        if (
            self.stall_seconds <= 0
            or self.min_bytes_per_second <= 0
            or self.max_bytes <= 0
            or self.bytes_per_reported_second <= 0
            or self.min_ceiling_seconds < 0
        ):
            raise ValueError("download limits must be positive")

    def ceiling(self, seconds: float | None) -> tuple[int, str]:
        """(the most the take may decode to, why: for a reason a person reads)."""
        cap = show_size(self.max_bytes)
        if seconds is None or not math.isfinite(seconds) or seconds <= 0:
            return self.max_bytes, f"the server reported no duration, and no take is over {cap}"
        allowed = max(seconds, self.min_ceiling_seconds) * self.bytes_per_reported_second
        if allowed >= self.max_bytes:
            return self.max_bytes, f"the take is {seconds:.0f} s, and no take is over {cap}"
        return int(allowed), (
            f"the take is {seconds:.0f} s, and no take of {seconds:.0f} s is over "
            f"{show_size(int(allowed))}, even as 96 kHz 32-bit stereo WAV"
        )


class _AttemptClock:
    """When the current attempt must end, and which limit says so (for the message)."""

    def __init__(self, limits: DownloadLimits, reply_seconds: float, now: float) -> None:
        self.limits = limits
        self.reply_seconds = reply_seconds
        self.started = now
        self.replied_at: float | None = None
        self.last_byte = now
        self.expected: int | None = None  # bytes this reply promises (Content-Length)
        self.got = 0
        self.already = 0  # bytes of the file on disk before this reply (a resumed part)

    def replied(self, expected: int | None, already: int, now: float) -> None:
        self.replied_at, self.last_byte, self.expected = now, now, expected
        self.already = already

    def received(self, count: int, now: float) -> None:
        self.got += count
        self.last_byte = now

    def deadline(self) -> tuple[float, str]:
        """(loop time, which limit): the earliest limit that ends this attempt."""
        if self.replied_at is None:
            return self.started + self.reply_seconds, "reply"
        stall = (self.last_byte + self.limits.stall_seconds, "stall")
        rate = self.limits.min_bytes_per_second
        if self.expected is not None:  # a known size: one total limit from the start
            total = (self.started + self.reply_seconds + self.expected / rate, "total")
        else:  # unknown size: keep up with the minimum rate, after the same grace
            total = (self.replied_at + self.reply_seconds + self.got / rate, "rate")
        return min(stall, total)

    def timed_out(self, what: str, now: float) -> TimedOut:
        _, which = self.deadline()
        limits, took = self.limits, now - self.started
        have = self.already + self.got
        of = f" of {self.already + self.expected}" if self.expected is not None else ""
        if which == "reply":
            return TimedOut(
                f"{what}: no reply within {self.reply_seconds:g} s ([api] timeout_seconds)",
                limit="api.timeout_seconds",
            )
        if which == "stall":
            return TimedOut(
                f"{what}: no bytes for {limits.stall_seconds:g} s, after {have}{of} bytes "
                "([api] download_stall_seconds); the part is kept and resumed",
                limit="api.download_stall_seconds",
            )
        allowed = self.deadline()[0] - self.started
        return TimedOut(
            f"{what}: too slow: {self.got} bytes in {took:.1f} s ({have}{of} in all), under "
            f"{limits.min_bytes_per_second:g} bytes/s (the limit for this reply is "
            f"{allowed:.0f} s: [api] timeout_seconds + size / download_min_bytes_per_second); "
            "the part is kept and resumed",
            limit="api.download_min_bytes_per_second",
        )


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host.lower(), url.port or _DEFAULT_PORTS.get(url.scheme)


def _where(url: httpx.URL, base: httpx.URL) -> str:
    """The host a reason names; with its scheme when only the scheme differs from base's."""
    label = host_label(url)
    return f"{url.scheme}://{label}" if url.scheme != base.scheme else label


def resolve_audio_url(base_url: str, file_ref: str) -> httpx.URL:
    """The URL for one of the three `file` forms of API.md section 3.

    An absolute URL is followed only to the API's own scheme, host and port: the request
    carries the key, which must never go anywhere else.
    """
    try:
        return _resolve(base_url, file_ref)
    except httpx.InvalidURL as exc:  # a `file` with control characters, say
        shown = file_ref[:200]
        raise RefusedAudioUrl(f"result file {shown!r} is not a valid URL: {exc}") from None


def _resolve(base_url: str, file_ref: str) -> httpx.URL:
    ref = file_ref.strip()
    base = httpx.URL(base_url)
    if ref.lower().startswith(("http://", "https://")):
        url = httpx.URL(ref)
        if _origin(url) != _origin(base):
            raise RefusedAudioUrl(
                f"the result's audio URL points to another host ({_where(url, base)}), not the "
                f"API's {base.scheme}://{base.host}:{_origin(base)[2]}: refusing to send the "
                "API key there (the key is never sent elsewhere)"
            )
        return url
    root = base_url.rstrip("/")
    path_part, has_query, _ = ref.partition("?")
    if has_query and path_part.rstrip("/").endswith("v1/audio"):
        return httpx.URL(root + "/" + ref.lstrip("/"))
    if ref.startswith("/") and not has_query:
        return httpx.URL(root + "/v1/audio?path=" + quote(ref, safe=""))
    raise RefusedAudioUrl(
        f"result file {ref[:200]!r} is none of the known forms (API.md section 3)"
    )


def sniff_audio_ext(head: bytes) -> str | None:
    """The file extension the first bytes prove, or None when they are not known audio."""
    if head.startswith(b"ID3"):
        return ".mp3"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return ".wav"
    if head.startswith(b"fLaC"):
        return ".flac"
    if head.startswith(b"OggS"):
        return ".opus" if b"OpusHead" in head[:_HEAD_BYTES] else ".ogg"
    if head[4:8] == b"ftyp":
        return ".m4a"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # 11 sync bits; the two layer bits are 00 in ADTS (AAC) and never 00 in MPEG audio.
        if head[1] & 0xF6 == 0xF0:
            return ".aac"
        if head[1] & 0x06 and head[1] & 0x18 != 0x08:
            return ".mp3"
    return None


@dataclass
class PartState:
    """What is on disk in NAME.part, carried across attempts so that hashing never re-reads."""

    stem: Path
    size: int = 0
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    etag: str | None = None
    content_type: str | None = None
    announced: int | None = None  # the size the last reply announced for the whole file

    @property
    def part(self) -> Path:
        return Path(f"{self.stem}.part")

    def _load_sync(self) -> None:
        hasher = hashlib.sha256()
        size = 0
        try:
            with self.part.open("rb") as fh:
                while block := fh.read(_HASH_BLOCK):
                    hasher.update(block)
                    size += len(block)
        except FileNotFoundError:
            pass
        self.hasher, self.size = hasher, size

    async def sync_with_disk(self) -> None:
        """Re-hash an existing .part (left by a crash or a failed write) off the event loop."""
        try:
            on_disk = self.part.stat().st_size
        except FileNotFoundError:
            on_disk = 0
        if on_disk != self.size:
            await anyio.to_thread.run_sync(self._load_sync)

    def restart(self) -> None:
        self.part.unlink(missing_ok=True)
        self.hasher, self.size, self.etag, self.announced = hashlib.sha256(), 0, None, None


def _expected_total(response: httpx.Response, offset: int) -> tuple[int | None, bool]:
    """(total size, whether the body continues at `offset`) from the reply's headers."""
    identity = response.headers.get("content-encoding", "identity").lower() == "identity"
    if response.status_code == 206:
        match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
        if match is None:
            return None, False
        total = None if match.group(3) == "*" else int(match.group(3))
        return total, int(match.group(1)) == offset
    length = header_length(response.headers.get("content-length"))
    return (length if identity else None), True


async def fetch_attempt(
    http: httpx.AsyncClient,
    url: httpx.URL,
    headers: dict[str, str],
    state: PartState,
    *,
    what: str,
    secret: str | None,
    limits: DownloadLimits | None = None,
    reply_seconds: float = 30.0,
    seconds: float | None = None,
) -> None:
    """One GET that appends to NAME.part; returns when the part holds the whole file.

    The attempt is bounded as a whole, not per read: a reply must begin within
    `reply_seconds` (`[api] timeout_seconds`), then `limits` apply while the body streams.
    A cut attempt raises TimedOut and keeps what arrived, so the retry resumes it.
    `seconds` is the take's duration as the server reported it (None: unknown): what the
    file may decode to is bounded by `limits.ceiling(seconds)`.
    """
    limits = limits or DownloadLimits()
    ceiling = limits.ceiling(seconds)
    await state.sync_with_disk()
    offset = state.size
    # Only what ContentDecoder decodes in bounded steps (httpx would add br, zstd when
    # installed, and decode them whole).
    headers = {**headers, "Accept-Encoding": ACCEPT_ENCODING}
    if offset:
        headers = {**headers, "Range": f"bytes={offset}-"}
        if state.etag:
            headers["If-Range"] = state.etag
    clock = _AttemptClock(limits, reply_seconds, anyio.current_time())
    failure: TransientError | ProtocolError | None = None
    total: int | None = None
    with anyio.CancelScope(deadline=clock.deadline()[0]) as scope:
        try:
            total = await _stream(
                http, url, headers, state, offset, clock, scope, what, secret, ceiling
            )
        except httpx.HTTPError as exc:
            failure = error_for_transport(exc, what=what, secret=secret)
    if scope.cancelled_caught:
        failure = clock.timed_out(what, anyio.current_time())
    if failure is not None:
        raise failure
    if total is not None and state.size != total:
        if state.size > total:
            state.restart()
        raise TransientError(f"{what}: got {state.size} bytes of {total}")


def _another_file(response: httpx.Response, state: PartState, total: int | None) -> str | None:
    """Why a 206 that resumes the part comes from another file than the one the part was
    started from (None: nothing says so): its ETag is not the one the part's reply had (a
    server that ignores If-Range answers with the range of whatever it holds now), or it
    announces another total size. A 206 without the ETag the part had cannot show that it
    is the same file, so it counts as another."""
    etag = response.headers.get("etag")
    if state.etag is not None and etag != state.etag:
        now = "no ETag" if etag is None else f"ETag {etag[:80]!r}"
        return f"{now}, the part's was {state.etag[:80]!r}"
    if total is not None and state.announced is not None and total != state.announced:
        return f"{total} bytes in all, the part's file had {state.announced}"
    return None


def _reply_length(response: httpx.Response) -> int | None:
    """The bytes this reply's body promises (a 206 promises its range), when it says so."""
    if response.headers.get("content-encoding", "identity").lower() != "identity":
        return None
    return header_length(response.headers.get("content-length"))


async def _stream(
    http: httpx.AsyncClient,
    url: httpx.URL,
    headers: dict[str, str],
    state: PartState,
    offset: int,
    clock: _AttemptClock,
    scope: anyio.CancelScope,
    what: str,
    secret: str | None,
    ceiling: tuple[int, str],
) -> int | None:
    """The GET itself, following redirects only on the API's own origin; the file's total
    size when the reply says it. Moves `scope`'s deadline on as the limits allow."""
    origin = url
    # The per-read timeout is off: the clock's stall limit is the one that ends a quiet body.
    timeout = httpx.Timeout(clock.reply_seconds, read=None)
    for _hop in range(MAX_REDIRECTS + 1):
        async with http.stream("GET", url, headers=headers, timeout=timeout) as response:
            status = response.status_code
            if 300 <= status < 400:
                target = redirect_target(response)
                if target is None:
                    raise RefusedAudioUrl(f"{what}: HTTP {status}: a redirect without a Location")
                if _origin(target) != _origin(origin):
                    raise RefusedAudioUrl(
                        f"{what}: HTTP {status}: the server redirected the download to another "
                        f"host ({_where(target, origin)}): refused; the key is never sent "
                        "elsewhere",
                        status,
                    )
                url = target
                continue
            if status == 416 and offset:
                state.restart()
                raise TransientError(f"{what}: HTTP 416: the partial file no longer fits")
            if status not in (200, 206):
                # Read for its message, and no further: an error page can be a bomb too.
                body = await read_body(
                    response, limit=ERROR_BYTES, what=what, kind="an error", keep_prefix=True
                )
                if 200 < status < 300:
                    raise ProtocolError(f"{what}: HTTP {status} without a body")
                raise error_for_response(
                    with_body(response, body), what=what, secret=secret, audio=True
                )
            total, continues = _expected_total(response, offset)
            decoder = ContentDecoder.for_headers(response.headers, what)
            if decoder.codings and status == 206:  # a range of an encoded body: start over
                state.restart()
                raise TransientError(
                    f"{what}: HTTP 206 with Content-Encoding {decoder.label}; restarting"
                )
            if status == 200 or not continues:
                state.restart()
                if not continues:
                    raise TransientError(f"{what}: HTTP 206 for another range; restarting")
            elif (changed := _another_file(response, state, total)) is not None:
                # The server ignored If-Range: the rest of another file must never be
                # spliced onto the part.
                state.restart()
                raise TransientError(
                    f"{what}: HTTP 206 from another file than the part was started from "
                    f"({changed}): the part is discarded and the download starts over"
                )
            most, why = ceiling
            if total is not None and total > most:
                state.restart()
                raise DownloadTooLarge(
                    f"{what}: the server announced {show_size(total)} of audio ({why}): "
                    "refused unread"
                )
            state.etag = response.headers.get("etag")
            state.content_type = response.headers.get("content-type")
            state.announced = total
            already = offset if status == 206 else 0
            clock.replied(_reply_length(response), already, anyio.current_time())
            scope.deadline = clock.deadline()[0]
            try:
                await _write_body(response, decoder, state, clock, scope, what, ceiling)
            except (DownloadTooLarge, _NotAudio):
                state.restart()  # nothing of it is kept: the next attempt starts afresh
                raise
            return total
    raise RefusedAudioUrl(f"{what}: redirected more than {MAX_REDIRECTS} times")


class _NotAudio(ProtocolError):
    """The first bytes of a fresh download are not audio: the rest is not worth fetching."""


def _not_audio(what: str, state: PartState, head: bytes) -> _NotAudio:
    return _NotAudio(
        f"{what}: the reply is not audio (content-type {state.content_type}, "
        f"first bytes {head[:8].hex()})"
    )


async def _write_body(
    response: httpx.Response,
    decoder: ContentDecoder,
    state: PartState,
    clock: _AttemptClock,
    scope: anyio.CancelScope,
    what: str,
    ceiling: tuple[int, str],
) -> None:
    """Append the decoded body to the part, never past the ceiling: each decoded piece (at
    most 64 KiB) is counted before it is written. A fresh file whose first bytes are not
    audio is refused at once (an HTML page, a bomb of zeros) rather than fetched in full."""
    most, why = ceiling
    head: bytearray | None = bytearray() if state.size == 0 else None

    def put(fh: Any, piece: bytes) -> None:
        nonlocal head
        if state.size + len(piece) > most:
            coding = "" if decoder.label == "identity" else f" (from {decoder.label})"
            raise DownloadTooLarge(
                f"{what}: the download decoded past {show_size(most)}{coding}: {why}: "
                "refused, and the partial file deleted"
            )
        if head is not None:
            head += piece[: _HEAD_BYTES - len(head)]
            if len(head) >= _HEAD_BYTES:
                if sniff_audio_ext(bytes(head)) is None:
                    raise _not_audio(what, state, bytes(head))
                head = None
        fh.write(piece)
        state.hasher.update(piece)
        state.size += len(piece)

    with state.part.open("ab") as fh:
        async for raw in response.aiter_raw():
            for piece in decoder.feed(raw):
                put(fh, piece)
            clock.received(len(raw), anyio.current_time())
            scope.deadline = clock.deadline()[0]
        for piece in decoder.finish():
            put(fh, piece)


def _place(part: Path, target: Path) -> None:
    """Move part to target without ever overwriting target (FileExistsError if it exists)."""
    with part.open("rb+") as fh:
        os.fsync(fh.fileno())
    try:
        os.link(part, target)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # No hard links here (some network or FAT file systems): exclusive-create copy.
        try:
            with part.open("rb") as src, target.open("xb") as dst:
                shutil.copyfileobj(src, dst, _HASH_BLOCK)
                dst.flush()
                os.fsync(dst.fileno())
        except FileExistsError:
            raise
        except BaseException:
            target.unlink(missing_ok=True)
            raise
    part.unlink()
    fsync_dir(target.parent)


async def finish(state: PartState, *, what: str) -> DownloadedFile:
    """Check the completed part (non-empty, real audio, whole, a plausible header) and move
    it to stem + ext.

    "Whole" is what the file's own header promises (audiocheck.py): a file cut short by a
    Content-Length that lied, or by a proxy that stopped, is refused and fetched again. So
    is one whose header describes no playable audio (0 channels, a rate of 1 Hz, an unknown
    sample format): no player opens it, and a paid take must not end `done` as one.
    """
    if state.size == 0:
        state.restart()
        raise ProtocolError(f"{what}: the server sent an empty file")
    with state.part.open("rb") as fh:
        head = fh.read(_HEAD_BYTES)
    ext = sniff_audio_ext(head)
    if ext is None:
        state.restart()
        raise _not_audio(what, state, head)
    problem = await anyio.to_thread.run_sync(incomplete, state.part, ext)
    if problem is not None:
        size = state.size
        said = ", all the server announced" if state.announced == size else ""
        state.restart()
        raise ProtocolError(
            f"{what}: the file is incomplete: {problem} (got {size} bytes{said}): refused, "
            "the download starts again"
        )
    problem = await anyio.to_thread.run_sync(impossible, state.part, ext)
    if problem is not None:
        state.restart()
        raise ProtocolError(
            f"{what}: the server sent a file that does not decode as audio ({problem}): "
            "refused, the download starts again"
        )
    target = Path(f"{state.stem}{ext}")
    await anyio.to_thread.run_sync(_place, state.part, target)
    return DownloadedFile(
        path=target,
        size=state.size,
        sha256=state.hasher.hexdigest(),
        content_type=state.content_type,
        ext=ext,
    )
