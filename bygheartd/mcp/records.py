"""Typed results of the MCP tools (their output schemas) and their one-line summaries.
Plain pydantic, no `mcp` import: the records carry the pinned names that
`bygheartd list --json` prints too.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, Field

from bygheartd import catalog
from bygheartd.config import Config
from bygheartd.jobs import Job, JobStatus
from bygheartd.service.progress import Line, record_eta, seconds_text

StatusName = Literal[
    "queued",
    "submitting",
    "running",
    "downloading",
    "processing",
    "done",
    "held",
    "failed",
    "cancelled",
]

# How far along a status is, for progress notifications (which must only increase).
_STATUS_PROGRESS: dict[JobStatus, float] = {
    JobStatus.QUEUED: 0.0,
    JobStatus.HELD: 0.0,
    JobStatus.SUBMITTING: 0.02,
    JobStatus.RUNNING: 0.05,
    JobStatus.DOWNLOADING: 0.9,
    JobStatus.PROCESSING: 0.95,
    JobStatus.DONE: 1.0,
    JobStatus.FAILED: 1.0,
    JobStatus.CANCELLED: 1.0,
}


class FileRecord(BaseModel):
    path: str = Field(description="absolute path of the audio file")
    uri: str = Field(description="the same file as a file:// URI")
    size: int | None = None
    sha256: str | None = None


class GeneratedSong(BaseModel):
    """What the model really used, when it differs from the request (Simple mode, thinking)."""

    style: str | None = Field(default=None, description="the caption the model used")
    lyrics: str | None = Field(default=None, description="the lyrics that were sung")
    bpm: int | None = None
    key: str | None = None
    time_signature: str | None = None
    duration: float | None = Field(default=None, description="seconds")
    language: str | None = None


class JobRecord(BaseModel):
    """The pinned job record (DESIGN.md, "Output")."""

    id: str = Field(description="job id; any unique prefix of 6+ characters works too")
    status: StatusName
    title: str
    model: str | None
    task_id: str | None = Field(description="the server's task id once submitted")
    reason: str | None = Field(
        description="why the job is held, failed or cancelled; null otherwise (the history "
        "keeps every line)"
    )
    resumes_at: str | None = Field(description="held jobs: when they resume (ISO-8601 UTC)")
    progress: float | None = Field(description="0..1 when known")
    eta_seconds: float | None = Field(
        description="seconds until the song is generated: while it runs the engine's "
        "estimate; while it waits the history of similar songs and the queue ahead of it; "
        "null when nothing is known yet (no song generated so far)"
    )
    files: list[FileRecord]
    credits: int = Field(description="credits this job costs (0 on a self-hosted server)")
    server: str | None = Field(
        default=None, description="the server holding the task (its URL, never a key)"
    )
    engine: str | None = Field(
        default=None,
        description="the engine (daemon) that holds the job on a shared store, or null",
    )
    keeper: dict[str, Any] | None = Field(
        default=None,
        description="the take to keep ({take, path, uri, by}: by the quality gate or a "
        "person), once the song is done",
    )
    album: str | None = Field(
        default=None, description="the album id when the song is a track of an album"
    )
    album_title: str | None = Field(default=None, description="that album's title")
    track: int | None = Field(default=None, description="its track number (from 1)")
    source: str | None = None
    warnings: list[str] = Field(default_factory=list)
    generated: GeneratedSong | None = Field(
        default=None,
        description="what the model wrote (lyrics, style, bpm, key, ...) when it differs "
        "from the request: in Simple mode, the lyrics that were really sung",
    )
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, job: Job, line: Line | None = None) -> JobRecord:
        """The record of `job`; with the queue's `line`, a waiting song gets its ETA."""
        record = job.as_record()
        record["eta_seconds"] = record_eta(job, line)
        return cls.model_validate({**record, "generated": job.generated()})

    def waiting_text(self) -> str:
        """When a waiting song should be generated, or that this is not known yet."""
        if self.eta_seconds is not None:
            return f"expected to be generated in about {seconds_text(self.eta_seconds)}"
        return "its ETA comes once it runs (no song generated so far to estimate from)"

    def state(self) -> str:
        """`running, 40%`, `queued`: the status with its progress, for short mentions."""
        if self.status == "running":
            return f"running, {self.progress or 0:.0%}"
        return self.status

    def summary(self) -> str:
        """One line a person can read: what the job is doing and where its audio is."""
        verb = {"failed": "has failed", "cancelled": "was cancelled"}.get(
            self.status, f"is {self.status}"
        )
        head = f"{self.title!r} (job {self.id}) {verb}"
        if self.status == "done":
            where = ", ".join(f.path for f in self.files) or "no files"
            wrote = self.generated.lyrics if self.generated else None
            if wrote and wrote.strip().lower() not in ("[instrumental]", "[inst]"):
                count = sum(1 for line in wrote.splitlines() if line.strip())
                where += f" (the model wrote the lyrics: {count} lines, in `generated`)"
            return f"{head}: {where}"
        if self.status in ("held", "failed", "cancelled") and self.reason:
            tail = f"; resumes at {self.resumes_at}" if self.resumes_at else ""
            return f"{head}: {self.reason}{tail}"
        if self.progress is not None and self.status == "running":
            eta = f", about {self.eta_seconds:.0f} s left" if self.eta_seconds else ""
            return f"{head} ({self.progress:.0%}{eta})"
        if self.status in ("queued", "submitting"):
            return f"{head}: {self.waiting_text()}"
        return head


class BudgetHold(BaseModel):
    reason: str
    resumes_at: str = Field(description="when the credits are there again (ISO-8601 UTC)")


class GenerateResult(JobRecord):
    cost: int = Field(description="credits this song costs")
    credits_left_today: int | None = Field(
        description="left today once this job (and the queued jobs ahead of it) is paid; "
        "null: no daily cap"
    )
    budget: str | None = Field(
        default=None,
        description="the cost and what it leaves, in words (says so when the job will wait)",
    )
    lyrics_sha256: str = Field(description="SHA-256 of the UTF-8 lyrics actually sent")
    lyrics_lines: int = Field(description="non-empty lines of the lyrics actually sent")
    deduplicated: bool = Field(
        description="true: an existing job for the same request (or key) was returned"
    )
    budget_hold: BudgetHold | None = Field(
        description="set when the job waits for credits instead of starting now"
    )
    notes: list[str] = Field(default_factory=list)

    def summary(self) -> str:
        cost = self.budget or catalog.credits_phrase(self.cost)
        if self.deduplicated:
            text = (
                f"Not queued again: the same request is already job {self.id} "
                f"({self.state()}), {self.title!r}. To make it once more, pass a new `seed` "
                "or an `idempotency_key` of your own."
            )
        elif self.status in ("queued", "submitting"):
            # A song that will wait for credits has no ETA worth saying: the hold says when.
            wait = "" if self.budget_hold is not None else f"; {self.waiting_text()}"
            text = f"Queued {self.title!r} as job {self.id}: {cost}{wait}."
        else:
            text = f"{JobRecord.summary(self)} ({cost})."
        if self.budget_hold is not None:
            text += (
                f" It waits for credits ({self.budget_hold.reason}) and starts by itself at "
                f"{self.budget_hold.resumes_at}."
            )
        if self.status not in ("done", "failed", "cancelled"):
            text += " Call get_song with wait_seconds to follow it."
        # In the text too: the assistant reads this, and a song with no style is worth a word.
        warnings = [f"Warning: {w}." for w in self.warnings]
        return " ".join([text, *warnings, *self.notes])


class SongList(BaseModel):
    jobs: list[JobRecord]
    counts: dict[str, int] = Field(description="jobs per status in the whole store")

    def summary(self) -> str:
        if not self.jobs:
            return "No songs match."
        count = len(self.jobs)
        head = f"{count} song:" if count == 1 else f"{count} songs:"
        lines = [head] + [f"- {job.summary()}" for job in self.jobs]
        return "\n".join(lines)


class CancelResult(JobRecord):
    note: str

    def summary(self) -> str:
        return f"{JobRecord.summary(self)}. {self.note}"


class DayCredits(BaseModel):
    day: str
    spent: int
    cap: int | None
    left: int | None


class MonthCredits(BaseModel):
    month: str
    spent: int
    allowance: int | None
    rollover: int
    left: int | None


class PlanLimits(BaseModel):
    daily_credits: int | None
    monthly_credits: int | None
    rollover_max: int | None

    @classmethod
    def of(cls, config: Config) -> PlanLimits:
        """Only the Pro plan has caps; Ultimate and self-hosted servers have none."""
        budget = config.budget
        if config.plan != "pro":
            return cls(daily_credits=None, monthly_credits=None, rollover_max=None)
        return cls(
            daily_credits=budget.daily_credits,
            monthly_credits=budget.monthly_credits,
            rollover_max=budget.rollover_max,
        )


class CreditsResult(BaseModel):
    plan: Literal["pro", "ultimate", "self-hosted"]
    timezone: str
    today: DayCredits
    month: MonthCredits
    by_model: dict[str, int] = Field(description="credits spent this month per model")
    next_daily_release: str | None
    server_cap_until: str | None = Field(description="the server said its cap is reached")
    limits: PlanLimits

    @classmethod
    def of(cls, summary: dict[str, Any], limits: PlanLimits) -> CreditsResult:
        return cls.model_validate({**summary, "limits": limits})

    def summary(self) -> str:
        if self.plan == "self-hosted":
            return "Self-hosted ACE-Step server: songs cost no credits."
        if self.today.left is None:
            spent = catalog.credits_phrase(self.month.spent)
            return f"Plan {self.plan}: no daily cap; {spent} used this month."
        return (
            f"Plan {self.plan}: {self.today.left} of {self.today.cap} credits left today "
            f"(next release {self.next_daily_release}); {self.month.left} left this month."
        )


class ModelEntry(BaseModel):
    name: str
    credits: int = Field(description="credits per take")
    purpose: str
    default: bool = False


class ModelList(BaseModel):
    backend: Literal["bygheart", "acestep"]
    models: list[ModelEntry]

    @classmethod
    def of(cls, config: Config) -> ModelList:
        """The backend's models: hosted ones with their price, ACE-Step ones for free."""
        default = config.defaults.model
        if config.backend != "acestep":
            default = default or catalog.DEFAULT_HOSTED_MODEL
        return cls(
            backend="acestep" if config.backend == "acestep" else "bygheart",
            models=[
                ModelEntry(
                    name=m.name, credits=m.credits, purpose=m.purpose, default=m.name == default
                )
                for m in catalog.backend_models(config.backend)
            ],
        )

    def summary(self) -> str:
        return "\n".join(
            f"- {m.name}: {catalog.credits_phrase(m.credits)} a take, {m.purpose}"
            + (" (default)" if m.default else "")
            for m in self.models
        )


class DraftRecord(BaseModel):
    """A draft song as song-file keys: pass them to generate_song as they are."""

    title: str
    style: str | None = None
    lyrics: str | None = Field(default=None, description="null for an instrumental")
    bpm: int | None = None
    key: str | None = None
    duration: float | None = Field(default=None, description="seconds")
    time_signature: str | None = None
    language: str | None = None
    instrumental: bool = False

    @classmethod
    def of(cls, fields: dict[str, Any]) -> DraftRecord:
        return cls.model_validate(fields)


class SuggestResult(BaseModel):
    draft: DraftRecord
    song_file: str = Field(
        description="the same draft as a song file (front matter + lyrics), to save in the "
        "drafts folder and pass as lyrics_file, or to show the user"
    )
    notes: list[str] = Field(default_factory=list)

    def summary(self) -> str:
        d = self.draft
        metas = ", ".join(
            f"{name} {value}"
            for name, value in (("bpm", d.bpm), ("key", d.key), ("duration", d.duration))
            if value is not None
        )
        head = f"Draft {d.title!r} (spent nothing): {d.style or 'no style'}"
        tail = f"; {metas}" if metas else ""
        return f"{head}{tail}. Pass these fields to generate_song to make it.\n\n{self.song_file}"


class PolishResult(BaseModel):
    before: DraftRecord
    after: DraftRecord
    changes: str = Field(description="what changed: keys before/after, a diff of the lyrics")
    song_file: str = Field(description="the rewrite as a song file (front matter + lyrics)")
    notes: list[str] = Field(default_factory=list)

    def summary(self) -> str:
        what = self.changes or "The model changed nothing."
        return f"The model's rewrite (spent nothing):\n{what}\n\n{self.song_file}"


def lyrics_sent(request: dict[str, Any]) -> str:
    """The lyrics text a stored request sends (instrumental songs send a marker, Simple
    mode sends none: the model writes them)."""
    if request.get("description"):
        return ""
    if request.get("instrumental"):
        return "[Instrumental]"
    return str(request.get("lyrics") or "")


def lyrics_fingerprint(lyrics: str) -> tuple[str, int]:
    """(sha256, non-empty line count): lets an assistant check nothing was cut."""
    digest = hashlib.sha256(lyrics.encode("utf-8")).hexdigest()
    return digest, sum(1 for line in lyrics.splitlines() if line.strip())


def progress_value(job: Job) -> float:
    """0..1 for a progress notification: the status's share, refined by the server's."""
    base = _STATUS_PROGRESS[job.status]
    if job.status is JobStatus.RUNNING and job.progress is not None:
        # Rounded: clients show the number as it is (0.8915000000000001 otherwise).
        return round(base + (0.9 - base) * max(0.0, min(1.0, job.progress)), 4)
    return base


def progress_message(job: Job) -> str:
    if job.status is JobStatus.RUNNING and job.progress is not None:
        eta = f", about {job.eta_seconds:.0f} s left" if job.eta_seconds else ""
        return f"generating: {job.progress:.0%}{eta}"
    if job.status in (JobStatus.HELD, JobStatus.FAILED) and job.reason:
        return f"{job.status.value}: {job.reason}"
    return job.status.value
