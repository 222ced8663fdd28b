"""What the language-model helpers answer (`/v1/create_sample`, `/create_random_sample`,
`/format_input`), read into one shape: their replies name the same things differently
(`keyscale` in one, `key_scale` in another) and any field may be missing or "N/A".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Draft", "parse_draft"]

_MISSING = ("", "n/a", "na", "none", "null", "unknown", "auto")


@dataclass(frozen=True)
class Draft:
    """A song as the model proposed it; None where it said nothing usable."""

    style: str | None = None
    lyrics: str | None = None
    bpm: Any = None
    key: str | None = None
    duration: Any = None
    time_signature: str | None = None
    language: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "style": self.style,
            "lyrics": self.lyrics,
            "bpm": self.bpm,
            "key": self.key,
            "duration": self.duration,
            "time_signature": self.time_signature,
            "language": self.language,
        }


def _value(data: dict[str, Any], *names: str) -> Any:
    for name in names:
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            if value.strip().lower() in _MISSING:
                continue
            return value.strip()
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            if value <= 0:  # the server's "auto"
                continue
            return value
    return None


def _text(data: dict[str, Any], *names: str) -> str | None:
    value = _value(data, *names)
    return None if value is None else str(value)


def parse_draft(data: Any) -> Draft | None:
    """The draft in a reply's `data`, or None when it is not an object."""
    if not isinstance(data, dict):
        return None
    lyrics = data.get("lyrics")
    return Draft(
        style=_text(data, "caption", "prompt", "style"),
        lyrics=lyrics.strip("\n") if isinstance(lyrics, str) and lyrics.strip() else None,
        bpm=_value(data, "bpm"),
        key=_text(data, "keyscale", "key_scale", "key"),
        duration=_value(data, "duration", "audio_duration"),
        time_signature=_text(data, "timesignature", "time_signature"),
        # `unknown` is the server's "detect it": no language was chosen.
        language=_text(data, "vocal_language", "language"),
    )
