"""Builders for the plugin tests: job snapshots, real audio files, plugin folders, hosts of
first-party plugins."""

from __future__ import annotations

import base64
import hashlib
import textwrap
import tomllib
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from bygheartd.hooks.host import PluginHost, PluginSettings
from bygheartd.jobs import Job, JobResult, JobStatus

FIXTURES = Path(__file__).parent

FORMATS = {
    ".mp3": ("MP3", "MPEG_LAYER_III"),
    ".flac": ("FLAC", "PCM_16"),
    ".wav": ("WAV", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
}


def make_job(**changes: Any) -> Job:
    """A job snapshot as the engine hands it to plugins (status `processing`)."""
    now = datetime(2025, 5, 17, 12, 30, tzinfo=UTC)
    values: dict[str, Any] = {
        "id": "01JVX3K9TESTJOB",
        "status": JobStatus.PROCESSING,
        "title": "Midnight God Mode",
        "model": "bygheart-studio-pro",
        "request": {
            "title": "Midnight God Mode",
            "style": "dark dance pop, female lead vocal, stadium anthem",
            "lyrics": "[Verse]\nI got a new face in the rearview",
            "takes": 2,
        },
        "created_at": now,
        "updated_at": now,
        "task_id": "task-123",
        "credits": 4,
        "base_name": "midnight-god-mode",
        "result": {"outputs": [{"file": "/a.mp3", "seed": "42"}, {"file": "/b.mp3", "seed": "43"}]},
    }
    values.update(changes)
    values["result"] = JobResult.from_stored(values["result"])  # as the store reads it
    return Job(**values)


def write_audio(
    path: Path,
    *,
    seconds: float = 2.0,
    rate: int = 44100,
    amplitude: float = 0.1,
    channels: int = 2,
    signal: str = "tone",
) -> Path:
    """Write real audio in the format the suffix names; `signal` 'tone' or 'clicks'."""
    t = np.arange(int(seconds * rate)) / rate
    if signal == "clicks":  # high crest factor: loud peaks, little energy
        mono = np.zeros_like(t)
        mono[:: rate // 8] = 1.0
        mono = np.convolve(mono, np.hanning(32), mode="same") * amplitude
    else:
        mono = amplitude * np.sin(2 * np.pi * 440 * t) + amplitude * 0.3 * np.sin(
            2 * np.pi * 1320 * t
        )
    data = np.repeat(mono[:, None], channels, axis=1)
    fmt, subtype = FORMATS[path.suffix.lower()]
    sf.write(path, data, rate, format=fmt, subtype=subtype)
    return path


def plugin_folder(root: Path, **sources: str) -> Path:
    """A folder of `*.py` plugins, one per keyword (name = source text, dedented)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return root


def first_party(enabled: list[str], **tables: dict[str, Any]) -> PluginHost:
    host = PluginHost.load(PluginSettings(enabled=enabled, tables=tables, load_env=None))
    assert host.active == enabled
    return host


def build_wheel(source: Path, out: Path) -> Path:
    """Build a pure-Python wheel of `source` (a pyproject with `py-modules`) with the stdlib.

    The test machines have no `wheel` package, and a wheel is only a zip with a dist-info
    folder; pip then installs it like any other.
    """
    pyproject = tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))
    project = pyproject["project"]
    name, version = project["name"], project["version"]
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{module}.py": (source / f"{module}.py").read_bytes()
        for module in pyproject["tool"]["setuptools"]["py-modules"]
    }
    entry_points = "".join(
        f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in items.items())
        for group, items in project.get("entry-points", {}).items()
    )
    files[f"{dist}.dist-info/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        f"Summary: {project.get('description', '')}\n"
    ).encode()
    files[f"{dist}.dist-info/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: bygheartd-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    files[f"{dist}.dist-info/entry_points.txt"] = entry_points.encode()
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel
