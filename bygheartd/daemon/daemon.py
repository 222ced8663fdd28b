"""`bygheartd run`: wires the engine, the drop-folder watcher and MCP over HTTP together,
speaks sd_notify, drains on SIGTERM/SIGINT and reloads its config on SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from bygheartd.catalog import counted
from bygheartd.config import Config, LiveConfig, find_api_key, load_config
from bygheartd.daemon.looplag import LoopLag
from bygheartd.daemon.systemd import Notifier, watchdog_interval, watchdog_loop
from bygheartd.errors import BygheartdError
from bygheartd.jobs import JobStatus
from bygheartd.runtime import EngineRole, NoApiKey, Runtime, no_key_message

log = logging.getLogger(__name__)

DRAIN_SECONDS = 20.0
# Settings a reload cannot change in a running daemon (it says so in the log).
RESTART_ONLY = (
    "folders",
    "store",
    "api.backend",
    "mcp",
    "web",
    "watch.settle_seconds",
    "watch.poll_interval_seconds",
    "watch.rescan_seconds",
)
STATUS_SECONDS = 10.0
# How often the daemon asks whether the daily store backup is due: hourly, so that backups
# stay daily however often the daemon is restarted (a daily timer would restart with it).
BACKUP_CHECK_SECONDS = 3600.0


class Daemon:
    def __init__(
        self, config: Config, config_path: Path | None, log_override: str | None = None
    ) -> None:
        self.live = LiveConfig(config)
        self.config_path = config_path
        self.log_override = log_override  # --log-level wins over [log] level, even on reload
        self.notifier = Notifier()
        self.stop_event = asyncio.Event()
        self.stop_signal = "request"
        self.runtime: Runtime | None = None
        self.watcher: Any = None
        self.mcp_http: Any = None
        self.loop_lag = LoopLag()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def config(self) -> Config:
        return self.live.current

    async def run(self) -> int:
        from bygheartd.folders.checks import check_folders
        from bygheartd.runtime import prepare_state_folder

        # Refused before anything else: nothing works without the store (a StoreError
        # says which folder and what to do).
        prepare_state_folder(self.config)
        problems = check_folders(self.config)
        for problem in problems:
            log.warning("%s", problem)
        runtime = Runtime(self.live, role=EngineRole.DAEMON)
        self.runtime = runtime
        self._install_signals()  # a SIGTERM while waiting for the lock still ends cleanly
        lock_wait = asyncio.create_task(runtime.wait_for_engine_lock())
        stop_wait = asyncio.create_task(self.stop_event.wait())
        await asyncio.wait({lock_wait, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if not lock_wait.done():
            lock_wait.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lock_wait  # its cleanup withdraws the hand-over request
            await runtime.close()
            log.info("shutdown on %s ◆ stopped while waiting for the engine lock", self.stop_signal)
            return 0
        lock_wait.result()
        async with runtime:
            if not runtime.service.engine_running:
                log.error("%s", runtime.engine_error or "the engine could not start")
                return 1
            self._spawn(self.loop_lag.run(), "loop-lag")
            await self._start_backups(runtime)
            await self._start_faces(runtime)
            interval = watchdog_interval()
            if interval is not None:
                self._spawn(watchdog_loop(self.notifier, interval), "systemd-watchdog")
            self._spawn(self._status_loop(runtime), "service-status")
            self._log_setup(runtime)
            status = await self._status_text(runtime)
            if problems:
                status += f"; {counted(len(problems), 'folder problem')}: {problems[0]}"
            self.notifier.ready(status)
            log.info("bygheartd is running: %s", status)
            await self.stop_event.wait()
            self.notifier.stopping()
            log.info("stopping on %s: draining in-flight work", self.stop_signal)
            for task in self._tasks:
                task.cancel()
            await self._stop_faces()
            counts = await runtime.shut_down(DRAIN_SECONDS)
        log.info("shutdown on %s ◆ %s", self.stop_signal, _summary(counts))
        return 0

    def _log_setup(self, runtime: Runtime) -> None:
        """One line a user can check at a glance: where songs come from and go, what it costs."""
        c = self.config
        plugins = runtime.plugin_names()
        log.info(
            "%s backend at %s (plan %s); inbox %s -> output %s; plugins: %s; config %s",
            c.backend,
            c.api.effective_base_url(),
            c.plan,
            c.folders.inbox,
            c.folders.output,
            ", ".join(plugins) or "none",
            c.source_path or "built-in defaults",
        )

    async def _start_backups(self, runtime: Runtime) -> None:
        """A backup now when the newest is a day old (or there is none), before anything
        else writes; then the hourly check on the engine's ticker."""
        await self._backup_if_due()
        runtime.service.every("store-backup", BACKUP_CHECK_SECONDS, self._backup_if_due)

    async def _backup_if_due(self) -> None:
        """Off the event loop: a backup copies and checks the whole store file."""
        from bygheartd.service.store_care import backup_store_if_due

        try:
            backup = await asyncio.to_thread(backup_store_if_due, self.config)
        except BygheartdError as exc:  # a full disk, a damaged store: say so, keep running
            log.error("no backup of the job store: %s", exc)
            return
        if backup is not None:
            log.info(
                "job store backed up to %s (keeping the newest %d)",
                backup.path,
                self.config.store.backups,
            )

    async def _start_faces(self, runtime: Runtime) -> None:
        from bygheartd.watch.watcher import InboxWatcher

        if runtime.service.engine_running:
            self.watcher = InboxWatcher(self.live, runtime.service)
            await self.watcher.start()
        web = self.config.web.enabled
        if self.config.mcp.http or web:
            from bygheartd.mcp.http import McpHttpServer

            extra = None
            if web:
                from bygheartd.web.app import web_routes

                service = runtime.service
                extra = lambda token: web_routes(service, token)  # noqa: E731
            lag = self.loop_lag
            self.mcp_http = McpHttpServer(
                runtime.service,
                mcp=self.config.mcp.http,
                extra_routes=extra,
                health_extras=lambda: {"loop_lag_ms": lag.figures().as_record()},
            )
            await self.mcp_http.start()
            if web:  # `bygheartd web` reads it: the real port, even for [mcp] port = 0
                await runtime.service.logins.set_address(self.mcp_http.base_url)

    async def _stop_faces(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()
        if self.mcp_http is not None:
            if self.config.web.enabled and self.runtime is not None:
                await self.runtime.service.logins.set_address(None)
            await self.mcp_http.stop()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.create_task(self.reload()))

    def _request_stop(self, name: str) -> None:
        self.stop_signal = name
        self.stop_event.set()

    async def reload(self) -> None:
        """SIGHUP: read the config (and the key) again; keep every job."""
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
            key = find_api_key(new)
            if key.value is None and new.backend == "bygheart":
                raise NoApiKey(no_key_message(new))
        except BygheartdError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            self.notifier.ready("reload refused: " + str(exc).splitlines()[0])
            return
        changed = _diff(self.config, new)
        needs_restart = [c for c in changed if c.startswith(RESTART_ONLY)]
        if "api.backend" in changed:  # then the rest of [api] waits for the restart too
            needs_restart += [c for c in changed if c.startswith("api.") and c != "api.backend"]
        new = _keep_restart_only(self.config, new)
        if self.runtime is not None:
            await self.runtime.reload(
                new, plugins_changed=any(c.startswith("plugins") for c in changed)
            )
        else:
            self.live.replace(new)
        if "log.level" in changed and self.log_override is None:
            from bygheartd.logs import setup_logging

            setup_logging(new.log.level)
        applied = [c for c in changed if c not in needs_restart]
        if needs_restart:
            log.warning("reloaded; these changes wait for a restart: %s", ", ".join(needs_restart))
        log.info(
            "reloaded config: %s",
            ", ".join(applied)
            or ("nothing else changed" if needs_restart else "no changes (key re-read)"),
        )
        if self.runtime is not None:
            self.notifier.ready(await self._status_text(self.runtime))

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """A task of the daemon's own, cancelled at stop; one that dies says so in the log."""
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(_report_death)
        self._tasks.append(task)

    async def _status_loop(self, runtime: Runtime) -> None:
        while True:
            await asyncio.sleep(STATUS_SECONDS)
            try:
                self.notifier.status(await self._status_text(runtime))
            except BygheartdError as exc:  # a busy or damaged store: try again next time
                log.warning("the service status line was not updated: %s", exc)

    async def _status_text(self, runtime: Runtime) -> str:
        counts = await runtime.service.counts()
        order = [s.value for s in JobStatus]
        parts = [f"{counts[s]} {s}" for s in order if counts.get(s)]
        text = "jobs: " + (", ".join(parts) if parts else "none")
        paused = getattr(self.watcher, "status_text", None)
        return f"{text}; {paused}" if paused else text


def _report_death(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("%s stopped: %s", task.get_name(), exc, exc_info=exc)


def _summary(counts: dict[str, int]) -> str:
    """`3 jobs done ◆ 1 failed ◆ 1 cancelled ◆ 2 still queued or running`: every job."""
    active = sum(n for s, n in counts.items() if s not in ("done", "failed", "cancelled"))
    done = counts.get("done", 0)
    return (
        f"{done} job{'' if done == 1 else 's'} done ◆ {counts.get('failed', 0)} failed ◆ "
        f"{counts.get('cancelled', 0)} cancelled ◆ {active} still queued or running"
    )


def _keep_restart_only(old: Config, new: Config) -> Config:
    """The reloaded config with the settings that need a restart kept as they run now, so
    that no component picks up half of such a change from the shared holder."""
    return new.replaced(
        folders=old.folders,
        store=old.store,  # the daemon keeps the store it opened until it restarts
        mcp=old.mcp,
        web=old.web,
        # Another backend speaks another protocol to other servers: all of [api] waits.
        api=new.api if new.api.backend == old.api.backend else old.api,
        watch=new.watch.replaced(
            settle_seconds=old.watch.settle_seconds,
            poll_interval_seconds=old.watch.poll_interval_seconds,
            rescan_seconds=old.watch.rescan_seconds,
        ),
    )


def _diff(old: Config, new: Config) -> list[str]:
    a, b = old.as_record(), new.as_record()
    changed = []
    for section in sorted(set(a) | set(b)):
        sa, sb = a.get(section), b.get(section)
        if isinstance(sa, dict) and isinstance(sb, dict):
            changed += [
                f"{section}.{k}" for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)
            ]
        elif sa != sb:
            changed.append(section)
    return changed


async def run_daemon(config_path: Path | None, log_level: str | None) -> int:
    from bygheartd.logs import setup_logging

    try:
        config = load_config(config_path)
    except BygheartdError as exc:
        setup_logging(log_level or "info")
        log.error("%s", exc)
        return 1
    setup_logging(log_level or config.log.level)
    if find_api_key(config).value is None and config.backend == "bygheart":
        log.error("%s", no_key_message(config))
        return 1
    daemon = Daemon(config, config_path, log_level)
    with contextlib.suppress(asyncio.CancelledError):
        return await daemon.run()
    return 0
