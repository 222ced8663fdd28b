"""How long an audio file plays, for the edits that need it (extending is a repaint up to
the source's length plus the seconds asked for).

soundfile reads WAV, FLAC and Ogg exactly; mutagen reads the others' headers (MP3's
LAME/Xing frame count, MP4 boxes). Both are dependencies already; neither decodes the audio.
"""

from __future__ import annotations

from pathlib import Path

from bygheartd.errors import RequestError

__all__ = ["audio_seconds"]


def audio_seconds(path: Path) -> float:
    """The length of `path` in seconds; RequestError saying why when it cannot be read."""
    try:
        import soundfile as sf

        info = sf.info(str(path))
        if info.samplerate > 0 and info.frames > 0:
            return float(info.frames) / float(info.samplerate)
    except Exception:  # not a format libsndfile reads: its header is for mutagen
        pass
    try:
        import mutagen

        found = mutagen.File(str(path))
    except Exception as exc:
        raise RequestError(
            f"{path.name} cannot be read as audio ({type(exc).__name__})",
            hint="use an mp3, wav, flac, ogg or m4a file",
        ) from None
    length = getattr(getattr(found, "info", None), "length", None)
    if not isinstance(length, int | float) or length <= 0:
        raise RequestError(
            f"{path.name} is not audio that says how long it is",
            hint="use an mp3, wav, flac, ogg or m4a file",
        )
    return float(length)
