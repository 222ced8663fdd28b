"""Edit tasks for every face: extend a finished song, split a song into stems, describe any
audio as a song-file draft, and each server's model inventory (DESIGN.md "Edit tasks").

How a stems request is kept without a new store schema: one job per stem. Each is an
ordinary extract job with its `track_name`, titled "<title> (<track>)", and all carry the
same `stem_group` request field (the song's slug), which delivery reads to put the files
together as `output/<group>-stems/<group>.<track>.<ext>`. So each stem is queued, routed,
priced, retried and cancelled like any job, and `list`/`show` need nothing new. A dropped
stems file gets its drop identity on its first stem job only (the store keeps one job per
drop); the others are queued in the same call.

Describe is not a job: a `full_analysis_only` task makes no audio and spends no
generation, so it is submitted and polled here like the language-model helpers, and its
answer becomes a draft checked with the song-file rules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from bygheartd import catalog
from bygheartd.api.client import BygheartClient, RetryPolicy, TaskState
from bygheartd.api.drafts import parse_draft
from bygheartd.api.errors import ApiError
from bygheartd.api.factory import make_client, make_server_client
from bygheartd.api.inventory import Inventory, parse_inventory
from bygheartd.api.lora import not_initialized, parse_lora_status
from bygheartd.config import Config
from bygheartd.errors import BygheartdError, RequestError
from bygheartd.jobs import Job, JobStatus, Origin
from bygheartd.service.errors import ServiceError
from bygheartd.service.submission import Enqueued, Submission
from bygheartd.songs import edits
from bygheartd.songs.audiolength import audio_seconds
from bygheartd.songs.request import SongRequest, slugify
from bygheartd.store.boundary import JobStore

if TYPE_CHECKING:
    from bygheartd.service.drafts import SongDraft
    from bygheartd.songs.request import RequestRules


class SongService(Protocol):
    """What these functions use of `service.SongService` (which calls them: no cycle)."""

    @property
    def config(self) -> Config: ...
    def rules(self, preset: str | None = None) -> RequestRules: ...
    def build_request(
        self, data: Mapping[str, Any], *, preset: str | None = None, source: str = "<request>"
    ) -> SongRequest: ...
    async def get(self, ref: str) -> Job: ...
    async def submit(self, submission: Submission) -> Enqueued: ...


__all__ = [
    "DEFAULT_STEMS",
    "base_model",
    "describe_audio",
    "extend_job",
    "inventories",
    "make_stems",
    "stem_group",
    "stems_of",
    "submit_stems",
    "take_audio",
]

DEFAULT_STEMS: Final = ("vocals", "drums", "bass")
# The request keys an extended song keeps from the song it extends (its words and sound).
_KEPT: Final = ("style", "lyrics", "instrumental", "language", "bpm", "key", "model")
_DESCRIBE_SECONDS: Final = 600.0


# -- stems ----------------------------------------------------------------------------


def stem_group(title: str) -> str:
    """The `stem_group` the stems of a song titled `title` carry (its slug)."""
    return slugify(title) or "song"


def split_stems(request: SongRequest, title: str, service: SongService) -> list[SongRequest]:
    """One extract request per stem of a stems request, grouped by `stem_group`."""
    tracks = request.stems or []
    group = request.stem_group or stem_group(title)
    rules = service.rules()
    return [
        request.with_changes(
            {
                "stems": None,
                "track_name": track,
                "stem_group": group,
                "title": f"{title} ({track})"[:200],
            },
            rules,
            source=f"stems of {title}",
        )
        for track in tracks
    ]


async def submit_stems(service: SongService, submission: Submission) -> list[Enqueued]:
    """Queue every stem of a stems request; the first keeps the submission's drop identity
    and idempotency key, the others get the key with the track added."""
    request = submission.request
    title = request.display_title(submission.fallback_title or "") or "song"
    queued: list[Enqueued] = []
    for index, stem in enumerate(split_stems(request, title, service)):
        key = submission.idempotency_key
        one = replace(
            submission,
            request=stem,
            drop=submission.drop if index == 0 else None,
            idempotency_key=key if index == 0 or not key else f"{key}:{stem.track_name}",
        )
        queued.append(await service.submit(one))
    return queued


async def make_stems(
    service: SongService,
    source: str,
    *,
    take: int = 1,
    tracks: Sequence[str] = DEFAULT_STEMS,
    model: str | None = None,
    origin: Origin = Origin.CLI,
    idempotency_key: str | None = None,
) -> list[Enqueued]:
    """Stems of a finished job's take (`source` a job id) or of an audio file (a path)."""
    audio, title = await _source(service, source, take)
    data: dict[str, Any] = {
        "title": title,
        "task_type": "extract",
        "stems": list(tracks),
        "source_audio": audio.name,
    }
    if service.config.backend == "acestep":
        data["model"] = model or await base_model(service)
    elif model:
        data["model"] = model
    request = service.build_request(data, source="stems")
    submission = Submission(
        request,
        origin,
        fallback_title=title,
        source=str(audio),
        source_path=audio,
        idempotency_key=idempotency_key,
    )
    return await submit_stems(service, submission)


async def stems_of(store: JobStore, job: Job) -> list[Job]:
    """The stems made from `job`'s takes, by any face, oldest first. A stem job records the
    take it was made from as its `source` (make_stems), so no link of its own is stored:
    the jobs newer than `job` made from one of its takes that are stems (an extract with a
    `stem_group`; an extended song has the same source and is not one)."""
    takes = [str(f.path) for f in job.files if f.path.suffix.lower() in catalog.AUDIO_SUFFIXES]
    made = await store.jobs_made_from(takes, job.id)
    return [
        j for j in made if j.request.get("task_type") == "extract" and j.request.get("stem_group")
    ]


# -- extend ---------------------------------------------------------------------------


async def extend_job(
    service: SongService,
    ref: str,
    *,
    seconds: float,
    take: int = 1,
    before: bool = False,
    origin: Origin = Origin.CLI,
    idempotency_key: str | None = None,
) -> Enqueued:
    """A new job, "<title> (extended)", whose takes are the whole song made `seconds`
    longer at its end (or its start): a repaint past the ends of the take."""
    job = await service.get(ref)
    audio, title = await _source(service, job.id, take)
    length = await asyncio.to_thread(audio_seconds, audio)
    try:
        seconds = float(seconds)
        if not 0.5 <= seconds <= edits.MAX_EXTEND_SECONDS:
            raise ValueError
    except (TypeError, ValueError):
        raise ServiceError(
            f"cannot extend by {seconds!r} seconds: give 0.5 to {edits.MAX_EXTEND_SECONDS:.0f}"
        ) from None
    bounds = edits.extend_bounds(
        length, after=0.0 if before else seconds, before=seconds if before else 0.0
    )
    data: dict[str, Any] = {k: v for k in _KEPT if (v := job.request.get(k)) is not None}
    if data.get("instrumental"):
        data.pop("lyrics", None)
    data |= {
        "title": f"{title} (extended)"[:200],
        "task_type": "repaint",
        "source_audio": audio.name,
        "audio_format": job.request.get("audio_format") or "mp3",
        **bounds,
    }
    request = service.build_request(data, source=f"extend {job.id}")
    submission = Submission(
        request,
        origin,
        source=str(audio),
        source_path=audio,
        idempotency_key=idempotency_key,
    )
    return await service.submit(submission)


async def take_audio(service: SongService, source: str, take: int = 1) -> Path:
    """The audio file a job id's take, or a path, names (for describe)."""
    return (await _source(service, source, take))[0]


async def _source(service: SongService, source: str, take: int) -> tuple[Path, str]:
    """The audio to edit and its song's title: a job's take, or an audio file's path."""
    path = Path(source).expanduser()
    if path.suffix.lower() in catalog.AUDIO_SUFFIXES and path.is_file():
        return path.resolve(), path.stem.replace("-", " ").replace("_", " ").strip() or "song"
    if path.suffix.lower() in catalog.AUDIO_SUFFIXES:
        raise ServiceError(f"{source} does not exist: give an audio file or a job id")
    job = await service.get(source)
    return _take_file(job, take), job.title


def _take_file(job: Job, take: int) -> Path:
    if job.status is not JobStatus.DONE:
        raise ServiceError(
            f"job {job.id[:8]} is {job.status.value}, not done: there is no take to edit yet;"
            " wait for it (`bygheartd show ID`), or give an audio file"
        )
    audio = [f.path for f in job.files if f.path.suffix.lower() in catalog.AUDIO_SUFFIXES]
    if not 1 <= take <= len(audio):
        fix = f"use --take 1 to {len(audio)}" if audio else "its files were removed"
        raise ServiceError(f"job {job.id[:8]} has {len(audio)} take(s), no take {take}: {fix}")
    path = Path(audio[take - 1])
    if not path.is_file():
        raise ServiceError(
            f"take {take} of job {job.id[:8]} is not at {path} any more: give the audio file"
            " itself instead of the job"
        )
    return path


# -- models ---------------------------------------------------------------------------


def _clients(config: Config, *, first: bool = False) -> list[tuple[str, str, BygheartClient]]:
    """(url, its configured LoRA path or "", a client) per server (`first`: the first's)."""
    if config.api.servers:
        servers = config.api.servers[:1] if first else config.api.servers
        return [(s.url, s.lora_path, make_server_client(config, s)) for s in servers]
    return [(config.api.effective_base_url(), "", make_client(config))]


async def _lora(client: BygheartClient, lora_path: str) -> dict[str, Any]:
    """The server's LoRA adapters (`/v1/lora/status`) beside the one configured for it."""
    record: dict[str, Any] = {"path": lora_path or None, "loaded": None, "status": None}
    try:
        data = await client.lora_status()
    except (ApiError, OSError) as exc:
        message = getattr(exc, "message", str(exc))
        record["error"] = (
            "the server has not loaded its model yet (it does on its first job)"
            if isinstance(exc, ApiError) and not_initialized(exc.status, message)
            else str(exc)
        )
        return record
    if data is None:
        record["error"] = "no /v1/lora routes on this server"
        return record
    status = parse_lora_status(data)
    record["status"] = status.as_record()
    record["loaded"] = status.has(lora_path) if lora_path else None
    return record


async def inventories(config: Config) -> list[dict[str, Any]]:
    """Each server's inventory (ACE-Step): `url` and `inventory` (the record), or `error`
    (why it could not be read), or `inventory: None` (the server has none); and `lora`: the
    LoRA configured for it (`[[api.servers]] lora_path`) and the adapters it has loaded."""
    records: list[dict[str, Any]] = []
    for url, lora_path, client in _clients(config):
        client.retry = RetryPolicy(attempts=1)
        async with client:
            try:
                data = await client.model_inventory()
            except (ApiError, OSError) as exc:
                records.append({"url": url, "inventory": None, "error": str(exc), "lora": None})
                continue
            lora = await _lora(client, lora_path) if data is not None else None
        found = None if data is None else parse_inventory(data).as_record()
        records.append({"url": url, "inventory": found, "error": None, "lora": lora})
    return records


async def base_model(service: SongService) -> str:
    """A base-family model some server has loaded (for stems, layers, accompaniment): the
    configured default model when it is one, else the first found, else the first known."""
    configured = service.config.defaults.model
    if edits.family(configured) == "base" and configured:
        return configured
    try:
        records = await inventories(service.config)
    except BygheartdError:
        records = []
    for record in records:
        inventory = record.get("inventory") or {}
        for model in inventory.get("models") or ():
            if model.get("loaded") and edits.family(model.get("name")) == "base":
                return str(model["name"])
    return catalog.acestep_base_models()[0]


def loaded_inventory(record: dict[str, Any]) -> Inventory | None:
    """An `inventories` record back as an Inventory (None without one)."""
    found = record.get("inventory")
    if not found:
        return None
    return parse_inventory(
        {
            "models": [
                {
                    "name": m["name"],
                    "is_loaded": m["loaded"],
                    "is_default": m["default"],
                    "supported_task_types": m["tasks"],
                }
                for m in found["models"]
            ],
            "default_model": found["default_model"],
            "llm_initialized": found["llm_initialized"],
        }
    )


# -- describe -------------------------------------------------------------------------


async def describe_audio(
    config: Config, audio: Path, *, timeout: float = _DESCRIBE_SECONDS
) -> SongDraft:
    """The server listens to `audio` (`full_analysis_only`) and its answer becomes a song-file
    draft: style, lyrics, bpm, key, time signature, language. Makes no audio, spends no
    generation; needs an ACE-Step server with its language model."""
    from bygheartd.service.drafts import _draft_from

    if config.backend != "acestep":
        raise ServiceError(
            "describe needs a self-hosted ACE-Step server (the hosted API has no audio"
            ' analysis): set backend = "acestep" with the server\'s base_url, or draft the song'
            " from words with `bygheartd inspire`"
        )
    path = audio.expanduser()
    if not path.is_file() or path.suffix.lower() not in catalog.AUDIO_SUFFIXES:
        raise ServiceError(
            f"{audio} is not an audio file: give a {', '.join(catalog.AUDIO_SUFFIXES)} file"
        )
    body = {"task_type": "text2music", "full_analysis_only": True, "batch_size": 1}
    url, _, client = _clients(config, first=True)[0]
    client.retry = RetryPolicy(attempts=2, base_delay=0.5, max_delay=2.0)
    poll = max(0.1, config.queue.poll_min_seconds)
    async with client:
        submitted = await client.submit(body, src_audio=path)
        deadline = time.monotonic() + timeout
        while True:
            result = (await client.query([submitted.task_id]))[submitted.task_id]
            if result.state is TaskState.SUCCEEDED and result.analysis is not None:
                answer = parse_draft(dict(result.analysis))
                break
            if result.state in (TaskState.FAILED, TaskState.SUCCEEDED):
                raise ServiceError(
                    f"{url} could not analyse {path.name} (it gives no reason): audio analysis"
                    " needs the server's language model loaded; check the server's log"
                )
            if result.state is TaskState.UNKNOWN and time.monotonic() > deadline - timeout + 30:
                raise ServiceError(f"{url} forgot the analysis of {path.name}: try again")
            if time.monotonic() > deadline:
                raise ServiceError(f"no analysis of {path.name} after {timeout:.0f} s")
            await asyncio.sleep(poll)
    if answer is None or not (answer.style or answer.lyrics):
        raise ServiceError(f"the analysis of {path.name} said nothing usable: try again")
    title = path.stem.replace("-", " ").replace("_", " ").strip().title() or "Song"
    try:
        return _draft_from(answer, backend=config.backend, title=f"{title} (like this)")
    except RequestError as exc:
        raise ServiceError(f"the analysis is not a valid song: {exc}") from None
