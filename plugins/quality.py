"""First-party plugin `quality`: measures every take so that bad ones are noticed at once.

A generation can come back truncated, silent or clipped, and nobody listens to every take
the moment it lands. This plugin decodes each take as downloaded (before `tags` or
`loudnorm` touch it, when it runs first as by default) and records its length against the
requested one, peak, integrated loudness (ITU-R BS.1770-4), share of silence, clipping and a
compact peak envelope for drawing a waveform. A take much shorter than requested, mostly
silent or clipped gets a job warning, which `show`, MCP, the web page and the sidecar carry.

Only numpy and soundfile (libsndfile: mp3, wav, flac, ogg, opus) are needed, so the plugin
works with the base install; the K-weighting filters are applied in the frequency domain.
AAC/M4A takes are decoded with PyAV when it is installed (`pip install 'bygheartd[aac]'`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from numpy.typing import NDArray

from bygheartd import hookimpl
from bygheartd.jobs import Job

DEFAULTS: dict[str, Any] = {
    # A take shorter than this share of the requested duration is "much shorter" (0: off).
    "min_duration_ratio": 0.8,
    # A take with more than this share of silence is "mostly silent" (1: off).
    "max_silence_ratio": 0.5,
    # Windows whose level stays below this are silence.
    "silence_dbfs": -60.0,
    # Clipped samples (in runs of 3 or more at full scale) that make a warning (0: off).
    "max_clipped": 1,
    # How many points the waveform envelope has.
    "peaks": 200,
}
SILENCE_WINDOW_SECONDS = 0.05
FULL_SCALE = 0.999  # -0.009 dBFS: PCM 16's largest value (32767/32768) counts as full scale
CLIP_RUN = 3  # consecutive samples at full scale: the usual test for a clipped waveform
GATE_SECONDS = 0.4  # BS.1770 gating block
GATE_STEP = 0.1  # 75 % overlap
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
# Every audio suffix the servers and the simulator write (other files are not takes).
TAKE_SUFFIXES = frozenset({".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".aac", ".m4a"})


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    settings = {**DEFAULTS, **config}
    for key in ("min_duration_ratio", "max_silence_ratio"):
        value = float(settings[key])
        if not 0 <= value <= 1:
            raise ValueError(f"{key} must be between 0 and 1, not {settings[key]!r}")
        settings[key] = value
    settings["silence_dbfs"] = float(settings["silence_dbfs"])
    if settings["silence_dbfs"] >= 0:
        raise ValueError(f"silence_dbfs must be below 0, not {settings['silence_dbfs']!r}")
    if int(settings["max_clipped"]) < 0:
        raise ValueError(f"max_clipped must be 0 or more, not {settings['max_clipped']!r}")
    if not 10 <= int(settings["peaks"]) <= 2000:
        raise ValueError(f"peaks must be between 10 and 2000, not {settings['peaks']!r}")
    return settings


# -- measurements ---------------------------------------------------------------------------


def _biquad(kind: str, gain_db: float, q: float, fc: float, rate: int) -> tuple[Any, Any]:
    """RBJ cookbook coefficients as BS.1770 uses them (the same as pyloudnorm's)."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * fc / rate
    alpha = math.sin(w0) / (2 * q)
    cos = math.cos(w0)
    if kind == "high_shelf":
        sq = 2 * math.sqrt(a) * alpha
        b = [
            a * ((a + 1) + (a - 1) * cos + sq),
            -2 * a * ((a - 1) + (a + 1) * cos),
            a * ((a + 1) + (a - 1) * cos - sq),
        ]
        den = [
            (a + 1) - (a - 1) * cos + sq,
            2 * ((a - 1) - (a + 1) * cos),
            (a + 1) - (a - 1) * cos - sq,
        ]
    else:  # high pass
        b = [(1 + cos) / 2, -(1 + cos), (1 + cos) / 2]
        den = [1 + alpha, -2 * cos, 1 - alpha]
    return np.array(b) / den[0], np.array(den) / den[0]


def k_weighted(data: NDArray[np.float64], rate: int) -> NDArray[np.float64]:
    """The signal through BS.1770's K-weighting (shelf then high pass), per channel.

    Filtering by the filters' frequency response over a zero-padded FFT: both are stable
    biquads whose impulse responses die out within a fraction of a second, so a second of
    padding makes the circular convolution equal to the causal one to far below 0.01 LU.
    """
    frames = data.shape[0]
    size = 1 << max(1, math.ceil(math.log2(frames + rate)))
    z = np.exp(-1j * np.pi * np.arange(size // 2 + 1) / (size // 2))  # e^{-jw}
    response = np.ones_like(z)
    for b, a in (
        _biquad("high_shelf", 4.0, 1 / math.sqrt(2), 1500.0, rate),
        _biquad("high_pass", 0.0, 0.5, 38.0, rate),
    ):
        response *= (b[0] + b[1] * z + b[2] * z**2) / (a[0] + a[1] * z + a[2] * z**2)
    spectrum = np.fft.rfft(data, n=size, axis=0) * response[:, None]
    return np.asarray(np.fft.irfft(spectrum, n=size, axis=0)[:frames], dtype=np.float64)


def integrated_lufs(data: NDArray[np.float64], rate: int) -> float | None:
    """Integrated loudness (ITU-R BS.1770-4, gated) in LUFS; None when silent or too short."""
    block = round(GATE_SECONDS * rate)
    step = round(GATE_STEP * rate)
    if data.shape[0] < block:
        return None
    weighted = k_weighted(data, rate)
    # Channel weights: 1 for L, R, C (and mono); 1.41 for the surround pair of 5.1.
    weights = np.array(
        [1.41 if ch in (3, 4) and data.shape[1] > 4 else 1.0 for ch in range(data.shape[1])]
    )
    squares = np.concatenate([np.zeros((1, data.shape[1])), np.cumsum(weighted**2, axis=0)])
    starts = np.arange(0, data.shape[0] - block + 1, step)
    power = (squares[starts + block] - squares[starts]) / block  # mean square per block
    summed = power @ weights
    with np.errstate(divide="ignore"):
        loudness = -0.691 + 10 * np.log10(summed)
    kept = summed[loudness > ABSOLUTE_GATE_LUFS]
    if kept.size == 0:
        return None
    relative = -0.691 + 10 * math.log10(float(kept.mean())) + RELATIVE_GATE_LU
    with np.errstate(divide="ignore"):
        gated = summed[(loudness > ABSOLUTE_GATE_LUFS) & (loudness > relative)]
    if gated.size == 0:
        return None
    return -0.691 + 10 * math.log10(float(gated.mean()))


def silence_ratio(data: NDArray[np.float64], rate: int, threshold_dbfs: float) -> float:
    """The share of 50 ms windows whose RMS (loudest channel) stays below the threshold."""
    window = max(1, round(SILENCE_WINDOW_SECONDS * rate))
    count = max(1, data.shape[0] // window)
    usable = data[: count * window] if data.shape[0] >= window else data
    frames = usable.reshape(count, -1, data.shape[1])
    rms = np.sqrt(np.mean(frames**2, axis=1)).max(axis=1)
    limit = 10 ** (threshold_dbfs / 20)
    return float(np.mean(rms < limit))


def clipped_samples(data: NDArray[np.float64]) -> int:
    """Samples in runs of CLIP_RUN or more at full scale (in any one channel)."""
    total = 0
    for channel in data.T:
        full = np.abs(channel) >= FULL_SCALE
        if not full.any():
            continue
        edges = np.diff(np.concatenate([[0], full.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        lengths = ends - starts
        total += int(lengths[lengths >= CLIP_RUN].sum())
    return total


def peak_envelope(data: NDArray[np.float64], points: int) -> list[float]:
    """The largest absolute sample in each of `points` equal stretches, 0..1, 3 decimals."""
    frames = data.shape[0]
    if frames == 0:
        return []
    loudest = np.abs(data).max(axis=1)
    edges = np.linspace(0, frames, min(points, frames) + 1).astype(int)
    peaks = np.maximum.reduceat(loudest, edges[:-1])
    return [round(min(1.0, float(p)), 3) for p in peaks]


def _db(value: float) -> float | None:
    return round(20 * math.log10(value), 2) if value > 0 else None


class UndecodableTake(Exception):
    """Neither libsndfile nor (when installed) PyAV can read the take."""


def _decode_with_av(path: Path) -> tuple[NDArray[np.float64], int]:
    """AAC/M4A (and anything else FFmpeg reads) through PyAV, as float samples."""
    import av  # optional: `pip install 'bygheartd[aac]'`

    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise UndecodableTake("no audio stream in it")
        stream = container.streams.audio[0]
        channels = stream.layout.nb_channels
        resampler = av.AudioResampler(format="flt", layout=stream.layout, rate=stream.rate)
        chunks: list[NDArray[Any]] = []
        for frame in container.decode(stream):
            chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
        chunks.extend(out.to_ndarray() for out in resampler.resample(None))
    rate = int(stream.rate or 0)
    if not chunks or not rate:
        raise UndecodableTake("no audio could be decoded from it")
    packed = np.concatenate([c.reshape(-1) for c in chunks]).astype(np.float64)
    return packed.reshape(-1, channels), rate


def decode(path: Path) -> tuple[NDArray[np.float64], int]:
    """Every sample of a take as float64 frames x channels, and its sample rate.

    libsndfile first (mp3, wav, flac, ogg, opus: the base install); then PyAV, when it is
    installed, for AAC/M4A, which libsndfile cannot read.
    """
    try:
        data, rate = sf.read(str(path), dtype="float64", always_2d=True)
        return data, int(rate)
    except (sf.LibsndfileError, RuntimeError) as first:
        try:
            import av
        except ImportError:
            raise UndecodableTake(
                f"{first}; libsndfile reads mp3, wav, flac, ogg and opus: for AAC/M4A takes "
                "pip install 'bygheartd[aac]', or choose one of those as audio_format"
            ) from None
        try:
            return _decode_with_av(path)
        except (av.FFmpegError, ValueError) as exc:
            raise UndecodableTake(f"{first}; FFmpeg cannot read it either: {exc}") from None


def measure(
    path: Path, requested: float | None, points: int, silence_dbfs: float
) -> dict[str, Any]:
    """The quality figures of one audio file, decoded in full."""
    data, rate = decode(path)
    duration = data.shape[0] / rate if rate else 0.0
    lufs = integrated_lufs(data, rate)
    return {
        "duration": round(duration, 3),
        "requested_duration": requested,
        "sample_rate": int(rate),
        "channels": int(data.shape[1]),
        "peak_dbfs": _db(float(np.abs(data).max())) if data.size else None,
        "lufs": round(lufs, 2) if lufs is not None else None,
        "silence_ratio": round(silence_ratio(data, rate, silence_dbfs), 3) if data.size else 1.0,
        "clipped": clipped_samples(data),
        "peaks": peak_envelope(data, points),
    }


def problems(name: str, entry: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The warnings one take's figures call for, each saying what to do about it."""
    found = []
    requested = entry["requested_duration"]
    ratio = settings["min_duration_ratio"]
    if requested and ratio and entry["duration"] < ratio * requested:
        found.append(
            f"quality: {name} is {entry['duration']:.1f} s long, "
            f"{entry['duration'] / requested:.0%} of the requested {requested:g} s: "
            "the generation may have been cut short; listen to it, and retry the job if so"
        )
    if entry["silence_ratio"] > settings["max_silence_ratio"]:
        found.append(
            f"quality: {name} is {entry['silence_ratio']:.0%} silence "
            f"(below {settings['silence_dbfs']:g} dBFS): listen to it, and retry the job if "
            "it is empty"
        )
    limit = int(settings["max_clipped"])
    if limit and entry["clipped"] >= limit:
        found.append(
            f"quality: {name} is clipped ({entry['clipped']} samples at full scale): "
            "retry the job, or lower the loudness before mastering"
        )
    return found


def _requested_duration(job: Job) -> float | None:
    value = job.request.get("duration")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


@hookimpl
def on_complete(job: Job, files: list[Path], config: dict[str, Any]) -> dict[str, Any]:
    """Measure each take; figures go to the sidecar by file name, problems to the warnings."""
    settings = _settings(config)
    requested = _requested_duration(job)
    figures: dict[str, Any] = {}
    warnings: list[str] = []
    takes = [f for f in files if f.suffix.lower() in TAKE_SUFFIXES]
    for number, path in enumerate(takes, start=1):
        try:
            entry = measure(path, requested, int(settings["peaks"]), settings["silence_dbfs"])
        except UndecodableTake as exc:
            warning = f"quality: cannot decode {path.name}: {exc}"
            figures[path.name] = {"take": number, "error": f"cannot decode: {exc}"}
            figures[path.name]["warnings"] = [warning]
            warnings.append(warning)
            continue
        found = problems(path.name, entry, settings)
        figures[path.name] = {"take": number, **entry, "warnings": found}
        warnings.extend(found)
    return {"files": [], "sidecar": figures, "warnings": warnings}
