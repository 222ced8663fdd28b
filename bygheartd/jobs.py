"""The job record every layer shares: pinned status names and a read-only snapshot.

The store persists jobs; everything above it (engine, plugins, CLI, MCP) receives a
`Job` snapshot, so no face can mutate a job except through the service.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class JobStatus(enum.StrEnum):
    """Pinned status names (DESIGN.md, "Job lifecycle")."""

    QUEUED = "queued"
    SUBMITTING = "submitting"
    RUNNING = "running"
    DOWNLOADING = "downloading"
    PROCESSING = "processing"
    DONE = "done"
    HELD = "held"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


class HoldKind(enum.StrEnum):
    """Why a job waits (`held`), which decides what releases it; or, for a cancelled job,
    that its task still runs on the server."""

    BUDGET = "budget"  # no credits left today or this month
    RATE = "rate"  # a 429: a rate limit, a full queue or the server's credit cap
    AUTH = "auth"  # a bad key or plan: released at once by a reload
    RETRY = "retry"  # the API was unavailable: resubmitted after a backoff
    DISK = "disk"  # the output folder cannot be written: nothing is spent until it can
    DOWNLOAD = "download"  # a download was interrupted: resumed, never resubmitted
    # A cancelled job whose task still runs on the server: watched until it ends, so a
    # failure there (refunded by the server) is refunded locally too.
    SETTLING = "settling"


SETTLING = HoldKind.SETTLING

FINAL_STATUSES = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE_STATUSES = frozenset(
    {
        JobStatus.QUEUED,
        JobStatus.SUBMITTING,
        JobStatus.RUNNING,
        JobStatus.DOWNLOADING,
        JobStatus.PROCESSING,
        JobStatus.HELD,
    }
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime | None) -> str | None:
    """ISO-8601 UTC with a trailing Z, the one time format of every output."""
    if ts is None:
        return None
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class JobFile:
    """One finished output file; `path` is absolute."""

    path: Path
    size: int
    sha256: str

    def as_record(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "uri": self.path.resolve().as_uri(),
            "size": self.size,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class Event:
    """One line of a job's append-only history."""

    at: datetime
    event: str
    from_status: str | None
    to_status: str | None
    reason: str | None

    def as_record(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "event": self.event,
            "from": self.from_status,
            "to": self.to_status,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Job:
    """A read-only snapshot of one job as stored.

    `request` is the validated request as friendly-named JSON (no secrets); `api_body` is
    what was (or will be) sent to the API.
    """

    id: str
    status: JobStatus
    title: str
    model: str | None
    request: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    task_id: str | None = None
    reason: str | None = None
    resumes_at: datetime | None = None
    hold_kind: HoldKind | None = None
    attempts: int = 0
    credits: int = 0
    progress: float | None = None
    eta_seconds: float | None = None
    source: str | None = None
    archived_as: str | None = None
    base_name: str | None = None
    files: tuple[JobFile, ...] = ()
    warnings: tuple[str, ...] = ()
    result: dict[str, Any] = field(default_factory=dict)
    submitted_at: datetime | None = None
    completed_at: datetime | None = None
    origin: str = "cli"
    # When a running task began answering "[]" (unknown) without a break: its grace period.
    unknown_since: datetime | None = None

    def as_record(self) -> dict[str, Any]:
        """The pinned job record of every `--json` output and MCP result."""
        return {
            "id": self.id,
            "status": self.status.value,
            "title": self.title,
            "model": self.model,
            "task_id": self.task_id,
            "reason": self.reason,
            "resumes_at": iso(self.resumes_at),
            "progress": self.progress,
            "eta_seconds": self.eta_seconds,
            "files": [f.as_record() for f in self.files],
            "credits": self.credits,
            "source": self.source,
            "warnings": list(self.warnings),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }
