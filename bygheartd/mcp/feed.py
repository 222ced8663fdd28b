"""A song you can subscribe to: `notifications/resources/updated` for
`bygheart://songs/{job_id}` at each status change, until the song ends.

Both generations of the protocol are served from one follower of the store's event feed
(the one `bygheartd follow` reads): clients on 2025-era versions send `resources/subscribe`
and get the notification on their connection; clients on 2026-07-28 open a
`subscriptions/listen` stream (served by the SDK) and get it through the subscription bus.
The feed only reads the store while someone listens.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated, ServerEvent

from bygheartd.jobs import JobStatus
from bygheartd.service.service import SongService

__all__ = ["SongBus", "SongFeed"]

log = logging.getLogger(__name__)

FINAL = {s.value for s in JobStatus if s.is_final}


class SongBus(InMemorySubscriptionBus):
    """The SDK's in-process bus, which also says whether any listen stream is open (so the
    feed can rest when nobody listens)."""

    def __init__(self, on_listener: Callable[[], None]) -> None:
        super().__init__()
        self.listeners = 0
        self._on_listener = on_listener

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        unsubscribe = super().subscribe(listener)
        self.listeners += 1
        self._on_listener()
        done = False

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                self.listeners -= 1
            unsubscribe()

        return release


class SongFeed:
    """Follows the store's events and tells subscribers about each status change."""

    def __init__(
        self,
        service: SongService,
        uri_of: Callable[[str], str],
        *,
        poll_seconds: float = 0.5,
    ) -> None:
        self.service = service
        self.uri_of = uri_of
        self.poll_seconds = poll_seconds
        self.bus = SongBus(self._wake)
        # 2025-era subscriptions: song URI -> the sessions that asked for it.
        self.sessions: dict[str, set[ServerSession]] = {}
        self._seq: int | None = None
        self._interest: anyio.Event | None = None  # made in `run`, inside the event loop

    @property
    def listening(self) -> bool:
        return bool(self.sessions) or self.bus.listeners > 0

    def _wake(self) -> None:
        if self._interest is not None:
            self._interest.set()

    async def subscribe(self, uri: str, session: ServerSession) -> None:
        """A `resources/subscribe`: from now on, this session hears of the song's changes."""
        if self._seq is None:  # read before answering: no change after the reply is missed
            self._seq = await self.service.event_seq()
        self.sessions.setdefault(uri, set()).add(session)
        self._wake()

    def unsubscribe(self, uri: str, session: ServerSession) -> None:
        sessions = self.sessions.get(uri)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self.sessions[uri]

    def lifespan(
        self, inner: Callable[[Any], AbstractAsyncContextManager[Any]] | None
    ) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
        """The server's lifespan with the feed running beside it (and `inner` inside)."""

        @contextlib.asynccontextmanager
        async def run(server: Any) -> AsyncIterator[Any]:
            async with anyio.create_task_group() as group:
                group.start_soon(self.run)
                try:
                    if inner is None:
                        yield {}
                    else:
                        async with inner(server) as state:
                            yield state
                finally:
                    group.cancel_scope.cancel()

        return run

    async def run(self) -> None:
        while True:
            if not self.listening:
                self._seq = None
                self._interest = anyio.Event()
                if not self.listening:
                    await self._interest.wait()
            try:
                if self._seq is None:
                    self._seq = await self.service.event_seq()
                await self.poll()
            except Exception as exc:  # a store hiccup: the next round tries again
                log.warning("song feed: %s", exc)
            await anyio.sleep(self.poll_seconds)

    async def poll(self) -> None:
        """Tell the subscribers of each song whose status changed since the last poll."""
        assert self._seq is not None
        for entry in await self.service.events_after(self._seq):
            self._seq = entry.seq
            change = entry.event
            if change.to_status is None or change.to_status == change.from_status:
                continue
            uri = self.uri_of(entry.job_id)
            await self.bus.publish(ResourceUpdated(uri=uri))
            for session in list(self.sessions.get(uri, ())):
                try:
                    await session.send_resource_updated(uri)
                except Exception as exc:  # the client went away: forget it
                    log.debug("resource update to a closed session: %r", exc)
                    self.unsubscribe(uri, session)
            if change.to_status in FINAL:
                self.sessions.pop(uri, None)  # the song has ended: so does its subscription
