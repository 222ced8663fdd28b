"""MCP `extend_song`, `make_stems` and `describe_audio` (DESIGN.md "Edit tasks"): the edit
tasks for assistants, with the same rules as the CLI (service/edits.py).

Audio is named by a finished song's job id (and take), or by a file inside the configured
folders (output, drafts, archive, inbox): an assistant must not be a way to upload any
file the daemon can read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from bygheartd import catalog
from bygheartd.errors import BygheartdError
from bygheartd.jobs import Origin
from bygheartd.mcp.records import JobRecord

if TYPE_CHECKING:
    from bygheartd.service.service import SongService

Register = Callable[[Callable[..., Any]], Callable[..., Any]]
_CHANGES = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
)


class StemsResult(BaseModel):
    """Stems queued: one job per stem, and what they cost together."""

    folder: str = Field(description="where the stems will be: output/<slug>-stems/")
    generations: int = Field(description="one generation per stem")
    cost: int = Field(description="credits all the stems cost (0 on a self-hosted server)")
    stems: list[JobRecord] = Field(description="one job per stem, in the order asked")

    def summary(self) -> str:
        names = ", ".join(s.title for s in self.stems)
        return (
            f"{len(self.stems)} stems queued ({names}): {self.generations} generations, "
            f"{catalog.credits_phrase(self.cost)}; they land in {self.folder}"
        )


class DescribeResult(BaseModel):
    """A song-file draft from the model's listening: pass `song` to generate_song."""

    title: str
    song: dict[str, Any] = Field(description="the draft's song-file keys")
    text: str = Field(description="the draft as a song file (front matter and lyrics)")
    notes: list[str] = Field(description="what was left out of the model's answer, and why")


def _audio(songs: SongService, job_id: Any, audio_file: Any) -> str:
    """A job id, or an audio file inside the configured folders (as a path)."""
    if (job_id is None) == (audio_file is None):
        raise ToolError("give job_id (a finished song) or audio_file, one of them")
    if job_id is not None:
        if not isinstance(job_id, str) or not job_id.strip():
            raise ToolError("job_id must be a job id")
        return job_id.strip()
    if not isinstance(audio_file, str) or not audio_file.strip():
        raise ToolError("audio_file must be a file name")
    folders = songs.config.folders
    roots = [folders.drafts, folders.output, folders.archive, folders.inbox]
    raw = Path(audio_file.strip()).expanduser()
    path = (raw if raw.is_absolute() else folders.drafts / raw).resolve()
    if not any(path.is_relative_to(root.resolve()) for root in roots):
        raise ToolError(
            f"{audio_file} is outside the drafts, output, archive and inbox folders: put the "
            "audio there (or give the job id of a finished song)"
        )
    if not path.is_file() or path.suffix.lower() not in catalog.AUDIO_SUFFIXES:
        raise ToolError(f"{audio_file} is not an audio file there")
    return str(path)


def _take(take: Any) -> int:
    if isinstance(take, bool) or not isinstance(take, int) or take < 1:
        raise ToolError("take must be a whole number, counting from 1")
    return take


JobArg = Annotated[Any, Field(description="a finished song's job id (or unique prefix)")]
FileArg = Annotated[
    Any,
    Field(description="an audio file in the drafts folder (relative names), output or archive"),
]
TakeArg = Annotated[Any, Field(description="which take of the song, counting from 1")]


def register_edit_tools(tool: Callable[..., Register], service: Callable[[], SongService]) -> None:
    """Add `extend_song`, `make_stems` and `describe_audio` to a server from build_server."""

    @tool(annotations=_CHANGES)
    async def extend_song(
        job_id: JobArg,
        seconds: Annotated[Any, Field(description="seconds to add, 0.5 to 600")],
        take: TakeArg = 1,
        before: Annotated[Any, Field(description="add them before the start")] = False,
    ) -> Annotated[CallToolResult, JobRecord]:
        """Make a finished song longer (one generation): a new song "<title> (extended)"
        whose takes are the whole song with `seconds` more after its end, or before its
        start. Follow it with get_song."""
        from bygheartd.service.edits import extend_job

        songs = service()
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ToolError("seconds must be a number, e.g. 30")
        try:
            enqueued = await extend_job(
                songs,
                _audio(songs, job_id, None),
                seconds=float(seconds),
                take=_take(take),
                before=bool(before),
                origin=Origin.MCP,
            )
        except BygheartdError as exc:
            raise ToolError(str(exc)) from None
        record = JobRecord.of(enqueued.job)
        return CallToolResult(
            content=[TextContent(type="text", text=f"Queued: {record.summary()}")],
            structured_content=record.model_dump(mode="json"),
        )

    @tool(annotations=_CHANGES)
    async def make_stems(
        job_id: JobArg = None,
        audio_file: FileArg = None,
        take: TakeArg = 1,
        tracks: Annotated[
            Any,
            Field(
                description="the stems to make: "
                + ", ".join(catalog.constants()["track_names"]["values"])
            ),
        ] = None,
    ) -> Annotated[CallToolResult, StemsResult]:
        """Split a finished song (or an audio file) into stems: one generation per stem
        (default vocals, drums, bass), delivered together in output/<slug>-stems/. On
        ACE-Step they run only on a server with a base model loaded."""
        from bygheartd.service.edits import DEFAULT_STEMS
        from bygheartd.service.edits import make_stems as queue_stems
        from bygheartd.songs.request import slugify

        songs = service()
        if tracks is None:
            names = list(DEFAULT_STEMS)
        elif isinstance(tracks, list) and all(isinstance(t, str) for t in tracks) and tracks:
            names = tracks
        elif isinstance(tracks, str) and tracks.strip():
            names = [t for t in tracks.split(",") if t.strip()]
        else:
            raise ToolError("tracks must be a list of track names, e.g. [vocals, drums]")
        try:
            queued = await queue_stems(
                songs,
                _audio(songs, job_id, audio_file),
                take=_take(take),
                tracks=names,
                origin=Origin.MCP,
            )
        except BygheartdError as exc:
            raise ToolError(str(exc)) from None
        jobs = [q.job for q in queued]
        group = str(jobs[0].request.get("stem_group") or slugify(jobs[0].title))
        result = StemsResult(
            folder=str(songs.config.folders.output / f"{group}-stems"),
            generations=len(jobs),
            cost=sum(j.credits for j in jobs),
            stems=[JobRecord.of(j) for j in jobs],
        )
        return CallToolResult(
            content=[TextContent(type="text", text=result.summary())],
            structured_content=result.model_dump(mode="json"),
        )

    @tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True))
    async def describe_audio(
        job_id: JobArg = None, audio_file: FileArg = None, take: TakeArg = 1
    ) -> Annotated[CallToolResult, DescribeResult]:
        """Listen to a song (a finished job's take, or an audio file) and write a song-file
        draft like it: style, lyrics, bpm, key, time signature, language. Makes no audio and
        spends no generation (ACE-Step with its language model). Give `song` to generate_song
        to make one like it."""
        from bygheartd.service.edits import describe_audio as describe
        from bygheartd.service.edits import take_audio

        songs = service()
        try:
            path = await take_audio(songs, _audio(songs, job_id, audio_file), _take(take))
            draft = await describe(songs.config, path)
        except BygheartdError as exc:
            raise ToolError(str(exc)) from None
        result = DescribeResult(
            title=draft.title, song=draft.fields(), text=draft.text(), notes=draft.notes
        )
        return CallToolResult(
            content=[TextContent(type="text", text=result.text)],
            structured_content=result.model_dump(mode="json"),
        )
