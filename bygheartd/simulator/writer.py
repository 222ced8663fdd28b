"""The simulator's stand-in for the server's language model: what it "writes" for a task.

Simple mode (`sample_mode` / `sample_query`) has the model invent the caption, lyrics and
metas from a description; `thinking` has it fill the metas the request left out (it never
rewrites the lyrics). Everything is seeded by the description (or the request's text), so
the same request is written the same way on every run and in both backend modes, and a
client can check that it records exactly what came back.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Any

from .params import GenParams

_MOODS = ("dreamy", "bright", "melancholic", "driving", "warm", "dark", "uplifting")
_GENRES = ("synth pop", "indie folk", "lo-fi hip hop", "dance pop", "soul", "ambient rock")
_VOICES = ("female lead vocal", "male lead vocal", "airy duet vocals", "raspy male vocal")
_TEXTURES = ("lush pads", "punchy drums", "warm bass", "glassy keys", "acoustic guitar")
_PRODUCTION = ("glossy radio production", "intimate bedroom production", "live band feel")
_NOTES = ("C", "D", "E", "F", "G", "A", "Bb", "F#")
_IMAGES = ("neon", "river", "midnight", "paper", "engine", "lantern", "ocean", "window")
_ACTIONS = ("we keep on running", "I hold the light", "you call my name", "the city sleeps")
_PLACES = ("under the bridge", "across the water", "in the quiet street", "above the noise")
# The server's own test for an instrumental description (English only).
_INSTRUMENTAL_WORDS = ("instrumental", "pure music", "pure instrument")


@dataclass(frozen=True)
class Written:
    """What the model used: the caption, the lyrics and the metas of the success entry."""

    prompt: str
    lyrics: str
    bpm: int | None
    keyscale: str | None
    timesignature: str | None
    duration: float | None


def is_instrumental(description: str) -> bool:
    text = description.lower().strip()
    return any(word in text for word in _INSTRUMENTAL_WORDS) or text.endswith(" solo")


def _rng(*parts: str) -> random.Random:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _words(description: str) -> list[str]:
    return [w for w in re.findall(r"[^\W\d_][\w'-]*", description.lower()) if len(w) > 3]


def _line(rng: random.Random, words: list[str]) -> str:
    image = rng.choice(words) if words and rng.random() < 0.5 else rng.choice(_IMAGES)
    return f"{image} {rng.choice(_PLACES)}, {rng.choice(_ACTIONS)}".capitalize()


def _lyrics(rng: random.Random, words: list[str]) -> str:
    def verse() -> list[str]:
        return [_line(rng, words) for _ in range(4)]

    chorus = [_line(rng, words) for _ in range(2)] * 2
    sections = [
        ("[Verse 1]", verse()),
        ("[Chorus]", chorus),
        ("[Verse 2]", verse()),
        ("[Chorus]", chorus),
        ("[Outro]", [_line(rng, words)]),
    ]
    return "\n\n".join("\n".join([tag, *lines]) for tag, lines in sections)


def _metas(rng: random.Random) -> tuple[int, str, str]:
    bpm = rng.randrange(72, 141)
    key = f"{rng.choice(_NOTES)} {rng.choice(('major', 'minor'))}"
    return bpm, key, rng.choice(("4", "4", "4", "3"))


def write_sample(params: GenParams) -> Written:
    """Simple mode: everything from the description (anything sent for them is replaced)."""
    query = params.sample_query.strip()
    rng = _rng("sample", query)
    bpm, key, meter = _metas(rng)
    instrumental = is_instrumental(query)
    parts = [query.rstrip(".") if query else rng.choice(_GENRES), rng.choice(_MOODS)]
    parts += [] if instrumental else [rng.choice(_VOICES)]
    parts += [rng.choice(_TEXTURES), rng.choice(_PRODUCTION)]
    lyrics = "[Instrumental]" if instrumental else _lyrics(rng, _words(query))
    sung = lyrics.count("\n") + 1
    duration = params.duration or float(min(240, max(60, 20 + 4 * sung)))
    return Written(", ".join(parts), lyrics, bpm, key, meter, duration)


def write_plan(params: GenParams) -> Written:
    """`thinking` in Custom mode: the caption and lyrics stay, missing metas are filled."""
    rng = _rng("plan", params.prompt, params.lyrics)
    bpm, key, meter = _metas(rng)
    sung = params.lyrics.count("\n") + 1
    return Written(
        params.prompt,
        params.lyrics,
        params.bpm or bpm,
        params.key_scale or key,
        params.time_signature or meter,
        params.duration or float(min(240, max(30, 20 + 4 * sung))),
    )


def written_for(params: GenParams) -> Written | None:
    """What the model writes for this task; None when no model runs (plain Custom mode,
    and the tasks the server skips the LM for)."""
    if params.task_type != "text2music":
        return None
    if params.sample_mode:
        return write_sample(params)
    if params.thinking:
        return write_plan(params)
    return None


def success_fields(params: GenParams, written: Written | None) -> dict[str, Any]:
    """`prompt`, `lyrics` and `metas` of a success entry, with the real server's shapes:
    metas `bpm`, `duration`, `genres`, `keyscale`, `timesignature` ("N/A" when unset),
    then the `prompt` and `lyrics` again."""

    def na(value: Any) -> Any:
        return "N/A" if value is None else value

    if written is None:
        written = Written(
            params.prompt,
            params.lyrics,
            params.bpm,
            params.key_scale,
            params.time_signature,
            params.duration,
        )
    metas = {
        "bpm": na(written.bpm),
        "duration": na(written.duration),
        "genres": "N/A",
        "keyscale": na(written.keyscale),
        "timesignature": na(written.timesignature),
        "prompt": written.prompt,
        "lyrics": written.lyrics,
    }
    return {"prompt": written.prompt, "lyrics": written.lyrics, "metas": metas}
