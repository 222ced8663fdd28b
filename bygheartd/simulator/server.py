"""Running the simulator for real: in a background thread for tests and benchmarks
(`run_in_thread`), or in the foreground for `bygheartd simulator` (`serve`).
"""

from __future__ import annotations

import contextlib
import copy
import errno
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.config import LOGGING_CONFIG

from .app import create_app
from .settings import SimulatorSettings, apply_runtime_changes
from .state import Simulator

log = logging.getLogger(__name__)

# uvicorn's levels, for both command lines (the simulator imports nothing of bygheartd's CLI).
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class CannotListen(Exception):
    """The address cannot be listened on; the message says what to do."""


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP lets asyncio set TCP_NODELAY on accepted connections; without it
    # every keep-alive reply waits ~40 ms for a delayed ACK (headers and body are 2 writes).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CannotListen(
                f"port {port} on {host} is in use: is a simulator already running there "
                "(its URL then works as it is)? Otherwise pick another --port, or --port 0 "
                "for a free one"
            ) from None
        raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    # Listen now: the base URL is printed before uvicorn starts, and a client that connects
    # at once must wait in the backlog, not be refused.
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _base_url(sock: socket.socket, prefix: str) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{prefix}"


def _banner(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"INFO:     Uvicorn running on http://{host}:{port} (Press CTRL+C to quit)"


def _stderr_log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging on stderr (stdout carries only the URL). A line per request only at
    `--log-level debug`: run as `bygheartd simulator &` beside a `submit --wait`, every poll
    would otherwise be printed through the progress bars."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    config["loggers"]["uvicorn"]["level"] = level.upper()
    return config


class RunningSimulator:
    """A simulator served on a background thread; `stop()` shuts it down and cleans up."""

    def __init__(
        self, base_url: str, app: Starlette, server: uvicorn.Server, thread: threading.Thread
    ) -> None:
        self.base_url = base_url
        self.app = app
        self.sim: Simulator = app.state.sim
        self._server = server
        self._thread = thread

    def set_faults(self, **changes: Any) -> None:
        """Change faults at run time, like POST /_sim/faults."""
        apply_runtime_changes(self.sim.settings, changes)

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __repr__(self) -> str:
        return f"RunningSimulator({self.base_url!r})"


@contextlib.contextmanager
def run_in_thread(
    settings: SimulatorSettings | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    startup_timeout: float = 10.0,
) -> Iterator[RunningSimulator]:
    """Serve on a pre-bound socket in a daemon thread; yields once requests are answered."""
    settings = settings or SimulatorSettings()
    sock = _bind(host, port)
    try:
        app = create_app(settings)
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", access_log=False, loop="asyncio"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="bygheartd-simulator", daemon=True
        )
        handle = RunningSimulator(_base_url(sock, settings.path_prefix), app, server, thread)
        handle.sim.set_banner(_banner(sock))
        thread.start()
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                thread.join(startup_timeout)
                handle.sim.cleanup_files()
                raise RuntimeError("the simulator did not start; see the log above")
            time.sleep(0.005)
        try:
            yield handle
        finally:
            handle.stop()
            handle.sim.cleanup_files()  # also when the thread did not finish in time
    finally:
        sock.close()


def serve(
    settings: SimulatorSettings | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    log_level: str = "info",
) -> None:
    """Serve in the foreground until Ctrl+C/SIGTERM; stdout gets only the base URL line."""
    settings = settings or SimulatorSettings()
    sock = _bind(host, port)
    app = create_app(settings)
    sim: Simulator = app.state.sim
    sim.set_banner(_banner(sock))
    base_url = _base_url(sock, settings.path_prefix)
    print(base_url, flush=True)
    sys.stdout.flush()
    print(
        f"bygheartd simulator: backend={settings.backend} latency={settings.latency}s "
        f"workers={settings.workers or 'unlimited'} audio in {sim.audio_dir}; "
        f"admin: {base_url}/_sim/stats",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=_stderr_log_config(log_level),
        log_level=log_level.lower(),
        access_log=log_level.lower() == "debug",
    )
    previous = None
    if threading.current_thread() is threading.main_thread():
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it: end with exit code 0.
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except _Terminated:
        log.info("simulator stopped on SIGTERM")
    except KeyboardInterrupt:
        # uvicorn re-raises the Ctrl-C it already handled gracefully; without this, click
        # prints "Aborted!" and exits 1 for what is the normal way to stop a foreground server.
        print("bygheartd simulator: stopped", file=sys.stderr, flush=True)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        sim.cleanup_files()
        sock.close()


class _Terminated(Exception):
    """SIGTERM after uvicorn's graceful shutdown."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated
