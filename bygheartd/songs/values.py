"""Shared value checks (numbers, text, ranges, error wording) and the musical fields:
duration, bpm, key, time signature, language, takes and seeds.

Every function raises `RequestError` with a reason and a hint; the caller adds key and file.
"""

from __future__ import annotations

import datetime
import difflib
import math
import re
import reprlib
from typing import Any, Final

from bygheartd import catalog
from bygheartd.errors import RequestError

_shown = reprlib.Repr()
_shown.maxstring = 40
_shown.maxother = 40
_shown.maxlist = 4
_shown.maxdict = 4
_shown.maxlevel = 2


def show(value: Any) -> str:
    """A value for an error message: short, and safe for any structure."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return _shown.repr(value)


def key_name(raw: str) -> str:
    """`Title`, `timeSignature`, `time-signature`, `Time Signature` -> the snake_case name."""
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", raw.strip())
    return re.sub(r"[\s\-]+", "_", s.lower())


def problem(reason: str, hint: str | None = None) -> RequestError:
    return RequestError(reason, hint=hint)


def text_value(name: str, value: Any) -> str:
    """A text field. Numbers become text (`title: 1999`); true/false, lists and tables do not."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, bool):
        raise problem(f"{name} must be text, not {show(value)}", f'put it in quotes: {name}: "…"')
    else:
        raise problem(f"{name} must be text, not {kind(value)}", "write it on one line")
    if "\x00" in text:
        raise problem(f"{name} contains a NUL character", "remove it")
    return text


def kind(value: Any) -> str:
    """What a value is, in song-file words with its article (`a whole number`, never
    "a int"), for "must be text, not ..."."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, datetime.datetime):
        return "a date and time"
    if isinstance(value, datetime.date | datetime.time):
        return f"a {type(value).__name__}"
    name = type(value).__name__
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def to_number(name: str, value: Any, *, integer: bool = False) -> float:
    """Ints, floats and numeric strings; never booleans, NaN or infinity."""
    fix = "write a plain number, without quotes or words (for example 120)"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise problem(f"{name} must be a number, not {show(value)}", fix)
    if isinstance(value, str):
        digits = value.strip().replace("_", "")
        try:
            value = int(digits) if re.fullmatch(r"[-+]?\d{1,30}", digits) else float(digits)
        except ValueError:
            raise problem(f"{name} must be a number, not {show(value)}", fix) from None
    number = float(value) if not isinstance(value, int) else value
    if isinstance(number, float) and not math.isfinite(number):
        raise problem(f"{name} must be a finite number, not {show(value)}")
    if integer and number != int(number):
        raise problem(f"{name} must be a whole number, not {show(value)}")
    return number


def in_range(name: str, number: float, low: float, high: float, unit: str = "") -> None:
    if number < low:
        raise problem(f"{name} {fmt(number)} is below the minimum of {fmt(low)}{unit}")
    if number > high:
        raise problem(f"{name} {fmt(number)} is above the maximum of {fmt(high)}{unit}")


def fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() and abs(number) < 1e15 else str(number)


def suggest(word: str, choices: list[str], fallback: str = "use one of") -> str:
    """`did you mean 'x'?` for a near miss, else the list of valid values."""
    near = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if near:
        return f"did you mean {near[0]!r}?"
    return f"{fallback} {', '.join(choices)}"


_MINUTES = re.compile(r"^(\d+):([0-5]?\d(?:\.\d+)?)$")
_SECONDS = re.compile(r"^(\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds?)$")


def duration(value: Any, backend: str) -> float | str | None:
    if isinstance(value, str):
        word = value.strip().lower()
        if word == "auto":
            return "auto"
        if not word:
            return None
        if m := _MINUTES.match(word):
            value = int(m.group(1)) * 60 + float(m.group(2))
        elif m := _SECONDS.match(word):
            value = float(m.group(1))
    hint = 'use 10 to 600 seconds, "m:ss" such as 3:30, or "auto"'
    try:
        seconds = to_number("duration", value)
    except RequestError as exc:
        raise problem(exc.reason, hint) from None
    if seconds <= 0:  # the API's own spelling of auto
        return "auto"
    low, high = catalog.duration_range()
    try:
        in_range("duration", seconds, low, high, " seconds")
    except RequestError as exc:
        raise problem(exc.reason, hint) from None
    return float(seconds)


def bpm(value: Any, backend: str) -> int | None:
    if isinstance(value, str):
        word = value.strip().lower().removesuffix("bpm").strip()
        if word in ("auto", ""):
            return None
        value = word
    low, high = catalog.bpm_range(backend)
    number = to_number("bpm", value, integer=True)
    where = "" if backend == "acestep" else " on the hosted service"
    try:
        in_range("bpm", number, low, high)
    except RequestError as exc:
        raise problem(exc.reason + where, f"use {low} to {high}, or leave bpm out") from None
    return int(number)


_KEY = re.compile(
    r"^([a-g])\s*(#|b|♯|♭|-?sharp|-?flat)?\s*(major|minor|maj|min|dur|moll|m|M)?$",
    re.IGNORECASE,
)


def key(value: Any, backend: str) -> str | None:
    text = text_value("key", value).strip()
    if text.lower() in ("", "auto", "n/a"):
        return None
    m = _KEY.match(text)
    if m is None:
        raise problem(
            f"key {show(value)} is not a key",
            "write a note, an optional # or b, and major or minor: C major, F# minor, Bb, Am",
        )
    note, accidental, mode = m.group(1).upper(), (m.group(2) or "").lower(), m.group(3) or ""
    accidental = {"♯": "#", "♭": "b", "sharp": "#", "-sharp": "#"}.get(accidental, accidental)
    accidental = {"flat": "b", "-flat": "b"}.get(accidental, accidental)
    # "m" is minor and "M" major (chord-symbol style); no mode at all means major.
    minor = mode == "m" or mode.lower() in ("minor", "min", "moll")
    quality = "minor" if minor else "major"
    return f"{note}{accidental} {quality}"


_METERS: Final = {"2": "2", "3": "3", "4": "4", "6": "6", "2/4": "2", "3/4": "3", "4/4": "4"} | {
    "6/8": "6"
}


def time_signature(value: Any, backend: str) -> str | None:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise problem(f"time_signature must be 2, 3, 4 or 6, not {show(value)}")
    text = str(value).strip().replace(" ", "").lower()
    if text in ("", "auto", "n/a"):
        return None
    meter = _METERS.get(text)
    if meter is None:
        raise problem(
            f"time_signature {show(value)} is not supported",
            "use 2, 3, 4 or 6 (also written 2/4, 3/4, 4/4, 6/8)",
        )
    return meter


_LANGUAGE_EXTRA: Final = {
    "mandarin": "zh",
    "cantonese": "yue",
    "farsi": "fa",
    "filipino": "tl",
    "auto": "unknown",
    "instrumental": "unknown",
    "中文": "zh",
    "日本語": "ja",
    "한국어": "ko",
    "español": "es",
    "français": "fr",
    "deutsch": "de",
    "italiano": "it",
    "português": "pt",
    "русский": "ru",
}


def language(value: Any, backend: str) -> str | None:
    text = text_value("language", value).strip()
    word = text.lower()
    if not word:
        return None
    codes = catalog.languages()
    names = {n.lower(): c for c, n in catalog.language_names().items()} | _LANGUAGE_EXTRA
    if word in codes:
        return word
    if word in names:
        return names[word]
    region = re.match(r"^([a-z]{2,3})[-_][a-z0-9]+$", word)
    if region and region.group(1) in codes:  # en-US, pt_BR
        return region.group(1)
    raise problem(
        f"unknown language {show(value)}",
        suggest(
            word, [*codes, *names], "use a code such as en, es, ja, zh, yue, or unknown; one of"
        ),
    )


def takes(value: Any, backend: str) -> int:
    number = to_number("takes", value, integer=True)
    low, high = catalog.MIN_TAKES, catalog.MAX_TAKES
    try:
        in_range("takes", number, low, high)
    except RequestError as exc:
        raise problem(exc.reason, f"use {low} to {high}") from None
    return int(number)


_SEED_MAX: Final = 2**32 - 1


def seed(value: Any, backend: str) -> int | list[int] | None:
    hint = "use a whole number from 0 to 4294967295, or a list with one per take: [1, 2]"
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if value.strip().lower() in ("", "random", "auto"):
            return None
        value = parts if len(parts) > 1 else parts[0]
    if isinstance(value, list | tuple):
        if not value:
            return None
        seeds = [_one_seed(v, hint) for v in value]
        if any(s is None for s in seeds):
            raise problem("a seed list cannot contain -1 (random)", hint)
        return [s for s in seeds if s is not None]
    return _one_seed(value, hint)


def _one_seed(value: Any, hint: str) -> int | None:
    try:
        number = int(to_number("seed", value, integer=True))
    except RequestError as exc:
        raise problem(exc.reason, hint) from None
    if number == -1:  # the API's spelling of "random"
        return None
    if not 0 <= number <= _SEED_MAX:
        raise problem(f"seed {show(value)} is out of range", hint)
    return number
