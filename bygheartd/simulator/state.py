"""The simulator's live state: tasks and their fates, the generation queue and workers,
the credit ledger, the global "last log line", and the counters tests and benchmarks read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import shutil
import tempfile
import time
import uuid
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .audio import audio_format_for, output_name, take_music, take_seconds, write_take
from .params import NEEDS_SOURCE_AUDIO, GenParams
from .plans import Charge, CreditRefusal, Ledger, Plan, credit_cost
from .settings import SimulatorSettings
from .tasks import instruction, output_seconds
from .writer import Written, written_for

log = logging.getLogger(__name__)

TaskState = Literal["queued", "running", "frozen", "succeeded", "failed"]
Fate = Literal["succeed", "fail", "forget"]
STEPS_PER_SECOND = 4.0  # the captured stub's pace: 1 s gave 4 steps, 6 s gave 24
FIRST_WRITE_SHARE = 0.01  # the 0.01 "running" write shows before step 1 for this share
BANNER = "INFO:     Application startup complete."


@dataclass
class SimTask:
    """One submitted task; `fate` is decided at submit so runs are reproducible."""

    task_id: str
    seq: int
    params: GenParams
    fate: Fate
    created: float
    run_seconds: float
    charge: Charge | None = None
    state: TaskState = "queued"
    started: float | None = None  # monotonic
    finished: float | None = None  # monotonic
    frozen_progress: float = 0.0
    frozen_stage: str = "running"
    seeds: list[int] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    generation_seconds: float = 0.0
    finished_at: float | None = None  # clock(): when its result became available
    # What the stand-in language model wrote (Simple mode, thinking); None: nothing.
    written: Written | None = None
    # The `/release_task` body as received (without `ai_token`): what tests compare with.
    received: dict[str, Any] = field(default_factory=dict, repr=False)
    job: asyncio.Task[None] | None = field(default=None, repr=False)

    def progress(self) -> tuple[float, str]:
        """Progress and stage text of a running task, as the real server's cache holds them
        (API-TRANSCRIPTS.md): not the elapsed share at the moment of the query, but the
        last value the model wrote. `0.01` "running" first, then step k of N writes
        `k / (N + 1)` (unrounded) when the step starts, N at the captured stub's pace of 4
        steps a second; nothing after the last step, while the files are written."""
        if self.state == "frozen":
            return self.frozen_progress, self.frozen_stage
        if self.started is None:
            return 0.0, "queued"
        done = (time.monotonic() - self.started) / max(self.run_seconds, 1e-6)
        steps = max(1, round(self.run_seconds * STEPS_PER_SECOND))
        if done < FIRST_WRITE_SHARE:
            return 0.01, "running"
        step = min(steps, math.floor(done * steps) + 1)
        return step / (steps + 1), f"simulated diffusion step {step}/{steps}"


@dataclass
class SimStats:
    """Counters since start or the last POST /_sim/reset."""

    submits: int = 0
    submit_attempts: int = 0
    polls: int = 0
    ids_per_poll: deque[int] = field(default_factory=lambda: deque(maxlen=10000))
    downloads: int = 0
    download_bytes: int = 0
    uploads: int = 0
    reference_uploads: int = 0  # `ref_audio` parts (a style reference)
    succeeded: int = 0
    failed: int = 0
    forgotten: int = 0
    http_requests: Counter[str] = field(default_factory=Counter)
    status_codes: Counter[int] = field(default_factory=Counter)
    faults_fired: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "submits": self.submits,
            "submit_attempts": self.submit_attempts,
            "polls": self.polls,
            "ids_per_poll": list(self.ids_per_poll),
            "downloads": self.downloads,
            "download_bytes": self.download_bytes,
            "uploads": self.uploads,
            "reference_uploads": self.reference_uploads,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "forgotten": self.forgotten,
            "http_requests": dict(self.http_requests),
            "status_codes": {str(code): n for code, n in sorted(self.status_codes.items())},
            "faults_fired": dict(self.faults_fired),
        }


@dataclass(frozen=True)
class QueueFull:
    detail: str = "Server busy: queue is full"


class Simulator:
    """Owns tasks, files and counters; the ASGI app only translates HTTP to these calls."""

    def __init__(self, settings: SimulatorSettings, *, clock: Any = time.time) -> None:
        self.settings = dataclasses.replace(settings)  # live copy: /_sim/faults edits it
        self.clock = clock
        self.started_at: float = clock()
        self.rng = random.Random(settings.seed)
        self.stats = SimStats()
        self.ledger = Ledger(settings.daily_credits, settings.monthly_credits)
        self.tasks: OrderedDict[str, SimTask] = OrderedDict()
        self.banner = BANNER
        self.progress_text = BANNER
        self.models_initialized = False
        # LoRA adapters loaded on slot 1 (lora.py): name -> (path, kind); a restart forgets.
        self.lora_adapters: dict[str, tuple[str, str]] = {}
        self.lora_loads = 0
        # How many tasks the server had been given when each adapter was loaded.
        self.lora_loaded_after: list[int] = []
        self.job_seconds: deque[float] = deque(maxlen=1000)
        self.first_downloads: dict[Path, float] = {}
        self._seq = 0
        self._slots: asyncio.Semaphore | None = None
        self._owned_dir: Path | None = None
        if settings.audio_dir is None:
            self._owned_dir = Path(tempfile.mkdtemp(prefix="bygheartd-sim-"))
            self.audio_dir = self._owned_dir / "api_audio"
        else:
            self.audio_dir = Path(settings.audio_dir)
        self.audio_dir.mkdir(parents=True, exist_ok=True)
        self.audio_dir = self.audio_dir.resolve()
        self.upload_dir = (self._owned_dir or self.audio_dir) / (
            "uploads" if self._owned_dir else ".uploads"
        )
        self.upload_dir.mkdir(parents=True, exist_ok=True)

    # ----- life cycle -------------------------------------------------------------------
    async def aclose(self) -> None:
        """Cancel generation jobs and remove the files this simulator created."""
        jobs = [t.job for t in self.tasks.values() if t.job is not None and not t.job.done()]
        for job in jobs:
            job.cancel()
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job
        self.cleanup_files()

    def cleanup_files(self) -> None:
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
        else:
            shutil.rmtree(self.upload_dir, ignore_errors=True)

    def set_banner(self, text: str) -> None:
        """The server's start-up line: progress_text until the first task logs."""
        self.banner = self.progress_text = text

    def log_line(self, message: str) -> None:
        """The server's process-wide last log line, shown in every progress_text."""
        stamp = time.strftime("%H:%M:%S", time.gmtime(self.clock()))
        self.progress_text = f"{stamp} | INFO | [simulator] {message}"
        log.debug("%s", message)

    def reset_counters(self) -> None:
        self.stats = SimStats()
        self.first_downloads.clear()

    def note_download(self, path: Path) -> None:
        """When each file was first asked for: with `finished_at`, a client's lag."""
        self.first_downloads.setdefault(path, self.clock())

    def first_download_at(self, task: SimTask) -> float | None:
        times = [self.first_downloads[f] for f in task.files if f in self.first_downloads]
        return min(times) if times else None

    # ----- submit -----------------------------------------------------------------------
    def queued_count(self) -> int:
        return sum(1 for t in self.tasks.values() if t.state == "queued")

    def submit(
        self, params: GenParams, *, key: str | None, plan: Plan | None
    ) -> SimTask | CreditRefusal | QueueFull:
        """Charge credits (hosted), enqueue, and start the task's generation job."""
        s = self.settings
        if self.queued_count() >= s.queue_maxsize:
            return QueueFull()
        charge: Charge | None = None
        if s.backend == "bygheart" and key is not None and plan is not None:
            cost = credit_cost(params.model, params.batch_size)
            outcome = self.ledger.charge(key, plan, params.model, cost, self.clock())
            if isinstance(outcome, CreditRefusal):
                return outcome
            charge = outcome
        self._seq += 1
        task = SimTask(
            # Never from the seeded RNG: a re-run against the same job store must not
            # see task ids again (a real server never repeats them).
            task_id=str(uuid.uuid4()),
            seq=self._seq,
            params=params,
            fate=self._decide_fate(params),
            created=self.clock(),
            run_seconds=s.latency
            + (self.rng.uniform(0, s.latency_jitter) if s.latency_jitter else 0),
            charge=charge,
        )
        task.seeds = params.resolve_seeds(self.rng)
        task.written = written_for(params)
        self.tasks[task.task_id] = task
        self.stats.submits += 1
        self._evict_old()
        task.job = asyncio.get_running_loop().create_task(self._run(task))
        return task

    def _decide_fate(self, params: GenParams) -> Fate:
        s = self.settings
        draw_fail, draw_forget = self.rng.random(), self.rng.random()
        if s.fail_marker and s.fail_marker in params.prompt:
            return "fail"
        if (params.thinking or params.sample_mode) and not s.lm_available:
            return "fail"  # the real server's LM init fails: status 2, no reason
        if params.task_type in NEEDS_SOURCE_AUDIO and not params.has_source_audio:
            return "fail"
        if params.full_analysis_only and not (params.has_source_audio and s.lm_available):
            return "fail"  # "Please upload source audio first" / "LLM not initialized"
        if draw_fail < s.failure_rate:
            return "fail"
        if draw_forget < s.forget_rate:
            return "forget"
        return "succeed"

    # ----- generation -------------------------------------------------------------------
    async def _run(self, task: SimTask) -> None:
        if self.settings.workers is not None and self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.workers)
        if self._slots is None:
            await self._generate(task)
            return
        async with self._slots:
            await self._generate(task)

    async def _generate(self, task: SimTask) -> None:
        if task.state != "queued":
            return
        task.state, task.started = "running", time.monotonic()
        self.models_initialized = True
        self.log_line(f"task {task.task_id[:8]} started ({task.params.batch_size} take(s))")
        await asyncio.sleep(task.run_seconds)
        if task.state != "running":
            return
        if task.fate == "forget":
            self.forget([task.task_id])
            return
        if task.fate == "fail":
            self._fail(task, "generation failed")
            return
        if task.params.full_analysis_only:
            self.log_line("full analysis done")
        else:
            await asyncio.to_thread(self._write_files, task)
        task.generation_seconds = time.monotonic() - task.started
        task.state, task.finished = "succeeded", time.monotonic()
        task.finished_at = self.clock()
        self.job_seconds.append(task.generation_seconds)
        self.stats.succeeded += 1
        self.log_line(f"done: {len(task.files)} file(s) in {task.generation_seconds:.2f}s")

    def _write_files(self, task: SimTask) -> None:
        p = task.params
        fmt = audio_format_for(p.audio_format)
        duration = task.written.duration if task.written else p.duration
        seconds = take_seconds(duration, self.settings.audio_scale, self.settings.min_audio_seconds)
        edited = output_seconds(p)  # audio-input tasks follow (and pad) the source
        if edited is not None:
            seconds = max(self.settings.min_audio_seconds, edited)
        if told := instruction(p):
            self.log_line(f"instruction={told!r}")
        naming = p.naming_params()
        names = [output_name(naming, seed, fmt.suffix) for seed in task.seeds]
        bpm, key = (
            (task.written.bpm, task.written.keyscale) if task.written else (p.bpm, p.key_scale)
        )
        task.files = [
            write_take(
                self.audio_dir,
                name,
                fmt,
                seconds,
                self.settings.sample_rate,
                take_music(p.audio_plan, number, name, bpm, key),
            )
            for number, name in enumerate(names, start=1)
        ]

    def _fail(self, task: SimTask, why: str) -> None:
        if task.job is not None and task.job is not asyncio.current_task():
            task.job.cancel()
        task.state, task.finished = "failed", time.monotonic()
        if task.started is not None:
            self.job_seconds.append(task.finished - task.started)
        if task.charge is not None:
            self.ledger.refund(task.charge)
            task.charge = None
        self.stats.failed += 1
        self.log_line(f"task {task.task_id[:8]} failed: {why}")

    def expire_overdue(self, task: SimTask) -> None:
        """The real server reports tasks unfinished after an hour as failed."""
        overdue = self.clock() - task.created > self.settings.task_timeout_seconds
        if overdue and task.state in ("queued", "running", "frozen"):
            self._fail(task, "task timed out")

    # ----- admin ------------------------------------------------------------------------
    def forget(self, task_ids: list[str] | None = None) -> int:
        """Lose tasks as a crashed or pruned server would: they answer '[]' from now on."""
        ids = list(self.tasks) if task_ids is None else task_ids
        count = 0
        for task_id in ids:
            task = self.tasks.pop(task_id, None)
            if task is None:
                continue
            if task.job is not None and task.job is not asyncio.current_task():
                task.job.cancel()
            count += 1
        self.stats.forgotten += count
        return count

    def restart(self) -> dict[str, int]:
        """Server restart: finished results survive, running tasks freeze, queued ones vanish."""
        frozen = 0
        for task in list(self.tasks.values()):
            if task.state == "queued":
                self.forget([task.task_id])
            elif task.state == "running":
                task.frozen_progress, task.frozen_stage = task.progress()
                task.state = "frozen"
                if task.job is not None:
                    task.job.cancel()
                frozen += 1
        self._slots = None
        self.models_initialized = False
        self.lora_adapters.clear()
        self.progress_text = self.banner
        return {"frozen": frozen, "kept": len(self.tasks)}

    def _evict_old(self) -> None:
        """Bound memory and disk: drop the oldest finished tasks past max_tasks_kept."""
        excess = len(self.tasks) - self.settings.max_tasks_kept
        if excess <= 0:
            return
        victims = [t for t in self.tasks.values() if t.state in ("succeeded", "failed")][:excess]
        for task in victims:
            del self.tasks[task.task_id]
        in_use = {f for t in self.tasks.values() for f in t.files}
        for task in victims:
            for path in task.files:
                if path not in in_use:
                    path.unlink(missing_ok=True)

    # ----- reporting --------------------------------------------------------------------
    def job_counts(self) -> dict[str, int]:
        states = Counter(t.state for t in self.tasks.values())
        return {
            "total": len(self.tasks),
            "queued": states["queued"],
            # A task frozen by a restart is a leftover of the old process: the new one runs
            # nothing for it, and says so (the evidence a client uses to call it lost).
            "running": states["running"],
            "succeeded": states["succeeded"],
            "failed": states["failed"],
        }

    def avg_job_seconds(self) -> float:
        return sum(self.job_seconds) / len(self.job_seconds) if self.job_seconds else 0.0

    def snapshot(self) -> dict[str, Any]:
        data = self.stats.as_json()
        data["credits"] = self.ledger.snapshot()
        data["tasks"] = self.job_counts()
        data["backend"] = self.settings.backend
        data["audio_dir"] = str(self.audio_dir)
        data["lora_loads"] = self.lora_loads
        data["lora_adapters"] = list(self.lora_adapters)
        data["lora_loaded_after"] = list(self.lora_loaded_after)
        return data
