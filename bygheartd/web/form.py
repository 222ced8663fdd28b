"""The new-song form: its inputs are the song-file keys, grouped like the Bygheart website's
Advanced Options, and what a browser sends back becomes the same request data a song file
gives (so the same normalisers judge it and say the same words).

Every canonical key of `bygheartd.songs.fields.ALIASES` gets an input: keys this module has
no layout for (added later by someone else) land in "More options" as a text box.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bygheartd import catalog
from bygheartd.songs import fields

__all__ = [
    "CHECKBOXES",
    "FIELD_KEYS",
    "FILE_KEYS",
    "Field",
    "Group",
    "form_groups",
    "request_data",
    "values_from_request",
]


@dataclass(frozen=True)
class Field:
    """One input: `key` is the song-file key and the input's name."""

    key: str
    label: str
    kind: str = "text"  # text, textarea, number, select, checkbox, file
    help: str = ""
    options: tuple[tuple[str, str], ...] = ()  # (value, label) for selects
    low: float | None = None
    high: float | None = None
    step: str = "any"


@dataclass(frozen=True)
class Group:
    name: str
    slug: str
    fields: tuple[Field, ...]
    open: bool = False
    help: str = ""


# (group name, slug, open by default, help, keys in order). Keys that do not exist (yet) in
# the request model are skipped; keys not named here go to "More options".
LAYOUT: list[tuple[str, str, bool, str, list[str]]] = [
    (
        "Song",
        "song",
        True,
        "What the song is: the style, the words and the model.",
        ["title", "description", "style", "lyrics", "model"],
    ),
    (
        "General",
        "general",
        True,
        "Length, tempo, metre and key; leave empty to let the model choose.",
        ["duration", "bpm", "time_signature", "key", "negative"],
    ),
    (
        "Thinking",
        "thinking",
        False,
        "Let the language model plan the song (and tidy the style) before rendering.",
        ["thinking", "use_format", "use_cot_caption", "use_cot_language", "use_cot_metas"],
    ),
    ("Vocal style", "vocal", False, "", ["language", "instrumental"]),
    (
        "Expert controls",
        "expert",
        False,
        "Diffusion steps, guidance, the sampler and the seed.",
        [
            "inference_steps",
            "guidance_scale",
            "seed",
            "infer_method",
            "shift",
            "timesteps",
            "use_adg",
            "cfg_interval_start",
            "cfg_interval_end",
        ],
    ),
    (
        "Edit / Repaint",
        "edit",
        False,
        "Change an existing recording: upload it and pick a task.",
        [
            "task_type",
            "source_audio",
            "repainting_start",
            "repainting_end",
            "repaint_mode",
            "repaint_strength",
            "repaint_crossfade_frames",
            "repaint_crossfade_seconds",
            "cover_strength",
            "cover_noise",
            "reference_audio",
            "track_name",
            "track_classes",
            "stems",
        ],
    ),
    (
        "LM tuning",
        "lm",
        False,
        "Sampling of the planning language model.",
        [
            "lm_model_path",
            "lm_temperature",
            "lm_cfg_scale",
            "lm_top_k",
            "lm_top_p",
            "lm_repetition_penalty",
        ],
    ),
    ("Output", "output", False, "", ["takes", "audio_format"]),
]

FIELD_KEYS: tuple[str, ...] = tuple(fields.ALIASES)
_FLAGS = (
    "instrumental",
    "thinking",
    "use_format",
    "use_cot_caption",
    "use_cot_language",
    "use_cot_metas",
    "use_adg",
)


def _unset_by_default(key: str) -> bool:
    """A flag the request leaves unset (the server decides) unless a file says yes or no:
    a checkbox cannot say "unset", so the form offers default / yes / no instead."""
    from bygheartd.songs.request import SongRequest

    spec = SongRequest.model_fields.get(key)
    return spec is not None and spec.default is None


# Flags that are false unless ticked; an unticked box sends false.
CHECKBOXES = frozenset(k for k in _FLAGS if not _unset_by_default(k))
# Inputs that upload an audio file; the request names it beside the "song file".
FILE_KEYS = ("source_audio", "reference_audio")


def _choices(values: list[str], *, empty: str = "(model chooses)") -> tuple[tuple[str, str], ...]:
    return (("", empty), *((v, v) for v in values))


def _field(key: str, backend: str) -> Field:
    """The input for one key; anything unknown is a plain text box named after the key."""
    duration_low, duration_high = catalog.duration_range()
    bpm_low, bpm_high = catalog.bpm_range(backend)
    models = [m.name for m in catalog.backend_models(backend)]
    names = catalog.language_names()
    specs: dict[str, Field] = {
        "title": Field("title", "Title", help="Also the file name; made from the lyrics if empty."),
        "description": Field(
            "description",
            "Description (Simple mode)",
            "textarea",
            help="Describe the song; the model writes the style and the lyrics.",
        ),
        "style": Field(
            "style",
            "Style",
            "textarea",
            help=f"Genre, instruments, mood, voice (up to {catalog.STYLE_MAX_CHARS} characters).",
        ),
        "lyrics": Field(
            "lyrics",
            "Lyrics",
            "textarea",
            help="Sections in brackets: [Verse], [Chorus]. Empty with Instrumental.",
        ),
        "model": Field("model", "Model", "select", options=_choices(models, empty="(default)")),
        "duration": Field(
            "duration",
            "Duration (seconds)",
            "number",
            help=f"{duration_low:g} to {duration_high:g} s; empty: the model decides.",
            low=duration_low,
            high=duration_high,
        ),
        "bpm": Field("bpm", "Tempo (BPM)", "number", low=bpm_low, high=bpm_high, step="1"),
        "time_signature": Field(
            "time_signature",
            "Time signature",
            "select",
            options=(
                ("", "(model chooses)"),
                ("2", "2/4"),
                ("3", "3/4"),
                ("4", "4/4"),
                ("6", "6/8"),
            ),
        ),
        "key": Field("key", "Key", "select", options=_choices(catalog.key_scales())),
        "negative": Field(
            "negative", "Negative styles", help="What the song should not sound like."
        ),
        "thinking": Field("thinking", "Thinking", "checkbox", help="Plan the song with the LM."),
        "use_format": Field("use_format", "Format the style", "checkbox"),
        "language": Field(
            "language",
            "Vocal language",
            "select",
            options=(
                ("", "(model chooses)"),
                *(
                    (code, f"{names[code]} ({code})" if code in names else code)
                    for code in catalog.languages()
                ),
            ),
        ),
        "instrumental": Field("instrumental", "Instrumental (no vocals)", "checkbox"),
        "inference_steps": Field(
            "inference_steps", "Inference steps", "number", low=1, high=200, step="1"
        ),
        "guidance_scale": Field("guidance_scale", "Guidance scale", "number", low=0, high=20),
        "seed": Field(
            "seed", "Seed", help="A whole number (or one per take, with commas); empty: random."
        ),
        "task_type": Field(
            "task_type", "Task", "select", options=tuple((t, t) for t in catalog.task_types())
        ),
        "source_audio": Field(
            "source_audio",
            "Source audio",
            "file",
            help=f"The recording to edit ({', '.join(catalog.AUDIO_SUFFIXES)}).",
        ),
        "repainting_start": Field(
            "repainting_start", "Repaint from (s)", "number", low=0, high=6000
        ),
        "repainting_end": Field(
            "repainting_end", "Repaint to (s)", "number", help="-1: to the end.", low=-1, high=6000
        ),
        "lm_model_path": Field(
            "lm_model_path", "LM model", "select", options=_choices(catalog.lm_models())
        ),
        "lm_temperature": Field("lm_temperature", "LM temperature", "number", low=0, high=2),
        "lm_cfg_scale": Field("lm_cfg_scale", "LM CFG scale", "number", low=0, high=10),
        "lm_top_k": Field("lm_top_k", "LM top-k", "number", low=0, high=1000, step="1"),
        "lm_top_p": Field("lm_top_p", "LM top-p", "number", low=0, high=1),
        "lm_repetition_penalty": Field(
            "lm_repetition_penalty", "LM repetition penalty", "number", low=1, high=2
        ),
        "use_cot_caption": Field("use_cot_caption", "Let the LM rewrite the style", "checkbox"),
        "use_cot_language": Field("use_cot_language", "Let the LM pick the language", "checkbox"),
        "use_cot_metas": Field("use_cot_metas", "Let the LM plan bpm, key, length", "checkbox"),
        "infer_method": Field(
            "infer_method",
            "Sampler",
            "select",
            options=_choices(list(getattr(fields, "INFER_METHODS", ())), empty="(default)"),
        ),
        "shift": Field("shift", "Timestep shift", "number", low=1, high=5),
        "timesteps": Field(
            "timesteps", "Custom timesteps", help="Falling numbers from 1 to 0, with commas."
        ),
        "use_adg": Field("use_adg", "Adaptive dual guidance (ADG)", "checkbox"),
        "cfg_interval_start": Field(
            "cfg_interval_start", "Guidance from (0-1)", "number", low=0, high=1
        ),
        "cfg_interval_end": Field(
            "cfg_interval_end", "Guidance until (0-1)", "number", low=0, high=1
        ),
        "repaint_mode": Field(
            "repaint_mode",
            "Repaint mode",
            "select",
            options=_choices(list(getattr(fields, "REPAINT_MODES", ())), empty="(default)"),
        ),
        "repaint_strength": Field("repaint_strength", "Repaint strength", "number", low=0, high=1),
        "repaint_crossfade_frames": Field(
            "repaint_crossfade_frames", "Crossfade (frames)", "number", low=0, high=250, step="1"
        ),
        "repaint_crossfade_seconds": Field(
            "repaint_crossfade_seconds", "Crossfade (s)", "number", low=0, high=20
        ),
        "cover_strength": Field("cover_strength", "Cover strength", "number", low=0, high=1),
        "cover_noise": Field("cover_noise", "Cover noise", "number", low=0, high=1),
        "reference_audio": Field(
            "reference_audio",
            "Reference audio",
            "file",
            help="A recording whose timbre and mix to follow.",
        ),
        "track_name": Field("track_name", "Track", help="For lego/extract: one track name."),
        "track_classes": Field(
            "track_classes", "Tracks", help="For complete: track names with commas."
        ),
        "stems": Field(
            "stems", "Stems", help="For extract: one stem per track name (one generation each)."
        ),
        "takes": Field(
            "takes",
            "Takes",
            "number",
            help="How many versions to make (each costs the model's price).",
            low=catalog.MIN_TAKES,
            high=catalog.MAX_TAKES,
            step="1",
        ),
        "audio_format": Field(
            "audio_format",
            "Audio format",
            "select",
            options=tuple((f, f) for f in catalog.audio_formats()),
        ),
    }
    spec = specs.get(key) or Field(key, key.replace("_", " ").capitalize())
    if spec.kind == "checkbox" and key not in CHECKBOXES:
        options = (("", "(default)"), ("true", "yes"), ("false", "no"))
        return Field(key, spec.label, "select", spec.help, options)
    return spec


def form_groups(backend: str) -> list[Group]:
    """The form's sections, every song-file key in exactly one of them."""
    placed: set[str] = set()
    groups = []
    for name, slug, is_open, help_text, keys in LAYOUT:
        present = [k for k in keys if k in FIELD_KEYS]
        placed.update(present)
        groups.append(
            Group(name, slug, tuple(_field(k, backend) for k in present), is_open, help_text)
        )
    rest = [k for k in FIELD_KEYS if k not in placed]
    if rest:
        groups.append(Group("More options", "more", tuple(_field(k, backend) for k in rest)))
    return groups


def request_data(
    form: Mapping[str, Any], *, audio_names: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """What the browser sent as song-file data: empty inputs left out (the defaults fill
    them), unticked boxes false, each uploaded audio file by its saved name."""
    data: dict[str, Any] = {}
    for key in FIELD_KEYS:
        if key in CHECKBOXES:
            data[key] = "true" if form.get(key) in ("on", "true", "1", "yes") else "false"
            continue
        if key in FILE_KEYS:
            name = (audio_names or {}).get(key)
            if name:
                data[key] = name
            continue
        value = form.get(key)
        if isinstance(value, str) and (value.strip() or key == "lyrics"):
            data[key] = value
    return data


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return "" if value is None else str(value)


def values_from_request(request: Mapping[str, Any]) -> dict[str, str]:
    """A stored request (canonical keys) as the form's input values."""
    return {key: _text(request[key]) for key in FIELD_KEYS if key in request}
