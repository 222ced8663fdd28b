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
}
# Read by the request, never stored: a pasted API body says `seed: -1, use_random_seed: true`.
USE_RANDOM_SEED: Final = "use_random_seed"
CANONICAL: Final[dict[str, str]] = {
    name: canon for canon, names in ALIASES.items() for name in (canon, *names)
} | {USE_RANDOM_SEED: USE_RANDOM_SEED}


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
    raise values.problem(f"{name} must be true or false, not {show(value)}")


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
            f"lyrics must be text, not a {values.kind(value)}",
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
    text = values.text_value("source_audio", value).strip()
    if not text:
        return None
    parts = re.split(r"[/\\]", text)
    if text.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", text) or ".." in parts:
        raise values.problem(
            f"source_audio {show(value)} must be a path inside the song file's folder",
            "put the audio next to the song file and write its name: source_audio: take.wav",
        )
    if not text.lower().endswith(AUDIO_SUFFIXES):
        raise values.problem(
            f"source_audio {show(value)} is not an audio file",
            f"use a file ending in {', '.join(AUDIO_SUFFIXES)}",
        )
    return text


def _bounded(
    name: str, low: float, high: float, *, integer: bool = False
) -> Callable[[Any, str], float | int]:
    def normalise(value: Any, backend: str) -> float | int:
        number = values.to_number(name, value, integer=integer)
        try:
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
    "repainting_start": _bounded("repainting_start", 0, 6000),
    "repainting_end": repainting_end,
    "source_audio": source_audio,
    USE_RANDOM_SEED: _flag(USE_RANDOM_SEED),
}
