"""Engines on one store and their leases: who holds which jobs, and who is gone.

Every engine registers itself and renews a lease; when one's lease runs out (a `kill -9`,
a host that went down), the others adopt its jobs: polling and downloading are safe to
repeat, and a `submitting` job gets the crash rule. The statements are the store's; the
rules about them live here, once for SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bygheartd.jobs import iso, utcnow

# What an engine holds and another must take over when it is gone: the statuses in which
# the engine that submitted a job is the one to act on it. `held` only for a download
# hold, `cancelled` only while its task still runs (settling). A queued job names the engine
# that claimed it for its next submit (`claimable`): not adopted, the claim just lapses.
ADOPT_WHERE = (
    "(status IN ('submitting', 'running', 'downloading', 'processing') "
    "OR (status = 'held' AND hold_kind = 'download') "
    "OR (status = 'cancelled' AND hold_kind = 'settling'))"
)


def claimable(mark: str, now: str) -> str:
    """Which queued jobs an engine may claim: no engine's, its own (claimed before and not
    sent), or an engine's whose lease ran out (a claim lapses with its lease). `mark` is the
    driver's placeholder for the engine's id, `now` the store's current time (text)."""
    return (
        f"(engine IS NULL OR engine = {mark} OR engine NOT IN "
        f"(SELECT id FROM engines WHERE lease_until >= {now}))"
    )


@dataclass(frozen=True)
class EngineInfo:
    id: str
    host: str
    pid: int
    role: str
    started_at: datetime
    lease_until: datetime

    @classmethod
    def new(cls, role: str, lease_seconds: float) -> EngineInfo:
        """This process's engine: a fresh id each start (host, pid and a random tail)."""
        host = socket.gethostname()
        now = utcnow()
        return cls(
            id=f"{host}-{os.getpid()}-{secrets.token_hex(3)}",
            host=host,
            pid=os.getpid(),
            role=role,
            started_at=now,
            lease_until=now + timedelta(seconds=lease_seconds),
        )

    def as_record(self, jobs_held: int | None = None) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "role": self.role,
            "started": iso(self.started_at),
            "lease_until": iso(self.lease_until),
        }
        if jobs_held is not None:
            record["jobs_held"] = jobs_held
        return record
