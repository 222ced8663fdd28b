"""Takes whose header describes no audio (audit F6e): a WAV whose `fmt ` chunk says 0
channels, a sample rate of 0, 1 or 4 GHz, 0 bits or an unknown format code, a FLAC whose
STREAMINFO says the same. Their sizes are right, so nothing is cut short; the download's
light check refuses them as "does not decode as audio" (retried, then failed: never a paid
song `done` as if fine), and the `quality` plugin, given such a file anyway, reports an
`undecodable` finding, never an exception."""

from __future__ import annotations

import io
import json
import math
import struct
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from _daemon import cli
from _jobs import song, until
from _misbehaving import MisbehavingProxy, Rule
from _scripted import (  # noqa: F401 - the server, api and origin fixtures
    scripted_api_fixture,
    scripted_client,
    scripted_origin_fixture,
    scripted_server_fixture,
)
from _servers import PREFIX, Reply, ScriptedApi
from conftest import MakeConfig
from plugin_fixtures.factories import first_party, make_job

from bygheartd.api.audiocheck import impossible_bytes, incomplete_bytes
from bygheartd.api.client import ProtocolError
from bygheartd.engine.retakes import NO_PASS_WARNING
from bygheartd.jobs import JobStatus
from bygheartd.runtime import EngineRole, Runtime
from bygheartd.simulator import RunningSimulator

pytestmark = pytest.mark.anyio

HANG = 60  # an upper bound on waiting for an outcome, never an assertion about time


def tone_wav(seconds: float = 2.0, rate: int = 8000) -> bytes:
    """A whole 16-bit mono WAV of a sine (the audit's fake server's take, shorter)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        frames = (
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
            for i in range(int(seconds * rate))
        )
        out.writeframes(b"".join(frames))
    return buffer.getvalue()


GOOD = tone_wav()


def wav_with(
    *,
    fmt: int | None = None,
    channels: int | None = None,
    rate: int | None = None,
    align: int | None = None,
    bits: int | None = None,
) -> bytes:
    """GOOD with fields of its 16-byte `fmt ` chunk changed; every size stays right."""
    data = bytearray(GOOD)
    if fmt is not None:
        data[20:22] = struct.pack("<H", fmt)
    if channels is not None:
        data[22:24] = struct.pack("<H", channels)
    if rate is not None:
        data[24:28] = struct.pack("<I", rate)
        data[28:32] = struct.pack("<I", (rate * 2) & 0xFFFFFFFF)
    if align is not None:
        data[32:34] = struct.pack("<H", align)
    if bits is not None:
        data[34:36] = struct.pack("<H", bits)
    return bytes(data)


def extensible(subformat: int, bits: int = 16) -> bytes:
    """GOOD as WAVE_FORMAT_EXTENSIBLE (a 40-byte `fmt `) with this subformat code (the
    samples are GOOD's 16-bit ones whatever `bits` says: only the header is read)."""
    fmt = struct.pack("<HHIIHH", 0xFFFE, 1, 8000, 8000 * bits // 8, bits // 8, bits)
    fmt += struct.pack("<HHI", 22, bits, 4) + struct.pack("<H", subformat)
    fmt += b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    audio = GOOD[44:]
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(audio)) + audio
    return b"RIFF" + struct.pack("<I", len(body)) + body


def data_before_fmt() -> bytes:
    audio = GOOD[44:]
    body = b"WAVEdata" + struct.pack("<I", len(audio)) + audio + GOOD[12:36]
    return b"RIFF" + struct.pack("<I", len(body)) + body


# The audit's seven (its fake server's `dl_wav_*` scenarios), and a few more of the kind.
IMPOSSIBLE_WAVS = {
    "rate0": (wav_with(rate=0), "a sample rate of 0 Hz"),
    "rate1": (wav_with(rate=1), "a sample rate of 1 Hz"),
    "ratehuge": (wav_with(rate=4_000_000_000), "a sample rate of 4,000,000,000 Hz"),
    "ch0": (wav_with(channels=0), "0 channels"),
    "ch65535": (wav_with(channels=65535, align=65535), "65535 channels"),
    "bits0": (wav_with(bits=0), "0 bits per sample"),
    "fmt_bad": (wav_with(fmt=0x1234), "format code 0x1234"),
    "bits12": (wav_with(bits=12), "12 bits per sample"),
    "float16": (wav_with(fmt=3), "16 bits per sample (float samples are 32/64 bits)"),
    "ext_bad": (extensible(0x0055), "extensible subformat 0x0055"),
    "ext_float16": (extensible(3), "16 bits per sample (float samples are 32/64 bits)"),
    "data_first": (data_before_fmt(), "its audio comes before any fmt chunk"),
}


def flac(rate: int, bits: int = 16) -> bytes:
    """A real FLAC (libsndfile's), its STREAMINFO's sample rate and size rewritten."""
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros((44100, 1)), 44100, format="FLAC", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    packed = int.from_bytes(data[18:26], "big")
    total = packed & ((1 << 36) - 1)
    channels = (packed >> 41) & 7
    packed = (rate << 44) | (channels << 41) | ((bits - 1) << 36) | total
    data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


IMPOSSIBLE_FLACS = {
    "rate0": (flac(0), "a sample rate of 0 Hz"),
    "rate1": (flac(1), "a sample rate of 1 Hz"),
    "rate_huge": (flac(1_000_000), "a sample rate of 1,000,000 Hz"),
    "bits2": (flac(44100, bits=2), "2 bits per sample"),
}


@pytest.mark.parametrize("name", sorted(IMPOSSIBLE_WAVS))
def test_a_wav_header_that_describes_no_audio_is_refused(name: str) -> None:
    data, why = IMPOSSIBLE_WAVS[name]
    assert incomplete_bytes(data, ".wav") is None  # whole: the sizes are right
    assert why in (impossible_bytes(data, ".wav") or "")


@pytest.mark.parametrize("name", sorted(IMPOSSIBLE_FLACS))
def test_a_flac_streaminfo_that_describes_no_audio_is_refused(name: str) -> None:
    data, why = IMPOSSIBLE_FLACS[name]
    assert why in (impossible_bytes(data, ".flac") or "")


@pytest.mark.parametrize(
    ("subtype", "channels", "rate"),
    [
        ("PCM_16", 2, 48000),  # ACE-Step's wav
        ("FLOAT", 2, 48000),  # its wav32
        ("PCM_24", 2, 96000),
        ("PCM_32", 8, 384000),
        ("PCM_U8", 1, 8000),
        ("DOUBLE", 2, 44100),
        ("ULAW", 1, 8000),
        ("ALAW", 1, 8000),
    ],
)
def test_every_plausible_wav_and_flac_passes(subtype: str, channels: int, rate: int) -> None:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros((rate // 10, channels)), rate, format="WAV", subtype=subtype)
    assert impossible_bytes(buffer.getvalue(), ".wav") is None
    if subtype in ("PCM_16", "PCM_24"):
        buffer = io.BytesIO()
        sf.write(buffer, np.zeros((rate // 10, channels)), rate, format="FLAC", subtype=subtype)
        assert impossible_bytes(buffer.getvalue(), ".flac") is None


def test_extensible_pcm_and_what_promises_nothing_pass() -> None:
    assert impossible_bytes(extensible(1), ".wav") is None
    assert impossible_bytes(extensible(3, bits=32), ".wav") is None
    # The simulator's undecodable takes: no `fmt ` and no audio, an empty STREAMINFO. They
    # say nothing impossible: the quality plugin finds them undecodable.
    junk = b"RIFF\x0c\x10\x00\x00WAVEjunk\x00\x10\x00\x00" + bytes(4096)
    assert impossible_bytes(junk, ".wav") is None
    assert impossible_bytes(b"fLaC\x00\x00\x00\x22" + bytes(4096), ".flac") is None


# -- the download -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(IMPOSSIBLE_WAVS))
async def test_a_download_whose_header_describes_no_audio_is_refused(
    api: ScriptedApi, origin: str, tmp_path: Path, name: str
) -> None:
    data, why = IMPOSSIBLE_WAVS[name]
    api.expect("GET", "/v1/audio", Reply(200, data, media_type="audio/wav"))
    async with scripted_client(origin + PREFIX, "bgh_impossible_take") as client:
        with pytest.raises(ProtocolError) as info:
            await client.download("/srv/acestep/api_audio/x.wav", tmp_path / "take")
    message = str(info.value)
    assert "the server sent a file that does not decode as audio (" in message
    assert why in message and message.endswith("refused, the download starts again")
    assert list(tmp_path.iterdir()) == []  # neither the take nor its part is kept


async def test_a_plausible_download_is_kept(api: ScriptedApi, origin: str, tmp_path: Path) -> None:
    api.expect("GET", "/v1/audio", Reply(200, GOOD, media_type="audio/wav"))
    async with scripted_client(origin + PREFIX, "bgh_impossible_take") as client:
        got = await client.download("/srv/acestep/api_audio/x.wav", tmp_path / "take")
    assert got.path.read_bytes() == GOOD


@pytest.mark.parametrize("name", ["rate1", "ch0", "bits0"])
async def test_a_paid_take_that_does_not_decode_fails_the_song_never_done(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    """Through the engine, the quality plugin on: every download of the take is refused,
    the job is held and the download retried (`[queue] max_attempts`), then the song fails
    with the reason. Nothing lands in the output folder."""
    monkeypatch.delenv("BYGHEARTD_LOAD_PLUGINS")
    data, why = IMPOSSIBLE_WAVS[name]
    odd = Rule(
        "GET /v1/audio",
        "reply",
        status=200,
        headers={"Content-Type": "audio/wav"},
        body=data,
        content_length=len(data),
    )
    with MisbehavingProxy(simulator.base_url, odd) as proxy:
        config = make_config(
            simulator,
            api={"base_url": proxy.origin},
            queue={"max_attempts": 2},
            plugins={"enabled": ["quality"]},
            defaults={"audio_format": "wav"},
        )
        async with Runtime(config, role=EngineRole.MCP) as runtime:
            job = await runtime.service.submit_file(song(tmp_path, "odd.txt", title="Odd"))
            job = await until(runtime.store, job.id, {JobStatus.FAILED, JobStatus.DONE}, HANG)
            history = await runtime.store.history(job.id)
    assert job.status is JobStatus.FAILED, job.reason
    reason = job.reason or ""
    assert "the server sent a file that does not decode as audio (" in reason and why in reason
    assert "gave up after 2 attempts" in reason
    held = [e.reason or "" for e in history if e.to_status == "held"]
    assert len(held) == 2 and all("does not decode as audio" in h for h in held)
    assert odd.hits == 3
    assert not [p for p in config.folders.output.iterdir() if p.suffix != ".json"]


# -- the quality plugin -------------------------------------------------------------------

WEIRD_FILES = {
    **{f"{name}.wav": data for name, (data, _) in IMPOSSIBLE_WAVS.items()},
    **{f"flac_{name}.flac": data for name, (data, _) in IMPOSSIBLE_FLACS.items()},
    "header_only.wav": GOOD[:44],
    "riff_garbage.wav": b"RIFF\xff\xff\xff\xffWAVE" + bytes(range(256)) * 8,
    "id3_only.mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(4096),
    "ogg_head.opus": b"OggS\x00\x02" + bytes(20) + b"\x01\x13OpusHead" + bytes(4096),
    "m4a_boxes.m4a": b"\x00\x00\x00\x20ftypM4A " + bytes(200),
}


# The audit's seven (the plugin raised AttributeError or ZeroDivisionError on three), and
# files with no audio in them at all.
UNDECODABLE = {
    *(f"{name}.wav" for name in ("rate0", "rate1", "ratehuge", "ch0", "ch65535", "bits0")),
    *("fmt_bad.wav", "float16.wav", "ext_bad.wav", "header_only.wav", "riff_garbage.wav"),
    *("id3_only.mp3", "ogg_head.opus", "m4a_boxes.m4a", "flac_rate1.flac"),
}


@pytest.mark.parametrize("name", sorted(WEIRD_FILES))
async def test_the_quality_plugin_turns_every_weird_file_into_a_finding(
    tmp_path: Path, name: str
) -> None:
    take = tmp_path / name
    take.write_bytes(WEIRD_FILES[name])
    request = {**make_job().request, "duration": 2}
    outcome = await first_party(["quality"]).on_complete(make_job(request=request), [take])
    assert outcome.failures == []  # the plugin raised nothing
    entry = outcome.sidecar["quality"][name]
    assert entry["verdict"] == "fail" and entry["findings"]
    assert outcome.warnings == [f"quality: {f['message']}" for f in entry["findings"]]
    if name in UNDECODABLE:  # what libsndfile decodes anyway is judged as what it decodes to
        assert [f["code"] for f in entry["findings"]] == ["undecodable"]
        assert entry["findings"][0]["message"].startswith(f"cannot decode {name}: ")


def float_wav(samples: np.ndarray[Any, Any], rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("samples", "why"),
    [
        (np.full((16000, 10), 0.1, dtype=np.float32), "it has 10 channels (audio has 1 to 8)"),
        (np.full((16000, 2), np.nan, dtype=np.float32), "samples that are not numbers"),
        (np.full((16000, 1), np.inf, dtype=np.float32), "samples that are not numbers"),
    ],
    ids=["ten-channels", "nan", "infinity"],
)
async def test_what_libsndfile_decodes_but_is_no_take_is_undecodable(
    tmp_path: Path, samples: np.ndarray[Any, Any], why: str
) -> None:
    """A float WAV of NaN (or infinity) decodes; no figure of it would be a number (nor
    JSON). Ten channels decode too; no music take has them."""
    take = tmp_path / "odd.wav"
    take.write_bytes(float_wav(samples))
    request = {**make_job().request, "duration": 2}
    outcome = await first_party(["quality"]).on_complete(make_job(request=request), [take])
    assert outcome.failures == []
    [finding] = outcome.sidecar["quality"]["odd.wav"]["findings"]
    assert finding["code"] == "undecodable" and why in finding["message"]


async def test_a_song_with_no_decodable_take_ends_with_the_gate_warning(
    simulator: RunningSimulator,
    make_config: MakeConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A take whose header is plausible but which nothing decodes (the simulator's
    `undecodable`) still reaches the gate. `undecodable` is not in the default
    `[retakes] when` (DESIGN.md pins it), so no credit is spent on it, but the song says it
    plainly: `show` prints the gate's warning beside the finding."""
    monkeypatch.delenv("BYGHEARTD_LOAD_PLUGINS")
    config = make_config(simulator, plugins={"enabled": ["quality"]}, retakes={"max": 1})
    assert "undecodable" not in config.retakes.when
    path = song(tmp_path, "broken.txt", title="Broken", style="synth pop [sim:undecodable]")
    async with Runtime(config, role=EngineRole.MCP) as runtime:
        job = await runtime.service.submit_file(path)
        job = await runtime.service.wait(job.id, timeout=HANG)
    assert job.status is JobStatus.DONE, job.reason
    warning = f"{NO_PASS_WARNING} (undecodable not in [retakes] when)"
    assert warning in job.warnings
    sidecar = json.loads((config.folders.output / "broken.json").read_text())
    assert warning in sidecar["warnings"]
    shown = cli(config.source_path, "show", job.id)
    assert shown.returncode == 0 and warning in " ".join(shown.stdout.split())
    assert "cannot decode broken" in shown.stdout
