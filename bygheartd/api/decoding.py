"""Content-Encoding, decoded by bygheartd itself in bounded steps.

httpx decodes a compressed body in one go per network read: 64 KiB of gzip can become 64 MiB
in memory before anyone counts it, and a brotli body far more. Here every reply (API replies
and audio downloads alike) is read raw and inflated at most `STEP_BYTES` at a time, so the
caller counts (and refuses) decoded bytes before they pile up in memory or on disk.

Only the codings bygheartd asks for (`ACCEPT_ENCODING`) are decoded; a reply in any other
coding (br, zstd, compress, ...) was not asked for and is refused with a reason.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping

from bygheartd.api.errors import ProtocolError

__all__ = ["ACCEPT_ENCODING", "STEP_BYTES", "ContentDecoder", "content_codings"]

ACCEPT_ENCODING = "gzip, deflate"
STEP_BYTES = 64 * 1024
# A body encoded more than twice over is no server's doing (and each layer multiplies a bomb).
MAX_CODINGS = 2
_ALIASES = {"x-gzip": "gzip"}
_DECODED = ("gzip", "deflate")


def content_codings(headers: Mapping[str, str], what: str) -> list[str]:
    """The reply's codings, in the order the server applied them; ProtocolError for one
    bygheartd did not ask for (it could not bound what it decodes to)."""
    raw = headers.get("content-encoding", "")
    codings = []
    for part in raw.split(","):
        coding = _ALIASES.get(part.strip().lower(), part.strip().lower())
        if coding in ("", "identity"):
            continue
        if coding not in _DECODED:
            shown = coding[:40]
            raise ProtocolError(
                f"{what}: the reply is encoded as {shown!r}, which bygheartd did not ask for "
                f"(Accept-Encoding: {ACCEPT_ENCODING}): refused unread"
            )
        codings.append(coding)
    if len(codings) > MAX_CODINGS:
        raise ProtocolError(
            f"{what}: the reply is encoded {len(codings)} times over ({raw[:80]!r}): refused unread"
        )
    return codings


class _Inflate:
    """One gzip or deflate layer; `pull` never returns more than it is asked for."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        wbits = zlib.MAX_WBITS | 16 if coding == "gzip" else zlib.MAX_WBITS
        self._zlib = zlib.decompressobj(wbits)
        self._pending = b""
        self._started = False
        self.finished = False

    def push(self, data: bytes) -> None:
        self._pending += data

    def pull(self, limit: int) -> bytes:
        """Up to `limit` decoded bytes; b"" when it needs more input (or has ended)."""
        if self.finished:
            self._pending = b""  # whatever follows the end of the stream is ignored
            return b""
        data, self._pending = self._pending, b""
        try:
            out = self._zlib.decompress(data, limit)
        except zlib.error:
            if self.coding != "deflate" or self._started:
                raise
            # "deflate" without its zlib wrapper, as many servers send it (httpx reads it too)
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._zlib.decompress(data, limit)
        self._started = True
        self._pending = self._zlib.unconsumed_tail
        if self._zlib.eof:
            self.finished = True
        return out


class ContentDecoder:
    """A reply's body decoded in pieces of at most `STEP_BYTES` (identity: as it came).

    `feed(raw)` and then `finish()` yield the decoded pieces; a corrupt stream raises
    ProtocolError naming the coding.
    """

    def __init__(self, codings: list[str], what: str) -> None:
        self.codings = codings
        self.what = what
        self._stages = [_Inflate(coding) for coding in reversed(codings)]

    @classmethod
    def for_headers(cls, headers: Mapping[str, str], what: str) -> ContentDecoder:
        return cls(content_codings(headers, what), what)

    @property
    def label(self) -> str:
        """How the body came: "gzip", "deflate, gzip" or "identity"."""
        return ", ".join(self.codings) or "identity"

    def feed(self, raw: bytes) -> Iterator[bytes]:
        if not self._stages:
            for start in range(0, len(raw), STEP_BYTES):
                yield raw[start : start + STEP_BYTES]
            return
        self._stages[0].push(raw)
        yield from self._drain()

    def finish(self) -> Iterator[bytes]:
        if self._stages:
            yield from self._drain()

    def _drain(self) -> Iterator[bytes]:
        last = len(self._stages) - 1
        while piece := self._pull(last):
            yield piece

    def _pull(self, index: int) -> bytes:
        stage = self._stages[index]
        while True:
            try:
                out = stage.pull(STEP_BYTES)
            except zlib.error as exc:
                raise ProtocolError(
                    f"{self.what}: the reply's {stage.coding} encoding is corrupt ({exc})"
                ) from None
            if out or index == 0 or stage.finished:
                return out
            more = self._pull(index - 1)
            if not more:
                return b""
            stage.push(more)
