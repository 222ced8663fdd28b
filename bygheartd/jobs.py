"""The job record every layer shares: pinned status names and a read-only snapshot.

The store persists jobs; everything above it (engine, plugins, CLI, MCP) receives a
`Job` snapshot, so no face can mutate a job except through the service.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from bygheartd.catalog import AUDIO_SUFFIXES


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


class Origin(enum.StrEnum):
    """Where a job came from: the face that queued it (stored as text in `origin`)."""

    DROP = "drop"  # a song file dropped into the inbox
    CLI = "cli"  # `bygheartd submit`
    MCP = "mcp"  # an assistant's tool call
    WEB = "web"  # the library page


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
# The statuses whose `reason` a job record carries: why it waits or stopped.
REASONED_STATUSES = frozenset({JobStatus.HELD, JobStatus.FAILED, JobStatus.CANCELLED})

_Q, _S, _R = JobStatus.QUEUED, JobStatus.SUBMITTING, JobStatus.RUNNING
_D, _P, _H = JobStatus.DOWNLOADING, JobStatus.PROCESSING, JobStatus.HELD
_DONE, _F, _C = JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED

# The life of a job, declared once (DESIGN.md "Job lifecycle: the allowed moves"): every
# status a job may move to from each status. The store refuses any other move, so a stage
# that lost a race (a cancel, a retry) can never write a move the lifecycle does not have.
# docs/architecture.md draws this table.
ALLOWED_MOVES: Mapping[JobStatus, frozenset[JobStatus]] = {
    # submitted; held for budget, disk or key; refused by a plugin or the budget; cancelled.
    # A retake that fails anywhere before its takes arrive goes back to `processing` with
    # the takes the song had (`engine/lifecycle.py`): the `_P` in the next four rows.
    _Q: frozenset({_S, _H, _F, _C, _P}),
    # the POST answered; back to the queue (provably nothing made, a crash with
    # resubmit_uncertain); held for a retry, rate limit or key; refused or unknown outcome
    _S: frozenset({_R, _Q, _H, _F, _C, _P}),
    # generated; lost by its server and made again; failed on the server or past deadline
    _R: frozenset({_D, _Q, _F, _C, _P}),
    # every take verified; held until a download can resume
    _D: frozenset({_P, _H, _F, _C}),
    # plugins ran and the sidecar was written; no take passed the quality gate: a retake
    # (a new submission whose takes join the job's, `engine/retakes.py`)
    _P: frozenset({_DONE, _Q, _F, _C}),
    # the hold is over (a held download resumes its download), or it ends there
    _H: frozenset({_Q, _D, _F, _C, _P}),
    _DONE: frozenset(),
    # `retry`: a new submission, new credits
    _F: frozenset({_Q}),
    _C: frozenset({_Q}),
}


def move_allowed(current: JobStatus, to: JobStatus) -> bool:
    """Whether the lifecycle has a move from `current` to `to` (the store's one check)."""
    return to in ALLOWED_MOVES[current]


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


def take_stems(base: str, takes: int) -> list[str]:
    """Where a job's takes go (DESIGN.md "Naming"): `base`, `base.take2`, `base.take3`, ...

    In the vocabulary because the store reserves these names for deliveries not finished
    yet and the engine writes them: both must agree.
    """
    return [base if i == 0 else f"{base}.take{i + 1}" for i in range(max(1, takes))]


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


def _stored_time(value: Any) -> datetime | None:
    """An ISO time a result field holds, or None when it holds none (or no valid one)."""
    if not isinstance(value, str):
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class JobFile:
    """One file on disk as recorded: the one shape from the download to the sidecar.

    `path` is absolute; `stored()` is how the store, a resumed download and the sidecar
    (with its path made relative to the output folder) write it down.
    """

    path: Path
    size: int
    sha256: str

    def stored(self, relative_to: Path | None = None) -> dict[str, Any]:
        path = self.path
        if relative_to is not None and path.is_relative_to(relative_to):
            path = path.relative_to(relative_to)
        return {"path": str(path), "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> Self:
        return cls(Path(str(data["path"])), int(data["size"]), str(data["sha256"]))

    def as_record(self) -> dict[str, Any]:
        """The file entry of the pinned job record (`--json`, MCP): the stored shape plus a URI."""
        # Stored paths are absolute: resolving each one (a syscall per path component) was
        # most of `list --json --all` over a large store.
        path = self.path if self.path.is_absolute() else self.path.resolve()
        return {**self.stored(), "uri": path.as_uri()}


@dataclass(frozen=True)
class Take:
    """One take as the server reported it in its `query_result` success entry.

    `file` is the server's reference to fetch (never a local path); the rest is what the
    model really used, which can differ from the request (a seed, the lyrics it wrote).
    """

    file: str
    seed: str | None = None
    metas: dict[str, Any] = field(default_factory=dict)
    prompt: str | None = None
    lyrics: str | None = None
    dit_model: str | None = None
    lm_model: str | None = None

    def stored(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "seed": self.seed,
            "metas": self.metas,
            "prompt": self.prompt,
            "lyrics": self.lyrics,
            "dit_model": self.dit_model,
            "lm_model": self.lm_model,
        }

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> Self:
        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        metas = data.get("metas")
        return cls(
            file=str(data.get("file") or ""),
            seed=text("seed"),
            metas=dict(metas) if isinstance(metas, Mapping) else {},
            prompt=text("prompt"),
            lyrics=text("lyrics"),
            dit_model=text("dit_model"),
            lm_model=text("lm_model"),
        )


# The song-file names of what a model may write, in the order the sidecar lists them.
GENERATED_KEYS = ("style", "lyrics", "bpm", "key", "time_signature", "duration", "language")


def _known(value: Any) -> Any:
    """A metas value, or None for the server's "N/A", empty text and non-values (a number
    that is not finite, as a store row written by an older version may hold)."""
    if value is None or isinstance(value, bool | dict | list):
        return None
    if isinstance(value, str):
        text = value.strip()
        return None if not text or text.upper() == "N/A" else text
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _number(value: Any, *, integer: bool) -> float | int | None:
    """A positive finite number, or None: "nan", "inf", "1e999" and an int too large for
    a float are "not reported", like "N/A"."""
    known = _known(value)
    try:
        number = float(known) if known is not None else None
    except (TypeError, ValueError, OverflowError):
        return None
    if number is None or not math.isfinite(number) or number <= 0:
        return None
    return round(number) if integer else number


def finite(value: Any) -> Any:
    """`value` (decoded JSON) with every float that is not finite (NaN, ±inf) as None.

    What records, sidecars and store rows hold: strict JSON has no such number (SQLite's
    `json_extract`, PostgreSQL's `json` and a browser's `JSON.parse` refuse the text), so
    every writer passes its data through here and writes with `allow_nan=False`."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def _text_form(value: Any) -> str:
    """Text compared as a person reads it: line ends and trailing blanks do not count."""
    lines = str(value or "").replace("\r\n", "\n").strip().split("\n")
    return "\n".join(line.rstrip() for line in lines)


def generated_song(request: Mapping[str, Any], takes: tuple[Take, ...]) -> dict[str, Any] | None:
    """What the model really used (the success entry's `prompt`, `lyrics` and `metas`),
    under the song-file names, when any of it differs from the request: in Simple mode the
    model writes the lyrics, and `thinking` picks the bpm or key left on auto. None when
    the server reported nothing, or exactly what was asked (then the request says it all).
    Every known value is kept, so the block alone tells what was sung."""
    take = next((t for t in takes if t.prompt or t.lyrics or t.metas), None)
    if take is None:
        return None
    metas = take.metas
    duration = _number(metas.get("duration"), integer=False)
    found: dict[str, Any] = {
        "style": _known(take.prompt if take.prompt is not None else metas.get("prompt")),
        "lyrics": _known(take.lyrics if take.lyrics is not None else metas.get("lyrics")),
        "bpm": _number(metas.get("bpm"), integer=True),
        "key": _known(metas.get("keyscale") or metas.get("key_scale")),
        "time_signature": _known(metas.get("timesignature") or metas.get("time_signature")),
        "duration": None if duration is None else round(float(duration), 2),
        "language": _known(metas.get("vocal_language") or metas.get("language")),
    }
    found = {k: (str(v) if k == "time_signature" else v) for k, v in found.items() if v is not None}
    instrumental = bool(request.get("instrumental")) and not request.get("description")
    asked: dict[str, Any] = {
        "style": request.get("style") or "",
        "lyrics": "[Instrumental]" if instrumental else request.get("lyrics") or "",
        "bpm": request.get("bpm"),
        "key": request.get("key"),
        "time_signature": request.get("time_signature"),
        "duration": request.get("duration"),
        "language": request.get("language"),
    }

    def same(name: str, value: Any) -> bool:
        wanted = asked.get(name)
        if name in ("style", "lyrics"):
            return _text_form(value).lower() == _text_form(wanted).lower()
        if name == "duration":
            return isinstance(wanted, int | float) and abs(float(wanted) - float(value)) < 0.5
        if isinstance(wanted, str) and isinstance(value, str):
            return wanted.strip().lower() == value.strip().lower()
        return bool(wanted == value)

    if all(same(name, value) for name, value in found.items()):
        return None
    return {name: found[name] for name in GENERATED_KEYS if name in found}


@dataclass(frozen=True)
class JobResult(Mapping[str, Any]):
    """What the engine learned while a job ran, typed; stored as JSON in `result_json`.

    It is also a read-only mapping of its stored form (`job.result.get("seeds")`), the way
    plugins written for 0.1 read it, so their code keeps working.
    """

    takes: tuple[Take, ...] = ()
    # Downloaded takes by index, so a resumed delivery fetches only the missing ones.
    downloaded: Mapping[int, JobFile] = field(default_factory=dict)
    download_attempts: int = 0
    # Consecutive polls that answered "[]"; its grace start is the job's `unknown_since`.
    unknown_polls: int = 0
    # What `on_complete` plugins returned for the sidecar; None until they have run.
    postprocess: Mapping[str, Any] | None = None
    # The request as validated, before `before_submit` plugins changed it: a retry starts
    # from it, so a plugin's change is applied once, not once per attempt.
    request_before_plugins: Mapping[str, Any] | None = None
    # A 0.1 store kept the "[]" grace start here; read once, never written.
    legacy_unknown_since: datetime | None = None
    # Servers that lost this job's task (a restart): its next submit prefers another one.
    lost_on: tuple[str, ...] = ()
    # The take to keep (its file name), and who chose it: "gate" or "person".
    keeper: str | None = None
    keeper_by: str | None = None
    # The copy in `[folders] keepers` this job placed (path, sha256, source): replaced when
    # the keeper changes, unless someone changed it.
    keeper_copy: Mapping[str, Any] | None = None
    # Retakes made so far (DESIGN.md "Takes you can keep"): each `{at, findings, credits}`,
    # `credits` being what the submission it follows cost (so the job's total is known).
    retakes: tuple[Mapping[str, Any], ...] = ()
    # The takes judged before a retake (file names) and what plugins said of them: the
    # retake's own takes alone are post-processed, and the two are merged.
    processed_files: tuple[str, ...] = ()
    processed_before: Mapping[str, Any] | None = None
    # Polls of this running task failing without a break (an unreachable server, a reply
    # that is not JSON, a 429): since when, the last error, and until when a 429 paused
    # them. `show` says so, and the deadline's reason names it (engine/polling.py).
    poll_failing_since: datetime | None = None
    poll_error: str | None = None
    polls_paused_until: datetime | None = None

    @property
    def earlier_credits(self) -> int:
        """What the job's submissions before the current one cost (its retakes' forerunners)."""
        return sum(int(r.get("credits") or 0) for r in self.retakes)

    @property
    def seeds(self) -> list[str]:
        """One per take, in order (a take the server gave no seed is left out)."""
        return [take.seed for take in self.takes if take.seed]

    def but(self, **changes: Any) -> JobResult:
        return replace(self, **changes)

    def with_takes(self, takes: Iterable[Take]) -> JobResult:
        """The takes a generation reported; a retake's join the earlier ones (`base.take3`)."""
        return self.but(takes=(*self.takes, *takes) if self.retakes else tuple(takes))

    def stored(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.takes:
            data["outputs"] = [take.stored() for take in self.takes]
            data["seeds"] = self.seeds
        if self.downloaded:
            data["downloaded"] = {str(i): f.stored() for i, f in sorted(self.downloaded.items())}
        if self.download_attempts:
            data["download_attempts"] = self.download_attempts
        if self.unknown_polls:
            data["unknown_polls"] = self.unknown_polls
        if self.postprocess is not None:
            data["postprocess"] = dict(self.postprocess)
        if self.request_before_plugins is not None:
            data["request_before_plugins"] = dict(self.request_before_plugins)
        if self.lost_on:
            data["lost_on"] = list(self.lost_on)
        if self.keeper is not None:
            data["keeper"] = self.keeper
            data["keeper_by"] = self.keeper_by
        if self.keeper_copy is not None:
            data["keeper_copy"] = dict(self.keeper_copy)
        if self.retakes:
            data["retakes"] = [dict(r) for r in self.retakes]
        if self.processed_files:
            data["processed_files"] = list(self.processed_files)
        if self.processed_before is not None:
            data["processed_before"] = dict(self.processed_before)
        if self.poll_error is not None:
            data["poll_error"] = self.poll_error
            data["poll_failing_since"] = iso(self.poll_failing_since)
            data["polls_paused_until"] = iso(self.polls_paused_until)
        return data

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> JobResult:
        """Read what any release wrote; keys it does not know are ignored."""
        downloaded = data.get("downloaded")
        legacy = data.get("unknown_since_ts")
        postprocess = data.get("postprocess")
        before = data.get("request_before_plugins")
        return cls(
            takes=tuple(
                Take.from_stored(t) for t in data.get("outputs") or () if isinstance(t, Mapping)
            ),
            downloaded={
                int(i): JobFile.from_stored(f)
                for i, f in (downloaded.items() if isinstance(downloaded, Mapping) else ())
            },
            download_attempts=int(data.get("download_attempts") or 0),
            unknown_polls=int(data.get("unknown_polls") or 0),
            postprocess=dict(postprocess) if isinstance(postprocess, Mapping) else None,
            request_before_plugins=dict(before) if isinstance(before, Mapping) else None,
            legacy_unknown_since=(
                datetime.fromtimestamp(float(legacy), UTC)
                if isinstance(legacy, int | float)
                else None
            ),
            lost_on=tuple(str(u) for u in data.get("lost_on") or () if isinstance(u, str)),
            keeper=str(data["keeper"]) if isinstance(data.get("keeper"), str) else None,
            keeper_by=str(data["keeper_by"]) if isinstance(data.get("keeper_by"), str) else None,
            keeper_copy=(
                dict(data["keeper_copy"]) if isinstance(data.get("keeper_copy"), Mapping) else None
            ),
            retakes=tuple(dict(r) for r in data.get("retakes") or () if isinstance(r, Mapping)),
            processed_files=tuple(
                str(n) for n in data.get("processed_files") or () if isinstance(n, str)
            ),
            processed_before=(
                dict(data["processed_before"])
                if isinstance(data.get("processed_before"), Mapping)
                else None
            ),
            poll_failing_since=_stored_time(data.get("poll_failing_since")),
            poll_error=str(data["poll_error"]) if isinstance(data.get("poll_error"), str) else None,
            polls_paused_until=_stored_time(data.get("polls_paused_until")),
        )

    def generated(self, request: Mapping[str, Any]) -> dict[str, Any] | None:
        """What the model wrote, when it differs from `request` (see `generated_song`)."""
        return generated_song(request, self.takes)

    # -- the read-only mapping view ------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.stored()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.stored())

    def __len__(self) -> int:
        return len(self.stored())


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
    result: JobResult = field(default_factory=JobResult)
    submitted_at: datetime | None = None
    completed_at: datetime | None = None
    origin: str = "cli"
    # When a running task began answering "[]" (unknown) without a break: its grace period.
    unknown_since: datetime | None = None
    # The server that holds the task (its URL, never a key): polls and downloads go there.
    server: str | None = None
    # How many times a task lost by its server (a restart) was made again.
    resubmits: int = 0
    # When the task's progress last moved: a task frozen at one progress is lost, not slow.
    progress_at: datetime | None = None
    # The engine that holds the job (submitted it, or took it over): it alone polls and
    # delivers it. None while queued, and once nobody needs to act on it.
    engine: str | None = None
    # The output folder the job was queued for (and, once delivery chose, the one its
    # files are in): on a shared store, a host that lacks it delivers into its own.
    output: str | None = None
    # A track of an album (DESIGN.md "Albums"): the album's id and this track's number
    # (from 1), with the album's title, artist and track count copied from the album when
    # queued (they never change), so that plugins and records need no second read.
    album: str | None = None
    track: int | None = None
    album_title: str | None = None
    album_artist: str | None = None
    album_tracks: int | None = None

    def takes(self) -> list[JobFile]:
        """The job's takes in order (its audio files; a plugin may add other files)."""
        return [f for f in self.files if f.path.suffix.lower() in AUDIO_SUFFIXES]

    def keeper_record(self) -> dict[str, Any] | None:
        """`{take, path, uri, by}` of the take to keep (take counts from 1), or None."""
        for number, take in enumerate(self.takes(), start=1):
            if take.path.name == self.result.keeper:
                record = take.as_record()
                return {
                    "take": number,
                    "path": record["path"],
                    "uri": record["uri"],
                    "by": self.result.keeper_by,
                }
        return None

    def output_folder(self, default: Path) -> Path:
        """Where this job's files go (or went): its own folder once delivery chose one,
        else `default` (this host's `[folders] output`)."""
        return Path(self.output) if self.output and self.base_name else default

    def generated(self) -> dict[str, Any] | None:
        """What the model wrote (style, lyrics, metas) when it differs from the request."""
        return self.result.generated(self.request)

    def as_record(self) -> dict[str, Any]:
        """The pinned job record of every `--json` output and MCP result."""
        return {
            "id": self.id,
            "status": self.status.value,
            "title": self.title,
            "model": self.model,
            "task_id": self.task_id,
            # Why it is held, failed or cancelled (DESIGN): a done job's last line ("2
            # file(s) in ...") stays in its history, never here.
            "reason": self.reason if self.status in REASONED_STATUSES else None,
            "resumes_at": iso(self.resumes_at),
            "progress": self.progress,
            "eta_seconds": self.eta_seconds,
            "files": [f.as_record() for f in self.files],
            # Every submission's cost: a job that was made again paid for each.
            "credits": self.credits + self.result.earlier_credits,
            "server": self.server,
            "engine": self.engine,
            "keeper": self.keeper_record(),
            "album": self.album,
            "album_title": self.album_title,
            "track": self.track,
            "source": self.source,
            "warnings": list(self.warnings),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True)
class Album:
    """Several songs that belong together (DESIGN.md "Albums"): each track is a job that
    records this album's id and its track number; the album itself is only what they share.

    `folder` is the album's folder name under the output folder (its slug, decided when it
    was queued); `output` the output folder it was queued for.
    """

    id: str
    title: str
    artist: str | None
    tracks: int
    created_at: datetime
    folder: str
    output: str | None = None
    source: str | None = None
    origin: str = "cli"
    credits: int = 0

    def as_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "artist": self.artist,
            "tracks": self.tracks,
            "folder": self.folder,
            "source": self.source,
            "credits": self.credits,
            "created_at": iso(self.created_at),
        }
