"""Wiring: config -> store -> lock -> client -> plugins -> engine, for every face.

`bygheartd run` always runs the engine (waiting for the lock); `submit --wait`, `mcp` and
`demo` run an in-process engine only while no other process holds the lock, and hand it
over as soon as a daemon asks for it (DESIGN.md, "Hand-over").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from types import TracebackType
from typing import Self

from bygheartd.client import BygheartClient
from bygheartd.config import Config, find_api_key
from bygheartd.engine import Engine
from bygheartd.errors import BygheartdError
from bygheartd.jobs import ACTIVE_STATUSES
from bygheartd.lock import EngineLock
from bygheartd.plugins import PluginHost, PluginSettings
from bygheartd.service import SongService
from bygheartd.store import Store

log = logging.getLogger(__name__)


class NoApiKey(BygheartdError):
    pass


def no_key_message(config: Config) -> str:
    where = (
        f"[api] api_key_file in {config.source_path}"
        if config.source_path
        else "[api] api_key_file"
    )
    return (
        "no API key: set BYGHEART_API_KEY, give systemd the credential 'api-key', or set "
        f"{where}. To try bygheartd without a key, run `bygheartd demo`."
    )


def plugin_settings(config: Config) -> PluginSettings:
    return PluginSettings(
        enabled=list(config.plugins.enabled),
        disabled=list(config.plugins.disabled),
        paths=[Path(p).expanduser() for p in config.plugins.paths],
        hook_timeout_seconds=config.plugins.hook_timeout_seconds,
        tables=config.plugins.tables(),
    )


def make_client(config: Config) -> BygheartClient:
    key = find_api_key(config).value
    if key is None and config.backend == "bygheart":
        raise NoApiKey(no_key_message(config))
    from bygheartd.logs import register_secret

    if key:
        register_secret(key)
    return BygheartClient(
        config.api.effective_base_url(),
        key,
        backend="acestep" if config.backend == "acestep" else "bygheart",
        timeout=config.api.timeout_seconds,
    )


class Runtime:
    """The store and service for a face, plus an engine whenever this process may run one."""

    def __init__(
        self,
        config: Config,
        *,
        owner: str,
        engine: bool = True,
        release_when_idle: float | None = None,
        plugins: PluginHost | None = None,
    ) -> None:
        self.config = config
        self.owner = owner
        self.want_engine = engine
        self.release_when_idle = release_when_idle
        # Only the daemon keeps the engine when asked for it; every other face hands it over.
        self.is_daemon = owner == "bygheartd run"
        self.store = Store.open(config.state_dir)
        self.service = SongService(config, self.store)
        self.lock = EngineLock(config.state_dir)
        self.engine: Engine | None = None
        self.plugins = plugins
        self._client: BygheartClient | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._idle_since: float | None = None
        self.engine_error: str | None = None

    async def __aenter__(self) -> Self:
        if self.want_engine:
            await self._try_start_engine()
            self._supervisor = asyncio.create_task(self._supervise())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self.stop_engine()
        self.store.close()

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.service.config = config
        self.service.budget.config = config

    @property
    def engine_running(self) -> bool:
        return self.engine is not None

    async def _try_start_engine(self) -> bool:
        if self.engine is not None:
            return True
        if self.lock.handover_requested() and not self.is_daemon:
            return False  # a daemon is taking over: leave the lock to it
        if not self.lock.try_acquire(self.owner):
            return False
        try:
            self._client = make_client(self.config)
        except BygheartdError as exc:
            self.engine_error = str(exc)
            self.lock.release()
            return False
        if self.plugins is None:
            self.plugins = await asyncio.to_thread(PluginHost.load, plugin_settings(self.config))
        self.engine = Engine(self.config, self.store, self._client, self.plugins)
        await self.engine.start()
        log.info("engine running in this process (%s)", self.owner)
        return True

    async def stop_engine(self, drain_seconds: float = 10.0) -> None:
        if self.engine is None:
            return
        engine, self.engine = self.engine, None
        await engine.stop(drain_seconds)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self.lock.release()

    async def _supervise(self) -> None:
        """Hand the lock over when asked or idle; take it when work waits and it is free."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.5)
            try:
                if self.engine is not None:
                    if self.is_daemon:
                        continue
                    if self.lock.handover_requested():
                        log.info("a daemon asked for the engine lock: handing over")
                        await self.stop_engine()
                        continue
                    if self.release_when_idle is None:
                        continue
                    busy = any(self.store.counts().get(s.value, 0) for s in ACTIVE_STATUSES)
                    if busy:
                        self._idle_since = None
                    elif self._idle_since is None:
                        self._idle_since = loop.time()
                    elif loop.time() - self._idle_since >= self.release_when_idle:
                        await self.stop_engine()
                elif self.has_work():
                    await self._try_start_engine()
            except BygheartdError as exc:
                log.warning("engine supervisor: %s", exc)

    def has_work(self) -> bool:
        counts = self.store.counts()
        return any(counts.get(s.value, 0) for s in ACTIVE_STATUSES)

    def wake(self) -> None:
        if self.engine is not None:
            self.engine.ticker.wake("submit")
