"""sd_notify, the watchdog and systemd's folders, against real AF_UNIX datagram sockets."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bygheartd.daemon.systemd import (
    Notifier,
    credentials_dir,
    read_credential,
    state_dir_from_env,
    watchdog_interval,
    watchdog_loop,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A listening notify socket on a file path, as PID 1 creates at /run/systemd/notify."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield sock, str(path)
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    """A listening notify socket in the abstract namespace, spelt "@name" in NOTIFY_SOCKET."""
    name = f"bygheartd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    yield sock, "@" + name
    sock.close()


def receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def pending(sock: socket.socket) -> list[bytes]:
    """Every datagram already queued, without waiting for more."""
    found = []
    while True:
        try:
            found.append(sock.recv(4096, socket.MSG_DONTWAIT))
        except BlockingIOError:
            return found


def test_ready_reaches_a_path_socket(path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    assert Notifier(environ={"NOTIFY_SOCKET": address}).ready()
    assert receive(sock) == ["READY=1"]


def test_ready_reaches_an_abstract_socket(abstract_socket: tuple[socket.socket, str]) -> None:
    sock, address = abstract_socket
    assert Notifier(environ={"NOTIFY_SOCKET": address}).ready()
    assert receive(sock) == ["READY=1"]


def test_ready_with_status_is_one_datagram(path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    Notifier(address).ready("watching inbox")
    assert receive(sock) == ["READY=1", "STATUS=watching inbox"]


def test_status_stopping_and_watchdog_send_their_assignments(
    path_socket: tuple[socket.socket, str],
) -> None:
    sock, address = path_socket
    notifier = Notifier(address)
    notifier.status("2 queued, 1 running")
    notifier.stopping()
    notifier.watchdog()
    assert receive(sock) == ["STATUS=2 queued, 1 running"]
    assert receive(sock) == ["STOPPING=1"]
    assert receive(sock) == ["WATCHDOG=1"]


def test_status_newlines_cannot_inject_assignments(
    path_socket: tuple[socket.socket, str],
) -> None:
    sock, address = path_socket
    Notifier(address).status("ok\nREADY=1")
    assert receive(sock) == ["STATUS=ok READY=1"]


def test_reloading_carries_the_monotonic_clock(path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier(address).reloading()
    reloading, monotonic = receive(sock)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert reloading == "RELOADING=1"
    assert monotonic.startswith("MONOTONIC_USEC=")
    assert before <= int(monotonic.removeprefix("MONOTONIC_USEC=")) <= after


def test_notifier_reads_notify_socket_from_the_process_environment(
    path_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, address = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    Notifier().watchdog()
    assert receive(sock) == ["WATCHDOG=1"]


def test_without_notify_socket_every_message_is_a_silent_no_op(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert not notifier.status("x")
    assert not notifier.stopping()
    assert not notifier.watchdog()
    assert not notifier.reloading()


def test_a_socket_nobody_listens_on_does_not_raise(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    assert notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()


def test_a_non_unix_notify_socket_disables_the_notifier() -> None:
    assert not Notifier("vsock:2:1234").enabled


def test_the_notifier_recovers_when_the_manager_comes_back(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    notifier = Notifier(str(path))
    assert not notifier.watchdog()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        assert notifier.watchdog()
        assert receive(sock) == ["WATCHDOG=1"]


def test_watchdog_interval_is_half_the_period_in_seconds() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 30.0


def test_watchdog_interval_for_this_process_when_watchdog_pid_matches() -> None:
    env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(env) == 1.0


def test_watchdog_interval_is_none_when_meant_for_another_process() -> None:
    env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert watchdog_interval(env) is None


@pytest.mark.parametrize("usec", ["", "0", "-5", "sixty", "1.5"])
def test_watchdog_interval_is_none_without_a_valid_period(usec: str) -> None:
    assert watchdog_interval({"WATCHDOG_USEC": usec}) is None


def test_watchdog_interval_is_none_when_unset() -> None:
    assert watchdog_interval({}) is None


async def test_watchdog_loop_pings_repeatedly(path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(watchdog_loop(Notifier(address), 0.001))
    try:
        for _ in range(3):
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 2)
            assert data == b"WATCHDOG=1"
    finally:
        task.cancel()


async def test_watchdog_loop_goes_silent_while_the_event_loop_is_blocked(
    path_socket: tuple[socket.socket, str],
) -> None:
    sock, address = path_socket
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(watchdog_loop(Notifier(address), 0.001))
    try:
        await asyncio.wait_for(loop.sock_recv(sock, 4096), 2)
        pending(sock)
        time.sleep(0.05)  # the point of the test: a blocked loop, not a wait
        assert pending(sock) == []
        await asyncio.wait_for(loop.sock_recv(sock, 4096), 2)  # and it resumes
    finally:
        task.cancel()


def test_credentials_dir_comes_from_the_environment(tmp_path: Path) -> None:
    assert credentials_dir({"CREDENTIALS_DIRECTORY": str(tmp_path)}) == tmp_path
    assert credentials_dir({}) is None


def test_read_credential_strips_the_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "api-key").write_text("bgh_secret\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert read_credential("api-key", env) == "bgh_secret"
    assert read_credential("missing", env) is None
    assert read_credential("api-key", {}) is None


def test_state_dir_is_the_first_of_several_state_directories() -> None:
    env = {"STATE_DIRECTORY": "/var/lib/bygheartd:/var/lib/other"}
    assert state_dir_from_env(env) == Path("/var/lib/bygheartd")
    assert state_dir_from_env({"STATE_DIRECTORY": "/var/lib/bygheartd"}) == Path(
        "/var/lib/bygheartd"
    )
    assert state_dir_from_env({}) is None
