"""Turns a `/release_task` body (JSON or form values) into generation parameters the way
ACE-Step does: aliases, batch_size 2 when omitted, seed strings, and a 500 for bad strict fields.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from .defects import AudioPlan

ALIASES: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt", "caption"),
    "audio_duration": (
        "audio_duration",
        "duration",
        "audioDuration",
        "target_duration",
        "targetDuration",
    ),
    "key_scale": ("key_scale", "keyscale", "keyScale", "key"),
    "time_signature": ("time_signature", "timesignature", "timeSignature"),
    "vocal_language": ("vocal_language", "vocalLanguage", "language"),
    "use_format": ("use_format", "useFormat", "format"),
    "model": ("model", "model_name", "modelName", "dit_model", "ditModel"),
    "batch_size": ("batch_size", "batchSize"),
    "audio_format": ("audio_format", "audioFormat"),
    "task_type": ("task_type", "taskType"),
    "use_random_seed": ("use_random_seed", "useRandomSeed"),
    "inference_steps": ("inference_steps", "inferenceSteps"),
    "guidance_scale": ("guidance_scale", "guidanceScale"),
    "sample_mode": ("sample_mode", "sampleMode"),
    "sample_query": ("sample_query", "sampleQuery", "description", "desc"),
    "track_classes": ("track_classes", "trackClasses", "instruments"),
    "track_name": ("track_name", "trackName"),
    "full_analysis_only": ("full_analysis_only", "fullAnalysisOnly"),
}
# What the app learnt from an uploaded `src_audio` (its length and digest), noted in the
# body under these names; never a request field.
SOURCE_SECONDS = "_src_audio_seconds"
SOURCE_DIGEST = "_src_audio_sha256"
REPAINT_MODES = ("conservative", "balanced", "aggressive")
NEEDS_SOURCE_AUDIO = ("cover", "cover-nofsq", "repaint", "lego", "extract", "complete")
MAX_BATCH = 8


class StrictFieldError(ValueError):
    """A value the real server's pydantic model rejects: it answers an opaque 500."""


@dataclass(frozen=True)
class GenParams:
    prompt: str
    lyrics: str
    model: str | None
    batch_size: int
    audio_format: str
    duration: float | None
    bpm: int | None
    key_scale: str | None
    time_signature: str | None
    vocal_language: str
    task_type: str
    thinking: bool
    use_format: bool
    inference_steps: int | None
    guidance_scale: float | None
    fixed_seeds: tuple[int | None, ...]
    has_source_audio: bool
    src_audio_path: str | None
    # Simple mode: the model writes the song from `sample_query` (empty: a random one).
    sample_mode: bool = False
    sample_query: str = ""
    has_reference_audio: bool = False
    track_classes: tuple[str, ...] = ()
    track_name: str | None = None
    repainting_start: float | None = None
    repainting_end: float | None = None
    full_analysis_only: bool = False
    # The uploaded source's length in seconds and digest (None: none, or unreadable).
    source_seconds: float | None = None
    source_digest: str = ""
    # How the takes are made (defects, tempo, key): set at submit from the knobs and the
    # prompt's `[sim:...]` markers (defects.py); not a request field, not in the names.
    audio_plan: AudioPlan | None = None

    def naming_params(self) -> dict[str, Any]:
        """What the output names hash over (everything that shapes the audio)."""
        return {
            "prompt": self.prompt,
            "lyrics": self.lyrics,
            "duration": self.duration,
            "bpm": self.bpm,
            "key_scale": self.key_scale,
            "time_signature": self.time_signature,
            "vocal_language": self.vocal_language,
            "task_type": self.task_type,
            "inference_steps": self.inference_steps,
            "guidance_scale": self.guidance_scale,
            "audio_format": self.audio_format,
            "sample_query": self.sample_query,
        }

    def resolve_seeds(self, rng: random.Random) -> list[int]:
        """Fixed seeds where given, fresh 32-bit seeds for the rest (one per output)."""
        return [s if s is not None else rng.randrange(2**32) for s in self.fixed_seeds]


def _param_obj(body: dict[str, Any]) -> dict[str, Any]:
    """`param_obj`: a JSON object (or its text) the server reads for fields the top level
    lacks; a multipart form carries lists (`track_classes`) in it."""
    raw = body.get("param_obj")
    if isinstance(raw, str) and raw.strip():
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return raw if isinstance(raw, dict) else {}


def _get(body: dict[str, Any], name: str) -> Any:
    for source in (body, _param_obj(body)):
        for alias in ALIASES.get(name, (name,)):
            if alias in source and source[alias] is not None and source[alias] != "":
                return source[alias]
    return None


def _as_bool(name: str, value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise StrictFieldError(f"{name}: not a boolean")


def _as_float(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise StrictFieldError(f"{name}: not a number")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise StrictFieldError(f"{name}: not a number") from exc


def _as_int(name: str, value: Any) -> int | None:
    number = _as_float(name, value)
    if number is None:
        return None
    if number != int(number):
        raise StrictFieldError(f"{name}: not an integer")
    return int(number)


def _fixed_seeds(body: dict[str, Any], batch: int) -> tuple[int | None, ...]:
    slots: list[int | None] = [None] * batch
    if _as_bool("use_random_seed", _get(body, "use_random_seed"), True):
        return tuple(slots)
    raw = body.get("seed")
    if raw is None:
        return tuple(slots)
    parts = [raw] if isinstance(raw, int | float) else str(raw).split(",")
    seeds: list[int] = []
    for part in parts:
        value = _as_int("seed", str(part).strip() if not isinstance(part, int | float) else part)
        if value is not None and value >= 0:  # -1 entries are dropped; later seeds move up
            seeds.append(value)
    for index, seed in enumerate(seeds[:batch]):
        slots[index] = seed
    return tuple(slots)


def parse_params(
    body: dict[str, Any], *, has_upload: bool, has_reference_upload: bool = False
) -> GenParams:
    """Raise StrictFieldError for what the real server answers with a 500."""
    repaint_mode = body.get("repaint_mode")
    if repaint_mode is not None and repaint_mode not in REPAINT_MODES:
        raise StrictFieldError("repaint_mode: invalid literal")
    strength = _as_float("repaint_strength", body.get("repaint_strength"))
    if strength is not None and not 0.0 <= strength <= 1.0:
        raise StrictFieldError("repaint_strength: out of range")
    batch = _as_int("batch_size", _get(body, "batch_size"))
    batch = 2 if batch is None else min(MAX_BATCH, max(1, batch))
    duration = _as_float("audio_duration", _get(body, "audio_duration"))
    if duration is not None and duration <= 0:
        duration = None
    bpm = _as_int("bpm", _get(body, "bpm"))
    steps = _as_int("inference_steps", _get(body, "inference_steps"))
    guidance = _as_float("guidance_scale", _get(body, "guidance_scale"))
    time_signature = _get(body, "time_signature")
    key_scale = _get(body, "key_scale")
    model = _get(body, "model")
    src_path = body.get("src_audio_path")
    query = str(_get(body, "sample_query") or "")
    classes = _get(body, "track_classes") or ()
    classes = [classes] if isinstance(classes, str) else classes  # as the server does
    ref_path = body.get("reference_audio_path") or body.get("ref_audio_path")
    track = _get(body, "track_name")
    seconds = body.get(SOURCE_SECONDS)
    return GenParams(
        prompt=str(_get(body, "prompt") or ""),
        lyrics=str(body.get("lyrics") or ""),
        model=None if model is None else str(model),
        batch_size=batch,
        audio_format=str(_get(body, "audio_format") or "mp3"),
        duration=duration,
        bpm=bpm if bpm and bpm > 0 else None,
        key_scale=None if key_scale is None else str(key_scale),
        time_signature=None if time_signature is None else str(time_signature),
        vocal_language=str(_get(body, "vocal_language") or "en"),
        task_type=str(_get(body, "task_type") or "text2music"),
        thinking=_as_bool("thinking", body.get("thinking"), False),
        use_format=_as_bool("use_format", _get(body, "use_format"), False),
        inference_steps=steps,
        guidance_scale=guidance,
        fixed_seeds=_fixed_seeds(body, batch),
        has_source_audio=has_upload or bool(src_path) or bool(body.get("audio_code_string")),
        src_audio_path=None if src_path is None else str(src_path),
        # A description alone starts Simple mode too, as on the real server.
        sample_mode=_as_bool("sample_mode", _get(body, "sample_mode"), False) or bool(query),
        sample_query=query,
        has_reference_audio=has_reference_upload or bool(ref_path),
        track_classes=tuple(str(c) for c in classes) if isinstance(classes, list) else (),
        track_name=None if track is None else str(track),
        repainting_start=_as_float("repainting_start", _get(body, "repainting_start")),
        repainting_end=_as_float("repainting_end", _get(body, "repainting_end")),
        full_analysis_only=_as_bool("full_analysis_only", _get(body, "full_analysis_only"), False),
        source_seconds=float(seconds) if isinstance(seconds, int | float) else None,
        source_digest=str(body.get(SOURCE_DIGEST) or ""),
    )
