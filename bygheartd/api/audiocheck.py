"""A light check that a downloaded take is whole: what its own header promises is there.

Not a decoder (the `quality` plugin decodes takes for real). Each format's container says
how long it is: a WAV's RIFF and data chunk sizes, a FLAC's sample count and the position of
its last frame, an MP3's ID3 tag size, LAME/Xing byte count and frame chain, an Ogg stream's
last page, an MP4's boxes. A file cut short (a Content-Length that lied, a proxy that
stopped) breaks that promise, and `incomplete` says how. A file that promises nothing (a
stream written without a length) passes: nothing here can tell it from a whole one.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from pathlib import Path

__all__ = ["impossible", "impossible_bytes", "incomplete", "incomplete_bytes"]

Data = bytes | mmap.mmap

_OGG_MAX_PAGE = 27 + 255 + 255 * 255
_FLAC_TAIL = 256 * 1024


def incomplete(path: Path, ext: str) -> str | None:
    """Why the file at `path` (audio of type `ext`, as sniffed) is not whole; None if it is."""
    return _check_file(path, _CHECKS.get(ext), empty="it is empty")


def incomplete_bytes(data: bytes, ext: str) -> str | None:
    """`incomplete` for bytes in memory (tests, fuzzing)."""
    check = _CHECKS.get(ext)
    if check is None:
        return None
    if not data:
        return "it is empty"
    return check(data, len(data))


def impossible(path: Path, ext: str) -> str | None:
    """Why the header of the (whole) file at `path` describes no audio anything could play
    (0 channels, a sample rate of 1 Hz, an unknown sample format); None when it is plausible
    or says nothing this check reads. Run after `incomplete`."""
    return _check_file(path, _HEADER_CHECKS.get(ext), empty=None)


def _check_file(
    path: Path, check: Callable[[Data, int], str | None] | None, *, empty: str | None
) -> str | None:
    """`check` over the file's bytes, mapped rather than read (a take may be large);
    `empty` for a file of no bytes (which cannot be mapped)."""
    if check is None:
        return None
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        if size == 0:
            return empty
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return check(data, size)


def impossible_bytes(data: bytes, ext: str) -> str | None:
    """`impossible` for bytes in memory (tests, fuzzing)."""
    check = _HEADER_CHECKS.get(ext)
    return check(data, len(data)) if check is not None and data else None


def _u16be(data: Data, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 2], "big")


def _u32be(data: Data, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 4], "big")


def _u32le(data: Data, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 4], "little")


# -- WAV ------------------------------------------------------------------------------

_UNSET = (0, 0xFFFFFFFF)  # what a writer that could not seek back leaves in a size field


def _wav(data: Data, size: int) -> str | None:
    if size < 12:
        return f"its RIFF header is cut off ({size} bytes)"
    riff = _u32le(data, 4)
    if riff not in _UNSET and riff + 8 > size + 1:
        return f"its RIFF header promises {riff + 8} bytes"
    pos = 12
    while pos + 8 <= size:
        chunk, length = data[pos : pos + 4], _u32le(data, pos + 4)
        body = pos + 8
        if chunk == b"data":
            if length in _UNSET:
                return None  # streamed: no length promised
            if body + length > size:
                return f"its data chunk promises {length} bytes of audio, {size - body} arrived"
            return None
        if body + length > size:
            return f"its {chunk!r} chunk promises {length} bytes, {size - body} arrived"
        pos = body + length + (length & 1)
    return None  # no data chunk: nothing promised (the quality plugin finds it undecodable)


# What a take's header may plausibly say. Servers write 44.1 or 48 kHz stereo (ACE-Step:
# mp3, wav (16-bit), wav32 (32-bit float), flac, opus, aac); the bounds leave room for every
# usual rate, 8 kHz telephone audio to 384 kHz studio masters, and up to 7.1 surround.
MIN_RATE = 8_000
MAX_RATE = 384_000
MAX_CHANNELS = 8
_RATES_SAID = f"audio is {MIN_RATE:,} to {MAX_RATE:,} Hz"

# WAVE format codes libsndfile and FFmpeg decode, with the sample sizes each has.
_PCM, _FLOAT, _ALAW, _MULAW, _EXTENSIBLE = 1, 3, 6, 7, 0xFFFE
_WAV_BITS = {_PCM: (8, 16, 24, 32), _FLOAT: (32, 64), _ALAW: (8,), _MULAW: (8,)}
_WAV_FORMATS = {_PCM: "PCM", _FLOAT: "float", _ALAW: "A-law", _MULAW: "mu-law"}


def _wav_fmt(data: Data, at: int, length: int) -> str | None:
    """What is impossible in a `fmt ` chunk whose body starts at `at`."""
    if length < 16:
        return f"its fmt chunk is {length} bytes, under the 16 every WAV has"
    code = int.from_bytes(data[at : at + 2], "little")
    channels = int.from_bytes(data[at + 2 : at + 4], "little")
    rate = _u32le(data, at + 4)
    bits = int.from_bytes(data[at + 14 : at + 16], "little")
    if code == _EXTENSIBLE:
        if length < 40:
            return f"its fmt chunk says WAVE_FORMAT_EXTENSIBLE in {length} bytes, not 40"
        code = int.from_bytes(data[at + 24 : at + 26], "little")  # the subformat GUID's
        if code not in (_PCM, _FLOAT):
            return f"its sample format is unknown (extensible subformat 0x{code:04x})"
    if code not in _WAV_BITS:
        return f"its sample format is unknown (format code 0x{code:04x})"
    if not 1 <= channels <= MAX_CHANNELS:
        return f"its fmt chunk says {channels} channels (audio has 1 to {MAX_CHANNELS})"
    if not MIN_RATE <= rate <= MAX_RATE:
        return f"its fmt chunk says a sample rate of {rate:,} Hz ({_RATES_SAID})"
    if bits not in _WAV_BITS[code]:
        allowed = "/".join(str(b) for b in _WAV_BITS[code])
        return (
            f"its fmt chunk says {bits} bits per sample ({_WAV_FORMATS[code]} samples are "
            f"{allowed} bits)"
        )
    return None


def _wav_header(data: Data, size: int) -> str | None:
    """The first `fmt ` chunk must describe audio, and come before the audio; a file with
    neither (not audio inside) is left to the quality plugin, which finds it undecodable."""
    pos = 12
    while pos + 8 <= size:
        chunk, length = data[pos : pos + 4], _u32le(data, pos + 4)
        body = pos + 8
        if chunk == b"fmt ":
            return _wav_fmt(data, body, min(length, size - body))
        if chunk == b"data":
            return "its audio comes before any fmt chunk (nothing says what the samples are)"
        pos = body + length + (length & 1)
    return None


def _flac_header(data: Data, size: int) -> str | None:
    """STREAMINFO must come first and, once it says anything, describe audio."""
    if size < 42:
        return None
    if data[4] & 0x7F != 0 or int.from_bytes(data[5:8], "big") != 34:
        return "its first metadata block is not a STREAMINFO (type 0, 34 bytes)"
    packed = int.from_bytes(data[18:26], "big")
    rate, total = packed >> 44, packed & ((1 << 36) - 1)
    bits = ((packed >> 36) & 0x1F) + 1
    if rate == 0 and total == 0:
        return None  # nothing said (a stream written without its STREAMINFO filled in)
    if not MIN_RATE <= rate <= MAX_RATE:
        return f"its STREAMINFO says a sample rate of {rate:,} Hz ({_RATES_SAID})"
    if bits < 4:
        return f"its STREAMINFO says {bits} bits per sample (FLAC has 4 to 32)"
    return None


# -- FLAC -----------------------------------------------------------------------------

_FLAC_CRC8 = [0] * 256
_FLAC_CRC16 = [0] * 256
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = ((_c << 1) ^ 0x07) & 0xFF if _c & 0x80 else (_c << 1) & 0xFF
    _FLAC_CRC8[_i] = _c
    _c = _i << 8
    for _ in range(8):
        _c = ((_c << 1) ^ 0x8005) & 0xFFFF if _c & 0x8000 else (_c << 1) & 0xFFFF
    _FLAC_CRC16[_i] = _c


def _crc8(chunk: bytes) -> int:
    crc = 0
    for byte in chunk:
        crc = _FLAC_CRC8[crc ^ byte]
    return crc


def _crc16(chunk: bytes) -> int:
    crc = 0
    table = _FLAC_CRC16
    for byte in chunk:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc


def _flac_frame_header(data: Data, pos: int, end: int) -> tuple[int, bool, int] | None:
    """(coded number, variable block size, block size) of a frame header at `pos` whose
    CRC-8 is right; None when it is no frame header."""
    if pos + 6 > end or data[pos] != 0xFF or data[pos + 1] not in (0xF8, 0xF9):
        return None
    variable = bool(data[pos + 1] & 1)
    size_code, rate_code = data[pos + 2] >> 4, data[pos + 2] & 0x0F
    channels = data[pos + 3] >> 4
    if size_code == 0 or rate_code == 15 or channels > 10 or data[pos + 3] & 1:
        return None
    first = data[pos + 4]
    if first < 0x80:
        extra, number = 0, first
    elif first >= 0xC0 and first != 0xFF:
        extra = 1
        while first & (0x40 >> extra) and extra < 6:
            extra += 1
        number = first & (0x3F >> extra)
    else:
        return None
    at = pos + 5
    if at + extra > end:
        return None
    for byte in data[at : at + extra]:
        if byte & 0xC0 != 0x80:
            return None
        number = (number << 6) | (byte & 0x3F)
    at += extra
    if size_code == 6:
        block, at = (data[at] if at < end else 0) + 1, at + 1
    elif size_code == 7:
        block, at = _u16be(data, at) + 1, at + 2
    elif size_code == 1:
        block = 192
    elif size_code <= 5:
        block = 576 << (size_code - 2)
    else:
        block = 256 << (size_code - 8)
    at += {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    if at >= end or _crc8(bytes(data[pos:at])) != data[at]:
        return None
    return number, variable, block


def _flac(data: Data, size: int) -> str | None:
    if size < 42:
        return f"its STREAMINFO is cut off ({size} bytes)"
    min_block = _u16be(data, 8)
    packed = int.from_bytes(data[18:26], "big")
    rate, total = packed >> 44, packed & ((1 << 36) - 1)
    if total == 0 or rate == 0:
        return None  # the length is unknown: nothing promised
    pos, last = 4, False
    while not last:
        if pos + 4 > size:
            return f"its metadata is cut off at byte {size}"
        last = bool(data[pos] & 0x80)
        length = int.from_bytes(data[pos + 1 : pos + 4], "big")
        if pos + 4 + length > size:
            return f"a metadata block promises {length} bytes, {size - pos - 4} arrived"
        pos += 4 + length
    end = size - 128 if size - 128 >= pos and data[size - 128 : size - 125] == b"TAG" else size
    seconds = f"{total} samples ({total / rate:.1f} s)"
    if pos >= end:
        return f"it has no audio frames, and its STREAMINFO promises {seconds}"
    # The last frame ends at the end of the file: the last frame header from the end whose
    # CRC-16 over the rest of the file matches. Two tries, then it is cut mid-frame.
    lo, at, tries = max(pos, end - _FLAC_TAIL), end, 0
    while tries < 2:
        at = data.rfind(b"\xff", lo, at)
        if at < 0:
            break
        header = _flac_frame_header(data, at, end)
        if header is None:
            continue
        tries += 1
        if end - at < 8 or _crc16(bytes(data[at : end - 2])) != _u16be(data, end - 2):
            continue
        number, variable, block = header
        first = number if variable else number * min_block
        if first + block < total:
            reached = min(first + block, total)
            return (
                f"its STREAMINFO promises {seconds}, its last frame ends at sample {reached} "
                f"({reached / rate:.1f} s)"
            )
        return None
    return f"its last frame is cut off (its STREAMINFO promises {seconds})"


# -- MPEG audio (MP3) and ADTS (AAC) --------------------------------------------------

_BITRATES = {
    (1, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (1, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (1, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (2, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (2, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (2, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mpeg_frame(data: Data, pos: int, size: int) -> tuple[int, int, bool] | None:
    """(frame length, MPEG version (1 or 2), mono) of an MPEG audio frame header at `pos`;
    None when there is none (free-format and reserved values included)."""
    if pos + 4 > size or data[pos] != 0xFF or data[pos + 1] & 0xE0 != 0xE0:
        return None
    version_bits, layer_bits = (data[pos + 1] >> 3) & 3, (data[pos + 1] >> 1) & 3
    rate_index, bitrate_index = (data[pos + 2] >> 2) & 3, data[pos + 2] >> 4
    if version_bits == 1 or layer_bits == 0 or rate_index == 3 or bitrate_index in (0, 15):
        return None
    version = 1 if version_bits == 3 else 2
    layer = 4 - layer_bits
    bitrate = _BITRATES[version, layer][bitrate_index - 1] * 1000
    rate = _RATES[version_bits][rate_index]
    padding = (data[pos + 2] >> 1) & 1
    if layer == 1:
        length = (12 * bitrate // rate + padding) * 4
    elif layer == 3 and version == 2:
        length = 72 * bitrate // rate + padding
    else:
        length = 144 * bitrate // rate + padding
    return length, version, data[pos + 3] >> 6 == 3


def _mp3(data: Data, size: int) -> str | None:
    pos = 0
    if data[:3] == b"ID3":
        if size < 10:
            return f"its ID3 tag is cut off ({size} bytes)"
        tag = 10 + sum((data[6 + i] & 0x7F) << (7 * (3 - i)) for i in range(4))
        tag += 10 if data[5] & 0x10 else 0
        if tag > size:
            return f"its ID3 tag promises {tag} bytes, the file has {size}"
        pos = tag
        while pos < size and pos < tag + 65536 and data[pos] == 0:
            pos += 1  # padding after the tag
        if pos >= size:
            return None  # a tag and padding: no audio promised (the quality plugin finds it)
        if _adts_frame(data, pos, size) is not None:
            return _adts(data, size, pos)
    first = _mpeg_frame(data, pos, size)
    if first is None:
        return None  # not a frame we can walk: nothing promised
    length, version, mono = first
    if pos + length > size:
        return f"its first MPEG frame is cut off ({size - pos} of {length} bytes)"
    side = (17 if mono else 32) if version == 1 else (9 if mono else 17)
    tag_at = pos + 4 + side
    promised_bytes = promised_frames = 0
    if data[tag_at : tag_at + 4] in (b"Xing", b"Info"):
        flags, at = _u32be(data, tag_at + 4), tag_at + 8
        if flags & 1:
            promised_frames, at = _u32be(data, at), at + 4
        if flags & 2:
            promised_bytes = _u32be(data, at)
    elif data[pos + 36 : pos + 40] == b"VBRI":
        promised_bytes, promised_frames = _u32be(data, pos + 46), _u32be(data, pos + 50)
    if promised_bytes and size + 2 * length < promised_bytes:
        return f"its LAME/Xing header promises {promised_bytes} bytes, the file has {size}"
    # The frames chain from one to the next: the last one must end by the end of the file.
    frames, at = 0, pos
    while at + 4 <= size:
        frame = _mpeg_frame(data, at, size)
        if frame is None:
            return None  # a tag or junk at the end: the chain promises nothing more
        if at + frame[0] > size:
            return (
                f"its last MPEG frame is cut off (frame {frames + 1} needs {frame[0]} bytes, "
                f"{size - at} arrived)"
            )
        at += frame[0]
        frames += 1
    if promised_frames and frames + 2 < promised_frames:
        return f"its LAME/Xing header promises {promised_frames} frames, the file has {frames}"
    return None


def _adts_frame(data: Data, pos: int, size: int) -> int | None:
    if pos + 7 > size or data[pos] != 0xFF or data[pos + 1] & 0xF6 != 0xF0:
        return None
    length = ((data[pos + 3] & 3) << 11) | (data[pos + 4] << 3) | (data[pos + 5] >> 5)
    return length if length >= 7 else None


def _adts(data: Data, size: int, pos: int = 0) -> str | None:
    frames = 0
    while pos + 7 <= size:
        length = _adts_frame(data, pos, size)
        if length is None:
            return None
        if pos + length > size:
            return (
                f"its last AAC frame is cut off (frame {frames + 1} needs {length} bytes, "
                f"{size - pos} arrived)"
            )
        pos += length
        frames += 1
    return None


def _aac(data: Data, size: int) -> str | None:
    return _adts(data, size)


# -- Ogg (Vorbis, Opus) ----------------------------------------------------------------


def _ogg(data: Data, size: int) -> str | None:
    """The last page must end exactly at the end of the file and end the stream."""
    lo = max(0, size - _OGG_MAX_PAGE - 1)
    at = data.rfind(b"OggS", lo, size)
    while at >= 0:
        if at + 27 > size:
            return f"its last Ogg page is cut off ({size - at} bytes of its header)"
        if data[at + 4] == 0:
            segments = data[at + 26]
            if at + 27 + segments > size:
                return f"its last Ogg page is cut off ({size - at} bytes)"
            length = 27 + segments + sum(data[at + 27 : at + 27 + segments])
            if at + length > size:
                return f"its last Ogg page is cut off ({size - at} of {length} bytes)"
            if at + length == size:
                if data[at + 5] & 4:
                    return None
                return "its last Ogg page does not end the stream (cut off between pages)"
            rest = bytes(data[at + length : size])
            if len(rest) < 4 and b"OggS".startswith(rest):
                return f"its last Ogg page is cut off ({len(rest)} bytes of its header)"
            return None  # something follows the last page: not a cut
        at = data.rfind(b"OggS", lo, at)
    return "no Ogg page ends it"


# -- MP4 (M4A) ------------------------------------------------------------------------


def _mp4(data: Data, size: int) -> str | None:
    pos, moov = 0, False
    while pos + 8 <= size:
        length, kind = _u32be(data, pos), bytes(data[pos + 4 : pos + 8])
        header = 8
        if length == 1:
            if pos + 16 > size:
                return f"its {kind!r} box header is cut off"
            length, header = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        elif length == 0:
            length = size - pos  # to the end of the file
        if length < header:
            return f"its {kind!r} box has an impossible size ({length})"
        if pos + length > size:
            return f"its {kind!r} box promises {length} bytes, {size - pos} arrived"
        moov = moov or kind == b"moov"
        pos += length
    if not moov:
        return "it has no 'moov' box (the index an MP4 file needs): cut off before it"
    return None


_CHECKS: dict[str, Callable[[Data, int], str | None]] = {
    ".wav": _wav,
    ".flac": _flac,
    ".mp3": _mp3,
    ".aac": _aac,
    ".ogg": _ogg,
    ".opus": _ogg,
    ".m4a": _mp4,
}

# Header checks: only formats whose header states rate, channels and sample format in fixed
# places (MPEG, ADTS and Ogg frames do per frame, and a frame that says nothing valid is no
# frame: `incomplete` and the quality plugin see those).
_HEADER_CHECKS: dict[str, Callable[[Data, int], str | None]] = {
    ".wav": _wav_header,
    ".flac": _flac_header,
}
