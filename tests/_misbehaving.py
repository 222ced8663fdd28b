"""A misbehaving HTTP proxy on 127.0.0.1 for the time-limit, redirect and hostile-reply
tests.

It forwards each request to a real server (the simulator, or the scripted API of
`_servers.py`) and then, for the requests its rules pick, drips the reply a byte at a time,
stops the body part-way and goes quiet, or answers with a redirect instead; or it answers
itself with a reply no sane server sends (a compression bomb streamed without end, a body
of hundreds of megabytes, JSON nested 100,000 deep), or passes the server's reply on with a
lying Content-Length. Those are the peers that no ASGI app imitates faithfully: the bytes
really arrive (or stop arriving) on the socket, as from a broken proxy or a hostile server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

Action = Literal["drip", "stall", "redirect", "refuse", "reply", "lie_length", "gzip", "edit"]
Body = bytes | Callable[[], Iterable[bytes]]


@dataclass
class Rule:
    """What the proxy does to requests whose request line ("GET /path?query") contains
    `match`.

    - `drip`: the reply's headers at once, then its body at `bytes_per_second`;
    - `stall`: the headers and `after_body_bytes` of the body, then nothing (the connection
      stays open until the client gives up);
    - `redirect`: a 302 to `location`, without asking the server;
    - `refuse`: `status` (with `retry_after` as its Retry-After header when set), without
      asking the server: a busy file server, say;
    - `reply`: `status`, `headers` and `body` without asking the server; `body` is bytes or
      a callable giving the chunks to stream (made as they are sent: a 2.5 GiB bomb is never
      held whole); with `content_length` None the body ends when the connection closes;
    - `lie_length`: the server's reply with its Content-Length replaced by `content_length`
      (the whole body still sent);
    - `gzip`: the server's reply, its body gzip-encoded (Content-Encoding: gzip);
    - `edit`: the server's reply, its body passed through `edit` (a NaN put into a poll
      reply, a status changed): a server that answers the right task with a wrong value.

    `sent` counts the body bytes the rule's replies put on the socket (`reply`).

    `times` limits how many requests the rule takes (None: all). With `first_target_only`
    the rule keeps to the first request line it took, and its repeats (a resumed download);
    with `first_body_only` to the first request body it took too (one poll's list of ids).
    """

    match: str
    action: Action
    bytes_per_second: float = 1.0
    after_body_bytes: int = 0
    location: str = ""
    status: int = 429
    retry_after: str = ""
    times: int | None = None
    first_target_only: bool = False
    first_body_only: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    body: Body = b""
    content_length: int | None = None
    edit: Callable[[bytes], bytes] | None = None
    # Only requests whose body holds these bytes (a poll whose id list holds one task's id);
    # may be set while the proxy runs, once the id is known.
    body_match: bytes = b""
    hits: int = 0
    pinned: str | None = None
    sent: int = 0

    def takes(self, line: str, body: bytes = b"") -> bool:
        if self.match not in line or (self.times is not None and self.hits >= self.times):
            return False
        if self.body_match and self.body_match not in body:
            return False
        if self.first_target_only or self.first_body_only:
            key = line + "\n" + body.decode("latin-1") if self.first_body_only else line
            if self.pinned is None:
                self.pinned = key
            elif self.pinned != key:
                return False
        self.hits += 1
        return True


class MisbehavingProxy:
    """`with MisbehavingProxy(upstream_origin, Rule(...)) as proxy:` then talk to
    `proxy.origin`. `rewrite_host` sends the upstream its own Host (so absolute URLs it
    builds point at the upstream, not at the proxy, as behind a careless reverse proxy).
    """

    def __init__(self, upstream: str, *rules: Rule, rewrite_host: bool = False) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname and parts.port, upstream
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.rules = list(rules)
        self.rewrite_host = rewrite_host
        self.requests: list[str] = []  # request lines, in arrival order
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop: asyncio.Event | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self, fragment: str) -> list[str]:
        return [line for line in self.requests if fragment in line]

    def __enter__(self) -> MisbehavingProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the misbehaving proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
        self._loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._exchange(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client gave up: what these tests provoke
        except asyncio.CancelledError:
            pass  # the proxy stops: end quietly (asyncio logs a cancelled handler task)
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers = [tuple(h.split(":", 1)) for h in header_lines if ":" in h]
        length = next((int(v) for k, v in headers if k.strip().lower() == "content-length"), 0)
        body = await reader.readexactly(length) if length else b""
        line = f"{method} {target}"
        self.requests.append(line)
        rule = next((r for r in self.rules if r.takes(line, body)), None)
        if rule is not None and rule.action == "redirect":
            writer.write(
                f"HTTP/1.1 302 Found\r\nLocation: {rule.location}\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode("latin-1")
            )
            await writer.drain()
            return
        if rule is not None and rule.action == "refuse":
            wait = f"Retry-After: {rule.retry_after}\r\n" if rule.retry_after else ""
            writer.write(
                f"HTTP/1.1 {rule.status} Refused\r\n{wait}Content-Type: text/plain\r\n"
                "Content-Length: 4\r\nConnection: close\r\n\r\nbusy".encode("latin-1")
            )
            await writer.drain()
            return
        if rule is not None and rule.action == "reply":
            await self._reply(writer, rule)
            return
        reply = await self._forward(method, target, headers, body)
        if rule is not None and rule.action in ("lie_length", "gzip", "edit"):
            writer.write(_rewritten(reply, rule))
            await writer.drain()
            return
        if rule is None:
            writer.write(reply)
            await writer.drain()
            return
        body_at = reply.index(b"\r\n\r\n") + 4
        if rule.action == "stall":
            writer.write(reply[: body_at + rule.after_body_bytes])
            await writer.drain()
            await reader.read()  # quiet until the client hangs up
            return
        writer.write(reply[:body_at])
        await writer.drain()
        step = max(1, int(rule.bytes_per_second / 20))
        pause = step / rule.bytes_per_second
        for start in range(body_at, len(reply), step):
            writer.write(reply[start : start + step])
            await writer.drain()
            await asyncio.sleep(pause)

    async def _reply(self, writer: asyncio.StreamWriter, rule: Rule) -> None:
        lines = [f"HTTP/1.1 {rule.status} Scripted", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in rule.headers.items()]
        if rule.content_length is not None:
            lines.append(f"Content-Length: {rule.content_length}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        chunks = [rule.body] if isinstance(rule.body, bytes) else rule.body()
        for chunk in chunks:
            writer.write(chunk)
            rule.sent += len(chunk)
            await writer.drain()
        await writer.drain()

    async def _forward(
        self, method: str, target: str, headers: list[tuple[str, ...]], body: bytes
    ) -> bytes:
        """The upstream's whole reply to this one request (one connection, then closed)."""
        up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        lines = [f"{method} {target} HTTP/1.1"]
        for name, value in headers:
            lower = name.strip().lower()
            if lower == "connection":
                continue
            if lower == "host" and self.rewrite_host:
                value = f" {self.upstream_host}:{self.upstream_port}"
            lines.append(f"{name}:{value}")
        lines.append("Connection: close")
        up_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await up_writer.drain()
        reply = await up_reader.read()
        up_writer.close()
        return reply


def _rewritten(reply: bytes, rule: Rule) -> bytes:
    """The upstream's reply with its Content-Length lying (`lie_length`), its body
    gzip-encoded (`gzip`) or changed by the rule (`edit`)."""
    head, _, body = reply.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    assert not any(line.lower().startswith("transfer-encoding") for line in lines), lines
    kept = [line for line in lines if not line.lower().startswith("content-length")]
    if rule.action == "gzip":
        body = gzip.compress(body)
        kept.append("Content-Encoding: gzip")
        length = len(body)
    elif rule.action == "edit":
        assert rule.edit is not None
        body = rule.edit(body)
        length = len(body)
    else:
        assert rule.content_length is not None
        length = rule.content_length
    kept.append(f"Content-Length: {length}")
    return "\r\n".join([status, *kept]).encode("latin-1") + b"\r\n\r\n" + body


def deflate_bomb(
    decoded: int, *, coding: str = "gzip", prefix: bytes = b"", block: int = 1 << 20
) -> Callable[[], Iterator[bytes]]:
    """The chunks of a body that decodes to `prefix` then zeros, `decoded` bytes in all
    (gzip: about 1 KiB per MiB, so 2.5 GiB is 2.5 MiB on the wire), made as they are sent.

    One block of zeros is compressed once and repeated: after a full flush a deflate stream
    starts afresh, so the same compressed bytes stand for every further block. The stream
    has no end (no final block, no trailer): a client that reads it all finds it cut off.
    """

    def chunks() -> Iterator[bytes]:
        squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        start = squeeze.compress(prefix) + squeeze.flush(zlib.Z_FULL_FLUSH)
        repeat = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        zeros = repeat.compress(bytes(block)) + repeat.flush(zlib.Z_FULL_FLUSH)
        if coding == "gzip":
            yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + start
        else:  # "deflate" as most servers send it: zlib-wrapped
            yield b"\x78\xda" + start
        for _ in range(max(0, decoded - len(prefix)) // block):
            yield zeros

    return chunks


def streamed(
    head: bytes, filler: bytes, total: int, *, tail: bytes = b""
) -> Callable[[], Iterator[bytes]]:
    """The chunks of `head`, then `filler` repeated up to `total` bytes, then `tail`: a
    huge reply made as it is sent."""

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range(max(0, total - len(head) - len(tail)) // len(filler)):
            yield filler
        yield tail

    return chunks
