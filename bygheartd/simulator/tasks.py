"""The ACE-Step 1.5 edit tasks and model slots, as the genuine server does them
(ACESTEP-TASKS.md; captures R1-*, R2-*, R3-* in API-TRANSCRIPTS-TASKS.md).

- Slots: the models loaded at start-up (`--dit-models`, the first is slot 1, the default),
  or with `--lazy-init` (ACESTEP_NO_INIT) on the first job: until then the inventory lists
  every model unloaded and `/v1/models` lists none (R1-1..R1-3). `--disk-models` adds models
  that are on disk but in no slot.
  A request's `model` that names no loaded slot silently runs on slot 1; the result's
  `dit_model` is the only evidence (R1-47/48). Nothing refuses a turbo model for extract,
  lego or complete (R1-29/30).
- `/v1/model_inventory` reports `supported_task_types` from the checkpoint's `is_turbo`:
  turbo models the four turbo tasks, every other model all seven (SFT included, R1-8).
- Output length: repaint and lego pad the source (a negative `repainting_start` before it,
  a `repainting_end` past it after it) and return the whole padded song; `repainting_end`
  0 or negative means "to the end". Cover, extract and complete follow the source.
- `full_analysis_only`: one raw analysis dict and no file (R1-40); it needs the LM and
  source audio, else a plain status 2.
"""

from __future__ import annotations

import hashlib
import io
import random
from typing import Any

from .params import GenParams

TURBO_TASKS = ("text2music", "repaint", "cover", "cover-nofsq")
ALL_TASKS = (*TURBO_TASKS, "extract", "lego", "complete")
PADDED_TASKS = ("repaint", "lego")
SOURCE_LOCKED = ("cover", "cover-nofsq", "extract", "complete")
_GENRES = ("synth pop", "indie folk", "lo-fi hip hop", "soul", "ambient rock")
_KEYS = ("C major", "A minor", "G major", "E minor", "D major", "F major")


def loaded_models(setting: str) -> list[str]:
    """The loaded DiT slots from `--dit-models` (comma-separated; first is slot 1)."""
    return _names(setting) or ["acestep-v15-turbo"]


def _names(setting: str) -> list[str]:
    return [part.strip() for part in setting.split(",") if part.strip()]


def supported_tasks(model: str) -> list[str]:
    return list(TURBO_TASKS if "turbo" in model.lower() else ALL_TASKS)


def inventory(slots: str, disk: str, *, loaded: bool, llm_initialized: bool) -> dict[str, Any]:
    """The `data` of GET /v1/model_inventory: every model in a slot or on disk (`--disk-models`),
    sorted by name as the server does; `is_loaded` for the slots' models once `loaded` (a
    lazily started server lists them all unloaded before its first job, R1-3)."""
    in_slots = loaded_models(slots)
    return {
        "models": [
            {
                "name": name,
                "is_default": name == in_slots[0],
                "is_loaded": loaded and name in in_slots,
                "supported_task_types": supported_tasks(name),
            }
            for name in sorted({*in_slots, *_names(disk)})
        ],
        "default_model": in_slots[0],
        "lm_models": [{"name": "acestep-5Hz-lm-1.7B", "is_loaded": False}],
        "loaded_lm_model": None,
        "llm_initialized": llm_initialized,
    }


def ran_on(params: GenParams, setting: str) -> str:
    """The slot that runs a task: the one named when it is loaded, else slot 1."""
    loaded = loaded_models(setting)
    return params.model if params.model in loaded else loaded[0]


def audio_seconds(data: bytes) -> float | None:
    """The length of an uploaded file (None when it cannot be read): the server decodes it."""
    try:
        import soundfile as sf

        with sf.SoundFile(io.BytesIO(data)) as handle:
            return float(handle.frames) / float(handle.samplerate)
    except Exception:
        pass
    try:
        import mutagen

        found = mutagen.File(io.BytesIO(data))
        length = getattr(getattr(found, "info", None), "length", None)
        return float(length) if length else None
    except Exception:
        return None


def output_seconds(params: GenParams) -> float | None:
    """How long the output of an audio-input task is; None for the other tasks."""
    source = params.source_seconds
    if source is None or params.task_type not in (*PADDED_TASKS, *SOURCE_LOCKED):
        return None
    if params.task_type in SOURCE_LOCKED:
        return source
    start = params.repainting_start or 0.0
    end = params.repainting_end
    after = max(0.0, end - source) if end is not None and end > 0 else 0.0
    before = max(0.0, -start)
    return source + before + after


def instruction(params: GenParams) -> str:
    """The instruction the server builds for a task (the log shows it; the result never)."""
    task = params.task_type
    if task == "extract":
        if params.track_name:
            return f"Extract the {params.track_name.upper()} track from the audio:"
        return "Extract the track from the audio:"
    if task == "lego":
        if params.track_name:
            return f"Generate the {params.track_name.upper()} track based on the audio context:"
        return "Generate the track based on the audio context:"
    if task == "complete":
        if params.track_classes:
            joined = " | ".join(c.upper() for c in params.track_classes)
            return f"Complete the input track with {joined}:"
        return "Complete the input track:"
    return ""


def analysis(params: GenParams) -> dict[str, Any]:
    """A `full_analysis_only` result element: the raw dict, no `file`, `status` or `stage`."""
    digest = hashlib.sha256(f"{params.source_seconds}:{params.source_digest}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    bpm = rng.randrange(70, 150)
    key = rng.choice(_KEYS)
    genre = rng.choice(_GENRES)
    duration = round(params.source_seconds or 0)
    caption = f"{genre}, warm analog mix, steady groove"
    lyrics = "[Verse]\nLights along the river\nCarry us back home\n\n[Chorus]\nHold on"
    codes = "".join(f"<|audio_code_{rng.randrange(64000)}|>" for _ in range(max(1, duration) * 5))
    return {
        "status_message": "Full Hardware Analysis Success",
        "bpm": bpm,
        "keyscale": key,
        "timesignature": "4",
        "duration": duration,
        "genre": genre,
        "prompt": caption,
        "lyrics": lyrics,
        "language": "en",
        "metas": {
            "bpm": bpm,
            "caption": caption,
            "duration": duration,
            "genres": genre,
            "keyscale": key,
            "language": "en",
            "timesignature": "4",
            "lyrics": lyrics,
        },
        "audio_codes": codes,
        "audio_paths": [],
    }
