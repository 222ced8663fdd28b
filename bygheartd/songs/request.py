"""The validated song request (`SongRequest`): friendly keys in, the API's body out.

It owns key names and aliases, the rules between fields (instrumental vs lyrics, description
vs lyrics in Simple mode, seeds per take, source audio and expert controls per task, the daily
credit cap), the output slug and the title made from a description; per-field rules live in
`fields.py` and `values.py`. It knows nothing of files, stores or HTTP.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator

from bygheartd import catalog
from bygheartd.errors import RequestError
from bygheartd.songs import edits, fields

__all__ = [
    "KEY_SYNONYMS",
    "RequestRules",
    "SongRequest",
    "normalise_request",
    "slugify",
    "without_secrets",
]

_MARKERS = ("[inst]", "[instrumental]")
_REPAINT_TASKS = ("repaint", "lego")
_COVER_TASKS = ("cover", "cover-nofsq")
# What the server itself reads as "instrumental" in a Simple-mode description (English only).
_INSTRUMENTAL_WORDS = ("instrumental", "pure music", "pure instrument")
# The expert controls: friendly key -> the server's field, sent only when set.
_EXPERT_FIELDS = {
    "cover_strength": "audio_cover_strength",
    "cover_noise": "cover_noise_strength",
    "repaint_mode": "repaint_mode",
    "repaint_strength": "repaint_strength",
    "repaint_crossfade_frames": "repaint_latent_crossfade_frames",
    "repaint_crossfade_seconds": "repaint_wav_crossfade_sec",
    "track_name": "track_name",
    "track_classes": "track_classes",
    "lm_repetition_penalty": "lm_repetition_penalty",
    "use_cot_caption": "use_cot_caption",
    "use_cot_language": "use_cot_language",
    "use_cot_metas": "use_cot_metas",
    "infer_method": "infer_method",
    "shift": "shift",
    "timesteps": "timesteps",
    "use_adg": "use_adg",
    "cfg_interval_start": "cfg_interval_start",
    "cfg_interval_end": "cfg_interval_end",
}


@dataclass(frozen=True)
class RequestRules:
    """What a request is checked against, decided once from the config (by the service)
    and handed down whole: the backend's models and ranges, the defaults that fill unset
    keys, and the most one job may cost (None: no cap)."""

    backend: str = "bygheart"
    defaults: Mapping[str, Any] | None = None
    max_job_credits: int | None = catalog.DAILY_CREDIT_CAP


DEFAULT_RULES = RequestRules()

# Body fields that carry a key (API.md: ACE-Step also takes the key as `ai_token` in the
# body). bygheartd sends its key as a header only; a body shown anywhere never has one.
SECRET_BODY_FIELDS = frozenset({"ai_token", "api_key", "authorization", "token"})


def without_secrets(body: Mapping[str, Any]) -> dict[str, Any]:
    """A `/release_task` body fit to show (the sidecar's `sent`, `show --json`)."""
    return {k: v for k, v in body.items() if str(k).lower() not in SECRET_BODY_FIELDS}


class SongRequest(BaseModel):
    """One song to make: what the user asked for, normalised and checked for its backend.

    Build it with `SongRequest.build(...)` (or `model_validate(data, context={"backend": ...})`):
    every spelling people write is normalised there, and every problem is a `RequestError`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str | None = None
    style: str = ""
    lyrics: str = ""
    model: str | None = None
    duration: float | Literal["auto"] | None = None
    bpm: int | None = None
    key: str | None = None
    time_signature: Literal["2", "3", "4", "6"] | None = None
    language: str | None = None
    instrumental: bool = False
    takes: int = 1
    seed: int | list[int] | None = None
    negative: str | None = None
    audio_format: str = "mp3"
    thinking: bool = False
    use_format: bool = False
    inference_steps: int | None = None
    guidance_scale: float | None = None
    lm_model_path: str | None = None
    lm_temperature: float | None = None
    lm_cfg_scale: float | None = None
    lm_top_k: int | None = None
    lm_top_p: float | None = None
    task_type: str = "text2music"
    repainting_start: float | None = None
    repainting_end: float | None = None
    source_audio: str | None = None
    description: str | None = None
    reference_audio: str | None = None
    cover_strength: float | None = None
    cover_noise: float | None = None
    repaint_mode: str | None = None
    repaint_strength: float | None = None
    repaint_crossfade_frames: int | None = None
    repaint_crossfade_seconds: float | None = None
    track_name: str | None = None
    track_classes: list[str] | None = None
    lm_repetition_penalty: float | None = None
    use_cot_caption: bool | None = None
    use_cot_language: bool | None = None
    use_cot_metas: bool | None = None
    infer_method: str | None = None
    shift: float | None = None
    timesteps: str | None = None
    use_adg: bool | None = None
    cfg_interval_start: float | None = None
    cfg_interval_end: float | None = None
    stems: list[str] | None = None
    stem_group: str | None = None

    @property
    def simple_mode(self) -> bool:
        """Simple mode: a description and no lyrics; the model writes the song."""
        return self.description is not None

    def sample_query(self) -> str:
        """The description as sent: `/release_task` has no instrumental field in Simple
        mode (the server reads the hint from the text), so `instrumental: true` adds one."""
        text = self.description or ""
        if self.instrumental and not _says_instrumental(text):
            text = f"{text.rstrip().rstrip(',.;')}, instrumental"
        return text

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any, info: ValidationInfo) -> Any:
        context: Mapping[str, Any] = info.context or {}
        if isinstance(data, SongRequest):
            data = data.model_dump(exclude_none=True)
        rules = context.get("rules") or RequestRules(
            backend=context.get("backend", "bygheart"),
            defaults=context.get("defaults"),
            max_job_credits=context.get("max_job_credits", catalog.DAILY_CREDIT_CAP),
        )
        return normalise_request(
            data,
            backend=rules.backend,
            defaults=rules.defaults,
            source=context.get("source", "<request>"),
            max_job_credits=rules.max_job_credits,
        )

    @classmethod
    def build(
        cls,
        data: Mapping[str, Any],
        rules: RequestRules = DEFAULT_RULES,
        *,
        source: str = "<request>",
    ) -> SongRequest:
        """Validate `data` against `rules`, filling unset keys from its defaults.

        Raises `RequestError` naming `source`, the key as written, and the fix.
        """
        context = {"rules": rules, "source": source}
        try:
            return cls.model_validate(data, context=context)
        except ValidationError as exc:  # a normaliser let a bad value through: still ours
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or None
            raise RequestError(f"{where}: {first['msg']}", source=source, key=where) from None

    def with_changes(
        self,
        changes: Mapping[str, Any],
        rules: RequestRules = DEFAULT_RULES,
        *,
        source: str = "<request>",
    ) -> SongRequest:
        """This request with `changes` (any key spelling; None unsets) applied and re-validated.

        For plugins' `before_submit`: `{"prompt": ...}` replaces `style` instead of clashing.
        """
        data = self.model_dump(mode="json", exclude_none=True)
        for _raw, canon, value in _resolve_keys(changes, source):
            data.pop(canon, None)
            if value is not None:
                data[canon] = value
        return SongRequest.build(data, rules, source=source)

    def to_api_body(self) -> dict[str, Any]:
        """The JSON body for `POST /release_task`, with the ACE-Step field names of API.md."""
        body: dict[str, Any] = {
            "prompt": self.style,
            "lyrics": "[Instrumental]" if self.instrumental else self.lyrics,
            **(
                {"sample_mode": True, "sample_query": self.sample_query(), "lyrics": ""}
                if self.simple_mode
                else {}
            ),
            "batch_size": self.takes,  # the server's default is 2: always say it
            "audio_format": self.audio_format,
            "thinking": self.thinking,
            "use_format": self.use_format,
            "task_type": self.task_type,
        }
        if self.model is not None:
            body["model"] = self.model
        if isinstance(self.duration, float):
            body["audio_duration"] = (
                int(self.duration) if self.duration.is_integer() else (self.duration)
            )
        optional = {
            "bpm": self.bpm,
            "key_scale": self.key,
            "time_signature": self.time_signature,
            "vocal_language": self.language,
            "lm_negative_prompt": self.negative,
            "inference_steps": self.inference_steps,
            "guidance_scale": self.guidance_scale,
            "lm_model_path": self.lm_model_path,
            "lm_temperature": self.lm_temperature,
            "lm_cfg_scale": self.lm_cfg_scale,
            "lm_top_k": self.lm_top_k,
            "lm_top_p": self.lm_top_p,
            "repainting_start": self.repainting_start,
            "repainting_end": self.repainting_end,
        }
        optional |= {api: getattr(self, name) for name, api in _EXPERT_FIELDS.items()}
        body.update({k: v for k, v in optional.items() if v is not None})
        # The model family's steps, guidance and shift where the song sets none (edits.py).
        for name, value in edits.model_defaults(self.model).items():
            body.setdefault(name, value)
        if self.seed is None:
            body["seed"], body["use_random_seed"] = -1, True
        elif isinstance(self.seed, list):
            body["seed"], body["use_random_seed"] = ",".join(map(str, self.seed)), False
        else:
            body["seed"], body["use_random_seed"] = self.seed, False
        return body

    def credit_cost(self, backend: str) -> int:
        """Credits this request costs on `backend` (every take is charged)."""
        return catalog.credit_cost(self.model, self.takes, backend)

    def canonical_json(self) -> str:
        """A stable text of the whole request (title included), for de-duplication."""
        data = self.model_dump(mode="json", exclude_none=True)
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def display_title(self, fallback: str) -> str:
        """The title, else `fallback` (a file's stem), else one made from the description."""
        return self.title or fallback or title_from_description(self.description or "")

    def warnings(self) -> list[str]:
        """What is allowed but probably not meant, said when the job is queued (never a
        refusal): a song with no style at all, because neither the file nor the
        configuration's `[defaults] style` gave one, comes out in whatever style the model
        picks, and nothing else would tell the user why. `use_cot_metas` likewise: the
        stock ACE-Step 1.5 server (both snapshots) has no such request field and decides
        itself (it plans the metas left on auto, and never in Simple mode), so the switch is
        sent for servers that read it but does nothing on the genuine one."""
        found: list[str] = []
        if self.use_cot_metas is not None:
            found.append(
                "use_cot_metas: a stock ACE-Step server ignores this switch (it plans the bpm,"
                " key and length you leave on auto by itself); set bpm, key, time_signature"
                " and duration to fix them, or remove use_cot_metas"
            )
        # In Simple mode the model picks it; a stem (extract) has no use for one.
        if not (self.style.strip() or self.simple_mode or self.task_type == "extract"):
            found.insert(
                0,
                "no style: the song goes out without one; give it a style (`style:` in a"
                " song file, the `style` argument over MCP) or set [defaults] style in the"
                " config",
            )
        return found


def normalise_request(
    data: Any,
    *,
    backend: str = "bygheart",
    defaults: Mapping[str, Any] | None = None,
    source: str = "<request>",
    max_job_credits: int | None = catalog.DAILY_CREDIT_CAP,
) -> dict[str, Any]:
    """Canonical field names and values, defaults applied and every rule checked."""
    if backend not in catalog.BACKENDS:
        raise RequestError(
            f"unknown backend {backend!r}", source=source, hint="use bygheart or acestep"
        )
    if not isinstance(data, Mapping):
        raise RequestError(
            f"a song request must be a table of keys, not {fields.show(data)}", source=source
        )
    clean: dict[str, Any] = {}
    origin: dict[str, str] = {}  # canonical name -> the key as the user wrote it
    defaulted: set[str] = set()  # filled from the configuration, not by the request
    # Every key is checked before anything is reported: a user who wrote three bad values
    # learns of all three at once instead of in three rounds of drop, read, fix.
    problems: list[RequestError] = []
    failed: set[str] = set()  # set by the request, but badly: the defaults stay out of it
    resolved, bad_keys = _sort_keys(data, source)
    problems += bad_keys
    for raw, canon, value in resolved:
        if value is None or (value == "" and canon != "lyrics"):
            continue  # an unset key: the defaults may fill it
        try:
            _normalise_into(clean, canon, value, backend, source=source, key=raw)
        except RequestError as exc:
            problems.append(exc)
            failed.add(canon)
        origin.setdefault(canon, raw)
    resolved, bad_keys = _sort_keys(defaults or {}, source)
    problems += bad_keys
    for raw, canon, value in resolved:
        if canon in clean or canon in failed or value is None or value == "":
            continue
        try:
            _normalise_into(
                clean, canon, value, backend, source=source, key=raw, from_defaults=True
            )
        except RequestError as exc:
            problems.append(exc)
        origin.setdefault(canon, raw)
        defaulted.add(canon)
    if problems:  # the rules between fields would judge values that are not there
        raise RequestError.collect(problems, source=source)
    _check_rules(clean, origin, backend, source, max_job_credits, defaulted)
    return clean


def _resolve_keys(data: Mapping[Any, Any], source: str) -> list[tuple[str, str, Any]]:
    """(key as written, canonical name, value); unknown and doubled keys are errors."""
    resolved, problems = _sort_keys(data, source)
    if problems:
        raise RequestError.collect(problems, source=source)
    return resolved


def _sort_keys(
    data: Mapping[Any, Any], source: str
) -> tuple[list[tuple[str, str, Any]], list[RequestError]]:
    """(key as written, canonical name, value) for the known keys, and a problem for each
    unknown or doubled one (so that all of them are reported together)."""
    seen: dict[str, str] = {}
    out: list[tuple[str, str, Any]] = []
    problems: list[RequestError] = []
    for raw, value in data.items():
        if not isinstance(raw, str):
            problems.append(RequestError(f"key {fields.show(raw)} is not a name", source=source))
            continue
        canon = fields.CANONICAL.get(fields.key_name(raw))
        if canon is None:
            problems.append(
                RequestError(f"unknown key {raw!r}", source=source, key=raw, hint=_near_key(raw))
            )
            continue
        if canon in seen:
            problems.append(
                RequestError(
                    f"{seen[canon]!r} and {raw!r} both set {canon}",
                    source=source,
                    key=raw,
                    hint="keep one of them",
                )
            )
            continue
        seen[canon] = raw
        out.append((raw, canon, value))
    return out, problems


# Words people use for a field that are not keys: named in the hint, never accepted silently.
_SYNONYMS = {
    "tempo": "bpm",
    "genre": "style",
    "genres": "style",
    "tags": "style",
    "length": "duration",
    "scale": "key",
    "meter": "time_signature",
    "lang": "language",
    "vocals": "language",
    "batch": "takes",
    "count": "takes",
    "variations": "takes",
    "instrumental_only": "instrumental",
    "negative_styles": "negative",
    "steps": "inference_steps",
    "audio": "source_audio",
}
# What an unknown key is most likely meant to be, when nothing is near: the keys most songs
# use (the guide lists all fifty).
COMMON_KEYS = (
    "title",
    "style",
    "lyrics",
    "description",
    "model",
    "duration",
    "bpm",
    "key",
    "language",
    "instrumental",
    "takes",
)
# The same words for other callers that name fields (MCP tool arguments).
KEY_SYNONYMS: Mapping[str, str] = _SYNONYMS


def _near_key(raw: str) -> str:
    name = fields.key_name(raw)
    near = difflib.get_close_matches(name, [*fields.CANONICAL, *_SYNONYMS], n=1, cutoff=0.6)
    tokens = name.split("_")
    if not near:  # `tempo_bpm`, `song_title`: a valid name inside the key
        near = [t for t in tokens if t in fields.CANONICAL or t in _SYNONYMS][-1:]
    if not near and len(name) >= 3:  # `dur`, `inst`: the start of one key
        near = [k for k in (*fields.CANONICAL, *_SYNONYMS) if k.startswith(name)][:1]
    if near:
        valid = near[0] if near[0] in fields.CANONICAL else _SYNONYMS[near[0]]
        return f"did you mean {valid!r}?"
    common = ", ".join(k for k in COMMON_KEYS if k in fields.CANONICAL)
    return f"the usual keys are {common} (`bygheartd guide` lists every key)"


def _normalise_into(
    clean: dict[str, Any],
    canon: str,
    value: Any,
    backend: str,
    *,
    source: str,
    key: str,
    from_defaults: bool = False,
) -> None:
    try:
        result = fields.NORMALISERS[canon](value, backend)
    except RequestError as exc:
        reason = exc.reason + (" (from the configuration defaults)" if from_defaults else "")
        raise RequestError(reason, source=source, key=key, hint=exc.hint) from None
    except RecursionError:
        raise RequestError(f"{key} is nested too deeply", source=source, key=key) from None
    if result is not None:
        clean[canon] = result


def _check_rules(
    clean: dict[str, Any],
    origin: dict[str, str],
    backend: str,
    source: str,
    max_job_credits: int | None,
    defaulted: set[str] | None = None,
) -> None:
    def fail(reason: str, canon: str | None, hint: str | None = None) -> RequestError:
        return RequestError(reason, source=source, key=origin.get(canon or ""), hint=hint)

    def random_seed() -> None:
        if clean.pop(fields.USE_RANDOM_SEED, None) and "seed" in clean:
            raise fail(
                f"seed {fields.show(clean['seed'])} and use_random_seed: true contradict each"
                " other",
                "seed",
                "remove use_random_seed to keep the seed, or remove seed for random takes",
            )

    # Each rule is independent of the others' outcome: all that fail are reported together.
    problems: list[RequestError] = []
    for check in (
        random_seed,
        lambda: _check_simple(clean, fail, defaulted or set()),
        lambda: _check_lyrics(clean, fail),
        lambda: _check_task(clean, backend, fail),
        lambda: _check_expert(clean, fail),
        lambda: _check_takes(clean, origin, backend, fail, max_job_credits),
    ):
        try:
            check()
        except RequestError as exc:
            problems.append(exc)
    if problems:
        raise RequestError.collect(problems, source=source)


def _check_takes(
    clean: dict[str, Any],
    origin: dict[str, str],
    backend: str,
    fail: Any,
    max_job_credits: int | None,
) -> None:
    """One seed per take, and a job the daily cap can ever pay for."""
    takes = clean.get("takes", 1)
    seeds = clean.get("seed")
    if isinstance(seeds, list):
        if len(seeds) != takes:
            raise fail(
                f"seed lists {len(seeds)} seed{'s' if len(seeds) != 1 else ''}, but takes is "
                f"{takes}",
                "seed",
                "give one seed per take, or a single seed",
            )
        if len(seeds) == 1:
            clean["seed"] = seeds[0]
    if backend != "acestep" and max_job_credits is not None:
        model = clean.get("model") or catalog.DEFAULT_HOSTED_MODEL
        per_take = catalog.HOSTED_MODELS[model].credits
        if per_take * takes > max_job_credits:
            fits = max_job_credits // per_take
            raise fail(
                f"this job costs {catalog.credits_phrase(per_take * takes)} ({model}: "
                f"{per_take} × {takes} take{'s' if takes != 1 else ''}),"
                f" more than the daily cap of {max_job_credits}",
                "takes" if "takes" in origin else "model",
                (f"use at most {fits} take{'s' if fits != 1 else ''}, or" if fits else "use")
                + " a cheaper model (bygheart-melody-fast costs 1 credit a take)",
            )


def _check_simple(clean: dict[str, Any], fail: Any, defaulted: set[str]) -> None:
    """Simple mode (a description): the model writes the lyrics, so lyrics are an error,
    and `thinking` is on unless the request itself turned it off."""
    if "description" not in clean:
        return
    if "description" in defaulted:  # a default description would turn every song into one
        clean.pop("description")
        return
    lyrics: str = clean.get("lyrics", "")
    if lyrics.strip():
        raise fail(
            "description and lyrics are both given: pick one",
            "description",
            "keep description for Simple mode (the model writes the lyrics), or keep the"
            " lyrics for Custom mode and remove description",
        )
    task = clean.get("task_type", "text2music")
    if task != "text2music":
        raise fail(
            f"description (Simple mode) makes a new song, but task_type is {task}",
            "description",
            "remove description and describe the change in style, or remove task_type",
        )
    if "thinking" not in clean or "thinking" in defaulted:
        clean["thinking"] = True
    clean["lyrics"] = ""


def _check_lyrics(clean: dict[str, Any], fail: Any) -> None:
    if "description" in clean:
        return  # Simple mode: no lyrics by design, `instrumental` becomes a hint in the query
    lyrics: str = clean.get("lyrics", "")
    instrumental = clean.get("instrumental")
    if lyrics.strip().lower() in _MARKERS:
        if instrumental is False:
            raise fail(
                f"instrumental: false, but the lyrics are only {lyrics.strip()!r}",
                "instrumental",
                "write lyrics, or set instrumental: true",
            )
        clean["instrumental"], clean["lyrics"] = True, ""
    elif instrumental and lyrics.strip():
        raise fail(
            "instrumental: true, but there are lyrics",
            "instrumental",
            "remove the lyrics, or set instrumental: false to sing them",
        )
    elif instrumental:
        clean["lyrics"] = ""
    elif not lyrics.strip() and clean.get("task_type", "text2music") == "text2music":
        raise fail(
            "there are no lyrics",
            "lyrics",
            "write lyrics (after the front matter, or in a `lyrics` key),"
            " set instrumental: true for a song without vocals, or write"
            " `description:` to let the model write the song (Simple mode)",
        )


def _check_task(clean: dict[str, Any], backend: str, fail: Any) -> None:
    task = clean.get("task_type", "text2music")
    needs_source = catalog.tasks_needing_source_audio()
    if task in needs_source and "source_audio" not in clean:
        raise fail(
            f"task_type {task} needs source_audio",
            "task_type",
            "name the audio to edit: source_audio: take.wav (relative to the song file)",
        )
    if task not in needs_source and "source_audio" in clean:
        raise fail(
            f"source_audio is only used by task_type {', '.join(needs_source)}",
            "source_audio",
            "add task_type: cover (or repaint, ...), or remove source_audio",
        )
    base = catalog.acestep_base_models()
    needs_base = backend == "acestep" and task in catalog.tasks_needing_base_model()
    if needs_base and clean.get("model") not in base:
        raise fail(
            f"task_type {task} needs a base model",
            "model" if "model" in clean else "task_type",
            f"set model: {base[0]} (or {', '.join(base[1:])})",
        )
    for name in ("repainting_start", "repainting_end"):
        if name in clean and task not in _REPAINT_TASKS:
            raise fail(
                f"{name} is only used by task_type repaint or lego",
                name,
                "add task_type: repaint, or remove it",
            )
    start, end = clean.get("repainting_start", 0.0), clean.get("repainting_end", -1.0)
    if end > 0 and end <= start:
        raise fail(
            f"repainting_end {fields.show(end)} is not after repainting_start {fields.show(start)}",
            "repainting_end",
            "set an end after the start, or -1 for the end of the source",
        )


def _check_expert(clean: dict[str, Any], fail: Any) -> None:
    """Expert controls only where the server uses them: a control the task ignores is a
    mistake the user should hear about, not a silent no-op."""
    task = clean.get("task_type", "text2music")
    problems: list[RequestError] = []

    def only(names: tuple[str, ...], tasks: tuple[str, ...], example: str) -> None:
        for name in names:
            if name in clean and task not in tasks:
                problems.append(
                    fail(
                        f"{name} is only used by task_type {' or '.join(tasks)}",
                        name,
                        f"add task_type: {example}, or remove {name}",
                    )
                )

    only(("cover_strength", "cover_noise"), _COVER_TASKS, "cover")
    repaint = (
        "repaint_mode",
        "repaint_strength",
        "repaint_crossfade_frames",
        "repaint_crossfade_seconds",
    )
    only(repaint, _REPAINT_TASKS, "repaint")
    only(("track_name",), ("extract", "lego"), "extract")
    only(("stems",), ("extract",), "extract")
    if "stems" in clean and "track_name" in clean:
        problems.append(
            fail(
                "stems and track_name both given",
                "stems",
                "keep stems (one stem per track) or track_name (one stem), not both",
            )
        )
    only(("track_classes",), ("complete",), "complete")
    mode = clean.get("repaint_mode", "balanced")
    if "repaint_strength" in clean and mode != "balanced":
        problems.append(
            fail(
                f"repaint_strength is only used with repaint_mode balanced, not {mode}",
                "repaint_strength",
                "remove repaint_strength, or set repaint_mode: balanced",
            )
        )
    start, end = clean.get("cfg_interval_start", 0.0), clean.get("cfg_interval_end", 1.0)
    if start >= end:
        problems.append(
            fail(
                f"cfg_interval_start {fields.show(start)} is not before cfg_interval_end"
                f" {fields.show(end)}",
                "cfg_interval_start" if "cfg_interval_start" in clean else "cfg_interval_end",
                "use a start below the end, both from 0 to 1 (e.g. 0.1 and 0.9)",
            )
        )
    if problems:
        raise RequestError.collect(problems)


def _says_instrumental(text: str) -> bool:
    lowered = text.lower().strip().rstrip(".!")
    return any(word in lowered for word in _INSTRUMENTAL_WORDS) or lowered.endswith(" solo")


_SMALL_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "as",
        "at",
        "but",
        "by",
        "for",
        "from",
        "in",
        "into",
        "of",
        "on",
        "or",
        "the",
        "to",
        "with",
        "about",
        "over",
        "under",
    ]
)
_LEADING_FILLER = frozenset(["a", "an", "the", "some"])
_TITLE_WORDS = 6
_TITLE_CHARS = 60


def title_from_description(description: str) -> str:
    """A short title made from a Simple-mode description ("a dreamy lo-fi song about rainy
    Tokyo nights, female vocals" -> "Dreamy Lo-Fi Song about Rainy Tokyo"): the first
    clause, a few words, title case; "" when there is no text."""
    clause = re.split(r"[,;:.!?\n()\[\]]|\s[-–—]\s", description.strip(), maxsplit=1)[0]
    words = [w for w in clause.split() if any(ch.isalnum() for ch in w)]
    while len(words) > 1 and words[0].lower() in _LEADING_FILLER:
        words.pop(0)
    if not words:
        return ""
    if len(words) == 1 and len(words[0]) > _TITLE_CHARS:  # no spaces (CJK): cut by length
        return words[0][:20]
    if len(words) > _TITLE_WORDS:
        words = words[:_TITLE_WORDS]
        # Cut inside a phrase ("leaving a small | town"): end before its small word instead.
        if len(words) > 3 and words[-2].lower() in _SMALL_WORDS:
            words = words[:-2]
    while len(words) > 1 and words[-1].lower() in _SMALL_WORDS:
        words.pop()
    out: list[str] = []
    for index, word in enumerate(words):
        if index and word.lower() in _SMALL_WORDS:
            out.append(word.lower())
        else:
            out.append(
                "-".join(p[:1].upper() + p[1:] if p.islower() else p for p in word.split("-"))
            )
    title = " ".join(out)
    while len(title) > _TITLE_CHARS and " " in title:
        title = title.rsplit(" ", 1)[0]
    return title[:_TITLE_CHARS]


_FOLD = str.maketrans(
    {"ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE", "đ": "d"}
    | {"Đ": "D", "ł": "l", "Ł": "L", "þ": "th", "Þ": "TH", "ð": "d", "Ð": "D", "ı": "i"}
    | {"&": " and ", "'": "", "’": ""}
)


def slugify(title: str) -> str:
    """Title -> ASCII `[a-z0-9-]`, at most 80 characters; "" when nothing is left.

    Path separators and dots vanish, so a title can never name a path ("../x" -> "x").
    """
    from anyascii import anyascii  # a real transliteration: 東京 keeps its words

    text = unicodedata.normalize("NFKC", title.translate(_FOLD))
    text = anyascii("".join(_spaced(ch) for ch in text)).lower()
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return slug[:80].rstrip("-")


_SYLLABIC = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL")


def _spaced(ch: str) -> str:
    """A CJK or kana character is a word (or syllable) of its own: keep them apart, so
    `東京の夜` folds to `dong-jing-no-ye`, not `dongjingnoye`."""
    if ch.isascii():
        return ch
    return f" {ch} " if unicodedata.name(ch, "").startswith(_SYLLABIC) else ch
