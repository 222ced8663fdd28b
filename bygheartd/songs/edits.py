"""Edit tasks in people's words: extend, stems, add a layer, accompany (DESIGN.md "Edit tasks").

ACE-Step does all of these through fields nobody can guess (ACESTEP-TASKS.md §1.3-1.7):
extending is a repaint past the source's ends, with `repainting_end: 0` meaning "to the
end" rather than "0 s"; a stem is one `extract` task per track; a layer is `lego`;
accompanying is `complete` with a list of track names. This module turns the song-file keys
`extend`, `extend_before`, `stems`, `add_layer` and `accompany` into those plain request
keys, and knows the model families: which models can do what, and their step, guidance and
shift defaults. It reads no file itself: the source's length is handed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from bygheartd import catalog
from bygheartd.errors import RequestError
from bygheartd.songs import fields, values

__all__ = [
    "EDIT_KEYS",
    "MAX_EXTEND_SECONDS",
    "SEAM_SECONDS",
    "expand_edit_keys",
    "extend_bounds",
    "family",
    "model_defaults",
    "needs_base_model",
    "track_list",
]

EDIT_KEYS: Final = ("extend", "extend_before", "stems", "add_layer", "accompany")
# Where new material may start before the old end (and end after the old start): the
# repaint re-blends this much of the source so the seam is not heard.
SEAM_SECONDS: Final = 2.0
# The server checks no maximum; the model is trained for songs up to 600 s.
MAX_EXTEND_SECONDS: Final = 600.0

# Per-family defaults (ACESTEP-TASKS.md §3), applied when a song sets none of its own:
# turbo is distilled for 8 steps (the server clamps more to 8, and ignores guidance);
# sft is made for 50 steps; base runs 32 steps, the UI's value (docs and training use
# 50: set inference_steps for more detail). shift 3.0 everywhere, as the UI and the API
# default, not the training scripts' 1.0.
_DEFAULTS: Final[dict[str, dict[str, float | int]]] = {
    "turbo": {"inference_steps": 8, "shift": 3.0},
    "sft": {"inference_steps": 50, "guidance_scale": 7.0, "shift": 3.0},
    "base": {"inference_steps": 32, "guidance_scale": 7.0, "shift": 3.0},
}


def family(model: str | None) -> str | None:
    """A model's family by the UI's token rule: `turbo` before `sft` before `base`
    (`xl` is only a size); None for a name with none of them (or no model)."""
    if not model:
        return None
    tokens = model.lower().replace("_", "-").split("-")
    for name in ("turbo", "sft", "base"):
        if name in tokens:
            return name
    return None


def model_defaults(model: str | None) -> dict[str, float | int]:
    """The steps, guidance and shift a song on `model` gets when it sets none of them."""
    found = family(model)
    return dict(_DEFAULTS[found]) if found else {}


def needs_base_model(task: str) -> bool:
    """Stems, layers and accompaniment: a turbo model is not refused, it just does badly."""
    return task in catalog.tasks_needing_base_model()


def track_list(name: str, value: Any) -> list[str]:
    """Track names from a list or `vocals, drums`, each one the server knows, in order."""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple) or not value:
        raise values.problem(
            f"{name} must be a list of track names, not {fields.show(value)}",
            f"write {name}: [vocals, drums, bass] (the names: {', '.join(fields.track_names())})",
        )
    out: list[str] = []
    for item in value:
        track = fields.track_name(item, "acestep")
        if track is None:
            continue
        if track not in out:
            out.append(track)
    return out


def _seconds(name: str, value: Any) -> float:
    try:
        number = float(values.to_number(name, value))
        values.in_range(name, number, 0.5, MAX_EXTEND_SECONDS, " seconds")
    except RequestError as exc:
        raise values.problem(
            exc.reason, f"give the seconds to add, e.g. {name}: 30 (at most 600)"
        ) from None
    return number


def extend_bounds(
    source_seconds: float, after: float = 0.0, before: float = 0.0
) -> dict[str, float]:
    """`repainting_start` and `repainting_end` that make a song `after` seconds longer at
    its end, or `before` seconds longer at its start (one side per task: both at once
    would repaint the whole song).

    Past the end: the region starts SEAM_SECONDS before the old end and ends `after` past
    it, so the server pads silence there and paints into it. Before the start: a negative
    start pads silence before the song, and the region ends SEAM_SECONDS into it. The end
    is never 0 (the server reads 0 as "to the end")."""
    if after and before:
        raise RequestError(
            "extend and extend_before both given",
            hint="extend one side per song: make the extended song, then extend it again",
        )
    seam = min(SEAM_SECONDS, source_seconds / 2)
    if after:
        return {
            "repainting_start": round(max(0.0, source_seconds - seam), 3),
            "repainting_end": round(source_seconds + after, 3),
        }
    return {"repainting_start": -round(before, 3), "repainting_end": round(max(seam, 0.1), 3)}


def expand_edit_keys(
    data: Mapping[str, Any],
    source_seconds: Callable[[str], float] | None,
    backend: str = "acestep",
) -> dict[str, Any]:
    """The song's keys with the edit keys made plain request keys. `stems` stays (with
    `task_type: extract`): a stems song is one extract job per track, made by the service.

    `source_seconds(name)` measures the named source audio (extend needs its length); None
    when there is no file to measure, which makes `extend` an error saying so. On ACE-Step a
    task that needs a base model gets the first base model unless the song names one."""
    given = {fields.key_name(k): k for k in data if isinstance(k, str)}
    present = [k for k in EDIT_KEYS if k in given]
    if not present:
        return dict(data)
    out = _expand(data, given, present, source_seconds)
    task = str(out.get("task_type"))
    has_model = any(fields.CANONICAL.get(fields.key_name(k)) == "model" for k in out)
    if backend == "acestep" and needs_base_model(task) and not has_model:
        out["model"] = catalog.acestep_base_models()[0]
    return out


def _expand(
    data: Mapping[str, Any],
    given: Mapping[str, str],
    present: Sequence[str],
    source_seconds: Callable[[str], float] | None,
) -> dict[str, Any]:
    if len(present) > 1:
        raise RequestError(
            f"{' and '.join(present)} are different edits",
            key=given[present[1]],
            hint="one edit per song file: write a second file for the other",
        )
    key = present[0]
    raw = given[key]
    out = {k: v for k, v in data.items() if k != raw}
    task_given = out.get("task_type")
    if task_given not in (None, ""):
        raise RequestError(
            f"{raw} sets the task itself, but task_type is {fields.show(task_given)}",
            key="task_type",
            hint=f"remove task_type: {raw} means it",
        )
    if not any(fields.CANONICAL.get(fields.key_name(k)) == "source_audio" for k in out):
        raise RequestError(
            f"{raw} needs source_audio: the song to {_VERB[key]}",
            key=raw,
            hint="name the audio next to the song file: source_audio: song.mp3",
        )
    value = data[raw]
    try:
        if key in ("extend", "extend_before"):
            seconds = _seconds(key, value)
            if source_seconds is None:
                raise values.problem(
                    f"{key} needs the source audio's length, and there is no file to read here",
                    "use a song file beside its audio, or `bygheartd extend JOB`",
                )
            source = _source_name(out)
            length = source_seconds(source)
            bounds = extend_bounds(
                length, after=seconds if key == "extend" else 0.0,
                before=seconds if key == "extend_before" else 0.0,
            )  # fmt: skip
            out.update(task_type="repaint", **bounds)
        elif key == "stems":
            out.update(task_type="extract", stems=track_list(key, value))
        elif key == "add_layer":
            out.update(task_type="lego", track_name=fields.track_name(value, "acestep"))
        else:
            out.update(task_type="complete", track_classes=track_list(key, value))
        return out
    except RequestError as exc:
        raise RequestError(exc.reason, key=raw, hint=exc.hint) from None


_VERB: Final = {
    "extend": "extend",
    "extend_before": "extend",
    "stems": "split into stems",
    "add_layer": "add a layer to",
    "accompany": "accompany",
}


def _source_name(data: Mapping[str, Any]) -> str:
    for key, value in data.items():
        if fields.CANONICAL.get(fields.key_name(key)) == "source_audio":
            return str(value)
    raise RequestError("no source_audio")  # checked by the caller first
