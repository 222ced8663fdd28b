"""First-party plugin `quality`: judges every take against its request, so that bad ones are
noticed (and can be made again) without anyone listening.

A generation can come back truncated, cut off mid-sound, silent, clipped, or at another tempo
or key than the one asked for, and nobody listens to every take the moment it lands. This
plugin decodes each take as downloaded (before `tags` or `loudnorm` touch it, when it runs
first as by default), records its figures (length against the requested one, peak,
integrated loudness (ITU-R BS.1770-4), share of silence and longest silent stretch, the level
of its last moments, clipping, tempo and key, a compact peak envelope for drawing a
waveform) and gives it a verdict: `"pass"`, or `"fail"` with its `findings`, each a
`{code, message}` (`cut_short`, `cut_off`, `silent`, `clipped`, `undecodable`, `off_tempo`,
`off_key`). Each finding is also a job warning, which `show`, MCP, the web page and the
sidecar carry.

Only numpy and soundfile (libsndfile: mp3, wav, flac, ogg, opus) are needed for everything
but tempo and key, so the plugin works with the base install; the K-weighting filters are
applied by FFT convolution. AAC/M4A takes are decoded with PyAV when it is installed
(`pip install 'bygheartd[aac]'`). Tempo and key are estimated with librosa
(`pip install 'bygheartd[analysis]'`; nothing is downloaded at run time): the tempo from
the onset strength's tempogram, the key from a constant-Q chromagram correlated with the
Krumhansl-Kessler key profiles. Without it they are not measured (`bpm` and `key` are
`null`, and `analysis` says why).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import os
import re
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs
import soundfile as sf
from numpy.typing import NDArray

from bygheartd import hookimpl
from bygheartd.jobs import Job

# Decoded audio: float32, one row per channel (channel-major, so each channel is contiguous).
Samples = NDArray[np.float32]

DEFAULTS: dict[str, Any] = {
    # A take shorter than this share of the requested duration is cut short (0: off).
    "min_duration_ratio": 0.8,
    # A take with more than this share of silence is mostly silent (1: off).
    "max_silence_ratio": 0.5,
    # A silent stretch longer than this inside a take (between sounds) is a dropout (0: off).
    "max_dropout_seconds": 3.0,
    # Windows whose level stays below this are silence.
    "silence_dbfs": -60.0,
    # Clipped samples (in runs of 3 or more at full scale) that make a finding (0: off).
    "max_clipped": 1,
    # How long the end of a take is that `cut_off` measures, in seconds (0: off)...
    "cut_off_seconds": 0.05,
    # ...and the level (dB against the take's median level) at or above which that end is
    # still "mid-sound": a natural ending has faded far below it.
    "cut_off_db": -20.0,
    # Tempo and key, with the `analysis` extra: measure them at all.
    "analysis": True,
    # Takes shorter than this are not analysed for tempo and key (too little to tell).
    "min_analysis_seconds": 5.0,
    # The measured tempo may differ from the requested one by this share.
    "tempo_tolerance": 0.06,
    # Double and half time do not count as the requested tempo.
    "strict_tempo": False,
    # The relative major/minor does not count as the requested key.
    "strict_key": False,
    # A key estimate weaker than this (correlation with its key profile) is not judged.
    "min_key_confidence": 0.5,
    # How many points the waveform envelope has.
    "peaks": 200,
}
# Every finding code, in the order findings are listed.
CODES = ("undecodable", "cut_short", "cut_off", "silent", "clipped", "off_tempo", "off_key")
SILENCE_WINDOW_SECONDS = 0.05
FULL_SCALE = 0.999  # -0.009 dBFS: PCM 16's largest value (32767/32768) counts as full scale
CLIP_RUN = 3  # consecutive samples at full scale: the usual test for a clipped waveform
# Trailing samples below this (-80 dBFS) are digital silence after the sound: `cut_off`
# measures the end of the sound, not of the file, so an abrupt stop followed by padding is
# still an abrupt stop.
TAIL_FLOOR = 1e-4
GATE_SECONDS = 0.4  # BS.1770 gating block
GATE_STEP = 0.1  # 75 % overlap
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
# The K-weighting filters' impulse response is over (below 1e-15) well within this.
K_RESPONSE_SECONDS = 0.25
FFT_BLOCK = 1 << 16
# Every audio suffix the servers and the simulator write (other files are not takes).
TAKE_SUFFIXES = frozenset({".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".aac", ".m4a"})

# Tempo and key: librosa's defaults (22.05 kHz mono, 512-sample hops for the onset envelope:
# tempi come in steps of about 2 % near 120 BPM), and 2048-sample hops for the chroma.
ANALYSIS_RATE = 22050
ONSET_HOP = 512
CHROMA_HOP = 2048
ANALYSIS_EXTRA = "pip install 'bygheartd[analysis]'"
ANALYSIS_INSTALLED = importlib.util.find_spec("librosa") is not None


def note() -> str:
    """One line on what the plugin judges, for `bygheartd plugins` to show beside it: tempo
    and key only with the `analysis` extra installed."""
    if ANALYSIS_INSTALLED:
        measured = f"tempo and key measured with librosa {_librosa_version()}"
        return "judges takes: " + ", ".join(CODES) + f"; {measured}"
    judged = ", ".join(c for c in CODES if c not in ("off_tempo", "off_key"))
    return f"judges takes: {judged}; tempo and key are not measured ({ANALYSIS_EXTRA})"


# Krumhansl-Kessler probe-tone profiles (Krumhansl 1990), tonic first.
MAJOR_PROFILE = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
MINOR_PROFILE = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
# Song-file spelling of each tonic: the usual key signatures (fewest accidentals).
MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
_NOTES = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_KEY = re.compile(
    r"^\s*([a-g])\s*(#|b|♯|♭|-?sharp|-?flat)?\s*(major|minor|maj|min|dur|moll|m|M)?\s*$",
    re.IGNORECASE,
)

_FLOATS = (
    "min_duration_ratio",
    "max_silence_ratio",
    "max_dropout_seconds",
    "silence_dbfs",
    "cut_off_seconds",
    "cut_off_db",
    "min_analysis_seconds",
    "tempo_tolerance",
    "min_key_confidence",
)
_BOOLS = ("analysis", "strict_tempo", "strict_key")


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    settings = {**DEFAULTS, **config}
    for key in _FLOATS:
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key} must be a number, not {value!r}")
        settings[key] = float(value)
    for key in _BOOLS:
        if not isinstance(settings[key], bool):
            raise ValueError(f"{key} must be true or false, not {settings[key]!r}")
    for key in ("min_duration_ratio", "max_silence_ratio", "min_key_confidence"):
        if not 0 <= settings[key] <= 1:
            raise ValueError(f"{key} must be between 0 and 1, not {config.get(key)!r}")
    if not 0 <= settings["tempo_tolerance"] < 0.5:
        raise ValueError(
            f"tempo_tolerance must be at least 0 and below 0.5, not {settings['tempo_tolerance']!r}"
        )
    for key in ("max_dropout_seconds", "cut_off_seconds", "min_analysis_seconds"):
        if settings[key] < 0:
            raise ValueError(f"{key} must be 0 or more, not {settings[key]!r}")
    for key in ("silence_dbfs", "cut_off_db"):
        if settings[key] >= 0:
            raise ValueError(f"{key} must be below 0, not {settings[key]!r}")
    for key in ("max_clipped", "peaks"):
        value = settings[key]
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not whole:
            raise ValueError(f"{key} must be a whole number, not {value!r}")
        settings[key] = int(value)
    if settings["max_clipped"] < 0:
        raise ValueError(f"max_clipped must be 0 or more, not {settings['max_clipped']!r}")
    if not 10 <= settings["peaks"] <= 2000:
        raise ValueError(f"peaks must be between 10 and 2000, not {settings['peaks']!r}")
    return settings


# -- loudness -------------------------------------------------------------------------------


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


def k_response(rate: int) -> NDArray[np.float64]:
    """The impulse response of BS.1770's K-weighting (shelf then high pass) at this rate,
    from the filters' frequency response; both are stable biquads whose responses are over
    long before K_RESPONSE_SECONDS (the high pass's slowest pole decays in ~4 ms)."""
    taps = max(64, round(K_RESPONSE_SECONDS * rate))
    size = 1 << math.ceil(math.log2(4 * taps))
    z = np.exp(-1j * np.pi * np.arange(size // 2 + 1) / (size // 2))  # e^{-jw}
    response = np.ones_like(z)
    for b, a in (
        _biquad("high_shelf", 4.0, 1 / math.sqrt(2), 1500.0, rate),
        _biquad("high_pass", 0.0, 0.5, 38.0, rate),
    ):
        response *= (b[0] + b[1] * z + b[2] * z**2) / (a[0] + a[1] * z + a[2] * z**2)
    return np.asarray(np.fft.irfft(response, n=size)[:taps], dtype=np.float64)


def k_weighted(channels: Samples, rate: int) -> Samples:
    """Each channel (rows) through the K-weighting: a causal linear convolution with its
    impulse response, by FFT in overlapping blocks (fast for takes of any length)."""
    count_channels, frames = channels.shape
    taps = k_response(rate)
    size = max(FFT_BLOCK, 1 << math.ceil(math.log2(2 * taps.size)))
    block = size - taps.size + 1
    count = max(1, math.ceil(frames / block))
    response = np.fft.rfft(taps, n=size).astype(np.complex64)
    out = np.empty((count_channels, count * block + taps.size - 1), dtype=np.float32)
    padded = np.zeros(count * block, dtype=np.float32)
    for row in range(count_channels):
        padded[:frames] = channels[row]
        blocks = padded.reshape(count, block)
        filtered = np.fft.irfft(np.fft.rfft(blocks, n=size, axis=1) * response, n=size, axis=1)
        heads = filtered[:, :block]
        tails = filtered[:, block : block + taps.size - 1]
        heads[1:, : taps.size - 1] += tails[:-1]
        out[row, : count * block] = heads.reshape(-1)
        out[row, count * block :] = tails[-1]
    return out[:, :frames]


def integrated_lufs(channels: Samples, rate: int) -> float | None:
    """Integrated loudness (ITU-R BS.1770-4, gated) in LUFS; None when silent or too short."""
    block = round(GATE_SECONDS * rate)
    step = round(GATE_STEP * rate)
    count_channels, frames = channels.shape
    if frames < block:
        return None
    weighted = k_weighted(channels, rate)
    # Channel weights: 1 for L, R, C (and mono); 1.41 for the surround pair of 5.1.
    weights = np.array(
        [1.41 if ch in (3, 4) and count_channels > 4 else 1.0 for ch in range(count_channels)]
    )
    starts = np.arange(0, frames - block + 1, step)
    if block == 4 * step:  # every usual rate: blocks are four 100 ms hops
        hops = frames // step
        energy = np.square(weighted[:, : hops * step]).reshape(count_channels, hops, step)
        per_hop = energy.sum(axis=2, dtype=np.float64)
        sums = per_hop[:, :-3] + per_hop[:, 1:-2] + per_hop[:, 2:-1] + per_hop[:, 3:]
        power = sums[:, : starts.size].T / block
    else:
        squares = np.zeros((count_channels, frames + 1))
        np.cumsum(np.square(weighted, dtype=np.float64), axis=1, out=squares[:, 1:])
        power = ((squares[:, starts + block] - squares[:, starts]) / block).T
    summed = power @ weights  # mean square per block, channels weighted
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


# -- silence, clipping, the end -------------------------------------------------------------


def window_rms(channels: Samples, rate: int) -> NDArray[np.float64]:
    """RMS of each 50 ms window (the loudest channel), the last partial window left out."""
    window = max(1, round(SILENCE_WINDOW_SECONDS * rate))
    frames = channels.shape[1]
    count = max(1, frames // window)
    usable = channels[:, : count * window] if frames >= window else channels
    windows = np.square(usable).reshape(channels.shape[0], count, -1)
    return np.asarray(np.sqrt(windows.mean(axis=2, dtype=np.float64)).max(axis=0))


def silence_ratio(channels: Samples, rate: int, threshold_dbfs: float) -> float:
    """The share of 50 ms windows whose RMS (loudest channel) stays below the threshold."""
    return float(np.mean(window_rms(channels, rate) < 10 ** (threshold_dbfs / 20)))


def longest_silence(silent: NDArray[np.bool_]) -> tuple[float, float]:
    """The longest run of silent 50 ms windows inside the take, between its first and its
    last sound (a quiet intro or a tail of silence is not a dropout): (seconds, where it
    starts in seconds); (0, 0) when there is none or no sound at all."""
    sound = np.flatnonzero(~silent)
    if sound.size == 0:
        return 0.0, 0.0
    inside = silent[sound[0] : sound[-1] + 1]
    if not inside.any():
        return 0.0, 0.0
    edges = np.diff(np.concatenate([[0], inside.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    longest = int(np.argmax(ends - starts))
    return (
        float(ends[longest] - starts[longest]) * SILENCE_WINDOW_SECONDS,
        float(starts[longest] + sound[0]) * SILENCE_WINDOW_SECONDS,
    )


def end_level_db(
    channels: Samples, loudest: Samples, rate: int, seconds: float, body_rms: float
) -> float | None:
    """The RMS (loudest channel) of the last `seconds` of sound, trailing digital silence
    left out, in dB against the take's median level; None without sound to measure.
    `loudest` is the largest absolute sample of each frame."""
    if body_rms <= 0 or seconds <= 0:
        return None
    loud = np.flatnonzero(loudest >= TAIL_FLOOR)
    if loud.size == 0:
        return None
    end = int(loud[-1]) + 1
    span = max(1, round(seconds * rate))
    if end < 2 * span:
        return None  # too short to have an ending of its own
    tail = channels[:, end - span : end]
    rms = float(np.sqrt(np.square(tail).mean(axis=1, dtype=np.float64)).max())
    return 20 * math.log10(rms / body_rms) if rms > 0 else None


def clipped_samples(magnitudes: Samples) -> int:
    """Samples in runs of CLIP_RUN or more at full scale (in any one channel), from each
    channel's absolute samples."""
    return clipped_runs(magnitudes)[0]


def clipped_runs(magnitudes: Samples) -> tuple[int, int | None]:
    """(clipped samples, the frame where the first clipped run starts, or None): where it
    is, so that a waveform can show it."""
    total = 0
    first: int | None = None
    for channel in magnitudes:
        full = channel >= FULL_SCALE
        if not full.any():
            continue
        edges = np.diff(np.concatenate([[0], full.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        lengths = ends - starts
        runs = starts[lengths >= CLIP_RUN]
        total += int(lengths[lengths >= CLIP_RUN].sum())
        if runs.size:
            first = int(runs[0]) if first is None else min(first, int(runs[0]))
    return total, first


def sound_end(loudest: Samples, rate: int) -> float | None:
    """Seconds to the end of the sound (trailing digital silence left out), or None."""
    loud = np.flatnonzero(loudest >= TAIL_FLOOR)
    return round((int(loud[-1]) + 1) / rate, 3) if loud.size else None


def peak_envelope(loudest: Samples, points: int) -> list[float]:
    """The largest absolute sample in each of `points` equal stretches, 0..1, 3 decimals."""
    frames = loudest.shape[0]
    if frames == 0:
        return []
    edges = np.linspace(0, frames, min(points, frames) + 1).astype(int)
    peaks = np.maximum.reduceat(loudest, edges[:-1])
    return [round(min(1.0, float(p)), 3) for p in peaks]


def _db(value: float) -> float | None:
    return round(20 * math.log10(value), 2) if value > 0 else None


# -- tempo and key --------------------------------------------------------------------------


def parse_key(value: Any) -> tuple[int, bool] | None:
    """(pitch class 0-11, minor) of a key as song files write it ("F# minor", "Bbm", "A");
    None for anything else (auto, empty, not a key)."""
    if not isinstance(value, str):
        return None
    m = _KEY.match(value)
    if m is None:
        return None
    note, accidental, mode = m.group(1).lower(), (m.group(2) or "").lower(), m.group(3) or ""
    shift = 1 if accidental in ("#", "♯", "sharp", "-sharp") else -1 if accidental else 0
    minor = mode == "m" or mode.lower() in ("minor", "min", "moll")
    return (_NOTES[note] + shift) % 12, minor


def key_name(tonic: int, minor: bool) -> str:
    """The song-file spelling: "A minor", "Bb major", "F# minor"."""
    return f"{(MINOR_NAMES if minor else MAJOR_NAMES)[tonic % 12]} {'minor' if minor else 'major'}"


def relative_key(tonic: int, minor: bool) -> tuple[int, bool]:
    """A minor's relative is C major (three semitones up); C major's is A minor."""
    return ((tonic + 3) % 12, False) if minor else ((tonic + 9) % 12, True)


def estimate_key(chroma: NDArray[np.float64]) -> tuple[int, bool, float]:
    """Krumhansl-Schmuckler: the key whose profile, rotated to each tonic, correlates best
    with the take's pitch-class distribution (12 values, C first). (tonic, minor, r)."""
    best = (0, False, -2.0)
    if float(np.ptp(chroma)) == 0:
        return 0, False, 0.0
    for minor, profile in ((False, MAJOR_PROFILE), (True, MINOR_PROFILE)):
        for tonic in range(12):
            rotated = np.roll(np.asarray(profile), tonic)
            r = float(np.corrcoef(chroma, rotated)[0, 1])
            if r > best[2]:
                best = (tonic, minor, r)
    return best


_ANALYSIS_LOCK = threading.Lock()


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def _numba_cache() -> None:
    """librosa's compiled parts (numba, `cache=True`) need a writable cache folder, or its
    import fails: beside the package (a virtual environment), else numba's own in the home
    folder. A hardened service has neither (read-only system, no home), so when the package
    folder is read-only and NUMBA_CACHE_DIR is unset, point it at a folder that is writable:
    the service's state (STATE_DIRECTORY), the user cache, or the temporary folder."""
    if os.environ.get("NUMBA_CACHE_DIR") or "numba" in sys.modules:
        return
    spec = importlib.util.find_spec("librosa")
    places = list(spec.submodule_search_locations or []) if spec else []
    if places and _writable(Path(places[0]) / "__pycache__"):
        return
    candidates = []
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]  # systemd: may list several
    if state:
        candidates.append(Path(state) / "numba-cache")
    candidates += [
        platformdirs.user_cache_path("bygheartd") / "numba",
        Path(tempfile.gettempdir()) / f"bygheartd-numba-{os.getuid()}",
    ]
    for folder in candidates:
        if _writable(folder):
            os.environ["NUMBA_CACHE_DIR"] = str(folder)
            return


def analyse(channels: Samples, rate: int) -> dict[str, Any]:
    """Tempo (BPM) and key of a decoded take with librosa: `bpm`, `key`, `key_confidence`.

    Mono at 22.05 kHz; the tempo is librosa's tempogram estimate over the onset strength
    (its prior centred on 120 BPM settles octave doubts), the key the Krumhansl-Kessler
    profile that correlates best with the summed constant-Q chroma.
    """
    mono = np.ascontiguousarray(channels.mean(axis=0), dtype=np.float32)
    # librosa (and what it imports) warns through `warnings` about short or odd signals and
    # deprecations; the figures are still right, and a warning must not fail the hook (the
    # filter state is process-wide: one analysis at a time).
    with _ANALYSIS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _numba_cache()
        import librosa  # optional: `pip install 'bygheartd[analysis]'`

        y = librosa.resample(mono, orig_sr=rate, target_sr=ANALYSIS_RATE, res_type="soxr_hq")
        onset = librosa.onset.onset_strength(y=y, sr=ANALYSIS_RATE, hop_length=ONSET_HOP)
        tempo = librosa.feature.tempo(onset_envelope=onset, sr=ANALYSIS_RATE, hop_length=ONSET_HOP)
        chroma = librosa.feature.chroma_cqt(y=y, sr=ANALYSIS_RATE, hop_length=CHROMA_HOP)
    bpm = float(np.asarray(tempo).reshape(-1)[0])
    profile = np.asarray(chroma, dtype=np.float64).sum(axis=1)
    tonic, minor, r = estimate_key(profile)
    return {
        "bpm": round(bpm, 1) if bpm > 0 else None,
        "key": key_name(tonic, minor) if r > 0 else None,
        "key_confidence": round(r, 3),
    }


def tempo_matches(measured: float, requested: float, tolerance: float, strict: bool) -> bool:
    """Within the tolerance of the requested tempo, or (unless strict) of double or half."""
    targets = (requested,) if strict else (requested, 2 * requested, requested / 2)
    return any(abs(measured / t - 1) <= tolerance for t in targets)


def key_matches(measured: tuple[int, bool], requested: tuple[int, bool], strict: bool) -> bool:
    """The same key, or (unless strict) its relative major/minor."""
    return measured == requested or (not strict and measured == relative_key(*requested))


# -- decoding -------------------------------------------------------------------------------


class UndecodableTake(Exception):
    """Neither libsndfile nor (when installed) PyAV can read the take."""


# What decodes as audio: the rates and channel counts a take can have (as the download's
# light check, bygheartd/api/audiocheck.py). A header that says 1 Hz decodes to nonsense
# (80,000 s for a 10 s take) and breaks every measurement.
MIN_RATE = 8_000
MAX_RATE = 384_000
MAX_CHANNELS = 8


def _decode_with_av(path: Path) -> tuple[Samples, int]:
    """AAC/M4A (and anything else FFmpeg reads) through PyAV, as float samples."""
    import av  # optional: `pip install 'bygheartd[aac]'`

    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise UndecodableTake("no audio stream in it")
        stream = container.streams.audio[0]
        if getattr(stream, "layout", None) is None:  # no codec FFmpeg can open for it
            raise UndecodableTake("FFmpeg finds no decoder for its audio stream")
        channels = stream.layout.nb_channels
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=stream.rate)
        chunks: list[NDArray[Any]] = []
        for frame in container.decode(stream):
            chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
        chunks.extend(out.to_ndarray() for out in resampler.resample(None))
    rate = int(stream.rate or 0)
    if not chunks or not rate:
        raise UndecodableTake("no audio could be decoded from it")
    planar = np.concatenate([c.reshape(channels, -1) for c in chunks], axis=1)
    return np.ascontiguousarray(planar, dtype=np.float32), rate


def decode(path: Path) -> tuple[Samples, int]:
    """Every sample of a take as float32, one row per channel, and its sample rate.

    libsndfile first (mp3, wav, flac, ogg, opus: the base install); then PyAV, when it is
    installed, for AAC/M4A, which libsndfile cannot read. A file with no samples at all is
    undecodable too.
    """
    try:
        frames, rate = sf.read(str(path), dtype="float32", always_2d=True)
        channels = np.ascontiguousarray(frames.T)
    except Exception as first:  # libsndfile's errors, and anything a broken header causes
        if importlib.util.find_spec("av") is None:
            hint = (
                "libsndfile reads mp3, wav, flac, ogg and opus: for AAC/M4A takes pip "
                "install 'bygheartd[aac]', or choose one of those as audio_format"
            )
            raise UndecodableTake(f"{_said(first)}; {hint}") from None
        try:
            channels, rate = _decode_with_av(path)
        except Exception as exc:  # FFmpeg's errors, and whatever a hostile file makes of PyAV
            raise UndecodableTake(
                f"{_said(first)}; FFmpeg cannot read it either: {_said(exc)}"
            ) from None
    if channels.shape[1] == 0 or not rate:
        raise UndecodableTake("it holds no audio samples")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise UndecodableTake(
            f"its header says a sample rate of {int(rate):,} Hz (audio is {MIN_RATE:,} to "
            f"{MAX_RATE:,} Hz)"
        )
    if not 1 <= channels.shape[0] <= MAX_CHANNELS:
        raise UndecodableTake(
            f"it has {channels.shape[0]} channels (audio has 1 to {MAX_CHANNELS})"
        )
    if not np.isfinite(channels).all():  # a float WAV can hold NaN: no figure would be a number
        raise UndecodableTake("it holds samples that are not numbers (NaN or infinity)")
    return channels, int(rate)


def _said(exc: BaseException) -> str:
    """An exception in one line of at most 300 characters, its type when it says nothing."""
    text = " ".join(str(exc).split())[:300]
    return text or type(exc).__name__


# -- one take -------------------------------------------------------------------------------


def measure(
    path: Path,
    requested: float | None,
    points: int,
    silence_dbfs: float,
    *,
    cut_off_seconds: float = DEFAULTS["cut_off_seconds"],
    analysis: bool = False,
    min_analysis_seconds: float = DEFAULTS["min_analysis_seconds"],
) -> dict[str, Any]:
    """The quality figures of one audio file, decoded in full; tempo and key with
    `analysis` (when librosa is installed and the take is long and loud enough)."""
    channels, rate = decode(path)
    duration = channels.shape[1] / rate
    magnitudes = np.abs(channels)
    loudest = magnitudes.max(axis=0)
    rms = window_rms(channels, rate)
    silent = rms < 10 ** (silence_dbfs / 20)
    gap, gap_at = longest_silence(silent)
    body = float(np.median(rms[~silent])) if (~silent).any() else 0.0
    end = end_level_db(channels, loudest, rate, cut_off_seconds, body)
    lufs = integrated_lufs(channels, rate)
    clipped, clipped_from = clipped_runs(magnitudes)
    entry: dict[str, Any] = {
        "duration": round(duration, 3),
        "requested_duration": requested,
        "sample_rate": rate,
        "channels": int(channels.shape[0]),
        "peak_dbfs": _db(float(loudest.max())),
        "lufs": round(lufs, 2) if lufs is not None else None,
        "silence_ratio": round(float(np.mean(silent)), 3),
        "longest_silence": round(gap, 2),
        "longest_silence_at": round(gap_at, 2),
        "end_level_db": round(end, 1) if end is not None else None,
        "sound_end": sound_end(loudest, rate),
        "clipped": clipped,
        "clipped_at": round(clipped_from / rate, 3) if clipped_from is not None else None,
        "bpm": None,
        "key": None,
        "key_confidence": None,
        "analysis": _analysis_state(analysis, duration, body, min_analysis_seconds),
        "peaks": peak_envelope(loudest, points),
    }
    if entry["analysis"].startswith("librosa"):
        try:
            entry.update(analyse(channels, rate))
        except Exception as exc:  # the other figures and findings stand without tempo and key
            entry["analysis"] = f"failed: {' '.join(str(exc).split())[:200] or type(exc).__name__}"
    return entry


def _analysis_state(wanted: bool, duration: float, body: float, min_seconds: float) -> str:
    """How tempo and key are measured ("librosa X.Y"), or why they are not."""
    if not wanted:
        return "off"
    if not ANALYSIS_INSTALLED:
        return f"not installed ({ANALYSIS_EXTRA})"
    if body <= 0:
        return "silent"
    if duration < min_seconds:
        return f"too short (under {min_seconds:g} s)"
    return f"librosa {_librosa_version()}"


def _librosa_version() -> str:
    try:
        return importlib.metadata.version("librosa")
    except importlib.metadata.PackageNotFoundError:  # a source tree on the path
        return "(version unknown)"


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def findings(name: str, entry: dict[str, Any], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """What is wrong with one measured take, judged against its request: `{code, message}`
    each, the message naming the file and saying what to do about it, and where a finding
    has a place in the take, `at` (and `until`): seconds from its start, for a waveform."""
    found: list[dict[str, Any]] = []

    def add(
        code: str, message: str, where: float | None = None, until: float | None = None
    ) -> None:
        finding: dict[str, Any] = {"code": code, "message": message}
        if where is not None:
            finding["at"] = round(max(0.0, where), 3)
            if until is not None:
                finding["until"] = round(until, 3)
        found.append(finding)

    requested = entry["requested_duration"]
    ratio = settings["min_duration_ratio"]
    if requested and ratio and entry["duration"] < ratio * requested:
        add(
            "cut_short",
            f"{name} is {entry['duration']:.1f} s long, "
            f"{entry['duration'] / requested:.0%} of the requested {requested:g} s: "
            "the generation may have been cut short; listen to it, and retry the job if so",
            entry["duration"],
        )
    end, limit = entry["end_level_db"], settings["cut_off_db"]
    if settings["cut_off_seconds"] and end is not None and end >= limit:
        add(
            "cut_off",
            f"{name} ends abruptly: its last {settings['cut_off_seconds'] * 1000:.0f} ms of "
            f"sound are at {end:.0f} dB against its median level (a natural ending fades "
            f"below {limit:g} dB): it may have been cut off mid-sound; listen to its end, and "
            "retry the job if so",
            *_ending(entry, settings["cut_off_seconds"]),
        )
    dbfs = settings["silence_dbfs"]
    if entry["silence_ratio"] > settings["max_silence_ratio"]:
        add(
            "silent",
            f"{name} is {entry['silence_ratio']:.0%} silence (below {dbfs:g} dBFS): listen "
            "to it, and retry the job if it is empty",
        )
    elif (
        settings["max_dropout_seconds"]
        and entry["longest_silence"] > settings["max_dropout_seconds"]
    ):
        add(
            "silent",
            f"{name} drops out: {entry['longest_silence']:.1f} s of silence from "
            f"{_clock(entry['longest_silence_at'])} (below {dbfs:g} dBFS, longer than "
            f"{settings['max_dropout_seconds']:g} s): listen to it, and retry the job if so",
            entry["longest_silence_at"],
            entry["longest_silence_at"] + entry["longest_silence"],
        )
    clip_limit = int(settings["max_clipped"])
    if clip_limit and entry["clipped"] >= clip_limit:
        add(
            "clipped",
            f"{name} is clipped ({entry['clipped']} samples at full scale): "
            "retry the job, or lower the loudness before mastering",
            entry.get("clipped_at"),
        )
    bpm, wanted_bpm = entry["bpm"], entry.get("requested_bpm")
    if bpm and wanted_bpm:
        tolerance, strict = settings["tempo_tolerance"], settings["strict_tempo"]
        if not tempo_matches(bpm, wanted_bpm, tolerance, strict):
            allowed = "" if strict else "; double or half time would do"
            add(
                "off_tempo",
                f"{name} is at about {bpm:g} BPM, not the requested {wanted_bpm:g} "
                f"(within {tolerance:.0%}{allowed}): listen to it, and retry the job if so",
            )
    measured_key, wanted_key = parse_key(entry["key"]), parse_key(entry.get("requested_key"))
    confident = (entry["key_confidence"] or 0) >= settings["min_key_confidence"]
    if measured_key and wanted_key and confident:
        strict = settings["strict_key"]
        if not key_matches(measured_key, wanted_key, strict):
            also = "" if strict else f" or its relative {key_name(*relative_key(*wanted_key))}"
            add(
                "off_key",
                f"{name} is in {entry['key']}, not the requested {key_name(*wanted_key)}{also}: "
                "listen to it, and retry the job if so",
            )
    return found


def _ending(entry: dict[str, Any], seconds: float) -> tuple[float | None, float | None]:
    """Where the abrupt end is: the last `seconds` of sound."""
    end = entry.get("sound_end")
    return (end - seconds, end) if isinstance(end, int | float) else (None, None)


def problems(name: str, entry: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The job warnings one take's findings make: `quality: ` and the message."""
    return [f"quality: {f['message']}" for f in findings(name, entry, settings)]


def _requested_duration(job: Job) -> float | None:
    value = job.request.get("duration")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _requested_bpm(job: Job) -> float | None:
    value = job.request.get("bpm")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _requested_key(job: Job) -> str | None:
    parsed = parse_key(job.request.get("key"))
    return key_name(*parsed) if parsed else None


def judge(
    path: Path, number: int, job: Job, settings: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One take's sidecar entry (figures, verdict, findings) and its findings."""
    try:
        entry = measure(
            path,
            _requested_duration(job),
            settings["peaks"],
            settings["silence_dbfs"],
            cut_off_seconds=settings["cut_off_seconds"],
            analysis=settings["analysis"],
            min_analysis_seconds=settings["min_analysis_seconds"],
        )
    except UndecodableTake as exc:
        found: list[dict[str, Any]] = [
            {"code": "undecodable", "message": f"cannot decode {path.name}: {exc}"}
        ]
        return {"take": number, "error": f"cannot decode: {exc}", "verdict": "fail"}, found
    except Exception as exc:  # never an exception out of the plugin for what a file holds
        said = f"{type(exc).__name__}: {_said(exc)}"
        found = [{"code": "undecodable", "message": f"cannot measure {path.name}: {said}"}]
        return {"take": number, "error": f"cannot measure: {said}", "verdict": "fail"}, found
    entry = {"take": number, **entry}
    entry["requested_bpm"] = _requested_bpm(job)
    entry["requested_key"] = _requested_key(job)
    found = findings(path.name, entry, settings)
    entry["verdict"] = "fail" if found else "pass"
    return entry, found


@hookimpl
def on_complete(job: Job, files: list[Path], config: dict[str, Any]) -> dict[str, Any]:
    """Measure and judge each take: figures, verdict and findings go to the sidecar by file
    name (under `quality`), every finding to the job's warnings too."""
    settings = _settings(config)
    figures: dict[str, Any] = {}
    warnings_: list[str] = []
    takes = [f for f in files if f.suffix.lower() in TAKE_SUFFIXES]
    # After a retake only its takes are judged: they keep their number in the job (3, 4).
    numbers = {f.path.name: n for n, f in enumerate(job.takes(), start=1)}
    for position, path in enumerate(takes, start=1):
        entry, found = judge(path, numbers.get(path.name, position), job, settings)
        entry["findings"] = found
        entry["warnings"] = [f"quality: {f['message']}" for f in found]
        figures[path.name] = entry
        warnings_.extend(entry["warnings"])
    return {"files": [], "sidecar": figures, "warnings": warnings_}
