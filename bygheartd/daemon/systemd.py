"""What the daemon needs from systemd, in stdlib only: sd_notify, the watchdog, and the
folders systemd hands a service ($CREDENTIALS_DIRECTORY, $STATE_DIRECTORY).

Everything here is a no-op outside systemd, so `bygheartd run` behaves the same in a shell.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "Notifier",
    "credentials_dir",
    "read_credential",
    "state_dir_from_env",
    "watchdog_interval",
    "watchdog_loop",
]

logger = logging.getLogger(__name__)

# A send waits at most this long: PID 1 reads its notify socket promptly, and a stuck
# manager must not freeze the event loop that the messages come from.
_SEND_TIMEOUT_SECONDS = 1.0


def _socket_address(value: str) -> str | None:
    """Turn $NOTIFY_SOCKET into an AF_UNIX address: "@name" is Linux's abstract namespace."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # vsock:... and other transports of newer systemd versions: not for a local daemon.
    return None


class Notifier:
    """Sends sd_notify datagrams to the service manager, or nothing when there is none.

    Sending never raises: a lost STATUS line must not stop a daemon that is doing paid work.
    With `NotifyAccess=main` only this process may send, so children never inherit a socket.
    """

    def __init__(
        self, address: str | None = None, *, environ: Mapping[str, str] | None = None
    ) -> None:
        """Use `address` (a $NOTIFY_SOCKET value), else $NOTIFY_SOCKET from `environ`."""
        env = os.environ if environ is None else environ
        raw = address if address is not None else env.get("NOTIFY_SOCKET", "")
        self._address = _socket_address(raw) if raw else None
        if raw and self._address is None:
            logger.debug("NOTIFY_SOCKET %r is not a unix socket; sd_notify disabled", raw)

    @property
    def enabled(self) -> bool:
        """True when a service manager listens (the daemon runs under systemd)."""
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send VAR=value lines in one datagram; True when the manager received them."""
        if self._address is None or not assignments:
            return False
        message = "\n".join(assignments).encode("utf-8", errors="replace")
        try:
            # A socket per message, as libsystemd does: no descriptor to leak or inherit,
            # and a manager that restarted (a new socket file) is reached at once.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(_SEND_TIMEOUT_SECONDS)
                sock.sendto(message, self._address)
        except OSError as exc:
            logger.debug("sd_notify %s failed: %s", assignments[0].split("=", 1)[0], exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1: startup is complete; `systemctl start` returns and dependents start."""
        if status is None:
            return self.notify("READY=1")
        return self.notify("READY=1", _status_line(status))

    def status(self, text: str) -> bool:
        """STATUS=: the one line `systemctl status` shows (queue counts, say)."""
        return self.notify(_status_line(text))

    def stopping(self) -> bool:
        """STOPPING=1: the drain has begun, so systemd reports "deactivating"."""
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        """WATCHDOG=1: the event loop is alive; without it systemd restarts the service."""
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC, which systemd 253+ needs for Type=notify-reload.

        Send `ready()` when the new config is in force.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def __repr__(self) -> str:
        target = "off" if self._address is None else repr(self._address.replace("\0", "@"))
        return f"Notifier({target})"


def _status_line(text: str) -> str:
    # A newline would start a new assignment that systemd might act on.
    return "STATUS=" + " ".join(text.splitlines())


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of WatchdogSec=), or None when not asked for.

    $WATCHDOG_PID names the process the watchdog is meant for; when it is another one (a
    child that inherited the environment), this process must not ping.
    """
    env = os.environ if environ is None else environ
    raw_usec = env.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    raw_pid = env.get("WATCHDOG_PID", "")
    if raw_pid:
        try:
            if int(raw_pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000


async def watchdog_loop(notifier: Notifier, interval: float) -> None:
    """Ping the watchdog every `interval` seconds until cancelled.

    It runs on the event loop on purpose: when the loop is blocked the pings stop and
    systemd restarts the daemon, which is what the watchdog is for.
    """
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)


def credentials_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """$CREDENTIALS_DIRECTORY: where systemd put LoadCredential= files, or None."""
    env = os.environ if environ is None else environ
    raw = env.get("CREDENTIALS_DIRECTORY", "")
    return Path(raw) if raw else None


def read_credential(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The credential `name` without its trailing newline, or None when it is not there."""
    folder = credentials_dir(environ)
    if folder is None:
        return None
    try:
        value = (folder / name).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    return value.rstrip("\r\n")


def state_dir_from_env(environ: Mapping[str, str] | None = None) -> Path | None:
    """$STATE_DIRECTORY (the first one when StateDirectory= names several), or None."""
    env = os.environ if environ is None else environ
    first = env.get("STATE_DIRECTORY", "").split(":", 1)[0]
    return Path(first) if first else None
