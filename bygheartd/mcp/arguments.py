"""Tool arguments the song normalisers do not cover (wait, job id, status filter, limit),
checked with the same wording as song files, and the JSON schemas the tools declare.

Why not let the SDK validate: it answers a constrained parameter with pydantic's own text
(and an errors.pydantic.dev link), and it refuses spellings a song file accepts (`Am`,
`4/4`, `"124 bpm"`). So the tools take plain JSON values and check them here or in
`SongRequest.build`; the schemas still say what is expected, as descriptions and examples.
Plain Python, no `mcp` import.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError, WithJsonSchema

from bygheartd.errors import RequestError
from bygheartd.jobs import JobStatus
from bygheartd.songs import values

__all__ = [
    "ArgumentError",
    "Wait",
    "job_ref",
    "limit_value",
    "optional_flag",
    "optional_text",
    "plain_validation_text",
    "schema",
    "statuses",
    "unknown_arguments",
    "wait_seconds",
]

LIMIT_MAX = 200


class ArgumentError(RequestError):
    """A tool argument that cannot be used: `argument: reason: hint`."""


def schema(**properties: Any) -> WithJsonSchema:
    """The JSON schema a parameter declares, without pydantic enforcing it (see above)."""
    return WithJsonSchema(properties)


def _fail(exc: RequestError) -> ArgumentError:
    return ArgumentError(exc.reason, hint=exc.hint)


@dataclass(frozen=True)
class Wait:
    """How long a tool waits, and the note to add when the request was cut down."""

    seconds: float
    note: str | None = None

    def note_for(self, status: JobStatus) -> str | None:
        """The note once the wait is over: only a song still being made is worth waiting on
        (a finished one never gets an invitation to wait more)."""
        return None if status.is_final else self.note


def wait_seconds(value: Any, limit: float) -> Wait:
    """Seconds to wait: a number (or numeric text) from 0; above `limit` it is clamped, not
    refused, since the job runs on either way and the caller can simply ask again."""
    if value is None:
        return Wait(0.0)
    try:
        number = values.to_number("wait_seconds", value)
        values.in_range("wait_seconds", number, 0, float("inf"))
    except RequestError as exc:
        raise ArgumentError(exc.reason, hint=f"use 0 to {values.fmt(limit)}") from None
    if number > limit:
        note = (
            f"wait_seconds {values.fmt(number)} is above the limit of {values.fmt(limit)}: "
            f"waited {values.fmt(limit)} s at most; call get_song with wait_seconds to wait on."
        )
        return Wait(limit, note)
    return Wait(float(number))


def job_ref(value: Any) -> str:
    """A job id or prefix as text; the store says when it is too short or unknown."""
    if value is None:  # sent as null: as good as left out
        raise ArgumentError(
            "job_id is required", hint="give a job id or a unique prefix of 6+ (see list_songs)"
        )
    try:
        text = values.text_value("job_id", value).strip()
    except RequestError as exc:
        raise _fail(exc) from None
    if not text:
        raise ArgumentError("job_id is empty", hint="give a job id or a unique prefix of 6+")
    return text


def optional_text(name: str, value: Any, max_length: int) -> str | None:
    """An optional one-line text argument (idempotency_key, lyrics_file)."""
    if value is None:
        return None
    try:
        text = values.text_value(name, value)
    except RequestError as exc:
        raise _fail(exc) from None
    if len(text) > max_length:
        raise ArgumentError(
            f"{name} is {len(text)} characters, over the limit of {max_length}", hint="shorten it"
        )
    return text


def optional_flag(name: str, value: Any) -> bool | None:
    """An optional true/false argument, with the spellings a song file accepts."""
    if value is None:
        return None
    from bygheartd.songs.fields import boolean

    try:
        return boolean(name, value, "bygheart")
    except RequestError as exc:
        raise _fail(exc) from None


def statuses(value: Any) -> list[JobStatus] | None:
    """`"failed"`, `"failed, held"` or `["failed", "held"]`; None or empty means all."""
    if value is None:
        return None
    items = value if isinstance(value, list | tuple) else [value]
    names: list[str] = []
    for item in items:
        try:
            text = values.text_value("status", item)
        except RequestError as exc:
            raise _fail(exc) from None
        names += [part.strip().lower() for part in text.split(",") if part.strip()]
    known = [s.value for s in JobStatus]
    found: list[JobStatus] = []
    for name in names:
        if name not in known:
            raise ArgumentError(
                f"unknown status {values.show(name)}", hint=values.suggest(name, known)
            )
        if JobStatus(name) not in found:
            found.append(JobStatus(name))
    return found or None


def limit_value(value: Any, default: int) -> int:
    """How many jobs to list: a whole number from 1 to 200."""
    if value is None:
        return default
    hint = f"use 1 to {LIMIT_MAX}"
    try:
        number = values.to_number("limit", value, integer=True)
        values.in_range("limit", number, 1, LIMIT_MAX)
    except RequestError as exc:
        raise ArgumentError(exc.reason, hint=hint) from None
    return int(number)


def unknown_arguments(given: Iterable[str], valid: Sequence[str]) -> ArgumentError | None:
    """Every argument name the tool does not have, each with the nearest valid one.

    Why: the SDK drops unknown names silently, so `generate_song(lyric=...)` or `stlye=`
    would queue a song without the lyrics or style the caller meant, and spend credits on
    it. Song files refuse unknown keys the same way; the words people use for a field
    (`tempo`, `genre`) point at the argument they mean, as in song files.
    """
    problems = [
        ArgumentError(f"unknown argument {values.show(name)}", hint=_nearest(name, valid))
        for name in given
        if name not in valid
    ]
    if not problems:
        return None
    return ArgumentError.collect(problems)


def _nearest(name: str, valid: Sequence[str]) -> str:
    from bygheartd.songs.request import KEY_SYNONYMS

    everything = f"the arguments are {', '.join(valid)}" if valid else "it takes no arguments"
    if not valid:
        return everything
    key = values.key_name(name)
    if key in valid:  # `Lyrics`, `wait-seconds`: the right name, spelled another way
        return f"did you mean {key!r}?"
    if KEY_SYNONYMS.get(key) in valid:
        return f"did you mean {KEY_SYNONYMS[key]!r}?"
    near = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    if not near:  # `wait`, `job`: one word of a valid name
        near = [v for v in valid if key and key in v.split("_")][:1]
    if near:
        return f"did you mean {near[0]!r}?"
    return everything


def plain_validation_text(exc: ValidationError, described: Mapping[str, str] | None = None) -> str:
    """What pydantic found, without its links: a last resort for arguments the SDK still
    checks itself (a required argument left out, mostly). `described` gives each argument's
    schema description, said with a missing one so that the caller knows what to pass."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "arguments"
        if error["type"] == "missing":
            what = (described or {}).get(where) or "see the tool's input schema"
            parts.append(f"{where} is required: {what}")
        else:
            parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
