"""`GET /v1/audio`: the file route with ACE-Step's headers (ETag, Last-Modified,
Accept-Ranges), single-range 206 replies, and the mid-body connection drop fault.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import os
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from .audio import content_type_for
from .state import Simulator

CHUNK = 64 * 1024
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def _etag(stat: os.stat_result) -> str:
    base = f"{stat.st_mtime}-{stat.st_size}"
    return f'"{hashlib.md5(base.encode(), usedforsecurity=False).hexdigest()}"'


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(start, end) inclusive; None to serve it all; "unsatisfiable" for a 416."""
    if not header or "," in header:
        return None
    match = _RANGE.match(header)
    if match is None or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:  # suffix range: the last N bytes
        length = int(last)
        if length == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, end


class AudioResponse(Response):
    """Streams one file; when `drop_after` is set it closes the connection mid-body."""

    def __init__(
        self,
        sim: Simulator,
        path: Path,
        stat: os.stat_result,
        request_range: str | None,
        if_range: str | None,
        drop_after: int | None,
    ) -> None:
        super().__init__(content=b"", media_type=content_type_for(path))
        self.sim, self.path, self.drop_after = sim, path, drop_after
        size, etag = stat.st_size, _etag(stat)
        wanted = parse_range(request_range, size)
        if if_range is not None and if_range.strip() not in (
            etag,
            email.utils.formatdate(stat.st_mtime, usegmt=True),
        ):
            wanted = None
        self.raw_headers = [
            (b"content-type", content_type_for(path).encode()),
            (b"accept-ranges", b"bytes"),
        ]
        if wanted == "unsatisfiable":
            self.status_code, self.start, self.end = 416, 0, -1
            self.raw_headers.append((b"content-range", f"bytes */{size}".encode()))
        elif wanted is None:
            self.status_code, self.start, self.end = 200, 0, size - 1
        else:
            assert isinstance(wanted, tuple)
            self.status_code, (self.start, self.end) = 206, wanted
        self.raw_headers += [
            (b"content-length", str(self.end - self.start + 1).encode()),
            (b"last-modified", email.utils.formatdate(stat.st_mtime, usegmt=True).encode()),
            (b"etag", etag.encode()),
        ]
        if self.status_code == 206:
            self.raw_headers.append(
                (b"content-range", f"bytes {self.start}-{self.end}/{size}".encode())
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        length = self.end - self.start + 1
        if self.status_code == 416 or length <= 0:
            await send({"type": "http.response.body", "body": b""})
            return
        data = await asyncio.to_thread(self._read)
        stats = self.sim.stats
        stats.downloads += 1
        if self.drop_after is not None:
            cut = max(0, min(self.drop_after, len(data) - 1))
            if cut:
                await send({"type": "http.response.body", "body": data[:cut], "more_body": True})
            stats.download_bytes += cut
            # Returning before the body is complete makes uvicorn close the connection:
            # the client sees a reset mid-body, as with a proxy that gives up.
            return
        for offset in range(0, len(data), CHUNK):
            chunk = data[offset : offset + CHUNK]
            more = offset + CHUNK < len(data)
            await send({"type": "http.response.body", "body": chunk, "more_body": more})
            stats.download_bytes += len(chunk)

    def _read(self) -> bytes:
        with self.path.open("rb") as handle:
            handle.seek(self.start)
            return handle.read(self.end - self.start + 1)


async def audio_route(request: Request, sim: Simulator) -> Response:
    """Resolve `path` inside the audio directory (403 outside it, 404 when missing)."""
    raw = request.query_params.get("path")
    if raw is None:
        detail = [{"type": "missing", "loc": ["query", "path"], "msg": "Field required"}]
        return JSONResponse({"detail": detail}, status_code=422)
    resolved = Path(os.path.realpath(raw))
    allowed = sim.audio_dir
    if resolved != allowed and allowed not in resolved.parents:
        return JSONResponse(
            {"detail": "Access denied: path outside allowed directory"}, status_code=403
        )
    try:
        stat = resolved.stat()
    except OSError:
        stat = None
    if stat is None or not resolved.is_file():
        return JSONResponse({"detail": "Audio file not found"}, status_code=404)
    sim.note_download(resolved)
    s = sim.settings
    drop_after: int | None = None
    if s.drop_download_burst > 0:
        s.drop_download_burst -= 1
        sim.stats.faults_fired["drop_download"] += 1
        drop_after = s.drop_download_after_bytes
    return AudioResponse(
        sim,
        resolved,
        stat,
        request.headers.get("range"),
        request.headers.get("if-range"),
        drop_after,
    )
