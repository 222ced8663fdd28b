"""Real audio for simulated takes: a short synthesised chord written with soundfile in the
requested format, under a name derived from the generation parameters like the real server.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import soundfile as sf

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
    """Requested length (auto: 30 s) scaled down, so tests and demos stay fast."""
    base = requested_duration if requested_duration and requested_duration > 0 else None
    return max(minimum, (base or AUTO_DURATION_SECONDS) * scale)


def synthesise(name_seed: str, seconds: float, sample_rate: int) -> np.ndarray[Any, Any]:
    """A stereo triad with soft edges; the chord and voicing follow the file name."""
    digest = hashlib.sha256(name_seed.encode()).digest()
    root = 110.0 * 2 ** (digest[0] % 24 / 12)
    third = 2 ** ((3 if digest[1] % 2 else 4) / 12)
    frames = max(1, round(seconds * sample_rate))
    t = np.arange(frames, dtype=np.float64) / sample_rate
    chord = sum(np.sin(2 * np.pi * root * ratio * t) for ratio in (1.0, third, 1.5))
    pulse = 0.6 + 0.4 * np.sin(2 * np.pi * (1 + digest[2] % 3) * t) ** 2
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05 + 1e-3)
    mono = 0.2 * chord * pulse * fade
    left = mono
    right = (
        0.2
        * sum(np.sin(2 * np.pi * root * ratio * 1.003 * t) for ratio in (1.0, third, 1.5))
        * pulse
        * fade
    )
    return np.stack([left, right], axis=1).astype(np.float32)


def write_take(
    directory: Path,
    file_name: str,
    fmt: AudioFormat,
    seconds: float,
    sample_rate: int,
) -> Path:
    """Write atomically; a colliding name is overwritten, like the real server does."""
    rate = 48000 if fmt.subtype == "OPUS" else sample_rate  # Opus only speaks 48 kHz here
    data = synthesise(file_name, seconds, rate)
    target = directory / file_name
    partial = directory / f".{file_name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    with sf.SoundFile(
        partial, "w", samplerate=rate, channels=2, format=fmt.sf_format, subtype=fmt.subtype
    ) as handle:
        handle.write(data)
    os.replace(partial, target)
    return target
