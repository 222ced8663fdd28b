"""One normaliser per song-request field: spellings people write in, canonical values out.

Each turns a raw value (from YAML, TOML, JSON, MCP or a plugin) into the value the API wants,
or raises `RequestError` with a reason and a hint; `request.py` adds the key and the file.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any, Final

from bygheartd import catalog
from bygheartd.errors import RequestError
from bygheartd.songs import values
from bygheartd.songs.values import key_name as key_name
from bygheartd.songs.values import show as show
from bygheartd.songs.values import suggest as suggest

# canonical name -> the other names accepted for it (the API's own names first)
ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "title": (),
    "style": ("prompt", "caption"),
    "lyrics": (),
    "model": ("model_name", "dit_model"),
    "duration": ("audio_duration", "target_duration"),
    "bpm": (),
    "key": ("key_scale", "keyscale"),
    "time_signature": ("timesignature",),
    "language": ("vocal_language",),
    "instrumental": (),
    "takes": ("batch_size",),
    "seed": (),
    "negative": ("lm_negative_prompt", "negative_prompt"),
    "audio_format": (),
    "thinking": (),
    "use_format": (),
    "inference_steps": (),
    "guidance_scale": (),
    "lm_model_path": ("lm_model",),
    "lm_temperature": (),
    "lm_cfg_scale": (),
    "lm_top_k": (),
    "lm_top_p": (),
    "task_type": (),
    "repainting_start": (),
    "repainting_end": (),
    "source_audio": ("src_audio", "source"),
    # Simple mode: the model writes caption, lyrics and metas from this description.
    "description": ("sample_query", "desc"),
    # Expert controls (the website's Edit / Repaint, Expert and LM tuning panels).
    "reference_audio": ("ref_audio",),
    "cover_strength": ("audio_cover_strength",),
    "cover_noise": ("cover_noise_strength",),
    "repaint_mode": (),
    "repaint_strength": (),
    "repaint_crossfade_frames": ("repaint_latent_crossfade_frames",),
    "repaint_crossfade_seconds": ("repaint_wav_crossfade_sec",),
    "track_name": (),
    "track_classes": ("instruments", "complete_track_classes"),
    "lm_repetition_penalty": (),
    "use_cot_caption": ("cot_caption",),
    "use_cot_language": ("cot_language",),
    "use_cot_metas": ("cot_metas",),
    "infer_method": (),
    "shift": (),
    "timesteps": (),
    "use_adg": (),
    "cfg_interval_start": (),
    "cfg_interval_end": (),
    # Edit tasks (songs/edits.py): the stems to make (one extract job each).
    "stems": (),
}
# Read by the request, never stored: a pasted API body says `seed: -1, use_random_seed: true`.
USE_RANDOM_SEED: Final = "use_random_seed"
# Set by bygheartd, not written by people: the group a stem job belongs to (its files go to
# `<group>-stems/<group>.<track>.<ext>`, service/edits.py).
STEM_GROUP: Final = "stem_group"
CANONICAL: Final[dict[str, str]] = {
    name: canon for canon, names in ALIASES.items() for name in (canon, *names)
} | {USE_RANDOM_SEED: USE_RANDOM_SEED, STEM_GROUP: STEM_GROUP}


def boolean(name: str, value: Any, backend: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("true", "yes", "on", "1", "y"):
            return True
        if word in ("false", "no", "off", "0", "n"):
            return False
    raise values.problem(
        f"{name} must be true or false, not {show(value)}", f"write {name}: true or {name}: false"
    )


def title(value: Any, backend: str) -> str | None:
    text = values.text_value("title", value).strip()
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp") or "\u202a" <= ch <= "\u202e":
            raise values.problem(
                f"title contains a control character ({ch!r})", "write the title on one line"
            )
        if "\u2066" <= ch <= "\u2069":
            raise values.problem(f"title contains a control character ({ch!r})", "remove it")
    if len(text) > 200:
        raise values.problem(
            f"title is {len(text)} characters, over the limit of 200", "shorten it"
        )
    return text or None


def style(value: Any, backend: str) -> str:
    text = values.text_value("style", value).replace("\r\n", "\n").strip()
    limit = catalog.STYLE_MAX_CHARS
    if len(text) > limit:
        raise values.problem(
            f"style is {len(text)} characters, over the limit of {limit}",
            "shorten it (nothing is cut automatically)",
        )
    return text


def lyrics(value: Any, backend: str) -> str:
    if not isinstance(value, str):
        raise values.problem(
            f"lyrics must be text, not {values.kind(value)}",
            "write them after the front matter, or as a block: `lyrics: |` then indented lines",
        )
    text = values.text_value("lyrics", value).replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    # Blank lines around the lyrics carry nothing; every line between is kept exactly.
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    text = "\n".join(lines)
    limit = catalog.LYRICS_MAX_CHARS
    if len(text) > limit:
        raise values.problem(
            f"lyrics are {len(text)} characters, over the limit of {limit}",
            "shorten them (nothing is cut automatically)",
        )
    return text


def model(value: Any, backend: str) -> str | None:
    name = values.text_value("model", value).strip().lower()
    if not name:
        return None
    if backend == "acestep":
        known = catalog.acestep_models()
        if name in known:
            return name
        if name in catalog.HOSTED_MODELS or f"bygheart-{name}" in catalog.HOSTED_MODELS:
            raise values.problem(
                f"model {show(value)} is a hosted Bygheart model, but the backend is acestep",
                f"use one of {', '.join(catalog.acestep_models()[:9])}, or leave model unset",
            )
    else:
        known = list(catalog.HOSTED_MODELS)
        if name in known:
            return name
        if f"bygheart-{name}" in known:
            return f"bygheart-{name}"
        if name in catalog.acestep_models():
            raise values.problem(
                f"model {show(value)} is an ACE-Step model, but the backend is the hosted service",
                f"use one of {', '.join(known)}",
            )
    raise values.problem(f"unknown model {show(value)}", suggest(name, known, "use one of"))


def negative(value: Any, backend: str) -> str | None:
    text = values.text_value("negative", value).strip()
    if len(text) > catalog.STYLE_MAX_CHARS:
        raise values.problem(
            f"negative is {len(text)} characters, over the limit of {catalog.STYLE_MAX_CHARS}",
            "shorten it",
        )
    return text or None


def audio_format(value: Any, backend: str) -> str | None:
    word = values.text_value("audio_format", value).strip().lower().removeprefix(".")
    if not word:
        return None
    formats = catalog.audio_formats()
    if word not in formats:
        raise values.problem(f"unknown audio_format {show(value)}", suggest(word, formats))
    return word


def task_type(value: Any, backend: str) -> str | None:
    word = values.text_value("task_type", value).strip().lower()
    if not word:
        return None
    tasks = catalog.task_types()
    if word not in tasks:
        raise values.problem(f"unknown task_type {show(value)}", suggest(word, tasks))
    return word


def lm_model_path(value: Any, backend: str) -> str | None:
    word = values.text_value("lm_model_path", value).strip()
    if not word:
        return None
    known = catalog.lm_models()
    by_lower = {n.lower(): n for n in known} | {n.split("-")[-1].lower(): n for n in known}
    if word.lower() in by_lower:
        return by_lower[word.lower()]
    raise values.problem(f"unknown lm_model_path {show(value)}", suggest(word, known))


AUDIO_SUFFIXES: Final = catalog.AUDIO_SUFFIXES


def source_audio(value: Any, backend: str) -> str | None:
    """A path relative to the song file, kept inside its folder: a shared inbox must not be
    a way to upload any file the daemon can read."""
    return _audio_beside("source_audio", value, "take.wav")


def _audio_beside(key: str, value: Any, example: str) -> str | None:
    """An audio file named relative to the song file and inside its folder (no absolute
    path, no `..`), for every key that uploads audio."""
    text = values.text_value(key, value).strip()
    if not text:
        return None
    parts = re.split(r"[/\\]", text)
    if text.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", text) or ".." in parts:
        raise values.problem(
            f"{key} {show(value)} must be a path inside the song file's folder",
            f"put the audio next to the song file and write its name: {key}: {example}",
        )
    if not text.lower().endswith(AUDIO_SUFFIXES):
        raise values.problem(
            f"{key} {show(value)} is not an audio file",
            f"use a file ending in {', '.join(AUDIO_SUFFIXES)}",
        )
    return text


def description(value: Any, backend: str) -> str:
    """The Simple-mode description: one or a few sentences, kept as written."""
    text = values.text_value("description", value).replace("\r\n", "\n").strip()
    limit = catalog.STYLE_MAX_CHARS
    if len(text) > limit:
        raise values.problem(
            f"description is {len(text)} characters, over the limit of {limit}",
            "describe the song in a sentence or two; put exact words in lyrics instead",
        )
    return text


def reference_audio(value: Any, backend: str) -> str | None:
    """A style reference (timbre and mix), with the same folder rule as `source_audio`."""
    return _audio_beside("reference_audio", value, "ref.wav")


def _choice(name: str, choices: tuple[str, ...]) -> Callable[[Any, str], str | None]:
    def normalise(value: Any, backend: str) -> str | None:
        word = values.text_value(name, value).strip().lower()
        if not word:
            return None
        if word not in choices:
            raise values.problem(f"unknown {name} {show(value)}", suggest(word, list(choices)))
        return word

    return normalise


REPAINT_MODES: Final = ("conservative", "balanced", "aggressive")
INFER_METHODS: Final = ("ode", "sde")


def track_names() -> tuple[str, ...]:
    return tuple(catalog.constants()["track_names"]["values"])


def _track(name: str, value: Any) -> str:
    word = values.text_value(name, value).strip().lower().replace(" ", "_").replace("-", "_")
    known = list(track_names())
    if word not in known:
        raise values.problem(f"unknown track {show(value)} in {name}", suggest(word, known))
    return word


def track_name(value: Any, backend: str) -> str | None:
    if isinstance(value, str) and not value.strip():
        return None
    return _track("track_name", value)


def stems(value: Any, backend: str) -> list[str] | None:
    """The tracks to split a song into: a list, or one text with commas."""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple):
        raise values.problem(
            f"stems must be a list of track names, not {show(value)}",
            "write stems: [vocals, drums, bass]",
        )
    return list(dict.fromkeys(_track("stems", item) for item in value)) or None


def stem_group(value: Any, backend: str) -> str | None:
    """A stem job's group: a slug (it names a folder), so nothing else is accepted."""
    text = values.text_value("stem_group", value).strip()
    if not text:
        return None
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,79}", text):
        raise values.problem(
            f"stem_group {show(value)} is not a slug", "use lowercase letters, digits and -"
        )
    return text


def track_classes(value: Any, backend: str) -> list[str] | None:
    """A list of track names, or one text with commas (`guitar, drums`)."""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple):
        raise values.problem(
            f"track_classes must be a list of track names, not {show(value)}",
            "write track_classes: [guitar, drums]",
        )
    tracks = [_track("track_classes", item) for item in value]
    return list(dict.fromkeys(tracks)) or None


_MAX_TIMESTEPS: Final = 200


def timesteps(value: Any, backend: str) -> str | None:
    """Custom diffusion timesteps: numbers from 1 down to 0, sent as `0.97,0.76,...,0`."""
    hint = "write falling numbers from 1 to 0, e.g. timesteps: 0.97, 0.76, 0.5, 0.28, 0"
    if isinstance(value, str):
        if not value.strip():
            return None
        value = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise values.problem(f"timesteps must be a list of numbers, not {show(value)}", hint)
    if len(value) > _MAX_TIMESTEPS:
        raise values.problem(
            f"timesteps has {len(value)} values, over the limit of {_MAX_TIMESTEPS}", hint
        )
    numbers: list[float] = []
    for item in value:
        try:
            number = float(values.to_number("timesteps", item))
            values.in_range("timesteps", number, 0, 1)
        except RequestError as exc:
            raise values.problem(exc.reason, hint) from None
        if numbers and number >= numbers[-1]:
            raise values.problem(
                f"timesteps must fall: {values.fmt(number)} comes after {values.fmt(numbers[-1])}",
                hint,
            )
        numbers.append(number)
    return ",".join(values.fmt(n) for n in numbers)


def _bounded(
    name: str, low: float, high: float, *, integer: bool = False
) -> Callable[[Any, str], float | int]:
    def normalise(value: Any, backend: str) -> float | int:
        try:
            number = values.to_number(name, value, integer=integer)
            values.in_range(name, number, low, high)
        except RequestError as exc:
            raise values.problem(
                exc.reason, f"use {values.fmt(low)} to {values.fmt(high)}"
            ) from None
        return int(number) if integer else float(number)

    return normalise


def repainting_end(value: Any, backend: str) -> float:
    number = values.to_number("repainting_end", value)
    if number <= 0:  # the API's "to the end of the source"
        return -1.0
    values.in_range("repainting_end", number, 0, 6000, " seconds")
    return float(number)


def _flag(name: str) -> Callable[[Any, str], bool]:
    return lambda value, backend: boolean(name, value, backend)


NORMALISERS: Final[dict[str, Callable[[Any, str], Any]]] = {
    "title": title,
    "style": style,
    "lyrics": lyrics,
    "model": model,
    "duration": values.duration,
    "bpm": values.bpm,
    "key": values.key,
    "time_signature": values.time_signature,
    "language": values.language,
    "instrumental": _flag("instrumental"),
    "takes": values.takes,
    "seed": values.seed,
    "negative": negative,
    "audio_format": audio_format,
    "thinking": _flag("thinking"),
    "use_format": _flag("use_format"),
    "inference_steps": _bounded("inference_steps", 1, 200, integer=True),
    "guidance_scale": _bounded("guidance_scale", 0, 20),
    "lm_model_path": lm_model_path,
    "lm_temperature": _bounded("lm_temperature", 0, 2),
    "lm_cfg_scale": _bounded("lm_cfg_scale", 0, 10),
    "lm_top_k": _bounded("lm_top_k", 0, 1000, integer=True),
    "lm_top_p": _bounded("lm_top_p", 0, 1),
    "task_type": task_type,
    # Negative: silence padded before the source (extend_before), as the server does.
    "repainting_start": _bounded("repainting_start", -600, 6000),
    "repainting_end": repainting_end,
    "source_audio": source_audio,
    "description": description,
    "reference_audio": reference_audio,
    "cover_strength": _bounded("cover_strength", 0, 1),
    "cover_noise": _bounded("cover_noise", 0, 1),
    "repaint_mode": _choice("repaint_mode", REPAINT_MODES),
    "repaint_strength": _bounded("repaint_strength", 0, 1),
    "repaint_crossfade_frames": _bounded("repaint_crossfade_frames", 0, 250, integer=True),
    "repaint_crossfade_seconds": _bounded("repaint_crossfade_seconds", 0, 20),
    "track_name": track_name,
    "track_classes": track_classes,
    "lm_repetition_penalty": _bounded("lm_repetition_penalty", 1, 2),
    "use_cot_caption": _flag("use_cot_caption"),
    "use_cot_language": _flag("use_cot_language"),
    "use_cot_metas": _flag("use_cot_metas"),
    "infer_method": _choice("infer_method", INFER_METHODS),
    "shift": _bounded("shift", 1, 5),
    "timesteps": timesteps,
    "use_adg": _flag("use_adg"),
    "cfg_interval_start": _bounded("cfg_interval_start", 0, 1),
    "cfg_interval_end": _bounded("cfg_interval_end", 0, 1),
    "stems": stems,
    "stem_group": stem_group,
    USE_RANDOM_SEED: _flag(USE_RANDOM_SEED),
}
