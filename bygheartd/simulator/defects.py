"""Defective takes on demand: which takes of a task come back cut short, silent, cut off,
clipped or undecodable, and at which tempo and key, from the simulator's knobs (`--defect`,
`--defect-burst`, `--audio-bpm`, `--audio-key`) and from prompt markers such as
`[sim:cut_short]` in the request's caption or description.

Marker syntax (case-insensitive, anywhere in the caption or Simple-mode description; several
markers add up): `[sim:ITEM, ITEM, ...]` where an ITEM is a defect name (see DEFECTS) or
`bpm=N`, `key=K` (for example `key=F# minor`), `take=N` (only the N-th take of each task;
default every take) or `times=N` (only the first N tasks with this same caption and
description in this simulator's run; later ones, such as a client's retake, come back
good). Everything is decided at submit, so a run is reproducible.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .params import GenParams
    from .settings import SimulatorSettings

log = logging.getLogger(__name__)

# What a take can be made to suffer (see audio.py for what each does to the samples).
DEFECTS: tuple[str, ...] = ("cut_short", "cut_off", "silent", "dropout", "clipped", "undecodable")
MARKER = re.compile(r"\[sim:([^\]]*)\]", re.IGNORECASE)
_NOTES = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_KEY = re.compile(
    r"^\s*([a-g])\s*(#|b|♯|♭|-?sharp|-?flat)?\s*(major|minor|maj|min|dur|moll|m|M)?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class AudioPlan:
    """How one task's takes are made: defects, and the tempo and key when forced."""

    defects: tuple[str, ...] = ()  # every take's
    bpm: float | None = None
    key: str | None = None
    take: int | None = None  # this take (from 1) also gets `take_defects`
    take_defects: tuple[str, ...] = ()

    def defects_for(self, take: int) -> tuple[str, ...]:
        extra = self.take_defects if take == self.take else ()
        return tuple(dict.fromkeys(self.defects + extra))


@dataclass(frozen=True)
class Markers:
    """What the `[sim:...]` markers of one prompt ask for."""

    defects: tuple[str, ...] = ()
    bpm: float | None = None
    key: str | None = None
    take: int | None = None
    times: int | None = None
    text: str = ""  # the markers as written, for the `times` count


def parse_key(value: Any) -> tuple[int, bool] | None:
    """(pitch class, minor) of "F# minor", "Bbm", "A major", "a"; None when not a key."""
    if not isinstance(value, str):
        return None
    m = _KEY.match(value)
    if m is None:
        return None
    note, accidental, mode = m.group(1).lower(), (m.group(2) or "").lower(), m.group(3) or ""
    shift = 1 if accidental in ("#", "♯", "sharp", "-sharp") else -1 if accidental else 0
    minor = mode == "m" or mode.lower() in ("minor", "min", "moll")
    return (_NOTES[note] + shift) % 12, minor


def parse_defects(text: str) -> tuple[str, ...]:
    """A comma-separated list of defect names; ValueError names an unknown one."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in DEFECTS]
    if unknown:
        raise ValueError(f"unknown defect {unknown[0]!r}; known: {', '.join(DEFECTS)}")
    return tuple(dict.fromkeys(names))


def _positive_number(name: str, value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if number <= 0:
        log.warning("simulator marker %s=%s ignored: not a positive number", name, value)
        return None
    return number


def parse_markers(text: str) -> Markers:
    """Every `[sim:...]` marker in a prompt, merged; unknown items are logged and ignored."""
    found = MARKER.findall(text or "")
    if not found:
        return Markers()
    defects: list[str] = []
    values: dict[str, Any] = {}
    for marker in found:
        for item in (part.strip() for part in marker.split(",")):
            if not item:
                continue
            name, _, value = (p.strip() for p in item.partition("="))
            name = name.lower()
            if not value and name in DEFECTS:
                defects.append(name)
            elif name == "key" and parse_key(value) is not None:
                values["key"] = value
            elif name in ("bpm", "take", "times") and value:
                number = _positive_number(name, value)
                if number is not None:
                    values[name] = number if name == "bpm" else int(number)
            else:
                log.warning("simulator marker item %r ignored (defects: %s)", item, DEFECTS)
    return Markers(
        defects=tuple(dict.fromkeys(defects)),
        bpm=values.get("bpm"),
        key=values.get("key"),
        take=values.get("take"),
        times=values.get("times"),
        text="|".join(found),
    )


def _prompt_text(prompt: str, query: str) -> str:
    return f"{prompt}\n{query}"


def plan_audio(
    prompt: str,
    query: str,
    *,
    defect: str,
    audio_bpm: float | None,
    audio_key: str | None,
    seen: Counter[str],
) -> AudioPlan:
    """The plan for a task about to be submitted: the knobs' defect (while set), then the
    markers' (unless their `times` are used up); markers' bpm/key win over the knobs'."""
    markers = parse_markers(_prompt_text(prompt, query))
    defects = list(parse_defects(defect)) if defect else []
    marked = list(markers.defects)
    if markers.times is not None and seen[_prompt_text(prompt, query)] >= markers.times:
        marked = []
    if markers.take is None:
        defects, marked = defects + marked, []
    return AudioPlan(
        defects=tuple(dict.fromkeys(defects)),
        bpm=markers.bpm or audio_bpm,
        key=markers.key or audio_key,
        take=markers.take if marked else None,
        take_defects=tuple(marked),
    )


def note_submitted(prompt: str, query: str, seen: Counter[str]) -> None:
    """Count a task that was created, for markers' `times`."""
    if MARKER.search(_prompt_text(prompt, query)):
        seen[_prompt_text(prompt, query)] += 1


def _seen(holder: Any) -> Counter[str]:
    """The per-prompt task counts for `times`, kept on the app's state."""
    seen: Counter[str] | None = getattr(holder, "sim_marker_tasks", None)
    if seen is None:
        seen = Counter()
        holder.sim_marker_tasks = seen
    return seen


def with_audio_plan(params: GenParams, settings: SimulatorSettings, holder: Any) -> GenParams:
    """The parameters with their AudioPlan, before the task is created."""
    plan = plan_audio(
        params.prompt,
        params.sample_query,
        defect=settings.defect,
        audio_bpm=settings.audio_bpm,
        audio_key=settings.audio_key,
        seen=_seen(holder),
    )
    return dataclasses.replace(params, audio_plan=plan)


def audio_plan_used(params: GenParams, settings: SimulatorSettings, holder: Any) -> None:
    """A task was created with this plan: count it for `times`, spend one of the burst."""
    note_submitted(params.prompt, params.sample_query, _seen(holder))
    if settings.defect and settings.defect_burst > 0:
        settings.defect_burst -= 1
        if settings.defect_burst == 0:
            settings.defect = ""
