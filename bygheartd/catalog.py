"""Protocol constants: model names and credit costs, and the exact valid values from
`data/acestep-constants.json` (languages, key scales, formats, task types, text limits).

Loaded once; the simulator may import this module (and nothing else of ours).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final


@dataclass(frozen=True)
class ModelInfo:
    """A hosted model: what one generation (one take) costs and what it is for."""

    name: str
    credits: int
    purpose: str


HOSTED_MODELS: Final[dict[str, ModelInfo]] = {
    m.name: m
    for m in (
        ModelInfo("bygheart-melody-fast", 1, "fast iteration"),
        ModelInfo("bygheart-studio-pro", 2, "recommended daily driver"),
        ModelInfo("bygheart-studio-max", 4, "highest detail (50 steps + 4B LM)"),
        ModelInfo("bygheart-composer-lab", 4, "edit / repaint workflows"),
    )
}
DEFAULT_HOSTED_MODEL: Final = "bygheart-studio-pro"
BACKENDS: Final = ("bygheart", "acestep")
# Audio a server may hand back, or a song may name as its source audio (cover, repaint).
AUDIO_SUFFIXES: Final = (".mp3", ".wav", ".flac", ".ogg", ".opus", ".aac", ".m4a")
# The Pro plan's daily cap: a single job above it could never run, so it is rejected.
DAILY_CREDIT_CAP: Final = 30
TIME_SIGNATURES: Final = ("2", "3", "4", "6")
MIN_TAKES: Final = 1
MAX_TAKES: Final = 8


@functools.cache
def constants() -> dict[str, Any]:
    """The parsed constants file (cached: it is read once per process)."""
    # A plain path, not importlib.resources: it works whether or not the package has an
    # __init__.py yet, and the wheel ships the data file beside this module.
    text = (Path(__file__).parent / "data" / "acestep-constants.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def data_text(name: str) -> str:
    """A text the package ships in `data/`: the songwriting guide (`guide.md`, read by
    `bygheartd guide` and the MCP guide resource alike) or `config.example.toml` (a link to
    the repository's own copy, so the two can never drift apart)."""
    return (Path(__file__).parent / "data" / name).read_text("utf-8")


def acestep_models() -> list[str]:
    """DiT model names a self-hosted ACE-Step server may know (downloadable + other known)."""
    dit = constants()["models"]["dit"]
    names: list[str] = list(dit["downloadable_may"])
    names += [n for n in dit["other_names_known_to_may_code"] if n not in names]
    return names


# What each ACE-Step DiT family is for (the constants file names the families' members).
ACESTEP_PURPOSES: Final[dict[str, str]] = {
    "turbo": "fast (8 steps), the usual choice",
    "sft": "more steps, more detail",
    "base": "base model: also extract, lego and complete",
}


def backend_models(backend: str) -> list[ModelInfo]:
    """The models of a backend with cost and purpose, in one place for every face.

    Hosted: the price list; ACE-Step: the known DiT models, free (a self-hosted server).
    """
    if backend != "acestep":
        return list(HOSTED_MODELS.values())
    families: dict[str, list[str]] = constants()["models"]["dit"]["families"]
    purpose = {n: ACESTEP_PURPOSES[f] for f, names in families.items() for n in names}
    return [
        ModelInfo(name, 0, purpose.get(name, "known to newer ACE-Step servers"))
        for name in acestep_models()
    ]


def credits_phrase(count: int) -> str:
    """`1 credit`, `2 credits`: the one way every face says an amount of credits."""
    return f"{count} credit" if count in (1, -1) else f"{count} credits"


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """`1 file`, `3 files`, `0 files`: a count in words, never "1 files" or "file(s)"."""
    return f"{count} {noun}" if count in (1, -1) else f"{count} {plural or noun + 's'}"


def cost_phrase(cost: int, retakes: int = 0) -> str:
    """What a song may cost, retakes included: `2 credits, up to 4 with one retake`. The
    one way every face says it before anything is spent (`[retakes]`: each retake is a new
    submission at the same cost, made only when no take passes the quality gate)."""
    if retakes <= 0 or cost <= 0:
        return credits_phrase(cost)
    how_many = "one retake" if retakes == 1 else f"{retakes} retakes"
    return f"{credits_phrase(cost)}, up to {cost * (1 + retakes)} with {how_many}"


def acestep_base_models() -> list[str]:
    """The base family: the only models that do extract, lego and complete."""
    return list(constants()["models"]["dit"]["families"]["base"])


def lm_models() -> list[str]:
    """Language-model names accepted for `lm_model_path`."""
    return list(constants()["models"]["lm"]["values"])


def languages() -> list[str]:
    """Vocal language codes, `unknown` included."""
    return list(constants()["languages"]["codes"])


def language_names() -> dict[str, str]:
    """Code -> English name, for display and for accepting `English` as `en`."""
    names: dict[str, str] = dict(constants()["languages"]["names_iso639_not_from_source"])
    return names


def key_scales() -> list[str]:
    return list(constants()["key_scales"]["values"])


def task_types() -> list[str]:
    return list(constants()["task_types"]["may"]["all"])


def tasks_needing_source_audio() -> list[str]:
    return list(constants()["task_types"]["needs_source_audio"])


def tasks_needing_base_model() -> list[str]:
    return list(constants()["task_types"]["needs_base_model"])


def audio_formats() -> list[str]:
    """Formats the newer servers write; an older server answers unsupported ones with flac."""
    return list(constants()["audio_formats"]["may"])


def bpm_range(backend: str) -> tuple[int, int]:
    """Hosted: the web page's 30-200; ACE-Step: the LM's 30-300."""
    bpm = constants()["bpm"]
    if backend == "acestep":
        return int(bpm["min"]), int(bpm["max"])
    return int(bpm["hosted_ui"]["min"]), int(bpm["hosted_ui"]["max"])


def duration_range() -> tuple[float, float]:
    d = constants()["duration_seconds"]
    return float(d["min"]), float(d["max"])


def credit_cost(model: str | None, takes: int, backend: str) -> int:
    """Credits a job costs: 0 on ACE-Step; otherwise the model's price times the takes.

    An unset model is the hosted default. Raises KeyError for an unknown hosted model
    (requests are validated before they get here).
    """
    if backend == "acestep":
        return 0
    return HOSTED_MODELS[model or DEFAULT_HOSTED_MODEL].credits * takes


LYRICS_MAX_CHARS: Final[int] = int(constants()["text_limits"]["lyrics_chars_documented_max"])
STYLE_MAX_CHARS: Final[int] = int(constants()["text_limits"]["caption_chars_documented_max"])
