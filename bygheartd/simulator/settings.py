"""Every knob of the simulator: start-up settings, the subset changeable at run time, and
the option table the CLI turns into flags, so `--help`, the docs and `/_sim/faults` agree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from .defects import DEFECTS, parse_defects, parse_key

Backend = Literal["bygheart", "acestep"]
FileForm = Literal["relative", "absolute_url", "raw_path", "mixed"]
FILE_FORMS: tuple[str, ...] = ("relative", "absolute_url", "raw_path", "mixed")
BACKENDS: tuple[str, ...] = ("bygheart", "acestep")


@dataclass
class SimulatorSettings:
    """How the simulator behaves; the fields after `lm_helpers` are the faults."""

    backend: Backend = "bygheart"
    api_key: str | None = field(default=None, repr=False)
    latency: float = 1.0
    latency_jitter: float = 0.0
    workers: int | None = None
    seed: int | None = None
    audio_scale: float = 0.02
    min_audio_seconds: float = 0.5
    sample_rate: int = 48000
    audio_dir: Path | None = None
    file_form: FileForm = "relative"
    path_prefix: str = ""
    daily_credits: int = 30
    monthly_credits: int = 200
    queue_maxsize: int = 200
    task_timeout_seconds: float = 3600.0
    max_tasks_kept: int = 10000
    lm_available: bool = True
    lm_helpers: bool = True
    # The DiT models loaded in the server's slots, comma-separated; the first is slot 1.
    dit_models: str = "acestep-v15-turbo"
    # Further DiT models on disk but in no slot (the inventory lists them, not loaded).
    disk_models: str = ""
    # ACESTEP_NO_INIT: nothing loaded (inventory, /v1/models) until the first job.
    lazy_init: bool = False
    # Faults: each may also be changed at run time through POST /_sim/faults.
    failure_rate: float = 0.0
    fail_marker: str = "FAIL"
    forget_rate: float = 0.0
    rate_limit_burst: int = 0
    retry_after: float = 1.0
    retry_after_http_date: bool = False
    error_burst: int = 0
    error_status: int = 503
    envelope_error_burst: int = 0
    drop_download_burst: int = 0
    drop_download_after_bytes: int = 1024
    slow_reply_seconds: float = 0.0
    lose_submit_reply: int = 0
    server_error_on_submit: int = 0
    # Defective takes (see defects.py; prompt markers `[sim:...]` do the same per request).
    defect: str = ""
    defect_burst: int = 0
    audio_bpm: float | None = None
    audio_key: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.file_form not in FILE_FORMS:
            raise ValueError(
                f"file_form must be one of {', '.join(FILE_FORMS)}, not {self.file_form!r}"
            )
        if self.workers is not None and self.workers < 1:
            raise ValueError("workers must be at least 1 (or None for no limit)")
        if self.path_prefix and not self.path_prefix.startswith("/"):
            self.path_prefix = "/" + self.path_prefix
        self.path_prefix = self.path_prefix.rstrip("/")
        if self.audio_bpm is not None and not 0 < self.audio_bpm <= 400:
            raise ValueError(f"audio_bpm must be between 0 and 400, not {self.audio_bpm}")
        if self.audio_key is not None and parse_key(self.audio_key) is None:
            raise ValueError(f"audio_key {self.audio_key!r} is not a key (e.g. 'A minor', 'F#')")
        _check_runtime_values(self)


RUNTIME_FIELDS: tuple[str, ...] = (
    "latency",
    "latency_jitter",
    "failure_rate",
    "fail_marker",
    "forget_rate",
    "rate_limit_burst",
    "retry_after",
    "retry_after_http_date",
    "error_burst",
    "error_status",
    "envelope_error_burst",
    "drop_download_burst",
    "drop_download_after_bytes",
    "slow_reply_seconds",
    "lose_submit_reply",
    "server_error_on_submit",
    "file_form",
    "task_timeout_seconds",
    "defect",
    "defect_burst",
)


def _check_runtime_values(s: SimulatorSettings) -> None:
    for name in ("failure_rate", "forget_rate"):
        value = getattr(s, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, not {value}")
    if s.error_status not in (500, 502, 503, 504):
        raise ValueError(f"error_status must be 500, 502, 503 or 504, not {s.error_status}")
    for name in (
        "latency",
        "latency_jitter",
        "retry_after",
        "slow_reply_seconds",
        "rate_limit_burst",
        "error_burst",
        "envelope_error_burst",
        "drop_download_burst",
        "drop_download_after_bytes",
        "lose_submit_reply",
        "server_error_on_submit",
        "task_timeout_seconds",
        "defect_burst",
    ):
        if getattr(s, name) < 0:
            raise ValueError(f"{name} must not be negative")
    if s.file_form not in FILE_FORMS:
        raise ValueError(f"file_form must be one of {', '.join(FILE_FORMS)}")
    parse_defects(s.defect)  # ValueError names an unknown defect


def apply_runtime_changes(settings: SimulatorSettings, changes: dict[str, Any]) -> None:
    """Apply `/_sim/faults` changes all-or-nothing; ValueError names the first bad field."""
    unknown = sorted(set(changes) - set(RUNTIME_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown fault field(s) {', '.join(unknown)}; valid: {', '.join(RUNTIME_FIELDS)}"
        )
    trial = dataclasses.replace(settings)
    types = {f.name: f.type for f in dataclasses.fields(SimulatorSettings)}
    for name, value in changes.items():
        setattr(trial, name, _coerce(name, str(types[name]), value))
    _check_runtime_values(trial)
    for name in changes:
        setattr(settings, name, getattr(trial, name))


def _coerce(name: str, type_name: str, value: Any) -> Any:
    if type_name == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be true or false")
    if type_name == "int":
        if isinstance(value, bool):  # lose_submit_reply: true means "the next one"
            return int(value)
        if isinstance(value, int):
            return value
        raise ValueError(f"{name} must be an integer")
    if type_name == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{name} must be a number")
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


class CliOption(NamedTuple):
    """One `bygheartd simulator` flag: `--name-with-dashes` maps to settings field `name`."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None


CLI_OPTIONS: tuple[CliOption, ...] = (
    CliOption(
        "backend",
        str,
        "bygheart",
        "Impersonate the hosted service (bygheart: keys, "
        "plans, credits) or a self-hosted ACE-Step server (acestep).",
        BACKENDS,
    ),
    CliOption(
        "api_key",
        str,
        None,
        "acestep backend only: the key the server requires "
        "(omitted: auth off). Hosted keys follow the bgh_ plan rules.",
    ),
    CliOption("latency", float, 1.0, "Seconds each task spends generating."),
    CliOption("latency_jitter", float, 0.0, "Extra random seconds (0..N) added per task."),
    CliOption(
        "workers",
        int,
        None,
        "Tasks generating at once (default: no limit; ACE-Step itself runs 1).",
    ),
    CliOption(
        "seed",
        int,
        None,
        "Seed for the generated seeds, latency jitter and random faults (reproducible runs).",
    ),
    CliOption(
        "audio_scale",
        float,
        1.0,
        "Audio length = requested duration (auto: 30 s) times this (SimulatorSettings in "
        "Python defaults to 0.02: short takes for tests).",
    ),
    CliOption("min_audio_seconds", float, 0.5, "Shortest audio file written."),
    CliOption("sample_rate", int, 48000, "Sample rate of the synthesised audio."),
    CliOption(
        "audio_dir",
        str,
        None,
        "Folder for generated files (default: a temporary folder removed on stop).",
    ),
    CliOption(
        "file_form",
        str,
        "relative",
        "How result files are named: relative "
        "(/v1/audio?path=...), absolute_url, raw_path or mixed (rotates).",
        FILE_FORMS,
    ),
    CliOption(
        "path_prefix",
        str,
        "",
        "Serve everything under this path, like the hosted /bygheartsong/api.",
    ),
    CliOption("daily_credits", int, 30, "Pro plan daily credit cap."),
    CliOption("monthly_credits", int, 200, "Pro plan monthly credits."),
    CliOption("queue_maxsize", int, 200, "Waiting tasks before 429 'Server busy: queue is full'."),
    CliOption(
        "task_timeout_seconds", float, 3600.0, "Unfinished tasks older than this report status 2."
    ),
    CliOption(
        "max_tasks_kept",
        int,
        10000,
        "Finished tasks remembered (oldest forgotten first, with their files).",
    ),
    CliOption(
        "lm_available",
        bool,
        True,
        "Whether thinking:true and Simple mode succeed (the LM is loaded).",
    ),
    CliOption(
        "lm_helpers",
        bool,
        True,
        "Whether /v1/create_sample and /format_input answer; --no-lm-helpers (or "
        "--no-lm-available) makes them answer 503 'LLM not initialized', while "
        "/create_random_sample still answers from the bundled examples, as the real server does.",
    ),
    CliOption(
        "dit_models",
        str,
        "acestep-v15-turbo",
        "DiT models loaded in the server's slots, comma-separated (the first is slot 1, the "
        "default); a request naming another model runs on slot 1, as the real server does.",
    ),
    CliOption(
        "disk_models",
        str,
        "",
        "ACE-Step: further DiT models on disk but in no slot, comma-separated; the inventory "
        "lists them with is_loaded false (a task naming one runs on slot 1).",
    ),
    CliOption(
        "lazy_init",
        bool,
        False,
        "ACE-Step started with ACESTEP_NO_INIT: until the first job loads every slot, "
        "/v1/model_inventory shows no model loaded and llm_initialized false, and /v1/models "
        "lists none (captures R1-1..R1-4). The LoRA routes and /health wait for the first "
        "job in either mode.",
    ),
    CliOption("failure_rate", float, 0.0, "Probability that a task fails (status 2)."),
    CliOption(
        "fail_marker", str, "FAIL", "Tasks whose prompt contains this text fail ('' disables)."
    ),
    CliOption(
        "forget_rate",
        float,
        0.0,
        "Probability that the server loses a task: it "
        "answers '[]' from when it would have finished.",
    ),
    CliOption("rate_limit_burst", int, 0, "The next N job/download requests answer 429."),
    CliOption("retry_after", float, 1.0, "Retry-After of the burst 429s, in seconds."),
    CliOption("retry_after_http_date", bool, False, "Send Retry-After as an HTTP date."),
    CliOption("error_burst", int, 0, "The next N job/download requests answer error_status."),
    CliOption("error_status", int, 503, "Status of error_burst replies (500, 502, 503, 504)."),
    CliOption(
        "envelope_error_burst",
        int,
        0,
        "The next N job requests answer HTTP 200 with code 500 and error set inside the envelope.",
    ),
    CliOption("drop_download_burst", int, 0, "The next N downloads close the connection mid-body."),
    CliOption("drop_download_after_bytes", int, 1024, "Bytes a dropped download sends first."),
    CliOption(
        "slow_reply_seconds", float, 0.0, "Delay before answering each job/download request."
    ),
    CliOption(
        "lose_submit_reply",
        int,
        0,
        "The next N submits create the task, then drop "
        "the connection before the reply (outcome unknown).",
    ),
    CliOption(
        "server_error_on_submit",
        int,
        0,
        "The next N submits answer 500 text/plain 'Internal Server Error' and create nothing.",
    ),
    CliOption(
        "defect",
        str,
        "",
        "Defective takes: a comma-separated list of " + ", ".join(DEFECTS) + " ('' none). "
        "Per request: a marker such as [sim:cut_short] in the caption (see the README's "
        "simulator section).",
    ),
    CliOption(
        "defect_burst",
        int,
        0,
        "Only the next N tasks get --defect, then it is cleared (0: every task while set).",
    ),
    CliOption(
        "audio_bpm",
        float,
        None,
        "Tempo of every take (default: the requested bpm, else one per take, 80-140).",
    ),
    CliOption(
        "audio_key",
        str,
        None,
        "Key of every take, e.g. 'A minor' (default: the requested key, else one per take).",
    ),
)


def settings_from_cli(**kwargs: Any) -> SimulatorSettings:
    """Build settings from CLI values (dashes or underscores; None means the default)."""
    names = {f.name for f in dataclasses.fields(SimulatorSettings)}
    # The command line's own defaults where they differ from the dataclass's (audio_scale).
    values: dict[str, Any] = {o.name: o.default for o in CLI_OPTIONS if o.default is not None}
    for key, value in kwargs.items():
        name = key.replace("-", "_")
        if name not in names:
            raise ValueError(f"unknown simulator option {key!r}")
        if value is None:
            continue
        if name == "audio_dir":
            value = Path(value).expanduser()
        values[name] = value
    return SimulatorSettings(**values)
