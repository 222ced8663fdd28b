"""A song to make, and from where: the one value every face hands the service.

As paperless-ngx's `ConsumableDocument` names its source, a `Submission` carries the
validated request, the face it came from (`Origin`) and what that face knows about it (a
drop's identity, an idempotency key); `SongService.submit` stores it and wakes the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bygheartd.jobs import Job, Origin

if TYPE_CHECKING:  # parsing is imported when used: `bygheartd list` must start fast
    from bygheartd.songs.request import SongRequest


@dataclass(frozen=True)
class DropIdentity:
    """What the drop folder knows of a file: exactly-once acceptance rests on it."""

    identity: str  # path, size, mtime and content: one drop (watch/intake.py)
    content_sha256: str
    archived_as: str  # the archive name, recorded before the file moves


@dataclass(frozen=True)
class Submission:
    request: SongRequest
    origin: Origin
    # The title when the request has none (a song file's name).
    fallback_title: str | None = None
    # Where it came from, as shown (`inbox/song.txt`, an absolute path for the CLI).
    source: str | None = None
    # The song file itself, so audio it names is found beside it.
    source_path: Path | None = None
    # One key is one job: the same key again answers with that job (MCP, web).
    idempotency_key: str | None = None
    # The same request again within this many seconds answers with the earlier job.
    dedupe_seconds: float | None = None
    drop: DropIdentity | None = None
    # The song file's bytes (SHA-256), when it came from one without a preset: a drop of
    # the same bytes later is then a duplicate of this job too ([watch] on_duplicate).
    content_sha256: str | None = None


@dataclass(frozen=True)
class Enqueued:
    job: Job
    created: bool  # False: an existing job was returned (idempotency or de-duplication)
