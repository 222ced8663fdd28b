"""Audio downloads: where a result's `file` points, resumable streaming to NAME.part,
the checks a finished file must pass, and the no-overwrite move into place.

The client owns the retry loop; this module owns one attempt and the state between attempts.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import anyio
import httpx

from bygheartd.api.errors import (
    ProtocolError,
    TransientError,
    error_for_response,
    error_for_transport,
)
from bygheartd.folders.moves import fsync_dir

_DEFAULT_PORTS = {"http": 80, "https": 443}
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
_HEAD_BYTES = 64
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class DownloadedFile:
    """A verified audio file in its final place."""

    path: Path
    size: int
    sha256: str
    content_type: str | None
    ext: str


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host.lower(), url.port or _DEFAULT_PORTS.get(url.scheme)


def resolve_audio_url(base_url: str, file_ref: str) -> httpx.URL:
    """The URL for one of the three `file` forms of API.md section 3.

    An absolute URL is followed only to the API's own scheme, host and port: the request
    carries the key, which must never go anywhere else.
    """
    ref = file_ref.strip()
    base = httpx.URL(base_url)
    if ref.lower().startswith(("http://", "https://")):
        try:
            url = httpx.URL(ref)
        except httpx.InvalidURL as exc:
            raise ProtocolError(f"audio URL {ref!r} is not a valid URL: {exc}") from None
        if _origin(url) != _origin(base):
            raise ProtocolError(
                f"audio URL {ref!r} is not on the API host {base.host}:{_origin(base)[2]}; "
                "refusing to send the API key there"
            )
        return url
    root = base_url.rstrip("/")
    path_part, has_query, _ = ref.partition("?")
    if has_query and path_part.rstrip("/").endswith("v1/audio"):
        return httpx.URL(root + "/" + ref.lstrip("/"))
    if ref.startswith("/") and not has_query:
        return httpx.URL(root + "/v1/audio?path=" + quote(ref, safe=""))
    raise ProtocolError(f"result file {ref!r} is none of the known forms (API.md section 3)")


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
        self.hasher, self.size, self.etag = hashlib.sha256(), 0, None


def _expected_total(response: httpx.Response, offset: int) -> tuple[int | None, bool]:
    """(total size, whether the body continues at `offset`) from the reply's headers."""
    identity = response.headers.get("content-encoding", "identity").lower() == "identity"
    if response.status_code == 206:
        match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
        if match is None:
            return None, False
        total = None if match.group(3) == "*" else int(match.group(3))
        return total, int(match.group(1)) == offset
    length = response.headers.get("content-length")
    total = int(length) if identity and length and length.isdigit() else None
    return total, True


async def fetch_attempt(
    http: httpx.AsyncClient,
    url: httpx.URL,
    headers: dict[str, str],
    state: PartState,
    *,
    what: str,
    secret: str | None,
) -> None:
    """One GET that appends to NAME.part; returns when the part holds the whole file."""
    await state.sync_with_disk()
    offset = state.size
    if offset:
        headers = {**headers, "Range": f"bytes={offset}-"}
        if state.etag:
            headers["If-Range"] = state.etag
    failure: TransientError | ProtocolError | None = None
    total: int | None = None
    try:
        async with http.stream("GET", url, headers=headers) as response:
            if response.status_code == 416 and offset:
                state.restart()
                raise TransientError(f"{what}: HTTP 416: the partial file no longer fits")
            if response.status_code not in (200, 206):
                await response.aread()
                if 200 < response.status_code < 300:
                    raise ProtocolError(f"{what}: HTTP {response.status_code} without a body")
                raise error_for_response(response, what=what, secret=secret, audio=True)
            total, continues = _expected_total(response, offset)
            if response.status_code == 200 or not continues:
                state.restart()
                if not continues:
                    raise TransientError(f"{what}: HTTP 206 for another range; restarting")
            state.etag = response.headers.get("etag")
            state.content_type = response.headers.get("content-type")
            with state.part.open("ab") as fh:
                async for chunk in response.aiter_bytes():
                    fh.write(chunk)
                    state.hasher.update(chunk)
                    state.size += len(chunk)
    except httpx.HTTPError as exc:
        failure = error_for_transport(exc, what=what, secret=secret)
    if failure is not None:
        raise failure
    if total is not None and state.size != total:
        if state.size > total:
            state.restart()
        raise TransientError(f"{what}: got {state.size} bytes of {total}")


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
    """Check the completed part (non-empty, real audio) and move it to stem + ext."""
    if state.size == 0:
        state.restart()
        raise ProtocolError(f"{what}: the server sent an empty file")
    with state.part.open("rb") as fh:
        head = fh.read(_HEAD_BYTES)
    ext = sniff_audio_ext(head)
    if ext is None:
        state.restart()
        raise ProtocolError(
            f"{what}: the reply is not audio (content-type {state.content_type}, "
            f"first bytes {head[:8].hex()})"
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
