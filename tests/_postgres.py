"""A real PostgreSQL for the tests: Debian's server, started in a temporary folder.

`initdb` refuses to run as root, so as root (CI) the cluster belongs to the `postgres` user
(`runuser`); it listens on 127.0.0.1 at an ephemeral port and on a Unix socket in its own
folder, with passwords (scram) over TCP. Each test gets a database of its own.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

ROLE = "bygheartd"
PASSWORD = "pg-s3cret-Pw-7d1e"  # a test secret: checked to appear in no log or output


def server_bin() -> Path | None:
    """The folder of `initdb` and `pg_ctl` (Debian keeps them off PATH), or None."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self, root: Path, bindir: Path) -> None:
        self.root = root
        self.bindir = bindir
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        command = list(args)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self.sockets.mkdir(parents=True)
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sockets, "postgres")
        pwfile = self.root / "pw"
        pwfile.write_text("admin-pw\n")
        if self._as_postgres:
            shutil.chown(pwfile, "postgres")
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--locale=C",
        )
        options = (
            f"-k {self.sockets} -p {self.port} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "start",
        )
        self.admin(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}' CREATEDB")

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def restart(self) -> None:
        """Stop (as a crash would) and start again on the same port: the store goes away."""
        self.stop()
        options = (
            f"-k {self.sockets} -p {self.port} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "start",
        )

    def admin(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(
            host=str(self.sockets),
            port=self.port,
            user="postgres",
            dbname=database,
            autocommit=True,
        ) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def new_database(self) -> str:
        """A fresh database owned by the test role; its URL (with the password)."""
        name = "t_" + uuid.uuid4().hex[:12]
        self.admin(f"CREATE DATABASE {name} OWNER {ROLE}")
        return self.url(name)

    def url(self, database: str, password: str = PASSWORD) -> str:
        return f"postgresql://{ROLE}:{password}@127.0.0.1:{self.port}/{database}"


@contextmanager
def running_postgres() -> Iterator[PostgresServer | None]:
    """A started server, or None when Debian's `postgresql` is not installed here."""
    bindir = server_bin()
    if bindir is None:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="bygheartd-pg-"))
    server = PostgresServer(root, bindir)
    try:
        server.start()
        yield server
    finally:
        with suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
