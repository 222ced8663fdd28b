"""What the templates show, worked out in Python: a job's takes and their URLs, the quality
figures, verdict, findings and waveform of each take (from the `quality` plugin's sidecar
entry, when there is one), which take is the keeper, the lyrics the model wrote, and the
30-day usage chart as SVG bars.

Pictures are plain SVG attributes computed here, so the page needs no script to draw them
and no inline style (the Content-Security-Policy allows none).
"""

from __future__ import annotations

import mimetypes
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bygheartd.catalog import AUDIO_SUFFIXES
from bygheartd.jobs import Job

__all__ = [
    "LengthCache",
    "LengthLook",
    "Mark",
    "TakeView",
    "UsageBar",
    "audio_files",
    "content_type",
    "figures_of",
    "findings_of",
    "generated_text",
    "marks_of",
    "quality_entries",
    "takes_of",
    "usage_bars",
    "verdict_of",
    "waveform_path",
]

_TYPES = {
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".aac": "audio/aac",
    ".m4a": "audio/mp4",
    ".json": "application/json",
    ".lrc": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}


def content_type(path: Path) -> str:
    """The Content-Type a browser's `<audio>` accepts for this take."""
    suffix = path.suffix.lower()
    return _TYPES.get(suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def audio_files(job: Job) -> list[Path]:
    """The job's recorded takes, in take order (other recorded files are downloads only)."""
    return [f.path for f in job.files if f.path.suffix.lower() in AUDIO_SUFFIXES]


WAVE_WIDTH = 600  # the waveform's SVG box: 600 x WAVE_HEIGHT, stretched to the page
WAVE_HEIGHT = 80
MARK_MIN_WIDTH = 4.0  # a finding at one instant is still a mark you can see and hover


@dataclass(frozen=True)
class Mark:
    """A finding drawn on a take's waveform where it is: `x` and `width` in the SVG box,
    `at` and `until` in seconds (None for a point)."""

    code: str
    message: str
    at: float
    until: float | None
    x: float
    width: float


def marks_of(quality: Mapping[str, Any], *, width: int = WAVE_WIDTH) -> tuple[Mark, ...]:
    """The findings that say where they are (`at`, and `until` for a stretch: the quality
    plugin's dropout, cut-off end, first clipping, the end of a take cut short), placed on
    the waveform by the take's measured `duration`; findings without a place are left to
    the list beside it."""
    length = _seconds_in(quality.get("duration"))
    raw = quality.get("findings")
    if not isinstance(raw, list) or length is None or length <= 0:
        return ()
    marks = []
    for item in raw:
        start = _seconds_in(item.get("at")) if isinstance(item, Mapping) else None
        if start is None:
            continue
        at = min(length, max(0.0, start))
        until = _seconds_in(item.get("until"))
        end = min(length, max(at, until)) if until is not None else None
        x = at / length * width
        span = (end - at) / length * width if end is not None else 0.0
        span = max(MARK_MIN_WIDTH, span)
        x = min(x, width - span)  # a mark at the very end stays inside the box
        message = item.get("message")
        marks.append(
            Mark(
                str(item.get("code") or ""),
                str(message if message is not None else item.get("code") or ""),
                round(at, 2),
                round(end, 2) if end is not None else None,
                round(x, 1),
                round(span, 1),
            )
        )
    return tuple(marks)


def _seconds_in(value: Any) -> float | None:
    """A figure from the sidecar as seconds, or None when it is not a number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


@dataclass(frozen=True)
class TakeView:
    number: int  # 1-based: /songs/<id>/takes/<number>
    name: str
    url: str
    mime: str
    seed: str | None = None
    quality: Mapping[str, Any] = field(default_factory=dict)
    waveform: str = ""  # an SVG path, empty without peaks
    warnings: tuple[str, ...] = ()
    figures: tuple[tuple[str, str, str], ...] = ()  # (key, label, text) for the page
    verdict: str | None = None  # the quality gate's "pass" or "fail"; None when not judged
    findings: tuple[tuple[str, str], ...] = ()  # (code, message), why it failed
    keeper: bool = False  # the job's keeper...
    keeper_by: str | None = None  # ...chosen by "gate" or "person"
    marks: tuple[Mark, ...] = ()  # findings placed on the waveform
    duration: float | None = None  # the measured length (the quality plugin's), if any

    @property
    def other_warnings(self) -> tuple[str, ...]:
        """The take's warnings that do not repeat a finding (shown beside the findings)."""
        said = {message for _, message in self.findings}
        said |= {f"quality: {message}" for message in said}
        return tuple(w for w in self.warnings if w not in said)


# The `quality` plugin's figures in reading order, with a label and a way to print each.
# Values stay plain numbers (the unit is in the label), so that they read as figures.
_FIGURES: tuple[tuple[str, str, str], ...] = (
    ("duration", "length (s)", "{:g}"),
    ("requested_duration", "requested (s)", "{:g}"),
    ("lufs", "loudness (LUFS)", "{:g}"),
    ("peak_dbfs", "peak (dBFS)", "{:g}"),
    ("silence_ratio", "silence (share)", "{:g}"),
    ("clipped", "clipped samples", "{}"),
    ("sample_rate", "sample rate (Hz)", "{}"),
    ("channels", "channels", "{}"),
    ("error", "error", "{}"),
)


def figures_of(quality: Mapping[str, Any]) -> tuple[tuple[str, str, str], ...]:
    """The figures worth showing, printed with their units (unknown keys as they are)."""
    shown = []
    known = {key for key, _, _ in _FIGURES}
    for key, label, pattern in _FIGURES:
        value = quality.get(key)
        if value is None:
            continue
        try:
            text = pattern.format(value)
        except (ValueError, TypeError):
            text = str(value)
        shown.append((key, label, text))
    for key, value in quality.items():
        hidden = key in known or key in ("peaks", "warnings", "take", "verdict", "findings")
        if not hidden and isinstance(value, str | int | float | bool):
            shown.append((key, key.replace("_", " "), str(value)))
    return tuple(shown)


def findings_of(quality: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The `(code, message)` of each finding the quality gate recorded for a take (a bare
    string is a message without a code)."""
    raw = quality.get("findings")
    if not isinstance(raw, list):
        return ()
    found = []
    for item in raw:
        if isinstance(item, Mapping):
            code, message = item.get("code"), item.get("message")
            if message is None and code is None:
                continue
            found.append((str(code or ""), str(message if message is not None else code)))
        elif isinstance(item, str):
            found.append(("", item))
    return tuple(found)


def verdict_of(quality: Mapping[str, Any], findings: Sequence[object]) -> str | None:
    """The gate's verdict on a take: "pass", "fail", or None when it was not judged (a take
    with findings fails even when the verdict itself is missing)."""
    verdict = quality.get("verdict")
    if verdict in ("pass", "fail"):
        return str(verdict)
    return "fail" if findings else None


def quality_entries(
    sidecar: Mapping[str, Any] | None, names: Sequence[str]
) -> list[dict[str, Any]]:
    """The `quality` figures per take, in take order, wherever the sidecar keeps them (top
    level or among the plugins' results; a list per take, or a mapping by file name)."""
    if not sidecar:
        return [{} for _ in names]
    found: Any = sidecar.get("quality")
    if found is None and isinstance(sidecar.get("plugins"), Mapping):
        found = sidecar["plugins"].get("quality")
    if isinstance(found, Mapping) and isinstance(found.get("takes"), list):
        found = found["takes"]
    if isinstance(found, list):
        entries = [dict(e) if isinstance(e, Mapping) else {} for e in found]
        return (entries + [{} for _ in names])[: len(names)]
    if isinstance(found, Mapping):
        out = []
        for name in names:
            entry = found.get(name) or found.get(Path(name).stem)
            out.append(dict(entry) if isinstance(entry, Mapping) else {})
        if len(names) == 1 and not out[0] and "peaks" in found:
            out[0] = dict(found)
        return out
    return [{} for _ in names]


def waveform_path(peaks: Any, *, width: int = WAVE_WIDTH, height: int = WAVE_HEIGHT) -> str:
    """A mirrored waveform outline (an SVG path in a `width` x `height` box) from peaks in
    0..1; empty when there are none to draw."""
    if not isinstance(peaks, list | tuple) or not peaks:
        return ""
    values = []
    for p in peaks:
        try:
            values.append(min(1.0, max(0.0, abs(float(p)))))
        except (TypeError, ValueError):
            values.append(0.0)
    mid = height / 2
    step = width / max(1, len(values) - 1) if len(values) > 1 else width
    top = [f"{i * step:.1f},{mid - v * mid:.1f}" for i, v in enumerate(values)]
    bottom = [f"{i * step:.1f},{mid + v * mid:.1f}" for i, v in reversed(list(enumerate(values)))]
    return "M" + " L".join(top + bottom) + " Z"


def takes_of(job: Job, sidecar: Mapping[str, Any] | None, *, draw: bool = True) -> list[TakeView]:
    """The job's takes in take order, each with its quality entry and whether it is the
    keeper (from the job's record, so the library rows know it without the sidecar); the
    waveforms only with `draw` (the library's rows show none)."""
    files = audio_files(job)
    entries = quality_entries(sidecar, [p.name for p in files])
    seeds = job.result.seeds
    keeper = job.result.keeper
    takes = []
    for n, (path, quality) in enumerate(zip(files, entries, strict=True), start=1):
        raw_warnings = quality.get("warnings") or ()
        warnings = tuple(str(w) for w in raw_warnings) if isinstance(raw_warnings, list) else ()
        findings = findings_of(quality)
        is_keeper = keeper is not None and path.name == keeper
        takes.append(
            TakeView(
                number=n,
                name=path.name,
                url=f"/songs/{job.id}/takes/{n}",
                mime=content_type(path),
                seed=seeds[n - 1] if n - 1 < len(seeds) else None,
                quality=quality,
                waveform=waveform_path(quality.get("peaks")) if draw else "",
                warnings=warnings,
                figures=figures_of(quality),
                verdict=verdict_of(quality, findings),
                findings=findings,
                keeper=is_keeper,
                keeper_by=job.result.keeper_by if is_keeper else None,
                marks=marks_of(quality),
                duration=_seconds_in(quality.get("duration")),
            )
        )
    return takes


def file_length(path: Path) -> float | None:
    """A take's length in seconds read from its own header (no decoding), or None."""
    try:
        import mutagen

        found = mutagen.File(str(path))
        length = getattr(getattr(found, "info", None), "length", None)
    except Exception:  # any unreadable file: the page shows the requested length instead
        return None
    return float(length) if isinstance(length, int | float) and length > 0 else None


@dataclass(frozen=True)
class LengthLook:
    """What `LengthCache.look` found for a job: its takes, the sidecar's signature, and the
    lengths measured before when the signature has not changed."""

    files: list[Path]
    stamp: tuple[Any, ...]
    known: list[float | None] | None
    has_sidecar: bool

    @property
    def needs_sidecar(self) -> bool:
        """True when the sidecar must be read (it changed since the lengths were measured)."""
        return self.known is None and self.has_sidecar


class LengthCache:
    """The measured length of each take of a job, for the library rows: from the sidecar's
    `quality` figures, else from the audio file's header.

    A page shows 25 rows; reading and parsing 25 sidecars (with their waveform peaks) for
    every page view would cost more than the page itself, so lengths are kept in memory
    and re-read only when the sidecar's size or modification time changes (one `stat`).
    Two steps, both blocking: `look` (the `stat`), then, once the caller has read the
    sidecars that `needs_sidecar` asks for, `measure`.
    """

    def __init__(self, limit: int = 5000) -> None:
        self.limit = limit
        self._known: dict[str, tuple[Any, list[float | None]]] = {}
        self._lock = threading.Lock()

    def look(self, job: Job, sidecar_path: Path | None) -> LengthLook:
        """The job's takes and the lengths known for them (blocking: a `stat`)."""
        files = audio_files(job)
        if not files:
            return LengthLook(files, (), [], False)
        try:
            info = sidecar_path.stat() if sidecar_path is not None else None
            side = (info.st_mtime_ns, info.st_size) if info is not None else None
        except OSError:
            side = None
        stamp = (side, tuple(str(p) for p in files))
        with self._lock:
            known = self._known.get(job.id)
        found = known[1] if known is not None and known[0] == stamp else None
        return LengthLook(files, stamp, found, side is not None)

    def measure(
        self, job: Job, look: LengthLook, sidecar: Mapping[str, Any] | None
    ) -> list[float | None]:
        """The lengths of `look`'s takes, from `sidecar` (read when `look.needs_sidecar`)
        or the files' headers (blocking), kept for the next look."""
        if look.known is not None:
            return look.known
        entries = quality_entries(
            sidecar if look.has_sidecar else None, [p.name for p in look.files]
        )
        found: list[float | None] = []
        for path, quality in zip(look.files, entries, strict=True):
            value = quality.get("duration")
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                found.append(float(value))
            else:
                found.append(file_length(path))
        with self._lock:
            self._known.pop(job.id, None)
            self._known[job.id] = (look.stamp, found)
            while len(self._known) > self.limit:
                self._known.pop(next(iter(self._known)))
        return found


def length_summary(
    lengths: Sequence[float | None], requested: float | None
) -> tuple[float | None, float | None, float | None]:
    """(shortest, longest) measured take and the requested length when it is worth showing
    as a hint: it differs from a measured take by more than 2 s and 10 %."""
    measured = [v for v in lengths if v is not None]
    if not measured:
        return None, None, None
    low, high = min(measured), max(measured)
    hint = None
    if requested is not None:
        off = max(abs(low - requested), abs(high - requested))
        if off > max(2.0, 0.1 * requested):
            hint = requested
    return low, high, hint


def generated_text(sidecar: Mapping[str, Any] | None) -> dict[str, str]:
    """What the model wrote itself (Simple mode's `generated`): lyrics, style, ... as text."""
    found = (sidecar or {}).get("generated")
    if isinstance(found, str):
        return {"lyrics": found}
    if isinstance(found, Mapping):
        return {str(k): str(v) for k, v in found.items() if isinstance(v, str | int | float)}
    return {}


@dataclass(frozen=True)
class UsageBar:
    day: str
    credits: int
    x: float
    y: float
    height: float


def usage_bars(
    days: Sequence[tuple[str, int]], *, width: int = 600, height: int = 120
) -> tuple[list[UsageBar], int]:
    """One bar per day scaled to the busiest day (and that day's credits, for the axis)."""
    peak = max((c for _, c in days), default=0)
    slot = width / max(1, len(days))
    bars = []
    for i, (day, credits) in enumerate(days):
        h = 0.0 if peak == 0 else (height - 4) * credits / peak
        bars.append(
            UsageBar(day, credits, round(i * slot + 1, 1), round(height - h, 1), round(h, 1))
        )
    return bars, peak
