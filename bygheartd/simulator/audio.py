"""Real audio for simulated takes, written with soundfile in the requested format under a
name derived from the generation parameters like the real server: chords in a key over a
beat at a tempo (the request's, else ones that follow the file name), so that a quality
check can measure them, and on demand with defects (see defects.py): cut short, cut off,
silent, a dropout, clipped, or not decodable at all.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import soundfile as sf
from numpy.typing import NDArray

from .defects import AudioPlan, parse_key

AUTO_DURATION_SECONDS = 30.0


class AudioFormat(NamedTuple):
    """How one requested `audio_format` is written: soundfile format, subtype, suffix."""

    sf_format: str
    subtype: str
    suffix: str


_FORMATS: dict[str, AudioFormat] = {
    "mp3": AudioFormat("MP3", "MPEG_LAYER_III", ".mp3"),
    "wav": AudioFormat("WAV", "PCM_16", ".wav"),
    "wav32": AudioFormat("WAV", "FLOAT", ".wav"),
    "flac": AudioFormat("FLAC", "PCM_16", ".flac"),
    "opus": AudioFormat("OGG", "OPUS", ".opus"),
    # libsndfile cannot encode AAC: the take is MP3 data under the .aac name the real
    # server uses, served as audio/mpeg like a real .aac (see docs/simulator.md).
    "aac": AudioFormat("MP3", "MPEG_LAYER_III", ".aac"),
}
_FALLBACK = _FORMATS["flac"]  # the real server saves unsupported formats as flac

_CONTENT_TYPES = {
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
}


def audio_format_for(requested: str | None) -> AudioFormat:
    return _FORMATS.get((requested or "mp3").strip().lower(), _FALLBACK)


def content_type_for(path: Path) -> str:
    """Like ACE-Step's /v1/audio: four known types, audio/mpeg for everything else."""
    return _CONTENT_TYPES.get(path.suffix.lower(), "audio/mpeg")


def output_name(params: dict[str, Any], seed: int, suffix: str) -> str:
    """sha256-based UUID over the parameters and seed: identical fixed-seed runs collide."""
    blob = json.dumps({"params": params, "seed": seed}, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()
    return f"{uuid.UUID(hex=digest[:32])}{suffix}"


def take_seconds(requested_duration: float | None, scale: float, minimum: float) -> float:
    """Requested length (auto: 30 s) times the scale (tests and demos may keep takes short)."""
    base = requested_duration if requested_duration and requested_duration > 0 else None
    return max(minimum, (base or AUTO_DURATION_SECONDS) * scale)


@dataclass(frozen=True)
class TakeMusic:
    """What one take plays: a chord progression in a key over a beat, and its defects."""

    bpm: float
    tonic: int  # pitch class, C = 0
    minor: bool
    defects: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        names = _MINOR_NAMES if self.minor else _MAJOR_NAMES
        return f"{names[self.tonic]} {'minor' if self.minor else 'major'}"


_MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
# I-IV-I-V in major; i-iv-i-V in minor (harmonic minor's major V, with the leading tone):
# (semitones above the tonic, minor triad). With the ostinato on the tonic triad above them
# they leave no doubt about the key, even in a few seconds.
_MAJOR_BARS = ((0, False), (5, False), (0, False), (7, False))
_MINOR_BARS = ((0, True), (5, True), (0, True), (7, False))
FADE_OUT_DB = 80.0  # a good take's ending fades this far, evenly in dB
CUT_SHORT_SHARE = 0.4  # a cut-short take is this share of its length
CLIP_DRIVE = 4.0  # a clipped take is driven this far past full scale, then clipped
PEAK = 0.5  # -6 dBFS: every good take is normalised to this peak


def music_for(
    name_seed: str,
    *,
    bpm: float | None = None,
    key: str | None = None,
    defects: tuple[str, ...] = (),
) -> TakeMusic:
    """The given tempo and key, or ones that follow the file name (80-140 BPM, any key)."""
    digest = hashlib.sha256(name_seed.encode()).digest()
    parsed = parse_key(key) if key else None
    tonic, minor = parsed if parsed else (digest[1] % 12, bool(digest[2] % 2))
    return TakeMusic(float(bpm) if bpm else float(80 + digest[0] % 61), tonic, minor, defects)


def _click(rate: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """One beat: a kick (a decaying 60 Hz sine) and a short noise burst on top."""
    n = round(0.12 * rate)
    t = np.arange(n) / rate
    kick = np.sin(2 * np.pi * 60 * t) * np.exp(-t / 0.05)
    noise = rng.standard_normal(n) * np.exp(-t / 0.008)
    return np.asarray(0.8 * kick + 0.5 * noise, dtype=np.float64)


def _cycle(music: TakeMusic, rate: int, name_seed: str) -> NDArray[np.float32]:
    """One turn of the progression (four bars), stereo, peaking at PEAK: the chords (with a
    bass), the ostinato and the beat. A take is this, over and over."""
    digest = hashlib.sha256(name_seed.encode()).digest()
    beat = 60.0 / music.bpm
    bar = max(4, round(4 * beat * rate))
    bars = _MINOR_BARS if music.minor else _MAJOR_BARS
    frames = bar * len(bars)
    tonic_hz = 220.0 * 2 ** (((music.tonic - 9) % 12) / 12)  # A3 .. G#4
    t = np.arange(bar) / rate
    edge = 0.01  # seconds of attack and release: no click where the chords change
    shape = np.minimum(1.0, np.minimum(t, bar / rate - t) / edge)
    pads = np.zeros(frames)
    bass = np.zeros(frames)
    for index, (offset, minor_chord) in enumerate(bars):
        root = tonic_hz * 2 ** (offset / 12)
        if offset >= 7:
            root /= 2  # keep the dominant in the tonic's octave
        span = slice(index * bar, (index + 1) * bar)
        for interval in (0, 3 if minor_chord else 4, 7):
            pads[span] += np.sin(2 * np.pi * root * 2 ** (interval / 12) * t) * shape
        bass[span] = np.sin(2 * np.pi * root / 2 * t) * shape
    # An ostinato over everything, one note a beat: the tonic triad (1-3-5-3) an octave up.
    melody = np.zeros(frames)
    drums = np.zeros(frames)
    triad = (0, 3 if music.minor else 4, 7, 3 if music.minor else 4)
    click = _click(rate, np.random.default_rng(int.from_bytes(digest[:4], "big")))
    starts = [round(n * bar / 4) for n in range(4 * len(bars))] + [frames]
    for number, (start, stop) in enumerate(itertools.pairwise(starts)):
        u = np.arange(stop - start) / rate
        note = np.minimum(1.0, u / edge) * np.exp(-u / beat)
        pitch = tonic_hz * 2 * 2 ** (triad[number % 4] / 12)
        melody[start:stop] = np.sin(2 * np.pi * pitch * u) * note
        piece = click[: frames - start] * (1.0 if number % 4 == 0 else 0.6)
        drums[start : start + piece.size] += piece
    left = 0.3 * pads + 0.4 * bass + 0.5 * melody + 0.8 * drums
    right = 0.25 * pads + 0.45 * bass + 0.4 * melody + 0.9 * drums
    data = np.stack([left, right], axis=1)
    return np.asarray(data * (PEAK / max(float(np.abs(data).max()), 1e-9)), dtype=np.float32)


def _render(music: TakeMusic, seconds: float, rate: int, name_seed: str) -> NDArray[np.float32]:
    """Stereo float samples: the music for `seconds`, a soft start, a faded end."""
    frames = max(1, round(seconds * rate))
    cycle = _cycle(music, rate, name_seed)
    data = np.tile(cycle, (math.ceil(frames / cycle.shape[0]), 1))[:frames]
    start = min(frames, round(0.01 * rate))
    data[:start] *= np.linspace(0.0, 1.0, start, dtype=np.float32)[:, None]
    if "cut_off" not in music.defects:  # fade out evenly in dB, down by FADE_OUT_DB
        fade = min(frames, round(min(3.0, max(0.15, 0.1 * seconds)) * rate))
        gain = 10 ** (-FADE_OUT_DB / 20 * np.linspace(0.0, 1.0, fade))
        data[frames - fade :] *= gain.astype(np.float32)[:, None]
    return data


def _dropout(data: NDArray[np.float32], rate: int) -> None:
    """Silence in the middle: 40 % of the take, at least 4 s, at most 60 %."""
    frames = data.shape[0]
    seconds = frames / rate
    gap = min(0.6 * seconds, max(0.4 * seconds, 4.0))
    start = round((seconds - gap) / 2 * rate)
    stop = start + round(gap * rate)
    ramp = max(1, round(0.005 * rate))
    data[start:stop] = 0.0
    data[max(0, start - ramp) : start] *= np.linspace(1, 0, min(ramp, start))[:, None]
    data[stop : stop + ramp] *= np.linspace(0, 1, data[stop : stop + ramp].shape[0])[:, None]


def synthesise(
    name_seed: str, seconds: float, sample_rate: int, music: TakeMusic | None = None
) -> NDArray[np.float32]:
    """A stereo take: chords in a key over a beat at a tempo, that the analysis libraries
    recognise, with the music's defects applied. Good takes start softly and fade out."""
    music = music or music_for(name_seed)
    if "cut_short" in music.defects:
        seconds = max(0.1, seconds * CUT_SHORT_SHARE)
    data = _render(music, seconds, sample_rate, name_seed)
    if "dropout" in music.defects:
        _dropout(data, sample_rate)
    if "clipped" in music.defects:
        data = np.clip(data * CLIP_DRIVE, -1.0, 1.0)
    if "silent" in music.defects:
        data[:] = 0.0
    return np.asarray(data, dtype=np.float32)


def undecodable_bytes(fmt: AudioFormat) -> bytes:
    """A file that passes for the format at a glance (its first bytes) but holds no audio:
    a client keeps it as a take, and nothing can decode it."""
    if fmt.sf_format == "WAV":
        # Its sizes agree with its length (4,108 after the RIFF header): a whole file, only
        # not audio (a `junk` chunk and no `fmt `), so it reaches the quality plugin.
        head = b"RIFF\x0c\x10\x00\x00WAVEjunk\x00\x10\x00\x00"
    elif fmt.sf_format == "FLAC":
        head = b"fLaC\x00\x00\x00\x22"
    elif fmt.sf_format == "OGG":
        head = b"OggS\x00\x02" + bytes(20) + b"\x01\x13OpusHead"
    else:  # MP3 (and the simulator's .aac): an empty ID3v2 tag, then nothing
        head = b"ID3\x04\x00\x00\x00\x00\x00\x00"
    return head + bytes(4096)


def write_take(
    directory: Path,
    file_name: str,
    fmt: AudioFormat,
    seconds: float,
    sample_rate: int,
    music: TakeMusic | None = None,
) -> Path:
    """Write atomically; a colliding name is overwritten, like the real server does."""
    rate = 48000 if fmt.subtype == "OPUS" else sample_rate  # Opus only speaks 48 kHz here
    target = directory / file_name
    partial = directory / f".{file_name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    if music is not None and "undecodable" in music.defects:
        partial.write_bytes(undecodable_bytes(fmt))
    else:
        data = synthesise(file_name, seconds, rate, music)
        with sf.SoundFile(
            partial, "w", samplerate=rate, channels=2, format=fmt.sf_format, subtype=fmt.subtype
        ) as handle:
            handle.write(data)
    os.replace(partial, target)
    return target


def take_music(
    plan: AudioPlan | None,
    take: int,
    name_seed: str,
    requested_bpm: float | None,
    requested_key: str | None,
) -> TakeMusic:
    """What take number `take` of a task plays: the plan's tempo, key and defects first,
    then the request's (or what the model wrote), then ones that follow the file name."""
    plan = plan or AudioPlan()
    return music_for(
        name_seed,
        bpm=plan.bpm or requested_bpm,
        key=plan.key or requested_key,
        defects=plan.defects_for(take),
    )
