"""Wiring: config -> store -> lock -> client -> plugins -> engine -> service, for every face.

The one place that builds them, above the service (as datasette's `Datasette` object is):
the service never builds the engine that calls back into it. `bygheartd run` always runs
the engine (waiting for the lock); `submit --wait`, `mcp` and `demo` run an in-process
engine only while no other process holds the lock, and hand it over as soon as a daemon
asks for it (DESIGN.md, "Hand-over").
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import hashlib
import logging
from pathlib import Path
from types import TracebackType
from typing import Self

from bygheartd.api.client import BygheartClient
from bygheartd.api.factory import NoApiKey, make_client, make_server_client, no_key_message
from bygheartd.catalog import counted
from bygheartd.config import Config, LiveConfig, find_api_key, key_sources_signature
from bygheartd.engine.engine import Engine
from bygheartd.engine.lock import EngineLock, EngineRole, holder_role
from bygheartd.engine.pool import unusable_pool
from bygheartd.engine.ticker import Tick
from bygheartd.errors import BygheartdError, ConfigError
from bygheartd.hooks.discovery import (
    entry_point_candidates,
    first_party_candidates,
    path_candidates,
)
from bygheartd.hooks.host import PluginHost, PluginInfo, PluginSettings
from bygheartd.jobs import ACTIVE_STATUSES, JobStatus
from bygheartd.service.service import SongService, open_service
from bygheartd.store.opening import open_store
from bygheartd.store.state_folder import prepare_state_folder

log = logging.getLogger(__name__)

__all__ = [
    "EngineRole",
    "NoApiKey",
    "Runtime",
    "announce_restored",
    "describe_plugins",
    "make_client",
    "make_server_client",
    "no_key_message",
    "open_service",
    "open_store",
    "plugin_name_problems",
    "plugin_settings",
    "prepare_state_folder",
]


def plugin_settings(config: Config) -> PluginSettings:
    return PluginSettings(
        enabled=list(config.plugins.enabled),
        disabled=list(config.plugins.disabled),
        paths=[Path(p).expanduser() for p in config.plugins.paths],
        hook_timeout_seconds=config.plugins.hook_timeout_seconds,
        tables=config.plugins.tables(),
    )


def describe_plugins(config: Config) -> list[PluginInfo]:
    """Every plugin found for this config, loaded or not, with its hooks and load error."""
    return PluginHost.load(plugin_settings(config)).describe()


def plugin_name_problems(config: Config) -> list[str]:
    """Names in `[plugins] enabled`/`disabled` that no installed plugin has, each with the
    nearest real name: a typo there silently turns a plugin off (or fails to), and `config
    check` is where people look. Discovery only lists names; no plugin code is imported."""
    paths = [Path(p).expanduser() for p in config.plugins.paths]
    candidates = first_party_candidates() + entry_point_candidates() + path_candidates(paths)
    known = sorted({c.name for c in candidates})
    problems = []
    for where, names in (
        ("enabled", config.plugins.enabled),
        ("disabled", config.plugins.disabled),
    ):
        for name in names:
            if name in known:
                continue
            close = difflib.get_close_matches(name, known, n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else "installed: " + (", ".join(known) or "none")
            )
            problems.append(f"unknown plugin {name!r} in [plugins] {where}: {hint}")
    return problems


async def announce_restored(config: Config, job_ids: list[str]) -> None:
    """After `store restore` failed the jobs that were waiting to be sent: the same
    note in failed/ and `on_failed` as any other failure, finished before returning."""
    if not job_ids:
        return
    plugins = await asyncio.to_thread(PluginHost.load, plugin_settings(config))
    service = SongService(config, open_store(config), plugins=lambda: plugins)
    try:
        jobs = [await service.get(job_id) for job_id in job_ids]
        await service.lifecycle.restored(jobs)
        await service.lifecycle.drain(config.plugins.hook_timeout_seconds + 5)
    finally:
        await service.close()


def _key_fingerprint(config: Config) -> str | None:
    """Which key is in use, without keeping it: a digest to notice a change by."""
    key = find_api_key(config).value
    return hashlib.sha256(key.encode()).hexdigest() if key else None


IN_FLIGHT_STATUSES = (
    JobStatus.SUBMITTING,
    JobStatus.RUNNING,
    JobStatus.DOWNLOADING,
    JobStatus.PROCESSING,
)
"""Paid for and not yet delivered: a song half made."""


class Runtime:
    """The store and service for a face, plus an engine whenever this process may run one."""

    def __init__(
        self,
        config: Config | LiveConfig,
        *,
        role: EngineRole,
        engine: bool = True,
        release_when_idle: float | None = None,
        plugins: PluginHost | None = None,
    ) -> None:
        self.live = LiveConfig.of(config)
        self.role = role
        self.want_engine = engine
        self.release_when_idle = release_when_idle
        # The engine lock lives there whichever store the config names.
        prepare_state_folder(self.config)
        self.store = open_store(self.config)
        self.service = SongService(self.live, self.store, engine=self, plugins=self._plugins)
        self.lock = EngineLock(self.config.state_dir)
        self.engine: Engine | None = None
        self.plugins = plugins
        self._client: BygheartClient | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._idle_since: float | None = None
        self.engine_error: str | None = None
        # Set while an engine drains (and for good once the process is exiting): the
        # supervisor must not start a second engine that downloads the same takes.
        self._no_restart = False
        # A fingerprint of the key the engine's client uses: a changed key file or
        # credential is picked up without a reload, and jobs held for a bad key retried.
        self._key_print: str | None = None
        self._key_sources: tuple[object, ...] = ()

    @property
    def config(self) -> Config:
        return self.live.current

    def _plugins(self) -> PluginHost | None:
        return self.plugins

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
        await self._stop_supervisor()
        await self.stop_engine()
        await self.store.close()

    async def _stop_supervisor(self) -> None:
        self._no_restart = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None

    async def shut_down(self, drain_seconds: float) -> dict[str, int]:
        """Stop for good as the process exits: no engine starts again, and a download that
        outlived the drain keeps a working client until the process ends instead of having
        its connection closed under it (the next start resumes it from the store)."""
        await self._stop_supervisor()
        return await self.stop_engine(drain_seconds, close_client=False)

    async def reload(self, config: Config, *, plugins_changed: bool) -> None:
        """A reloaded config (SIGHUP): replace it in its one holder, give the engine a
        client with the key read again, reload plugins when their settings changed."""
        self.live.replace(config)
        if self.engine is None:
            return
        old_client = self._client
        self._client = make_client(config)
        if plugins_changed:
            self.plugins = await asyncio.to_thread(PluginHost.load, plugin_settings(config))
            log.info("plugins reloaded: %s", ", ".join(self.plugins.active) or "none")
            for info in self.plugins.describe():
                if info.error:
                    log.warning("plugin not loaded: %s: %s", info.name, info.error)
        self._key_print = _key_fingerprint(config)
        self.engine.use(self._client, self.plugins)
        await self.engine.recheck_auth()
        if old_client is not None:
            await old_client.aclose()

    def plugin_names(self) -> list[str]:
        return list(self.plugins.active) if self.plugins is not None else []

    async def wait_for_engine_lock(self) -> None:
        """The daemon's way in: wait for an in-process engine to hand over; refuse when
        another daemon already runs on this state folder."""
        holder = self.lock.holder()
        if holder is None:
            return
        if holder_role(holder) is EngineRole.DAEMON:
            raise BygheartdError(
                f"another `bygheartd run` (pid {holder.get('pid')}) already uses the state "
                f"folder {self.config.state_dir}: stop it first, or give this one another "
                "[folders] state"
            )
        log.info(
            "waiting for %s (pid %s) to hand the engine over",
            holder.get("owner"),
            holder.get("pid"),
        )
        self.lock.request_handover()
        try:
            while self.lock.holder() is not None:
                await asyncio.sleep(0.2)
        finally:
            self.lock.clear_handover()

    async def close(self) -> None:
        """Close the store of a runtime that never started (stopped while waiting)."""
        await self.store.close()

    def every(self, name: str, seconds: float, func: Tick) -> bool:
        if self.engine is None:
            return False
        self.engine.ticker.every(name, seconds, func, start_now=False)
        return True

    def cancel(self, name: str) -> None:
        if self.engine is not None:
            self.engine.ticker.cancel(name)

    @property
    def engine_running(self) -> bool:
        return self.engine is not None

    async def _try_start_engine(self) -> bool:
        if self.engine is not None:
            return True
        if self._no_restart:
            return False
        if self.lock.handover_requested() and not self.role.keeps_engine:
            return False  # a daemon is taking over: leave the lock to it
        if not self.lock.try_acquire(self.role):
            return False
        try:
            unusable = unusable_pool(self.config)
            if unusable is not None:
                raise ConfigError(unusable)
            self._client = make_client(self.config)
        except BygheartdError as exc:
            self.engine_error = str(exc)
            self.lock.release()
            return False
        if self.plugins is None:
            self.plugins = await asyncio.to_thread(PluginHost.load, plugin_settings(self.config))
        self._key_print = _key_fingerprint(self.config)
        self.engine = Engine(
            self.live, self.store, self._client, self.plugins, role=self.role.value
        )
        await self.engine.start()
        log.info("engine running in this process (%s)", self.role)
        return True

    async def stop_engine(
        self, drain_seconds: float = 10.0, *, close_client: bool = True
    ) -> dict[str, int]:
        """Drain and stop the engine here, release the lock; the job counts at the end."""
        if self.engine is None:
            return await self.store.counts()
        engine, self.engine = self.engine, None
        restart_was_blocked, self._no_restart = self._no_restart, True
        try:
            counts = await engine.stop(drain_seconds)
            if close_client:
                await engine.parts.pool.aclose()
            if close_client and self._client is not None:
                await self._client.aclose()
                self._client = None
            self.lock.release()
        finally:
            self._no_restart = restart_was_blocked
        return counts

    async def _supervise(self) -> None:
        """Hand the lock over when asked or idle; take it when work waits and it is free."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.5)
            try:
                if self.engine is not None:
                    await self._follow_key()
                    if self.role.keeps_engine:
                        continue
                    if self.lock.handover_requested():
                        log.info("a daemon asked for the engine lock: handing over")
                        await self.stop_engine()
                        continue
                    if self.release_when_idle is None:
                        continue
                    counts = await self.store.counts()
                    busy = any(counts.get(s.value, 0) for s in ACTIVE_STATUSES)
                    if busy:
                        self._idle_since = None
                    elif self._idle_since is None:
                        self._idle_since = loop.time()
                    elif loop.time() - self._idle_since >= self.release_when_idle:
                        await self.stop_engine()
                elif await self.has_work():
                    await self._try_start_engine()
            except BygheartdError as exc:
                log.warning("engine supervisor: %s", exc)

    async def _follow_key(self) -> None:
        """A key file or systemd credential rewritten while we run: use the new key now.
        Checked twice a second, so the files are only looked at (stat) until they change."""
        signature = key_sources_signature(self.config)
        if signature == self._key_sources:
            return
        try:
            current = await asyncio.to_thread(_key_fingerprint, self.config)
        except BygheartdError:
            return  # a key file that vanished: the next submit says so with the fix
        if self.engine is None:
            return
        self._key_sources = signature
        if current == self._key_print:
            return
        self._key_print = current
        old_client, self._client = self._client, make_client(self.config)
        log.info("the API key changed: using the new one, retrying jobs held for the key")
        self.engine.use(self._client)
        await self.engine.recheck_auth()
        if old_client is not None:
            await old_client.aclose()

    async def finish_in_flight(self, limit_seconds: float, *, every: float = 0.5) -> int:
        """Keep the engine here until the songs it has paid for are safe: nothing left
        `submitting`, `running`, `downloading` or `processing` on this engine, or
        `limit_seconds` passed, or the engine went (a daemon took the lock over). For
        `bygheartd mcp`, whose client may close while a song is half made: the song is
        finished now rather than when some engine next starts. Returns how many were still
        in flight at the end (they resume, from the store, wherever an engine next runs)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_seconds
        said = False
        while True:
            engine = self.engine
            if engine is None:
                return 0
            counts = await self.store.counts(engine=engine.info.id)
            left = sum(counts.get(s.value, 0) for s in IN_FLIGHT_STATUSES)
            if left == 0 or loop.time() >= deadline:
                return left
            if not said:
                log.info(
                    "the client closed: finishing %s in flight before exiting "
                    "(stopped sooner, they resume when an engine next starts)",
                    counted(left, "song"),
                )
                said = True
            await asyncio.sleep(every)

    async def has_work(self) -> bool:
        counts = await self.store.counts()
        return any(counts.get(s.value, 0) for s in ACTIVE_STATUSES)

    def wake(self) -> None:
        if self.engine is not None:
            self.engine.ticker.wake("submit")
