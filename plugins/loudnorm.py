"""First-party plugin `loudnorm`: EBU R128 loudness normalisation with a true-peak ceiling.

Rewrites each file in its own format (atomically, keeping its tags) and reports the
measurements before and after in the sidecar. Needs the `loudnorm` extra.
"""

# mutagen is only partly typed: its constructors and tag methods have no annotations.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from mutagen.flac import FLAC
from mutagen.id3 import ID3, ID3NoHeaderError
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE
from numpy.typing import NDArray

from bygheartd import hookimpl
from bygheartd.jobs import Job

try:
    import pyloudnorm
    from scipy.signal import resample_poly  # type: ignore[import-untyped, unused-ignore]
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the loudnorm plugin needs pyloudnorm and scipy ({exc.name} is missing): "
        "pip install 'bygheartd[loudnorm]'"
    ) from exc

DEFAULTS: dict[str, Any] = {"target_lufs": -14.0, "ceiling_dbtp": -1.0}
MIN_SECONDS = 0.4  # pyloudnorm's gating block: shorter audio cannot be measured
LOSSY_SLACK_DB = 0.05  # re-encoding a lossy format may move peaks: re-check past this


def _settings(config: dict[str, Any]) -> tuple[float, float]:
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    settings = {**DEFAULTS, **config}
    return float(settings["target_lufs"]), float(settings["ceiling_dbtp"])


def integrated_loudness(data: NDArray[np.float64], rate: int) -> float:
    """EBU R128 integrated loudness in LUFS (-inf for silence)."""
    with warnings.catch_warnings():
        # pyloudnorm warns when samples reach full scale; we measure exactly such audio.
        warnings.filterwarnings("ignore", message="Possible clipped samples")
        return float(pyloudnorm.Meter(rate).integrated_loudness(data))


def true_peak_dbtp(data: NDArray[np.float64]) -> float:
    """True peak in dBTP, measured on a 4x oversampled signal (ITU-R BS.1770)."""
    peak = float(np.max(np.abs(resample_poly(data, 4, 1, axis=0)))) if data.size else 0.0
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def _read_tags(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".mp3":
        try:
            return ID3(path)
        except ID3NoHeaderError:
            return None
    if suffix == ".wav":
        return WAVE(path).tags
    if suffix == ".flac":
        flac: Any = FLAC(path)
        return (list(flac.tags or []), list(flac.pictures))
    if suffix in (".ogg", ".oga"):
        return list(OggVorbis(path).tags or [])
    return None


def _write_tags(path: Path, suffix: str, tags: Any) -> None:
    """Put the tags read from the original onto the rewritten file."""
    if not tags:
        return
    if suffix == ".mp3":
        tags.save(path, v2_version=4 if tags.version[1] == 4 else 3)
    elif suffix == ".wav":
        wav: Any = WAVE(path)
        wav.add_tags()
        for frame in tags.values():
            wav.tags.add(frame)
        wav.save(v2_version=4 if tags.version[1] == 4 else 3)
    elif suffix == ".flac":
        comments, pictures = tags
        flac: Any = FLAC(path)
        if flac.tags is None:
            flac.add_tags()
        flac.tags.clear()
        flac.tags.extend(comments)
        for picture in pictures:
            flac.add_picture(picture)
        flac.save()
    else:
        ogg: Any = OggVorbis(path)
        ogg.tags.clear()
        ogg.tags.extend(tags)
        ogg.save()


def _write_atomically(path: Path, data: NDArray[np.float64], rate: int, info: Any) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".loudnorm.tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        sf.write(tmp, data, rate, format=info.format, subtype=info.subtype)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _put_in_place(tmp: Path, path: Path, tags: Any) -> None:
    """The rewritten file, with the original's tags and mode, atomically in its place."""
    _write_tags(tmp, path.suffix.lower(), tags)
    shutil.copymode(path, tmp)  # mkstemp made it 0600: keep the original's mode
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # not every file system syncs directories
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def normalise_file(path: Path, target: float, ceiling: float) -> dict[str, Any]:
    """Normalise one file in place; returns its sidecar entry."""
    info = sf.info(str(path))
    data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    entry: dict[str, Any] = {"target": target, "ceiling": ceiling}
    if len(data) < MIN_SECONDS * rate:
        return {**entry, "warning": f"shorter than {MIN_SECONDS} s: not measured"}
    input_lufs = integrated_loudness(data, rate)
    if not math.isfinite(input_lufs):
        return {**entry, "warning": "silent: nothing to normalise"}
    gain_db = target - input_lufs
    peak = true_peak_dbtp(data) + gain_db
    limited = peak > ceiling
    if limited:
        gain_db -= peak - ceiling
    tags = _read_tags(path)
    out = data * 10 ** (gain_db / 20)
    tmp = _write_atomically(path, out, rate, info)
    try:
        written, _ = sf.read(str(tmp), dtype="float64", always_2d=True)
        peak_after = true_peak_dbtp(written)
        if peak_after > ceiling + LOSSY_SLACK_DB:  # a lossy codec pushed peaks up again
            limited = True
            out = out * 10 ** ((ceiling - LOSSY_SLACK_DB - peak_after) / 20)
            tmp.unlink()
            tmp = _write_atomically(path, out, rate, info)
            written, _ = sf.read(str(tmp), dtype="float64", always_2d=True)
            peak_after = true_peak_dbtp(written)
        _put_in_place(tmp, path, tags)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {
        **entry,
        "input_lufs": round(input_lufs, 2),
        "output_lufs": round(integrated_loudness(written, rate), 2),
        "true_peak_dbtp": round(peak_after, 2),
        "limited_by_ceiling": limited,
    }


_SUFFIXES = (".mp3", ".wav", ".flac", ".ogg", ".oga")
ALBUM_PENDING = "a track of an album: one album gain is applied when every track is done"


@hookimpl
def on_complete(job: Job, files: list[Path], config: dict[str, Any]) -> dict[str, Any]:
    """Normalise every readable audio file; measurements go to the sidecar, keyed by file.
    A track of an album is left as it is: the album gets one gain (`on_album_complete`)."""
    target, ceiling = _settings(config)
    measured: dict[str, Any] = {}
    for path in files:
        if path.suffix.lower() not in _SUFFIXES:
            continue
        if job.album is not None:
            measured[path.name] = {"target": target, "ceiling": ceiling, "album": ALBUM_PENDING}
            continue
        measured[path.name] = normalise_file(path, target, ceiling)
    return {"files": [], "sidecar": measured}


def _album_loudness(tracks: list[tuple[NDArray[np.float64], int]]) -> float:
    """EBU R128 album loudness: the integrated loudness of the tracks played one after the
    other (gated over all of them together). Tracks of different sample rates or channel
    counts cannot be joined: then the energy mean of their loudness, weighted by length."""
    if len({(rate, data.shape[1]) for data, rate in tracks}) == 1:
        joined = np.concatenate([data for data, _ in tracks])
        return integrated_loudness(joined, tracks[0][1])
    energy = sum(len(d) / r * 10 ** (integrated_loudness(d, r) / 10) for d, r in tracks)
    seconds = sum(len(d) / r for d, r in tracks)
    return 10 * math.log10(energy / seconds) if energy > 0 else -math.inf


@hookimpl
def on_album_complete(files: list[Path], config: dict[str, Any]) -> dict[str, Any]:
    """One gain for the whole album (EBU R128 album mode): the album's loudness is brought
    to the target and every track moves by the same amount, so the loudness steps between
    tracks stay; the peak ceiling lowers that one gain when any track would pass it."""
    target, ceiling = _settings(config)
    audio: list[tuple[Path, Any, NDArray[np.float64], int]] = []
    skipped: dict[str, str] = {}
    for path in files:
        if path.suffix.lower() not in _SUFFIXES:
            continue
        info = sf.info(str(path))
        data, rate = sf.read(str(path), dtype="float64", always_2d=True)
        if len(data) < MIN_SECONDS * rate:
            skipped[path.name] = f"shorter than {MIN_SECONDS} s: not measured"
            continue
        audio.append((path, info, data, rate))
    entry: dict[str, Any] = {"target": target, "ceiling": ceiling, "skipped": skipped}
    if not audio:
        return {"sidecar": {**entry, "warning": "no track could be measured"}}
    album_lufs = _album_loudness([(d, r) for _, _, d, r in audio])
    if not math.isfinite(album_lufs):
        return {"sidecar": {**entry, "warning": "silent: nothing to normalise"}}
    gain_db = target - album_lufs
    loudest_peak = max(true_peak_dbtp(d) for _, _, d, _ in audio) + gain_db
    limited = loudest_peak > ceiling
    if limited:
        gain_db -= loudest_peak - ceiling
    tracks: dict[str, Any] = {}
    for path, info, data, rate in audio:
        tags = _read_tags(path)
        tmp = _write_atomically(path, data * 10 ** (gain_db / 20), rate, info)
        try:
            _put_in_place(tmp, path, tags)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        written, _ = sf.read(str(path), dtype="float64", always_2d=True)
        tracks[path.name] = {
            "input_lufs": round(integrated_loudness(data, rate), 2),
            "output_lufs": round(integrated_loudness(written, rate), 2),
        }
    return {
        "sidecar": {
            **entry,
            "album_input_lufs": round(album_lufs, 2),
            "gain_db": round(gain_db, 2),
            "limited_by_ceiling": limited,
            "tracks": tracks,
        }
    }
