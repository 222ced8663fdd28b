"""The language-model helpers of a server with its LM loaded: `/v1/create_sample`,
`/create_random_sample` and `/format_input`, answered deterministically from the input
(the same request gives the same draft), so tests can compare whole replies.

The real LM writes music; this one writes plausible, valid drafts: a caption built from
the description's own words, tagged lyrics, and metas inside the API's ranges.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any

__all__ = ["LLM_NOT_INITIALIZED", "create_sample", "format_input", "random_sample"]

# The real server's words (503) when its LM was not loaded and lazy loading is off.
LLM_NOT_INITIALIZED = "LLM not initialized. Set ACESTEP_INIT_LLM=true in .env to enable."

_KEYS = ("C major", "G major", "D major", "A minor", "E minor", "F major", "Bb major", "F# minor")
_SIGNATURES = ("4", "4", "4", "3", "6")
_GENRES = ("synthwave", "indie pop", "lofi hip hop", "folk", "dance pop", "dream pop", "funk")
_MOODS = ("melancholic", "uplifting", "dreamy", "energetic", "warm", "dark")
_INSTRUMENTS = ("analog synths", "acoustic guitar", "soft piano", "punchy drums", "warm bass")
_VOCALS = ("female lead vocal", "male lead vocal", "airy duet vocals")
_LINES = (
    "Neon rivers running through the night",
    "We keep the engine of the summer bright",
    "Every window holds a different light",
    "Hold the feeling, never let it go",
    "Shadows dancing slowly down below",
    "Call my name and I will follow you home",
    "Paper hearts are drifting on the wind",
    "Turn the page and let the song begin",
)
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "of",
        "for",
        "with",
        "about",
        "to",
        "in",
        "on",
        "at",
        "by",
        "song",
        "track",
        "music",
        "make",
        "write",
        "me",
        "some",
        "that",
        "this",
        "is",
        "it",
        "be",
        "my",
        "our",
        "your",
        "please",
    ]
)
# Bundled examples, as the real server ships some for its "random sample" button.
_EXAMPLES = (
    {
        "caption": "upbeat synthwave, female vocals, retro 80s drums, shimmering arpeggios",
        "lyrics": "[Verse]\nNeon lights tonight\nCity running bright\n\n[Chorus]\nWe are "
        "alive, we are alive\nUnder electric skies",
        "bpm": 118,
        "keyscale": "A minor",
        "duration": 120,
        "timesignature": "4",
        "vocal_language": "en",
    },
    {
        "caption": "lofi hip hop, mellow piano, vinyl crackle, laid-back drums",
        "lyrics": "[Instrumental]",
        "bpm": 82,
        "keyscale": "F major",
        "duration": 90,
        "timesignature": "4",
        "vocal_language": "en",
    },
    {
        "caption": "acoustic folk ballad, male vocal, fingerpicked guitar, warm and intimate",
        "lyrics": "[Verse]\nDown the river road I go\nCarry what I used to know\n\n[Chorus]\n"
        "Home is where the long roads end\nHome is where I'll start again",
        "bpm": 96,
        "keyscale": "G major",
        "duration": 150,
        "timesignature": "3",
        "vocal_language": "en",
    },
)


def _rng(*parts: Any) -> random.Random:
    seed = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return random.Random(int.from_bytes(seed[:8], "big"))


def _words(text: str) -> list[str]:
    words = re.findall(r"[^\W\d_][\w'-]*", text.lower())
    return [w for w in words if w not in _STOPWORDS][:6]


def _instrumental_hint(text: str) -> bool:
    return bool(re.search(r"\binstrumental\b|\bno vocals\b|\bwithout vocals\b", text.lower()))


def _lyrics(rng: random.Random, words: list[str]) -> str:
    lines = list(_LINES)
    rng.shuffle(lines)
    hook = " ".join(words[:3]).capitalize() or "Hold on"
    return (
        f"[Verse]\n{lines[0]}\n{lines[1]}\n\n[Chorus]\n{hook}, {hook.lower()}\n{lines[2]}\n\n"
        f"[Verse]\n{lines[3]}\n{lines[4]}\n\n[Chorus]\n{hook}, {hook.lower()}\n{lines[2]}\n\n"
        f"[Outro]\n{lines[5]}"
    )


def create_sample(
    query: str, instrumental: bool, language: str, temperature: Any
) -> dict[str, Any]:
    """A draft from a description: its words lead the caption; metas from a seeded draw."""
    rng = _rng("create_sample", query, instrumental, language, temperature)
    words = _words(query)
    no_vocals = instrumental or _instrumental_hint(query)
    tags = [
        ", ".join(words[:3]) or rng.choice(_GENRES),
        rng.choice(_MOODS),
        rng.choice(_INSTRUMENTS),
        "instrumental" if no_vocals else rng.choice(_VOCALS),
    ]
    lang = language if language and language != "unknown" else "en"
    return {
        "caption": ", ".join(tags),
        "lyrics": "[Instrumental]" if no_vocals else _lyrics(rng, words),
        "bpm": rng.randrange(70, 161),
        "keyscale": rng.choice(_KEYS),
        "duration": rng.choice((90, 120, 150, 180)),
        "timesignature": rng.choice(_SIGNATURES),
        "vocal_language": lang,
    }


def random_sample(sample_type: str, count: int) -> dict[str, Any]:
    """The `count`-th pick of the bundled examples (a fixed sequence per sample type)."""
    rng = _rng("random_sample", sample_type, count)
    return dict(rng.choice(_EXAMPLES))


def _polished_caption(prompt: str) -> str:
    tags = [t.strip() for t in re.split(r"[,\n]", prompt) if t.strip()]
    seen: list[str] = []
    for tag in tags:
        if tag.lower() not in (s.lower() for s in seen):
            seen.append(tag.lower())
    if not any("production" in t for t in seen):
        seen.append("polished production")
    return ", ".join(seen)


def _polished_lyrics(lyrics: str) -> str:
    """Section tags in canonical case, one blank line between sections, stray spaces gone."""
    out: list[str] = []
    for raw in lyrics.replace("\r\n", "\n").split("\n"):
        line = " ".join(raw.split())
        if not line:
            continue
        if m := re.fullmatch(r"\[\s*([^\]]+?)\s*\]", line):
            if out:
                out.append("")
            out.append(f"[{m.group(1).title()}]")
        else:
            out.append(line[:1].upper() + line[1:])
    if out and not out[0].startswith("["):
        out.insert(0, "[Verse]")
    return "\n".join(out)


def format_input(
    prompt: str, lyrics: str, params: dict[str, Any], temperature: Any
) -> dict[str, Any]:
    """The rewrite of a caption and lyrics; metas kept where given, else a seeded choice."""
    rng = _rng("format_input", prompt, lyrics, params, temperature)
    bpm = params.get("bpm")
    duration = params.get("duration")
    return {
        "caption": _polished_caption(prompt) if prompt.strip() else rng.choice(_GENRES),
        "lyrics": _polished_lyrics(lyrics) if lyrics.strip() else "[Instrumental]",
        "bpm": bpm
        if isinstance(bpm, int) and not isinstance(bpm, bool)
        else rng.randrange(70, 161),
        "key_scale": params.get("key_scale") or rng.choice(_KEYS),
        "time_signature": str(params.get("time_signature") or rng.choice(_SIGNATURES)),
        "duration": duration if isinstance(duration, int | float) else rng.choice((120, 150, 180)),
        "vocal_language": params.get("language") or params.get("vocal_language") or "en",
    }
